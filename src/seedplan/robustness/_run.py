"""Run the scenarios of a robustness analysis on Dask and summarise them.

:func:`run_robustness` samples the plan's structures once
(:func:`~seedplan.robustness.prepare_problem`), scatters that problem to every
worker once, submits the scenarios in chunks and gathers the chunks as they
finish (progress on the ``seedplan`` logger).  Without a scheduler address it
starts a :class:`distributed.LocalCluster` of process workers with one thread
each (numba, OpenMP and BLAS limited to one thread per task); with one it connects to
that cluster, whose workers must be able to import seedplan.

Every scenario draws from its own random stream and the dose of a point does
not depend on which other points or scenarios a worker computed, so the
results, and :meth:`RobustnessResult.to_dict`, are the same on any number of
workers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .. import _validate as v
from .._dask import WORKER_ENV, QuietDask, cluster_arguments, default_workers, open_client
from ..errors import InputError, InputTypeError, SeedplanError
from ..imaging.structures import StructureSet
from ..plan import Goal, Plan
from ..plan._placement import CITATIONS, ErrorModel, RobustnessOptions
from ._scenarios import (
    MetricColumn,
    RobustnessProblem,
    evaluated_structures,
    plan_geometry,
    prepare_problem,
)

__all__ = ["FORMAT", "VERSION", "WORKER_ENV", "RobustnessResult", "run_robustness"]

log = logging.getLogger("seedplan")

FORMAT = "seedplan-robustness"
VERSION = 1

_PERCENTILES = (5.0, 50.0, 95.0)


@dataclass(frozen=True, eq=False)
class RobustnessResult:
    """The scenarios of a robustness analysis and their summary.

    Attributes
    ----------
    options : RobustnessOptions
        Error model, number of perturbed scenarios N and seed.
    plan_summary : dict
        What the plan is (case name, prescription, seeds, needles, seed model, formalism).
    columns : tuple of MetricColumn
        The metrics, in the order of the columns of :attr:`values`.
    values : (N + 1, C) array
        Row ``k`` is scenario ``k``; row 0 is the nominal plan.
    dvh_edges_Gy : (B,) array
        Doses at which the target's DVH is kept (0-300 % of the prescription, 1 % steps).
    dvh_pct : (N + 1, B) float32 array
        % of the target receiving at least each edge, per scenario.
    seeds_lost, max_shift_mm : (N + 1,) arrays
        Seeds lost and the largest seed displacement of each scenario.
    goals : tuple of Goal
        The plan's goals (:meth:`~seedplan.plan.Prescription.goals_for_metrics`).
    nominal_differences : tuple of str or None
        Metrics whose scenario-0 value differs from the plan's stored results (empty: all equal;
        None: the plan holds no results).
    run : dict
        How the run went (workers, scheduler, seconds, scenarios per second, dose points evaluated, the
        workers' CPU time per scenario);
        not part of :meth:`to_dict`, which depends only on the plan, the structures and the options.
    """

    options: RobustnessOptions
    plan_summary: Mapping[str, Any]
    columns: tuple[MetricColumn, ...]
    values: np.ndarray
    dvh_edges_Gy: np.ndarray
    dvh_pct: np.ndarray
    seeds_lost: np.ndarray
    max_shift_mm: np.ndarray
    goals: tuple[Goal, ...]
    nominal_differences: tuple[str, ...] | None
    run: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_scenarios(self) -> int:
        """Perturbed scenarios N (scenario 0, the nominal plan, not counted)."""
        return len(self.values) - 1

    def column(self, structure: str, metric: str) -> np.ndarray:
        """The values of one metric over scenarios 0..N."""
        for i, c in enumerate(self.columns):
            if c.structure == structure and c.metric == metric:
                return self.values[:, i]
        raise InputError(f"no metric {metric!r} of {structure!r} in this robustness result; it has "
                         f"{', '.join(c.label for c in self.columns)}")

    def _goal_column(self, g: Goal) -> int:
        for i, c in enumerate(self.columns):
            if c.group == g.group and c.structure == g.structure and c.metric == g.metric:
                return i
        raise InputError(f"goal {g.label!r} has no metric column")  # pragma: no cover - goals come from the columns

    def goal_passed(self) -> np.ndarray:
        """``(N + 1, G)`` bool: whether scenario k meets goal g."""
        out = np.zeros((len(self.values), len(self.goals)), dtype=bool)
        for j, g in enumerate(self.goals):
            col = self.values[:, self._goal_column(g)]
            out[:, j] = np.isfinite(col) & (col >= g.limit if g.at_least else col <= g.limit)
        return out

    def metric_summary(self) -> list[dict[str, Any]]:
        """Per metric: nominal, mean, SD, P5, P50, P95, min and max over scenarios 1..N."""
        out = []
        for i, c in enumerate(self.columns):
            x = self.values[1:, i]
            p5, p50, p95 = (float(p) for p in np.percentile(x, _PERCENTILES))
            dev = x - x[0]  # mean and SD about the first value: exactly that value and 0 when all are equal
            out.append({"structure": c.structure, "group": c.group, "metric": c.metric, "label": c.label,
                        "unit": c.unit, "nominal": float(self.values[0, i]), "mean": float(x[0] + np.mean(dev)),
                        "sd": float(np.std(dev, ddof=1)) if len(x) > 1 else 0.0, "p5": p5, "p50": p50, "p95": p95,
                        "min": float(np.min(x)), "max": float(np.max(x))})
        return out

    def goal_summary(self) -> list[dict[str, Any]]:
        """Per goal: its nominal value and result, and the probability of meeting it over scenarios 1..N."""
        passed = self.goal_passed()
        out = []
        for j, g in enumerate(self.goals):
            out.append({"goal": g.label, "structure": g.structure, "metric": g.metric, "comparison": g.comparison,
                        "limit": g.limit, "nominal_value": float(self.values[0, self._goal_column(g)]),
                        "nominal_passed": bool(passed[0, j]), "probability": float(np.mean(passed[1:, j]))})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The content of ``robustness.json``: a function of the plan, the structures and the options only."""
        passed = self.goal_passed()
        band = np.percentile(self.dvh_pct[1:].astype(float), _PERCENTILES, axis=0)
        shift = self.max_shift_mm[1:]
        lost = self.seeds_lost[1:]
        return {
            "format": FORMAT,
            "version": VERSION,
            "plan": dict(self.plan_summary),
            "robustness": self.options.to_dict(),
            "error_model_sources": dict(CITATIONS),
            "scenarios": {
                "perturbed": self.n_scenarios,
                "nominal": "scenario 0 is the plan as planned; statistics are over scenarios 1..N",
                "random_streams": "scenario k draws from numpy.random.default_rng(numpy.random.SeedSequence(seed)"
                                  ".spawn(N + 1)[k])",
                "percentiles": "numpy.percentile, linear interpolation",
            },
            "nominal_matches_plan_results": None if self.nominal_differences is None else not self.nominal_differences,
            "nominal_differences": None if self.nominal_differences is None else list(self.nominal_differences),
            "metrics": self.metric_summary(),
            "goals": self.goal_summary(),
            "all_goals_probability": float(np.mean(passed[1:].all(axis=1))) if len(self.goals) else 1.0,
            "seeds_lost": {"mean": float(np.mean(lost)), "max": int(np.max(lost)),
                           "probability_any": float(np.mean(lost > 0))},
            "max_seed_shift_mm": {"mean": float(np.mean(shift)), "p50": float(np.percentile(shift, 50.0)),
                                  "p95": float(np.percentile(shift, 95.0)), "max": float(np.max(shift))},
            "target_dvh_band": {
                "structure": next((c.structure for c in self.columns if c.group == "target"), None),
                "dose_Gy": [round(float(d), 6) for d in self.dvh_edges_Gy],
                "nominal_pct": [round(float(p), 4) for p in self.dvh_pct[0]],
                "p5_pct": [round(float(p), 4) for p in band[0]],
                "p50_pct": [round(float(p), 4) for p in band[1]],
                "p95_pct": [round(float(p), 4) for p in band[2]],
            },
        }


# ----------------------------------------------------------------------------------------- helpers
def _plan_summary(plan: Plan, problem: RobustnessProblem) -> dict[str, Any]:
    case = plan.case if isinstance(plan.case, Mapping) else {}
    return {"case": str(case.get("name", "")), "prescription_Gy": problem.prescription_Gy, "seeds": plan.n_seeds,
            "needles": len(plan.needles), "activity_mCi": plan.seeds[0].activity_mCi,
            "seed_model": plan.seed_model.name, "formalism": plan.formalism,
            "structures": [s.name for s in problem.structures]}


def _stored(plan: Plan, c: MetricColumn) -> Any:
    res = plan.results or {}
    block = res.get("target") if c.group == "target" else (res.get("oars") or {}).get(c.structure)
    return None if not isinstance(block, Mapping) else block.get(c.metric)


#: Scenario 0 is the exact evaluation; the plan's stored results are the adaptive one (V_x and D_x equal to
#: rounding, Dmean to ~1e-4, :mod:`seedplan.evaluation._adaptive`).  A larger difference means the plan or
#: its case changed since the plan was evaluated.
NOMINAL_RTOL = 1e-3


def _nominal_differences(plan: Plan, columns: tuple[MetricColumn, ...], nominal: np.ndarray) -> tuple[str, ...] | None:
    if not plan.results or not plan.results.get("target"):
        return None
    out = []
    for c, x in zip(columns, nominal):
        stored = _stored(plan, c)
        if stored is None or not np.isclose(float(x), float(stored), rtol=NOMINAL_RTOL, atol=1e-9):
            out.append(f"{c.label}: scenario 0 {float(x)!r}, plan {stored!r}")
    return tuple(out)


def _goals(plan: Plan, problem: RobustnessProblem, nominal: np.ndarray) -> tuple[Goal, ...]:
    layout: dict[str, Any] = {"prescription_Gy": problem.prescription_Gy, "target": None, "oars": {}, "avoidance": {}}
    for c, x in zip(problem.columns, nominal):
        if c.group == "target":
            layout["target"] = layout["target"] or {"name": c.structure}
            layout["target"][c.metric] = float(x)
        else:
            layout["oars"].setdefault(c.structure, {})[c.metric] = float(x)
    return tuple(plan.prescription.goals_for_metrics(layout))


def _warm_worker(seed_model: Any, formalism: str) -> None:
    """A Dask task run once on each worker while the client samples the structures: load the numba
    kernels and build the dose tables, so that the first chunk does not pay for them."""
    import numba

    from ..dose import total_dose
    from ._bound import box_bounds, cos_edges

    numba.set_num_threads(1)
    seeds = np.zeros((1, 3))
    total_dose(np.array([[1000.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), seeds, np.ones(1), source=seed_model, formalism=formalism)
    box_bounds(np.zeros((1, 3)), np.ones((1, 3)), seeds, np.array([[0.0, 0.0, 1.0]]), np.ones(1), np.ones((2, 18)),
               5.0, cos_edges(18))


def _run_chunk(problem: RobustnessProblem, start: int, stop: int) -> dict[str, np.ndarray]:
    """A Dask task: scenarios ``start`` .. ``stop - 1`` on one thread."""
    import numba

    numba.set_num_threads(1)
    t0 = time.thread_time()
    out = problem.evaluate_range(start, stop)
    out["cpu_s"] = time.thread_time() - t0
    return out


def _chunks(total: int, n_workers: int, chunk_size: int | None) -> list[tuple[int, int]]:
    size = chunk_size or max(1, min(25, math.ceil(total / (max(1, n_workers) * 10))))
    return [(a, min(total, a + size)) for a in range(0, total, size)]


# ------------------------------------------------------------------------------------------- the run
def run_robustness(
    plan: Plan,
    structures: StructureSet,
    options: RobustnessOptions | None = None,
    *,
    errors: ErrorModel | None = None,
    scenarios: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    processes: bool = True,
    chunk_size: int | None = None,
    problem: RobustnessProblem | None = None,
) -> RobustnessResult:
    """The plan's metrics over N scenarios of placement errors, on Dask.

    Parameters
    ----------
    plan : Plan
        A plan with seeds (its stored results are compared with scenario 0).
    structures : StructureSet
        The case's structures (the plan's derived structures are added).
    options : RobustnessOptions, optional
        Error model, N and seed (default :class:`RobustnessOptions()`); ``errors``, ``scenarios`` and
        ``seed`` override its fields.
    workers : int, optional
        Workers of the local cluster (default: the usable cores).  Not with ``scheduler`` or ``client``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``) to run on instead of a local cluster.
    client : distributed.Client, optional
        A client to use as it is (not closed afterwards).
    processes : bool
        Local cluster of processes (default) or of threads in this process.
    chunk_size : int, optional
        Scenarios per task (default: about 10 tasks per worker, at most 25 scenarios each).
    problem : RobustnessProblem, optional
        The plan's structures sampled earlier (:func:`prepare_problem` on this plan and these structures),
        to run several error models without sampling again; its error model and seed are replaced by
        the options'.

    Returns
    -------
    RobustnessResult
    """
    opts = options if options is not None else RobustnessOptions()
    if not isinstance(opts, RobustnessOptions):
        raise InputTypeError(f"options must be a RobustnessOptions, got {type(opts).__name__}")
    changes = {k: x for k, x in (("errors", errors), ("scenarios", scenarios), ("seed", seed)) if x is not None}
    opts = replace(opts, **changes) if changes else opts
    workers, scheduler = cluster_arguments(workers, scheduler, client)
    if chunk_size is not None:
        chunk_size = v.integer(chunk_size, "chunk_size", lo=1, hi=100_000)
    v.flag(processes, "processes")

    quiet = QuietDask() if client is None and scheduler is None else contextlib.nullcontext()
    with quiet:
        return _run(plan, structures, opts, workers, scheduler, client, processes, chunk_size, problem)


def _run(plan: Plan, structures: StructureSet, opts: RobustnessOptions, workers: int | None, scheduler: str | None,
         client: Any, processes: bool, chunk_size: int | None, problem: RobustnessProblem | None) -> RobustnessResult:
    t0 = time.perf_counter()
    geometry = plan_geometry(plan)            # the cheap checks first: no cluster for a plan that cannot run
    evaluated_structures(plan, structures)
    if problem is not None:
        if not isinstance(problem, RobustnessProblem):
            raise InputTypeError(f"problem must be a RobustnessProblem, got {type(problem).__name__}")
        if not np.array_equal(problem.geometry.positions_mm, geometry.positions_mm):
            raise InputError("problem was prepared for another plan (its seeds differ); prepare it for this plan")
    total = opts.scenarios + 1
    own = client is None
    cluster = None
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        # sample the structures in a thread while the cluster starts and its workers load the kernels
        log.info("robustness: sampling the target and organs at risk of a plan of %d seeds", plan.n_seeds)
        if problem is None:
            pending = pool.submit(prepare_problem, plan, structures, opts.errors, opts.seed)
        else:
            pending = pool.submit(replace, problem, errors=opts.errors, seed=opts.seed)
        if own:
            log.info("robustness: starting %s", scheduler or f"a local cluster of {workers or default_workers()} "
                     "worker(s)")
            client, cluster = open_client(workers, scheduler, processes)
        try:
            client.wait_for_workers(1, timeout=60)
        except TimeoutError:
            raise InputError("the Dask cluster has no worker (none joined within 60 s)") from None
        t_cluster = time.perf_counter() - t0
        addresses = list(client.scheduler_info().get("workers", {}))
        warm = [client.submit(_warm_worker, plan.seed_model, plan.formalism, workers=[a], allow_other_workers=False,
                              pure=False) for a in addresses]
        problem = pending.result()
        t_prepare = time.perf_counter() - t0
    except BaseException:
        if own:
            client is not None and client.close()
            cluster is not None and cluster.close()
        raise
    finally:
        pool.shutdown(wait=True)
    try:
        from distributed import as_completed

        n_workers = len(addresses) or 1
        log.info("robustness: %d scenarios (scenario 0 nominal) on %d worker(s)", total, n_workers)
        t2 = time.perf_counter()
        # a key of its own (hash=False): a problem equal to one of an earlier run on the same client must not
        # share that run's key, which the earlier run releases
        job = client.scatter(problem, broadcast=True, hash=False)
        spans = _chunks(total, n_workers, chunk_size)
        futures = {client.submit(_run_chunk, job, a, b, pure=False): (a, b) for a, b in spans}
        values = np.empty((total, len(problem.columns)))
        dvh = np.empty((total, len(problem.dvh_edges_Gy)), dtype=np.float32)
        lost = np.empty(total, dtype=np.int64)
        shift = np.empty(total)
        points = np.empty(total, dtype=np.int64)
        done, next_pct, cpu_s = 0, 10, 0.0
        for fut in as_completed(list(futures)):
            try:
                part = fut.result()
            except SeedplanError:
                raise
            except Exception as exc:  # a worker without seedplan, out of memory...: say where, in one line
                a, b = futures[fut]
                which = f"scenarios {a}-{b - 1}" if b - a > 1 else f"scenario {a}"
                raise SeedplanError(f"a Dask worker failed on {which}: {type(exc).__name__}: {exc} "
                                    "(the workers need seedplan and its dependencies)") from exc
            idx = part["index"]
            values[idx] = part["values"]
            dvh[idx] = part["dvh_pct"]
            lost[idx] = part["seeds_lost"]
            shift[idx] = part["max_shift_mm"]
            points[idx] = part["points"]
            cpu_s += float(part.get("cpu_s", 0.0))
            fut.release()
            done += len(idx)
            pct = 100 * done // total
            if pct >= next_pct or done == total:
                log.info("robustness: %d/%d scenarios (%d %%)", done, total, pct)
                next_pct = (pct // 10 + 1) * 10
        t_run = time.perf_counter() - t2
        job.release()
        del warm
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()

    nominal = values[0]
    result = RobustnessResult(
        options=opts, plan_summary=_plan_summary(plan, problem), columns=problem.columns, values=values,
        dvh_edges_Gy=problem.dvh_edges_Gy, dvh_pct=dvh, seeds_lost=lost, max_shift_mm=shift,
        goals=_goals(plan, problem, nominal), nominal_differences=_nominal_differences(plan, problem.columns, nominal),
        run={"workers": n_workers, "scheduler": scheduler or ("given client" if not own else "local cluster"),
             "prepare_s": round(t_prepare, 3), "cluster_s": round(t_cluster, 3), "scenarios_s": round(t_run, 3),
             "total_s": round(time.perf_counter() - t0, 3), "scenarios_per_s": round(total / t_run, 2) if t_run else None,
             "dose_points_per_scenario": float(points.mean()),
             "worker_cpu_ms_per_scenario": round(1e3 * cpu_s / total, 2)},
    )
    if result.nominal_differences:
        log.warning("robustness: scenario 0 differs from the plan's stored results (%s); were the structures the "
                    "plan's own?", "; ".join(result.nominal_differences[:3]))
    log.info("robustness: %d scenarios in %.1f s (%.1f scenarios/s on %d worker(s))", total, t_run,
             total / t_run if t_run else float("nan"), n_workers)
    return result
