"""Cost of a robustness analysis of the demo plan (L3 phantom, 1 mm CT, 30 mm lytic lesion).

Target on this 2-core machine: 1,000 scenarios (plus the nominal one) in under 30 s on 2 workers, from the
call to the gathered results (cluster start and sampling included).

* ``test_nominal_evaluation``: :func:`seedplan.plan.evaluate_plan` of the plan as planned (fine samples of
  every evaluated structure, their doses, the V_ref region), one numba thread: what one scenario would cost
  if it were evaluated the way the plan is.
* ``test_scenario``: one scenario as the workers evaluate it (:meth:`RobustnessProblem.evaluate_range`,
  one numba thread): move the seeds, the target's dose at all its samples, each organ's hottest samples.
* ``test_numpy_scenario``: the per-scenario dose in plain NumPy (``bench_dose.NumpyTG43``, the same
  TG-43 formalism, vectorised over points, a loop over seeds) at all the samples of the target and organs,
  and the scenario's target D90 from it (checked against seedplan's to 1e-4).
* ``test_dask``: :func:`run_robustness` of 1,000 scenarios on a local cluster of 1, then 2 worker processes.

The summary at the end of the session gives the times, the ratios and whether the target is met (the
machine is shared: compare numbers from one session only).
"""

from __future__ import annotations

import os
import time

import numba
import numpy as np
import pytest
from bench_dose import NumpyTG43

from seedplan.evaluation import DVH
from seedplan.imaging import make_spine_phantom
from seedplan.io import load_case, write_phantom_case
from seedplan.plan import evaluate_plan
from seedplan.planning import plan_case
from seedplan.robustness import ErrorModel, prepare_problem, run_robustness

SCENARIOS = 1000
TARGET_S = 30.0
IN_PROCESS_SCENARIOS = 40

#: name -> value, filled by the tests and printed by the last one
RESULTS: dict = {}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's plan: the phantom written as a case and planned as ``seedplan demo`` does."""
    written = write_phantom_case(make_spine_phantom(level="L3"), tmp_path_factory.mktemp("bench_robust") / "case")
    case = load_case(written["case"])
    result = plan_case(case.ct, case.structures, case.prescription, options=case.planning,
                       case_reference=case.reference)
    return result.plan, case.structures


@pytest.fixture(scope="module")
def problem(demo):
    plan, structures = demo
    return prepare_problem(plan, structures, ErrorModel(), 0)


@pytest.fixture
def one_thread():
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


def test_nominal_evaluation(benchmark, demo, one_thread):
    plan, structures = demo
    evaluate_plan(plan, structures)  # warm-up
    benchmark.pedantic(evaluate_plan, args=(plan, structures), rounds=3, iterations=1)
    RESULTS["nominal_s"] = float(benchmark.stats.stats.min)
    RESULTS["seeds"] = plan.n_seeds


def test_scenario(benchmark, problem, one_thread):
    problem.evaluate_range(1, 3)  # warm-up: kernels and tables
    benchmark.pedantic(problem.evaluate_range, args=(1, 1 + IN_PROCESS_SCENARIOS), rounds=3, iterations=1)
    RESULTS["scenario_s"] = float(benchmark.stats.stats.min) / IN_PROCESS_SCENARIOS
    out = problem.evaluate_range(1, 1 + IN_PROCESS_SCENARIOS)
    RESULTS["points_per_scenario"] = float(out["points"].mean())
    RESULTS["samples"] = sum(s.n for s in problem.structures)


def test_numpy_scenario(benchmark, demo, problem):
    plan, _ = demo
    ref = NumpyTG43(plan.seed_model)
    seeds = problem.scenario_seeds(1)
    kept = seeds.kept
    pts = np.concatenate([s.points_mm for s in problem.structures])

    def run():
        rate = ref.dose_rate_points(pts, seeds.positions_mm[kept], problem.geometry.strengths_U[kept],
                                    seeds.axes[kept], plan.formalism)
        return rate * plan.seed_model.mean_life_h / 100.0

    dose = benchmark.pedantic(run, rounds=1, iterations=1)
    RESULTS["numpy_s"] = float(benchmark.stats.stats.min)
    target = problem.structures[0]
    d90 = DVH.from_samples(dose[: target.n], np.full(target.n, target.weight)).D(90.0)
    column = next(c for c in problem.columns if c.metric == "D90_Gy")
    ours = problem.evaluate(1)["values"][column]
    RESULTS["numpy_d90_rel_diff"] = abs(d90 / ours - 1.0)
    assert RESULTS["numpy_d90_rel_diff"] < 1e-4


@pytest.mark.parametrize("workers", [1, 2])
def test_dask(benchmark, demo, workers, report_line):
    plan, structures = demo

    def run():
        t0 = time.perf_counter()
        result = run_robustness(plan, structures, scenarios=SCENARIOS, seed=0, workers=workers)
        return result, time.perf_counter() - t0

    result, seconds = benchmark.pedantic(run, rounds=1, iterations=1)
    RESULTS[f"dask_{workers}"] = {"total_s": seconds, **result.run}
    benchmark.extra_info.update({k: v for k, v in result.run.items() if isinstance(v, (int, float, str))})
    if workers == 2:  # the last case: the session summary
        _report(report_line)


def _report(report_line):
    r = RESULTS
    if "scenario_s" in r and "nominal_s" in r:
        report_line(f"robustness, demo plan ({r.get('seeds')} seeds, {r.get('samples', 0):,} samples): one scenario "
                    f"{1e3 * r['scenario_s']:.1f} ms on one thread ({r['points_per_scenario']:,.0f} dose points), "
                    f"nominal evaluate_plan {r['nominal_s']:.2f} s -> {r['nominal_s'] / r['scenario_s']:.0f}x")
    if "scenario_s" in r and "numpy_s" in r:
        report_line(f"robustness: plain NumPy dose of one scenario at every sample {r['numpy_s']:.2f} s -> seedplan's "
                    f"scenario {r['numpy_s'] / r['scenario_s']:.0f}x faster (D90 within "
                    f"{r['numpy_d90_rel_diff']:.1e})")
    for w in (1, 2):
        d = r.get(f"dask_{w}")
        if d:
            report_line(f"robustness on Dask, {w} worker(s): {SCENARIOS + 1} scenarios in {d['total_s']:.1f} s "
                        f"(cluster ready {d['cluster_s']:.1f} s, sampled {d['prepare_s']:.1f} s, scenarios "
                        f"{d['scenarios_s']:.1f} s = {d['scenarios_per_s']:.1f}/s; worker CPU "
                        f"{d['worker_cpu_ms_per_scenario']:.1f} ms per scenario, so "
                        f"{(SCENARIOS + 1) * d['worker_cpu_ms_per_scenario'] / 1e3 / w:.1f} s of scenarios on {w} "
                        f"idle core(s); load average {os.getloadavg()[0]:.1f})")
    if "dask_1" in r and "dask_2" in r:
        speedup = r["dask_2"]["scenarios_per_s"] / r["dask_1"]["scenarios_per_s"]
        met = "met" if r["dask_2"]["total_s"] < TARGET_S else "NOT met"
        report_line(f"robustness: 2 workers / 1 worker = {speedup:.2f}x scenarios/s; target {SCENARIOS} scenarios "
                    f"< {TARGET_S:.0f} s on 2 workers {met}")
