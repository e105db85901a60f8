"""Sacral plans of the demo's geometry (a lesion 5 mm anterior of the body's centre, clear of the canal)."""

import numpy as np

from seedplan.demo import demo_lesion_offsets
from seedplan.imaging import make_spine_phantom
from seedplan.planning import plan_case


def _plan(level, lesion_type, diameter_mm=30.0):
    ph = make_spine_phantom(level=level, lesion_diameter_mm=diameter_mm, lesion_type=lesion_type, spacing_mm=2.0,
                            lesion_center_offset_mm=demo_lesion_offsets(level))
    return ph, plan_case(ph.ct, ph.structures).plan


def test_a_blastic_s1_lesion_is_planned_within_the_cauda_and_root_limits():
    ph, plan = _plan("S1", "blastic")
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


def test_vertebroplasty_tips_in_dense_tumour_leave_a_plan_without_cement():
    """A blastic S2 lesion fills the body where the PVP needles end: no cancellous bone to inject into."""
    _, plan = _plan("S2", "blastic")
    assert plan.cement is None and plan.n_seeds > 0
    assert any("cement not planned" in n and "cortical bone" in n for n in plan.notes)
    assert "cement" not in plan.results
