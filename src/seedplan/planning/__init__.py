"""seedplan.planning: from CT and structures to a plan.

Needle trajectories (:func:`plan_needles`, :func:`pvp_needle_paths`), the
vertebroplasty cement (:func:`plan_cement`), seed optimisation
(:func:`optimise_seeds`) and the whole chain (:func:`plan_case`).  The
values a plan is made of (:class:`Prescription`, :class:`PlanningOptions`,
:class:`NeedleConstraints`, :class:`Needle`) live in :mod:`seedplan.plan` and
are re-exported here.
"""

from ..plan import Needle, NeedleConstraints, PlanningOptions, Prescription
from .cement import (
    CEMENT_MATERIALS,
    CEMENT_MODELS,
    CementMaterial,
    CementModel,
    CementPlan,
    CementResult,
    plan_cement,
    recommend_cement_volume,
    simulate_cement,
)
from .needles import NeedlePlan, SeedSlots, candidate_slots, plan_needles, pvp_needle_paths
from .planner import PlanningResult, plan_case, replan_on_needles
from .seeds import Aims, SeedSolution, optimise_seeds, plan_quality

__all__ = [
    "plan_case",
    "replan_on_needles",
    "PlanningResult",
    "Prescription",
    "PlanningOptions",
    "NeedleConstraints",
    "Needle",
    "plan_needles",
    "pvp_needle_paths",
    "candidate_slots",
    "NeedlePlan",
    "SeedSlots",
    "plan_cement",
    "recommend_cement_volume",
    "simulate_cement",
    "CementPlan",
    "CementResult",
    "CementModel",
    "CementMaterial",
    "CEMENT_MATERIALS",
    "CEMENT_MODELS",
    "optimise_seeds",
    "plan_quality",
    "Aims",
    "SeedSolution",
]
