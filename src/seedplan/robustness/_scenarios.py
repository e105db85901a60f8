"""Scenarios: a plan's seeds moved as the error model draws them, and the plan metrics of each.

The draws (:func:`~seedplan.plan._placement.draw_scenario`) live with the error model in the plan layer,
where the robust planner uses them too; this module evaluates the scenarios.

Reproducibility
---------------
Scenario ``k`` draws from its own stream,
``numpy.random.default_rng(numpy.random.SeedSequence(seed).spawn(n)[k])``
(built directly as ``SeedSequence(seed, spawn_key=(k,))``, the same sequence),
so it does not depend on how many scenarios are run, in which order or on how
many workers.  Each scenario draws, in this order, 5 standard normals per
needle (lateral x2, angle x2, depth), one standard normal per seed (jitter)
and one uniform per seed (loss), whatever the error model; the draws are then
scaled by the model's standard deviations, so two models differing by a scale
factor move the seeds in the same directions (common random numbers).
Scenario 0 is the nominal plan: no draw, the seeds exactly as planned.

Geometry
--------
Needle ``k`` with entry ``e``, planned unit direction ``d`` (entry to tip) and
an orthonormal pair ``b1, b2`` perpendicular to ``d``:

* lateral displacement ``L = s_lat (z0 b1 + z1 b2)``;
* tilt about the entry by the angle ``|t|``, ``t = s_ang (z2 b1 + z3 b2)``
  (radians), towards ``t``: a rotation ``R`` about ``d x t``;
* depth shift ``D = s_depth z4`` along the tilted track ``d' = R d``.

Seed ``i`` of the needle, planned at ``p`` with axis ``a``, moves by
``L + (R - I)(p - e) + (D + s_jit j_i) d'`` and turns to ``R a``; it is lost
when its uniform draw is below the loss probability.  The displacement is
added to ``p`` (never recomputed from the entry), so a zero error leaves every
coordinate exactly as planned.

Metrics
-------
The same samples and statistics as the exact evaluation of
:func:`seedplan.plan.evaluate_plan` (``SamplingOptions(adaptive=False)``): the
structures are sampled once per run with
:class:`~seedplan.evaluation.sampling.MaskSampler` and the default
:class:`~seedplan.evaluation.SamplingOptions`, the dose at the samples is
:func:`seedplan.total_dose` (tabulated) of the moved seeds, and D90, V100,
V150, V200 and the organs' D0.1cc follow the :class:`~seedplan.evaluation.DVH`
definitions (``dose_covering``).  The sampler gives every sample of a
structure the same weight, so the hottest-first cumulative volume does not
depend on the order of the doses: the sample at which it reaches a volume has
a fixed rank (found once with :func:`~seedplan.evaluation.dvh.dose_covering`),
and D_x is the dose of that rank, found by selection instead of a full sort.
V_y counts the samples at or above a dose.  Scenario 0 therefore reproduces
the exact evaluation of the plan bit for bit, and the plan's stored results
(the adaptive evaluation) to rounding (Dmean to ~1e-4).

An organ's D_v cc needs only its hottest samples.  Its samples are grouped
into 2 mm cells nested in 8 mm cells, each with the bounding box of its
samples.  In a scenario the dose anywhere in a box is at most the sum over
the (moved) seeds of S_j times the largest dose per U at the box's distance
or farther, at the angles the box makes with the seed's axis
(:mod:`._bound`: the exact kernel on a 0.2 mm x 0.5 deg lattice, times 1.01).
Cells are evaluated from the highest bound down until the needed rank is
reached, then every cell whose bound reaches the dose of that rank: no cell
left out can hold a sample hotter than it, so the result is the one of all
samples (exact, not an approximation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _validate as v
from ..dose import total_dose
from ..errors import InputError, InputTypeError
from ..evaluation.dvh import DVH, dose_covering
from ..evaluation.metrics import SamplingOptions
from ..evaluation.radiobiology import I125_HALF_LIFE_D, eqd2_permanent_Gy
from ..evaluation.sampling import MaskSampler, subdivisions_for
from ..imaging.structures import Role, StructureSet
from ..plan import OAR_LIMIT_METRICS, Plan, plan_structures
from ..plan._placement import ErrorModel, Geometry, ScenarioSeeds, draw_scenario, perpendicular_basis, scenario_rng
from ._bound import STEP_MM, bound_table, box_bounds, cos_edges

__all__ = [
    "MetricColumn",
    "RobustnessProblem",
    "ScenarioSeeds",
    "draw_scenario",
    "plan_geometry",
    "prepare_problem",
    "scenario_rng",
]

#: Sides of the cells an organ's samples are grouped into for the hottest-volume search (mm).
COARSE_CELL_MM = 8.0
FINE_CELL_MM = 2.0
#: The target's DVH band is reported at 0, 1, 2 ... 300 % of the prescription.
DVH_BAND_MAX_PCT = 300
#: Pairs farther apart than this are read from the largest table of the tabulated kernel in every
#: process (see :func:`_warm_tables`).
_FAR_MM = 1000.0

_TARGET_METRICS = ("D90_Gy", "V100_pct", "V150_pct", "V200_pct")
#: The first round of an organ's hottest-sample search evaluates the fine cells of highest bound holding
#: _FIRST_FINE x the needed samples, chosen in the coarse cells of highest bound holding _FIRST_COARSE x
#: them (a lower first estimate of the rank's dose only makes the second round larger).
_FIRST_COARSE = 6
_FIRST_FINE = 4


@dataclass(frozen=True)
class MetricColumn:
    """One metric of the scenarios: ``structure`` ``metric`` in ``group`` ("target" or "oars")."""

    group: str
    structure: str
    metric: str

    @property
    def label(self) -> str:
        """``"target D90_Gy"``."""
        return f"{self.structure} {self.metric}"

    @property
    def unit(self) -> str:
        return "%" if self.metric.endswith("_pct") else "Gy"


# ------------------------------------------------------------------------------------ geometry
def plan_geometry(plan: Plan) -> Geometry:
    """The needles and seeds of ``plan`` as arrays; the plan must have seeds."""
    if not isinstance(plan, Plan):
        raise InputTypeError(f"plan must be a seedplan.plan.Plan, got {type(plan).__name__}")
    if plan.n_seeds == 0:
        raise InputError("the plan has no seeds: a robustness analysis needs a plan with seeds")
    entries = np.array([n.entry_mm for n in plan.needles], dtype=float).reshape(-1, 3)
    dirs = np.array([n.direction for n in plan.needles], dtype=float).reshape(-1, 3)
    b1, b2 = zip(*(perpendicular_basis(d) for d in dirs)) if len(dirs) else ((), ())
    return Geometry(
        entries_mm=entries, directions=dirs, basis1=np.array(b1, dtype=float).reshape(-1, 3),
        basis2=np.array(b2, dtype=float).reshape(-1, 3),
        seed_needle=np.array([s.needle - 1 for s in plan.seeds], dtype=np.intp),
        positions_mm=plan.positions_mm, axes=plan.axes, strengths_U=plan.strengths_at_implant_U,
    )


# ------------------------------------------------------------------------------------ samples
@dataclass(eq=False)
class _Structure:
    """The samples of one evaluated structure and what its metrics need."""

    name: str
    group: str                   # "target" or "oars"
    points_mm: np.ndarray        # (N, 3), for organs ordered by cell
    weights_cm3: np.ndarray | None  # None when uniform (then ``weight`` is the common value)
    weight: float
    cum_cm3: np.ndarray | None   # hottest-first cumulative volume (uniform weights: order-free); target only
    volume_cm3: float
    metrics: tuple[str, ...]
    ranks: dict                  # metric -> rank (0 = hottest) for dose-at-volume metrics
    cells: _Cells | None = None            # organs: samples grouped into cells for the hottest-volume search

    @property
    def n(self) -> int:
        return len(self.points_mm)

    def take(self, fine: np.ndarray) -> np.ndarray:
        """The samples of the fine cells ``fine``."""
        return self.points_mm[_ranges(self.cells.fine_start, fine)]

    @property
    def uniform(self) -> bool:
        return self.weights_cm3 is None


def _rank(weights: np.ndarray, volume_cm3: float) -> int:
    """Rank (0 = hottest) of the sample at which the hottest-first cumulative ``weights`` reach ``volume_cm3``.

    Valid when the weights are all equal (then the cumulative volume does not depend on the order);
    uses :func:`dose_covering` on distinct decreasing doses, so it is that function's definition.
    """
    n = len(weights)
    ladder = np.arange(n, 0, -1, dtype=float)  # sample i (0 = hottest) has dose n - i
    return int(n - dose_covering(ladder, weights, volume_cm3))


def _organ_metrics(name: str, plan: Plan) -> tuple[str, ...]:
    """D0.1cc and every metric a goal of the prescription needs for this organ."""
    out = ["D0.1cc_Gy"]
    for metric in plan.prescription.limits_for(name):
        if metric in OAR_LIMIT_METRICS and metric not in out:
            out.append(metric)
    return tuple(out)


def _dose_volume_of(metric: str, volume_cm3: float) -> float | None:
    """The volume (cm3) whose hottest part a dose metric reads, or None for other metrics."""
    if metric == "D90_Gy":
        return 90.0 / 100.0 * volume_cm3
    if metric in ("Dmax_Gy", "EQD2max_Gy"):
        return 0.0
    if metric in ("D0.1cc_Gy", "EQD2_D0.1cc_Gy"):
        return min(0.1, volume_cm3)
    if metric == "D1cc_Gy":
        return min(1.0, volume_cm3)
    if metric == "D2cc_Gy":
        return min(2.0, volume_cm3)
    return None


def _rank_key(metric: str) -> str:
    return {"EQD2max_Gy": "Dmax_Gy", "EQD2_D0.1cc_Gy": "D0.1cc_Gy"}.get(metric, metric)


def _sample(structure: Any, opts: SamplingOptions) -> tuple[np.ndarray, np.ndarray]:
    sub = subdivisions_for(structure.grid, points_per_mm3=opts.points_per_mm3)
    smp = MaskSampler(structure.mask, structure.grid, sub, boundary=opts.boundary,
                      name=structure.name).samples(max_points=opts.max_points)
    return smp.points_mm, smp.weights_cm3


def _make_structure(name: str, group: str, points: np.ndarray, weights: np.ndarray, metrics: tuple[str, ...],
                    cells: bool) -> _Structure:
    uniform = bool(np.all(weights == weights[0]))
    cum = np.cumsum(weights)
    volume = float(cum[-1])
    ranks = {}
    for m in metrics:
        vol = _dose_volume_of(m, volume)
        if vol is not None and uniform:
            ranks[_rank_key(m)] = _rank(weights, vol)
    s = _Structure(name, group, points, None if uniform else weights, float(weights[0]), cum if group == "target"
                   else None, volume, metrics, ranks)
    if cells and uniform and "Dmean_Gy" not in metrics:
        _add_cells(s)
    elif not uniform:
        s.cum_cm3 = None
    return s


@dataclass(eq=False)
class _Cells:
    """An organ's samples in fine cells (:data:`FINE_CELL_MM`) nested in coarse ones (:data:`COARSE_CELL_MM`).

    The samples are ordered by coarse cell, then fine cell: fine cell ``f`` holds samples
    ``fine_start[f]:fine_start[f + 1]``, coarse cell ``c`` the fine cells
    ``coarse_start[c]:coarse_start[c + 1]``; each cell keeps the bounding box of its samples.
    """

    fine_start: np.ndarray
    fine_lo_mm: np.ndarray
    fine_hi_mm: np.ndarray
    coarse_start: np.ndarray
    coarse_lo_mm: np.ndarray
    coarse_hi_mm: np.ndarray

    @property
    def fine_counts(self) -> np.ndarray:
        return np.diff(self.fine_start)

    @property
    def coarse_counts(self) -> np.ndarray:
        return self.fine_start[self.coarse_start[1:]] - self.fine_start[self.coarse_start[:-1]]


def _ranges(start: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The concatenated index ranges ``start[i]:start[i + 1]`` for ``i`` in ``ids``."""
    first = start[ids]
    lengths = start[ids + 1] - first
    offsets = np.repeat(first - (np.cumsum(lengths) - lengths), lengths)
    return offsets + np.arange(int(lengths.sum()))


def _add_cells(s: _Structure) -> None:
    """Order an organ's samples by coarse and fine cell and store the cells' bounding boxes."""
    p = s.points_mm
    rel = p - p.min(axis=0)

    def keys(size: float) -> np.ndarray:
        q = np.floor(rel / size).astype(np.int64)
        dims = q.max(axis=0) + 1
        return (q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2]

    coarse, fine = keys(COARSE_CELL_MM), keys(FINE_CELL_MM)
    order = np.lexsort((fine, coarse))
    coarse, fine = coarse[order], fine[order]
    s.points_mm = np.ascontiguousarray(p[order])
    new_fine = np.r_[True, (fine[1:] != fine[:-1]) | (coarse[1:] != coarse[:-1])]
    fine_first = np.flatnonzero(new_fine)
    coarse_of_fine = coarse[fine_first]
    coarse_first = np.flatnonzero(np.r_[True, coarse_of_fine[1:] != coarse_of_fine[:-1]])
    lo = np.minimum.reduceat(s.points_mm, fine_first, axis=0)
    hi = np.maximum.reduceat(s.points_mm, fine_first, axis=0)
    s.cells = _Cells(
        fine_start=np.r_[fine_first, len(p)].astype(np.intp), fine_lo_mm=lo, fine_hi_mm=hi,
        coarse_start=np.r_[coarse_first, len(fine_first)].astype(np.intp),
        coarse_lo_mm=np.minimum.reduceat(lo, coarse_first, axis=0),
        coarse_hi_mm=np.maximum.reduceat(hi, coarse_first, axis=0),
    )


# ------------------------------------------------------------------------------------ problem
@dataclass(eq=False)
class RobustnessProblem:
    """Everything a worker needs to evaluate scenarios of one plan (picklable, scattered once).

    Build with :func:`prepare_problem`; :meth:`evaluate` gives one scenario,
    :meth:`evaluate_range` a chunk.
    """

    geometry: Geometry
    seed_model: Any
    formalism: str
    errors: ErrorModel
    seed: int
    prescription_Gy: float
    alpha_beta_oar_Gy: float
    repair_half_time_h: float
    structures: tuple[_Structure, ...]
    columns: tuple[MetricColumn, ...]
    bound_Gy_per_U: np.ndarray   # (R, A) from bound_table
    dvh_edges_Gy: np.ndarray

    # -------------------------------------------------------------------------------- dose
    def _dose(self, points: np.ndarray, seeds: ScenarioSeeds) -> np.ndarray:
        kept = seeds.kept
        if not kept.any() or len(points) == 0:
            return np.zeros(len(points))
        return total_dose(points, seeds.positions_mm[kept], self.geometry.strengths_U[kept], source=self.seed_model,
                          axes=seeds.axes[kept], formalism=self.formalism)

    def _organ_doses(self, s: _Structure, seeds: ScenarioSeeds) -> tuple[np.ndarray, int]:
        """Doses of enough of the organ's hottest samples for its ranks (all of them without cells).

        1. bound every coarse cell; in the coarse cells of highest bound that hold a few times ``need``
           samples, evaluate the fine cells of highest bound holding a few times ``need`` samples: the
           dose of rank ``need - 1`` among them, ``low``, is at most that of all samples;
        2. evaluate every other fine cell whose bound reaches ``low``, in coarse cells whose bound
           reaches it.  A sample left out is below ``low``, so below the final dose of that rank.
        """
        if s.cells is None or not s.ranks:
            return self._dose(s.points_mm, seeds), s.n
        kept = seeds.kept
        if not kept.any():
            return np.zeros(s.n), 0
        c = s.cells
        need = max(s.ranks.values()) + 1
        pos, ax, strength = (np.ascontiguousarray(seeds.positions_mm[kept]), np.ascontiguousarray(seeds.axes[kept]),
                             np.ascontiguousarray(self.geometry.strengths_U[kept]))
        ub_coarse = self._bounds(c.coarse_lo_mm, c.coarse_hi_mm, pos, ax, strength)
        order = np.argsort(-ub_coarse, kind="stable")
        top = int(np.searchsorted(np.cumsum(c.coarse_counts[order]), _FIRST_COARSE * need)) + 1
        fine = _ranges(c.coarse_start, order[:top])
        ub_fine = self._bounds(c.fine_lo_mm[fine], c.fine_hi_mm[fine], pos, ax, strength)
        fine = fine[np.argsort(-ub_fine, kind="stable")]
        first = fine[: int(np.searchsorted(np.cumsum(c.fine_counts[fine]), _FIRST_FINE * need)) + 1]
        dose = self._dose(s.take(first), seeds)
        low = _kth_largest(dose, need - 1)
        reach = order[: int(np.count_nonzero(ub_coarse >= low))]
        fine = _ranges(c.coarse_start, reach)
        done = np.zeros(len(c.fine_lo_mm), dtype=bool)
        done[first] = True
        fine = fine[~done[fine]]
        fine = fine[self._bounds(c.fine_lo_mm[fine], c.fine_hi_mm[fine], pos, ax, strength) >= low]
        if len(fine):
            dose = np.concatenate([dose, self._dose(s.take(fine), seeds)])
        return dose, len(dose)

    def _bounds(self, lo_mm: np.ndarray, hi_mm: np.ndarray, seeds_mm: np.ndarray, axes: np.ndarray,
                strengths_U: np.ndarray) -> np.ndarray:
        """Per box, an upper bound of the dose anywhere in it (:func:`._bound.box_bounds`)."""
        return box_bounds(np.ascontiguousarray(lo_mm), np.ascontiguousarray(hi_mm), seeds_mm, axes, strengths_U,
                          self.bound_Gy_per_U, 1.0 / STEP_MM, cos_edges(self.bound_Gy_per_U.shape[1]))

    # ------------------------------------------------------------------------------- metrics
    def _structure_metrics(self, s: _Structure, dose: np.ndarray) -> dict[str, float]:
        """The metrics of ``s`` from the doses of all its samples, or of its hottest ones (``s.ranks`` only)."""
        if not s.uniform:
            return self._metrics_from_dvh(s, DVH.from_samples(dose, s.weights_cm3, name=s.name))
        out: dict[str, float] = {}
        values = _kth_largest_many(dose, s.ranks)
        pd = self.prescription_Gy
        for m in s.metrics:
            if m in s.ranks:
                out[m] = values[m]
            elif m.startswith("V") and m.endswith("_pct"):
                level = {"V100_pct": pd, "V150_pct": 1.5 * pd, "V200_pct": 2.0 * pd}[m]
                count = int(np.count_nonzero(dose >= level))
                v_cc = float(s.cum_cm3[count - 1]) if count > 0 else 0.0
                out[m] = 100.0 * v_cc / s.volume_cm3
            elif m == "Dmean_Gy":
                desc = np.ascontiguousarray(np.sort(dose)[::-1])
                out[m] = float(np.dot(desc, np.full(len(desc), s.weight)) / s.volume_cm3)
            elif m == "EQD2max_Gy":
                out[m] = self._eqd2(values["Dmax_Gy"])
            elif m == "EQD2_D0.1cc_Gy":
                out[m] = self._eqd2(values["D0.1cc_Gy"])
        return out

    def _eqd2(self, dose_Gy: float) -> float:
        return float(eqd2_permanent_Gy(dose_Gy, self.alpha_beta_oar_Gy, I125_HALF_LIFE_D, self.repair_half_time_h))

    def _metrics_from_dvh(self, s: _Structure, h: DVH) -> dict[str, float]:
        pd = self.prescription_Gy
        full = {"D90_Gy": h.D(90.0), "V100_pct": 100.0 * h.V_cc(pd) / h.volume_cm3,
                "V150_pct": 100.0 * h.V_cc(1.5 * pd) / h.volume_cm3, "V200_pct": 100.0 * h.V_cc(2.0 * pd) / h.volume_cm3,
                "Dmax_Gy": h.max_Gy, "D0.1cc_Gy": h.D_cc(0.1), "D1cc_Gy": h.D_cc(1.0), "D2cc_Gy": h.D_cc(2.0),
                "Dmean_Gy": h.mean_Gy}
        full["EQD2max_Gy"] = self._eqd2(full["Dmax_Gy"])
        full["EQD2_D0.1cc_Gy"] = self._eqd2(full["D0.1cc_Gy"])
        return {m: float(full[m]) for m in s.metrics}

    def _dvh_band(self, s: _Structure, dose: np.ndarray) -> np.ndarray:
        """% of the target receiving at least each edge of :attr:`dvh_edges_Gy` (for display)."""
        step = self.dvh_edges_Gy[1]
        nb = len(self.dvh_edges_Gy)
        idx = np.minimum(np.floor(dose / step), nb - 1).astype(np.intp)
        w = s.weights_cm3 if s.weights_cm3 is not None else None
        counts = np.bincount(idx, weights=w, minlength=nb)
        if w is None:
            counts = counts * s.weight
        at_least = np.cumsum(counts[::-1])[::-1]
        return (100.0 * at_least / s.volume_cm3).astype(np.float32)

    # ------------------------------------------------------------------------------ scenarios
    def scenario_seeds(self, k: int) -> ScenarioSeeds:
        """The seeds of scenario ``k``."""
        return draw_scenario(self.geometry, self.errors, self.seed, k)

    def evaluate(self, k: int) -> dict[str, Any]:
        """Scenario ``k``: ``{"values": {MetricColumn: value}, "dvh_pct", "seeds_lost", "max_shift_mm",
        "points"}`` (points: dose points evaluated)."""
        _warm_tables(self)
        row, dvh, lost, shift, points = self._evaluate(int(k))
        return {"values": dict(zip(self.columns, row.tolist())), "dvh_pct": dvh, "seeds_lost": lost,
                "max_shift_mm": shift, "points": points}

    def _evaluate(self, k: int) -> tuple[np.ndarray, np.ndarray, int, float, int]:
        seeds = self.scenario_seeds(k)
        values: dict[tuple[str, str], float] = {}
        dvh = np.zeros(len(self.dvh_edges_Gy), dtype=np.float32)
        points = 0
        for s in self.structures:
            if s.group == "target":
                dose = self._dose(s.points_mm, seeds)
                n_eval = s.n
                dvh = self._dvh_band(s, dose)
            else:
                dose, n_eval = self._organ_doses(s, seeds)
            points += n_eval
            for m, val in self._structure_metrics(s, dose).items():
                values[(s.name, m)] = val
        row = np.array([values[(c.structure, c.metric)] for c in self.columns], dtype=float)
        shift = float(seeds.shift_mm[seeds.kept].max()) if seeds.kept.any() else 0.0
        return row, dvh, int(seeds.lost.sum()), shift, points

    def evaluate_range(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Scenarios ``start`` to ``stop - 1`` as arrays: ``index, values (n, C), dvh_pct (n, B),
        seeds_lost, max_shift_mm, points``."""
        _warm_tables(self)
        ks = np.arange(int(start), int(stop))
        out = {"index": ks, "values": np.empty((len(ks), len(self.columns))),
               "dvh_pct": np.empty((len(ks), len(self.dvh_edges_Gy)), dtype=np.float32),
               "seeds_lost": np.empty(len(ks), dtype=np.int64), "max_shift_mm": np.empty(len(ks)),
               "points": np.empty(len(ks), dtype=np.int64)}
        for i, k in enumerate(ks):
            row, dvh, lost, shift, pts = self._evaluate(int(k))
            out["values"][i] = row
            out["dvh_pct"][i] = dvh
            out["seeds_lost"][i] = lost
            out["max_shift_mm"][i] = shift
            out["points"][i] = pts
        return out


def _kth_largest(dose: np.ndarray, rank: int) -> float:
    """The dose of rank ``rank`` (0 = hottest)."""
    n = len(dose)
    pos = n - 1 - min(rank, n - 1)
    return float(np.partition(dose, pos)[pos])


def _kth_largest_many(dose: np.ndarray, ranks: dict) -> dict:
    """``{key: dose of rank}`` for several ranks with one selection."""
    if not ranks:
        return {}
    n = len(dose)
    pos = {key: n - 1 - min(r, n - 1) for key, r in ranks.items()}
    part = np.partition(dose, sorted(set(pos.values())))
    return {key: float(part[p]) for key, p in pos.items()}


def _warm_tables(problem: RobustnessProblem) -> None:
    """Make the tabulated kernel's table as large as it gets in this process (once; cheap afterwards).

    The kernel's table grows with the farthest seed-point pair it has met and is kept per process;
    pairs beyond its reach are evaluated exactly.  Growing it to its largest size first makes every
    dose of a run independent of what the process computed before (so of the number of workers).
    Only pairs farther than 128 mm are concerned.
    """
    g = problem.geometry
    far = g.positions_mm.mean(axis=0, keepdims=True) + np.array([[_FAR_MM, 0.0, 0.0]])
    total_dose(far, g.positions_mm, g.strengths_U, source=problem.seed_model, axes=g.axes,
               formalism=problem.formalism)


def evaluated_structures(plan: Plan, structures: StructureSet) -> list[Any]:
    """The plan's target (the first) and its organs at risk (role oar or canal), as :func:`evaluate_plan` has them."""
    if not isinstance(structures, StructureSet):
        raise InputTypeError(f"structures must be a StructureSet, got {type(structures).__name__}")
    every = plan_structures(plan, structures)
    keep = [s for s in every.values() if s.role in (Role.TARGET, Role.OAR, Role.CANAL) and not s.is_empty]
    targets = [s for s in every.targets if not s.is_empty]
    if not targets:
        raise InputError("the structures have no (non-empty) target: a robustness analysis needs the plan's target")
    return [targets[0]] + [s for s in keep if s.role is not Role.TARGET]


def prepare_problem(plan: Plan, structures: StructureSet, errors: ErrorModel, seed: int) -> RobustnessProblem:
    """Sample the plan's target and organs once and collect what scenarios need.

    Parameters
    ----------
    plan : Plan
        A plan with seeds.
    structures : StructureSet
        The case's structures (the plan's derived ones are added, as :func:`seedplan.plan.evaluate_plan` does).
    errors : ErrorModel
    seed : int
    """
    if not isinstance(errors, ErrorModel):
        raise InputTypeError(f"errors must be an ErrorModel, got {type(errors).__name__}")
    seed = v.integer(seed, "seed", lo=0, hi=2**63 - 1)
    geometry = plan_geometry(plan)
    opts = SamplingOptions()
    chosen = evaluated_structures(plan, structures)
    samples: list[_Structure] = []
    columns: list[MetricColumn] = []
    for i, st in enumerate(chosen):
        points, weights = _sample(st, opts)
        if i == 0:
            s = _make_structure(st.name, "target", points, weights, _TARGET_METRICS, False)
        else:
            s = _make_structure(st.name, "oars", points, weights, _organ_metrics(st.name, plan), True)
        samples.append(s)
        columns.extend(MetricColumn(s.group, s.name, m) for m in s.metrics)
    pd = float(plan.prescription.dose_Gy)
    edges = np.arange(DVH_BAND_MAX_PCT + 1) * (pd / 100.0)
    return RobustnessProblem(
        geometry=geometry, seed_model=plan.seed_model, formalism=plan.formalism, errors=errors, seed=seed,
        prescription_Gy=pd, alpha_beta_oar_Gy=plan.prescription.alpha_beta_cord_Gy,
        repair_half_time_h=plan.prescription.repair_half_time_h, structures=tuple(samples), columns=tuple(columns),
        bound_Gy_per_U=bound_table(plan.seed_model, plan.formalism), dvh_edges_Gy=edges,
    )

