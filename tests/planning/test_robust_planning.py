"""Robust planning (PlanningOptions(robust=...)): the seeds optimised over needle-placement scenarios."""

import numpy as np
import pytest

from seedplan.errors import InputError
from seedplan.imaging import make_spine_phantom
from seedplan.plan import ErrorModel, PlanningOptions, RobustnessOptions, load_plan, save_plan
from seedplan.planning import plan_case
from seedplan.robustness import run_robustness


@pytest.fixture(scope="module")
def phantom():
    return make_spine_phantom(level="L3", lesion_diameter_mm=30.0, spacing_mm=2.0)


@pytest.fixture(scope="module")
def nominal(phantom):
    return plan_case(phantom.ct, phantom.structures).plan


@pytest.fixture(scope="module")
def robust(phantom):
    return plan_case(phantom.ct, phantom.structures, options=PlanningOptions(robust={"scenarios": 10})).plan


def _held_out(plan, phantom):
    """Probability of D90 >= PD and of V100 >= 95 %, and the P5 D90, over 150 scenarios the planner never saw."""
    r = run_robustness(plan, phantom.structures, scenarios=150, seed=12345, workers=1, processes=False)
    col = {c.label: i for i, c in enumerate(r.columns)}
    d90, v100 = r.values[1:, col["target D90_Gy"]], r.values[1:, col["target V100_pct"]]
    return float(np.mean(d90 >= plan.prescription.dose_Gy)), float(np.mean(v100 >= 95.0)), float(np.percentile(d90, 5))


def test_a_robust_plan_keeps_its_coverage_more_often(phantom, nominal, robust):
    p_d90_n, p_v100_n, _ = _held_out(nominal, phantom)
    p_d90_r, p_v100_r, _ = _held_out(robust, phantom)
    assert p_d90_r >= p_d90_n and p_v100_r >= p_v100_n
    assert p_d90_r + p_v100_r > p_d90_n + p_v100_n
    assert any("robust planning" in n for n in robust.notes)


def test_zero_errors_give_the_nominal_plan(phantom, nominal):
    same = plan_case(phantom.ct, phantom.structures,
                     options=PlanningOptions(robust=RobustnessOptions(errors=ErrorModel.none(), scenarios=5))).plan
    np.testing.assert_array_equal(same.positions_mm, nominal.positions_mm)
    assert same.seeds[0].activity_mCi == nominal.seeds[0].activity_mCi


def test_the_robust_options_are_saved_with_the_plan(robust, tmp_path):
    again = load_plan(save_plan(robust, tmp_path / "plan.json"))
    assert again.options.robust == robust.options.robust
    assert again.options.robust.scenarios == 10 and again.options.robust.errors == ErrorModel()


@pytest.mark.parametrize("robust, match", [
    ({"scenarios": 500}, "use 10-100"),
    ({"scenarios": 5, "errors": {"lateral_sd_mm": -1}}, "lateral_sd_mm"),
    ({"scenario": 5}, "unknown key"),
    (5, "robust must be"),
])
def test_bad_robust_options(robust, match):
    with pytest.raises(InputError, match=match):
        PlanningOptions(robust=robust)
