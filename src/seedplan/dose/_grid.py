"""Fast TG-43 dose on regular grids (numba, parallel over slices).

Far from a seed the dose rate per unit strength is read from a fine table
built once per seed model from the exact evaluation (:mod:`._exact`):

* 2D: ``r^2 * Ddot(r, theta) / S_K`` on a lattice of ``DR_MM`` in r and
  ``DTHETA_DEG`` in the folded angle; lattice nodes fall on every node of the
  consensus tables, so bilinear interpolation of the smooth ``r^2 Ddot``
  reproduces the exact rule to a few 1e-5 beyond 5 mm.  The angle comes from
  ``asin`` of min(sin, cos) (a polynomial, no libm call).
* 1D / 1D-point: ``r^2 * Ddot(r) / S_K`` on a lattice of ``DR1_MM`` in r
  (a few kB, accurate to ~1e-5 beyond 5 mm).

Both tables are stored as uint64 words holding a value and the slope to the
next theta (2D) or r (1D) node (:func:`_pack_pairs`), so linear interpolation
along that direction needs one 64-bit load.

The grid kernel walks rows along x, where r^2 and the axial coordinate are a
quadratic / linear function of the voxel index; the voxels inside the
cut-off form one interval of the row, computed up front.  Each (row, seed)
is done in three loops over stack buffers: a vectorised one for the indices,
fractions and weights, a scalar one for the table loads (faster than AVX-512
gathers on AMD Zen) and a vectorised one for the interpolation, accumulated in
float64.  Voxels closer than ``R_NEAR_MM`` to a seed get the exact value in a
second pass, which subtracts the table value it replaces.

Performance notes (what LLVM needs to vectorise the loops, see the kernels):
the stores must go to provably non-aliasing memory (stack buffers), and array
indices must be unsigned (numba's negative-index wraparound turns an affine
access into a select, and the loop stays scalar).
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._exact import ModelArrays, rate_per_U, rate_table_polar

#: Lattice step of the 2D table in r (mm) and in theta (degrees).  The error
#: of the bilinear rule is dominated by the r step (0.25 mm: 1.8e-4 at 5 mm,
#: 0.125 mm: 5e-5); 1 degree keeps every 5-degree node of F on the lattice
#: and is as accurate as 0.5 degree.  The table size hardly affects speed.
DR_MM = 0.125
DTHETA_DEG = 1.0
#: Lattice step of the 1D tables in r (mm).  Every node of the consensus
#: tables (multiples of 0.5 mm) is a lattice node.
DR1_MM = 0.125
#: Voxels nearer than this to a seed are evaluated exactly.
R_NEAR_MM = 5.0
#: The same for the 1D formalisms, whose fine r-table is within 7e-5 of exact beyond 3 mm.
R_NEAR_1D_MM = 3.0


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


def _pack_pairs(values: np.ndarray) -> np.ndarray:
    """Pack a float32 table V[a, b] as uint64 words holding (V[a, b], V[a, b+1] - V[a, b]).

    Linear interpolation along b then needs one 64-bit load per point
    (``lo + t * hi`` of the two halves) instead of two 32-bit ones: the
    random table loads are what limits the kernels.  The last column's slope
    is 0 (never used).
    """
    v = np.ascontiguousarray(values, dtype=np.float32)
    pairs = np.zeros(v.shape + (2,), np.float32)
    pairs[..., 0] = v
    pairs[..., :-1, 1] = v[..., 1:] - v[..., :-1]
    return np.ascontiguousarray(pairs).view(np.uint64).reshape(v.shape)


def _lattice_rows(r_max_mm: float, step_mm: float) -> int:
    """Rows of an r lattice of ``step_mm`` covering ``r_max_mm`` (+ 1 mm), in blocks of 128 mm, plus 2."""
    r_top = 128.0 * math.ceil((r_max_mm + 1.0) / 128.0)
    return int(round(r_top / step_mm)) + 2


def rate_r2_2d(model, arrays: ModelArrays, r_max_mm: float) -> np.ndarray:
    """``r^2 Ddot / S_K`` (mm^2 cGy h^-1 U^-1) on the 2D (r, theta) lattice, float64, shape (nr, 91).

    Row ``i`` is r = ``i * DR_MM``, column ``j`` the folded angle ``j * DTHETA_DEG``;
    the values are the exact evaluation (:func:`._exact.rate_table_polar`).
    Cached per model and grown in blocks of 128 mm; :func:`table_2d` packs it
    for the grid kernels, the point kernels (:mod:`._points`) read it as is.
    """
    key = (_table_key(model, 0), DR_MM, DTHETA_DEG, "f64")
    cached = _TABLES.get(key)
    if cached is not None and (cached.shape[0] - 2) * DR_MM >= r_max_mm:
        return cached
    r_mm = np.arange(_lattice_rows(r_max_mm, DR_MM)) * DR_MM
    theta = np.arange(int(round(90.0 / DTHETA_DEG)) + 1) * DTHETA_DEG
    raw = np.ascontiguousarray(rate_table_polar(r_mm / 10.0, theta, 0, *arrays) * (r_mm**2)[:, None])
    _TABLES[key] = raw
    return raw


def rate_r2_1d(model, arrays: ModelArrays, formalism: int, r_max_mm: float) -> np.ndarray:
    """``r^2 Ddot(r) / S_K`` (mm^2 cGy h^-1 U^-1) on the 1D r lattice of ``DR1_MM``, float64, shape (1, n).

    The 1D counterpart of :func:`rate_r2_2d` (``formalism`` 1 or 2); :func:`table_1d` packs it.
    """
    key = (_table_key(model, formalism), DR1_MM, "f64")
    cached = _TABLES.get(key)
    if cached is not None and (cached.shape[1] - 2) * DR1_MM >= r_max_mm:
        return cached
    r_mm = np.arange(_lattice_rows(r_max_mm, DR1_MM)) * DR1_MM
    rate = rate_table_polar(r_mm / 10.0, np.array([90.0]), formalism, *arrays)[:, 0]
    raw = np.ascontiguousarray((rate * r_mm**2)[None, :])
    _TABLES[key] = raw
    return raw


def table_2d(model, arrays: ModelArrays, r_max_mm: float) -> np.ndarray:
    """The 2D table of ``r^2 Ddot / S_K`` on the (r, theta) lattice, packed by :func:`_pack_pairs`.

    The float32 form of :func:`rate_r2_2d`.
    """
    key = (_table_key(model, 0), DR_MM, DTHETA_DEG)
    cached = _TABLES.get(key)
    if cached is not None and (cached.shape[0] - 2) * DR_MM >= r_max_mm:
        return cached
    table = _pack_pairs(rate_r2_2d(model, arrays, r_max_mm).astype(np.float32))
    _TABLES[key] = table
    return table


def table_1d(model, arrays: ModelArrays, formalism: int, r_max_mm: float) -> np.ndarray:
    """The 1D table of ``r^2 Ddot(r) / S_K`` on a lattice of ``DR1_MM``, shape (1, n), packed by :func:`_pack_pairs`.

    The float32 form of :func:`rate_r2_1d`.  ``r^2 Ddot`` varies slowly, so
    linear interpolation is accurate to ~1e-5 beyond a few mm, and the table
    (a few kB) stays in the L1 cache.
    """
    key = (_table_key(model, formalism), DR1_MM)
    cached = _TABLES.get(key)
    if cached is not None and (cached.shape[1] - 2) * DR1_MM >= r_max_mm:
        return cached
    table = _pack_pairs(rate_r2_1d(model, arrays, formalism, r_max_mm).astype(np.float32))
    _TABLES[key] = table
    return table


# ------------------------------------------------------------------ kernels
#: Seeds whose row set-ups are computed together (see :func:`grid_table`).
SEED_BLOCK = 64
_CO_LEN = 11 * SEED_BLOCK
_RNG_LEN = 2 * SEED_BLOCK

#: Voxels per chunk of a row: the per-voxel intermediates of one seed along a
#: chunk live in stack buffers of this length.
CHUNK = 256


def _stack_buffer_intrinsic(nbtype, lltype, itemsize):
    """An intrinsic ``f(n)`` giving a 1D array of ``n`` (a literal) ``nbtype`` on the stack, uninitialised.

    Why stack buffers: LLVM vectorises a loop only if it can prove that its
    stores do not alias the arrays it reads.  A non-escaping ``alloca`` is
    provably distinct from every array argument; a heap buffer from
    ``np.empty`` is not, and the loop would stay scalar.
    """
    arrty = types.Array(nbtype, 1, "C")

    def stack_buffer(typingctx, n):
        if not isinstance(n, types.IntegerLiteral):
            return None
        size = n.literal_value

        def codegen(context, builder, sig, args):
            intp = context.get_value_type(types.intp)
            ptr = cgutils.alloca_once(builder, lltype, size=ir.Constant(intp, size))
            ary = context.make_array(arrty)(context, builder)
            context.populate_array(ary, data=ptr, shape=[ir.Constant(intp, size)],
                                   strides=[ir.Constant(intp, itemsize)], itemsize=ir.Constant(intp, itemsize),
                                   meminfo=None)
            return ary._getvalue()

        return arrty(n), codegen

    stack_buffer.__name__ = f"_stack_buffer_{nbtype}"
    return intrinsic(stack_buffer)


_stack_f32 = _stack_buffer_intrinsic(types.float32, ir.FloatType(), 4)
_stack_u32 = _stack_buffer_intrinsic(types.uint32, ir.IntType(32), 4)
_stack_u64 = _stack_buffer_intrinsic(types.uint64, ir.IntType(64), 8)
_stack_i64 = _stack_buffer_intrinsic(types.int64, ir.IntType(64), 8)


@intrinsic
def _lo_f32(typingctx, x):
    """The float32 in the low 32 bits of a uint64 word (see :func:`_pack_pairs`)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())

    return types.float32(x), codegen


@intrinsic
def _hi_f32(typingctx, x):
    """The float32 in the high 32 bits of a uint64 word (see :func:`_pack_pairs`)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        hi = builder.lshr(args[0], ir.Constant(ir.IntType(64), 32))
        return builder.bitcast(builder.trunc(hi, ir.IntType(32)), ir.FloatType())

    return types.float32(x), codegen


@nb.njit(fastmath=True, cache=True, inline="always")
def _locate_2d(u, w, rho2, ncols, nrow_max, inv_dr, inv_dth, coef):
    """Where r^2 = u, axial coordinate w, radial distance^2 rho2 (float32, mm) fall in the 2D table.

    Returns the flat index (as an exact float32) of the lower-left lattice
    node, the fractions along r and theta, and 1 / u.  ``u`` is clamped at
    1 mm^2: nearer voxels are replaced by the exact pass, and the clamp keeps
    the replaced value small so no rounding residue is left.  The angle is
    ``asin`` of min(sin, cos) of the folded angle (a polynomial, no libm call);
    sin^2 comes from ``rho2`` itself, not from 1 - cos^2, which near the seed
    axis would lose all precision to cancellation (theta off by ~0.02 deg,
    an error of 4e-4 in the dose on the axis).
    """
    u = max(u, np.float32(1.0))
    inv_u = np.float32(1.0) / u
    cc = min(w * w * inv_u, np.float32(1.0))
    ss = min(max(rho2, np.float32(0.0)) * inv_u, np.float32(1.0))
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
    rf = np.float32(np.uint32(fr))
    ft = theta * inv_dth
    tf = min(np.float32(np.uint32(ft)), ncols - np.float32(2.0))
    # flat index in float32: exact below 2^24, and numba would widen an integer product to 64 bits
    return rf * ncols + tf, fr - rf, ft - tf, inv_u


@nb.njit(fastmath=True, cache=True, inline="always")
def _interp_2d(x0, x1, tr, tt):
    """Bilinear interpolation from the packed words at (r, theta) and (r + dr, theta)."""
    lo = _lo_f32(x0) + tt * _hi_f32(x0)
    hi = _lo_f32(x1) + tt * _hi_f32(x1)
    return lo + tr * (hi - lo)


@nb.njit(fastmath=True, cache=True, inline="always")
def _eval_2d(u, w, rho2, flat, ncols, nrow_max, inv_dr, inv_dth, coef):
    """Table value of Ddot / S_K at r^2 = u, axial w, radial^2 rho2 (float32, mm); scalar form of the grid kernel."""
    fidx, tr, tt, inv_u = _locate_2d(u, w, rho2, ncols, nrow_max, inv_dr, inv_dth, coef)
    ix = np.uint32(fidx)
    return _interp_2d(flat[ix], flat[ix + np.uint32(ncols)], tr, tt) * inv_u


@nb.njit(fastmath=True, cache=True, inline="always")
def _locate_1d(u, nmax, inv_dr):
    """Index and fraction of r = sqrt(u) in the 1D table, and 1 / u (u clamped at 1 mm^2 as in 2D)."""
    u = max(u, np.float32(1.0))
    fr = min(math.sqrt(u) * inv_dr, nmax)
    rf = np.float32(np.uint32(fr))
    return rf, fr - rf, np.float32(1.0) / u


@nb.njit(fastmath=True, cache=True, inline="always")
def _eval_1d(u, table, nmax, inv_dr):
    """Table value of Ddot / S_K at r^2 = u (float32, mm^2); scalar form of the grid kernel.

    The table holds ``r^2 * Ddot / S_K`` on a lattice in r.
    """
    rf, t, inv_u = _locate_1d(u, nmax, inv_dr)
    x = table[np.uint32(rf)]
    return (_lo_f32(x) + t * _hi_f32(x)) * inv_u


@nb.njit(cache=True, inline="always")
def _row_setup(px, py, pz, ex0, ex1, ex2, a2, inv_a2, ax0, ax1, ax2, nx, cut2, two_d):
    """Coefficients of one (row, seed) pair and the voxel range inside the cut-off.

    ``p`` is the offset (mm) of the row's voxel i = 0 from the seed, ``ex`` the
    step along the row, ``a2 = |ex|^2``, ``ax`` the seed axis.  Returns
    float32 ``a0, a1, a2, b0, b1, i0`` with r^2 = a0 + d (a1 + d a2) and
    w = b0 + d b1 for d = i - i0, expanded about the voxel i0 nearest the seed
    (so float32 loses no precision to cancellation where the dose is
    steepest), and the inclusive range ``lo..hi`` of voxels i with
    r^2 <= cut2 (float64), possibly empty (lo > hi).  r^2 is a quadratic in i,
    so that set is one interval: the kernels loop over it without a select.
    Last (``two_d`` only, else zeros), float32 ``e0, e1, e2, d1`` with
    rho^2 = e0 + t (e1 + t e2), t = d - d1, the squared distance from the seed
    axis, expanded about the voxel nearest the axis line.
    """
    i0 = np.floor(0.5 - (px * ex0 + py * ex1 + pz * ex2) * inv_a2)
    px += i0 * ex0
    py += i0 * ex1
    pz += i0 * ex2
    c0 = px * px + py * py + pz * pz
    c1 = 2.0 * (px * ex0 + py * ex1 + pz * ex2)
    lo = 0
    hi = nx - 1
    if cut2 < 1.0e38:
        disc = c1 * c1 - 4.0 * a2 * (c0 - cut2)
        if disc < 0.0:
            z32 = np.float32(0.0)
            return z32, z32, z32, z32, z32, z32, 0, -1, z32, z32, z32, z32
        sq = math.sqrt(disc)
        lo = max(lo, int(math.ceil((-c1 - sq) * 0.5 * inv_a2 + i0)))
        hi = min(hi, int(math.floor((-c1 + sq) * 0.5 * inv_a2 + i0)))
        # settle the rounding of the roots with the direct test r^2 <= cut2
        while lo <= hi and c0 + (lo - i0) * (c1 + (lo - i0) * a2) > cut2:
            lo += 1
        while lo > 0 and c0 + (lo - 1 - i0) * (c1 + (lo - 1 - i0) * a2) <= cut2:
            lo -= 1
        while hi >= lo and c0 + (hi - i0) * (c1 + (hi - i0) * a2) > cut2:
            hi -= 1
        while hi < nx - 1 and c0 + (hi + 1 - i0) * (c1 + (hi + 1 - i0) * a2) <= cut2:
            hi += 1
    b0 = px * ax0 + py * ax1 + pz * ax2
    b1 = ex0 * ax0 + ex1 * ax1 + ex2 * ax2
    if not two_d:
        z32 = np.float32(0.0)
        return (np.float32(c0), np.float32(c1), np.float32(a2), np.float32(b0), np.float32(b1), np.float32(i0), lo, hi,
                z32, z32, z32, z32)
    # radial offset q = p - (p.a) a from the axis, expanded about the voxel nearest the axis line
    qx = px - b0 * ax0
    qy = py - b0 * ax1
    qz = pz - b0 * ax2
    gx = ex0 - b1 * ax0
    gy = ex1 - b1 * ax1
    gz = ex2 - b1 * ax2
    g2 = gx * gx + gy * gy + gz * gz
    d1 = np.floor(0.5 - (qx * gx + qy * gy + qz * gz) / g2) if g2 > 1e-12 * a2 else 0.0
    qx += d1 * gx
    qy += d1 * gy
    qz += d1 * gz
    e0 = qx * qx + qy * qy + qz * qz
    e1 = 2.0 * (qx * gx + qy * gy + qz * gz)
    return (np.float32(c0), np.float32(c1), np.float32(a2), np.float32(b0), np.float32(b1), np.float32(i0), lo, hi,
            np.float32(e0), np.float32(e1), np.float32(g2), np.float32(d1))


@nb.njit(parallel=True, fastmath=True, cache=True, boundscheck=False)
def grid_table(shape, origin, ex, ey, ez, seeds, strength, axes, two_d, table, inv_step, inv_dth, cut2, coef, out):
    """Add the tabulated dose rate of every seed to ``out[z, y, x]`` (all voxels within the cut-off).

    ``two_d`` selects the 2D table ``table[r, theta]`` (step ``1/inv_step`` mm in r)
    or the 1D table ``table[0, r]`` (step ``1/inv_step`` mm), both packed by
    :func:`_pack_pairs`.

    Parallel over z slices.  For each (row, seed) the voxels inside the
    cut-off are done in chunks of :data:`CHUNK`, in three loops over stack
    buffers: (A) vectorised: r^2, angle, table index, fractions and weight
    per voxel; (B) scalar, 4 voxels per iteration: the table loads (on AMD
    Zen scalar loads beat the AVX-512 gathers LLVM would emit; the
    never-taken exit on the index keeps LLVM from vectorising this loop);
    (C) vectorised: the interpolation, times strength / r^2, added to the
    float64 row (float32 inside, float64 accumulation across seeds).  The
    scalar row set-ups of a block of :data:`SEED_BLOCK` seeds are computed
    first, so that their latency chains overlap (-15 % on 64-voxel rows).
    """
    nz, ny, nx = shape
    ncols = np.float32(table.shape[1])
    ncols_u = np.uint32(table.shape[1])
    flat = table.ravel()
    n_flat = np.uint32(flat.shape[0])
    nmax = np.float32(table.shape[0] - 2) if two_d else np.float32(table.shape[1] - 2)
    coef32 = coef.astype(np.float32)
    inv_step32 = np.float32(inv_step)
    inv_dth32 = np.float32(inv_dth)
    nseeds = seeds.shape[0]
    ex0, ex1, ex2 = ex[0], ex[1], ex[2]
    a2 = ex0 * ex0 + ex1 * ex1 + ex2 * ex2
    inv_a2 = 1.0 / a2
    for k in nb.prange(nz):
        ib = _stack_u32(CHUNK)
        tr_b = _stack_f32(CHUNK)
        tt_b = _stack_f32(CHUNK)
        w_b = _stack_f32(CHUNK)
        x0_b = _stack_u64(CHUNK)
        x1_b = _stack_u64(CHUNK)
        co = _stack_f32(_CO_LEN)
        rng_ = _stack_i64(_RNG_LEN)
        for j in range(ny):
            rx = origin[0] + j * ey[0] + k * ez[0]
            ry = origin[1] + j * ey[1] + k * ez[1]
            rz = origin[2] + j * ey[2] + k * ez[2]
            for s_block in range(0, nseeds, SEED_BLOCK):
                nb_s = min(SEED_BLOCK, nseeds - s_block)
                # the row set-ups of a block of seeds first: independent iterations, so
                # their latency-bound scalar chains overlap instead of stalling each row
                for qs in range(nb_s):
                    s = s_block + qs
                    a0, a1, a2_32, b0, b1, i0, lo, hi, e0, e1, e2, d1 = _row_setup(
                        rx - seeds[s, 0], ry - seeds[s, 1], rz - seeds[s, 2], ex0, ex1, ex2, a2, inv_a2, axes[s, 0],
                        axes[s, 1], axes[s, 2], nx, cut2, two_d)
                    co[11 * qs] = a0
                    co[11 * qs + 1] = a1
                    co[11 * qs + 2] = a2_32
                    co[11 * qs + 3] = b0
                    co[11 * qs + 4] = b1
                    co[11 * qs + 5] = i0
                    co[11 * qs + 6] = e0
                    co[11 * qs + 7] = e1
                    co[11 * qs + 8] = e2
                    co[11 * qs + 9] = d1
                    co[11 * qs + 10] = np.float32(strength[s])
                    rng_[2 * qs] = lo
                    rng_[2 * qs + 1] = hi
                for qs in range(nb_s):
                    a0 = co[11 * qs]
                    a1 = co[11 * qs + 1]
                    a2_32 = co[11 * qs + 2]
                    b0 = co[11 * qs + 3]
                    b1 = co[11 * qs + 4]
                    i0 = co[11 * qs + 5]
                    e0 = co[11 * qs + 6]
                    e1 = co[11 * qs + 7]
                    e2 = co[11 * qs + 8]
                    d1 = co[11 * qs + 9]
                    sk = co[11 * qs + 10]
                    lo = rng_[2 * qs]
                    hi = rng_[2 * qs + 1]
                    for c in range(lo, hi + 1, CHUNK):
                        n = min(CHUNK, hi + 1 - c)
                        n4 = (n + 3) >> 2  # loop B goes by 4 voxels; loop A fills up to 4 * n4 <= CHUNK
                        d0 = np.float32(c) - i0
                        # unsigned voxel index: no negative-index wraparound, so the row update vectorises
                        cu = np.uint64(c)
                        if two_d:
                            for i in range(4 * n4):
                                fi = d0 + np.float32(i)
                                ti = fi - d1
                                fidx, tr, tt, inv_u = _locate_2d(a0 + fi * (a1 + fi * a2_32), b0 + fi * b1,
                                                                 e0 + ti * (e1 + ti * e2), ncols, nmax, inv_step32,
                                                                 inv_dth32, coef32)
                                ib[i] = np.uint32(fidx)
                                tr_b[i] = tr
                                tt_b[i] = tt
                                w_b[i] = sk * inv_u
                            for q in range(n4):
                                i = 4 * q
                                j0 = ib[i]
                                j1 = ib[i + 1]
                                j2 = ib[i + 2]
                                j3 = ib[i + 3]
                                if max(max(j0, j1), max(j2, j3)) >= n_flat:
                                    break
                                x0_b[i] = flat[j0]
                                x1_b[i] = flat[j0 + ncols_u]
                                x0_b[i + 1] = flat[j1]
                                x1_b[i + 1] = flat[j1 + ncols_u]
                                x0_b[i + 2] = flat[j2]
                                x1_b[i + 2] = flat[j2 + ncols_u]
                                x0_b[i + 3] = flat[j3]
                                x1_b[i + 3] = flat[j3 + ncols_u]
                            for i in range(n):
                                out[k, j, cu + np.uint64(i)] += w_b[i] * _interp_2d(x0_b[i], x1_b[i], tr_b[i], tt_b[i])
                        else:
                            for i in range(4 * n4):
                                fi = d0 + np.float32(i)
                                rf, t, inv_u = _locate_1d(a0 + fi * (a1 + fi * a2_32), nmax, inv_step32)
                                ib[i] = np.uint32(rf)
                                tr_b[i] = t
                                w_b[i] = sk * inv_u
                            for q in range(n4):
                                i = 4 * q
                                j0 = ib[i]
                                j1 = ib[i + 1]
                                j2 = ib[i + 2]
                                j3 = ib[i + 3]
                                if max(max(j0, j1), max(j2, j3)) >= n_flat:
                                    break
                                x0_b[i] = flat[j0]
                                x0_b[i + 1] = flat[j1]
                                x0_b[i + 2] = flat[j2]
                                x0_b[i + 3] = flat[j3]
                            for i in range(n):
                                x = x0_b[i]
                                out[k, j, cu + np.uint64(i)] += w_b[i] * (_lo_f32(x) + tr_b[i] * _hi_f32(x))


@nb.njit(parallel=True, cache=True)
def near_field_exact(shape, origin, ex, ey, ez, inv_frame, seeds_mm, strength, axes, formalism, r_near_mm, cut2,
                     table, inv_step, inv_dth, coef, g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars, out):
    """Replace the table value by the exact one for voxels within ``r_near_mm`` of each seed.

    The table value is recomputed with the same float32 formulas as
    :func:`grid_table` (scalar instead of vectorised, so it may differ in
    the last bit; r^2 is clamped at 1 mm^2, which keeps that residue below
    ~1e-7 of the dose) and subtracted, so the voxel ends up holding the exact
    dose rate.  ``inv_frame`` maps a world offset (mm) to index offsets.
    Parallel over z slices (each slice is written by one thread only).
    """
    nz, ny, nx = shape
    nseeds = seeds_mm.shape[0]
    two_d = formalism == 0
    ncols = np.float32(table.shape[1])
    flat = table.ravel()
    nmax = np.float32(table.shape[0] - 2) if two_d else np.float32(table.shape[1] - 2)
    coef32 = coef.astype(np.float32)
    inv_step32 = np.float32(inv_step)
    inv_dth32 = np.float32(inv_dth)
    rn2 = r_near_mm * r_near_mm
    ex0, ex1, ex2 = ex[0], ex[1], ex[2]
    a2 = ex0 * ex0 + ex1 * ex1 + ex2 * ex2
    inv_a2 = 1.0 / a2
    box = np.empty((nseeds, 6), np.int64)
    for s in range(nseeds):
        rel0 = seeds_mm[s, 0] - origin[0]
        rel1 = seeds_mm[s, 1] - origin[1]
        rel2 = seeds_mm[s, 2] - origin[2]
        for c in range(3):
            centre = inv_frame[c, 0] * rel0 + inv_frame[c, 1] * rel1 + inv_frame[c, 2] * rel2
            ext = r_near_mm * math.sqrt(inv_frame[c, 0] ** 2 + inv_frame[c, 1] ** 2 + inv_frame[c, 2] ** 2)
            box[s, 2 * c] = max(0, int(math.floor(centre - ext)))
            box[s, 2 * c + 1] = int(math.ceil(centre + ext))
        box[s, 1] = min(box[s, 1], nx - 1)
        box[s, 3] = min(box[s, 3], ny - 1)
        box[s, 5] = min(box[s, 5], nz - 1)
    for k in nb.prange(nz):
        for s in range(nseeds):
            if k < box[s, 4] or k > box[s, 5]:
                continue
            sk = np.float32(strength[s])
            for j in range(box[s, 2], box[s, 3] + 1):
                a0, a1, a2_32, b0, b1, i0, lo, hi, e0, e1, e2, d1 = _row_setup(
                    origin[0] + j * ey[0] + k * ez[0] - seeds_mm[s, 0],
                    origin[1] + j * ey[1] + k * ez[1] - seeds_mm[s, 1],
                    origin[2] + j * ey[2] + k * ez[2] - seeds_mm[s, 2],
                    ex0, ex1, ex2, a2, inv_a2, axes[s, 0], axes[s, 1], axes[s, 2], nx, cut2, two_d)
                for i in range(max(lo, box[s, 0]), min(hi, box[s, 1]) + 1):
                    px = origin[0] + i * ex[0] + j * ey[0] + k * ez[0] - seeds_mm[s, 0]
                    py = origin[1] + i * ex[1] + j * ey[1] + k * ez[1] - seeds_mm[s, 1]
                    pz = origin[2] + i * ex[2] + j * ey[2] + k * ez[2] - seeds_mm[s, 2]
                    u = px * px + py * py + pz * pz
                    if u >= rn2:
                        continue
                    fi = np.float32(i) - i0
                    u32 = a0 + fi * (a1 + fi * a2_32)
                    if two_d:
                        ti = fi - d1
                        tab = _eval_2d(u32, b0 + fi * b1, e0 + ti * (e1 + ti * e2), flat, ncols, nmax, inv_step32,
                                       inv_dth32, coef32)
                    else:
                        tab = _eval_1d(u32, flat, nmax, inv_step32)
                    z = px * axes[s, 0] + py * axes[s, 1] + pz * axes[s, 2]
                    qx = px - z * axes[s, 0]
                    qy = py - z * axes[s, 1]
                    qz = pz - z * axes[s, 2]
                    y = math.sqrt(qx * qx + qy * qy + qz * qz)
                    out[k, j, i] += strength[s] * rate_per_U(z / 10.0, y / 10.0, formalism, g_r, log_g, gp_r, log_gp,
                                                             f_r, f_t, f, phi_r, phi, scalars) - sk * tab
