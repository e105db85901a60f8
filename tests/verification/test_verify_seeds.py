"""Seeds on the post-operative CT: all implanted seeds found where they are, touching seeds split, the
plan's missing and extra seeds reported, bad input refused in one line."""

from dataclasses import replace

import numpy as np
import pytest
from verify_helpers import one_line

from seedplan.errors import GeometryError, InputError
from seedplan.geometry import Grid
from seedplan.imaging import CTImage
from seedplan.plan import PlannedSeed
from seedplan.verification import NO_ERRORS, NeedleErrorModel, synthetic_ct
from seedplan.verification.seeds import detect_seeds, match_seeds, verify_seeds


def _pair_up(found_mm, found_axes, true_mm, true_axes):
    """(distances, axis angles in deg) of each true seed to its nearest found seed; also asserts one-to-one."""
    d = np.linalg.norm(true_mm[:, None, :] - found_mm[None, :, :], axis=-1)
    j = d.argmin(axis=1)
    assert len(set(j.tolist())) == len(true_mm), "two true seeds matched the same detection"
    ang = np.degrees(np.arccos(np.clip(np.abs(np.sum(true_axes * found_axes[j], axis=1)), 0, 1)))
    return d[np.arange(len(true_mm)), j], ang


@pytest.fixture(scope="module")
def verified(postop, v_plan, postop_registration, v_phantom):
    return verify_seeds(postop.ct, v_plan, postop_registration, planning_ct=v_phantom.ct)


def test_every_implanted_seed_is_found_where_it_is(verified, postop):
    truth = postop.truth
    assert truth.n_seeds == len(verified.positions_mm)  # no extras, none lost
    dist, ang = _pair_up(verified.positions_mm, verified.axes, truth.seed_positions_mm, truth.seed_axes)
    assert np.max(dist) < 1.0, dist
    assert np.max(ang) < 10.0, ang


@pytest.fixture(scope="module")
def released(v_plan, v_phantom, v_motion, post_grid):
    """Seeds released as planned (the plan made on the needles actually placed): 0.5 mm and 3 deg jitter, one
    seed missing, one migrated 30 mm."""
    errors = NeedleErrorModel(0, 0, 0, 0, 0, 0, seed_jitter_mm=0.5, seed_axis_jitter_deg=3.0)
    return synthetic_ct(v_plan, v_phantom.ct, kind="postop", motion=v_motion, grid=post_grid, errors=errors,
                        missing_seeds=1, migrated_seeds=1, seed=3)


def test_the_plan_comparison_reports_the_missing_and_the_migrated_seed(released, v_plan, v_phantom):
    truth = released.truth
    verified = verify_seeds(released.ct, v_plan, truth.later_to_planning, planning_ct=v_phantom.ct)
    (missing,), (migrated,) = truth.missing_seeds, truth.migrated_seeds
    assert set(verified.missing) == {missing, migrated}
    assert len(verified.extra) == 1
    moved = truth.seed_positions_mm[truth.seed_plan_index.index(migrated)]
    assert np.linalg.norm(verified.positions_mm[verified.extra[0]] - moved) < 1.0
    assert len(verified.pairs) == v_plan.n_seeds - 2
    for p in verified.pairs:  # each pair is the planned seed and where it really went
        k = truth.seed_plan_index.index(p.planned)
        assert np.linalg.norm(verified.positions_mm[p.detected] - truth.seed_positions_mm[k]) < 1.0
        assert p.distance_mm == pytest.approx(np.linalg.norm(p.displacement_mm), abs=1e-9)
        assert p.distance_mm < 3.0 and p.axis_angle_deg < 15.0
    s = verified.summary()
    assert s["planned"] == v_plan.n_seeds and s["matched"] == v_plan.n_seeds - 2
    assert sorted(s["missing"]) == sorted([missing + 1, migrated + 1])
    assert set(verified.needle_shifts_mm) <= {seed.needle for seed in v_plan.seeds}
    assert any("not found" in w for w in verified.warnings) and any("migrated" in w for w in verified.warnings)


def test_touching_and_embedded_seeds(v_plan, v_phantom, post_grid):
    """End-to-end and side-by-side pairs (blobs touching) and a seed inside the cement, exact positions."""
    seeds = list(v_plan.seeds)

    def extra(s, offset, axis=None):
        return PlannedSeed(tuple(np.add(s.position_mm, offset)), tuple(s.axis if axis is None else axis), s.needle,
                           s.retraction_mm, s.activity_mCi, s.strength_U)

    a0 = np.array(seeds[0].axis)
    side = np.cross(np.array(seeds[2].axis), [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    cm = v_plan.cement
    inside = cm.grid.index_to_world(np.argwhere(cm.mask)[len(np.argwhere(cm.mask)) // 2][::-1].astype(float))
    seeds += [extra(seeds[0], 4.8 * a0),  # end to end with seed 1 (capsules 0.3 mm apart)
              extra(seeds[2], 2.5 * side),  # side by side with seed 3 (axes 2.5 mm apart)
              extra(seeds[4], inside - np.array(seeds[4].position_mm))]  # in the cement
    plan = replace(v_plan, seeds=tuple(seeds))
    later = synthetic_ct(plan, v_phantom.ct, kind="postop", grid=post_grid, errors=NO_ERRORS, seed=2)
    found = verify_seeds(later.ct, plan, np.eye(4), planning_ct=v_phantom.ct)
    truth = later.truth
    assert np.allclose(truth.seed_positions_mm, plan.positions_mm)  # no errors: as planned
    assert len(found.positions_mm) == plan.n_seeds
    dist, ang = _pair_up(found.positions_mm, found.axes, truth.seed_positions_mm, truth.seed_axes)
    assert np.max(dist) < 1.0, dist
    assert np.max(ang) < 10.0, ang
    assert sorted(s.cluster_size for s in found.detection.seeds).count(2) == 4
    assert not found.missing and not found.extra


def test_detection_alone_and_an_expected_count(postop):
    det = detect_seeds(postop.ct, expected_count=postop.truth.n_seeds)
    assert det.n_seeds == postop.truth.n_seeds and not det.warnings
    assert all(s.peak_hu >= 2500 and s.method == "fit" for s in det.seeds)
    assert 5.0 < det.single_seed_volume_mm3 < 60.0


def test_without_the_planning_ct_and_without_refinement(postop, v_plan, postop_registration):
    """The grey opening alone as background; principal components alone give the centres within 1 mm."""
    rough = verify_seeds(postop.ct, v_plan, postop_registration, refine=False)
    truth = postop.truth
    assert len(rough.positions_mm) == truth.n_seeds
    dist, _ = _pair_up(rough.positions_mm, rough.axes, truth.seed_positions_mm, truth.seed_axes)
    assert np.max(dist) < 1.0


def test_matching_with_a_tight_gate(verified, v_plan, postop_registration):
    tight = match_seeds(verified.detection, v_plan, postop_registration, max_distance_mm=0.01)
    assert not tight.pairs and len(tight.missing) == v_plan.n_seeds and len(tight.extra) == verified.n_detected


def test_a_plan_without_seeds_is_refused(postop, v_plan):
    with pytest.raises(InputError) as exc:
        verify_seeds(postop.ct, replace(v_plan, seeds=()), np.eye(4))
    assert "no seeds" in one_line(exc)


def test_a_ct_without_seeds_is_refused(v_phantom, v_plan):
    with pytest.raises(InputError) as exc:
        verify_seeds(v_phantom.ct, v_plan, np.eye(4))
    assert "no seed visible" in one_line(exc)


def test_a_ct_that_does_not_overlap_the_plan_is_refused(postop, v_plan):
    g = postop.ct.grid
    far = CTImage(Grid(np.add(g.origin_mm, (0.0, 0.0, 500.0)), g.spacing_mm, g.size), postop.ct.hu)
    with pytest.raises(GeometryError) as exc:
        verify_seeds(far, v_plan, np.eye(4))
    assert "does not contain the planned seeds" in one_line(exc)


@pytest.mark.parametrize("kwargs, what", [
    ({"metal_hu": "high"}, "metal_hu"),
    ({"excess_hu": -5.0}, "excess_hu"),
    ({"expected_count": 0}, "expected_count"),
    ({"region_mm": ((0, 0, 0),)}, "region_mm"),
])
def test_bad_detection_arguments(postop, kwargs, what):
    with pytest.raises(InputError) as exc:
        detect_seeds(postop.ct, **kwargs)
    assert what in one_line(exc)
