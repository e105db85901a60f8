"""Grid geometry: the separable ball mask and the verification dilation against their brute-force definitions."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from seedplan.geometry import Grid
from seedplan.verification import _frames as fr


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (10.0, 20.0, 30.0), (0.0, 0.0, 180.0)])
def test_ball_mask_is_the_voxels_within_the_radius(angles):
    direction = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    grid = Grid(np.array([-5.0, 3.0, 7.0]), np.array([0.7, 1.1, 2.5]), np.array([30, 40, 20]), direction)
    centre = grid.index_to_world([12.0, 17.0, 8.0]) + 0.3
    brute = np.sum((grid.voxel_centers_mm() - centre) ** 2, axis=-1) <= 9.0 ** 2
    np.testing.assert_array_equal(grid.ball_mask(centre, 9.0), brute)


def test_ball_mask_volume_is_the_sphere_volume():
    grid = Grid(np.zeros(3), np.full(3, 0.5), np.array([80, 80, 80]), np.eye(3))
    r = 15.0
    volume_mm3 = grid.ball_mask((20.0, 20.0, 20.0), r).sum() * 0.125
    assert volume_mm3 == pytest.approx(4.0 / 3.0 * np.pi * r ** 3, rel=0.01)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.8, 0.8), (2.5, 0.7, 1.1)])
@pytest.mark.parametrize("radius_mm", [1.0, 2.0, 3.0, 5.0])
def test_dilate_matches_the_ball_dilation(spacing, radius_mm):
    rng = np.random.default_rng(1)
    mask = rng.random((30, 40, 50)) > 0.995
    mask[0, 3, 4] = mask[-1, -1, -1] = True  # reaching the edges
    sp = np.asarray(spacing)
    expected = ndimage.binary_dilation(mask, structure=fr.ball(radius_mm, sp))
    np.testing.assert_array_equal(fr.dilate(mask, radius_mm, sp), expected)
    assert not fr.dilate(np.zeros((4, 4, 4), bool), radius_mm, sp).any()


@pytest.mark.parametrize("angles, spacing", [((0.0, 0.0, 0.0), 1.0), ((5.0, 10.0, 20.0), 2.5), ((0.0, 0.0, 90.0), 0.7)])
def test_organs_outside_a_dose_grid_are_counted_as_voxel_by_voxel(angles, spacing):
    """organs_outside_grid's axis-wise count equals the per-voxel test of every organ voxel's centre."""
    from seedplan.imaging import Role, Structure, StructureSet
    from seedplan.plan import organs_outside_grid

    direction = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    ref = Grid(np.array([-20.0, 5.0, 3.0]), np.array([1.0, 1.2, 2.0]), np.array([60, 50, 30]), direction)
    rng = np.random.default_rng(3)
    organ = rng.random(ref.shape) > 0.7
    dose = Grid(ref.index_to_world([10.3, 7.0, 4.0]), np.full(3, spacing), np.array([20, 25, 9]), direction)
    got = organs_outside_grid(dose, StructureSet([Structure("cord", Role.CANAL, organ, ref)]), ref)
    pts = ref.index_to_world(np.argwhere(organ)[:, ::-1].astype(float))
    expected = round(100.0 * float(np.mean(~dose.contains(pts))), 1)
    assert got == {"cord": expected}


def test_mask_bbox_is_the_box_of_the_voxels():
    from seedplan.geometry import mask_bbox

    rng = np.random.default_rng(4)
    for _ in range(20):
        m = rng.random((9, 11, 13)) < rng.uniform(0.0005, 0.05)
        idx = np.argwhere(m)
        expect = None if not len(idx) else (tuple(int(v) for v in idx.min(0)), tuple(int(v) for v in idx.max(0)))
        assert mask_bbox(m) == expect
    assert mask_bbox(np.zeros((3, 4, 5), bool)) is None
