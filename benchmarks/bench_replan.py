"""Benchmark: the CT-room re-plan (``seedplan replan``) after the intra-operative CT is loaded.

Case: the demo phantom (L3, 30 mm lytic lesion, 1 mm CT) planned with the default options; its
intra-operative CT is synthetic (1 mm, the target and the back up to the skin), with the needles placed
with a third of the Ji et al. 2021 template-series errors and a 2 deg / 5 mm patient motion.

The re-plan is the three steps the command runs: rigid registration to the planning CT, needle
detection and matching, and the seeds re-optimised along the needles found (with the dose and the
evaluation, corrected dose included).  Target (issue 13): under 5 s on 2 cores, 2 s the goal.

Baselines in the same run:

* planning again from scratch (``plan_case`` on the planning CT), what one would do without a re-plan
  on the needles placed: the ratio says what the re-plan saves;
* the point kernel the re-plan's optimiser and evaluation run on (the plan's seeds x points around the
  target) against the plain NumPy implementation of the same formalism in ``bench_dose.py``: throughput
  (seed-point pairs per second) and the ratio.

Run: pytest benchmarks/bench_replan.py --benchmark-only
"""

import time

import numpy as np
import pytest

from seedplan.dose import dose_rate
from seedplan.geometry import Grid
from seedplan.imaging import make_spine_phantom
from seedplan.planning import plan_case, replan_on_needles
from seedplan.verification import NeedleErrorModel, register_ct, rigid_motion, synthetic_ct, verify_needles

#: Target and goal of the whole re-plan after the CT is loaded (issue 13), s.
TARGET_S, GOAL_S = 5.0, 2.0


@pytest.fixture(scope="module")
def room():
    ph = make_spine_phantom(level="L3", lesion_diameter_mm=30.0, lesion_type="lytic")
    plan = plan_case(ph.ct, ph.structures).plan
    c = ph.structures["target"].centroid_mm
    grid = Grid.from_bounds(c - (125.0, 60.0, 40.0), c + (125.0, 118.0, 40.0), 1.0)
    small = NeedleErrorModel(1.1, 0.6, 0.9, 0.6, 1.7, 1.6, 0.3, 2.0)
    syn = synthetic_ct(plan, ph.ct, kind="intraop", errors=small, structures=ph.structures, seed=5, grid=grid,
                       motion=rigid_motion(rotation_deg=(2.0, 0.0, 1.0), translation_mm=(5.0, -3.0, 2.0)))
    # warm-up: JIT kernels (cached on disk too) and the first registration
    reg = register_ct(syn.ct, ph.ct, plan=plan)
    replan_on_needles(plan, ph.ct, ph.structures, verify_needles(syn.ct, plan, reg).actual_needles("seed"))
    return ph, plan, syn


def _replan(ph, plan, syn):
    times = {}
    t = time.perf_counter()
    reg = register_ct(syn.ct, ph.ct, plan=plan)
    times["registration"] = time.perf_counter() - t
    t = time.perf_counter()
    found = verify_needles(syn.ct, plan, reg)
    times["needles"] = time.perf_counter() - t
    t = time.perf_counter()
    result = replan_on_needles(plan, ph.ct, ph.structures, found.actual_needles("seed"))
    times["replan"] = time.perf_counter() - t
    for k, v in result.timings_s.items():
        if k != "total":
            times[f"  replan:{k}"] = v
    times["total"] = times["registration"] + times["needles"] + times["replan"]
    return result, times


def test_replan_in_the_ct_room(benchmark, room, report_line):
    ph, plan, syn = room
    runs = []

    def run():
        result, times = _replan(ph, plan, syn)
        runs.append(times)
        return result

    result = benchmark.pedantic(run, rounds=3, iterations=1)
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    t = time.perf_counter()
    plan_case(ph.ct, ph.structures)
    scratch = time.perf_counter() - t
    benchmark.extra_info.update({k.strip(): round(v, 3) for k, v in best.items()})
    benchmark.extra_info["plan_from_scratch_s"] = round(scratch, 3)
    target = result.plan.results["target"]
    report_line(f"re-plan on the needles placed ({result.plan.n_seeds} seeds, {len(result.plan.needles)} needles), "
                f"best of 3 per step:")
    for k, v in best.items():
        report_line(f"  {k:32s} {v:6.2f} s")
    report_line(f"  re-plan {best['total']:.2f} s vs planning from scratch {scratch:.2f} s "
                f"(x{scratch / best['total']:.1f}); target < {TARGET_S:g} s "
                f"{'met' if best['total'] < TARGET_S else 'NOT met'}, goal < {GOAL_S:g} s "
                f"{'met' if best['total'] < GOAL_S else 'NOT met'}; D90 {target['D90_Gy']:.0f} Gy, "
                f"V100 {target['V100_pct']:.1f} %")


def test_influence_kernel_vs_numpy(benchmark, room, report_line):
    """The replan's point kernel (the plan's seeds x 20000 points around the target) against plain NumPy."""
    from bench_dose import NumpyTG43  # the NumPy implementation of the same formalism (benchmarks/bench_dose.py)

    ph, plan, _ = room
    rng = np.random.default_rng(0)
    pts = ph.structures["target"].centroid_mm + rng.uniform(-25.0, 25.0, (20000, 3))
    seeds = plan.positions_mm
    axes = np.asarray([s.axis for s in plan.seeds], float)
    strengths = np.full(len(seeds), 0.5)
    fast = benchmark(lambda: dose_rate(pts, seeds, strengths, source=plan.seed_model, axes=axes,
                                       formalism=plan.formalism))
    t = time.perf_counter()
    ref = NumpyTG43(plan.seed_model).dose_rate_points(pts, seeds, strengths, axes, plan.formalism)
    t_np = time.perf_counter() - t
    t_fast = benchmark.stats.stats.min
    pairs = len(pts) * len(seeds)
    report_line(f"replan point kernel ({len(seeds)} seeds x {len(pts)} points): {pairs / t_fast:.2e} pairs/s vs "
                f"NumPy {pairs / t_np:.2e} (x{t_np / t_fast:.0f}); max relative difference "
                f"{np.max(np.abs(fast / ref - 1.0)):.1e}")
