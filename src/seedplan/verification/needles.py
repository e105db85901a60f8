"""Needles on the intra-operative CT: detection as straight metal tracks, and matching to the planned needles.

Detection (:func:`detect_needles`), in the later CT's own frame:

1. **metal**: voxels at or above ``metal_hu`` (steel saturates the scanner;
   bone and cement stay below), grouped in connected components (26
   neighbours);
2. **lines**: in each component, lines are found one after the other by
   RANSAC (pairs of metal voxels at least 10 mm apart; the line with the
   most voxels within ``inlier_mm`` wins), refitted by weighted principal
   components on their inliers, and cut to the longest run of inliers
   without a gap over ``max_gap_mm``; a run shorter than ``min_length_mm``
   is not a needle (a seed, a clip, a streak).  The run's voxels are
   removed and the search repeats, so needles that touch (converging tips)
   separate;
3. **ends**: the HU profile along the fitted line is sampled (trilinear)
   and each end placed where it falls half-way between the metal plateau
   and the background beyond it (a saturated profile puts this slightly
   beyond the true end, by about the point-spread function's width);
4. **tip and entry**: the end deeper in the body (patient outline:
   :func:`seedplan.imaging.body_outline`) is the tip; the entry is where the
   needle crosses the skin (the part outside the skin and the hub are
   visible too): the outermost tissue-to-air crossing (``body_hu``) along
   four lines parallel to the needle 3.5 mm beside it, clear of its bloom,
   their median.  A needle that does not leave the body in the image has
   its entry at its outer end (``entry_at_skin=False``).

Matching (:func:`match_needles`): in the planning frame (after the
registration), planned needles (seed and vertebroplasty) and detected ones
are paired by the Hungarian algorithm on ``entry distance + tip distance / 2
(mm) + angle (deg)``, within ``max_entry_mm``, ``max_angle_deg`` and
``max_tip_mm`` (a needle is known by where it enters and where it points;
its depth, and so its tip, is what goes wrong most).  Each pair gives the deviations
the CT room reports (Ji et al., J Radiat Res 2021;62:910-917 report the same
four for template-guided needles): tip and entry distance, angle, and depth
(actual minus planned insertion depth, skin to tip), plus the tip's
deviation along and across the planned needle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import _validate as v
from ..errors import GeometryError, InputError, InputTypeError
from ..geometry import Grid
from ..imaging.ct import CTImage
from ..plan import Needle, Plan
from . import _frames as fr
from .registration import Registration, as_registration

__all__ = ["DetectedNeedle", "NeedleDetection", "NeedleDeviation", "NeedleVerification", "detect_needles",
           "match_needles", "verify_needles"]

log = logging.getLogger("seedplan")


@dataclass(frozen=True)
class DetectedNeedle:
    """A straight metal track on the later CT (its own LPS frame).

    Attributes
    ----------
    entry_mm : tuple
        Where the needle leaves the body (or its outer visible end when ``entry_at_skin`` is False).
    tip_mm : tuple
        The deep end.
    direction : tuple
        Unit vector from entry to tip.
    outer_mm : tuple
        The outer visible end of the metal (outside the skin: shaft and hub).
    entry_at_skin : bool
    diameter_mm : float
        Apparent diameter (metal voxel volume per mm of track; blooming makes it larger than the needle).
    rms_mm : float
        Root-mean-square distance of its voxels from the line.
    n_voxels : int
    """

    entry_mm: tuple[float, float, float]
    tip_mm: tuple[float, float, float]
    direction: tuple[float, float, float]
    outer_mm: tuple[float, float, float]
    entry_at_skin: bool
    diameter_mm: float
    rms_mm: float
    n_voxels: int

    @property
    def depth_mm(self) -> float:
        """Entry to tip (mm)."""
        return float(np.linalg.norm(np.subtract(self.tip_mm, self.entry_mm)))


@dataclass(frozen=True, eq=False)
class NeedleDetection:
    """The needles found on a CT, in that CT's frame."""

    needles: tuple[DetectedNeedle, ...]
    metal_hu: float
    warnings: tuple[str, ...] = ()

    @property
    def n_needles(self) -> int:
        return len(self.needles)


@dataclass(frozen=True)
class NeedleDeviation:
    """A planned needle, the needle found for it, and how far apart they are (planning frame).

    Attributes
    ----------
    planned : int
        0-based index into ``plan.needles + plan.pvp_needles``.
    name : str
        ``N3`` for seed needle 3, ``PVP left``... (the plan's names).
    kind : {"seed", "pvp"}
    detected : int
        0-based index into the detection's needles.
    actual : Needle
        The needle as placed (planning frame; entry at the skin, or the outer visible end).
    tip_error_mm, entry_error_mm : float
        Distances between the tips and between the entries (``entry_error_mm`` is None when the detected
        needle does not leave the body in the image).
    angle_deg : float
        Angle between the needle directions.
    depth_error_mm : float
        Actual minus planned insertion depth (skin to tip); None without an entry at the skin.
    tip_along_mm, tip_across_mm : float
        The tip's deviation along the planned needle (+ = deeper) and across it.
    """

    planned: int
    name: str
    kind: str
    detected: int
    actual: Needle
    tip_error_mm: float
    entry_error_mm: float | None
    angle_deg: float
    depth_error_mm: float | None
    tip_along_mm: float
    tip_across_mm: float

    def to_dict(self) -> dict[str, Any]:
        r = lambda x: None if x is None else round(float(x), 3)  # noqa: E731
        return {"needle": self.name, "kind": self.kind, "tip_error_mm": r(self.tip_error_mm),
                "entry_error_mm": r(self.entry_error_mm), "angle_deg": r(self.angle_deg),
                "depth_error_mm": r(self.depth_error_mm), "tip_along_mm": r(self.tip_along_mm),
                "tip_across_mm": r(self.tip_across_mm), "actual_entry_mm": [r(x) for x in self.actual.entry_mm],
                "actual_tip_mm": [r(x) for x in self.actual.tip_mm]}


@dataclass(frozen=True, eq=False)
class NeedleVerification:
    """Detected needles matched to the plan (planning frame).

    Attributes
    ----------
    detection : NeedleDetection
    registration : Registration
    deviations : tuple of NeedleDeviation
        One per matched planned needle, in plan order.
    unmatched_planned : tuple of int
        Planned needles (0-based in ``plan.needles + plan.pvp_needles``) with no needle found.
    unmatched_detected : tuple of int
        Detected needles matched to no planned needle.
    names : tuple of str
        Names of ``plan.needles + plan.pvp_needles``.
    detected_needles : tuple of Needle
        Every detected needle in the planning frame (unlabelled).
    """

    detection: NeedleDetection
    registration: Registration
    deviations: tuple[NeedleDeviation, ...]
    unmatched_planned: tuple[int, ...]
    unmatched_detected: tuple[int, ...]
    names: tuple[str, ...]
    detected_needles: tuple[Needle, ...]
    warnings: tuple[str, ...] = field(default=())

    def actual_needles(self, kind: str = "seed") -> tuple[Needle | None, ...]:
        """The needles as placed, one per planned needle of ``kind`` in plan order (None where none was found):
        what a re-plan on the needles actually placed starts from."""
        v.choice(kind, "kind", ("seed", "pvp"))
        by_plan = {d.planned: d.actual for d in self.deviations}
        idx = [i for i, n in enumerate(self.names) if (kind == "pvp") == n.startswith("PVP")]
        return tuple(by_plan.get(i) for i in idx)

    def deviation(self, name: str) -> NeedleDeviation:
        """The deviation of the planned needle ``name`` (``"N2"``, ``"PVP left"``)."""
        for d in self.deviations:
            if d.name == name:
                return d
        if name in self.names:
            raise InputError(f"needle {name!r} was not found on the CT (it is unmatched)")
        raise InputError(f"the plan has no needle {name!r}; its needles are {', '.join(self.names)}")

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per-needle deviations, unmatched needles, and the mean absolute errors."""
        def mean(key: str) -> float | None:
            vals = [abs(getattr(d, key)) for d in self.deviations if getattr(d, key) is not None]
            return round(float(np.mean(vals)), 3) if vals else None

        return {
            "needles": [d.to_dict() for d in self.deviations],
            "unmatched_planned": [self.names[i] for i in self.unmatched_planned],
            "unmatched_detected": [
                {"entry_mm": [round(x, 2) for x in self.detected_needles[j].entry_mm],
                 "tip_mm": [round(x, 2) for x in self.detected_needles[j].tip_mm]} for j in self.unmatched_detected],
            "mean_tip_error_mm": mean("tip_error_mm"),
            "mean_entry_error_mm": mean("entry_error_mm"),
            "mean_angle_deg": mean("angle_deg"),
            "mean_abs_depth_error_mm": mean("depth_error_mm"),
            "warnings": list(self.warnings),
        }


# ============================================================================ detection helpers
def _line_fit(pts: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ws = w / w.sum()
    c = ws @ pts
    q = pts - c
    val, vec = np.linalg.eigh((q * ws[:, None]).T @ q)
    return c, vec[:, -1]


def _dist_to_line(pts: np.ndarray, c: np.ndarray, u: np.ndarray) -> np.ndarray:
    q = pts - c
    t = q @ u
    return np.sqrt(np.maximum(np.einsum("ij,ij->i", q, q) - t * t, 0.0))


def _ransac_line(pts: np.ndarray, inlier_mm: float, min_sep_mm: float, rng: np.random.Generator,
                 trials: int = 300) -> tuple[np.ndarray, np.ndarray] | None:
    best, best_n = None, 0
    n = len(pts)
    for _ in range(trials):
        i, j = rng.integers(n, size=2)
        d = pts[j] - pts[i]
        length = float(np.linalg.norm(d))
        if length < min_sep_mm:
            continue
        u = d / length
        k = int((_dist_to_line(pts, pts[i], u) <= inlier_mm).sum())
        if k > best_n:
            best, best_n = (pts[i], u), k
    return best


def _longest_run(t: np.ndarray, max_gap: float) -> np.ndarray:
    """Boolean mask of the points of the longest gap-free run along ``t`` (most points)."""
    order = np.argsort(t)
    ts = t[order]
    breaks = np.nonzero(np.diff(ts) > max_gap)[0]
    starts = np.r_[0, breaks + 1]
    stops = np.r_[breaks + 1, len(ts)]
    k = int(np.argmax(stops - starts))
    keep = np.zeros(len(t), bool)
    keep[order[starts[k]:stops[k]]] = True
    return keep


def _profile_ends(profile: np.ndarray, ts: np.ndarray, t0: float, t1: float, plateau: float,
                  max_gap_mm: float, occluded: np.ndarray | None = None) -> tuple[float, float]:
    """The needle's two ends along the line: the longest stretch where the profile stays above half-way
    between the metal plateau and the background beyond the ends (gaps up to ``max_gap_mm`` bridged), its
    boundaries interpolated between samples.  ``occluded`` samples (inside another needle) bridge a stretch
    but never hold an end: a needle ending in another one ends where that one begins."""
    occ = np.zeros(len(ts), bool) if occluded is None else occluded
    beyond = (((ts <= t0 - 3.0) & (ts >= t0 - 8.0)) | ((ts >= t1 + 3.0) & (ts <= t1 + 8.0))) & ~occ
    bgv = float(np.median(profile[beyond])) if beyond.any() else float(np.min(profile))
    half = 0.5 * (plateau + bgv)
    above = (profile >= half) | occ
    if not (above & ~occ).any():
        return t0, t1
    idx = np.nonzero(above)[0]
    step = float(ts[1] - ts[0])
    breaks = np.nonzero(np.diff(idx) * step > max_gap_mm)[0]
    starts = np.r_[idx[0], idx[breaks + 1]]
    stops = np.r_[idx[breaks], idx[-1]]
    own = np.array([(~occ[a:b + 1]).sum() for a, b in zip(starts, stops)])
    k = int(np.argmax(own))
    i0, i1 = int(starts[k]), int(stops[k])
    while i0 < i1 and occ[i0]:  # an end inside another needle moves back to where that needle begins
        i0 += 1
    while i1 > i0 and occ[i1]:
        i1 -= 1

    def end(i_in: int, i_out: int) -> float:
        if 0 <= i_out < len(ts) and occ[i_out]:  # the needle ends where another one begins
            return float(ts[i_in])
        return _cross(profile, ts, half, i_in, i_out)

    return end(i0, i0 - 1), end(i1, i1 + 1)


def _cross(profile: np.ndarray, ts: np.ndarray, half: float, i_in: int, i_out: int) -> float:
    """Where the profile crosses ``half`` between sample ``i_in`` (above) and ``i_out`` (below)."""
    if i_out < 0 or i_out >= len(ts):
        return float(ts[i_in])
    fa, fb = profile[i_in], profile[i_out]
    frac = (fa - half) / (fa - fb) if fa != fb else 0.5
    return float(ts[i_in] + frac * (ts[i_out] - ts[i_in]))


# ============================================================================ detection
def detect_needles(
    ct: CTImage,
    *,
    region_mm: Sequence[Any] | None = None,
    metal_hu: float = 2000.0,
    min_length_mm: float = 15.0,
    inlier_mm: float = 2.0,
    max_gap_mm: float = 6.0,
    body_hu: float = -500.0,
    seed: int = 0,
) -> NeedleDetection:
    """Find the needles on a CT as straight metal tracks (see the module docstring), in the CT's frame.

    Parameters
    ----------
    ct : CTImage
        The intra-operative CT.
    region_mm : (lower, upper), optional
        Search only this axis-aligned box (LPS mm of ``ct``); it must include the skin where the needles
        enter.  Default the whole CT.
    metal_hu : float
        Metal threshold.
    min_length_mm : float
        Shorter tracks are not needles.
    inlier_mm : float
        Largest distance of a needle's voxel centre from its line.
    max_gap_mm : float
        Largest gap along a needle (partial volume of an oblique needle in thick slices).
    body_hu : float
        Patient outline threshold (:func:`seedplan.imaging.body_outline`).
    seed : int
        RANSAC random seed (the result is deterministic).

    Raises
    ------
    InputError
        No needle visible (no metal track of ``min_length_mm``), bad arguments.
    GeometryError
        ``region_mm`` outside the CT.
    """
    from scipy import ndimage

    from ..imaging.anatomy import body_outline

    fr.check_ct(ct, "ct")
    metal_hu = v.number(metal_hu, "metal_hu")
    min_length_mm = v.number(min_length_mm, "min_length_mm", lo=1.0)
    inlier_mm = v.number(inlier_mm, "inlier_mm", lo=0.1, hi=20.0)
    max_gap_mm = v.number(max_gap_mm, "max_gap_mm", lo=0.0)
    body_hu = v.number(body_hu, "body_hu")
    g = ct.grid
    if region_mm is not None:
        try:
            lo, hi = (np.array(v.vector(p, "region_mm bound")) for p in region_mm)
        except (TypeError, ValueError):
            raise InputError("region_mm must be (lower, upper): two points of 3 numbers (mm)") from None
        try:
            sub, sl = fr.crop_grid(g, np.minimum(lo, hi), np.maximum(lo, hi))
        except GeometryError:
            raise GeometryError("region_mm lies outside the CT") from None
    else:
        sub, sl = g, (slice(None),) * 3
    hu = np.asarray(ct.hu[sl], dtype=np.float32)
    metal = hu >= metal_hu
    if not metal.any():
        raise InputError(f"no needle visible: no voxel of the CT{' region' if region_mm is not None else ''} reaches "
                         f"metal_hu={metal_hu:g} HU (its maximum is {float(hu.max()):.0f} HU); is this the CT with "
                         "the needles in place?")
    body = body_outline(CTImage(sub, hu), threshold_hu=body_hu, opening_mm=3.0).mask
    sp = np.asarray(sub.spacing_mm)[::-1]
    depth = ndimage.distance_transform_edt(body, sampling=sp)
    rng = np.random.default_rng(seed)
    lab, n = ndimage.label(metal, structure=np.ones((3, 3, 3), bool))
    objects = ndimage.find_objects(lab)
    hmax = float(hu.max())
    vv = sub.voxel_volume_mm3
    found: list[DetectedNeedle] = []
    tracks: list[tuple] = []
    warnings: list[str] = []
    min_points = max(5, int(min_length_mm / max(sp) / 2))
    for label in range(1, n + 1):
        box = objects[label - 1]
        m = lab[box] == label
        idx = np.argwhere(m) + np.array([s.start for s in box])
        if len(idx) < min_points:
            continue
        pts = fr.world_of_indices(sub, idx)
        if np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)) < min_length_mm:
            continue
        wts = np.clip(hu[tuple(idx.T)], metal_hu, hmax) - metal_hu + 1.0
        remaining = np.ones(len(pts), bool)
        failures = 0
        segments: list[tuple[np.ndarray, np.ndarray]] = []  # (inlier indices into pts, unused)
        while remaining.sum() >= min_points and failures < 5 and len(segments) < 50:
            ridx = np.nonzero(remaining)[0]
            p, w = pts[ridx], wts[ridx]
            best = _ransac_line(p, inlier_mm, min(10.0, min_length_mm), rng)
            if best is None:
                break
            c, u = best
            for _ in range(3):  # refit on the inliers
                inl = _dist_to_line(p, c, u) <= inlier_mm
                if inl.sum() < 2:
                    break
                c, u = _line_fit(p[inl], w[inl])
            inl = _dist_to_line(p, c, u) <= inlier_mm
            t = (p - c) @ u
            run = np.zeros(len(p), bool)
            if inl.any():
                run[np.nonzero(inl)[0][_longest_run(t[inl], max_gap_mm)]] = True
            span = float(t[run].max() - t[run].min()) if run.any() else 0.0
            if span < min_length_mm or run.sum() < min_points:
                failures += 1
                continue
            failures = 0
            c, u = _line_fit(p[run], w[run])
            t = (p - c) @ u
            t0, t1 = float(t[run].min()), float(t[run].max())
            # remove this needle's voxels (its blooming too) before looking for the next one
            gone = (_dist_to_line(p, c, u) <= inlier_mm + 1.5) & (t >= t0 - 2.0) & (t <= t1 + 2.0)
            remaining[ridx[gone]] = False
            segments.append((ridx[run], ridx[gone]))
        # a needle cut by another one crossing it comes out in collinear pieces: join them
        lines = [list(seg[0]) for seg in segments]
        merged = True
        while merged and len(lines) > 1:
            merged = False
            for a_ in range(len(lines)):
                for b_ in range(a_ + 1, len(lines)):
                    pa, pb = pts[lines[a_]], pts[lines[b_]]
                    ca, ua = _line_fit(pa, wts[lines[a_]])
                    cb, ub = _line_fit(pb, wts[lines[b_]])
                    if abs(float(ua @ ub)) < np.cos(np.radians(3.0)):
                        continue
                    if np.max(_dist_to_line(np.array([pb.min(axis=0) * 0 + cb]), ca, ua)) > inlier_mm:
                        continue
                    joint = np.concatenate([pa, pb])
                    cj, uj = _line_fit(joint, np.concatenate([wts[lines[a_]], wts[lines[b_]]]))
                    if np.sqrt(np.mean(_dist_to_line(joint, cj, uj) ** 2)) > inlier_mm:
                        continue
                    lines[a_] = lines[a_] + lines[b_]
                    del lines[b_]
                    merged = True
                    break
                if merged:
                    break
        for members in lines:
            q, wq = pts[members], wts[members]
            c, u = _line_fit(q, wq)
            t = (q - c) @ u
            t0, t1 = float(t.min()), float(t.max())
            rms = float(np.sqrt(np.mean(_dist_to_line(q, c, u) ** 2)))
            tracks.append((c, u, t0, t1, len(members), float(len(members) * vv / max(t1 - t0, 1e-6)), rms))
    for i, (c, u, t0, t1, n_vox, area, rms) in enumerate(tracks):
        others = [(o[0], o[1], o[2], o[3], np.sqrt(o[5] / np.pi)) for j, o in enumerate(tracks) if j != i]
        found.append(_needle_ends(hu, sub, depth, c, u, t0, t1, hmax, n_vox, area, rms, max_gap_mm, others, body_hu))
    if not found:
        raise InputError(f"no needle visible: no straight metal track (>= {metal_hu:g} HU) of at least "
                         f"{min_length_mm:g} mm in the CT{' region' if region_mm is not None else ''}")
    for nd in found:
        if not nd.entry_at_skin:
            warnings.append(f"a needle at ({nd.tip_mm[0]:.1f}, {nd.tip_mm[1]:.1f}, {nd.tip_mm[2]:.1f}) mm does not "
                            "leave the body in the image: its entry is its outer visible end")
    log.info("needle detection: %d needles", len(found))
    return NeedleDetection(tuple(found), metal_hu, tuple(warnings))


def _needle_ends(hu: np.ndarray, grid: Grid, depth: np.ndarray, c: np.ndarray, u: np.ndarray, t0: float, t1: float,
                 hmax: float, n_vox: int, area_mm2: float, rms: float, max_gap_mm: float = 6.0,
                 others: Sequence[tuple] = (), body_hu: float = -500.0) -> DetectedNeedle:
    from scipy import ndimage

    step = 0.2
    # beyond the voxels' run: a crossing needle may have taken some of this one's voxels
    ts = np.arange(t0 - 40.0, t1 + 40.0 + step / 2, step)
    ijk = grid.world_to_index(c + ts[:, None] * u)
    prof = ndimage.map_coordinates(hu, ijk[:, ::-1].T, order=1, mode="nearest")
    inner = (ts >= t0 + 2.0) & (ts <= t1 - 2.0)
    plateau = float(np.median(np.minimum(prof[inner], hmax))) if inner.any() else float(prof.max())
    line = c + ts[:, None] * u
    occluded = np.zeros(len(ts), bool)
    for co, uo, t0o, t1o, ro in others:  # samples inside another needle (its apparent radius + 0.5 mm)
        to = np.clip((line - co) @ uo, t0o, t1o)
        occluded |= np.linalg.norm(line - co - to[:, None] * uo, axis=1) <= ro + 0.5
    a, b = _profile_ends(prof, ts, t0, t1, plateau, min(max_gap_mm, 1.0), occluded)
    a, b = _profile_ends(prof, ts, a, b, plateau, min(max_gap_mm, 1.0), occluded)  # background beyond these ends
    pa, pb = c + a * u, c + b * u

    def sample(mask: np.ndarray, p: np.ndarray) -> float:
        k = np.rint(grid.world_to_index(p)).astype(int)
        if np.any(k < 0) or np.any(k >= np.asarray(grid.size)):
            return 0.0
        return float(mask[k[2], k[1], k[0]])

    da, db = sample(depth, pa), sample(depth, pb)
    tip, outer = (pa, pb) if da >= db else (pb, pa)
    d = (outer - tip) / np.linalg.norm(outer - tip)
    length = float(np.linalg.norm(outer - tip))
    # the skin: the outermost tissue -> air crossing (body_hu) along four lines parallel to the needle, 3.5 mm
    # beside it (clear of its bloom), averaged: the skin's position on the needle's axis
    e1 = np.cross(d, np.eye(3)[int(np.argmin(np.abs(d)))])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    ss = np.arange(0.0, length + 5.0, 0.1)
    crossings = []
    for off in (3.5 * e1, -3.5 * e1, 3.5 * e2, -3.5 * e2):
        ijk = grid.world_to_index(tip + off + ss[:, None] * d)
        # beyond the image is not air: the body may go on (a CT cropped to the region), so no skin is found there
        h = ndimage.map_coordinates(hu, ijk[:, ::-1].T, order=1, mode="constant", cval=1e6)
        tissue = h > body_hu
        leave = np.nonzero(tissue[:-1] & ~tissue[1:])[0]
        if len(leave):
            k = int(leave[-1])
            frac = (h[k] - body_hu) / (h[k] - h[k + 1]) if h[k] != h[k + 1] else 0.5
            crossings.append(ss[k] + frac * (ss[k + 1] - ss[k]))
    if len(crossings) >= 2 and np.median(crossings) < length:
        entry, at_skin = tip + float(np.median(crossings)) * d, True
    else:
        entry, at_skin = outer, False
    direction = (tip - entry) / np.linalg.norm(tip - entry)
    return DetectedNeedle(tuple(float(x) for x in entry), tuple(float(x) for x in tip),
                          tuple(float(x) for x in direction), tuple(float(x) for x in outer), bool(at_skin),
                          float(2.0 * np.sqrt(area_mm2 / np.pi)), rms, n_vox)


# ============================================================================ matching
def _planned(plan: Any) -> tuple[list[Needle], list[str]]:
    if not isinstance(plan, Plan):
        raise InputTypeError(f"plan must be a seedplan Plan (seedplan.plan.load_plan), got {type(plan).__name__}")
    needles = list(plan.needles) + list(plan.pvp_needles)
    if not needles:
        raise InputError("the plan has no needles: there is nothing to find on the intra-operative CT")
    names = [Plan.needle_name(i + 1) for i in range(len(plan.needles))] + \
        [Plan.pvp_needle_name(n, i + 1) for i, n in enumerate(plan.pvp_needles)]
    return needles, names


def match_needles(detection: NeedleDetection, plan: Plan, registration: Any, *, max_entry_mm: float = 20.0,
                  max_angle_deg: float = 15.0, max_tip_mm: float = 50.0) -> NeedleVerification:
    """Match detected needles to the planned ones (seed and vertebroplasty) in the planning frame.

    Parameters
    ----------
    detection : NeedleDetection
    plan : Plan
    registration : Registration, (4, 4) array or transform file
        Later CT -> planning frame (a failed registration raises :class:`RegistrationError`).
    max_entry_mm, max_angle_deg, max_tip_mm : float
        Pairs with entries farther apart, directions more different or tips farther apart are not matched.
        Among the others the Hungarian algorithm minimises ``entry distance + tip distance / 2 + angle (deg)``.
    """
    from scipy.optimize import linear_sum_assignment

    if not isinstance(detection, NeedleDetection):
        raise InputTypeError(f"detection must be a NeedleDetection (detect_needles), got {type(detection).__name__}")
    planned, names = _planned(plan)
    reg = as_registration(registration)
    max_entry_mm = v.number(max_entry_mm, "max_entry_mm", lo=0.0, lo_open=True)
    max_tip_mm = v.number(max_tip_mm, "max_tip_mm", lo=0.0, lo_open=True)
    max_angle_deg = v.number(max_angle_deg, "max_angle_deg", lo=0.0, lo_open=True, hi=90.0)
    det = [Needle(tuple(reg.to_planning(np.array(n.entry_mm))), tuple(reg.to_planning(np.array(n.tip_mm))))
           for n in detection.needles]
    at_skin = [n.entry_at_skin for n in detection.needles]
    tip_d = np.array([[np.linalg.norm(d.tip - p.tip) for d in det] for p in planned]).reshape(len(planned), len(det))
    ang = np.array([[np.degrees(np.arccos(np.clip(d.direction @ p.direction, -1.0, 1.0))) for d in det]
                    for p in planned]).reshape(len(planned), len(det))

    def entry_gap(p: Needle, d: Needle, at: bool) -> float:
        if at:
            return float(np.linalg.norm(d.entry - p.entry))
        q = p.entry - d.tip  # the detected needle does not reach the skin in the image: distance to its line
        return float(np.linalg.norm(q - (q @ d.direction) * d.direction))

    entry_d = np.array([[entry_gap(p, d, a) for d, a in zip(det, at_skin)] for p in planned]).reshape(len(planned),
                                                                                                   len(det))
    # a needle is known by where it enters and where it points; its depth is what went wrong most
    ok = (entry_d <= max_entry_mm) & (ang <= max_angle_deg) & (tip_d <= max_tip_mm)
    cost = np.where(ok, entry_d + 0.5 * tip_d + ang, 1e6)
    deviations: list[NeedleDeviation] = []
    if len(det):
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols):
            if not ok[r, c]:
                continue
            p, d = planned[r], det[c]
            delta = d.tip - p.tip
            along = float(delta @ p.direction)
            across = float(np.linalg.norm(delta - along * p.direction))
            actual = Needle(d.entry_mm, d.tip_mm, p.kind, names[r], p.target)
            deviations.append(NeedleDeviation(
                planned=int(r), name=names[r], kind=p.kind, detected=int(c), actual=actual,
                tip_error_mm=float(tip_d[r, c]),
                entry_error_mm=float(np.linalg.norm(d.entry - p.entry)) if at_skin[c] else None,
                angle_deg=float(ang[r, c]),
                depth_error_mm=float(d.depth_mm - p.depth_mm) if at_skin[c] else None,
                tip_along_mm=along, tip_across_mm=across))
    deviations.sort(key=lambda d: d.planned)
    mp = {d.planned for d in deviations}
    md = {d.detected for d in deviations}
    unmatched_p = tuple(i for i in range(len(planned)) if i not in mp)
    unmatched_d = tuple(j for j in range(len(det)) if j not in md)
    warnings = list(detection.warnings)
    if unmatched_p:
        warnings.append("no needle found for " + ", ".join(names[i] for i in unmatched_p)
                        + f" (entry within {max_entry_mm:g} mm, direction within {max_angle_deg:g} deg)")
    if unmatched_d:
        warnings.append(f"{len(unmatched_d)} needle(s) on the CT match no planned needle")
    return NeedleVerification(detection, reg, tuple(deviations), unmatched_p, unmatched_d, tuple(names), tuple(det),
                              tuple(warnings))


def verify_needles(intraop_ct: CTImage, plan: Plan, registration: Any, *, margin_mm: float = 30.0,
                   max_entry_mm: float = 20.0, max_angle_deg: float = 15.0, max_tip_mm: float = 50.0,
                   **detect: Any) -> NeedleVerification:
    """Find the needles on the intra-operative CT around the planned ones and match them to the plan.

    Parameters
    ----------
    intraop_ct : CTImage
    plan : Plan
        Must have needles.
    registration : Registration, (4, 4) array or transform file
        Intra-op CT -> planning frame (:func:`~seedplan.verification.register_ct`).
    margin_mm : float
        Search the box around the planned needles (mapped to the CT) enlarged by this margin.
    max_entry_mm, max_angle_deg, max_tip_mm : float
        Matching gates (:func:`match_needles`).
    **detect
        Passed to :func:`detect_needles`.

    Raises
    ------
    InputError
        A plan without needles, no needle visible.
    GeometryError
        The CT does not contain the planned needles' tips (wrong CT or wrong transform).
    RegistrationError
        The registration failed its check.
    """
    fr.check_ct(intraop_ct, "intraop_ct")
    planned, _ = _planned(plan)
    reg = as_registration(registration)
    margin_mm = v.number(margin_mm, "margin_mm", lo=0.0)
    ends = reg.to_later(np.array([p for n in planned for p in (n.entry, n.tip)]))
    tips = ends[1::2]
    if not intraop_ct.grid.contains(tips).any():
        c = tips.mean(axis=0)
        raise GeometryError(f"the intra-operative CT does not contain the planned needle tips (centre ({c[0]:.0f}, "
                            f"{c[1]:.0f}, {c[2]:.0f}) mm after the registration): is it this patient's CT of the "
                            "treated level, with the right transform?")
    lo, hi = ends.min(axis=0) - margin_mm, ends.max(axis=0) + margin_mm
    detection = detect_needles(intraop_ct, region_mm=(lo, hi), **detect)
    return match_needles(detection, plan, reg, max_entry_mm=max_entry_mm, max_angle_deg=max_angle_deg,
                         max_tip_mm=max_tip_mm)
