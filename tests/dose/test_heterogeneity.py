"""Primary-attenuation (ray-trace) correction: analytic slabs, symmetry, superposition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seedplan.dose import total_dose
from seedplan.dose.heterogeneity import (
    MU_CORTICAL_ICRP_CM,
    MU_WATER_CM,
    attenuation_factors,
    heterogeneity_dose,
    mu_map,
)
from seedplan.errors import GeometryError, InputError
from seedplan.geometry import Grid
from seedplan.imaging.ct import CTImage
from seedplan.planning.cement import PMMA, PMMA_BASO4_10, PMMA_BASO4_30, PMMA_ZRO2_15

MU_W = 0.412


@pytest.fixture(scope="module")
def grid():
    # voxel boundaries on multiples of 0.5 mm: centres at -19.75 ... 19.75
    return Grid((-19.75, -19.75, -19.75), (0.5, 0.5, 0.5), (80, 80, 80))


def slab(grid, mu_slab, x0=5.0, x1=10.0):
    mu = np.full(grid.shape, MU_W)
    x = grid.voxel_centers_mm()[..., 0]
    mu[(x > x0) & (x < x1)] = mu_slab
    return mu


def test_section6_material_values():
    # spectrum-weighted mu from clinical_planning.md section 6
    assert (PMMA.mu_cm, PMMA_BASO4_10.mu_cm, PMMA_BASO4_30.mu_cm, PMMA_ZRO2_15.mu_cm) == (0.388, 1.28, 3.50, 4.59)
    assert MU_WATER_CM == 0.412 and MU_CORTICAL_ICRP_CM == 2.77


@pytest.mark.parametrize(
    "material, thickness, expected, table",
    [
        (PMMA_BASO4_30, 5.0, math.exp(-(3.50 - 0.412) * 0.5), 0.21),  # 0.2135
        (PMMA_BASO4_30, 10.0, math.exp(-(3.50 - 0.412) * 1.0), 0.05),  # 0.0456
        (PMMA, 5.0, math.exp(-(0.388 - 0.412) * 0.5), 1.01),
        (PMMA_BASO4_10, 5.0, math.exp(-(1.28 - 0.412) * 0.5), 0.65),
        (PMMA_ZRO2_15, 5.0, math.exp(-(4.59 - 0.412) * 0.5), 0.12),
    ],
)
def test_slab_factor_matches_analytic_and_table(grid, material, thickness, expected, table):
    mu = slab(grid, material.mu_cm, 5.0, 5.0 + thickness)
    f = attenuation_factors([[18.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], mu, grid)
    assert f.shape == (1, 1)
    assert f[0, 0] == pytest.approx(expected, rel=0.01)
    assert f[0, 0] == pytest.approx(table, abs=0.015)  # the section 6 T(t) column (2 decimals)


def test_point_not_behind_slab_is_unattenuated(grid):
    mu = slab(grid, PMMA_BASO4_30.mu_cm)
    pts = [[-15.0, 0.0, 0.0], [0.0, 0.0, 15.0], [0.0, 12.0, -3.0], [4.0, 0.0, 0.0]]
    f = attenuation_factors(pts, [[0.0, 0.0, 0.0]], mu, grid)
    np.testing.assert_allclose(f[:, 0], 1.0, atol=1e-12)


def test_oblique_path_length(grid):
    mu = slab(grid, PMMA_BASO4_30.mu_cm)
    p = np.array([15.0, 3.0, 2.0])
    ell_cm = 0.5 * np.linalg.norm(p) / p[0]  # 5 mm / cos(theta)
    f = attenuation_factors(p, [0.0, 0.0, 0.0], mu, grid)
    assert f[0, 0] == pytest.approx(math.exp(-(3.50 - MU_W) * ell_cm), rel=1e-6)


def test_symmetry_and_shape(grid):
    mu = slab(grid, PMMA_BASO4_30.mu_cm)
    rng = np.random.default_rng(3)
    a = rng.uniform(-18, 18, (7, 3))
    b = rng.uniform(-18, 18, (4, 3))
    f_ab = attenuation_factors(a, b, mu, grid)
    f_ba = attenuation_factors(b, a, mu, grid)
    assert f_ab.shape == (7, 4)
    np.testing.assert_allclose(f_ab, f_ba.T, rtol=1e-10)
    assert np.all((f_ab > 0) & (f_ab <= 1 + 1e-12))


def test_ray_march_option_close_to_exact(grid):
    mu = slab(grid, PMMA_BASO4_30.mu_cm)
    exact = attenuation_factors([[18.0, 0.1, 0.1]], [[0.1, 0.1, 0.1]], mu, grid)
    march = attenuation_factors([[18.0, 0.1, 0.1]], [[0.1, 0.1, 0.1]], mu, grid, step_mm=0.1)
    assert march[0, 0] == pytest.approx(exact[0, 0], rel=0.03)


def test_outside_grid_counts_as_water(grid):
    mu = np.full(grid.shape, 3.5)
    # the segment from x=-40 to x=-30 never enters the grid (starts at -20 mm)
    f = attenuation_factors([[-40.0, 0.0, 0.0]], [[-30.0, 0.0, 0.0]], mu, grid)
    assert f[0, 0] == 1.0


def test_dose_water_map_equals_tg43_and_superposition(grid):
    pts = np.array([[15.0, 0.0, 0.0], [12.0, 4.0, -2.0], [-10.0, 0.0, 0.0]])
    seeds = np.array([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    water = np.full(grid.shape, MU_W)
    d_w = heterogeneity_dose(pts, seeds, 0.5, water, grid)
    np.testing.assert_allclose(d_w, total_dose(pts, seeds, 0.5), rtol=1e-12)
    mu = slab(grid, PMMA_BASO4_30.mu_cm)
    d = heterogeneity_dose(pts, seeds, [0.5, 0.7], mu, grid)
    d0 = heterogeneity_dose(pts, seeds[:1], 0.5, mu, grid)
    d1 = heterogeneity_dose(pts, seeds[1:], 0.7, mu, grid)
    np.testing.assert_allclose(d, d0 + d1, rtol=1e-12)
    # behind the slab: attenuated by the analytic factor (point on the seed-0 axis)
    tg = total_dose(pts[:1], seeds[:1], 0.5)
    assert d0[0] == pytest.approx(tg[0] * math.exp(-(3.50 - MU_W) * 0.5), rel=0.01)
    assert d0[2] == pytest.approx(total_dose(pts[2:], seeds[:1], 0.5)[0], rel=1e-12)


def test_mu_map_classes():
    g = Grid((0, 0, 0), (1, 1, 1), (6, 1, 1))
    hu = np.array([[[-1000, 0, 200, 900, 300, 40]]], dtype=np.float32)
    ct = CTImage(g, hu)
    mu = mu_map(ct)
    assert mu[0, 0, 0] == pytest.approx(0.0)
    assert mu[0, 0, 1] == pytest.approx(0.412)
    assert mu[0, 0, 2] == pytest.approx(0.412 + 200 / 1500 * (2.77 - 0.412))  # cancellous mix
    assert mu[0, 0, 3] == pytest.approx(2.77)
    cm = np.zeros(g.shape, bool)
    cm[0, 0, 4:] = True
    mu2 = mu_map(ct, cm)  # default 30 wt% BaSO4
    assert mu2[0, 0, 4] == 3.50 and mu2[0, 0, 5] == 3.50
    mu3 = mu_map(ct, cm, PMMA_ZRO2_15, cancellous_mu=0.8)
    assert mu3[0, 0, 5] == 4.59 and mu3[0, 0, 2] == 0.8


def test_errors(grid):
    mu = np.full(grid.shape, MU_W)
    with pytest.raises(GeometryError, match="mu_volume_cm"):
        attenuation_factors([[0, 0, 0]], [[1, 1, 1]], mu[:-1], grid)
    with pytest.raises(InputError, match="step_mm"):
        attenuation_factors([[0, 0, 0]], [[1, 1, 1]], mu, grid, step_mm=-1)
    with pytest.raises(InputError, match="points_mm"):
        attenuation_factors([[0, 0]], [[1, 1, 1]], mu, grid)
    bad = mu.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="mu_volume_cm"):
        attenuation_factors([[0, 0, 0]], [[1, 1, 1]], bad, grid)
    g = Grid((0, 0, 0), (1, 1, 1), (2, 1, 1))
    with pytest.raises(GeometryError, match="cement_mask"):
        mu_map(CTImage(g, np.zeros(g.shape, np.float32)), np.zeros((1, 1, 3), bool))


# ------------------------------------------------------- block-skipping traversal vs the voxel-by-voxel one
def _mixed_mu(shape, rng):
    """Water with a uniform cement brick, a noisy bone slab, an air pocket and scattered single voxels."""
    mu = np.full(shape, MU_W)
    nz, ny, nx = shape
    mu[nz // 4 : nz // 2, ny // 3 : ny // 2, nx // 3 : 2 * nx // 3] = PMMA_BASO4_30.mu_cm
    mu[:, 2 * ny // 3 : 2 * ny // 3 + 5, :] = rng.uniform(0.6, 2.77, (nz, 5, nx))
    mu[3 * nz // 4 :, : ny // 4, : nx // 4] = 0.0  # air: negative excess
    k, j, i = (rng.integers(0, n, 40) for n in shape)
    mu[k, j, i] = rng.uniform(0.0, 4.0, 40)
    return mu


@pytest.mark.parametrize("size", [(50, 41, 25), (48, 44, 24), (53, 42, 27)])
def test_block_traversal_equals_voxel_traversal(size):
    """Random rays (also axis-parallel, on voxel faces, leaving the grid) through a mixed map: the same sum.

    Grid sizes that are and are not multiples of the block size (blocks cut by the far faces).
    """
    from seedplan.dose.heterogeneity import _reference_attenuation_factors

    rng = np.random.default_rng(sum(size))
    g = Grid((-20.0, -18.0, -15.0), (0.8, 0.9, 1.25), size)
    mu = _mixed_mu(g.shape, rng)
    lo, hi = g.corners_mm().min(0), g.corners_mm().max(0)
    pts = rng.uniform(lo - 5, hi + 5, (300, 3))
    seeds = rng.uniform(lo - 2, hi + 2, (9, 3))
    seeds[1] = g.index_to_world([[8.5, 12.5, 4.5]])[0]  # on voxel corners (and a block corner)
    seeds[2] = g.index_to_world([[16.0, 20.0, 12.0]])[0]  # a voxel centre on block boundaries
    pts[:40, 1:] = seeds[3, 1:]  # parallel to x
    pts[40:80, [0, 2]] = seeds[4, [0, 2]]  # parallel to y
    pts[80:90] = seeds[5] + [[0.0, 0.0, 3.0 * (q + 1)] for q in range(10)]  # parallel to z
    f = attenuation_factors(pts, seeds, mu, g)
    ref = _reference_attenuation_factors(pts, seeds, mu, g)
    assert np.max(np.abs(np.log(f) - np.log(ref))) < 1e-12
    assert (f < 0.999).mean() > 0.3 and (f > 1.001).any()  # the rays do cross cement, bone and air


def test_block_traversal_equals_voxel_traversal_on_the_phantom():
    """The phantom with its cement: structure points to planted seeds (measured bound in _excess_skip)."""
    from seedplan.dose.heterogeneity import _reference_attenuation_factors
    from seedplan.imaging.phantom import make_spine_phantom
    from seedplan.imaging.structures import Role

    ph = make_spine_phantom(level="L3", spacing_mm=2.0, noise_hu=20.0)
    g = ph.ct.grid
    tgt = ph.structures.by_role(Role.TARGET)[0]
    tv = g.index_to_world(np.argwhere(tgt.mask)[:, ::-1].astype(float))
    centre = tv.mean(axis=0)
    cement = np.zeros(g.shape, bool)
    cement[np.linalg.norm(g.voxel_centers_mm() - centre, axis=-1) < 7.0] = True
    mu = mu_map(ph.ct, cement)
    seeds = centre + np.array([[9.0, 0, 0], [-9.0, 0, 0], [0, 9.0, 4.0], [0, -8.0, -5.0]])
    pts = np.vstack([tv[::3]] + [g.index_to_world(np.argwhere(s.mask)[::25, ::-1].astype(float))
                                for s in ph.structures.values() if s.role in (Role.OAR, Role.CANAL)])
    f = attenuation_factors(pts, seeds, mu, g)
    ref = _reference_attenuation_factors(pts, seeds, mu, g)
    assert np.max(np.abs(f / ref - 1.0)) < 1e-10
    assert f.min() < 0.2  # shadowed by the cement


def test_mu_map_equals_numpy_rules():
    """The one-pass mu_map against the class rules written out in NumPy."""
    rng = np.random.default_rng(2)
    g = Grid((0, 0, 0), (1, 1, 1), (30, 20, 10))
    hu = rng.uniform(-1100, 1600, g.shape).astype(np.float32)
    hu[0, 0, :6] = [-400, 150, 700, -400.001, 149.999, 699.99]  # class edges
    cm = rng.uniform(size=g.shape) < 0.05

    def rules(hu, soft, cort, ref_hu, canc=None, cement=None, cement_mu=3.5):
        h = hu.astype(np.float64)
        mu = np.full(h.shape, soft)
        air = h < -400
        mu[air] = soft * np.clip(1 + h[air] / 1000, 0, None)
        c = (h >= 150) & (h < 700)
        mu[c] = soft + np.clip(h[c] / ref_hu, 0, 1) * (cort - soft) if canc is None else canc
        mu[h >= 700] = cort
        if cement is not None:
            mu[cement] = cement_mu
        return mu

    ct = CTImage(g, hu)
    np.testing.assert_array_equal(mu_map(ct), rules(hu, 0.412, 2.77, 1500.0))
    np.testing.assert_array_equal(mu_map(ct, cm), rules(hu, 0.412, 2.77, 1500.0, cement=cm))
    np.testing.assert_array_equal(mu_map(ct, cm, PMMA_ZRO2_15, cancellous_mu=0.8, cortical_ref_hu=1200.0),
                                  rules(hu, 0.412, 2.77, 1200.0, canc=0.8, cement=cm, cement_mu=4.59))
