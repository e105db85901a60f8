"""Robust planning on the demo (L3 phantom, 1 mm CT, 30 mm lytic lesion): nominal vs robust plan.

* ``test_robust_vs_nominal``: the demo planned as it is (nominal placement) and with
  ``PlanningOptions(robust={"scenarios": 10})`` (the Ji et al. 2021 error model), then each plan's
  robustness over 1,000 scenarios it was not planned on (seed 7) on a local Dask cluster: seeds, activity,
  nominal D90/V100, P5 D90, P(V100 >= 95 %), P(D90 >= PD), the cauda's P95 D0.1cc, and what the robust
  plan costs in planning time.
* ``test_scenario_influence_vs_numpy``: the robust planner's extra work, one scenario's influence matrix
  (the target's optimiser samples x the candidate slots, moved), in seedplan's kernel and in plain NumPy
  (``bench_dose.NumpyTG43``, the same formalism): pairs per second and the ratio.

Run: pytest benchmarks/bench_robust_planning.py --benchmark-only
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from bench_dose import NumpyTG43

from seedplan.dose import influence_matrix
from seedplan.evaluation.sampling import sample_mask_points
from seedplan.imaging import make_spine_phantom
from seedplan.plan import PlanningOptions
from seedplan.planning import plan_case
from seedplan.robustness import run_robustness

HELD_OUT_SCENARIOS, HELD_OUT_SEED = 1000, 7
ROBUST = {"scenarios": 10}


@pytest.fixture(scope="module")
def demo():
    ph = make_spine_phantom(level="L3", lesion_diameter_mm=30.0, lesion_type="lytic")
    plan_case(ph.ct, ph.structures)  # warm-up (JIT, caches)
    t = time.perf_counter()
    nominal = plan_case(ph.ct, ph.structures)
    t_nominal = time.perf_counter() - t
    return ph, nominal, t_nominal


def _held_out(plan, structures):
    r = run_robustness(plan, structures, scenarios=HELD_OUT_SCENARIOS, seed=HELD_OUT_SEED, workers=2)
    col = {c.label: i for i, c in enumerate(r.columns)}
    x = r.values[1:]
    d90, v100 = x[:, col["target D90_Gy"]], x[:, col["target V100_pct"]]
    cauda = x[:, col["cauda_equina D0.1cc_Gy"]] if "cauda_equina D0.1cc_Gy" in col else np.full(len(x), np.nan)
    return {"P5 D90": float(np.percentile(d90, 5)), "P(V100>=95)": float(np.mean(v100 >= 95.0)),
            "P(D90>=PD)": float(np.mean(d90 >= plan.prescription.dose_Gy)),
            "cauda P95 D0.1cc": float(np.percentile(cauda, 95))}


def test_robust_vs_nominal(benchmark, demo, report_line):
    ph, nominal, t_nominal = demo
    result = benchmark.pedantic(lambda: plan_case(ph.ct, ph.structures, options=PlanningOptions(robust=ROBUST)),
                                rounds=1, iterations=1)
    t_robust = benchmark.stats.stats.min
    rows = []
    for name, plan, t in (("nominal", nominal.plan, t_nominal), ("robust", result.plan, t_robust)):
        h = _held_out(plan, ph.structures)
        tgt = plan.results["target"]
        rows.append((name, plan, t, h))
        benchmark.extra_info[name] = {"seeds": plan.n_seeds, "activity_mCi": plan.seeds[0].activity_mCi,
                                      "plan_s": round(t, 2), **{k: round(v, 3) for k, v in h.items()}}
        report_line(f"{name:8s} plan {t:5.1f} s: {plan.n_seeds} seeds x {plan.seeds[0].activity_mCi:.2f} mCi "
                    f"({plan.total_activity_mCi:.1f} mCi); nominal D90 {tgt['D90_Gy']:.1f} Gy, V100 {tgt['V100_pct']:.1f} %; "
                    f"over {HELD_OUT_SCENARIOS} held-out scenarios: P5 D90 {h['P5 D90']:.1f} Gy, "
                    f"P(V100>=95%) {h['P(V100>=95)']:.3f}, P(D90>=PD) {h['P(D90>=PD)']:.3f}, "
                    f"cauda P95 D0.1cc {h['cauda P95 D0.1cc']:.1f} Gy")
    report_line(f"robust planning costs x{t_robust / t_nominal:.1f} the nominal plan's time ({ROBUST['scenarios']} "
                "scenarios)")


def test_scenario_influence_vs_numpy(benchmark, demo, report_line):
    ph, nominal, _ = demo
    plan = nominal.plan
    pts, _w = sample_mask_points(ph.structures["target"].mask, ph.ct.grid, points_per_mm3=0.5)
    rng = np.random.default_rng(0)
    slots = plan.positions_mm[rng.integers(0, plan.n_seeds, 150)] + rng.normal(0.0, 3.0, (150, 3))
    axes = plan.axes[rng.integers(0, plan.n_seeds, 150)]
    fast = benchmark(lambda: influence_matrix(pts, slots, source=plan.seed_model, axes=axes, formalism=plan.formalism))
    ref_model = NumpyTG43(plan.seed_model)
    t = time.perf_counter()
    ref = np.stack([ref_model.dose_rate_points(pts, slots[j:j + 1], np.ones(1), axes[j:j + 1], plan.formalism)
                    for j in range(len(slots))], axis=1)
    t_np = time.perf_counter() - t
    scale = float(np.median(fast / np.maximum(ref, 1e-30)))  # total dose per U vs dose rate per U: a constant
    pairs = len(pts) * len(slots)
    t_fast = benchmark.stats.stats.min
    report_line(f"scenario influence matrix ({len(pts)} points x {len(slots)} slots): {pairs / t_fast:.2e} pairs/s "
                f"vs NumPy {pairs / t_np:.2e} (x{t_np / t_fast:.0f}); max relative difference "
                f"{np.max(np.abs(fast / (scale * ref) - 1.0)):.1e}")
