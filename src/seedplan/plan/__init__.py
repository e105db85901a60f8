"""seedplan.plan: the plan as a value and a self-contained file, and what can be done with a saved plan.

The plan is the hand-off between planning and everything that uses a plan
(the report, the DICOM export, the 3D view, the re-plan in the CT room and
the post-implant check).  This layer imports no planning algorithm.

Values: :class:`Plan`, :class:`PlannedSeed`, :class:`Needle`,
:class:`Prescription` and its :class:`Goal` records, :class:`PlanningOptions`,
:class:`NeedleConstraints`, :class:`PlanCement`.  Files: :func:`save_plan`,
:func:`load_plan`.  Use: :func:`plan_dose_grid`, :func:`plan_dose_at`,
:func:`evaluate_plan`, :func:`corrected_dose_metrics`, :func:`plan_metrics`,
:func:`reevaluate_plan`.
"""

from ._cement import PlanCement
from ._goals import Goal, GoalResult, check_goals
from ._needle import Needle
from ._options import (BONE_MIN_HU, CEMENT_MODEL_NAMES, DEFAULT_MARGINS_MM, FORAMEN_MARGIN_MM, NeedleConstraints,
                       PlanningOptions)
from ._placement import ErrorModel, RobustnessOptions
from ._plan import FORMAT, VERSION, Plan, PlannedSeed, load_plan, plan_json, save_plan, seed_model_sha256
from ._prescription import CITATIONS, OAR_LIMIT_METRICS, Prescription
from ._use import (
    HETEROGENEITY_LABEL,
    OAR_REACH_MM,
    dose_region,
    organs_outside_grid,
    corrected_dose_metrics,
    dose_grid_for,
    evaluate_plan,
    plan_dose_at,
    plan_dose_grid,
    plan_metrics,
    plan_structures,
    reevaluate_plan,
)

__all__ = [
    "Plan",
    "PlannedSeed",
    "Needle",
    "Prescription",
    "Goal",
    "GoalResult",
    "check_goals",
    "CITATIONS",
    "OAR_LIMIT_METRICS",
    "PlanningOptions",
    "NeedleConstraints",
    "DEFAULT_MARGINS_MM",
    "FORAMEN_MARGIN_MM",
    "CEMENT_MODEL_NAMES",
    "BONE_MIN_HU",
    "PlanCement",
    "ErrorModel",
    "RobustnessOptions",
    "save_plan",
    "load_plan",
    "plan_json",
    "seed_model_sha256",
    "FORMAT",
    "VERSION",
    "HETEROGENEITY_LABEL",
    "OAR_REACH_MM",
    "dose_region",
    "organs_outside_grid",
    "plan_structures",
    "dose_grid_for",
    "plan_dose_grid",
    "plan_dose_at",
    "evaluate_plan",
    "corrected_dose_metrics",
    "plan_metrics",
    "reevaluate_plan",
]
