"""Throughput of the grid dose engine (``seedplan.dose.dose_rate_grid``) against plain NumPy.

Run with ``pytest benchmarks/ --benchmark-only`` (not part of the default
test run; takes a few minutes, most of it in the NumPy reference on 128^3
grids).

Cases: formalism in {1D, 2D} x {20, 100} seeds x {64^3, 128^3} grids at 1 mm,
seeds placed uniformly in the central +-20 mm cube with random axes (fixed
rng), 0.5 U each, no cut-off.  Throughput is counted in seed-voxel
evaluations per second (n_voxels * n_seeds / best time).

* ``test_seedplan``: ``dose_rate_grid`` is called once before timing, so the
  JIT compilation (or cache load) and the building of the per-model table are
  excluded; the timed calls include everything else (validation, the output
  allocation, the table pass and the exact near-field pass).  The same test
  checks the accuracy: max relative error against the exact point evaluation
  ``seedplan.dose.dose_rate(..., exact=True)`` at 3000 random voxels at least 1 mm from every
  seed (must be < 5e-4).
* ``test_numpy``: a plain NumPy implementation of the same formalism and the
  same interpolation rules (vectorised over all voxels, a Python loop over
  seeds, float64), timed for one round (it takes seconds to a minute); its
  result is checked against the exact evaluation too.

The summary printed at the end of the session (see ``conftest.py``) gives,
per case, the throughput, the ratio to NumPy, the accuracy and whether the
targets (1D >= 1e9, 2D >= 4e8 seed-voxel/s, >= 30x NumPy) are met.

Point dose (``seedplan.dose.dose_rate`` at arbitrary points): formalism in
{1D, 2D} x {20, 100} seeds x {1e5, 1e6} points drawn uniformly in the
central +-40 mm cube around the same kind of seeds (random axes, 0.5 U,
no cut-off).  Throughput is counted in seed-point pairs per second.

* ``test_points_tabulated``: the default (tabulated) path, timed over 5
  rounds after one warm-up call (JIT / cache load and the table are not
  timed; validation and the exact near-field pairs are); its max relative
  difference from the exact kernel over the first 20000 points must be
  <= 5e-5.
* ``test_points_exact``: ``dose_rate(..., exact=True)``, the exact numba
  kernel (3 rounds after a warm-up, 1 for 1e6 points).
* ``test_points_numpy``: :meth:`NumpyTG43.dose_rate_points`, the same
  formalism in plain NumPy (vectorised over points, a Python loop over
  seeds), one round; checked against the exact kernel (< 1e-9).

The summary gives, per case, the three throughputs and the ratios of the
tabulated path to the exact kernel and to NumPy; run all three in one
session (the machine is shared, so only ratios from one run compare).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from seedplan.dose import dose_rate, dose_rate_grid
from seedplan.geometry import Grid
from seedplan.sources import load_seed_model

FORMALISMS = ["1D", "2D"]
N_SEEDS = [20, 100]
SIZES = [64, 128]
STRENGTH_U = 0.5
N_CHECK = 3000
MAX_REL_ERR = 5e-4


# --------------------------------------------------------------------- setup
def make_case(n: int, n_seeds: int):
    """A 1 mm grid of n^3 voxels centred on the origin and seeds in the central +-20 mm."""
    rng = np.random.default_rng(1000 * n + n_seeds)
    grid = Grid(origin_mm=(-(n - 1) / 2.0,) * 3, spacing_mm=(1.0, 1.0, 1.0), size=(n, n, n))
    seeds = rng.uniform(-20.0, 20.0, size=(n_seeds, 3))
    axes = rng.normal(size=(n_seeds, 3))
    axes /= np.linalg.norm(axes, axis=1)[:, None]
    return grid, seeds, axes


def check_points(grid: Grid, seeds: np.ndarray, n_points: int = N_CHECK):
    """Flat indices and positions (mm) of random voxels at least 1 mm from every seed."""
    rng = np.random.default_rng(7)
    n = grid.size[0]
    flat = rng.choice(n**3, size=4 * n_points, replace=False)
    k, j, i = np.unravel_index(flat, grid.shape)
    pts = np.asarray(grid.origin_mm) + np.stack([i, j, k], axis=1).astype(float)
    dmin = np.min(np.linalg.norm(pts[:, None, :] - seeds[None, :, :], axis=2), axis=1)
    keep = np.flatnonzero(dmin >= 1.0)[:n_points]
    return flat[keep], pts[keep]


def max_rel_err(values_at_points: np.ndarray, pts, seeds, axes, formalism) -> float:
    exact = dose_rate(pts, seeds, STRENGTH_U, axes=axes, formalism=formalism, exact=True)
    return float(np.max(np.abs(values_at_points - exact) / exact))


# ---------------------------------------------------------- NumPy reference
class NumpyTG43:
    """Plain NumPy TG-43 (same rules as ``seedplan.dose._exact``), vectorised over voxels.

    g_L log-linear with nearest neighbour below the table and an exponential
    through the two outermost nodes above; F bilinear in (r, theta in degrees)
    with theta folded into [0, 90] and nearest neighbour in r outside the
    table; G_L of a line source via atan2; phi_an linear, clamped.  Points
    inside the capsule are moved to its surface, as in seedplan.
    """

    def __init__(self, model):
        self.lam = model.dose_rate_constant_cGy_h_U
        self.L = model.active_length_cm
        self.g0 = 2.0 * math.atan(self.L / 2.0) / self.L
        self.g_r = np.asarray(model.g_r_cm, float)
        self.log_g = np.log(np.asarray(model.g_L, float))
        self.f_r = np.asarray(model.F_r_cm, float)
        self.f_t = np.asarray(model.F_theta_deg, float)
        self.f = np.asarray(model.F, float)
        self.phi_r = np.asarray(model.phi_r_cm, float)
        self.phi = np.asarray(model.phi_an, float)
        self.half = model.capsule_length_mm / 20.0
        self.rad = model.capsule_diameter_mm / 20.0

    def g_L(self, r):
        g = np.interp(r, self.g_r, self.log_g)  # log-linear inside, nearest below
        above = r > self.g_r[-1]
        if np.any(above):
            slope = (self.log_g[-1] - self.log_g[-2]) / (self.g_r[-1] - self.g_r[-2])
            g = np.where(above, self.log_g[-1] + slope * (r - self.g_r[-1]), g)
        return np.exp(g)

    def geometry(self, z, y):
        r2 = z * z + y * y
        d = r2 - 0.25 * self.L * self.L
        on_axis = y * self.L <= 1e-12 * r2
        with np.errstate(divide="ignore", invalid="ignore"):
            gl = np.arctan2(y * self.L, d) / (self.L * y)
        return np.where(on_axis, 1.0 / d, gl)

    def anisotropy(self, r, theta):
        nr, nt = self.f_r.size, self.f_t.size
        j = np.clip(np.searchsorted(self.f_t, theta, side="right") - 1, 0, nt - 2)
        u = (theta - self.f_t[j]) / (self.f_t[j + 1] - self.f_t[j])
        i = np.clip(np.searchsorted(self.f_r, r, side="right") - 1, 0, nr - 2)
        t = np.clip((r - self.f_r[i]) / (self.f_r[i + 1] - self.f_r[i]), 0.0, 1.0)
        a = self.f[i, j] + u * (self.f[i, j + 1] - self.f[i, j])
        b = self.f[i + 1, j] + u * (self.f[i + 1, j + 1] - self.f[i + 1, j])
        return a + t * (b - a)

    def out_of_capsule(self, z, y):
        h = max(self.half - self.rad, 0.0)
        zc = np.clip(z, -h, h)
        dz = z - zc
        d2 = dz * dz + y * y
        inside = np.flatnonzero(d2 < self.rad * self.rad)
        if inside.size:
            z = z.copy()
            y = y.copy()
            di = d2.flat[inside]
            f = np.where(di > 0.0, self.rad / np.sqrt(np.where(di > 0.0, di, 1.0)), 0.0)
            z.flat[inside] = np.where(di > 0.0, zc.flat[inside] + dz.flat[inside] * f, z.flat[inside])
            y.flat[inside] = np.where(di > 0.0, y.flat[inside] * f, self.rad)
        return z, y

    def dose_rate_grid(self, grid: Grid, seeds_mm, strength_U, axes, formalism):
        """Dose rate (cGy/h) on an axis-aligned grid, [z, y, x]; loop over seeds."""
        nx, ny, nz = grid.size
        o = np.asarray(grid.origin_mm) / 10.0
        sp = np.asarray(grid.spacing_mm) / 10.0
        xs = (o[0] + sp[0] * np.arange(nx))[None, None, :]
        ys = (o[1] + sp[1] * np.arange(ny))[None, :, None]
        zs = (o[2] + sp[2] * np.arange(nz))[:, None, None]
        out = np.zeros((nz, ny, nx))
        for s, a, sk in zip(np.asarray(seeds_mm) / 10.0, axes, np.broadcast_to(strength_U, len(seeds_mm))):
            dx, dy, dz = xs - s[0], ys - s[1], zs - s[2]
            z = dx * a[0] + dy * a[1] + dz * a[2]
            r2 = dx * dx + dy * dy + dz * dz
            y = np.sqrt(np.maximum(r2 - z * z, 0.0))
            z, y = self.out_of_capsule(z, y)
            r = np.sqrt(z * z + y * y)
            if formalism == "2D":
                theta = np.degrees(np.arctan2(y, np.abs(z)))
                rate = self.geometry(z, y) * self.g_L(r) * self.anisotropy(r, theta)
            else:
                rate = self.geometry(np.zeros_like(r), r) * self.g_L(r) * np.interp(r, self.phi_r, self.phi)
            out += (sk * self.lam / self.g0) * rate
        return out


    def dose_rate_points(self, points_mm, seeds_mm, strength_U, axes, formalism):
        """Dose rate (cGy/h) at (N, 3) points; vectorised over points, a loop over seeds."""
        p = np.asarray(points_mm, float) / 10.0
        out = np.zeros(p.shape[0])
        for s, a, sk in zip(np.asarray(seeds_mm) / 10.0, axes, np.broadcast_to(strength_U, len(seeds_mm))):
            d = p - s
            z = d @ a
            q = d - z[:, None] * a
            y = np.sqrt(np.einsum("ij,ij->i", q, q))
            z, y = self.out_of_capsule(z, y)
            r = np.sqrt(z * z + y * y)
            if formalism == "2D":
                theta = np.degrees(np.arctan2(y, np.abs(z)))
                rate = self.geometry(z, y) * self.g_L(r) * self.anisotropy(r, theta)
            else:
                rate = self.geometry(np.zeros_like(r), r) * self.g_L(r) * np.interp(r, self.phi_r, self.phi)
            out += (sk * self.lam / self.g0) * rate
        return out


# ---------------------------------------------------------------- benchmarks
CASES = [(f, ns, n) for f in FORMALISMS for n in SIZES for ns in N_SEEDS]
IDS = [f"{f}-{ns}seeds-{n}^3" for f, ns, n in CASES]


def _best_seconds(benchmark):
    try:
        return float(benchmark.stats.stats.min)
    except AttributeError:  # --benchmark-disable: no statistics
        return None


@pytest.mark.parametrize("formalism,n_seeds,n", CASES, ids=IDS)
def test_seedplan(benchmark, record_result, formalism, n_seeds, n):
    grid, seeds, axes = make_case(n, n_seeds)

    def run():
        return dose_rate_grid(grid, seeds, STRENGTH_U, axes=axes, formalism=formalism)

    run()  # warm-up: JIT compilation / cache load and the per-model table are not timed
    dose = benchmark.pedantic(run, rounds=10 if n <= 64 else 5, iterations=1)

    flat, pts = check_points(grid, seeds)
    err = max_rel_err(dose.reshape(-1)[flat], pts, seeds, axes, formalism)
    benchmark.extra_info["max_rel_err_vs_exact_r_ge_1mm"] = err
    best = _best_seconds(benchmark)
    if best:
        benchmark.extra_info["seed_voxel_per_s"] = n**3 * n_seeds / best
        record_result((formalism, n_seeds, n), seedplan=n**3 * n_seeds / best, err=err)
    else:
        record_result((formalism, n_seeds, n), err=err)
    assert err < MAX_REL_ERR


@pytest.mark.parametrize("formalism,n_seeds,n", CASES, ids=IDS)
def test_numpy(benchmark, record_result, formalism, n_seeds, n):
    grid, seeds, axes = make_case(n, n_seeds)
    ref = NumpyTG43(load_seed_model("6711"))

    def run():
        return ref.dose_rate_grid(grid, seeds, STRENGTH_U, axes, formalism)

    dose = benchmark.pedantic(run, rounds=1, iterations=1)

    flat, pts = check_points(grid, seeds)
    err = max_rel_err(dose.reshape(-1)[flat], pts, seeds, axes, formalism)
    benchmark.extra_info["max_rel_err_vs_exact_r_ge_1mm"] = err
    best = _best_seconds(benchmark)
    if best:
        benchmark.extra_info["seed_voxel_per_s"] = n**3 * n_seeds / best
        record_result((formalism, n_seeds, n), numpy=n**3 * n_seeds / best, numpy_err=err)
    assert err < 1e-9  # the reference implements the same formalism


# ---------------------------------------------------------------- point dose
POINT_COUNTS = [100_000, 1_000_000]
POINT_CASES = [(f, ns, n) for f in FORMALISMS for n in POINT_COUNTS for ns in N_SEEDS]
POINT_IDS = [f"{f}-{ns}seeds-{n:.0e}pts" for f, ns, n in POINT_CASES]
N_POINT_CHECK = 20_000
POINT_MAX_REL_ERR = 5e-5


def make_point_case(n_points: int, n_seeds: int):
    """Seeds in the central +-20 mm (random axes) and points uniform in the central +-40 mm cube."""
    rng = np.random.default_rng(10 * n_points + n_seeds)
    seeds = rng.uniform(-20.0, 20.0, size=(n_seeds, 3))
    axes = rng.normal(size=(n_seeds, 3))
    axes /= np.linalg.norm(axes, axis=1)[:, None]
    pts = rng.uniform(-40.0, 40.0, size=(n_points, 3))
    return pts, seeds, axes


def _point_rate(benchmark, record_point_result, case, key, n_pairs):
    best = _best_seconds(benchmark)
    if best:
        benchmark.extra_info["seed_point_pairs_per_s"] = n_pairs / best
        record_point_result(case, **{key: n_pairs / best})


@pytest.mark.parametrize("formalism,n_seeds,n", POINT_CASES, ids=POINT_IDS)
def test_points_tabulated(benchmark, record_point_result, formalism, n_seeds, n):
    pts, seeds, axes = make_point_case(n, n_seeds)

    def run():
        return dose_rate(pts, seeds, STRENGTH_U, axes=axes, formalism=formalism)

    run()  # warm-up: JIT compilation / cache load and the per-model table are not timed
    dose = benchmark.pedantic(run, rounds=5, iterations=1)
    sub = slice(0, N_POINT_CHECK)
    exact = dose_rate(pts[sub], seeds, STRENGTH_U, axes=axes, formalism=formalism, exact=True)
    err = float(np.max(np.abs(dose[sub] / exact - 1.0)))
    benchmark.extra_info["max_rel_err_vs_exact"] = err
    record_point_result((formalism, n_seeds, n), err=err)
    _point_rate(benchmark, record_point_result, (formalism, n_seeds, n), "tabulated", n * n_seeds)
    assert err <= POINT_MAX_REL_ERR


@pytest.mark.parametrize("formalism,n_seeds,n", POINT_CASES, ids=POINT_IDS)
def test_points_exact(benchmark, record_point_result, formalism, n_seeds, n):
    pts, seeds, axes = make_point_case(n, n_seeds)

    def run():
        return dose_rate(pts, seeds, STRENGTH_U, axes=axes, formalism=formalism, exact=True)

    dose_rate(pts[:1000], seeds, STRENGTH_U, axes=axes, formalism=formalism, exact=True)  # warm-up
    benchmark.pedantic(run, rounds=3 if n <= 100_000 else 1, iterations=1)
    _point_rate(benchmark, record_point_result, (formalism, n_seeds, n), "exact", n * n_seeds)


@pytest.mark.parametrize("formalism,n_seeds,n", POINT_CASES, ids=POINT_IDS)
def test_points_numpy(benchmark, record_point_result, formalism, n_seeds, n):
    pts, seeds, axes = make_point_case(n, n_seeds)
    ref = NumpyTG43(load_seed_model("6711"))

    def run():
        return ref.dose_rate_points(pts, seeds, STRENGTH_U, axes, formalism)

    dose = benchmark.pedantic(run, rounds=1, iterations=1)
    sub = slice(0, N_POINT_CHECK)
    exact = dose_rate(pts[sub], seeds, STRENGTH_U, axes=axes, formalism=formalism, exact=True)
    err = float(np.max(np.abs(dose[sub] / exact - 1.0)))
    benchmark.extra_info["max_rel_err_vs_exact"] = err
    record_point_result((formalism, n_seeds, n), numpy_err=err)
    _point_rate(benchmark, record_point_result, (formalism, n_seeds, n), "numpy", n * n_seeds)
    assert err < 1e-9  # the reference implements the same formalism
