"""seedplan.robustness: how a saved plan's metrics spread under needle and seed placement errors.

Workflow: an :class:`ErrorModel` (defaults from the placement accuracy of
template-guided implants, Ji et al. 2021) and N scenarios, each drawn from its
own random stream (:func:`scenario_rng`); :func:`run_robustness` samples the
plan's target and organs once (:func:`prepare_problem`), evaluates the
scenarios on Dask (a local cluster, or any cluster by address) with the same
statistics as the plan (:func:`seedplan.plan.evaluate_plan`; scenario 0 is the
nominal plan and reproduces its stored results exactly) and summarises them
(per metric nominal, mean, P5, P50, P95; per goal the probability of meeting
it) in a :class:`RobustnessResult`; :func:`write_robustness` writes
``robustness.json``, ``robustness_scenarios.csv`` and ``robustness.png``, and
:func:`robustness_html` gives the fragment for the report.

This package reads plans through the plan layer; it imports no planning algorithm.
Dask and matplotlib are imported only by the functions that need them.
"""

from ..plan._placement import (
    CITATIONS,
    DEFAULT_SCENARIOS,
    ErrorModel,
    RobustnessOptions,
    per_axis_sd,
    tip_rms_mm,
)
from ._outputs import (
    plot_robustness,
    robustness_csv,
    robustness_html,
    robustness_json,
    write_robustness,
)
from ._run import RobustnessResult, run_robustness
from ._scenarios import (
    MetricColumn,
    RobustnessProblem,
    ScenarioSeeds,
    draw_scenario,
    plan_geometry,
    prepare_problem,
    scenario_rng,
)

__all__ = [
    "CITATIONS",
    "DEFAULT_SCENARIOS",
    "ErrorModel",
    "MetricColumn",
    "RobustnessOptions",
    "RobustnessProblem",
    "RobustnessResult",
    "ScenarioSeeds",
    "draw_scenario",
    "per_axis_sd",
    "plan_geometry",
    "plot_robustness",
    "prepare_problem",
    "robustness_csv",
    "robustness_html",
    "robustness_json",
    "run_robustness",
    "scenario_rng",
    "tip_rms_mm",
    "write_robustness",
]
