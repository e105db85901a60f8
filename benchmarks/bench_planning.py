"""Benchmark: the full automatic plan of the phantom case (needles, seeds, dose, evaluation).

Target on 2 cores: the plan (needles and seeds) in under 10 s after JIT warm-up.
Run: pytest benchmarks/bench_planning.py --benchmark-only
"""

import pytest

from seedplan.imaging.phantom import make_spine_phantom
from seedplan.planning import plan_case


@pytest.fixture(scope="module")
def phantom():
    ph = make_spine_phantom(level="L3", lesion_diameter_mm=30.0, lesion_type="lytic")
    plan_case(ph.ct, ph.structures)  # JIT warm-up (numba kernels are also cached on disk)
    return ph


def test_full_plan_phantom(benchmark, phantom, report_line):
    result = benchmark.pedantic(plan_case, args=(phantom.ct, phantom.structures), rounds=3, iterations=1)
    t = result.timings_s
    needles_and_seeds = t["needles"] + t["seeds"]
    benchmark.extra_info.update({k: round(v, 3) for k, v in t.items()})
    benchmark.extra_info["needles_and_seeds_s"] = round(needles_and_seeds, 3)
    benchmark.extra_info["seeds"] = result.plan.n_seeds
    benchmark.extra_info["goals_met"] = not result.plan.results["failed_goals"]
    report_line(
        f"full plan of the phantom: {t['total']:.2f} s (anatomy {t['anatomy']:.2f}, needles {t['needles']:.2f}, "
        f"vertebroplasty + cement {t['vertebroplasty']:.2f}, slots {t['slots']:.2f}, seeds {t['seeds']:.2f} "
        f"(influence {t['seeds:influence']:.2f}), dose {t['dose']:.2f}, evaluation {t['evaluation']:.2f} "
        f"(corrected dose {t.get('evaluation:corrected_dose', 0):.2f})); "
        f"needles+seeds {needles_and_seeds:.2f} s "
        f"-> target (needles and seeds) < 10 s {'met' if needles_and_seeds < 10 else 'NOT met'}; "
        f"{result.plan.n_seeds} seeds, "
        f"goals {'met' if not result.plan.results['failed_goals'] else 'NOT met'}"
    )
