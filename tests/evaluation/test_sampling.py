import numpy as np
import pytest

from eval_helpers import sphere_mask, z_cylinder_mask
from seedplan.errors import GeometryError, InputError, ResourceError
from seedplan.evaluation.sampling import sample_mask_points, subdivisions_for
from seedplan.geometry import Grid


@pytest.fixture(scope="module")
def grid1():
    return Grid.from_bounds((-15, -15, -15), (15, 15, 15), 1.0)


@pytest.mark.parametrize("boundary", ["trilinear", "voxel"])
def test_sphere_weights_sum_to_mask_volume_and_analytic(grid1, boundary):
    m = sphere_mask(grid1, (0.3, -0.2, 0.1), 10.0)
    pts, w = sample_mask_points(m, grid1, boundary=boundary)
    mask_cm3 = m.sum() * grid1.voxel_volume_mm3 / 1000
    assert w.sum() == pytest.approx(mask_cm3, rel=1e-12)
    assert w.sum() == pytest.approx(4 / 3 * np.pi * 1000 / 1000, rel=0.01)
    # all sample points lie within the sphere up to one voxel
    assert np.all(np.linalg.norm(pts - (0.3, -0.2, 0.1), axis=1) <= 10.0 + 1.0)


def test_cylinder_anisotropic_grid_volume():
    g = Grid((-8.25, -8.25, -20), (0.5, 0.5, 2.5), (34, 34, 17))
    m = z_cylinder_mask(g, 4.0)
    pts, w = sample_mask_points(m, g)
    assert subdivisions_for(g) == (1, 1, 5)
    assert w.sum() == pytest.approx(m.sum() * g.voxel_volume_mm3 / 1000, rel=1e-12)
    # a 16-pixel-diameter disc: pixel counting is within a few % of pi r^2
    assert w.sum() == pytest.approx(np.pi * 16 * 42.5 / 1000, rel=0.05)
    # sub-point z spacing is 0.5 mm
    z = np.unique(np.round(pts[:, 2], 6))
    assert np.allclose(np.diff(z), 0.5)


def test_trilinear_rounds_staircase_but_keeps_flat_faces():
    g = Grid.from_bounds((0, 0, 0), (9, 9, 9), 1.0)
    m = np.zeros(g.shape, bool)
    m[2:6, 3:7, 1:8] = True  # box: faces at voxel faces
    pts, w = sample_mask_points(m, g, subdivisions=2)
    lo = pts.min(0)
    hi = pts.max(0)
    # sub-points at +-0.25 inside the box faces: x in [1, 7], y in [3, 6], z in [2, 5]
    assert np.allclose(lo, (0.75, 2.75, 1.75))
    assert np.allclose(hi, (7.25, 6.25, 5.25))
    # convex box corners are rounded: fewer points than the full voxel lattice
    assert len(pts) < m.sum() * 8


def test_isolated_voxel_is_kept():
    g = Grid.from_bounds((0, 0, 0), (4, 4, 4), 2.0)
    m = np.zeros(g.shape, bool)
    m[1, 1, 1] = True
    # 4x4x4 sub-points: the 8 central ones pass the trilinear >= 0.5 test
    pts, w = sample_mask_points(m, g)
    assert len(pts) == 8 and np.all(np.abs(pts - 2.0) == 0.25)
    assert w.sum() == pytest.approx(0.008)
    # 2x2x2 sub-points at +-0.25 voxel: none passes (0.75^3 < 0.5) -> the voxel keeps all 8
    pts, w = sample_mask_points(m, g, subdivisions=2)
    assert len(pts) == 8 and np.all(np.abs(pts - 2.0) == 0.5)
    assert w.sum() == pytest.approx(0.008)


def test_deterministic_and_rng_jitter(grid1):
    m = sphere_mask(grid1, (0, 0, 0), 5.0)
    a = sample_mask_points(m, grid1)
    b = sample_mask_points(m, grid1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = sample_mask_points(m, grid1, rng=3)
    d = sample_mask_points(m, grid1, rng=np.random.default_rng(3))
    assert np.array_equal(c[0], d[0])
    assert not np.array_equal(a[0][: len(c[0])], c[0][: len(a[0])])
    assert c[1].sum() == pytest.approx(a[1].sum())
    assert not a[0].flags.writeable and not a[1].flags.writeable


def test_rotated_grid_points_follow_direction():
    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)  # 90 deg about z
    g = Grid((10, 20, 30), (1, 2, 3), (5, 5, 5), rot)
    m = np.zeros(g.shape, bool)
    m[2, 2, 2] = True
    pts, _ = sample_mask_points(m, g, boundary="voxel")
    assert np.allclose(pts.mean(0), g.index_to_world((2, 2, 2)))
    ext = pts.max(0) - pts.min(0)
    # i axis (1 mm) maps to world y, j axis (2 mm) to world -x
    assert ext[1] < ext[0]


def test_errors(grid1):
    with pytest.raises(GeometryError, match="shape"):
        sample_mask_points(np.zeros((3, 3, 3), bool), grid1)
    with pytest.raises(InputError, match="empty"):
        sample_mask_points(np.zeros(grid1.shape, bool), grid1, name="Cord")
    m = sphere_mask(grid1, (0, 0, 0), 5.0)
    with pytest.raises(InputError, match="boundary"):
        sample_mask_points(m, grid1, boundary="nearest")
    with pytest.raises(InputError, match="subdivisions"):
        sample_mask_points(m, grid1, subdivisions=0)
    with pytest.raises(InputError, match="points_per_mm3"):
        sample_mask_points(m, grid1, points_per_mm3=-1)
    with pytest.raises(ResourceError, match="max_points"):
        sample_mask_points(m, grid1, max_points=100)


def test_mask_touching_grid_edges_and_large_grid_cropping():
    g = Grid((0, 0, 0), (1.0, 1.0, 2.5), (200, 180, 6))
    m = np.zeros(g.shape, bool)
    m[:, 100:104, 0:5] = True  # touches the x = 0 face and both z faces
    pts, w = sample_mask_points(m, g)
    assert w.sum() == pytest.approx(m.sum() * g.voxel_volume_mm3 / 1000)
    idx = g.world_to_index(pts)
    # beyond the grid counts as outside: the surface sits on the outer voxel faces
    assert idx[:, 0].min() == pytest.approx(-0.25) and idx[:, 2].min() == pytest.approx(-0.4)
    assert idx[:, 2].max() == pytest.approx(5.4) and idx[:, 1].min() == pytest.approx(99.75)
