"""The synthetic later CT: its truth is what it draws."""

import numpy as np
import pytest
from verify_helpers import one_line

from seedplan.errors import InputError
from seedplan.geometry import Grid
from seedplan.verification import JI_2021, NO_ERRORS, NeedleErrorModel, rigid_motion, synthetic_ct
from seedplan.verification._frames import apply, rotation_angle_deg


def test_rigid_motion():
    m = rigid_motion((0.0, 0.0, 90.0), (1.0, 2.0, 3.0), center_mm=(10.0, 0.0, 0.0))
    # 90 deg about z through (10, 0, 0): (11, 0, 0) -> (10, 1, 0), then shifted
    assert np.allclose(apply(m, np.array([11.0, 0.0, 0.0])), [11.0, 3.0, 3.0])
    assert rotation_angle_deg(m) == pytest.approx(90.0)
    with pytest.raises(InputError):
        rigid_motion((0.0, 0.0), (0.0, 0.0, 0.0))


def test_the_default_error_model_is_ji_2021():
    assert (JI_2021.entry_mm, JI_2021.entry_sd_mm) == (3.4, 1.7)
    assert (JI_2021.angle_deg, JI_2021.angle_sd_deg) == (2.8, 1.7)
    assert (JI_2021.depth_mm, JI_2021.depth_sd_mm) == (5.2, 4.8)
    with pytest.raises(InputError):
        NeedleErrorModel(entry_mm=-1.0)
    with pytest.raises(InputError):
        NeedleErrorModel(angle_deg=40.0)


def test_the_needle_errors_follow_the_model(v_plan):
    """Over many needles the drawn error magnitudes have the model's means and SDs (Ji et al. 2021), and the
    actual needle is the planned one moved by exactly those errors."""
    from seedplan.verification.synthetic import _perturb_needle

    rng = np.random.default_rng(0)
    n = v_plan.needles[0]
    draws = [_perturb_needle(n, JI_2021, rng) for _ in range(2000)]
    for key, mean, sd in (("entry_mm", 3.4, 1.7), ("angle_deg", 2.8, 1.7)):
        vals = np.array([d[2][key] for d in draws])
        assert np.all(vals >= 0)
        assert vals.mean() == pytest.approx(mean, abs=4 * sd / np.sqrt(len(vals)))
        assert vals.std() == pytest.approx(sd, rel=0.1)
    depth = np.abs([d[2]["depth_mm"] for d in draws])
    assert depth.mean() == pytest.approx(5.2, abs=4 * 4.8 / np.sqrt(len(depth)))
    assert depth.std() == pytest.approx(4.8, rel=0.1)
    signs = np.sign([d[2]["depth_mm"] for d in draws])
    assert abs(signs.mean()) < 0.1  # deeper or shallower alike
    for entry, tip, err in draws[:50]:
        off = entry - n.entry
        assert np.linalg.norm(off) == pytest.approx(err["entry_mm"], abs=1e-9)
        assert abs(off @ n.direction) < 1e-9  # across the needle
        d = (tip - entry) / np.linalg.norm(tip - entry)
        assert np.degrees(np.arccos(np.clip(d @ n.direction, -1, 1))) == pytest.approx(err["angle_deg"], abs=1e-6)
        assert np.linalg.norm(tip - entry) - n.depth_mm == pytest.approx(err["depth_mm"], abs=1e-9)


def test_without_errors_the_seeds_are_where_planned(v_plan, v_phantom, post_grid, v_motion):
    s = synthetic_ct(v_plan, v_phantom.ct, kind="postop", motion=v_motion, grid=post_grid, errors=NO_ERRORS, seed=0)
    t = s.truth
    assert t.n_seeds == v_plan.n_seeds and t.seed_plan_index == tuple(range(v_plan.n_seeds))
    assert np.allclose(t.seed_positions_mm, v_plan.positions_mm, atol=1e-9)
    assert np.allclose(np.abs(np.sum(t.seed_axes * v_plan.axes, axis=1)), 1.0)
    assert np.allclose(t.later_to_planning, np.linalg.inv(v_motion))
    # every seed saturates the scanner at its (moved) centre: a metal blob
    idx = np.rint(s.ct.grid.world_to_index(apply(v_motion, t.seed_positions_mm))).astype(int)
    assert np.all(s.ct.hu[idx[:, 2], idx[:, 1], idx[:, 0]] >= 3000)
    assert s.ct.hu.max() == 3071 and s.ct.hu.dtype == np.int16


def test_missing_and_migrated_seeds(postop, v_plan):
    t = postop.truth
    assert len(t.missing_seeds) == 1 and len(t.migrated_seeds) == 1
    assert t.n_seeds == v_plan.n_seeds - 1
    assert t.missing_seeds[0] not in t.seed_plan_index and t.migrated_seeds[0] in t.seed_plan_index
    k = t.seed_plan_index.index(t.migrated_seeds[0])
    others = np.delete(t.seed_positions_mm, k, axis=0)
    assert np.min(np.linalg.norm(others - t.seed_positions_mm[k], axis=1)) >= 10.0


def test_the_same_arguments_give_the_same_ct(v_plan, v_phantom, post_grid):
    a = synthetic_ct(v_plan, v_phantom.ct, kind="postop", grid=post_grid, seed=11)
    b = synthetic_ct(v_plan, v_phantom.ct, kind="postop", grid=post_grid, seed=11)
    c = synthetic_ct(v_plan, v_phantom.ct, kind="postop", grid=post_grid, seed=12)
    assert np.array_equal(a.ct.hu, b.ct.hu) and a.ct.series_uid == b.ct.series_uid
    assert not np.array_equal(a.ct.hu, c.ct.hu) and a.ct.series_uid != c.ct.series_uid


def test_the_intraop_ct_draws_the_needles_not_the_seeds(intraop, v_plan):
    t = intraop.truth
    assert t.kind == "intraop" and t.n_seeds == 0
    assert len(t.needles) == len(v_plan.needles) + len(v_plan.pvp_needles)
    ct = intraop.ct
    for n in t.needles:  # metal along the whole needle, tip to skin, in the later CT's frame
        along = n.tip + np.linspace(0.05, 0.95, 20)[:, None] * (n.entry - n.tip)
        pts = apply(np.linalg.inv(t.later_to_planning), along)
        idx = np.rint(ct.grid.world_to_index(pts)).astype(int)
        assert np.all(ct.hu[idx[:, 2], idx[:, 1], idx[:, 0]] >= 2000), n.label


def test_leak_volume_is_what_was_asked(postop):
    assert postop.truth.leak_site == "spinal_canal"
    assert postop.truth.leak_volume_mL == pytest.approx(0.3, rel=0.05)


@pytest.mark.parametrize("kwargs, what", [
    ({"kind": "later"}, "kind"),
    ({"leak": "canal"}, "structures"),
    ({"leak": "lung"}, "leak"),
    ({"missing_seeds": 99}, "missing_seeds"),
    ({"motion": np.diag([2.0, 1.0, 1.0, 1.0])}, "rigid"),
    ({"noise_hu": -1.0}, "noise_hu"),
])
def test_bad_arguments_give_one_clear_error(v_plan, v_phantom, kwargs, what):
    with pytest.raises(InputError) as exc:
        synthetic_ct(v_plan, v_phantom.ct, **kwargs)
    assert what in one_line(exc)


def test_a_grid_too_small_for_the_seeds_is_refused(v_plan, v_phantom, v_centre):
    from seedplan.errors import GeometryError

    tiny = Grid.from_bounds(v_centre - 3, v_centre + 3, 1.0)
    with pytest.raises(GeometryError) as exc:
        synthetic_ct(v_plan, v_phantom.ct, kind="postop", grid=tiny, errors=NO_ERRORS)
    assert "outside the later CT" in one_line(exc)
