"""Ray-marching kernels for needle planning (arrays in, arrays out, no I/O).

All volumes are indexed ``[z, y, x]`` (``[k, j, i]``).  Rays are given in
continuous grid index space ``(i, j, k)``; a world step of ``h`` mm along a
unit direction ``d`` maps to the index step ``(d @ D) * h / spacing`` where
``D`` is the grid direction matrix (see :class:`seedplan.geometry.Grid`).

Clearances are *lower bounds* of the distance (mm) from the sampled segment to
the nearest voxel centre of a structure: for a sample ``p`` whose nearest
voxel centre is ``v`` the distance map gives ``d(v)`` exactly and
``d(p) >= d(v) - |p - v|`` (the distance function is 1-Lipschitz); half the
sample step is then subtracted to cover the points between samples.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from scipy import ndimage

from ..geometry import mask_bbox

__all__ = [
    "label_field",
    "DistanceBoxes",
    "distance_boxes",
    "distance_maps",
    "march_from_tips",
    "line_chords",
    "cover_matrix",
    "PackedCover",
    "segments_distance",
]

#: Below this many rays the serial kernels are used: thread start-up and
#: synchronisation cost more than they save on small batches (and a loaded,
#: shared machine makes it worse).
_PARALLEL_MIN = 4096


@nb.njit(cache=True, parallel=True)
def _label_kernel(target, bone, allowed, aux, has_bone, has_allowed, has_aux, labels, bad):
    for q in nb.prange(target.shape[0]):
        b = has_bone and bone[q]
        x = b and not (has_allowed and allowed[q])
        bad[q] = x
        v = np.uint8(1) if target[q] else np.uint8(0)
        if b:
            v |= np.uint8(2)
        if x:
            v |= np.uint8(4)
        if has_aux and aux[q]:
            v |= np.uint8(8)
        labels[q] = v


def label_field(target: np.ndarray, bone: np.ndarray, allowed: np.ndarray, aux: np.ndarray, has_bone: bool,
                has_allowed: bool, has_aux: bool) -> tuple[np.ndarray, np.ndarray]:
    """The needle planner's label field and its bone outside the corridor, in one pass.

    ``labels`` (uint8) has bit 0 for ``target``, 1 for ``bone``, 2 for bone outside ``allowed`` and 3 for
    ``aux``; ``bad`` is ``bone & ~allowed`` (all False without bone).  Masks not given (``has_*`` False) may
    be any placeholder array.
    """
    shape = target.shape
    labels = np.empty(shape, np.uint8)
    bad = np.empty(shape, bool)
    flat = [np.ascontiguousarray(m).reshape(-1) for m in (target, bone, allowed, aux)]
    _label_kernel(*flat, bool(has_bone), bool(has_allowed), bool(has_aux), labels.reshape(-1), bad.reshape(-1))
    return labels, bad


class DistanceBoxes:
    """Capped distance maps kept on their masks' padded bounding boxes (see :func:`distance_boxes`).

    ``values`` holds every box's float32 distances (C order) one after the other;
    box ``s`` starts at ``offset[s]``, covers voxels ``lo[s] .. lo[s] + shape[s] - 1``
    (z, y, x) and reads ``cap`` everywhere outside (an empty mask has an empty box).
    """

    __slots__ = ("values", "lo", "shape", "offset", "cap", "grid_shape")

    def __init__(self, values, lo, shape, offset, cap, grid_shape):
        self.values, self.lo, self.shape, self.offset = values, lo, shape, offset
        self.cap, self.grid_shape = cap, grid_shape

    def __len__(self) -> int:
        return int(self.lo.shape[0])

    def dense(self) -> np.ndarray:
        """The float32 ``[S, z, y, x]`` array :func:`distance_maps` returns."""
        out = np.full((len(self),) + tuple(self.grid_shape), np.float32(self.cap), dtype=np.float32)
        for s in range(len(self)):
            lo, sh, o = self.lo[s], self.shape[s], int(self.offset[s])
            n = int(np.prod(sh))
            if n:
                out[(s,) + tuple(slice(int(a), int(a + b)) for a, b in zip(lo, sh))] = \
                    self.values[o:o + n].reshape(tuple(int(x) for x in sh))
        return out


def distance_boxes(
    masks: list[np.ndarray], spacing_zyx: tuple[float, float, float], cap_mm: float
) -> DistanceBoxes:
    """:func:`distance_maps` without the full-grid arrays: each capped map on its mask's padded box.

    The same values (each transform is computed on the box anyway); the march
    reads ``cap_mm`` outside the boxes, as the full arrays hold there.
    """
    shape = masks[0].shape if masks else (1, 1, 1)
    sp = np.asarray(spacing_zyx, float)
    pad = np.ceil(cap_mm / sp).astype(int) + 1
    vals, lo, sh, off, o = [], [], [], [], 0
    for m in masks:
        box = _bounded_distance(m, tuple(float(x) for x in sp), float(cap_mm), tuple(int(x) for x in pad))
        if box is None:
            lo.append((0, 0, 0))
            sh.append((0, 0, 0))
            off.append(o)
            continue
        sl, d = box
        lo.append(tuple(x.start for x in sl))
        sh.append(d.shape)
        off.append(o)
        vals.append(d.reshape(-1))
        o += d.size
    values = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    return DistanceBoxes(values, np.array(lo, np.int64).reshape(-1, 3), np.array(sh, np.int64).reshape(-1, 3),
                         np.array(off, np.int64), float(np.float32(cap_mm)), shape)


def distance_maps(
    masks: list[np.ndarray], spacing_zyx: tuple[float, float, float], cap_mm: float
) -> np.ndarray:
    """Distance (mm) from every voxel centre to the nearest voxel of each mask.

    Each transform is computed on the mask's bounding box padded by
    ``cap_mm``; outside it (and wherever the distance exceeds ``cap_mm``) the
    value is ``cap_mm``, a valid lower bound.  Anisotropic spacing is honoured
    through ``sampling=``.  The planner marches through :func:`distance_boxes`
    instead (the same values without the full-grid arrays).

    Returns
    -------
    numpy.ndarray
        float32 array ``[S, z, y, x]``.
    """
    if not masks:
        return np.zeros((0, 1, 1, 1), np.float32)
    return distance_boxes(masks, spacing_zyx, cap_mm).dense()


#: Distance transforms already computed, by mask content: one plan asks for the same obstacles twice (seed
#: needles, then vertebroplasty needles).
_DISTANCES: dict[bytes, tuple[tuple[slice, ...], np.ndarray]] = {}


def _bounded_distance(m: np.ndarray, sp: tuple[float, ...], cap_mm: float,
                      pad: tuple[int, ...]) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """The capped distance map of ``m`` on its padded bounding box (None for an empty mask), cached by content."""
    import hashlib

    bb = mask_bbox(m)
    if bb is None:
        return None
    blo, bhi = bb
    inner = m[tuple(slice(a, b + 1) for a, b in zip(blo, bhi))]
    # the mask is its bounding box and the content of that box
    key = hashlib.sha1(np.packbits(inner.reshape(-1)).tobytes()
                       + repr((m.shape, blo, bhi, sp, cap_mm, pad)).encode()).digest()
    if key not in _DISTANCES:
        if len(_DISTANCES) > 32:
            _DISTANCES.clear()
        lo = [max(0, blo[ax] - pad[ax]) for ax in range(3)]
        hi = [min(m.shape[ax], bhi[ax] + 1 + pad[ax]) for ax in range(3)]
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        d = ndimage.distance_transform_edt(~m[sl], sampling=sp)
        _DISTANCES[key] = (sl, np.minimum(d, cap_mm).astype(np.float32))
    return _DISTANCES[key]


@nb.njit(cache=True)
def _march_one(c, tips, steps, h, max_steps, body, labels, dist, spacing, out_n, out_status, out_clear, out_len):
    nz, ny, nx = body.shape
    n_s = dist.shape[0]
    for s in range(n_s):
        out_clear[c, s] = np.inf
    for b in range(8):
        out_len[c, b] = 0.0
    status = 3  # too deep unless we exit the body in time
    n_in = 0
    for t in range(max_steps + 1):
        x = tips[c, 0] + t * steps[c, 0]
        y = tips[c, 1] + t * steps[c, 1]
        z = tips[c, 2] + t * steps[c, 2]
        i = int(np.floor(x + 0.5))
        j = int(np.floor(y + 0.5))
        k = int(np.floor(z + 0.5))
        if i < 0 or j < 0 or k < 0 or i >= nx or j >= ny or k >= nz:
            status = 2 if t > 0 else 1
            break
        if body[k, j, i] == 0:
            status = 0 if t > 0 else 1
            break
        n_in = t + 1
        ox = (x - i) * spacing[0]
        oy = (y - j) * spacing[1]
        oz = (z - k) * spacing[2]
        off = np.sqrt(ox * ox + oy * oy + oz * oz)
        for s in range(n_s):
            v = dist[s, k, j, i] - off
            if v < out_clear[c, s]:
                out_clear[c, s] = v
        lab = labels[k, j, i]
        if lab != 0:
            for b in range(8):
                if (lab >> b) & 1:
                    out_len[c, b] += h
    for s in range(n_s):
        out_clear[c, s] -= 0.5 * h
    out_n[c] = n_in
    out_status[c] = status


@nb.njit(cache=True, parallel=True)
def _march_par(tips, steps, h, max_steps, body, labels, dist, spacing, out_n, out_status, out_clear, out_len):
    for c in nb.prange(tips.shape[0]):
        _march_one(c, tips, steps, h, max_steps, body, labels, dist, spacing, out_n, out_status, out_clear, out_len)


@nb.njit(cache=True)
def _march_ser(tips, steps, h, max_steps, body, labels, dist, spacing, out_n, out_status, out_clear, out_len):
    for c in range(tips.shape[0]):
        _march_one(c, tips, steps, h, max_steps, body, labels, dist, spacing, out_n, out_status, out_clear, out_len)


@nb.njit(cache=True)
def _march_one_boxes(c, tips, steps, h, max_steps, body, labels, dvals, dlo, dshape, doff, cap, stop, spacing, out_n,
                     out_status, out_clear, out_len):
    """:func:`_march_one` reading the distance maps from their boxes (``cap`` outside them).

    A ray whose clearance to structure ``s`` (as it will be reported) is already below ``stop[s]`` stops
    there with status 4: it violates that margin whatever follows (``-inf``: never stop).
    """
    nz, ny, nx = body.shape
    n_s = dlo.shape[0]
    for s in range(n_s):
        out_clear[c, s] = np.inf
    for b in range(8):
        out_len[c, b] = 0.0
    status = 3  # too deep unless we exit the body in time
    n_in = 0
    min_far = np.inf  # min of (cap - off) over the samples: the clearance of a box the ray never enters
    # the samples that may fall in each box (slab test on the line, one sample of slack each side): outside
    # this range a sample's voxel is certainly outside the box, so the box is not looked at
    t_first = np.empty(n_s, np.int64)
    t_last = np.empty(n_s, np.int64)
    for s in range(n_s):
        tlo = -1e300
        thi = 1e300
        for a in range(3):  # a: x, y, z of the ray; the box axes are z, y, x
            lo_a = dlo[s, 2 - a] - 0.5
            hi_a = dlo[s, 2 - a] + dshape[s, 2 - a] - 0.5
            x0 = tips[c, a]
            st = steps[c, a]
            if st == 0.0:
                if x0 < lo_a - 1e-9 or x0 > hi_a + 1e-9:
                    tlo = 1e300
            else:
                ta = (lo_a - x0) / st
                tb = (hi_a - x0) / st
                if ta > tb:
                    ta, tb = tb, ta
                if ta > tlo:
                    tlo = ta
                if tb < thi:
                    thi = tb
        if dshape[s, 0] == 0 or tlo > thi or tlo > max_steps + 2.0 or thi < -2.0:
            t_first[s] = max_steps + 2
            t_last[s] = -2
        else:
            t_first[s] = int(np.floor(max(tlo, -2.0))) - 1
            t_last[s] = int(np.ceil(min(thi, max_steps + 2.0))) + 1
    for t in range(max_steps + 1):
        x = tips[c, 0] + t * steps[c, 0]
        y = tips[c, 1] + t * steps[c, 1]
        z = tips[c, 2] + t * steps[c, 2]
        i = int(np.floor(x + 0.5))
        j = int(np.floor(y + 0.5))
        k = int(np.floor(z + 0.5))
        if i < 0 or j < 0 or k < 0 or i >= nx or j >= ny or k >= nz:
            status = 2 if t > 0 else 1
            break
        if body[k, j, i] == 0:
            status = 0 if t > 0 else 1
            break
        n_in = t + 1
        ox = (x - i) * spacing[0]
        oy = (y - j) * spacing[1]
        oz = (z - k) * spacing[2]
        off = np.sqrt(ox * ox + oy * oy + oz * oz)
        vfar = cap - off
        if vfar < min_far:
            min_far = vfar
        for s in range(n_s):
            if t < t_first[s] or t > t_last[s]:
                continue
            kk = k - dlo[s, 0]
            jj = j - dlo[s, 1]
            ii = i - dlo[s, 2]
            if kk >= 0 and jj >= 0 and ii >= 0 and kk < dshape[s, 0] and jj < dshape[s, 1] and ii < dshape[s, 2]:
                v = dvals[doff[s] + (kk * dshape[s, 1] + jj) * dshape[s, 2] + ii] - off
                if v < out_clear[c, s]:
                    out_clear[c, s] = v
                    if np.float32(out_clear[c, s] - 0.5 * h) < stop[s]:
                        status = 4
        lab = labels[k, j, i]
        if lab != 0:
            for b in range(8):
                if (lab >> b) & 1:
                    out_len[c, b] += h
        if status == 4:
            break
    for s in range(n_s):
        if min_far < out_clear[c, s]:
            out_clear[c, s] = min_far
        out_clear[c, s] -= 0.5 * h
    out_n[c] = n_in
    out_status[c] = status


@nb.njit(cache=True, parallel=True)
def _march_boxes_par(tips, steps, h, max_steps, body, labels, dvals, dlo, dshape, doff, cap, stop, spacing, out_n,
                     out_status, out_clear, out_len):
    for c in nb.prange(tips.shape[0]):
        _march_one_boxes(c, tips, steps, h, max_steps, body, labels, dvals, dlo, dshape, doff, cap, stop, spacing,
                         out_n, out_status, out_clear, out_len)


@nb.njit(cache=True)
def _march_boxes_ser(tips, steps, h, max_steps, body, labels, dvals, dlo, dshape, doff, cap, stop, spacing, out_n,
                     out_status, out_clear, out_len):
    for c in range(tips.shape[0]):
        _march_one_boxes(c, tips, steps, h, max_steps, body, labels, dvals, dlo, dshape, doff, cap, stop, spacing,
                         out_n, out_status, out_clear, out_len)


def march_from_tips(
    tips_idx: np.ndarray,
    steps_idx: np.ndarray,
    step_mm: float,
    max_steps: int,
    body: np.ndarray,
    labels: np.ndarray,
    dist: np.ndarray,
    spacing_xyz: np.ndarray,
    stop_below_mm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """March rays from their tips toward the skin until they leave the body.

    Parameters
    ----------
    tips_idx, steps_idx : (N, 3) float arrays
        Tip positions and per-sample steps (towards the entry) in index space.
    step_mm : float
        World length of one step.
    max_steps : int
        Largest number of steps allowed (maximum depth / step).
    body, labels : uint8 arrays ``[z, y, x]``
        Body mask and an 8-bit label field whose bit lengths are measured.
    dist : DistanceBoxes or float32 ``[S, z, y, x]``
        Distance maps (mm) of the structures whose clearance is wanted (:func:`distance_boxes`,
        or the full arrays of :func:`distance_maps`: the same result).
    spacing_xyz : (3,) float
    stop_below_mm : (S,) float, optional
        With :class:`DistanceBoxes`: a ray stops (status 4) as soon as its clearance to structure ``s``
        is certain to end below ``stop_below_mm[s]`` (a margin it violates); its other outputs are
        then partial.  Default: every ray runs to the skin.

    Returns
    -------
    n_inside : (N,) int
        Samples inside the body (entry = tip + (n_inside - 1) * step).
    status : (N,) int8
        0 exits the body (ok), 1 tip outside body/grid, 2 leaves the grid
        inside the body, 3 still inside the body at the maximum depth, 4 stopped
        at a margin violation (``stop_below_mm``).
    clearance_mm : (N, S) float32
        Lower bound of the clearance to each structure.
    bit_length_mm : (N, 8) float32
        Length of the segment inside each label bit.
    """
    n = tips_idx.shape[0]
    boxes = isinstance(dist, DistanceBoxes)
    out_n = np.zeros(n, np.int64)
    out_status = np.zeros(n, np.int8)
    out_clear = np.zeros((n, len(dist) if boxes else dist.shape[0]), np.float32)
    out_len = np.zeros((n, 8), np.float32)
    if n:
        tips = np.ascontiguousarray(tips_idx, np.float64)
        steps = np.ascontiguousarray(steps_idx, np.float64)
        sp = np.asarray(spacing_xyz, np.float64)
        if boxes:
            stop = np.full(len(dist), -np.inf) if stop_below_mm is None else np.asarray(stop_below_mm, np.float64)
            (_march_boxes_par if n >= _PARALLEL_MIN else _march_boxes_ser)(
                tips, steps, float(step_mm), int(max_steps), body, labels, dist.values, dist.lo, dist.shape,
                dist.offset, dist.cap, stop, sp, out_n, out_status, out_clear, out_len)
        else:
            (_march_par if n >= _PARALLEL_MIN else _march_ser)(
                tips, steps, float(step_mm), int(max_steps), body, labels, dist, sp, out_n, out_status, out_clear,
                out_len)
    return out_n, out_status, out_clear, out_len


@nb.njit(cache=True)
def _chord_one(c, starts, steps, n_steps, mask, out_first, out_last, out_count):
    nz, ny, nx = mask.shape
    first = -1
    last = -1
    cnt = 0
    for t in range(n_steps):
        i = int(np.floor(starts[c, 0] + t * steps[c, 0] + 0.5))
        j = int(np.floor(starts[c, 1] + t * steps[c, 1] + 0.5))
        k = int(np.floor(starts[c, 2] + t * steps[c, 2] + 0.5))
        if i < 0 or j < 0 or k < 0 or i >= nx or j >= ny or k >= nz:
            continue
        if mask[k, j, i]:
            if first < 0:
                first = t
            last = t
            cnt += 1
    out_first[c] = first
    out_last[c] = last
    out_count[c] = cnt


@nb.njit(cache=True, parallel=True)
def _chord_par(starts, steps, n_steps, mask, out_first, out_last, out_count):
    for c in nb.prange(starts.shape[0]):
        _chord_one(c, starts, steps, n_steps, mask, out_first, out_last, out_count)


@nb.njit(cache=True)
def _chord_ser(starts, steps, n_steps, mask, out_first, out_last, out_count):
    for c in range(starts.shape[0]):
        _chord_one(c, starts, steps, n_steps, mask, out_first, out_last, out_count)


def line_chords(
    starts_idx: np.ndarray, steps_idx: np.ndarray, n_steps: int, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and last sample index inside ``mask`` and the number of samples inside.

    ``-1`` marks lines that miss the mask.
    """
    n = starts_idx.shape[0]
    first = np.zeros(n, np.int64)
    last = np.zeros(n, np.int64)
    cnt = np.zeros(n, np.int64)
    if n:
        (_chord_par if n >= _PARALLEL_MIN else _chord_ser)(
            np.ascontiguousarray(starts_idx, np.float64),
            np.ascontiguousarray(steps_idx, np.float64),
            int(n_steps),
            mask,
            first,
            last,
            cnt,
        )
    return first, last, cnt


@nb.njit(cache=True)
def _cover_one(c, points, a, b, r2, out):
    ux = b[c, 0] - a[c, 0]
    uy = b[c, 1] - a[c, 1]
    uz = b[c, 2] - a[c, 2]
    uu = ux * ux + uy * uy + uz * uz
    for p in range(points.shape[0]):
        wx = points[p, 0] - a[c, 0]
        wy = points[p, 1] - a[c, 1]
        wz = points[p, 2] - a[c, 2]
        t = 0.0
        if uu > 0.0:
            t = (wx * ux + wy * uy + wz * uz) / uu
            if t < 0.0:
                t = 0.0
            elif t > 1.0:
                t = 1.0
        dx = wx - t * ux
        dy = wy - t * uy
        dz = wz - t * uz
        out[c, p] = dx * dx + dy * dy + dz * dz <= r2


@nb.njit(cache=True, parallel=True)
def _cover_par(points, a, b, r2, out):
    for c in nb.prange(a.shape[0]):
        _cover_one(c, points, a, b, r2, out)


@nb.njit(cache=True)
def _cover_ser(points, a, b, r2, out):
    for c in range(a.shape[0]):
        _cover_one(c, points, a, b, r2, out)


def cover_matrix(points: np.ndarray, a: np.ndarray, b: np.ndarray, radius_mm: float) -> np.ndarray:
    """Boolean ``(N, M)``: point ``m`` lies within ``radius_mm`` of segment ``[a_n, b_n]``."""
    out = np.zeros((a.shape[0], points.shape[0]), np.bool_)
    if out.size:
        (_cover_par if out.shape[0] >= _PARALLEL_MIN else _cover_ser)(
            np.ascontiguousarray(points, np.float64),
            np.ascontiguousarray(a, np.float64),
            np.ascontiguousarray(b, np.float64),
            float(radius_mm) ** 2,
            out,
        )
    return out


@nb.njit(cache=True)
def _popcount64(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@nb.njit(cache=True)
def _count_outside(rows, mask, out):
    for r in range(rows.shape[0]):
        c = np.uint64(0)
        for w in range(rows.shape[1]):
            c += _popcount64(rows[r, w] & ~mask[w])
        out[r] = c


class PackedCover:
    """A boolean cover matrix (candidates x points) packed 64 points to a word.

    ``uncovered(covered)`` is ``cover[:, ~covered].sum(axis=1)`` (the same int64 counts) from popcounts.
    """

    def __init__(self, cover: np.ndarray) -> None:
        self.m = cover.shape[1]
        self.rows = self._pack(cover)

    @staticmethod
    def _pack(bits: np.ndarray) -> np.ndarray:
        b = np.atleast_2d(bits)
        packed = np.packbits(b, axis=1, bitorder="little")
        pad = (-packed.shape[1]) % 8
        if pad or packed.shape[1] == 0:
            packed = np.pad(packed, ((0, 0), (0, pad if packed.shape[1] else 8)))
        return np.ascontiguousarray(packed).view(np.uint64)

    def uncovered(self, covered: np.ndarray) -> np.ndarray:
        out = np.zeros(self.rows.shape[0], np.int64)
        _count_outside(self.rows, self._pack(covered)[0], out)
        return out


@nb.njit(cache=True)
def _clamp01(x):
    return 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)


@nb.njit(cache=True)
def _seg_seg(p1, q1, p2, q2):
    # closest distance between segments [p1, q1] and [p2, q2]
    d1 = q1 - p1
    d2 = q2 - p2
    r = p1 - p2
    a = d1 @ d1
    e = d2 @ d2
    f = d2 @ r
    eps = 1e-12
    if a <= eps and e <= eps:
        s = 0.0
        t = 0.0
    elif a <= eps:
        s = 0.0
        t = _clamp01(f / e)
    else:
        c = d1 @ r
        if e <= eps:
            t = 0.0
            s = _clamp01(-c / a)
        else:
            b = d1 @ d2
            den = a * e - b * b
            s = _clamp01((b * f - c * e) / den) if den > eps else 0.0
            t = (b * s + f) / e
            if t < 0.0:
                t = 0.0
                s = _clamp01(-c / a)
            elif t > 1.0:
                t = 1.0
                s = _clamp01((b - c) / a)
    diff = (p1 + s * d1) - (p2 + t * d2)
    return np.sqrt(diff @ diff)


@nb.njit(cache=True)
def _segs_kernel(p, q, a, b, out):
    for c in range(a.shape[0]):
        out[c] = _seg_seg(p, q, a[c], b[c])


def segments_distance(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shortest distance between segment ``[p, q]`` and each segment ``[a_n, b_n]``."""
    out = np.zeros(a.shape[0], np.float64)
    if a.shape[0]:
        _segs_kernel(
            np.asarray(p, np.float64),
            np.asarray(q, np.float64),
            np.ascontiguousarray(a, np.float64),
            np.ascontiguousarray(b, np.float64),
            out,
        )
    return out

