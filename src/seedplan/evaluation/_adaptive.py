"""Level-aware sampling: sub-voxel samples only where they can change a statistic.

The exact evaluation (``SamplingOptions(adaptive=False)``) evaluates the dose at
every sub-point of every structure voxel (8 per mm^3).  Most of those doses
never matter: a DVH statistic at a dose level L (V_L) only depends on whether
each sample is >= L, and a statistic at a volume (D90, D0.1cc, Dmax) only on the
samples around the dose it returns.  So:

1. the dose is evaluated once per voxel, at its centre ``d0``;
2. a voxel's sub-point doses are bounded by ``[d0 - h, d0 + h]`` with ``h`` from
   the differences to its six face neighbours (a linear field across the voxel
   with the steeper one-sided slope on each axis, times :data:`SAFETY`, plus the
   curvature term, and never less than the largest difference to a neighbour,
   so that a dose step next to the centre is seen);
3. a voxel is refined (all its member sub-points evaluated, as in the exact
   evaluation) when it lies on the structure border (the trilinear band), when
   its dose is steep (``h > STEEP * d0``, next to a seed), or when its range
   contains a level the metrics read: a dose level (PD, 0.9/1.5/2 PD) or the
   current value of a volume statistic (D90, D100, Dmax, D0.1cc, D1cc, D2cc).
   Volume statistics are recomputed after each refinement until no unrefined
   voxel's range contains any of them;
4. every other voxel is one sample of the whole voxel's weight, at its
   estimated mean dose (centre dose + the Laplacian term of the sub-point
   lattice), kept inside its range.

When the bounds hold, every dose-level volume and every volume statistic equals
the exact evaluation's to rounding (an unrefined voxel is wholly above or wholly
below each level, with the weight of all its sub-points); Dmean differs by the
error of the voxel-mean estimate (fourth order in the sub-point spacing).
``tests/evaluation/test_adaptive.py`` compares both paths on planned phantoms.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numba as nb
import numpy as np

from .dvh import DVH, _dose_reaching
from .sampling import MaskSampler, _to_world

#: Multiplies the linear bound of a voxel's dose range (margin for curvature).
SAFETY = 2.0
#: Voxels whose relative dose range (h / d0) exceeds this are always refined.
STEEP = 0.25
#: Refinement rounds before every remaining voxel is refined.
MAX_ROUNDS = 8


def _axes_offsets(sub: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per array axis (k, j, i): largest |offset| of a sub-point and the variance of the offsets (index units)."""
    s = np.asarray(sub, dtype=float)[::-1]  # (s_k, s_j, s_i)
    return 0.5 - 0.5 / s, (s * s - 1.0) / (12.0 * s * s)


def centre_bounds(d0: np.ndarray, nbr_plus: list, nbr_minus: list, sub: Sequence[int]):
    """Range half-width, estimated sub-point mean, and whether both neighbours exist, per voxel.

    ``nbr_plus[a]``/``nbr_minus[a]`` are the centre doses of the neighbours along
    array axis ``a`` (k, j, i), NaN where there is none.
    """
    off, var = _axes_offsets(sub)
    h = np.zeros_like(d0)
    g_max = np.zeros_like(d0)
    mean = d0.copy()
    ok = np.ones(d0.shape, dtype=bool)
    for a in range(3):
        dp = nbr_plus[a] - d0
        dm = d0 - nbr_minus[a]
        has_p, has_m = np.isfinite(dp), np.isfinite(dm)
        ok &= has_p & has_m
        dp = np.where(has_p, dp, np.where(has_m, dm, 0.0))
        dm = np.where(has_m, dm, dp)
        g = np.maximum(np.abs(dp), np.abs(dm))
        if off[a] > 0:
            g_max = np.maximum(g_max, g)
        curv = dp - dm
        h += SAFETY * off[a] * g + 0.5 * off[a] ** 2 * np.abs(curv)
        mean += 0.5 * var[a] * curv
    # never narrower than the largest step to a neighbour: a jump between the centre and a neighbour
    # (a dose that is not smooth) may put a sub-point at the neighbour's dose
    h = np.maximum(h, g_max)
    return h, np.clip(mean, d0 - h, d0 + h), ok


@nb.njit(cache=True)
def _neighbour_doses(vox, lut, dose):
    """Centre doses of the six face neighbours of each voxel: rows +k, -k, +j, -j, +i, -i (NaN where none)."""
    m = vox.shape[0]
    nz, ny, nx = lut.shape
    out = np.full((6, m), np.nan)
    for q in range(m):
        for a in range(3):
            for side in range(2):
                k, j, i = vox[q, 0], vox[q, 1], vox[q, 2]
                step = 1 if side == 0 else -1
                if a == 0:
                    k += step
                elif a == 1:
                    j += step
                else:
                    i += step
                if 0 <= k < nz and 0 <= j < ny and 0 <= i < nx:
                    r = lut[k, j, i]
                    if r >= 0:
                        out[2 * a + side, q] = dose[r]
    return out


def _stats(d: np.ndarray, wt: np.ndarray, fractions: Sequence[float], volumes: Sequence[float]) -> np.ndarray:
    """The covering doses (:func:`~seedplan.evaluation.dvh.dose_covering`) at volume fractions and volumes.

    Only the hottest samples are sorted when every volume is small (Dmax, D0.1cc, D2cc).
    """
    total = float(wt.sum())
    if not fractions and volumes:
        v_max = min(max(volumes), total)
        k = int(np.ceil(v_max / float(wt.min()))) + 1
        if k < len(d) // 2:
            top = np.argpartition(-d, k)[: k + 1]
            top = top[np.argsort(-d[top], kind="stable")]
            ds, cum = d[top], np.cumsum(wt[top])
            return np.asarray([_dose_reaching(ds, cum, min(v, total)) for v in volumes])
    order = np.argsort(-d, kind="stable")
    ds, cum = d[order], np.cumsum(wt[order])
    total = float(cum[-1])
    return np.asarray([_dose_reaching(ds, cum, f * total) for f in fractions]
                      + [_dose_reaching(ds, cum, min(v, total)) for v in volumes])


def adaptive_dvh(
    sampler: MaskSampler,
    dose_fn: Callable[[np.ndarray, str], np.ndarray],
    *,
    levels_Gy: Sequence[float] = (),
    volume_fractions: Sequence[float] = (),
    volumes_cm3: Sequence[float] = (),
    name: str = "structure",
) -> tuple[DVH, float, int]:
    """DVH of one structure with level-aware refinement (module docstring).

    Parameters
    ----------
    sampler : MaskSampler
    dose_fn : callable
        ``dose_fn(points_mm, what) -> dose`` (validated).
    levels_Gy : dose levels whose volumes must be exact.
    volume_fractions : fractions (0-1) of the volume whose covering dose must be exact (0.9 -> D90).
    volumes_cm3 : absolute volumes whose covering dose must be exact (0 -> Dmax).

    Returns
    -------
    (DVH, volume scale, number of dose evaluations)
    """
    from scipy import ndimage

    s = sampler
    grid = s.grid
    cand = s.interior | s.band
    # centre doses of the candidate voxels and of their face neighbours
    ext = ndimage.binary_dilation(cand, structure=ndimage.generate_binary_structure(3, 1))
    vox_all = np.argwhere(ext)
    lut = np.full(s.mask.shape, -1, dtype=np.int64)
    lut[vox_all[:, 0], vox_all[:, 1], vox_all[:, 2]] = np.arange(len(vox_all))
    origin_ijk = s.offset_ijk
    d_all = dose_fn(_to_world(grid, vox_all[:, ::-1].astype(float) + origin_ijk),
                    f"structure {name!r} (voxel centres)")
    n_eval = len(vox_all)
    vox = np.argwhere(cand)
    m = len(vox)
    d0 = d_all[lut[vox[:, 0], vox[:, 1], vox[:, 2]]]
    nbr = _neighbour_doses(vox, lut, d_all)
    plus, minus = [nbr[2 * a] for a in range(3)], [nbr[2 * a + 1] for a in range(3)]
    h, rep, ok = centre_bounds(d0, plus, minus, s.subdivisions)
    lo, hi = d0 - h, d0 + h
    k, j, i = vox[:, 0], vox[:, 1], vox[:, 2]
    is_band = s.band[k, j, i]
    n_sub = s.n_sub
    # members of the border voxels (trilinear rule), their count and centroid
    members = np.full(m, n_sub, dtype=np.int64)
    band_idx = np.flatnonzero(is_band)
    band_member = np.zeros((len(band_idx), n_sub), dtype=bool)
    if len(band_idx):
        ijk_b = (vox[band_idx, ::-1].astype(float)[:, None, :] + s.offsets[None]).reshape(-1, 3) + origin_ijk
        band_member = s.inside(ijk_b).reshape(len(band_idx), n_sub)
        cnt = band_member.sum(axis=1)
        members[band_idx] = cnt
        # the members' mean dose ~ the dose at their centroid (linear in the voxel)
        bm = band_member.astype(float)
        cen = np.stack([np.add.reduce(bm * s.offsets[:, c], axis=1) for c in range(3)], axis=1)
        cen /= np.maximum(cnt, 1)[:, None]  # members' mean offset (i, j, k)
        grad = [(plus[a][band_idx] - minus[a][band_idx]) * 0.5 for a in range(3)]  # per (k, j, i)
        shift = grad[0] * cen[:, 2] + grad[1] * cen[:, 1] + grad[2] * cen[:, 0]
        rb = np.where(np.isfinite(shift), d0[band_idx] + shift, d0[band_idx])
        rep[band_idx] = np.clip(rb, lo[band_idx], hi[band_idx])
    member_row = np.full(m, -1, dtype=np.int64)
    member_row[band_idx] = np.arange(len(band_idx))
    refine = ~ok | (h > STEEP * d0)
    levels = np.asarray(list(levels_Gy), dtype=float)
    if levels.size:
        refine |= np.any((lo[:, None] <= levels[None]) & (levels[None] <= hi[:, None]), axis=1)
    refine &= members > 0
    total_cm3 = s.mask_volume_mm3 / 1000.0
    n_members = int(members.sum())
    w = total_cm3 / n_members
    sub_doses: list[np.ndarray] = []
    done = members == 0  # border voxels with no member sub-point hold no volume

    def sample(sel: np.ndarray) -> None:
        nonlocal n_eval
        idx = np.flatnonzero(sel)
        ijk = (vox[idx, ::-1].astype(float)[:, None, :] + s.offsets[None]) + origin_ijk  # (V, S, 3)
        keep = np.ones((len(idx), n_sub), dtype=bool)
        rows = member_row[idx]
        b = rows >= 0
        keep[b] = band_member[rows[b]]
        ijk = ijk[keep]
        if len(ijk):
            sub_doses.append(dose_fn(_to_world(grid, ijk), f"structure {name!r}"))
            n_eval += len(ijk)
        done[idx] = True

    def assemble() -> tuple[np.ndarray, np.ndarray]:
        un = ~done
        d = np.concatenate([rep[un], *sub_doses])
        n_sub_samples = len(d) - int(un.sum())
        wt = np.concatenate([members[un] * w, np.full(n_sub_samples, w)])
        return d, wt

    if refine.any():
        sample(refine)
    fractions = list(volume_fractions)
    vols = list(volumes_cm3)
    for rnd in range(MAX_ROUNDS + 1):
        un = ~done
        if not (fractions or vols) or not un.any():
            break
        d, wt = assemble()
        st = _stats(d, wt, fractions, vols)
        new = un & np.any((lo[:, None] <= st[None]) & (st[None] <= hi[:, None]), axis=1)
        if not new.any():
            break
        sample(un if rnd == MAX_ROUNDS else new)
    d, wt = assemble()
    scale = s.mask_volume_mm3 / (n_members * s.sub_volume_mm3)
    return DVH.from_samples(d, wt, name=name), float(scale), n_eval


def _box_bounds(dose: np.ndarray, sub: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(h, ok)`` for every voxel of a box of centre doses ``[k, j, i]`` (neighbours inside the box)."""
    plus, minus = [], []
    for a in range(3):
        p = np.full(dose.shape, np.nan)
        q = np.full(dose.shape, np.nan)
        sl_lo = [slice(None)] * 3
        sl_hi = [slice(None)] * 3
        sl_lo[a] = slice(0, -1)
        sl_hi[a] = slice(1, None)
        p[tuple(sl_lo)] = dose[tuple(sl_hi)]
        q[tuple(sl_hi)] = dose[tuple(sl_lo)]
        plus.append(p)
        minus.append(q)
    h, _mean, ok = centre_bounds(dose, plus, minus, sub)
    # a voxel on the box's edge has one neighbour per axis: its range estimate is one-sided, keep it
    return h, ok


def reference_volumes(
    sampler: MaskSampler,
    dose_fn: Callable[[np.ndarray, str], np.ndarray],
    pd: float,
    lo: np.ndarray,
    hi: np.ndarray,
    step: np.ndarray,
    body,
    max_expansions: int,
    warnings: list[str],
) -> dict:
    """Volumes outside the target receiving >= 1, 1.5, 2 PD: voxel centres over a box, sub-points where needed.

    ``lo``/``hi`` (k, j, i, inclusive) is the starting box (target, margin,
    include points, hot spots); each face whose voxels may reach PD (centre
    dose + range) is pushed out by ``step`` until none does.  A voxel counts
    whole when its range is clear of the three levels and it is neither on the
    target border nor on the body border; otherwise its sub-points are sampled
    with the target's membership rule and the body test, as the exact
    evaluation does for every voxel of the box.
    """
    grid, name = sampler.grid, sampler.name
    shape = np.array(grid.shape)
    sub = sampler.subdivisions
    n_sub = sampler.n_sub
    thresholds = np.array([1.0, 1.5, 2.0]) * pd
    lo, hi = lo.copy(), hi.copy()
    edge_hot = False
    for it in range(max_expansions + 1):
        kk, jj, ii = (np.arange(a, b + 1) for a, b in zip(lo, hi))
        K, J, I = np.meshgrid(kk, jj, ii, indexing="ij")
        ijk = np.stack([I.ravel(), J.ravel(), K.ravel()], axis=1).astype(float)
        pts = _to_world(grid, ijk)
        in_body = body.contains(pts).reshape(K.shape) if body is not None else np.ones(K.shape, dtype=bool)
        dose = np.zeros(K.shape)
        if in_body.any():
            dose[in_body] = dose_fn(pts[in_body.ravel()], f"the V_ref box of {name!r}")
        h, _ok = _box_bounds(dose, sub)
        reach = in_body & (dose + h >= pd)
        grown = False
        if it < max_expansions:
            for ax in range(3):
                for side, face in ((0, 0), (1, -1)):
                    sl = [slice(None)] * 3
                    sl[ax] = face
                    if not reach[tuple(sl)].any():
                        continue
                    if side == 0:
                        if lo[ax] == 0:
                            edge_hot = True
                        else:
                            lo[ax] = max(0, lo[ax] - step[ax])
                            grown = True
                    else:
                        if hi[ax] == shape[ax] - 1:
                            edge_hot = True
                        else:
                            hi[ax] = min(shape[ax] - 1, hi[ax] + step[ax])
                            grown = True
        elif reach[[0, -1]].any() or reach[:, [0, -1]].any() or reach[:, :, [0, -1]].any():
            warnings.append(f"V_ref box of {name!r} still growing after {max_expansions} steps")
        if not grown:
            break
    if edge_hot:
        warnings.append(
            f"the prescription isodose around {name!r} reaches the edge of its grid; V_ref may be underestimated"
        )
    # target membership of the box voxels (local sampler arrays)
    loc = np.stack([K, J, I], axis=-1) - sampler.offset_ijk[::-1].astype(np.int64)
    ms = np.array(sampler.mask.shape)
    in_loc = np.all((loc >= 0) & (loc < ms), axis=-1)
    lk, lj, li = (np.where(in_loc, loc[..., a], 0) for a in range(3))
    t_whole = in_loc & (sampler.interior[lk, lj, li] | sampler.fallback[lk, lj, li])
    t_band = in_loc & sampler.band[lk, lj, li] & ~t_whole
    # body border: a body voxel next to a non-body one (sub-points may fall on either side on another grid)
    body_edge = np.zeros(K.shape, dtype=bool)
    if body is not None and not body.same_grid(grid):
        for a in range(3):
            d = np.diff(in_body.astype(np.int8), axis=a) != 0
            sl_lo = [slice(None)] * 3
            sl_hi = [slice(None)] * 3
            sl_lo[a] = slice(0, -1)
            sl_hi[a] = slice(1, None)
            body_edge[tuple(sl_lo)] |= d
            body_edge[tuple(sl_hi)] |= d
    lo_d, hi_d = dose - h, dose + h
    cand = (in_body | body_edge) & (hi_d >= pd) & ~t_whole
    straddle = np.any((lo_d[..., None] <= thresholds) & (thresholds <= hi_d[..., None]), axis=-1)
    refine = cand & (t_band | body_edge | straddle | (h > STEEP * dose))
    whole = cand & ~refine & in_body
    counts = np.zeros(3)
    for t in range(3):
        counts[t] += n_sub * np.count_nonzero(whole & (lo_d >= thresholds[t]))
    rv = np.argwhere(refine)
    if len(rv):
        vidx = (rv + lo)[:, ::-1].astype(float)  # global (i, j, k)
        sub_ijk = (vidx[:, None, :] + sampler.offsets[None]).reshape(-1, 3)
        keep = ~sampler.inside(sub_ijk)
        sub_ijk = sub_ijk[keep]
        p = _to_world(grid, sub_ijk)
        if body is not None:
            p = p[body.contains(p)]
        d = dose_fn(p, f"the V_ref box of {name!r}")
        counts += (d[:, None] >= thresholds[None]).sum(0)
    # sub-points of the box inside the body and outside the target (the region the exact path samples)
    n_body = n_sub * int(np.count_nonzero(in_body))
    n_tgt = n_sub * int(np.count_nonzero(in_body & t_whole))
    tb = np.argwhere(in_body & t_band)
    if len(tb):
        vidx = (tb + lo)[:, ::-1].astype(float)
        n_tgt += int(np.count_nonzero(sampler.inside((vidx[:, None, :] + sampler.offsets[None]).reshape(-1, 3))))
    v_out = counts * sampler.sub_volume_mm3 / 1000.0
    lower_mm = grid.index_to_world(lo[::-1].astype(float) - 0.5)
    upper_mm = grid.index_to_world(hi[::-1].astype(float) + 0.5)
    return {
        "outside_ref_cm3": float(v_out[0]),
        "outside_ref150_cm3": float(v_out[1]),
        "outside_ref200_cm3": float(v_out[2]),
        "region_volume_cm3": (n_body - n_tgt) * sampler.sub_volume_mm3 / 1000.0,
        "region_corner_lower_mm": [float(v) for v in lower_mm],
        "region_corner_upper_mm": [float(v) for v in upper_mm],
    }
