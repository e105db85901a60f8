"""Needle trajectory planning for CT-guided 125I seed implants and vertebroplasty.

Coordinates are DICOM patient LPS in mm (+x patient Left, +y Posterior,
+z Superior); every mask is a boolean array indexed ``[z, y, x]`` on a
:class:`~seedplan.geometry.Grid`.  The patient lies prone, so needles enter
through the posterior skin (entry ``y`` larger than tip ``y``).

Method (clinical_planning.md section 4): candidate lines are sampled over
directions (a grid of cranio-caudal tilt x in-plane angle, a few degrees
apart) and, per direction, over a lattice of parallel lines crossing the
target.  The tip is put ``tip_inset_mm`` inside the distal (deep) target edge
(first seed ~5 mm inside the distal edge, section 3); the entry is where the
line, followed back from the tip, leaves the body.  Each segment is
ray-marched through distance maps of the forbidden structures (computed once
per call with :func:`scipy.ndimage.distance_transform_edt`) and a label
field (target, bone, bone outside the allowed corridor) to test the hard
constraints; survivors are scored with

``J = w_L*depth + w_theta*angle_from_AP + w_tilt*tilt + sum_s w_d/clearance_s + w_b*bone - w_c*target_chord``

and a needle set is chosen greedily for coverage of the target by the
needle tracks, subject to the minimum needle distance.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import GeometryError, InputError, PlanningError
from ..geometry import Grid, mask_bbox
from ..plan import Needle, NeedleConstraints
from . import _raycast as rc

__all__ = [
    "access_constraints",
    "NeedleDiagnostics",
    "NeedlePlan",
    "SeedSlots",
    "candidate_slots",
    "plan_needles",
    "pvp_needle_paths",
]

_BIT_TARGET, _BIT_BONE, _BIT_BAD_BONE, _BIT_AUX = 0, 1, 2, 3

#: The steepest cranio-caudal tilt a needle to a sacral level may take: the sacrum tilts by its slope
#: (about 40 deg, Legaye J et al., Eur Spine J 1998;7:99-103) and its bodies are reached along it.
SACRAL_MAX_TILT_DEG = 45.0
#: L5 lies between the iliac crests: lateral paths are blocked low, so steeper (cranial) entries are allowed.
L5_MAX_TILT_DEG = 30.0


def access_constraints(constraints: NeedleConstraints, level: str | None, bone_access: str = "auto"
                       ) -> tuple[NeedleConstraints, str]:
    """Needle constraints for the treated level, and a one-line note of what changed ("" if nothing).

    ``bone_access`` as :attr:`seedplan.plan.PlanningOptions.bone_access`: the sacrum is reached with a
    bone drill or trocar through the dorsal sacrum, the ala or the ilium, along its slope; L5 may be
    reached with steeper needles over the iliac crests.
    """
    sacral = bool(level) and str(level).upper().startswith("S")
    drill = bone_access == "drill" or (bone_access == "auto" and sacral)
    tilt = constraints.max_axial_tilt_deg
    if sacral:
        tilt = max(tilt, SACRAL_MAX_TILT_DEG)
    elif level == "L5":
        tilt = max(tilt, L5_MAX_TILT_DEG)
    new = dataclasses.replace(constraints, allow_bone_drill=constraints.allow_bone_drill or drill,
                              max_axial_tilt_deg=tilt)
    notes = []
    if new.allow_bone_drill and not constraints.allow_bone_drill:
        notes.append("needles may cross bone with a drill or coaxial trocar "
                     + ("(the sacrum: posterior, long-axis or transiliac paths)" if sacral else "(bone_access drill)"))
    if tilt != constraints.max_axial_tilt_deg:
        notes.append(f"cranio-caudal tilt up to {tilt:g} deg at {level}")
    return new, "; ".join(notes)
_BAD_BONE_NAME = "bone (outside allowed corridor)"


# ----------------------------------------------------------------------- plan
@dataclass(frozen=True)
class NeedleDiagnostics:
    """Per-needle diagnostics of a plan.

    ``clearance_mm`` maps each forbidden structure to a lower bound of the
    distance from the needle segment to the structure's voxel centres
    (within about one voxel diagonal of the truth; distances are computed up
    to the largest margin + 25 mm and saturate there; ``inf`` for an empty
    mask).  ``bone_mm`` / ``forbidden_bone_mm`` are the lengths run in bone
    and in bone outside the allowed corridor; ``score`` is the cost J.
    """

    clearance_mm: Mapping[str, float]
    bone_mm: float
    forbidden_bone_mm: float
    target_chord_mm: float
    score: float


@dataclass(frozen=True)
class SeedSlots:
    """Candidate seed positions along needles (retraction method).

    Attributes
    ----------
    positions_mm : (M, 3) float array
    needle_index : (M,) int array
    retraction_mm : (M,) float array
        Distance from the needle tip (0 = deepest position); per needle the
        slots are ordered deepest first.
    """

    positions_mm: np.ndarray
    needle_index: np.ndarray
    retraction_mm: np.ndarray

    def __len__(self) -> int:
        return int(self.needle_index.shape[0])


@dataclass(frozen=True)
class NeedlePlan:
    """A set of needles with diagnostics.

    Attributes
    ----------
    needles : tuple of Needle
    diagnostics : tuple of NeedleDiagnostics, one per needle
    mode : str
        ``"free"``, ``"coplanar"`` or ``"pvp-transpedicular"`` / ``"pvp-parapedicular"``.
    coverage_fraction : float
        Fraction of the target points within ``coverage_radius_mm`` of a track
        (nan for PVP plans).
    n_candidates, n_feasible : int
        Candidate lines tested, and feasible ones (coplanar mode: feasible
        lines of the chosen template position).
    info : mapping
        Mode-specific data (coplanar: ``direction``, ``template_u``,
        ``template_v``, ``template_origin_mm``, ``pitch_mm``).
    """

    needles: tuple[Needle, ...]
    diagnostics: tuple[NeedleDiagnostics, ...]
    mode: str
    coverage_fraction: float
    n_candidates: int
    n_feasible: int
    info: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.needles)

    def seed_slots(
        self, grid: Grid, region_mask: np.ndarray, spacing_mm: float = 10.0, **kwargs: Any
    ) -> SeedSlots:
        """Shorthand for :func:`candidate_slots` on this plan's needles."""
        return candidate_slots(self.needles, grid, region_mask, spacing_mm, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python summary (needles, diagnostics, mode, coverage, info) for reports."""

        def plain(v: Any) -> Any:
            if isinstance(v, Mapping):
                return {str(k): plain(x) for k, x in v.items()}
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            if isinstance(v, (bool, np.bool_)):
                return bool(v)
            if isinstance(v, (np.floating, float)):
                return float(v)
            if isinstance(v, (np.integer, int)):
                return int(v)
            return v

        return {
            "mode": self.mode,
            "needles": [n.to_dict() for n in self.needles],
            "diagnostics": [
                {
                    # None: the structure's mask is empty (no clearance to speak of)
                    "clearance_mm": {k: (v if math.isfinite(v) else None) for k, v in d.clearance_mm.items()},
                    "bone_mm": d.bone_mm,
                    "forbidden_bone_mm": d.forbidden_bone_mm,
                    "target_chord_mm": d.target_chord_mm,
                    "score": d.score,
                }
                for d in self.diagnostics
            ],
            "coverage_fraction": self.coverage_fraction,
            "n_candidates": self.n_candidates,
            "n_feasible": self.n_feasible,
            "info": plain(self.info),
        }


# ---------------------------------------------------------------- utilities
def _check_mask(mask: Any, grid: Grid, name: str) -> np.ndarray:
    a = np.asarray(mask)
    if a.shape != grid.shape:
        raise GeometryError(f"mask {name!r} has shape {a.shape}, expected grid shape {grid.shape} (z, y, x)")
    if a.dtype != bool:
        raise InputError(f"mask {name!r} must be a boolean array, got dtype {a.dtype}")
    return a


def _direction(tilt_deg: np.ndarray, inplane_deg: np.ndarray) -> np.ndarray:
    """Unit entry->tip directions for prone posterior access (LPS)."""
    a = np.radians(tilt_deg)
    b = np.radians(inplane_deg)
    return np.stack([np.sin(b) * np.cos(a), -np.cos(b) * np.cos(a), np.sin(a)], axis=-1)


def _sample_directions(max_tilt: float, max_inplane: float, step: float) -> np.ndarray:
    def axis(m: float) -> np.ndarray:
        n = int(math.floor(m / step + 1e-9))
        vals = np.arange(-n, n + 1) * step
        if m - n * step > 1e-6:  # include the limit itself
            vals = np.concatenate([[-m], vals, [m]])
        return vals

    t, b = np.meshgrid(axis(max_tilt), axis(max_inplane), indexing="ij")
    t, b = t.ravel(), b.ravel()
    order = np.lexsort((np.abs(t), np.abs(b), np.hypot(t, b)))  # straight-down first
    return _direction(t[order], b[order])


def _cross(a: Any, b: Any) -> np.ndarray:
    """``np.cross`` of two 3-vectors, term for term the same float operations, without its array overhead."""
    a0, a1, a2 = (float(x) for x in a)
    b0, b1, b2 = (float(x) for x in b)
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def _perp_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Basis (u, v) of the plane normal to d; u stays in the axial plane (x-like), v is z-like."""
    u = _cross(d, (0.0, 0.0, 1.0))
    if np.linalg.norm(u) < 1e-6:
        u = _cross(d, (1.0, 0.0, 0.0))
    u /= np.linalg.norm(u)
    if u[0] < 0:
        u = -u
    v = _cross(d, u)
    v /= np.linalg.norm(v)
    if v[2] < 0:
        v = -v
    return u, v


class _Scene:
    """Volumes shared by all candidate evaluations of one planning call."""

    def __init__(
        self,
        grid: Grid,
        target: np.ndarray,
        body: np.ndarray,
        forbidden: Mapping[str, np.ndarray],
        bone: np.ndarray | None,
        bone_allowed: np.ndarray | None,
        constraints: NeedleConstraints,
        aux: np.ndarray | None = None,
        target_name: str = "target",
    ) -> None:
        self.grid = grid
        self.c = constraints
        self.target_name = target_name
        self.target = _check_mask(target, grid, target_name)
        if not self.target.any():
            raise PlanningError(f"{target_name!r} is empty: nothing to plan needles for")
        self.body = _check_mask(body, grid, "body")
        if not isinstance(forbidden, Mapping):
            raise InputError("forbidden must be a mapping of structure name -> boolean mask")
        names, masks, margins = [], [], []
        for k, m in forbidden.items():
            if not isinstance(k, str) or not k:
                raise InputError(f"forbidden structure names must be non-empty strings, got {k!r}")
            names.append(k)
            masks.append(_check_mask(m, grid, k))
            margins.append(constraints.margin_for(k))
        # the label bits (and the bone outside the corridor) in one pass over the grid
        self.has_bone = bone is not None
        none = np.zeros(1, bool)
        bone = _check_mask(bone, grid, "bone") if bone is not None else None
        allowed = _check_mask(bone_allowed, grid, "bone_allowed") if bone is not None and bone_allowed is not None \
            else None
        aux_m = np.asarray(aux, dtype=bool) if aux is not None else None
        labels, bad = rc.label_field(self.target, none if bone is None else bone,
                                     none if allowed is None else allowed, none if aux_m is None else aux_m,
                                     bone is not None, allowed is not None, aux_m is not None)
        if bone is not None and not constraints.allow_bone_drill:
            names.append(_BAD_BONE_NAME)
            masks.append(bad)
            margins.append(constraints.bone_margin_mm)
        self.labels = labels
        self.names = names
        self.margins = np.array(margins, float)
        cap = float(max(margins, default=0.0)) + 25.0
        self.cap = cap
        sp = grid.spacing
        self.dist = rc.distance_boxes(masks, (sp[2], sp[1], sp[0]), cap)
        self.empty = np.array([not self.dist.shape[s].any() for s in range(len(masks))], bool)
        self.body_u8 = self.body.view(np.uint8)
        self.h = 0.5 * float(sp.min())
        self.D = grid.direction_matrix
        self.sp = sp

    # index-space helpers
    def to_idx(self, p: np.ndarray) -> np.ndarray:
        return self.grid.world_to_index(p)

    def step_idx(self, d: np.ndarray, h: float) -> np.ndarray:
        return (d @ self.D) * h / self.sp

    def in_mask(self, mask: np.ndarray, p: np.ndarray) -> np.ndarray:
        idx = np.floor(self.to_idx(p) + 0.5).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(self.grid.size)), axis=-1)
        out = np.zeros(len(p), bool)
        ii = idx[ok]
        out[ok] = mask[ii[:, 2], ii[:, 1], ii[:, 0]]
        return out

    def chords(self, centres: np.ndarray, dirs: np.ndarray, mask: np.ndarray, half_len: float):
        """Signed positions (mm, along d from the centre) of first/last hit and count in mask."""
        h = self.h
        n = int(math.ceil(2 * half_len / h)) + 1
        starts = self.to_idx(centres - half_len * dirs)
        first, last, cnt = rc.line_chords(starts, self.step_idx(dirs, h), n, mask.view(np.uint8))
        return first * h - half_len, last * h - half_len, cnt * h, first >= 0

    def trace(self, tips: np.ndarray, dirs: np.ndarray, *, early: bool = False) -> dict[str, np.ndarray]:
        """Feasibility of segments ending at ``tips`` with entry->tip directions ``dirs``.

        ``early``: a segment stops at the first margin it certainly violates (status 4): ``ok`` and
        everything about the feasible segments are the same, the rest is partial (trace again without
        it for the reasons of a failure).
        """
        h = self.h
        max_steps = int(math.floor(self.c.max_depth_mm / h))
        n_in, status, clear, blen = rc.march_from_tips(
            self.to_idx(tips), self.step_idx(-dirs, h), h, max_steps, self.body_u8, self.labels, self.dist, self.sp,
            stop_below_mm=self.margins if early and len(self.names) else None,
        )
        depth = (n_in - 1).clip(0) * h
        entries = tips - depth[:, None] * dirs
        viol = clear < self.margins[None, :] if len(self.names) else np.zeros((len(tips), 0), bool)
        ok = (status == 0) & (depth > 0) & ~viol.any(axis=1)
        return {
            "entry": entries,
            "depth": depth,
            "status": status,
            "clear": clear,
            "viol": viol,
            "len": blen,
            "ok": ok,
        }

    def cost(self, tr: dict[str, np.ndarray], dirs: np.ndarray, chord: np.ndarray) -> np.ndarray:
        c = self.c
        ang = np.degrees(np.arccos(np.clip(-dirs[:, 1], -1, 1)))  # angle from straight AP
        clear = np.maximum(tr["clear"][:, ~self.empty], 0.5) if len(self.names) else np.zeros((len(dirs), 0))
        return (
            c.w_length_per_mm * tr["depth"]
            + c.w_angle_per_deg * ang
            + c.w_tilt_per_deg * np.degrees(np.arcsin(np.clip(np.abs(dirs[:, 2]), 0, 1)))
            + c.w_clearance_mm * (1.0 / clear).sum(axis=1)
            + c.w_bone_per_mm * tr["len"][:, _BIT_BONE]
            - c.w_target_per_mm * chord
        )

    def infeasible_message(self, tr: dict[str, np.ndarray], n_total: int, what: str, extra: dict[str, int]) -> str:
        counts: list[tuple[str, int]] = []
        for s, name in enumerate(self.names):
            k = int(tr["viol"][:, s].sum()) if tr["viol"].size else 0
            if k:
                counts.append((f"crosses {name!r} (+{self.margins[s]:g} mm margin)", k))
        reasons = (
            (3, f"deeper than {self.c.max_depth_mm:g} mm"),
            (2, "leaves the image before the skin"),
            (1, "tip outside the body"),
        )
        for code, text in reasons:
            k = int((tr["status"] == code).sum())
            if k:
                counts.append((text, k))
        counts += [(k, v) for k, v in extra.items() if v]
        counts.sort(key=lambda kv: -kv[1])
        detail = "; ".join(f"{t}: {k}" for t, k in counts) or "no candidate line reaches it"
        blockers = [n.rsplit(" (+", 1)[0].replace("crosses ", "") for n, _ in counts if n.startswith("crosses")]
        every = [t.replace("crosses ", "") for t, k in counts if t.startswith("crosses") and k == n_total]
        parts = [f"no feasible needle path to {what}"]
        if every:
            parts.append("every candidate crosses " + " and ".join(every))
        elif blockers:
            parts.append("blocked by " + ", ".join(blockers))
        parts.append(f"{n_total} candidate paths tested; rejections per reason (a path may have several): {detail}")
        return ": ".join(parts[:2]) + ". " + " ".join(parts[2:]) if len(parts) == 3 else ". ".join(parts)


def _argwhere(mask: np.ndarray) -> np.ndarray:
    """``np.argwhere(mask)`` (the same rows in the same order), searched in the mask's bounding box only."""
    bb = mask_bbox(mask)
    if bb is None:
        return np.zeros((0, 3), np.int64)
    lo, hi = bb
    return np.argwhere(mask[tuple(slice(a, b + 1) for a, b in zip(lo, hi))]) + np.array(lo, np.int64)


def _target_points(scene: _Scene, rng: np.random.Generator, max_points: int = 2500) -> np.ndarray:
    idx = _argwhere(scene.target)  # (k, j, i)
    if len(idx) > max_points:
        idx = idx[np.sort(rng.choice(len(idx), max_points, replace=False))]
    return scene.grid.index_to_world(idx[:, ::-1].astype(float))


def _lines_for_direction(
    scene: _Scene,
    d: np.ndarray,
    pts: np.ndarray,
    centre: np.ndarray,
    pitch: float,
    offset: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Lattice of parallel lines (points on the lines) crossing the projection of ``pts``."""
    u, v = _perp_basis(d)
    rel = pts - centre
    a = rel @ u - offset[0]
    b = rel @ v - offset[1]
    ia = np.floor(a / pitch + 0.5).astype(int)
    ib = np.floor(b / pitch + 0.5).astype(int)
    # the distinct (ia, ib) cells in increasing (ia, ib) order, marked on their 2-D range when it is small
    a0, b0 = ia.min(), ib.min()
    na, nb_ = int(ia.max() - a0) + 1, int(ib.max() - b0) + 1
    if na * nb_ <= max(1 << 16, 8 * ia.size):
        seen = np.zeros((na, nb_), bool)
        seen[ia - a0, ib - b0] = True
        ca, cb = np.nonzero(seen)
        cells = np.stack([ca + a0, cb + b0], axis=1)
    else:
        big = 1 << 20
        key = np.unique((ia + big // 2) * big + (ib + big // 2))
        cells = np.stack([key // big - big // 2, key % big - big // 2], axis=1)
    centres = (
        centre
        + (cells[:, 0:1] * pitch + offset[0]) * u[None, :]
        + (cells[:, 1:2] * pitch + offset[1]) * v[None, :]
    )
    return centres, cells


def _evaluate_lines(
    scene: _Scene, centres: np.ndarray, dirs: np.ndarray, region: np.ndarray, half_len: float, inset: float,
    early: bool = False,
) -> tuple:
    """Tips on lines through ``region`` and their feasibility (``early``: see :meth:`_Scene.trace`)."""
    s0, s1, count, hit = scene.chords(centres, dirs, region, half_len)
    tip_s = np.maximum(s1 - inset, 0.5 * (s0 + s1))
    centres, dirs, s0, s1, count, tip_s = (x[hit] for x in (centres, dirs, s0, s1, count, tip_s))
    tips = centres + tip_s[:, None] * dirs
    prox = centres + s0[:, None] * dirs
    tr = scene.trace(tips, dirs, early=early) if len(tips) else None
    return tips, prox, dirs, count, tr


def _diag(scene: _Scene, tr: dict[str, np.ndarray], i: int, chord: float, score: float) -> NeedleDiagnostics:
    clear = {n: float(tr["clear"][i, s]) if not scene.empty[s] else math.inf for s, n in enumerate(scene.names)}
    return NeedleDiagnostics(
        clearance_mm=MappingProxyType(clear),
        bone_mm=float(tr["len"][i, _BIT_BONE]),
        forbidden_bone_mm=float(tr["len"][i, _BIT_BAD_BONE]),
        target_chord_mm=float(chord),
        score=float(score),
    )


def _greedy(
    cover: np.ndarray,
    cost: np.ndarray,
    prox: np.ndarray,
    tips: np.ndarray,
    entries: np.ndarray,
    c: NeedleConstraints,
    n_needles: int | None,
    check_distance: bool = True,
) -> tuple[list[int], float]:
    """Pick needles greedily: 100*coverage gain - w*J, keeping needles apart."""
    n, m = cover.shape
    compat = _Compatible(prox, tips, entries, c)
    packed = rc.PackedCover(cover)
    covered = np.zeros(m, bool)
    allowed = np.ones(n, bool)
    chosen: list[int] = []
    limit = n_needles if n_needles is not None else c.max_needles
    while len(chosen) < limit and allowed.any():
        gain = packed.uncovered(covered) / max(m, 1)  # cover[:, ~covered].sum(axis=1), from popcounts
        if n_needles is None:
            if covered.mean() >= c.coverage_goal:
                break
            ok = allowed & (gain >= max(c.min_gain_fraction, 1e-12))
            if not ok.any():
                break
        else:
            ok = allowed
        value = np.where(ok, 100.0 * gain - c.w_cost_vs_coverage * cost, -np.inf)
        best = int(np.argmax(value))
        chosen.append(best)
        covered |= cover[best]
        allowed[best] = False
        if check_distance:
            allowed &= compat(best)
    chosen = _improve(chosen, cover, cost, prox, tips, entries, c, check_distance, compat=compat, packed=packed)
    covered = cover[chosen].any(axis=0) if chosen else np.zeros(m, bool)
    return chosen, float(covered.mean()) if m else 0.0


class _Compatible:
    """``compat(o)``: the candidates that may go with needle ``o`` (needle, entry and track distances), computed
    once per needle."""

    def __init__(self, prox: np.ndarray, tips: np.ndarray, entries: np.ndarray, c: NeedleConstraints) -> None:
        self.prox, self.tips, self.entries, self.c = prox, tips, entries, c
        self.done: dict[int, np.ndarray] = {}

    def __call__(self, o: int) -> np.ndarray:
        if o not in self.done:
            prox, tips, entries, c = self.prox, self.tips, self.entries, self.c
            ok = rc.segments_distance(prox[o], tips[o], prox, tips) >= c.min_needle_distance_mm - 1e-9
            ok &= np.linalg.norm(entries - entries[o], axis=1) >= c.min_entry_distance_mm - 1e-9
            ok &= rc.segments_distance(entries[o], tips[o], entries, tips) >= c.min_track_distance_mm - 1e-9
            self.done[o] = ok
        return self.done[o]


def _improve(
    chosen: list[int],
    cover: np.ndarray,
    cost: np.ndarray,
    prox: np.ndarray,
    tips: np.ndarray,
    entries: np.ndarray,
    c: NeedleConstraints,
    check_distance: bool,
    passes: int = 3,
    compat: "_Compatible | None" = None,
    packed: "rc.PackedCover | None" = None,
) -> list[int]:
    """Local search after the greedy pass: replace one needle at a time by the best compatible candidate."""
    n, m = cover.shape
    compat = compat if compat is not None else _Compatible(prox, tips, entries, c)
    packed = packed if packed is not None else rc.PackedCover(cover)
    chosen = list(chosen)
    if len(chosen) < 2 or m == 0:
        return chosen
    for _ in range(passes):
        improved = False
        for pos in range(len(chosen)):
            others = chosen[:pos] + chosen[pos + 1 :]
            covered = cover[others].any(axis=0)
            allowed = np.ones(n, bool)
            allowed[others] = False
            if check_distance:
                for o in others:
                    allowed &= compat(o)
            value = 100.0 * packed.uncovered(covered) / m - c.w_cost_vs_coverage * cost
            cur = chosen[pos]
            value_allowed = np.where(allowed, value, -np.inf)
            best = int(np.argmax(value_allowed))
            if value_allowed[best] > value[cur] + 1e-9:
                chosen[pos] = best
                improved = True
        if not improved:
            break
    return chosen


def _default_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise InputError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


# ------------------------------------------------------------- public API
def plan_needles(
    grid: Grid,
    target: np.ndarray,
    body: np.ndarray,
    forbidden: Mapping[str, np.ndarray],
    *,
    bone: np.ndarray | None = None,
    bone_allowed: np.ndarray | None = None,
    constraints: NeedleConstraints = NeedleConstraints(),
    mode: str = "free",
    n_needles: int | None = None,
    spacing_mm: float = 10.0,
    rng: np.random.Generator | int | None = None,
) -> NeedlePlan:
    """Choose a set of seed needles reaching ``target`` from the posterior skin.

    Parameters
    ----------
    grid : Grid
    target, body : bool arrays ``[z, y, x]``
        Target (e.g. PTV) and body outline (the skin is its boundary).
    forbidden : mapping of str to bool array ``[z, y, x]``
        Structures no needle may approach closer than its margin
        (``constraints.margin_for(name)``).
    bone : bool array, optional
        Bone a needle cannot cross without a drill.
    bone_allowed : bool array, optional
        Bone the needle may cross (e.g. a pedicle corridor).
    constraints : NeedleConstraints
    mode : {"free", "coplanar"}
        Non-coplanar needles (3D-printed template) or parallel needles on a
        template grid.
    n_needles : int, optional
        Exact number of needles; chosen automatically when None.
    spacing_mm : float
        Needle pitch of the coplanar template (rounded to a multiple of
        ``constraints.template_hole_pitch_mm``); unused in free mode.
    rng : numpy.random.Generator or int, optional
        Randomness for the target sub-sample (default: seed 0).

    Returns
    -------
    NeedlePlan

    Raises
    ------
    PlanningError
        When no candidate is feasible (the message names the blocking
        structures with counts) or ``n_needles`` cannot be placed.
    """
    if not isinstance(grid, Grid):
        raise InputError(f"grid must be a seedplan Grid, got {type(grid).__name__}")
    if not isinstance(constraints, NeedleConstraints):
        raise InputError("constraints must be a NeedleConstraints")
    if mode not in ("free", "coplanar"):
        raise InputError(f"mode must be 'free' or 'coplanar', got {mode!r}")
    if n_needles is not None and (
        isinstance(n_needles, bool) or not isinstance(n_needles, (int, np.integer)) or n_needles < 1
    ):
        raise InputError(f"n_needles must be a positive integer or None, got {n_needles!r}")
    if not (isinstance(spacing_mm, (int, float)) and math.isfinite(spacing_mm) and spacing_mm > 0):
        raise InputError(f"spacing_mm must be a finite number > 0, got {spacing_mm!r}")
    rng = _default_rng(rng)
    c = constraints
    scene = _Scene(grid, target, body, forbidden, bone, bone_allowed, c)
    pts = _target_points(scene, rng)
    centre = pts.mean(axis=0)
    half_len = float(np.linalg.norm(pts - centre, axis=1).max()) + 2.0 * float(scene.sp.max()) + c.line_pitch_mm
    if mode == "free":
        return _plan_free(scene, pts, centre, half_len, n_needles)
    return _plan_coplanar(scene, pts, centre, half_len, n_needles, float(spacing_mm))


def _finish(scene, idx, tips, entries, dirs, chord, cost, tr, kind, mode, coverage, n_cand, n_feas, info) -> NeedlePlan:
    needles, diags = [], []
    for r, i in enumerate(idx):
        label = f"N{r + 1}" if kind == "seed" else str(info.get("labels", {}).get(i, f"P{r + 1}"))
        needles.append(Needle(tuple(entries[i]), tuple(tips[i]), kind=kind, label=label))
        diags.append(_diag(scene, tr, i, chord[i], cost[i]))
    info = {k: v for k, v in info.items() if k != "labels"}
    return NeedlePlan(
        tuple(needles), tuple(diags), mode, float(coverage), int(n_cand), int(n_feas), MappingProxyType(info)
    )


def _plan_free(scene: _Scene, pts, centre, half_len, n_needles) -> NeedlePlan:
    c = scene.c
    dirs_all = _sample_directions(c.max_axial_tilt_deg, c.max_angle_from_vertical_deg, c.direction_step_deg)
    centres, dirs = [], []
    for d in dirs_all:
        cen, _ = _lines_for_direction(scene, d, pts, centre, c.line_pitch_mm)
        centres.append(cen)
        dirs.append(np.broadcast_to(d, cen.shape))
    centres = np.concatenate(centres)
    dirs = np.ascontiguousarray(np.concatenate(dirs))
    tips, prox, dirs, chord, tr = _evaluate_lines(scene, centres, dirs, scene.target, half_len, c.tip_inset_mm,
                                                  early=True)
    n_cand = len(tips)
    if tr is None:
        raise PlanningError(f"no candidate line crosses {scene.target_name!r}")
    short = tr["ok"] & (chord < c.min_chord_mm)
    ok = tr["ok"] & ~short
    if not ok.any():
        tr = scene.trace(tips, dirs)  # every reason of every candidate
        raise PlanningError(
            scene.infeasible_message(
                tr, n_cand, repr(scene.target_name), {f"target chord < {c.min_chord_mm:g} mm": int(short.sum())}
            )
        )
    sel = np.nonzero(ok)[0]
    cost = scene.cost(tr, dirs, chord)
    cover = rc.cover_matrix(pts, prox[sel], tips[sel], c.coverage_radius_mm)
    chosen, cov = _greedy(cover, cost[sel], prox[sel], tips[sel], tr["entry"][sel], c, n_needles)
    if n_needles is not None and len(chosen) < n_needles:
        raise PlanningError(
            f"only {len(chosen)} of the requested {n_needles} needles fit {scene.target_name!r} "
            f"with needles >= {c.min_needle_distance_mm:g} mm apart ({len(sel)} feasible paths)"
        )
    idx = sel[np.array(chosen, int)]
    return _finish(scene, idx, tips, tr["entry"], dirs, chord, cost, tr, "seed", "free", cov, n_cand, len(sel), {})


def _plan_coplanar(scene: _Scene, pts, centre, half_len, n_needles, spacing_mm) -> NeedlePlan:
    c = scene.c
    hole = c.template_hole_pitch_mm
    pitch = max(1, round(spacing_mm / hole)) * hole
    n_off = int(round(pitch / hole))
    offsets = [(a * hole, b * hole) for a in range(n_off) for b in range(n_off)]
    step = max(c.direction_step_deg, 5.0)
    dirs_all = _sample_directions(c.max_axial_tilt_deg, c.max_angle_from_vertical_deg, step)
    # all template lines of all (direction, offset) configurations, evaluated in one batch
    configs, cen_l, dir_l, cell_l, cfg_l = [], [], [], [], []
    for d in dirs_all:
        u, v = _perp_basis(d)
        for off in offsets:
            cen, cells = _lines_for_direction(scene, d, pts, centre, pitch, off)
            cfg_l.append(np.full(len(cen), len(configs)))
            configs.append((d, u, v, off))
            cen_l.append(cen)
            dir_l.append(np.broadcast_to(d, cen.shape))
            cell_l.append(cells)
    cen = np.concatenate(cen_l)
    dirs = np.ascontiguousarray(np.concatenate(dir_l))
    cells = np.concatenate(cell_l)
    cfg = np.concatenate(cfg_l)
    s0, s1, count, hit = scene.chords(cen, dirs, scene.target, half_len)
    tip_s = np.maximum(s1 - c.tip_inset_mm, 0.5 * (s0 + s1))
    cen, dirs, s0, count, tip_s, cells, cfg = (x[hit] for x in (cen, dirs, s0, count, tip_s, cells, cfg))
    n_cand = len(cen)
    if not n_cand:
        raise PlanningError(f"no template line crosses {scene.target_name!r}")
    tips = cen + tip_s[:, None] * dirs
    prox = cen + s0[:, None] * dirs
    tr = scene.trace(tips, dirs, early=True)
    short = tr["ok"] & (count < c.min_chord_mm)
    good = tr["ok"] & ~short
    cost = scene.cost(tr, dirs, count)
    order = np.argsort(cfg, kind="stable")
    bounds = np.searchsorted(cfg[order], np.arange(len(configs) + 1))
    best = None
    for k in range(len(configs)):
        rows = order[bounds[k] : bounds[k + 1]]
        ok = rows[good[rows]]
        if not len(ok) or (n_needles is not None and len(ok) < n_needles):
            continue
        cover = rc.cover_matrix(pts, prox[ok], tips[ok], c.coverage_radius_mm)
        chosen, cov = _greedy(cover, cost[ok], prox[ok], tips[ok], tr["entry"][ok], c, n_needles, check_distance=False)
        if n_needles is not None and len(chosen) < n_needles:
            continue
        # whole percent of coverage first, then fewer needles, then lower total cost
        key = (math.floor(100.0 * cov + 1e-9), -len(chosen), -float(cost[ok][chosen].sum()))
        if best is None or key > best[0]:
            best = (key, k, ok[np.array(chosen, int)], cov, len(ok))
    if best is None:
        extra = {f"target chord < {c.min_chord_mm:g} mm": int(short.sum())}
        if n_needles is not None and good.any():
            extra[f"template positions with fewer than {n_needles} feasible lines"] = len(configs)
        raise PlanningError(scene.infeasible_message(scene.trace(tips, dirs), n_cand, repr(scene.target_name), extra))
    _, k, idx, cov, n_feas = best
    d, u, v, off = configs[k]
    info = {
        "direction": tuple(float(x) for x in d),
        "template_u": tuple(float(x) for x in u),
        "template_v": tuple(float(x) for x in v),
        "template_origin_mm": tuple(float(x) for x in centre + off[0] * u + off[1] * v),
        "pitch_mm": float(pitch),
        "grid_cells": tuple((int(a), int(b)) for a, b in cells[idx]),
    }
    return _finish(scene, idx, tips, tr["entry"], dirs, count, cost, tr, "seed", "coplanar", cov, n_cand, n_feas, info)


def pvp_needle_paths(
    grid: Grid,
    vertebral_body: np.ndarray,
    body: np.ndarray,
    forbidden: Mapping[str, np.ndarray],
    *,
    pedicles: np.ndarray | None = None,
    bone: np.ndarray | None = None,
    bone_allowed: np.ndarray | None = None,
    approach: str = "transpedicular",
    bilateral: bool = True,
    constraints: NeedleConstraints = NeedleConstraints(max_angle_from_vertical_deg=45.0, max_axial_tilt_deg=20.0),
    min_pedicle_mm: float = 10.0,
    pedicle_margin_mm: float = 1.0,
    tip_inset_mm: float = 4.0,
    w_pedicle_per_mm: float = 0.5,
    w_centre_per_mm: float = 0.5,
    tip_offset_fraction: float = 0.5,
    rng: np.random.Generator | int | None = None,
) -> NeedlePlan:
    """Vertebroplasty needle paths with the tip in the anterior third of the vertebral body.

    Parameters
    ----------
    grid : Grid
    vertebral_body, body : bool arrays ``[z, y, x]``
    forbidden : mapping of str to bool array
        Structures to avoid with their margins (canal, aorta, ...).
    pedicles : bool array, optional
        Both pedicles; required for the transpedicular approach (the path
        must run >= ``min_pedicle_mm`` inside a pedicle) and avoided by
        ``pedicle_margin_mm`` in the parapedicular approach.
    bone, bone_allowed : bool arrays, optional
        Bone obstacles; ``bone_allowed`` defaults to vertebral body
        (+ pedicles for the transpedicular approach).
    approach : {"transpedicular", "parapedicular"}
    bilateral : bool
        One needle from each side (left = +x of the body centre) or a single
        needle whose tip is as close to the midline as possible.
    constraints : NeedleConstraints
    min_pedicle_mm, pedicle_margin_mm, tip_inset_mm : float
        Pedicle length required (transpedicular), pedicle clearance
        (parapedicular), tip distance inside the deep edge of the anterior third.
    w_pedicle_per_mm, w_centre_per_mm : float
        Cost bonus per mm run inside the pedicle (transpedicular) and cost per
        mm of tip distance from its aim point: the mid-height of the anterior
        third and (twice the weight) laterally, ``tip_offset_fraction`` of the half-width from
        the midline (bilateral) or the midline (single needle).
    tip_offset_fraction : float
        Bilateral tips aim at this fraction of the vertebral body's half-width
        from the midline, on their own side (0.5: the middle of each half, for
        a symmetric cement fill that reaches the midline).
    rng : numpy.random.Generator or int, optional
        Randomness for the sub-sample of the region (default: seed 0).

    Returns
    -------
    NeedlePlan
        ``kind="pvp"`` needles labelled ``"left"`` / ``"right"`` (or ``"unilateral-left"``...).
    """
    if approach not in ("transpedicular", "parapedicular"):
        raise InputError(f"approach must be 'transpedicular' or 'parapedicular', got {approach!r}")
    if not isinstance(tip_offset_fraction, (int, float)) or not 0.0 <= tip_offset_fraction <= 1.0:
        raise InputError(f"tip_offset_fraction must be a fraction of the half-width in [0, 1], got {tip_offset_fraction!r}")
    vb = _check_mask(vertebral_body, grid, "vertebral_body")
    if not vb.any():
        raise PlanningError("'vertebral_body' is empty")
    c = constraints
    ped = _check_mask(pedicles, grid, "pedicles") if pedicles is not None else None
    if approach == "transpedicular" and (ped is None or not ped.any()):
        raise InputError("the transpedicular approach needs a non-empty 'pedicles' mask")
    # anterior third of the body (anterior = smaller y in LPS), per world y
    vb_pts_idx = _argwhere(vb)
    vb_pts = grid.index_to_world(vb_pts_idx[:, ::-1].astype(float))
    y0, y1 = vb_pts[:, 1].min(), vb_pts[:, 1].max()
    ant = np.zeros_like(vb)
    sel = vb_pts[:, 1] <= y0 + (y1 - y0) / 3.0
    k, j, i = vb_pts_idx[sel].T
    ant[k, j, i] = True
    forb = dict(forbidden)
    if approach == "parapedicular" and ped is not None:
        forb["pedicle"] = ped
        c = dataclasses.replace(c, margins_mm={**dict(c.margins_mm), "pedicle": float(pedicle_margin_mm)})
    if bone is not None and bone_allowed is None:
        bone_allowed = vb | ped if (approach == "transpedicular" and ped is not None) else vb
    scene = _Scene(
        grid,
        ant,
        body,
        forb,
        bone,
        bone_allowed,
        c,
        aux=ped if approach == "transpedicular" else None,
        target_name="anterior third of 'vertebral_body'",
    )
    pts = _target_points(scene, _default_rng(rng))
    centre = pts.mean(axis=0)
    mid_x = float(vb_pts[:, 0].mean())
    half_len = float(np.linalg.norm(vb_pts - centre, axis=1).max()) + 2.0 * float(scene.sp.max())
    dirs_all = _sample_directions(c.max_axial_tilt_deg, c.max_angle_from_vertical_deg, c.direction_step_deg)
    centres, dirs = [], []
    for d in dirs_all:
        cen, _ = _lines_for_direction(scene, d, pts, centre, min(c.line_pitch_mm, 3.0))
        centres.append(cen)
        dirs.append(np.broadcast_to(d, cen.shape))
    centres = np.concatenate(centres)
    dirs = np.ascontiguousarray(np.concatenate(dirs))
    tips, prox, dirs, chord, tr = _evaluate_lines(scene, centres, dirs, ant, half_len, tip_inset_mm, early=True)
    if tr is None:
        raise PlanningError("no candidate line crosses the anterior third of 'vertebral_body'")
    in_ant = scene.in_mask(ant, tips)
    ok = tr["ok"] & in_ant
    not_in = tr["ok"] & ~in_ant
    short = np.zeros(len(tips), bool)
    if approach == "transpedicular":
        short = ok & (tr["len"][:, _BIT_AUX] < min_pedicle_mm)
        ok &= ~short

    def extras(sel: np.ndarray) -> dict[str, int]:
        return {
            "tip would leave the anterior third": int((not_in & sel).sum()),
            f"runs < {min_pedicle_mm:g} mm inside a pedicle": int((short & sel).sum()),
        }

    cost = scene.cost(tr, dirs, np.zeros(len(tips)))
    cost = cost + w_centre_per_mm * np.abs(tips[:, 2] - centre[2])  # mid-height of the body
    if bilateral:  # each tip in the middle of its half of the body
        half_w = 0.5 * float(vb_pts[:, 0].max() - vb_pts[:, 0].min())
        aim = tip_offset_fraction * half_w
        cost = cost + 2.0 * w_centre_per_mm * np.abs(np.abs(tips[:, 0] - mid_x) - aim)
    if approach == "transpedicular":
        cost = cost - w_pedicle_per_mm * tr["len"][:, _BIT_AUX]  # follow the pedicle axis
    side = np.where(tr["entry"][:, 0] > mid_x, "left", "right")
    labels: dict[int, str] = {}
    idx: list[int] = []
    if bilateral:
        for s in ("left", "right"):
            cand = np.nonzero(ok & (side == s))[0]
            if not len(cand):
                what = f"the anterior third of 'vertebral_body' from the {s} ({approach})"
                tr = scene.trace(tips, dirs)  # every reason of every candidate (and where it would enter)
                on_side = np.where(tr["entry"][:, 0] > mid_x, "left", "right") == s
                tr_side = {"viol": tr["viol"][on_side], "status": tr["status"][on_side]}
                msg = scene.infeasible_message(tr_side, int(on_side.sum()), what, extras(on_side))
                raise PlanningError(msg)
            b = int(cand[np.argmin(cost[cand])])
            labels[b] = s
            idx.append(b)
    else:
        cand = np.nonzero(ok)[0]
        if not len(cand):
            what = f"the anterior third of 'vertebral_body' ({approach})"
            raise PlanningError(scene.infeasible_message(scene.trace(tips, dirs), len(tips), what,
                                                         extras(np.ones(len(tips), bool))))
        total = cost + 1.0 * np.abs(tips[:, 0] - mid_x)
        b = int(cand[np.argmin(total[cand])])
        labels[b] = f"unilateral-{side[b]}"
        idx.append(b)
    info = {"labels": labels, "midline_x_mm": mid_x}
    mode = f"pvp-{approach}"
    return _finish(
        scene, np.array(idx), tips, tr["entry"], dirs, chord, cost, tr, "pvp", mode, math.nan, len(tips), int(ok.sum()), info
    )


def candidate_slots(
    needles: Sequence[Needle] | NeedlePlan,
    grid: Grid,
    region_mask: np.ndarray,
    spacing_mm: float = 10.0,
    *,
    exclude: np.ndarray | None = None,
    max_per_needle: int | None = None,
) -> SeedSlots:
    """Seed slots along each needle inside a region (retraction method).

    Slots start at the needle tip and step back toward the entry every
    ``spacing_mm``; a slot is kept when its nearest voxel is in
    ``region_mask`` and not in ``exclude`` (e.g. the canal + margin).

    Parameters
    ----------
    needles : sequence of Needle or NeedlePlan
    grid : Grid
    region_mask : bool array ``[z, y, x]``
        Where seeds may go (e.g. target expanded by 5 mm, cropped at the canal PRV).
    spacing_mm : float
        Slot pitch along the needle (5-10 mm).
    exclude : bool array, optional
    max_per_needle : int, optional

    Returns
    -------
    SeedSlots
        Ordered by needle, then deepest first (retraction distance ascending).
    """
    if isinstance(needles, NeedlePlan):
        needles = needles.needles
    region = _check_mask(region_mask, grid, "region_mask")
    if exclude is not None:
        region = region & ~_check_mask(exclude, grid, "exclude")
    if not (isinstance(spacing_mm, (int, float)) and math.isfinite(spacing_mm) and spacing_mm > 0):
        raise InputError(f"spacing_mm must be a finite number > 0, got {spacing_mm!r}")
    pos, nid, retr = [], [], []
    size = np.array(grid.size)
    for n, nd in enumerate(needles):
        if not isinstance(nd, Needle):
            raise InputError(f"needles[{n}] is not a Needle")
        r = np.arange(0.0, nd.depth_mm + 1e-9, float(spacing_mm))
        p = nd.tip[None, :] - r[:, None] * nd.direction[None, :]
        idx = np.floor(grid.world_to_index(p) + 0.5).astype(int)
        inside = np.all((idx >= 0) & (idx < size), axis=1)
        keep = np.zeros(len(r), bool)
        ii = idx[inside]
        keep[inside] = region[ii[:, 2], ii[:, 1], ii[:, 0]]
        kk = np.nonzero(keep)[0]
        if max_per_needle is not None:
            kk = kk[:max_per_needle]
        pos.append(p[kk])
        nid.append(np.full(len(kk), n, int))
        retr.append(r[kk])
    if not pos:
        return SeedSlots(np.zeros((0, 3)), np.zeros(0, int), np.zeros(0))
    return SeedSlots(np.concatenate(pos), np.concatenate(nid), np.concatenate(retr))
