"""Sacral plans of the demo's geometry (a lesion 5 mm anterior of the body's centre, clear of the canal)."""

import numpy as np

from seedplan.demo import demo_lesion_offsets
from seedplan.imaging import make_spine_phantom
from seedplan.planning import plan_case


def _plan(level, lesion_type, diameter_mm=30.0, spacing_mm=2.0):
    ph = make_spine_phantom(level=level, lesion_diameter_mm=diameter_mm, lesion_type=lesion_type, spacing_mm=spacing_mm,
                            lesion_center_offset_mm=demo_lesion_offsets(level))
    return ph, plan_case(ph.ct, ph.structures).plan


def test_a_blastic_s1_lesion_is_planned_within_the_cauda_and_root_limits():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ph, plan = _plan("S1", "blastic")
    # the planner's own vertebroplasty tips in dense tumour are plan notes, not warnings
    assert not [w for w in caught if "simulate_cement" in str(w.message)]
    assert any(n.startswith("vertebroplasty needle ") and "its tip is in cortical bone" in n for n in plan.notes)
    m = plan.results
    assert m["target"]["D90_Gy"] >= plan.prescription.dose_Gy
    for name, block in m["oars"].items():
        if name.startswith(("cauda", "sacral_foramen")):
            assert block["D0.1cc_Gy"] <= 50.0, name
    # no seed inside a foramen, the canal or a vessel
    grid = ph.ct.grid
    idx = np.rint(grid.world_to_index(plan.positions_mm)).astype(int)
    for s in ph.structures.values():
        if s.role.value in ("canal", "oar"):
            assert not s.mask[idx[:, 2], idx[:, 1], idx[:, 0]].any(), s.name
    # the cement fills the body and the ala beside it (no cortex between them: not a leak), within the study's
    # 2-9 mL, and none of it in a neural canal
    cm = m["cement"]
    assert cm["compartment"] == "vertebral_body_S1+sacrum" and 2.0 <= cm["volume_mL"] <= 9.0
    assert cm["leak_flags"]["outside_body"] is None
    for s in ph.structures.values():
        if s.role.value == "canal":
            assert not (plan.cement.mask & s.mask).any(), s.name


def test_vertebroplasty_tips_in_dense_tumour_leave_a_plan_without_cement():
    """A blastic S2 lesion fills the body where the PVP needles end: no cancellous bone to inject into."""
    _, plan = _plan("S2", "blastic", 36.0)
    assert plan.cement is None and plan.n_seeds > 0
    assert any("cement not planned" in n and "cortical bone" in n for n in plan.notes)
    assert "cement" not in plan.results


def test_the_s2_demo_lesion_is_planned_through_the_dorsal_sacrum_clear_of_foramina_and_canal():
    """S2 (the demo, 1 mm: on 2 mm voxels its 3 mm root margins close the paths): coverage and the cauda/root
    limits together, every track clear of the neural canals."""
    from scipy import ndimage

    from seedplan.demo import demo_lesion_diameters
    from seedplan.plan import FORAMEN_MARGIN_MM

    ph, plan = _plan("S2", "lytic", demo_lesion_diameters("S2")[0], spacing_mm=1.0)
    m = plan.results
    assert m["target"]["D90_Gy"] >= plan.prescription.dose_Gy and m["target"]["V100_pct"] >= 95.0
    for name, block in m["oars"].items():
        if name.startswith(("cauda", "sacral_foramen")):
            assert block["D0.1cc_Gy"] <= 50.0, name
    grid = ph.ct.grid
    sp = np.asarray(grid.spacing_mm)[::-1]
    for s in ph.structures.values():
        if not (s.name.startswith(("sacral_foramen", "spinal_canal", "cauda")) or "iliac" in s.name
                and s.role.value == "oar"):
            continue
        dist = ndimage.distance_transform_edt(~s.mask, sampling=sp)
        for n in (*plan.needles, *plan.pvp_needles):
            t = np.arange(0.0, n.depth_mm, 0.5)
            pts = np.asarray(n.entry)[None] + t[:, None] * np.asarray(n.direction)[None]
            idx = np.rint(grid.world_to_index(pts)).astype(int)
            clear = dist[idx[:, 2], idx[:, 1], idx[:, 0]].min()
            margin = FORAMEN_MARGIN_MM if "foramen" in s.name else 0.0
            # voxel-centre distances on a 1 mm grid: within one voxel diagonal of the margin
            assert clear >= margin - np.sqrt(3) + 1e-6 and clear > 0, (s.name, n.label, clear)


def test_the_demo_lesion_shrinks_with_the_sacral_bodies_and_with_several_levels():
    from seedplan.demo import demo_lesion_diameters
    from seedplan.imaging.phantom import vertebra_dimensions

    assert [demo_lesion_diameters(lv)[0] for lv in ("L3", "L5", "S1", "S2", "S3")] == [30.0, 30.0, 30.0, 24.0, 20.0]
    assert demo_lesion_diameters("L5,S1") == [28.0, 28.0] and demo_lesion_diameters("s1, s2") == [28.0, 24.0]
    for lv in ("S2", "S3"):  # a demo lesion is never wider than the body it is drawn in, nor taller
        dims = vertebra_dimensions(lv)
        assert demo_lesion_diameters(lv)[0] <= min(dims["width"], dims["height"])
