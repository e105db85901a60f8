"""Evaluate a dose distribution on a set of structures.

:func:`evaluate` samples every structure finely
(:func:`~seedplan.evaluation.sampling.sample_mask_points`, 8 points/mm^3),
asks the dose engine for the dose at the sample points, builds a :class:`DVH`
per structure and assembles the metrics layout used by the report.

By default (``SamplingOptions(adaptive=True)``) the dose is evaluated at the
voxel centres and at sub-points only where they can change a metric: on the
structure border, where the dose is steep, and in voxels whose dose range
contains a level the metrics read (see :mod:`seedplan.evaluation._adaptive`).
Every V_x and D_x then equals the exact evaluation's (``adaptive=False``,
every sub-point of every voxel) to rounding and Dmean agrees to ~1e-4
(``tests/evaluation/test_adaptive.py``).

V_ref (total tissue volume receiving >= PD, needed for CI and EI) is computed
over a box on the target's grid, sampled with the same sub-points as the
target:

1. start from the target's bounding box grown by ``vref_margin_mm``;
2. grow it to contain every ``include_points_mm`` (e.g. seed positions) and
   every voxel centre of a coarse scan of the whole grid (every
   ``vref_scan_spacing_mm``, restricted to the body when given) with dose >= PD;
3. while the dose on a face of the box reaches PD, push that face out by
   ``vref_step_mm`` (until the grid edge, which is reported as a warning);
   adaptive: a face reaches PD when a voxel centre's dose plus its range does;
4. V_ref = V_T,ref (target DVH) + the volume of the box's sub-points outside
   the target (same membership rule) with dose >= PD, counted only inside the
   body when a body structure is given; adaptive: a voxel clear of the three
   levels (1, 1.5, 2 PD) and of the target and body borders counts whole from
   its centre dose, the others are sampled sub-point by sub-point.

Isolated hot spots smaller than the coarse scan spacing and away from the
target and from ``include_points_mm`` can escape step 2: pass the seed
positions as ``include_points_mm`` to make V_ref complete.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import GeometryError, InputError, InputTypeError, ResourceError, SeedplanError
from ..geometry import Grid
from ..imaging.structures import COMBINED_TARGET
from ._adaptive import adaptive_dvh
from ._adaptive import reference_volumes as adaptive_reference_volumes
from .dvh import DVH
from .indices import oar_indices, target_indices
from .radiobiology import DEFAULT_REPAIR_HALF_TIME_H, I125_HALF_LIFE_D, eqd2_permanent_Gy
from .sampling import (
    BOUNDARY_RULES,
    DEFAULT_MAX_POINTS,
    DEFAULT_POINTS_PER_MM3,
    MaskSampler,
    _to_index,
    iter_box_subpoints,
    subdivisions_for,
)

__all__ = ["ROLES", "SamplingOptions", "Evaluation", "evaluate", "dvh_of_structure"]

ROLES = ("target", "oar", "canal", "vertebral_body", "pedicle", "avoidance", "body", "bone")
#: Roles that are accepted but not sampled (listed in ``metrics["not_evaluated"]``).
SKIPPED_ROLES = ("body", "bone", "pedicle")

DoseFn = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class SamplingOptions:
    """How :func:`evaluate` samples structures and the V_ref region.

    ``SamplingOptions(adaptive=False)`` is the exact (reference) evaluation.

    Parameters
    ----------
    points_per_mm3 : float
        Sub-point density (8 -> spacing <= 0.5 mm).
    boundary : {"trilinear", "voxel"}
        Partial-volume rule (see :mod:`seedplan.evaluation.sampling`).
    vref_margin_mm : float
        Initial margin of the V_ref box around the target.
    vref_step_mm : float
        Growth step of a box face whose dose still reaches PD.
    vref_scan_spacing_mm : float
        Spacing of the coarse whole-grid scan for hot spots (0 disables it).
    max_points : int
        Memory guard per structure.
    chunk_points : int
        Dose-engine calls on the V_ref box are made in chunks of this size.
    max_expansions : int
        Upper bound on face-growth iterations.
    adaptive : bool
        ``True`` (default): sub-points only where they can change a metric
        (structure borders, steep dose, voxels whose dose range contains a
        level the metrics read; see :mod:`seedplan.evaluation._adaptive`),
        one sample per voxel elsewhere.  ``False``: the exact evaluation, every
        sub-point of every voxel (the reference; about 4x more dose evaluations).
    """

    points_per_mm3: float = DEFAULT_POINTS_PER_MM3
    boundary: str = "trilinear"
    vref_margin_mm: float = 10.0
    vref_step_mm: float = 10.0
    vref_scan_spacing_mm: float = 5.0
    max_points: int = DEFAULT_MAX_POINTS
    chunk_points: int = 1_000_000
    max_expansions: int = 50
    adaptive: bool = True

    def __post_init__(self) -> None:
        if self.boundary not in BOUNDARY_RULES:
            raise InputError(f"SamplingOptions.boundary must be one of {BOUNDARY_RULES}, got {self.boundary!r}")
        for name in ("points_per_mm3", "vref_step_mm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"SamplingOptions.{name} must be a number > 0, got {v!r}")
        for name in ("vref_margin_mm", "vref_scan_spacing_mm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"SamplingOptions.{name} must be a number >= 0, got {v!r}")
        for name in ("max_points", "chunk_points", "max_expansions"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise InputError(f"SamplingOptions.{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.adaptive, bool):
            raise InputError(f"SamplingOptions.adaptive must be True or False, got {self.adaptive!r}")


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    metrics : dict
        The metrics layout (see :func:`evaluate`).
    dvhs : dict
        Structure name -> :class:`DVH`.
    """

    metrics: dict
    dvhs: dict

    def to_dict(self, *, include_dvhs: bool = True) -> dict:
        """JSON-friendly copy: ``{"metrics": ..., "dvhs": {name: curve}}``.

        DVH curves are binned at 1 % of the prescription dose.
        """
        import copy

        out: dict[str, Any] = {"metrics": copy.deepcopy(self.metrics)}
        if include_dvhs:
            pd = self.metrics.get("prescription_Gy")
            out["dvhs"] = {n: d.to_dict(reference_dose_Gy=pd) for n, d in self.dvhs.items()}
        return out


# --------------------------------------------------------------------- helpers
def _role(s: Any) -> str:
    role = getattr(s, "role", None)
    value = role.value if isinstance(role, Enum) else role
    if not isinstance(value, str) or value.lower() not in ROLES:
        raise InputError(
            f"structure {getattr(s, 'name', '?')!r} has role {role!r}; valid roles are {', '.join(ROLES)}"
        )
    return value.lower()


def _call_dose(dose_at: DoseFn, pts: np.ndarray, what: str) -> np.ndarray:
    if len(pts) == 0:
        return np.zeros(0)
    try:
        d = np.asarray(dose_at(pts), dtype=float)
    except SeedplanError:
        raise
    except Exception as exc:  # the engine is a black box; say where it failed
        raise SeedplanError(f"dose_at failed while evaluating {what}: {exc}") from exc
    if d.shape != (len(pts),):
        raise InputError(
            f"dose_at must return one dose per point, shape ({len(pts)},), got {d.shape} for {what}"
        )
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise InputError(f"dose_at returned NaN, infinite or negative doses for {what}")
    return d


def dvh_of_structure(
    mask: Any,
    grid: Grid,
    dose_at: DoseFn,
    *,
    name: str = "structure",
    sampling: SamplingOptions = SamplingOptions(),
) -> DVH:
    """DVH of one mask from a dose callable (fine sampling, see :mod:`.sampling`)."""
    s = subdivisions_for(grid, points_per_mm3=sampling.points_per_mm3)
    sm = MaskSampler(mask, grid, s, boundary=sampling.boundary, name=name)
    smp = sm.samples(max_points=sampling.max_points)
    return DVH.from_samples(_call_dose(dose_at, smp.points_mm, f"structure {name!r}"), smp.weights_cm3, name=name)


class _Body:
    def __init__(self, mask: np.ndarray, grid: Grid) -> None:
        self.mask, self.grid = mask, grid

    def same_grid(self, grid: Grid) -> bool:
        """True when sub-points of ``grid``'s voxels fall in the same body voxel as their voxel centre."""
        return self.grid == grid or (self.grid.direction == grid.direction and self.grid.same_geometry(grid, tol_mm=1e-6))

    def contains(self, pts_mm: np.ndarray) -> np.ndarray:
        idx = np.rint(_to_index(self.grid, pts_mm)).astype(np.intp)
        nx, ny, nz = self.grid.size
        ok = (idx[:, 0] >= 0) & (idx[:, 0] < nx) & (idx[:, 1] >= 0) & (idx[:, 1] < ny)
        ok &= (idx[:, 2] >= 0) & (idx[:, 2] < nz)
        out = np.zeros(len(pts_mm), dtype=bool)
        v = idx[ok]
        out[ok] = self.mask[v[:, 2], v[:, 1], v[:, 0]]
        return out


def _initial_box(
    sampler: MaskSampler,
    dose_at: DoseFn,
    pd: float,
    opts: SamplingOptions,
    body: _Body | None,
    include_points_mm: np.ndarray | None,
    warnings: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The V_ref box before growth (k, j, i inclusive) and the growth step: steps 1 and 2 of the module docstring."""
    grid, name = sampler.grid, sampler.name
    shape = np.array(grid.shape)  # (nz, ny, nx)
    sp_kji = np.array(grid.spacing_mm)[::-1]
    bb_lo, bb_hi = sampler.bbox_kji
    margin = np.ceil(opts.vref_margin_mm / sp_kji).astype(int)
    step = np.maximum(1, np.ceil(opts.vref_step_mm / sp_kji).astype(int))
    lo = np.maximum(bb_lo - margin, 0)
    hi = np.minimum(bb_hi + margin, shape - 1)

    hot = []
    if include_points_mm is not None and len(include_points_mm):
        idx = np.rint(grid.world_to_index(include_points_mm))[:, ::-1].astype(int)
        inside = np.all((idx >= 0) & (idx < shape), axis=1)
        if not inside.all():
            warnings.append(
                f"{int((~inside).sum())} include_points_mm lie outside the grid of {name!r}; "
                "V_ref cannot count dose around them"
            )
        hot.append(idx[inside])
    if opts.vref_scan_spacing_mm > 0:
        stride = np.maximum(1, np.round(opts.vref_scan_spacing_mm / sp_kji).astype(int))
        axes = [np.arange(0, n, s) for n, s in zip(shape, stride)]
        kk, jj, ii = np.meshgrid(*axes, indexing="ij")
        cidx = np.stack([kk.ravel(), jj.ravel(), ii.ravel()], axis=1)
        for sl in range(0, len(cidx), opts.chunk_points):
            c = cidx[sl : sl + opts.chunk_points]
            pts = grid.index_to_world(c[:, ::-1].astype(float))
            if body is not None:
                keep = body.contains(pts)
                c, pts = c[keep], pts[keep]
            d = _call_dose(dose_at, pts, f"the coarse V_ref scan around {name!r}")
            hot.append(c[d >= pd])
    if hot:
        h = np.concatenate(hot, axis=0)
        if len(h):
            lo = np.minimum(lo, np.maximum(h.min(0) - margin, 0))
            hi = np.maximum(hi, np.minimum(h.max(0) + margin, shape - 1))
    return lo, hi, step


def _reference_volumes(
    sampler: MaskSampler,
    dose_at: DoseFn,
    pd: float,
    opts: SamplingOptions,
    body: _Body | None,
    include_points_mm: np.ndarray | None,
    warnings: list[str],
) -> dict[str, Any]:
    """Volumes outside the target receiving >= 1, 1.5, 2 PD, over a growing box (every sub-point: the exact path)."""
    grid, name = sampler.grid, sampler.name
    shape = np.array(grid.shape)  # (nz, ny, nx)
    lo, hi, step = _initial_box(sampler, dose_at, pd, opts, body, include_points_mm, warnings)

    s = sampler.subdivisions
    edge_hot = False
    for _ in range(opts.max_expansions):
        grown = False
        for ax in range(3):
            for side in (0, 1):
                flo, fhi = lo.copy(), hi.copy()
                if side == 0:
                    fhi[ax] = lo[ax]
                else:
                    flo[ax] = hi[ax]
                dmax = 0.0
                for ijk in iter_box_subpoints(grid, flo, fhi, s, chunk_points=opts.chunk_points):
                    pts = grid.index_to_world(ijk)
                    if body is not None:
                        pts = pts[body.contains(pts)]
                    if len(pts):
                        dmax = max(dmax, float(_call_dose(dose_at, pts, f"the V_ref box of {name!r}").max()))
                if dmax >= pd:
                    at_edge = lo[ax] == 0 if side == 0 else hi[ax] == shape[ax] - 1
                    if at_edge:
                        edge_hot = True
                    elif side == 0:
                        lo[ax] = max(0, lo[ax] - step[ax])
                        grown = True
                    else:
                        hi[ax] = min(shape[ax] - 1, hi[ax] + step[ax])
                        grown = True
        if not grown:
            break
    else:
        warnings.append(f"V_ref box of {name!r} still growing after {opts.max_expansions} steps")
    if edge_hot:
        warnings.append(
            f"the prescription isodose around {name!r} reaches the edge of its grid; V_ref may be underestimated"
        )

    v_out = np.zeros(3)
    n_out = 0
    thresholds = np.array([1.0, 1.5, 2.0]) * pd
    for ijk in iter_box_subpoints(grid, lo, hi, s, chunk_points=opts.chunk_points):
        ijk = ijk[~sampler.inside(ijk)]
        pts = grid.index_to_world(ijk)
        if body is not None:
            pts = pts[body.contains(pts)]
        n_out += len(pts)
        d = _call_dose(dose_at, pts, f"the V_ref box of {name!r}")
        v_out += (d[:, None] >= thresholds[None]).sum(0)
    v_out *= sampler.sub_volume_mm3 / 1000.0
    lower_mm = grid.index_to_world(lo[::-1].astype(float) - 0.5)
    upper_mm = grid.index_to_world(hi[::-1].astype(float) + 0.5)
    return {
        "outside_ref_cm3": float(v_out[0]),
        "outside_ref150_cm3": float(v_out[1]),
        "outside_ref200_cm3": float(v_out[2]),
        "region_volume_cm3": n_out * sampler.sub_volume_mm3 / 1000.0,
        "region_corner_lower_mm": [float(v) for v in lower_mm],
        "region_corner_upper_mm": [float(v) for v in upper_mm],
    }


def _statistics_of(role: str, pd: float) -> dict[str, Any]:
    """The dose levels and volumes whose DVH statistics the metrics of a role read (for adaptive sampling)."""
    if role == "target":  # V90, V100, V150, V200 (and V_T,ref), D90, D100
        return {"levels_Gy": [0.9 * pd, pd, 1.5 * pd, 2.0 * pd], "volume_fractions": [0.9, 1.0]}
    if role == "vertebral_body":  # V100, V150, D90, D100
        return {"levels_Gy": [pd, 1.5 * pd], "volume_fractions": [0.9, 1.0]}
    return {"volumes_cm3": [0.0, 0.1, 1.0, 2.0]}  # Dmax, D0.1cc, D1cc, D2cc


# ----------------------------------------------------------------- evaluate
def evaluate(
    structures: Sequence[Any],
    dose_at: DoseFn,
    prescription_Gy: float,
    *,
    body: Any = None,
    sampling: SamplingOptions | None = None,
    include_points_mm: Any = None,
    alpha_beta_oar_Gy: float = 2.0,
    repair_half_time_h: float = DEFAULT_REPAIR_HALF_TIME_H,
    half_life_d: float = I125_HALF_LIFE_D,
) -> Evaluation:
    """Evaluate a plan's dose on its structures.

    Parameters
    ----------
    structures : sequence
        Objects with ``.name`` (unique), ``.role`` (str or str-Enum: one of
        ``target, oar, vertebral_body, avoidance, body``), ``.mask`` (bool,
        [z, y, x]) and ``.grid`` (:class:`~seedplan.geometry.Grid`).
    dose_at : callable
        ``dose_at(points_mm (N, 3)) -> dose_Gy (N,)``, total dose (Gy) at
        patient LPS points.
    prescription_Gy : float
        Prescription dose PD (> 0).
    body : structure, optional
        Body contour restricting V_ref to tissue; defaults to the first
        structure with role ``body``.
    sampling : SamplingOptions, optional
        Sampling settings (default :class:`SamplingOptions()`).
    include_points_mm : array_like (M, 3), optional
        Points the V_ref region must contain (pass the seed positions).
    alpha_beta_oar_Gy, repair_half_time_h, half_life_d : float
        Radiobiology for the OAR ``EQD2*`` entries (cord defaults, section 1.3).

    Returns
    -------
    Evaluation
        ``.metrics``::

            {"prescription_Gy": PD,
             "target": {indices of the first target (see target_indices), "name": ...} or None,
             "targets": {name: indices},
             "oars": {name: {volume_cm3, Dmax_Gy, D0.1cc_Gy, D1cc_Gy, D2cc_Gy, Dmean_Gy,
                             EQD2max_Gy, EQD2_D0.1cc_Gy}},
             "avoidance": {name: same as oars},
             "vertebral_bodies": {name: {volume_cm3, Dmean_Gy, D90_Gy, D100_Gy, V100_pct, V150_pct}},
             "reference_volumes": {target name: {V_ref_cm3, V_ref150_cm3, V_ref200_cm3, region...}},
             "sampling": {...}, "radiobiology": {...},
             "not_evaluated": [body/bone names], "warnings": [...]}

        and ``.dvhs`` (name -> DVH) for every non-body structure.
    """
    opts = sampling if sampling is not None else SamplingOptions()
    if not isinstance(opts, SamplingOptions):
        raise InputTypeError(f"sampling must be a SamplingOptions, got {type(opts).__name__}")
    if not callable(dose_at):
        raise InputTypeError("dose_at must be callable: dose_at(points_mm (N, 3)) -> dose_Gy (N,)")
    try:
        pd = float(prescription_Gy)
    except (TypeError, ValueError):
        raise InputError(f"prescription_Gy must be a number > 0, got {prescription_Gy!r}") from None
    if not math.isfinite(pd) or pd <= 0:
        raise InputError(f"prescription_Gy must be a finite number > 0, got {prescription_Gy!r}")
    inc = None
    if include_points_mm is not None:
        inc = np.asarray(include_points_mm, dtype=float).reshape(-1, 3) if np.size(include_points_mm) else None
        if inc is not None and not np.all(np.isfinite(inc)):
            raise InputError("include_points_mm must be finite (M, 3) points in mm")

    structures = list(structures)
    names: set[str] = set()
    roles: dict[str, str] = {}
    for s in structures:
        for attr in ("name", "role", "mask", "grid"):
            if not hasattr(s, attr):
                raise InputTypeError(f"structures must have .name, .role, .mask and .grid; {s!r} has no .{attr}")
        if s.name in names:
            raise InputError(f"structure name {s.name!r} appears twice; names must be unique")
        names.add(s.name)
        roles[s.name] = _role(s)
        if not isinstance(s.grid, Grid):
            raise InputTypeError(f"grid of structure {s.name!r} must be a seedplan.Grid")
        if np.shape(s.mask) != s.grid.shape:
            raise GeometryError(
                f"mask of structure {s.name!r} has shape {np.shape(s.mask)}, its grid {s.grid.shape} (z, y, x)"
            )
    if body is None:
        body = next((s for s in structures if roles[s.name] == "body"), None)
    body_obj = None
    if body is not None:
        bmask = np.asarray(body.mask).astype(bool)
        if bmask.shape != body.grid.shape:
            raise GeometryError(f"mask of body {body.name!r} does not match its grid shape {body.grid.shape}")
        body_obj = _Body(bmask, body.grid)

    warnings: list[str] = []
    dvhs: dict[str, DVH] = {}
    metrics: dict[str, Any] = {
        "prescription_Gy": pd,
        "target": None,
        "targets": {},
        "oars": {},
        "avoidance": {},
        "vertebral_bodies": {},
        "reference_volumes": {},
        "sampling": {
            "points_per_mm3": opts.points_per_mm3,
            "boundary": opts.boundary,
            "subdivisions_ijk": {},
            "volume_scale": {},
            "adaptive": opts.adaptive,
            "vref_method": "target box grown until its faces are below PD, plus coarse-scan hot spots "
            "and include_points_mm; body-restricted when a body is given",
        },
        "radiobiology": {
            "alpha_beta_oar_Gy": alpha_beta_oar_Gy,
            "repair_half_time_h": repair_half_time_h,
            "half_life_d": half_life_d,
            "model": "permanent implant LQ, Dale 1985: BED = D(1 + D*lambda/((mu+lambda) alpha/beta))",
        },
        "not_evaluated": [s.name for s in structures if roles[s.name] in SKIPPED_ROLES],
        "warnings": warnings,
    }
    for s in structures:
        role = roles[s.name]
        if role in SKIPPED_ROLES:
            continue
        sub = subdivisions_for(s.grid, points_per_mm3=opts.points_per_mm3)
        sampler = MaskSampler(s.mask, s.grid, sub, boundary=opts.boundary, name=s.name)
        if opts.adaptive:
            n_cand = int(np.count_nonzero(sampler.interior | sampler.band))
            if n_cand > opts.max_points:
                raise ResourceError(
                    f"sampling {s.name} would need {n_cand:,} voxel centres (> max_points {opts.max_points:,}); "
                    "raise max_points"
                )
            dvh, scale, _n = adaptive_dvh(sampler, lambda p, what: _call_dose(dose_at, p, what),
                                          name=s.name, **_statistics_of(role, pd))
        else:
            smp = sampler.samples(max_points=opts.max_points)
            dose = _call_dose(dose_at, smp.points_mm, f"structure {s.name!r}")
            dvh, scale = DVH.from_samples(dose, smp.weights_cm3, name=s.name), smp.scale
        dvhs[s.name] = dvh
        metrics["sampling"]["subdivisions_ijk"][s.name] = list(sub)
        metrics["sampling"]["volume_scale"][s.name] = scale
        if role == "target":
            if opts.adaptive:
                lo, hi, step = _initial_box(sampler, dose_at, pd, opts, body_obj, inc, warnings)
                ref = adaptive_reference_volumes(sampler, lambda p, what: _call_dose(dose_at, p, what), pd, lo, hi,
                                                 step, body_obj, opts.max_expansions, warnings)
            else:
                ref = _reference_volumes(sampler, dose_at, pd, opts, body_obj, inc, warnings)
            v_ref = dvh.V_cc(pd) + ref["outside_ref_cm3"]
            v_150 = dvh.V_cc(1.5 * pd) + ref["outside_ref150_cm3"]
            v_200 = dvh.V_cc(2.0 * pd) + ref["outside_ref200_cm3"]
            ind = target_indices(dvh, pd, v_ref, v_150)
            ind["V_ref200_cm3"] = v_200
            metrics["targets"][s.name] = ind
            metrics["reference_volumes"][s.name] = {
                "V_ref_cm3": v_ref, "V_ref150_cm3": v_150, "V_ref200_cm3": v_200, **ref,
            }
            if metrics["target"] is None:
                metrics["target"] = {"name": s.name, **ind}
        elif role in ("oar", "canal", "avoidance"):
            ind = oar_indices(dvh)
            ind["EQD2max_Gy"] = eqd2_permanent_Gy(ind["Dmax_Gy"], alpha_beta_oar_Gy, half_life_d, repair_half_time_h)
            ind["EQD2_D0.1cc_Gy"] = eqd2_permanent_Gy(
                ind["D0.1cc_Gy"], alpha_beta_oar_Gy, half_life_d, repair_half_time_h
            )
            metrics["avoidance" if role == "avoidance" else "oars"][s.name] = ind
        else:  # vertebral body
            metrics["vertebral_bodies"][s.name] = {
                "volume_cm3": dvh.volume_cm3,
                "Dmean_Gy": dvh.mean_Gy,
                "D90_Gy": dvh.D(90.0),
                "D100_Gy": dvh.D(100.0),
                "V100_pct": dvh.V(pd),
                "V150_pct": dvh.V(1.5 * pd),
            }
    if len(metrics["targets"]) > 1 and metrics["target"]["name"] != COMBINED_TARGET:
        warnings.append(
            f"{len(metrics['targets'])} targets; 'target' holds the first ({metrics['target']['name']!r}), "
            "all are under 'targets'"
        )
    return Evaluation(metrics=metrics, dvhs=dvhs)
