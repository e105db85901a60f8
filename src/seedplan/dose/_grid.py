"""Fast TG-43 dose on regular grids (numba, parallel over slices).

Far from a seed the dose rate per unit strength is read from a fine table
built once per seed model from the exact evaluation (:mod:`._exact`):

* 2D: ``T[r, theta] = r^2 * Ddot(r, theta) / S_K`` on a lattice of
  ``DR_MM`` in r and ``DTHETA_DEG`` in the folded angle; lattice nodes fall
  on every node of the consensus tables, so bilinear interpolation of the
  smooth ``r^2 Ddot`` reproduces the exact rule to a few 1e-5.  The angle
  comes from ``asin`` of min(sin, cos) (a polynomial, no libm call).
* 1D / 1D-point: ``T[u] = Ddot(sqrt(u)) / S_K`` on a uniform lattice in
  ``u = r^2``, so the inner loop needs neither a square root nor a division.

The inner loop runs along x with r^2 and the axial coordinate as quadratic /
linear functions of the voxel index, branch-free so that LLVM vectorises it.
Voxels closer than ``R_NEAR_MM`` to a seed get the exact value in a second
pass, which subtracts the table value it replaces.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._exact import ModelArrays, rate_per_U, rate_table_polar

#: Lattice step of the 2D table in r (mm) and in theta (degrees).
DR_MM = 0.25
DTHETA_DEG = 0.5
#: Lattice step of the 1D tables in r^2 (mm^2).
DU_MM2 = 0.25
#: Voxels nearer than this to a seed are evaluated exactly.
R_NEAR_MM = 5.0


def _asin_coefficients(degree: int = 9) -> np.ndarray:
    """Coefficients c_k with asin(x) ~= x * sum_k c_k x^(2k) on [0, sqrt(1/2)]."""
    m = np.linspace(0.0, 0.5, 4001)
    x = np.sqrt(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(x > 0, np.arcsin(x) / np.where(x > 0, x, 1.0), 1.0)
    c = np.polynomial.polynomial.polyfit(m, ratio, degree)
    return c.astype(np.float64)


ASIN_COEF = _asin_coefficients()

_TABLES: dict = {}


def _table_key(model, formalism):
    return (model, formalism)


def table_2d(model, arrays: ModelArrays, r_max_mm: float) -> np.ndarray:
    """The 2D table T[r, theta] (float32), covering at least ``r_max_mm``."""
    key = (_table_key(model, 0), DR_MM, DTHETA_DEG)
    cached = _TABLES.get(key)
    if cached is not None and (cached.shape[0] - 2) * DR_MM >= r_max_mm:
        return cached
    r_top = 128.0 * math.ceil((r_max_mm + 1.0) / 128.0)
    nr = int(round(r_top / DR_MM)) + 2
    r_mm = np.arange(nr) * DR_MM
    theta = np.arange(int(round(90.0 / DTHETA_DEG)) + 1) * DTHETA_DEG
    rate = rate_table_polar(r_mm / 10.0, theta, 0, *arrays)
    table = np.ascontiguousarray((rate * (r_mm**2)[:, None]).astype(np.float32))
    _TABLES[key] = table
    return table


def table_1d(model, arrays: ModelArrays, formalism: int, r_max_mm: float) -> np.ndarray:
    """The 1D table T[0, u = r^2] (float32, shape (1, n)), covering at least ``r_max_mm``."""
    key = (_table_key(model, formalism), DU_MM2)
    cached = _TABLES.get(key)
    if cached is not None and (cached.shape[1] - 2) * DU_MM2 >= r_max_mm**2:
        return cached
    r_top = 128.0 * math.ceil((r_max_mm + 1.0) / 128.0)
    nu = int(round(r_top**2 / DU_MM2)) + 2
    r_mm = np.sqrt(np.arange(nu) * DU_MM2)
    rate = rate_table_polar(r_mm / 10.0, np.array([90.0]), formalism, *arrays)[:, 0]
    table = np.ascontiguousarray(rate.astype(np.float32)[None, :])
    _TABLES[key] = table
    return table


@nb.njit(fastmath=True, cache=True, inline="always")
def _eval_2d(u, w, flat, ncols, nrow_max, inv_dr, inv_dth, coef):
    """Table value of Ddot / S_K at r^2 = u, axial coordinate w (float32, mm).

    ``u`` is clamped at 1 mm^2: nearer voxels are replaced by the exact pass,
    and the clamp keeps the replaced value small so no rounding residue is left.
    """
    u = max(u, np.float32(1.0))
    inv_u = np.float32(1.0) / u
    cc = min(w * w * inv_u, np.float32(1.0))
    ss = np.float32(1.0) - cc
    m = min(cc, ss)
    x = math.sqrt(m)
    p = coef[9]
    p = p * m + coef[8]
    p = p * m + coef[7]
    p = p * m + coef[6]
    p = p * m + coef[5]
    p = p * m + coef[4]
    p = p * m + coef[3]
    p = p * m + coef[2]
    p = p * m + coef[1]
    p = p * m + coef[0]
    a = x * p
    theta = a if ss <= cc else np.float32(0.5 * math.pi) - a
    fr = min(math.sqrt(u) * inv_dr, nrow_max)
    ir = np.int32(fr)
    tr = fr - np.float32(ir)
    ft = theta * inv_dth
    it = min(np.int32(ft), np.int32(ncols - 2))
    tt = ft - np.float32(it)
    idx = ir * ncols + it
    v00 = flat[idx]
    v01 = flat[idx + 1]
    v10 = flat[idx + ncols]
    v11 = flat[idx + ncols + 1]
    lo = v00 + tt * (v01 - v00)
    hi = v10 + tt * (v11 - v10)
    return (lo + tr * (hi - lo)) * inv_u


@nb.njit(fastmath=True, cache=True, inline="always")
def _eval_1d(u, table, nmax, inv_du):
    """Table value of Ddot / S_K at r^2 = u (float32, mm^2)."""
    fu = min(max(u, np.float32(0.0)) * inv_du, nmax)
    iu = np.int32(fu)
    t = fu - np.float32(iu)
    v0 = table[iu]
    return v0 + t * (table[iu + 1] - v0)


@nb.njit(cache=True, inline="always")
def _row_coefficients(origin, ex, ey, ez, seed, axis, j, k):
    """float32 coefficients of r^2 and w along a row, expanded about its closest voxel i0.

    r^2 = a0 + d (a1 + d a2) and w = b0 + d b1 with d = i - i0.  Expanding
    about the voxel nearest the seed keeps every term small there, so float32
    loses no precision to cancellation where the dose is steepest.
    """
    px = origin[0] + j * ey[0] + k * ez[0] - seed[0]
    py = origin[1] + j * ey[1] + k * ez[1] - seed[1]
    pz = origin[2] + j * ey[2] + k * ez[2] - seed[2]
    a2 = ex[0] * ex[0] + ex[1] * ex[1] + ex[2] * ex[2]
    i0 = float(round(-(px * ex[0] + py * ex[1] + pz * ex[2]) / a2))
    px += i0 * ex[0]
    py += i0 * ex[1]
    pz += i0 * ex[2]
    a0 = np.float32(px * px + py * py + pz * pz)
    a1 = np.float32(2.0 * (px * ex[0] + py * ex[1] + pz * ex[2]))
    b0 = np.float32(px * axis[0] + py * axis[1] + pz * axis[2])
    b1 = np.float32(ex[0] * axis[0] + ex[1] * axis[1] + ex[2] * axis[2])
    return a0, a1, np.float32(a2), b0, b1, np.float32(i0)


@nb.njit(parallel=True, fastmath=True, cache=True)
def grid_table(shape, origin, ex, ey, ez, seeds, strength, axes, two_d, table, inv_step, inv_dth, cut2, coef, out):
    """Add the tabulated dose rate of every seed to ``out[z, y, x]`` (all voxels within the cut-off).

    ``two_d`` selects the 2D table ``table[r, theta]`` (step ``1/inv_step`` mm in r)
    or the 1D table ``table[0, u]`` (step ``1/inv_step`` mm^2 in r^2).
    """
    nz, ny, nx = shape
    ncols = table.shape[1]
    flat = table.ravel()
    nmax = np.float32(table.shape[0] - 2) if two_d else np.float32(ncols - 2)
    coef32 = coef.astype(np.float32)
    inv_step32 = np.float32(inv_step)
    inv_dth32 = np.float32(inv_dth)
    cut32 = np.float32(cut2)
    for k in nb.prange(nz):
        row = np.zeros(nx)
        for j in range(ny):
            row[:] = 0.0
            for s in range(seeds.shape[0]):
                a0, a1, a2, b0, b1, i0 = _row_coefficients(origin, ex, ey, ez, seeds[s], axes[s], j, k)
                sk = np.float32(strength[s])
                if two_d:
                    for i in range(nx):
                        fi = np.float32(i) - i0
                        u = a0 + fi * (a1 + fi * a2)
                        w = b0 + fi * b1
                        val = sk * _eval_2d(u, w, flat, ncols, nmax, inv_step32, inv_dth32, coef32)
                        row[i] += val if u <= cut32 else np.float32(0.0)
                else:
                    for i in range(nx):
                        fi = np.float32(i) - i0
                        u = a0 + fi * (a1 + fi * a2)
                        val = sk * _eval_1d(u, flat, nmax, inv_step32)
                        row[i] += val if u <= cut32 else np.float32(0.0)
            out[k, j, :] += row


@nb.njit(cache=True)
def near_field_exact(shape, origin, ex, ey, ez, inv_frame, seeds_mm, strength, axes, formalism, r_near_mm, cut2,
                     table, inv_step, inv_dth, coef, g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars, out):
    """Replace the table value by the exact one for voxels within ``r_near_mm`` of each seed.

    The table value is recomputed with the same float32 code as
    :func:`grid_table` and subtracted, so the voxel ends up holding the exact
    dose rate.  ``inv_frame`` maps a world offset (mm) to index offsets.
    """
    nz, ny, nx = shape
    two_d = formalism == 0
    ncols = table.shape[1]
    flat = table.ravel()
    nmax = np.float32(table.shape[0] - 2) if two_d else np.float32(ncols - 2)
    coef32 = coef.astype(np.float32)
    inv_step32 = np.float32(inv_step)
    inv_dth32 = np.float32(inv_dth)
    cut32 = np.float32(cut2)
    rn2 = r_near_mm * r_near_mm
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    for s in range(seeds_mm.shape[0]):
        rel0 = seeds_mm[s, 0] - origin[0]
        rel1 = seeds_mm[s, 1] - origin[1]
        rel2 = seeds_mm[s, 2] - origin[2]
        for c in range(3):
            centre = inv_frame[c, 0] * rel0 + inv_frame[c, 1] * rel1 + inv_frame[c, 2] * rel2
            ext = r_near_mm * math.sqrt(inv_frame[c, 0] ** 2 + inv_frame[c, 1] ** 2 + inv_frame[c, 2] ** 2)
            lo[c] = max(0, int(math.floor(centre - ext)))
            hi[c] = int(math.ceil(centre + ext))
        hi[0] = min(hi[0], nx - 1)
        hi[1] = min(hi[1], ny - 1)
        hi[2] = min(hi[2], nz - 1)
        sk = np.float32(strength[s])
        for k in range(lo[2], hi[2] + 1):
            for j in range(lo[1], hi[1] + 1):
                a0, a1, a2, b0, b1, i0 = _row_coefficients(origin, ex, ey, ez, seeds_mm[s], axes[s], j, k)
                for i in range(lo[0], hi[0] + 1):
                    px = origin[0] + i * ex[0] + j * ey[0] + k * ez[0] - seeds_mm[s, 0]
                    py = origin[1] + i * ex[1] + j * ey[1] + k * ez[1] - seeds_mm[s, 1]
                    pz = origin[2] + i * ex[2] + j * ey[2] + k * ez[2] - seeds_mm[s, 2]
                    u = px * px + py * py + pz * pz
                    if u >= rn2:
                        continue
                    fi = np.float32(i) - i0
                    u32 = a0 + fi * (a1 + fi * a2)
                    if u32 <= cut32:
                        if two_d:
                            out[k, j, i] -= sk * _eval_2d(u32, b0 + fi * b1, flat, ncols, nmax, inv_step32, inv_dth32, coef32)
                        else:
                            out[k, j, i] -= sk * _eval_1d(u32, flat, nmax, inv_step32)
                    if u > cut2:
                        continue
                    z = px * axes[s, 0] + py * axes[s, 1] + pz * axes[s, 2]
                    qx = px - z * axes[s, 0]
                    qy = py - z * axes[s, 1]
                    qz = pz - z * axes[s, 2]
                    y = math.sqrt(qx * qx + qy * qy + qz * qz)
                    out[k, j, i] += strength[s] * rate_per_U(z / 10.0, y / 10.0, formalism, g_r, log_g, gp_r, log_gp,
                                                             f_r, f_t, f, phi_r, phi, scalars)
