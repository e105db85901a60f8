"""Grid kernels agree with the exact point evaluation and honour the grid geometry."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import seedplan

rng = np.random.default_rng(3)


def _compare(grid, seeds, s, axes, formalism):
    d = seedplan.dose_rate_grid(grid, seeds, s, axes=axes, formalism=formalism)
    pts = grid.voxel_centers_mm().reshape(-1, 3)
    exact = seedplan.dose_rate(pts, seeds, s, axes=axes, formalism=formalism, exact=True)
    return d.reshape(-1), exact, pts


@pytest.mark.parametrize("formalism", ["2D", "1D", "1D-point"])
def test_grid_equals_points(formalism):
    grid = seedplan.Grid([-30.5, -25.0, -20.25], [1.0, 1.25, 1.5], [61, 41, 29])
    seeds = rng.uniform(-10, 10, (8, 3))
    axes = rng.normal(size=(8, 3))
    s = rng.uniform(0.3, 1.0, 8)
    d, exact, pts = _compare(grid, seeds, s, axes, formalism)
    rel = np.abs(d / exact - 1)
    assert rel.max() < 5e-4, rel.max()
    # voxels near a seed are evaluated exactly
    near = np.min(np.linalg.norm(pts[:, None] - seeds[None], axis=2), axis=1) < 2.5
    assert near.any()
    np.testing.assert_allclose(d[near], exact[near], rtol=5e-5)


def test_default_axis_is_grid_k_axis():
    rot = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    grid = seedplan.Grid([0, 0, 0], [2, 2, 2], [15, 15, 15], rot)
    seed = grid.index_to_world([7.2, 6.9, 7.1])
    a = seedplan.dose_rate_grid(grid, [seed], 1.0)
    b = seedplan.dose_rate_grid(grid, [seed], 1.0, axes=[rot[:, 2]])
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_rotated_grid_gives_rotated_dose():
    """Rotating grid, seeds and axes together leaves the voxel values unchanged."""
    base = seedplan.Grid([-20, -18, -16], [1.0, 1.5, 2.0], [41, 25, 17])
    seeds = rng.uniform(-8, 8, (5, 3))
    axes = rng.normal(size=(5, 3))
    s = np.full(5, 0.6)
    ref = seedplan.dose_rate_grid(base, seeds, s, axes=axes)
    rot = Rotation.from_euler("zyx", [33, -21, 12], degrees=True).as_matrix()
    shift = np.array([100.0, -50.0, 20.0])
    rotated = seedplan.Grid(rot @ base.origin + shift, base.spacing_mm, base.size, rot @ base.direction_matrix)
    out = seedplan.dose_rate_grid(rotated, seeds @ rot.T + shift, s, axes=axes @ rot.T)
    np.testing.assert_allclose(out, ref, rtol=2e-4)


def test_flipped_axes():
    flip = np.diag([-1.0, 1.0, -1.0])
    grid = seedplan.Grid([10, -10, 10], [1, 1, 1], [21, 21, 21], flip)
    seed = np.array([0.3, 0.2, -0.1])
    d = seedplan.dose_rate_grid(grid, [seed], 1.0, axes=[[0, 0, 1]])
    exact = seedplan.dose_rate(grid.voxel_centers_mm().reshape(-1, 3), [seed], 1.0, axes=[[0, 0, 1]], exact=True)
    np.testing.assert_allclose(d.reshape(-1), exact, rtol=5e-4)
    # the hottest voxel is the one nearest the seed
    k, j, i = np.unravel_index(np.argmax(d), d.shape)
    assert np.linalg.norm(grid.index_to_world([i, j, k]) - seed) < 1.0


def test_total_dose_grid_units():
    grid = seedplan.Grid([-10, -10, -10], [2, 2, 2], [11, 11, 11])
    r = seedplan.dose_rate_grid(grid, [[0, 0, 0]], 0.5)
    t = seedplan.total_dose_grid(grid, [[0, 0, 0]], 0.5)
    np.testing.assert_allclose(t, r * seedplan.dose.mean_life_h() / 100, rtol=1e-6)


def test_grid_geometry_round_trip():
    rot = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    g = seedplan.Grid([1, 2, 3], [0.7, 0.8, 2.5], [10, 12, 7], rot.reshape(-1))
    ijk = rng.uniform(0, 6, (20, 3))
    np.testing.assert_allclose(g.world_to_index(g.index_to_world(ijk)), ijk, atol=1e-9)
    assert g.shape == (7, 12, 10)
    np.testing.assert_allclose(g.index_to_world([1, 0, 0]) - g.origin, 0.7 * rot[:, 0])
