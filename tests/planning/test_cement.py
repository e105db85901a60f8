"""Cement: volume recommendation, front-growth simulation, slot exclusion."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from seedplan.errors import InputError
from seedplan.geometry import Grid
from seedplan.imaging.ct import CTImage
from seedplan.imaging.structures import Role, Structure
from seedplan.planning.cement import (
    BAROUD_SI_AP_RATIO,
    DEFAULT_CEMENT,
    PMMA_BASO4_30,
    CementModel,
    cement_excludes_slots,
    cross_section_ratios,
    recommend_cement_volume,
    simulate_cement,
)

CORT, CANC, SOFT = 900.0, 200.0, 30.0


# ------------------------------------------------------------------ synthetic VBs
def _body(shape_fn, size=(44, 44, 40)):
    """CT + VB mask from ``shape_fn(X, Y, Z, inset_mm) -> bool`` with a 1 mm cortical shell."""
    g = Grid((-(size[0] - 1) / 2, -(size[1] - 1) / 2, -(size[2] - 1) / 2), (1.0, 1.0, 1.0), size)
    c = g.voxel_centers_mm()
    X, Y, Z = c[..., 0], c[..., 1], c[..., 2]
    outer = shape_fn(X, Y, Z, 0.0)
    inner = shape_fn(X, Y, Z, 1.0)
    hu = np.full(g.shape, SOFT, np.float32)
    hu[outer] = CORT
    hu[inner] = CANC
    return g, hu, outer, (X, Y, Z)


def sphere(X, Y, Z, inset):
    return X**2 + Y**2 + Z**2 <= (16.0 - inset) ** 2


def ellipsoid(X, Y, Z, inset):
    return (X / (19.0 - inset)) ** 2 + (Y / (15.0 - inset)) ** 2 + (Z / (13.0 - inset)) ** 2 <= 1


def cylinder(X, Y, Z, inset):
    return (X**2 + Y**2 <= (16.0 - inset) ** 2) & (np.abs(Z) <= 10.0 - inset)


@pytest.fixture(scope="module")
def ell():
    return _body(ellipsoid)


def extent(mask, axis):
    idx = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    return idx.max() - idx.min() + 1


# -------------------------------------------------------------- recommendation
def _box_structure(name, lo, hi, role=Role.VERTEBRAL_BODY):
    g = Grid((0, 0, 0), (1, 1, 1), (60, 60, 60))
    m = np.zeros(g.shape, bool)
    m[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = True
    return Structure(name, role, m, g)


def test_recommendation_fill_fraction_and_clamping():
    vb = _box_structure("vb", (0, 0, 0), (20, 20, 40))  # 16.0 cm3
    r = recommend_cement_volume(vb, level="T8")
    assert r.vb_volume_cm3 == pytest.approx(16.0)
    assert r.volume_mL == pytest.approx(4.0) and not r.clamped  # 25 % of 16 cm3
    assert r.fill_fraction == pytest.approx(0.25)
    text = str(r)
    assert "Molloy" in text and "16.2" in text and "29.8" in text and "4.5 mL thoracic" in text
    small = recommend_cement_volume(_box_structure("vb", (0, 0, 0), (10, 10, 40)))  # 4 cm3 -> 1 mL
    assert small.volume_mL == 2.0 and small.clamped
    # lytic cavity: 0.25 * (36 - 8) + 8 = 15 -> clamped to 9
    big = _box_structure("vb", (0, 0, 0), (30, 30, 40))
    les = _box_structure("lesion", (5, 5, 5), (25, 25, 25), Role.TARGET)
    r2 = recommend_cement_volume(big, les, level="L3")
    assert r2.lesion_volume_cm3 == pytest.approx(8.0)
    assert r2.volume_mL == 9.0 and r2.clamped and "6 mL lumbar" in str(r2)
    # a blastic lesion is not a cavity: 0.25 * 36 = 9.0, not clamped
    r3 = recommend_cement_volume(big, les, lesion_type="blastic")
    assert r3.volume_mL == pytest.approx(9.0) and not r3.clamped
    # configurable model
    r4 = recommend_cement_volume(big, les, model=CementModel(target_fill_fraction=0.162, lesion_fill_fraction=0.0))
    assert r4.volume_mL == pytest.approx(0.162 * 28.0)


def test_recommendation_errors():
    empty = Structure("vb", Role.VERTEBRAL_BODY, np.zeros((3, 3, 3), bool), Grid((0, 0, 0), (1, 1, 1), (3, 3, 3)))
    with pytest.raises(InputError, match="'vb' is empty"):
        recommend_cement_volume(empty)
    vb = _box_structure("vb", (0, 0, 0), (20, 20, 40))
    with pytest.raises(InputError, match="level"):
        recommend_cement_volume(vb, level="X9")
    with pytest.raises(InputError, match="target_fill_fraction"):
        CementModel(target_fill_fraction=1.5)


def test_default_cement_is_30pct_baso4():
    assert DEFAULT_CEMENT is PMMA_BASO4_30 and PMMA_BASO4_30.mu_cm == 3.50


# ------------------------------------------------------------------ simulation
def test_volume_containment_and_determinism(ell):
    g, hu, vb, _ = ell
    ct = CTImage(g, hu)
    r = simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0]], 3.0)
    vv = g.voxel_volume_mm3 / 1000
    assert abs(r.volume_mL - 3.0) <= vv
    assert r.mask.sum() * vv == pytest.approx(r.volume_mL)
    assert not np.any(r.mask & ~vb)  # intact shell: stays inside
    assert r.leak_flags["outside_body"] is None and r.leak_flags["cortical_defect"] is None
    vb_ml = vb.sum() * vv
    assert r.fill_pct == pytest.approx(100 * r.volume_mL / vb_ml)
    r2 = simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0]], 3.0)
    assert np.array_equal(r.mask, r2.mask)
    assert (r.volume_mL, r.max_cross_section_ratio, dict(r.leak_flags)) == (
        r2.volume_mL, r2.max_cross_section_ratio, dict(r2.leak_flags))
    j1 = simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0]], 3.0, rng=7)
    j2 = simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0]], 3.0, rng=7)
    j3 = simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0]], 3.0, rng=8)
    assert np.array_equal(j1.mask, j2.mask) and not np.array_equal(j1.mask, j3.mask)


def test_si_faster_than_ap():
    g, hu, vb, _ = _body(sphere)
    ct = CTImage(g, hu)
    r = simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0]], 1.5)  # radius ~7 mm, well inside the sphere
    ez, ey, ex = extent(r.mask, 0), extent(r.mask, 1), extent(r.mask, 2)
    assert ez / ey == pytest.approx(BAROUD_SI_AP_RATIO, rel=0.12)
    assert ez > ey and abs(ex - ey) <= 1
    iso = simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0]], 1.5, si_ap_ratio=1.0)
    assert abs(extent(iso.mask, 0) - extent(iso.mask, 1)) <= 1


def test_lytic_region_fills_first(ell):
    g, hu, vb, (X, Y, Z) = ell
    hu = hu.copy()
    lytic = (X - 8) ** 2 + Y**2 + Z**2 <= 5.0**2
    hu[lytic] = 30.0
    r = simulate_cement(CTImage(g, hu), vb, g, [[8.0, 0.0, 0.0]], 0.4)  # lesion holds 0.52 mL
    assert (r.mask & lytic).sum() >= 0.95 * r.mask.sum()  # fast lytic cavity fills first
    hom = simulate_cement(CTImage(g, ell[1]), vb, g, [[8.0, 0.0, 0.0]], 0.4)
    assert (hom.mask & lytic).sum() < (r.mask & lytic).sum()


def test_posterior_defect_trips_leak_flags(ell):
    g, hu, vb, (X, Y, Z) = ell
    hu = hu.copy()
    hole = vb & (hu == CORT) & (Y > 10) & (np.abs(X) <= 3) & (np.abs(Z) <= 3)  # posterior (+y, LPS) shell gap
    assert hole.sum() > 5
    hu[hole] = CANC
    ct = CTImage(g, hu)
    r = simulate_cement(ct, vb, g, [[0.0, 6.0, 0.0]], 6.0)
    fl = r.leak_flags
    for k in ("posterior_wall", "basivertebral_foramen", "cortical_defect", "outside_body"):
        assert fl[k] is not None and 0 < fl[k] <= 6.0, k
    assert fl["posterior_wall"] <= fl["cortical_defect"] <= fl["outside_body"]
    assert r.leaked and np.any(r.mask & ~vb & (Y > 14))
    # same volume with an intact shell: posterior wall reached but no leak
    intact = simulate_cement(CTImage(g, ell[1]), vb, g, [[0.0, 6.0, 0.0]], 6.0)
    assert intact.leak_flags["posterior_wall"] is not None
    assert intact.leak_flags["outside_body"] is None and intact.leak_flags["cortical_defect"] is None
    assert not intact.leaked


def test_endplate_contact():
    g, hu, vb, _ = _body(cylinder)
    ct = CTImage(g, hu)
    assert simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0]], 0.5).endplate_contact == "none"
    assert simulate_cement(ct, vb, g, [[0.0, 0.0, 7.0]], 0.5).endplate_contact == "superior"
    assert simulate_cement(ct, vb, g, [[0.0, 0.0, -7.0]], 0.5).endplate_contact == "inferior"
    two = simulate_cement(ct, vb, g, [[-8.0, 0.0, 7.0], [8.0, 0.0, -7.0]], 1.0)
    assert two.endplate_contact == "both"


def test_cross_section_ratio_on_constructed_masks():
    vb = np.zeros((10, 30, 30), bool)
    vb[:, 5:25, 5:25] = True  # 400 voxels per slice
    vb[5, :, :] = False
    vb[5, 10:20, 10:20] = True  # a narrow slice: 100 voxels
    cem = np.zeros_like(vb)
    cem[3, 5:15, 5:15] = True  # 100 / 400 on the largest-cement slice
    cem[5, 11:19, 11:19] = True  # 64 / 100 on the narrow slice
    ratio, per_slice_max, k = cross_section_ratios(cem, vb)
    assert k == 3 and ratio == pytest.approx(0.25) and per_slice_max == pytest.approx(0.64)


def test_result_ratio_consistent(ell):
    g, hu, vb, _ = ell
    r = simulate_cement(CTImage(g, hu), vb, g, [[0.0, 0.0, 0.0]], 4.0)
    ratio, per, k = cross_section_ratios(r.mask, vb)
    assert r.max_cross_section_ratio == pytest.approx(ratio) and r.max_slice_ratio == pytest.approx(per)
    assert r.max_cross_section_slice == k and 0 < ratio <= per <= 1


def test_simulation_errors(ell):
    g, hu, vb, _ = ell
    ct = CTImage(g, hu)
    with pytest.raises(InputError, match=r"needle_tips_mm\[1\].*outside the vertebral body"):
        simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0], [0.0, 0.0, 18.0]], 2.0)
    with pytest.raises(InputError, match="vertebral_body_mask is empty"):
        simulate_cement(ct, np.zeros_like(vb), g, [[0.0, 0.0, 0.0]], 2.0)
    with pytest.raises(InputError, match="exceeds what the vertebral body can hold"):
        simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0]], 50.0)
    with pytest.raises(InputError, match="volume_mL"):
        simulate_cement(ct, vb, g, [[0.0, 0.0, 0.0]], -1.0)
    with pytest.warns(UserWarning, match="cortical bone"):
        simulate_cement(ct, vb, g, [[0.0, 0.0, 12.6]], 0.5)  # in the top of the shell


def test_enclosed_tip_warns_exhausted(ell):
    g, hu, vb, (X, Y, Z) = ell
    hu = hu.copy()
    shell = (np.abs(np.sqrt(X**2 + Y**2 + Z**2) - 4.0) <= 0.8)
    hu[shell] = 1000.0  # sclerotic ring around the tip
    with pytest.warns(UserWarning, match="filled all"):
        r = simulate_cement(CTImage(g, hu), vb, g, [[0.0, 0.0, 0.0]], 2.0)
    assert r.exhausted and r.volume_mL < 2.0


# --------------------------------------------------------------- slot exclusion
def test_cement_excludes_slots():
    g = Grid((0, 0, 0), (1, 1, 1), (20, 20, 20))
    cm = np.zeros(g.shape, bool)
    cm[5:10, 5:10, 5:10] = True  # x, y, z in 5..9 mm
    slots = [[7, 7, 7], [10.5, 7, 7], [13, 7, 7], [7, 7, 9.4], [0, 0, 0]]
    ex = cement_excludes_slots(slots, cm, g, margin_mm=2.0)
    assert ex.tolist() == [True, True, False, True, False]
    ex0 = cement_excludes_slots(slots, cm, g, margin_mm=0.0)
    assert ex0.tolist() == [True, False, False, True, False]


# ------------------------------------------------------------------ real phantom (fixture in conftest.py)

def test_phantom_recommendation_and_simulation(phantom):
    from seedplan.planning.needles import pvp_needle_paths

    s = phantom.structures
    vb = s["vertebral_body_L3"]
    rec = recommend_cement_volume(vb, s["target"], level="L3")
    # 36.6 cm3 body, 13.6 cm3 lytic cavity: 0.25 * 23.0 + 13.6 = 19.4 mL -> clamped to 9 mL
    assert rec.vb_volume_cm3 == pytest.approx(36.6, abs=0.2)
    assert rec.volume_mL == 9.0 and rec.clamped
    g = phantom.ct.grid
    plan = pvp_needle_paths(
        g, vb.mask, s["body"].mask, {"spinal_canal": s["spinal_canal"].mask},
        pedicles=s["pedicle_left_L3"].mask | s["pedicle_right_L3"].mask,
    )
    tips = np.array([n.tip_mm for n in plan.needles])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tip may sit on the lateral cortex
        r = simulate_cement(phantom.ct, vb, g, tips, 4.5)
    assert abs(r.volume_mL - 4.5) <= 0.001
    assert not r.leaked and r.leak_flags["cortical_defect"] is None
    assert r.fill_pct == pytest.approx(100 * 4.5 / rec.vb_volume_cm3, rel=0.01)
    assert 0 < r.max_cross_section_ratio <= r.max_slice_ratio <= 1
    assert r.elapsed_s < 10.0


def test_kernel_means_the_same_compiled_and_interpreted(ell, monkeypatch):
    """The numba front-growth kernel and its Python original give the same fill (no bool-arithmetic drift)."""
    import seedplan.planning.cement as cm

    g, hu, vb, _ = ell
    ct = CTImage(g, hu)
    fast = simulate_cement(ct, vb, g, [[0.0, 6.0, 0.0]], 6.0)
    monkeypatch.setattr(cm, "_grow", cm._grow.py_func)
    slow = simulate_cement(ct, vb, g, [[0.0, 6.0, 0.0]], 6.0)
    assert np.array_equal(fast.mask, slow.mask)
    assert dict(fast.leak_flags) == dict(slow.leak_flags) and slow.leak_flags["outside_body"] is None


def test_plan_cement_bad_input(phantom):
    from seedplan.errors import InputTypeError
    from seedplan.planning.cement import plan_cement

    vb = phantom.structures["vertebral_body_L3"]
    with pytest.raises(InputTypeError, match="vertebral_body must be a seedplan Structure"):
        plan_cement(phantom.ct, vb.mask, [[0.0, -5.0, 0.0]])
    with pytest.raises(InputTypeError, match="lesion must be a seedplan Structure"):
        plan_cement(phantom.ct, vb, [[0.0, -5.0, 0.0]], lesion="target")
    with pytest.raises(InputError, match="outside the vertebral body"):
        plan_cement(phantom.ct, vb, [[0.0, -60.0, 0.0]])  # tip in front of the body
    with pytest.raises(InputError, match="cement material 'bone' is unknown"):
        plan_cement(phantom.ct, vb, [[0.0, -5.0, 0.0]], material="bone")
    p = plan_cement(phantom.ct, vb, [[0.0, -5.0, 0.0]], lesion=phantom.structures["target"])
    assert p.lesion_type == "lytic" and p.level == "L3" and p.radiopaque


def test_a_compartment_lets_the_cement_into_the_bone_beside_the_body():
    """A body whose cancellous bone continues sideways (a sacral ala): cement there is not a leak, and the
    fill, cross-section and endplate figures stay the body's."""
    g = Grid((-30.5, -15.5, -12.5), (1.0, 1.0, 1.0), (62, 32, 26))
    c = g.voxel_centers_mm()
    X, Y, Z = c[..., 0], c[..., 1], c[..., 2]
    bone = (np.abs(X) <= 29) & (np.abs(Y) <= 14) & (np.abs(Z) <= 11)
    hu = np.full(g.shape, SOFT, np.float32)
    hu[bone] = CORT
    hu[(np.abs(X) <= 28) & (np.abs(Y) <= 13) & (np.abs(Z) <= 10)] = CANC  # one cortex around body and ala
    body = bone & (np.abs(X) <= 10)
    ct = CTImage(g, hu)
    alone = simulate_cement(ct, body, g, [[0.0, 0.0, 0.0]], 6.0)
    assert alone.leak_flags["outside_body"] is not None  # the front leaves the body sideways, through no cortex
    r = simulate_cement(ct, body, g, [[0.0, 0.0, 0.0]], 6.0, compartment_mask=bone)
    assert r.leak_flags["outside_body"] is None and r.leak_flags["cortical_defect"] is None
    assert np.any(r.mask & ~body) and not np.any(r.mask & ~bone)
    vv = g.voxel_volume_mm3 / 1000
    assert r.fill_pct == pytest.approx(100.0 * (r.mask & body).sum() / body.sum())
    assert (r.max_cross_section_ratio, r.max_slice_ratio) == pytest.approx(cross_section_ratios(r.mask, body)[:2])
    assert abs(r.volume_mL - 6.0) <= vv
