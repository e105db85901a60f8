"""Seeds on the post-operative CT: detection, splitting of touching seeds, and matching to the plan.

Detection (:func:`detect_seeds`), in the later CT's own frame:

1. **local background**: a grey opening of the HU with a box of
   ``background_mm`` (separable minimum then maximum filters) removes every
   bright detail thinner than the box - seeds, 0.8 mm wide and blooming to
   about 2-3 mm - and keeps bulky bone and cement.  With ``background_hu``
   (:func:`verify_seeds` passes the planning CT resampled through the
   registration) the background is the larger of the two, which keeps thin
   cortical bone, removed by the opening, out of the seeds.  The *excess* is
   the HU minus the background;
2. **seed voxels**: excess >= ``excess_hu`` within ``halo_mm`` of a voxel at
   or above ``metal_hu`` (a seed saturates the scanner; cement and bone do
   not); connected components (26 neighbours).  Because the threshold is on
   the excess, a seed in cement (1500-2000 HU) gives about the same blob as
   a seed in soft tissue, as long as ``background + excess_hu`` stays below
   the scanner's maximum;
3. **seeds per blob**: the single-seed blob volume is taken from the data
   (the median blob volume, refined on the blobs below 1.5 times it) unless
   ``single_seed_volume_mm3`` is given; a blob holds ``round(volume /
   single)`` seeds; an ambiguous blob (1.25-2.6 seeds' volume) holds two only
   when the two-seed model fit explains it clearly better than one (cost
   below :data:`TWO_SEED_COST_RATIO` of the one-seed fit's) and each of the
   two takes at least 0.6 of a seed's blob volume; with an
   ``expected_count`` the ambiguous blobs are rounded towards that count
   instead;
4. **splitting**: a blob of n seeds is split by k-segments clustering (each
   seed a segment of the capsule's length; voxels assigned to the nearest
   segment, segments refitted by weighted principal components; several
   starts, the lowest weighted squared distance wins);
5. **centre and axis**: the excess-weighted centroid of the seed's voxels and
   the principal axis of their weighted covariance (principal components).
   On 1 mm voxels a saturated seed blob is 20-30 voxels and its principal
   axis is off by up to about 15-20 deg, so with ``refine`` (default) the
   principal-component pose starts a least-squares fit of an imaging model
   to the blob's voxels and two voxels around it: the marker as a line
   segment blurred by an isotropic Gaussian, averaged over each voxel's box,
   added to the background and clipped at the scanner's maximum (soft-L1
   loss against streaks); two seeds in one blob are also fitted from
   end-to-end, side-by-side and crossing starts.  The fit is kept when it
   lowers the cost and moves no centre more than 1.5 mm.

Matching (:func:`match_seeds`): the detected seeds are mapped to the
planning frame by the registration and assigned to the planned seeds by the
Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on their
distances; pairs farther than ``max_distance_mm`` are not matched.  A planned
seed without a partner is *missing*, a detected seed without one is *extra*
(a migrated seed, or a seed the plan did not have).  The median displacement
of each needle's matched seeds is reported too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .. import _validate as v
from ..errors import GeometryError, InputError, InputTypeError
from ..imaging.ct import CTImage
from ..plan import Plan
from . import _frames as fr
from .registration import Registration, as_registration

__all__ = ["DetectedSeed", "SeedDetection", "SeedPair", "SeedVerification", "detect_seeds", "match_seeds",
           "verify_seeds"]

log = logging.getLogger("seedplan")

#: A blob whose volume is ambiguous (1.25-2.6 seeds) holds two seeds when the two-seed model fit's cost is
#: below this fraction of the one-seed fit's.
TWO_SEED_COST_RATIO = 0.6

#: Geometric starts (of :func:`_pair_starts`, the best by their starting cost) fitted for a blob of two seeds.
PAIR_STARTS_FITTED = 4

#: 6711-type capsule (mm), used when no seed model is given.
CAPSULE_LENGTH_MM = 4.5
CAPSULE_DIAMETER_MM = 0.8


@dataclass(frozen=True)
class DetectedSeed:
    """One seed found on the later CT (its own LPS frame).

    Attributes
    ----------
    position_mm : tuple of 3 floats
        Centre (excess-weighted centroid).
    axis : tuple of 3 floats
        Unit principal axis (sign: z >= 0, then y >= 0, then x >= 0).
    volume_mm3 : float
        Volume of its voxels (excess >= the threshold).
    cluster_size : int
        Number of seeds in its connected component (1 = a lone seed).
    peak_hu : float
        Largest HU among its voxels.
    elongation : float
        Ratio of the standard deviations along the first and second principal axes of the blob.
    method : {"pca", "fit"}
        ``"fit"`` when the model fit refined the principal-component pose.
    """

    position_mm: tuple[float, float, float]
    axis: tuple[float, float, float]
    volume_mm3: float
    cluster_size: int
    peak_hu: float
    elongation: float
    method: str = "pca"


@dataclass(frozen=True, eq=False)
class SeedDetection:
    """The seeds found on a CT, in that CT's frame, and how they were found."""

    seeds: tuple[DetectedSeed, ...]
    single_seed_volume_mm3: float
    n_components: int
    metal_hu: float
    excess_hu: float
    background_mm: float
    expected_count: int | None = None
    warnings: tuple[str, ...] = ()

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def positions_mm(self) -> np.ndarray:
        """Centres, (N, 3) mm, in the CT's frame."""
        return np.array([s.position_mm for s in self.seeds], float).reshape(-1, 3)

    @property
    def axes(self) -> np.ndarray:
        """Unit axes, (N, 3), in the CT's frame."""
        return np.array([s.axis for s in self.seeds], float).reshape(-1, 3)


@dataclass(frozen=True)
class SeedPair:
    """A planned seed and the detected seed matched to it (planning frame).

    ``planned`` and ``detected`` are 0-based indices into ``plan.seeds`` and the detection's seeds.
    ``displacement_mm`` is detected minus planned; ``axis_angle_deg`` the angle between the axes (0-90).
    """

    planned: int
    detected: int
    distance_mm: float
    displacement_mm: tuple[float, float, float]
    axis_angle_deg: float


@dataclass(frozen=True, eq=False)
class SeedVerification:
    """Detected seeds matched to the plan, in the planning frame.

    Attributes
    ----------
    detection : SeedDetection
        What was found (later CT frame).
    registration : Registration
    positions_mm, axes : (N, 3) ndarray
        The detected seeds in the planning frame (read-only).
    pairs : tuple of SeedPair
    missing : tuple of int
        Planned seeds (0-based) with no detected seed within ``max_distance_mm``.
    extra : tuple of int
        Detected seeds (0-based) matched to no planned seed.
    max_distance_mm : float
    warnings : tuple of str
    needle_shifts_mm : mapping
        Needle number (1-based) -> the median displacement of its matched seeds (planning frame): how far the
        seeds of each needle went together.
    """

    detection: SeedDetection
    registration: Registration
    positions_mm: np.ndarray
    axes: np.ndarray
    pairs: tuple[SeedPair, ...]
    missing: tuple[int, ...]
    extra: tuple[int, ...]
    n_planned: int
    max_distance_mm: float
    warnings: tuple[str, ...] = field(default=())
    needle_shifts_mm: Mapping[int, tuple[float, float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "needle_shifts_mm", dict(self.needle_shifts_mm))
        for k in ("positions_mm", "axes"):
            a = np.array(getattr(self, k), float).reshape(-1, 3)
            a.setflags(write=False)
            object.__setattr__(self, k, a)

    @property
    def n_detected(self) -> int:
        return int(len(self.positions_mm))

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures: counts, distances (mean, max), axis angles and the lists."""
        d = np.array([p.distance_mm for p in self.pairs])
        a = np.array([p.axis_angle_deg for p in self.pairs])
        return {
            "planned": self.n_planned,
            "detected": self.n_detected,
            "matched": len(self.pairs),
            "missing": [i + 1 for i in self.missing],
            "extra": [i + 1 for i in self.extra],
            "mean_distance_mm": round(float(d.mean()), 3) if len(d) else None,
            "max_distance_mm": round(float(d.max()), 3) if len(d) else None,
            "mean_axis_angle_deg": round(float(a.mean()), 2) if len(a) else None,
            "max_match_distance_mm": self.max_distance_mm,
            "pairs": [{"planned": p.planned + 1, "detected": p.detected + 1, "distance_mm": round(p.distance_mm, 3),
                       "axis_angle_deg": round(p.axis_angle_deg, 2)}
                      for p in self.pairs],
            "needle_shifts_mm": {Plan.needle_name(k): [round(x, 2) for x in v_] for k, v_ in
                                 sorted(self.needle_shifts_mm.items())},
            "warnings": list(self.warnings),
        }


# ============================================================================ helpers
def _orient(axis: np.ndarray) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    for k in (2, 1, 0):
        if abs(a[k]) > 1e-9:
            return a if a[k] > 0 else -a
    return a


def _pca(points: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weighted centroid, eigenvalues descending, eigenvectors as columns)."""
    ws = w / w.sum()
    c = ws @ points
    q = points - c
    cov = (q * ws[:, None]).T @ q
    val, vec = np.linalg.eigh(cov)
    return c, val[::-1], vec[:, ::-1]


def _segment_d2(points: np.ndarray, c: np.ndarray, u: np.ndarray, half: float) -> np.ndarray:
    t = np.clip((points - c) @ u, -half, half)
    r = points - c - t[:, None] * u
    return np.einsum("ij,ij->i", r, r)


def _k_segments(points: np.ndarray, w: np.ndarray, n: int, half: float, rng: np.random.Generator,
                starts: int = 6, iterations: int = 40) -> np.ndarray:
    """Labels 0..n-1 splitting weighted points into ``n`` segments of half-length ``half``."""
    c0, _, vec = _pca(points, w)
    proj = (points - c0) @ vec[:, 0]
    inits = [np.array([points[np.argmin(np.abs(proj - q))] for q in
                       np.quantile(proj, (np.arange(n) + 0.5) / n)])]
    for _ in range(starts - 1):  # k-means++ style starts
        cs = [points[rng.choice(len(points), p=w / w.sum())]]
        for _k in range(1, n):
            d2 = np.min([np.sum((points - c) ** 2, axis=1) for c in cs], axis=0) * w
            pick = rng.choice(len(points), p=d2 / d2.sum()) if d2.sum() > 0 else rng.integers(len(points))
            cs.append(points[pick])
        inits.append(np.array(cs))
    best_cost, best = np.inf, None
    for init in inits:
        labels = np.argmin([np.sum((points - c) ** 2, axis=1) for c in init], axis=0)
        for _ in range(iterations):
            models = []
            for k in range(n):
                sel = labels == k
                if sel.sum() < 3:  # re-seed an emptied cluster at a random point
                    models.append((points[int(rng.integers(len(points)))], vec[:, 0]))
                    continue
                c, _, vk = _pca(points[sel], w[sel])
                models.append((c, vk[:, 0]))
            d2 = np.stack([_segment_d2(points, c, u, half) for c, u in models], axis=0)
            new = np.argmin(d2, axis=0)
            if np.array_equal(new, labels):
                break
            labels = new
        cost = float(np.sum(w * d2[labels, np.arange(len(points))]))
        if cost < best_cost and len(np.unique(labels)) == n:
            best_cost, best = cost, labels
    if best is None:  # pragma: no cover - every start lost a cluster: fall back to the quantile split
        best = np.minimum((np.argsort(np.argsort(proj)) * n) // len(proj), n - 1)
    return best


def _pair_starts(pts: np.ndarray, w: np.ndarray, half: float) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Initial poses of two seeds in one blob: end to end and side by side (each seed along any principal axis
    of the blob, the pair offset along another), and crossing at 20 and 40 deg in the principal planes.  (Two
    parallel seeds side by side make a blob about as wide as long: its first principal axis may be either.)"""
    c, _, vec = _pca(pts, w)
    e = [vec[:, 0], vec[:, 1], vec[:, 2]]
    d = 0.5 * (2 * half + 0.3)
    starts = []
    for i in range(3):
        starts.append([(c - d * e[i], e[i]), (c + d * e[i], e[i])])
        for j in range(3):
            if j != i:
                starts.append([(c - 1.25 * e[j], e[i]), (c + 1.25 * e[j], e[i])])
    for deg in (20.0, 40.0):
        cs, sn = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        for j in (1, 2):
            starts.append([(c - 0.3 * e[j], cs * e[0] + sn * e[j]), (c + 0.3 * e[j], cs * e[0] - sn * e[j])])
    return starts


def _blob_seeds(pts: np.ndarray, w: np.ndarray, n: int, half: float, rng: np.random.Generator,
                fitter: Any) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray], float | None]:
    """``n`` seeds in one blob: (poses (centre, axis), voxel membership per seed, model cost or None).

    The k-segments split gives principal-component poses; with a ``fitter`` they are refined, and two seeds
    are also fitted from the geometric starts of :func:`_pair_starts`, the lowest cost winning."""
    labels = np.zeros(len(pts), int) if n == 1 or len(pts) < 3 * n else _k_segments(pts, w, n, half, rng)
    poses = []
    for j in range(int(labels.max()) + 1):
        sel = labels == j
        if sel.sum() >= 2:
            c, _, vec = _pca(pts[sel], w[sel])
            poses.append((c, vec[:, 0]))
    best, best_cost = poses, None
    if fitter is not None and poses:
        starts = [poses]
        if n == 2:  # the k-segments split and the geometric starts that already explain the blob best
            extra = _pair_starts(pts, w, half)
            scores = [fitter(st, evaluate=True) for st in extra]
            starts += [extra[i] for i in np.argsort(scores)[:PAIR_STARTS_FITTED]]
        for start in starts:
            out = fitter(start)
            if out is not None and (best_cost is None or out[1] < best_cost):
                best, best_cost = out
    if len(best) == 1:
        members = [np.ones(len(pts), bool)]
    else:
        d2 = np.stack([_segment_d2(pts, c, u, half) for c, u in best], axis=0)
        nearest = np.argmin(d2, axis=0)
        members = [nearest == j for j in range(len(best))]
    return best, members, best_cost


def _single_volume(volumes: np.ndarray) -> float:
    """The volume of a lone seed's blob: the median, refined on the blobs below 1.5 times it."""
    s = float(np.median(volumes))
    for _ in range(3):
        small = volumes[volumes < 1.5 * s]
        if not len(small):
            break
        s = float(np.median(small))
    return s


def _counts(ratios: np.ndarray, expected: int | None) -> tuple[np.ndarray, list[str]]:
    n = np.maximum(np.rint(ratios).astype(int), 1)
    notes: list[str] = []
    if expected is None:
        return n, notes
    while n.sum() < expected:
        gain = ratios - n  # > 0: bigger than its count
        k = int(np.argmax(gain))
        if gain[k] < 0.25:
            break
        n[k] += 1
    while n.sum() > expected:
        loss = np.where(n > 1, n - ratios, -np.inf)
        k = int(np.argmax(loss))
        if loss[k] < 0.25:
            break
        n[k] -= 1
    if n.sum() != expected:
        notes.append(f"{int(n.sum())} seeds found where {expected} were expected (the blob volumes do not support "
                     f"{'more' if n.sum() < expected else 'fewer'})")
    return n, notes


# ============================================================================ pose refinement
#: Points along a seed's marker used to integrate the line model.
_LINE_POINTS = 6


def _unit(theta: float, phi: float) -> np.ndarray:
    return np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])


def _line_model(x: np.ndarray, q: np.ndarray, bg: np.ndarray, hmax: float, half_vox: np.ndarray) -> np.ndarray:
    """HU of ``k`` seeds (8 parameters each: centre, polar and azimuthal angle, line density, blur, length) at
    voxels ``q`` (grid-aligned mm): each a line segment blurred by an isotropic Gaussian and averaged over the
    voxel box, added to the background and clipped at the scanner's maximum."""
    from scipy.special import ndtr

    total = np.zeros(len(q))
    frac = (np.arange(_LINE_POINTS) + 0.5) / _LINE_POINTS - 0.5
    for p in x.reshape(-1, 8):
        u = _unit(p[3], p[4])
        pts = p[:3] + (frac * p[7])[:, None] * u
        d = q[:, None, :] - pts[None]
        box = np.prod(ndtr((d + half_vox) / p[6]) - ndtr((d - half_vox) / p[6]), axis=2)
        total += p[5] * box.sum(axis=1) * (p[7] / _LINE_POINTS) / np.prod(2 * half_vox)
    return np.minimum(bg + total, hmax)


def _refine(q: np.ndarray, hu: np.ndarray, bg: np.ndarray, hmax: float, half_vox: np.ndarray,
            poses: list[tuple[np.ndarray, np.ndarray]], length_mm: float, evaluate: bool = False) -> Any:
    """Least-squares fit of the line model to the voxels of one blob, from the principal-component poses
    (grid-aligned mm): (fitted poses, robust cost), or None when the fit fails or does not improve on them.
    With ``evaluate``, only the robust cost of the starting poses (for choosing starts)."""
    from scipy.optimize import least_squares

    x0, lo, hi, scale = [], [], [], []
    for c, u in poses:
        th, ph = float(np.arccos(np.clip(u[2], -1, 1))), float(np.arctan2(u[1], u[0]))
        x0 += [*c, th, ph, 3.0e4, 0.6, 0.7 * length_mm]
        lo += [*(c - 2.0), -np.inf, -np.inf, 1.0e2, 0.15, 0.3]
        hi += [*(c + 2.0), np.inf, np.inf, 1.0e7, 2.5, length_mm + 1.0]
        scale += [0.5, 0.5, 0.5, 0.1, 0.1, 1.0e4, 0.1, 0.5]
    x0 = np.clip(np.array(x0), np.array(lo) + 1e-9, np.array(hi) - 1e-9)
    if evaluate:
        r_start = (_line_model(x0, q, bg, hmax, half_vox) - hu) / 100.0
        return float(np.sum(4.0 * (np.sqrt(1.0 + (r_start / 2.0) ** 2) - 1.0)))

    def residual(x: np.ndarray) -> np.ndarray:
        return (_line_model(x, q, bg, hmax, half_vox) - hu) / 100.0

    def robust_cost(r: np.ndarray) -> float:  # least_squares' soft_l1 cost with f_scale 2
        return float(np.sum(4.0 * (np.sqrt(1.0 + (r / 2.0) ** 2) - 1.0)))


    try:
        r = least_squares(residual, x0, bounds=(lo, hi), loss="soft_l1", f_scale=2.0, x_scale=np.array(scale),
                          max_nfev=60 * len(poses), tr_solver="lsmr")
    except (ValueError, np.linalg.LinAlgError):  # pragma: no cover - degenerate patch
        return None
    if r.status < 0:  # pragma: no cover
        return None
    cost0 = robust_cost(residual(x0))
    log.debug("refine: %d seeds, cost %.1f -> %.1f, moved %s", len(poses), cost0, r.cost,
              [round(float(np.linalg.norm(p[:3] - c)), 2) for p, (c, _) in zip(r.x.reshape(-1, 8), poses)])
    if not np.isfinite(r.cost) or r.cost >= cost0:
        return None
    out = []
    for p, (c, _) in zip(r.x.reshape(-1, 8), poses):
        if np.linalg.norm(p[:3] - c) > 1.5:
            return None
        out.append((p[:3].copy(), _unit(p[3], p[4])))
    return out, float(r.cost)


# ============================================================================ detection
def detect_seeds(
    ct: CTImage,
    *,
    region_mm: Sequence[Any] | None = None,
    expected_count: int | None = None,
    metal_hu: float = 2500.0,
    excess_hu: float = 1000.0,
    background_mm: float = 7.0,
    halo_mm: float = 1.5,
    capsule_length_mm: float = CAPSULE_LENGTH_MM,
    single_seed_volume_mm3: float | None = None,
    min_volume_fraction: float = 0.3,
    refine: bool = True,
    background_hu: np.ndarray | None = None,
    seed: int = 0,
) -> SeedDetection:
    """Find the seeds on a CT (see the module docstring), in the CT's own frame.

    Parameters
    ----------
    ct : CTImage
        The post-operative CT.
    region_mm : (lower, upper), optional
        Search only this axis-aligned box (LPS mm of ``ct``); default the whole CT.
    expected_count : int, optional
        Seeds known to be there (counted in the room): used to round ambiguous clusters.
    metal_hu : float
        A seed's blob must reach this HU (seeds saturate the scanner; cement and bone stay below).
    excess_hu : float
        Threshold on the HU above the local background that outlines a seed.
    background_mm : float
        Width of the box of the grey opening (wider than a seed's blob, narrower than the cement).
    halo_mm : float
        A seed's blob reaches at most this far from its voxels at or above ``metal_hu``.
    capsule_length_mm : float
        Capsule length (the split model's segment).
    single_seed_volume_mm3 : float, optional
        Blob volume of one seed; default estimated from the data.
    min_volume_fraction : float
        Blobs smaller than this fraction of one seed are dropped (noise, streak crossings).
    refine : bool
        Refine each principal-component pose by the model fit (see the module docstring).
    background_hu : array ``ct.grid.shape``, optional
        What the CT shows without the seeds, e.g. the planning CT resampled onto it (:func:`verify_seeds` does
        this when given the planning CT): the local background is the larger of it and the grey opening, so a
        seed against thin cortical bone (which the opening removes) is outlined and fitted correctly.
    seed : int
        Random seed of the split's extra starts (the result is deterministic).

    Returns
    -------
    SeedDetection

    Raises
    ------
    InputError
        No seed visible (no voxel reaches ``metal_hu`` with the required excess), bad arguments.
    GeometryError
        ``region_mm`` outside the CT.
    """
    fr.check_ct(ct, "ct")
    metal_hu = v.number(metal_hu, "metal_hu")
    excess_hu = v.number(excess_hu, "excess_hu", lo=0.0, lo_open=True)
    background_mm = v.number(background_mm, "background_mm", lo=1.0, hi=50.0)
    halo_mm = v.number(halo_mm, "halo_mm", lo=0.0, hi=10.0)
    capsule_length_mm = v.number(capsule_length_mm, "capsule_length_mm", lo=0.5, hi=20.0)
    min_volume_fraction = v.number(min_volume_fraction, "min_volume_fraction", lo=0.0, hi=1.0)
    refine = v.flag(refine, "refine")
    if expected_count is not None:
        expected_count = v.integer(expected_count, "expected_count", lo=1)
    if single_seed_volume_mm3 is not None:
        single_seed_volume_mm3 = v.number(single_seed_volume_mm3, "single_seed_volume_mm3", lo=0.0, lo_open=True)
    from scipy import ndimage

    g = ct.grid
    if region_mm is not None:
        try:
            lo, hi = (np.array(v.vector(p, "region_mm bound")) for p in region_mm)
        except (TypeError, ValueError):
            raise InputError("region_mm must be (lower, upper): two points of 3 numbers (mm)") from None
        try:
            sub, sl = fr.crop_grid(g, np.minimum(lo, hi), np.maximum(lo, hi))
        except GeometryError:
            raise GeometryError(f"region_mm {np.round(lo, 1).tolist()} - {np.round(hi, 1).tolist()} lies outside the "
                                "CT") from None
    else:
        sub, sl = g, (slice(None),) * 3
    hu = np.asarray(ct.hu[sl], dtype=np.float32)
    if not (hu >= metal_hu).any():
        raise InputError(f"no seed visible: no voxel of the CT{' region' if region_mm is not None else ''} reaches "
                         f"metal_hu={metal_hu:g} HU (its maximum is {float(hu.max()):.0f} HU); is this the "
                         "post-implant CT, and does it cover the implant?")
    sp = np.asarray(sub.spacing_mm)[::-1]
    bg = fr.grey_opening(hu, fr.box_size(background_mm, sp))
    if background_hu is not None:
        extra = np.asarray(background_hu)
        if extra.shape != g.shape:
            raise GeometryError(f"background_hu has shape {extra.shape}, the CT {g.shape} (z, y, x)")
        bg = np.maximum(bg, np.asarray(extra[sl], dtype=np.float32))
    excess = hu - bg
    core = hu >= metal_hu
    # a seed's blob is its saturated core and the bloom around it: bright bone or cement edges farther from a
    # metal core than halo_mm (thin cortex, corners the opening cut) never join it
    near = fr.dilate(core, halo_mm, sp)
    blob = (excess >= excess_hu) & near
    lab, n = ndimage.label(blob, structure=np.ones((3, 3, 3), bool))
    peaks = ndimage.maximum(hu, lab, index=np.arange(1, n + 1)) if n else np.zeros(0)
    keep = np.nonzero(peaks >= metal_hu)[0] + 1
    if not len(keep):
        raise InputError(f"no seed visible: the bright voxels (>= {metal_hu:g} HU) are not small bright objects "
                         f"standing {excess_hu:g} HU above their surroundings (cement or bone?)")
    vv = sub.voxel_volume_mm3
    counts = np.bincount(lab.ravel(), minlength=n + 1)
    volumes = counts[keep] * vv
    single = single_seed_volume_mm3 if single_seed_volume_mm3 is not None else _single_volume(volumes)
    big = volumes >= min_volume_fraction * single
    dropped = int((~big).sum())
    keep, volumes = keep[big], volumes[big]
    ratios = volumes / single
    nseeds, notes = _counts(ratios, expected_count)
    if dropped:
        notes.append(f"{dropped} bright blob(s) smaller than {min_volume_fraction:g} of a seed ignored")
    sat = float(hu.max())
    if float(np.median(bg[hu >= metal_hu])) + excess_hu >= sat:
        notes.append("seeds lie in material so bright that they barely stand out of it (background + excess_hu "
                     "reaches the scanner's maximum): seeds inside radiopaque cement may be missed")

    rng = np.random.default_rng(seed)
    objects = ndimage.find_objects(lab)
    half = capsule_length_mm / 2
    hmax = float(hu.max())
    if int((hu >= hmax - 0.5).sum()) < 3:  # no plateau: the scanner did not clip
        hmax = np.inf
    half_vox = np.asarray(sub.spacing_mm, float) / 2
    shape = np.asarray(lab.shape)
    found: list[DetectedSeed] = []
    n_refined = 0
    dmat = sub.direction_matrix
    origin = np.asarray(sub.origin_mm)
    spacing = np.asarray(sub.spacing_mm)
    for label, ratio, k in zip(keep, ratios, nseeds):
        box = objects[label - 1]
        m = lab[box] == label
        off = np.array([s_.start for s_ in box])
        pts = fr.world_of_indices(sub, np.argwhere(m) + off)
        w = np.maximum(excess[box][m].astype(float), 1e-3)
        peak = hu[box][m]
        fitter = None
        if refine:
            # the blob and two voxels around it (not other blobs, not bright edges away from the metal), in
            # grid-aligned mm (index * spacing)
            a0 = np.maximum(off - 2, 0)
            a1 = np.minimum(np.array([s_.stop for s_ in box]) + 2, shape)
            pbox = tuple(slice(p, q) for p, q in zip(a0, a1))
            own = lab[pbox] == label
            patch = ndimage.binary_dilation(own, structure=np.ones((3, 3, 3), bool), iterations=2) & \
                ((lab[pbox] == 0) | own) & ~((excess[pbox] > 0.3 * excess_hu) & ~near[pbox])
            q = (np.argwhere(patch) + a0)[:, ::-1] * spacing
            hu_p, bg_p = hu[pbox][patch].astype(float), bg[pbox][patch].astype(float)

            def fitter(poses: list, q=q, hu_p=hu_p, bg_p=bg_p, evaluate: bool = False) -> Any:
                init = [((c - origin) @ dmat, dmat.T @ u) for c, u in poses]
                out = _refine(q, hu_p, bg_p, hmax, half_vox, init, capsule_length_mm, evaluate=evaluate)
                if evaluate:
                    return out
                return None if out is None else ([(origin + dmat @ c, dmat @ u) for c, u in out[0]], out[1])

        counts = [int(k)]
        if fitter is not None and expected_count is None and 1.25 <= ratio < 2.6:
            counts = [1, 2]  # ambiguous volume: the model fit chooses
        options = [_blob_seeds(pts, w, n_try, half, rng, fitter) for n_try in counts]
        chosen = options[0]
        if len(options) == 2:
            one, two = options
            if one[2] is not None and two[2] is not None:
                # two seeds only when they explain the blob clearly better than one, and each is a seed's worth
                # of the blob (a split-off sliver is a mismatch of the model, not a second seed)
                big_enough = len(two[0]) == 2 and min(int(m_.sum()) for m_ in two[1]) * vv >= 0.6 * single
                chosen = two if big_enough and two[2] < TWO_SEED_COST_RATIO * one[2] else one
                log.debug("seed blob of %.2f seeds' volume: model cost %.1f (one seed) vs %.1f (two)", ratio,
                          one[2], two[2])
            else:
                chosen = options[counts.index(int(k))]
        poses, members, cost = chosen
        method = "pca" if cost is None else "fit"
        if cost is not None:
            n_refined += len(poses)
        for (c, u), sel in zip(poses, members):
            _, val, _ = _pca(pts[sel], w[sel]) if sel.sum() >= 2 else (None, np.ones(3), None)
            found.append(DetectedSeed(tuple(float(x) for x in c), tuple(float(x) for x in _orient(u)),
                                      float(sel.sum() * vv), len(poses), float(peak[sel].max()) if sel.any() else 0.0,
                                      float(np.sqrt(val[0] / max(val[1], 1e-9))), method))
    found.sort(key=lambda s: (round(s.position_mm[2], 3), round(s.position_mm[1], 3), round(s.position_mm[0], 3)))
    for note in notes:
        log.warning("seed detection: %s", note)
    log.info("seed detection: %d seeds in %d blobs (single-seed blob %.1f mm3), %d poses refined by the model fit",
             len(found), len(keep), single, n_refined)
    return SeedDetection(tuple(found), float(single), int(len(keep)), metal_hu, excess_hu, background_mm,
                         expected_count, tuple(notes))


# ============================================================================ matching
def _check_plan(plan: Any) -> Plan:
    if not isinstance(plan, Plan):
        raise InputTypeError(f"plan must be a seedplan Plan (seedplan.plan.load_plan), got {type(plan).__name__}")
    if not plan.seeds:
        raise InputError("the plan has no seeds: there is nothing to verify on the post-operative CT")
    return plan


def match_seeds(detection: SeedDetection, plan: Plan, registration: Any, *,
                max_distance_mm: float = 10.0) -> SeedVerification:
    """Match detected seeds to the planned ones in the planning frame (Hungarian assignment on distance).

    Parameters
    ----------
    detection : SeedDetection
        Seeds found on the later CT (its frame).
    plan : Plan
    registration : Registration, (4, 4) array or transform file
        Later CT -> planning frame (a failed registration raises :class:`RegistrationError`).
    max_distance_mm : float
        Pairs farther apart are not matched.  Compare with the plan the seeds were released on (the re-plan on
        the needles actually placed): against a plan whose needles went elsewhere, seeds several millimetres
        off are expected and may exceed the gate.

    Returns
    -------
    SeedVerification
    """
    from scipy.optimize import linear_sum_assignment

    if not isinstance(detection, SeedDetection):
        raise InputTypeError(f"detection must be a SeedDetection (detect_seeds), got {type(detection).__name__}")
    _check_plan(plan)
    reg = as_registration(registration)
    max_distance_mm = v.number(max_distance_mm, "max_distance_mm", lo=0.0, lo_open=True)
    pos = reg.to_planning(detection.positions_mm) if detection.n_seeds else np.zeros((0, 3))
    axes = reg.vectors_to_planning(detection.axes) if detection.n_seeds else np.zeros((0, 3))
    planned = plan.positions_mm
    needle_of = np.array([s.needle for s in plan.seeds])
    pairs: list[SeedPair] = []
    shifts: dict[int, tuple[float, float, float]] = {}

    if len(pos):
        d = np.linalg.norm(planned[:, None, :] - pos[None, :, :], axis=-1)
        rows, cols = linear_sum_assignment(np.where(d <= max_distance_mm, d, 1e6))
        for r, c in zip(rows, cols):
            if d[r, c] <= max_distance_mm:
                cosang = abs(float(np.dot(plan.axes[r], axes[c])))
                pairs.append(SeedPair(int(r), int(c), float(d[r, c]), tuple(float(x) for x in pos[c] - planned[r]),
                                      float(np.degrees(np.arccos(min(1.0, cosang))))))
        for k in np.unique(needle_of):
            moved = [pos[p.detected] - planned[p.planned] for p in pairs if needle_of[p.planned] == k]
            if moved:
                shifts[int(k)] = tuple(float(x) for x in np.median(np.array(moved), axis=0))
    pairs.sort(key=lambda p: p.planned)
    matched_p = {p.planned for p in pairs}
    matched_d = {p.detected for p in pairs}
    missing = tuple(i for i in range(len(planned)) if i not in matched_p)
    extra = tuple(j for j in range(len(pos)) if j not in matched_d)
    warnings = list(detection.warnings)
    if missing:
        warnings.append(f"{len(missing)} planned seed(s) not found within {max_distance_mm:g} mm: "
                        + ", ".join(str(i + 1) for i in missing))
    if extra:
        warnings.append(f"{len(extra)} detected seed(s) matched to no planned seed (migrated or unplanned): "
                        + "; ".join(f"({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm" for p in pos[list(extra)]))
    return SeedVerification(detection, reg, pos, axes, tuple(pairs), missing, extra, len(planned), max_distance_mm,
                            tuple(warnings), shifts)


def verify_seeds(
    post_ct: CTImage,
    plan: Plan,
    registration: Any,
    *,
    planning_ct: CTImage | None = None,
    within_mm: float = 40.0,
    expected_count: int | None = None,
    max_distance_mm: float = 10.0,
    **detect: Any,
) -> SeedVerification:
    """Find the seeds on the post-operative CT near the planned ones and match them to the plan.

    Parameters
    ----------
    post_ct : CTImage
    plan : Plan
        Must have seeds.
    registration : Registration, (4, 4) array or transform file
        Post-op CT -> planning frame (:func:`~seedplan.verification.register_ct`).
    planning_ct : CTImage, optional
        The planning CT: resampled onto the post-op CT through the registration, it is the background a seed
        stands out of (bone is there, seeds are not); recommended.
    within_mm : float
        Search the box around the planned seeds (mapped to the post-op CT) enlarged by this margin.
    expected_count : int, optional
        Seeds known to be implanted (see :func:`detect_seeds`).
    max_distance_mm : float
        Matching gate (see :func:`match_seeds`).
    **detect
        Passed to :func:`detect_seeds` (``metal_hu``, ``excess_hu``...).

    Raises
    ------
    InputError
        A plan without seeds, no seed visible.
    GeometryError
        The post-op CT does not contain the planned seeds (wrong CT or wrong transform).
    RegistrationError
        The registration failed its check.
    """
    fr.check_ct(post_ct, "post_ct")
    _check_plan(plan)
    reg = as_registration(registration)
    within_mm = v.number(within_mm, "within_mm", lo=0.0)
    later = reg.to_later(plan.positions_mm)
    inside = post_ct.grid.contains(later)
    if not inside.any():
        c = later.mean(axis=0)
        lo, hi = post_ct.grid.corners_mm().min(axis=0), post_ct.grid.corners_mm().max(axis=0)
        raise GeometryError(
            f"the post-operative CT (x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}, z {lo[2]:.0f}.."
            f"{hi[2]:.0f} mm) does not contain the planned seeds (centre ({c[0]:.0f}, {c[1]:.0f}, {c[2]:.0f}) mm "
            "after the registration): is it this patient's CT of the treated level, with the right transform?")
    lo, hi = later.min(axis=0) - within_mm, later.max(axis=0) + within_mm
    background = None
    if planning_ct is not None:
        fr.check_ct(planning_ct, "planning_ct")
        sub, sl = fr.crop_grid(post_ct.grid, lo, hi)
        background = np.full(post_ct.grid.shape, -1024.0, np.float32)
        background[sl] = fr.resample_hu(planning_ct, sub, reg.matrix, default_hu=-1024.0)
    detection = detect_seeds(post_ct, region_mm=(lo, hi), expected_count=expected_count, background_hu=background,
                             capsule_length_mm=detect.pop("capsule_length_mm",
                                                          float(plan.seed_model.capsule_length_mm)),
                             **detect)
    out = match_seeds(detection, plan, reg, max_distance_mm=max_distance_mm)
    if not inside.all():
        note = f"{int((~inside).sum())} planned seed(s) lie outside the post-operative CT"
        out = SeedVerification(out.detection, out.registration, out.positions_mm, out.axes, out.pairs, out.missing,
                               out.extra, out.n_planned, out.max_distance_mm, out.warnings + (note,))
    return out
