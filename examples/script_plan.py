"""Plan the built-in phantom from Python: seeds, vertebroplasty cement, and a look at the result.

Run: python examples/script_plan.py   (writes PNG views into ./script_plan_views/)
"""

import logging

from seedplan.imaging import make_spine_phantom
from seedplan.io import format_plan_table, save_plan
from seedplan.plan import PlanningOptions, Prescription
from seedplan.planning import plan_case
from seedplan.viz.scene import render_views

logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")  # progress of each planning step

phantom = make_spine_phantom(level="L3", lesion_diameter_mm=30.0, lesion_type="lytic")
result = plan_case(
    phantom.ct,
    phantom.structures,
    Prescription(dose_Gy=120.0),
    options=PlanningOptions(needle_mode="free", formalism="2D", cement_model="combined",
                            cement_material="pmma-baso4-30"),
)
print(format_plan_table(result.plan))
print("timings (s):", {k: round(v, 2) for k, v in result.timings_s.items()})

# the cement: recommendation, simulated fill and the corrected dose beside TG-43
cement = result.cement
print(cement.recommendation)
print("cement metrics:", result.plan.results["cement"])
print("corrected target D90 (approximate):", round(result.plan.results["heterogeneity"]["target"]["D90_Gy"], 1), "Gy")

# 3D views, off-screen
views = render_views(result.plan, phantom.ct, phantom.structures, "script_plan_views", result.dose_grid, result.dose_Gy,
                     cement=result.plan.cement.structure(), views=("anterior", "oblique"))
print(views)

# the plan file carries everything needed to use it later (seed model, cement, case reference)
print(save_plan(result.plan, "script_plan_views/plan.json"))
