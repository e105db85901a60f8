"""Fast tabulated TG-43 dose at arbitrary points (numba, parallel over points).

The point kernels read the grid path's per-model lattices (:mod:`._grid`) in
their float64 form, :func:`._grid.rate_r2_2d` and :func:`._grid.rate_r2_1d`:
``r^2 Ddot / S_K`` on a ``DR_MM`` x ``DTHETA_DEG`` (r, folded theta) lattice for
the 2D formalism and on a ``DR1_MM`` r lattice for the 1D formalisms.  A
seed-point pair reads the table with bilinear (2D) or linear (1D)
interpolation and divides by r^2.  The pair is evaluated with the exact
kernel (:func:`._exact.rate_per_U`) instead when

* r < ``r_near_mm``: the grid path's near-field radius (``R_NEAR_MM``,
  ``R_NEAR_1D_MM``), or farther out if the table is not accurate to
  :data:`TABLE_TOLERANCE` there for this model (see :func:`near_radius_mm`),
  and never inside the capsule's bounding sphere;
* r >= ``r_far_mm``: beyond the table (built to the farthest pair, at most
  :data:`R_TABLE_MAX_MM`).

Lengths are in mm, the table values in mm^2 cGy h^-1 U^-1; the sums are in
float64.  Seeds are passed as one (7, M) array of rows x, y, z, axis x, y, z
and S_K (see :func:`seed_rows`).  The kernels go over blocks of
:data:`BLOCK` points in parallel; inside a block, the loop over the points
for one seed is the vectorised one (so it vectorises whatever the number of
seeds).

How the exact pairs are merged: pass 1 (vectorised, no branches) adds every
pair within the cut-off from the table, with r^2 clamped into the table's
range, and counts the pairs that may be near or far (with a 1e-9 margin);
pass 2 runs only for points that have such pairs and, for each pair it
classifies as near or far, adds the exact value minus the table value it
recomputes.  Pass 2's own classification is the one that counts, so a pair
whose r^2 rounds differently in the two passes still gets one value, not
none or two.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types

from . import _grid
from ._exact import ModelArrays, rate_per_U, rate_table_polar

#: The point kernels' target accuracy: the near-field radius is widened until
#: the table's estimated interpolation error beyond it is below this (relative).
TABLE_TOLERANCE = 4.0e-5
#: Pairs farther than this are evaluated exactly rather than growing the table.
R_TABLE_MAX_MM = 255.0
#: asin(x) ~= x * sum c_k x^(2k) on [0, sqrt(1/2)], degree 13: within 5e-13 rad.
ASIN_COEF_13 = _grid._asin_coefficients(13)

# fast-math without nnan/ninf: the cut-off may be "none" (a huge value) and the
# clamps of r^2 into the table must hold; the exact pairs are evaluated in
# functions compiled without fast-math (:func:`_exact_pair`)
_FASTMATH = {"nsz", "contract", "reassoc", "arcp"}
#: Relative margin on r^2 within which pass 1 hands a pair to pass 2.
_MARGIN = 1.0e-9


class PointTable(NamedTuple):
    """A table and the radii between which the point kernels read it.

    ``table`` is (nr, nt) float64 ``r^2 Ddot / S_K`` (nt = 1 for 1D);
    ``inv_dr`` (1/mm) and ``inv_dth`` (1/rad) are the reciprocal lattice steps.
    """

    table: np.ndarray
    inv_dr: float
    inv_dth: float
    r_near_mm: float
    r_far_mm: float


_NEAR: dict = {}


def _estimated_error_rows(model, arrays: ModelArrays, formalism: int, raw: np.ndarray) -> np.ndarray:
    """Estimated max relative interpolation error of each lattice cell row (row i: r from i to i + 1 steps).

    For an interpolant ``a t(1-t) + b s(1-s)`` of the second-order error the
    maximum over a cell is at its centre or at the middle of one of its edges,
    so the table is compared with the exact evaluation there.
    """
    if formalism == 0:
        dr, dth = _grid.DR_MM, _grid.DTHETA_DEG
        nr, nt = raw.shape
        r_node = np.arange(nr) * dr
        r_mid = (np.arange(nr - 1) + 0.5) * dr
        t_node = np.arange(nt) * dth
        t_mid = (np.arange(nt - 1) + 0.5) * dth
        # exact r^2 Ddot at the centres (r_mid, t_mid), r-edge middles (r_mid, t_node), theta-edge middles (r_node, t_mid)
        centre = rate_table_polar(r_mid / 10.0, t_mid, 0, *arrays) * (r_mid**2)[:, None]
        r_edge = rate_table_polar(r_mid / 10.0, t_node, 0, *arrays) * (r_mid**2)[:, None]
        t_edge = rate_table_polar(r_node / 10.0, t_mid, 0, *arrays) * (r_node**2)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            e_c = np.abs(0.25 * (raw[:-1, :-1] + raw[1:, :-1] + raw[:-1, 1:] + raw[1:, 1:]) / centre - 1.0)
            e_r = np.abs(0.5 * (raw[:-1] + raw[1:]) / r_edge - 1.0)
            e_t = np.abs(0.5 * (raw[:, :-1] + raw[:, 1:]) / t_edge - 1.0)
        err = np.maximum(np.maximum(e_c.max(axis=1), e_r.max(axis=1)), np.maximum(e_t[:-1].max(axis=1), e_t[1:].max(axis=1)))
    else:
        row = raw[0]
        r_mid = (np.arange(row.shape[0] - 1) + 0.5) * _grid.DR1_MM
        mid = rate_table_polar(r_mid / 10.0, np.array([90.0]), formalism, *arrays)[:, 0] * r_mid**2
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.abs(0.5 * (row[:-1] + row[1:]) / mid - 1.0)
    return np.where(np.isfinite(err), err, np.inf)


def near_radius_mm(model, arrays: ModelArrays, formalism: int, raw: np.ndarray) -> float:
    """Radius (mm) within which the point kernels evaluate exactly.

    The larger of the grid path's near-field radius (5 mm for 2D, 3 mm for
    1D), the capsule's half-length (TG-43 is not tabulated inside the
    capsule) and the smallest lattice radius beyond which every cell row of
    ``raw`` is estimated (:func:`_estimated_error_rows`) to be within
    :data:`TABLE_TOLERANCE` of the exact evaluation.  Cached per model,
    formalism and table size.
    """
    key = (model, formalism, raw.shape)
    cached = _NEAR.get(key)
    if cached is not None:
        return cached
    step = _grid.DR_MM if formalism == 0 else _grid.DR1_MM
    base = _grid.R_NEAR_MM if formalism == 0 else _grid.R_NEAR_1D_MM
    err = _estimated_error_rows(model, arrays, formalism, raw)
    bad = np.flatnonzero(err > TABLE_TOLERANCE)
    r_acc = (bad[-1] + 1) * step if bad.size else 0.0
    r = max(base, float(r_acc), 0.5 * float(model.capsule_length_mm))
    _NEAR[key] = r
    return r


def point_table(model, arrays: ModelArrays, formalism: int, r_need_mm: float) -> PointTable:
    """The table, lattice steps and near/far radii for pairs up to ``r_need_mm`` apart."""
    r_need = min(max(float(r_need_mm), 1.0), R_TABLE_MAX_MM)
    if formalism == 0:
        raw = _grid.rate_r2_2d(model, arrays, r_need)
        r_far = (raw.shape[0] - 2) * _grid.DR_MM
        inv_dr = 1.0 / _grid.DR_MM
    else:
        raw = _grid.rate_r2_1d(model, arrays, formalism, r_need)
        r_far = (raw.shape[1] - 2) * _grid.DR1_MM
        inv_dr = 1.0 / _grid.DR1_MM
    inv_dth = 1.0 / math.radians(_grid.DTHETA_DEG)
    return PointTable(raw, inv_dr, inv_dth, near_radius_mm(model, arrays, formalism, raw), r_far)


@nb.njit(cache=True)
def _box(points):
    """Per-coordinate minimum and maximum of an (N, 3) array, N >= 1 (one pass; NumPy's axis-0 reduction is slower)."""
    lo = points[0].copy()
    hi = points[0].copy()
    for i in range(1, points.shape[0]):
        for c in range(3):
            v = points[i, c]
            if v < lo[c]:
                lo[c] = v
            elif v > hi[c]:
                hi[c] = v
    return lo, hi


def max_distance_mm(points_mm: np.ndarray, seeds_mm: np.ndarray) -> float:
    """An upper bound of the distance between any point and any seed: the farthest corners of their boxes."""
    if points_mm.shape[0] == 0 or seeds_mm.shape[0] == 0:
        return 0.0
    plo, phi = _box(points_mm)
    slo, shi = _box(seeds_mm)
    span = np.maximum(np.abs(phi - slo), np.abs(shi - plo))
    return float(np.sqrt(np.sum(span * span)))


def seed_rows(seeds_mm: np.ndarray, axes: np.ndarray, strength_U: np.ndarray | None) -> np.ndarray:
    """Seeds as one C-contiguous (7, M) float64 array: x, y, z (mm), unit axis x, y, z, S_K (U; 1 if None)."""
    m = seeds_mm.shape[0]
    out = np.empty((7, m))
    out[0:3] = seeds_mm.T
    out[3:6] = axes.T
    out[6] = 1.0 if strength_U is None else strength_U
    return out


def dose_rate(points_mm: np.ndarray, seeds_mm: np.ndarray, strength_U: np.ndarray, axes: np.ndarray,
              formalism: int, cutoff_mm: float, model, arrays: ModelArrays) -> np.ndarray:
    """Summed dose rate (cGy/h) at (N, 3) points from (M, 3) seeds (validated arrays, mm; unit axes).

    ``cutoff_mm`` may be ``math.inf``.  See :func:`rate_points`.
    """
    tab = point_table(model, arrays, formalism, min(max_distance_mm(points_mm, seeds_mm), cutoff_mm))
    cut2 = cutoff_mm * cutoff_mm if math.isfinite(cutoff_mm) else 3.0e38
    return rate_points(points_mm, seed_rows(seeds_mm, axes, strength_U), formalism == 0, tab.table, tab.inv_dr,
                       tab.inv_dth, tab.r_near_mm, tab.r_far_mm, cut2, ASIN_COEF_13, formalism, *arrays)


def influence(points_mm: np.ndarray, seeds_mm: np.ndarray, axes: np.ndarray, formalism: int, model,
              arrays: ModelArrays) -> np.ndarray:
    """Dose-rate influence matrix (cGy/h per U), shape (N, M); see :func:`influence_points`."""
    tab = point_table(model, arrays, formalism, max_distance_mm(points_mm, seeds_mm))
    return influence_points(points_mm, seed_rows(seeds_mm, axes, None), formalism == 0, tab.table, tab.inv_dr,
                            tab.inv_dth, tab.r_near_mm, tab.r_far_mm, ASIN_COEF_13, formalism, *arrays)


# ------------------------------------------------------------------ kernels
#: Points per block: the kernels loop over seeds outside and over the points of
#: a block inside (vectorised whatever the number of seeds), with the block's
#: coordinates and sums in stack buffers.
BLOCK = 128

_stack_f64 = _grid._stack_buffer_intrinsic(types.float64, ir.DoubleType(), 8)


@nb.njit(fastmath=_FASTMATH, cache=True, inline="always")
def _pair(dx, dy, dz, ax, ay, az):
    """r^2, axial component z and rho^2 (squared distance from the seed axis) of the offset point - seed (mm)."""
    z = dx * ax + dy * ay + dz * az
    qx = dx - z * ax
    qy = dy - z * ay
    qz = dz - z * az
    return dx * dx + dy * dy + dz * dz, z, qx * qx + qy * qy + qz * qz


@nb.njit(fastmath=_FASTMATH, cache=True, inline="always")
def _table_value(u, z, rho2, two_d, flat, ncols, nrow_max, inv_dr, inv_dth, rn2, rf2, coef):
    """Table value of Ddot / S_K (cGy/h per U) at r^2 = u (clamped into [rn2, rf2]), axial z, rho^2 (mm).

    2D: the folded angle is asin of min(sin, cos) (a degree-13 polynomial
    within 5e-13 rad, no libm call), sin^2 from rho^2 itself so that it keeps
    its precision near the axis; then bilinear interpolation in (r, theta).
    1D: linear interpolation in r (``ncols`` = 1 row of the 1D table).
    """
    uc = min(max(u, rn2), rf2)
    inv_u = 1.0 / uc
    fr = min(math.sqrt(uc) * inv_dr, nrow_max)
    ir = np.uint64(fr)
    tr = fr - np.float64(ir)
    if two_d:
        cc = min(z * z * inv_u, 1.0)
        ss = min(rho2 * inv_u, 1.0)
        m = min(cc, ss)
        p = coef[13]
        p = p * m + coef[12]
        p = p * m + coef[11]
        p = p * m + coef[10]
        p = p * m + coef[9]
        p = p * m + coef[8]
        p = p * m + coef[7]
        p = p * m + coef[6]
        p = p * m + coef[5]
        p = p * m + coef[4]
        p = p * m + coef[3]
        p = p * m + coef[2]
        p = p * m + coef[1]
        p = p * m + coef[0]
        a = math.sqrt(m) * p
        theta = a if ss <= cc else 0.5 * math.pi - a
        ft = theta * inv_dth
        jt = min(np.uint64(ft), np.uint64(ncols - 2))
        tt = ft - np.float64(jt)
        k = ir * np.uint64(ncols) + jt
        a0 = flat[k]
        a1 = flat[k + np.uint64(1)]
        b0 = flat[k + np.uint64(ncols)]
        b1 = flat[k + np.uint64(ncols + 1)]
        lo = a0 + tt * (a1 - a0)
        hi = b0 + tt * (b1 - b0)
        return (lo + tr * (hi - lo)) * inv_u
    v0 = flat[ir]
    v1 = flat[ir + np.uint64(1)]
    return (v0 + tr * (v1 - v0)) * inv_u


@nb.njit(cache=True)
def _exact_pair(z_mm, rho2_mm2, formalism, g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars):
    """Exact Ddot / S_K (cGy/h per U) at axial z, squared radial distance rho^2 (mm); no fast-math."""
    return rate_per_U(z_mm / 10.0, math.sqrt(max(rho2_mm2, 0.0)) / 10.0, formalism, g_r, log_g, gp_r, log_gp, f_r,
                      f_t, f, phi_r, phi, scalars)


@nb.njit(fastmath=_FASTMATH, cache=True, inline="always")
def _load_block(points_mm, i0, n, xb, yb, zb):
    """Copy the coordinates of points i0 .. i0 + BLOCK - 1 into the buffers (the last point repeated past n)."""
    for q in range(BLOCK):
        k = min(i0 + q, n - 1)
        xb[q] = points_mm[k, 0]
        yb[q] = points_mm[k, 1]
        zb[q] = points_mm[k, 2]


@nb.njit(parallel=True, fastmath=_FASTMATH, cache=True, boundscheck=False)
def rate_points(points_mm, seeds, two_d, table, inv_dr, inv_dth, r_near_mm, r_far_mm, cut2_mm2, coef, formalism,
                g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars):
    """Summed dose rate (cGy/h) at each point from the seeds within the cut-off; parallel over blocks of points.

    ``seeds`` is (7, M) (:func:`seed_rows`); ``table`` the (nr, nt) float64
    table (nt = 1 and ``two_d`` False for 1D); pairs with r < ``r_near_mm`` or
    r >= ``r_far_mm`` are evaluated exactly (see the module notes), pairs with
    r^2 > ``cut2_mm2`` are left out.
    """
    n = points_mm.shape[0]
    m = seeds.shape[1]
    out = np.empty(n)
    flat = table.ravel()
    ncols = table.shape[1]
    nrow_max = np.float64((table.shape[0] if two_d else table.shape[1]) - 2)
    rn2 = r_near_mm * r_near_mm
    rf2 = r_far_mm * r_far_mm
    rn2_hi = rn2 * (1.0 + _MARGIN)
    rf2_lo = rf2 * (1.0 - _MARGIN)
    for b in nb.prange((n + BLOCK - 1) // BLOCK):
        i0 = b * BLOCK
        xb = _stack_f64(BLOCK)
        yb = _stack_f64(BLOCK)
        zb = _stack_f64(BLOCK)
        acc = _stack_f64(BLOCK)
        special = _stack_f64(BLOCK)
        _load_block(points_mm, i0, n, xb, yb, zb)
        for q in range(BLOCK):
            acc[q] = 0.0
            special[q] = 0.0
        # pass 1: every pair within the cut-off from the table
        for j in range(m):
            sx = seeds[0, j]
            sy = seeds[1, j]
            sz = seeds[2, j]
            ax = seeds[3, j]
            ay = seeds[4, j]
            az = seeds[5, j]
            sk = seeds[6, j]
            for q in range(BLOCK):
                u, z, rho2 = _pair(xb[q] - sx, yb[q] - sy, zb[q] - sz, ax, ay, az)
                v = _table_value(u, z, rho2, two_d, flat, ncols, nrow_max, inv_dr, inv_dth, rn2, rf2, coef)
                inside = u <= cut2_mm2
                acc[q] += sk * v if inside else 0.0
                special[q] += 1.0 if inside & ((u < rn2_hi) | (u >= rf2_lo)) else 0.0
        # pass 2: near and far pairs, exact in place of the table value
        for q in range(min(BLOCK, n - i0)):
            if special[q] > 0.0:
                for j in range(m):
                    u, z, rho2 = _pair(xb[q] - seeds[0, j], yb[q] - seeds[1, j], zb[q] - seeds[2, j], seeds[3, j],
                                       seeds[4, j], seeds[5, j])
                    if u <= cut2_mm2 and (u < rn2 or u >= rf2):
                        v = _table_value(u, z, rho2, two_d, flat, ncols, nrow_max, inv_dr, inv_dth, rn2, rf2, coef)
                        e = _exact_pair(z, rho2, formalism, g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi,
                                        scalars)
                        acc[q] += seeds[6, j] * (e - v)
            out[i0 + q] = acc[q]
    return out


@nb.njit(parallel=True, fastmath=_FASTMATH, cache=True, boundscheck=False)
def influence_points(points_mm, seeds, two_d, table, inv_dr, inv_dth, r_near_mm, r_far_mm, coef, formalism,
                     g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars):
    """Dose-rate influence matrix A[i, j] (cGy/h per U) of seed j at point i; see :func:`rate_points`."""
    n = points_mm.shape[0]
    m = seeds.shape[1]
    out = np.empty((n, m))
    flat = table.ravel()
    ncols = table.shape[1]
    nrow_max = np.float64((table.shape[0] if two_d else table.shape[1]) - 2)
    rn2 = r_near_mm * r_near_mm
    rf2 = r_far_mm * r_far_mm
    rn2_hi = rn2 * (1.0 + _MARGIN)
    rf2_lo = rf2 * (1.0 - _MARGIN)
    for b in nb.prange((n + BLOCK - 1) // BLOCK):
        i0 = b * BLOCK
        cnt = min(BLOCK, n - i0)
        xb = _stack_f64(BLOCK)
        yb = _stack_f64(BLOCK)
        zb = _stack_f64(BLOCK)
        vb = _stack_f64(BLOCK)
        special = _stack_f64(BLOCK)
        _load_block(points_mm, i0, n, xb, yb, zb)
        for q in range(BLOCK):
            special[q] = 0.0
        for j in range(m):
            sx = seeds[0, j]
            sy = seeds[1, j]
            sz = seeds[2, j]
            ax = seeds[3, j]
            ay = seeds[4, j]
            az = seeds[5, j]
            for q in range(BLOCK):
                u, z, rho2 = _pair(xb[q] - sx, yb[q] - sy, zb[q] - sz, ax, ay, az)
                vb[q] = _table_value(u, z, rho2, two_d, flat, ncols, nrow_max, inv_dr, inv_dth, rn2, rf2, coef)
                special[q] += 1.0 if (u < rn2_hi) | (u >= rf2_lo) else 0.0
            for q in range(cnt):
                out[i0 + q, j] = vb[q]
        for q in range(cnt):
            if special[q] > 0.0:
                for j in range(m):
                    u, z, rho2 = _pair(xb[q] - seeds[0, j], yb[q] - seeds[1, j], zb[q] - seeds[2, j], seeds[3, j],
                                       seeds[4, j], seeds[5, j])
                    if u < rn2 or u >= rf2:
                        out[i0 + q, j] = _exact_pair(z, rho2, formalism, g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r,
                                                     phi, scalars)
    return out
