"""Benchmark: the full automatic plan of the phantom case, phase by phase.

Target on 2 cores: the plan (needles and seeds) in under 10 s, and the evaluation step (fine-sampled
DVHs, V_ref and the cement/bone-corrected dose) in about 1.5 s, after JIT warm-up.
Run: pytest benchmarks/bench_planning.py --benchmark-only

The session summary prints the time of every step of ``plan_case`` (best of the rounds) next to the
numbers measured before the speed work (:data:`BEFORE_S`).
"""

import pytest

from seedplan.imaging.phantom import make_spine_phantom
from seedplan.planning import plan_case

#: ``plan_case(...).timings_s`` of the default phantom before the evaluation/corrected-dose speed work
#: (commit 268d33e), best of 2 warm runs on the shared 2-core machine at a load average of 2-3 (other
#: developers' jobs running; at 4-5 the step times roughly double and the unpinned optimiser's BLAS
#: threads made ``seeds`` 8.2 s before, 1.5 s after), measured in the same session as :data:`AFTER_S`.
BEFORE_S = {"anatomy": 0.440, "needles": 1.212, "vertebroplasty": 1.377, "slots": 0.085,
            "seeds:influence": 0.058, "seeds": 1.673, "plan": 0.002, "dose": 0.317,
            "evaluation:corrected_dose": 2.449, "evaluation": 6.683, "total": 12.406}
#: The same after it (branch ``speed``), same conditions.
AFTER_S = {"anatomy": 0.451, "needles": 1.504, "vertebroplasty": 1.656, "slots": 0.087,
           "seeds:influence": 0.021, "seeds": 1.279, "plan": 0.002, "dose": 0.303,
           "evaluation:corrected_dose": 2.142, "evaluation": 3.113, "total": 8.536}
#: Target of the evaluation step (corrected dose included), s.
EVALUATION_TARGET_S = 1.5


@pytest.fixture(scope="module")
def phantom():
    ph = make_spine_phantom(level="L3", lesion_diameter_mm=30.0, lesion_type="lytic")
    plan_case(ph.ct, ph.structures)  # JIT warm-up (numba kernels are also cached on disk)
    return ph


def _phase_table(best: dict) -> list[str]:
    lines = [f"{'step':28s} {'now s':>8s} {'before s':>9s} {'after s':>8s}   (before/after: recorded, see BEFORE_S)"]
    for k in best:
        lines.append(f"{k:28s} {best[k]:8.2f} {BEFORE_S.get(k, float('nan')):9.2f} {AFTER_S.get(k, float('nan')):8.2f}")
    return lines


def test_full_plan_phantom(benchmark, phantom, report_line):
    runs = []

    def run():
        r = plan_case(phantom.ct, phantom.structures)
        runs.append(r.timings_s)
        return r

    result = benchmark.pedantic(run, rounds=3, iterations=1)
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    needles_and_seeds = best["needles"] + best["seeds"]
    benchmark.extra_info.update({k: round(v, 3) for k, v in best.items()})
    benchmark.extra_info["needles_and_seeds_s"] = round(needles_and_seeds, 3)
    benchmark.extra_info["seeds"] = result.plan.n_seeds
    benchmark.extra_info["goals_met"] = not result.plan.results["failed_goals"]
    report_line("full plan of the phantom, best of 3 per step:")
    for line in _phase_table(best):
        report_line("  " + line)
    ev = best["evaluation"]
    report_line(
        f"needles+seeds {needles_and_seeds:.2f} s -> target < 10 s {'met' if needles_and_seeds < 10 else 'NOT met'}; "
        f"evaluation {ev:.2f} s (corrected dose {best.get('evaluation:corrected_dose', 0):.2f}) -> target "
        f"< {EVALUATION_TARGET_S} s {'met' if ev < EVALUATION_TARGET_S else 'NOT met'}; {result.plan.n_seeds} seeds, "
        f"goals {'met' if not result.plan.results['failed_goals'] else 'NOT met'}"
    )
