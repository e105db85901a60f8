"""Plan the built-in phantom from Python and look at the result.

Run: python examples/script_plan.py
"""

from seedplan.imaging.phantom import make_spine_phantom
from seedplan.io.plan_table import format_plan_table
from seedplan.planning.planner import PlanningOptions, plan_case
from seedplan.planning.prescription import Prescription

phantom = make_spine_phantom(level="L3", lesion_diameter_mm=30.0, lesion_type="lytic")
result = plan_case(
    phantom.ct,
    phantom.structures,
    Prescription(dose_Gy=120.0),
    options=PlanningOptions(needle_mode="free", formalism="2D"),
    progress=print,
)
print(format_plan_table(result.plan))
print("timings (s):", {k: round(v, 2) for k, v in result.timings_s.items()})
