"""A scenario's metrics are the plan layer's exact metrics of the moved plan, to the bit; scenario 0 is the plan."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from seedplan import total_dose
from seedplan.errors import InputError, InputTypeError
from seedplan.evaluation import DVH, SamplingOptions
from seedplan.imaging.structures import Role, StructureSet
from seedplan.plan import evaluate_plan
from seedplan.robustness import ErrorModel, prepare_problem
from seedplan.robustness._bound import STEP_MM, bound_table, box_bounds, cos_edges


@pytest.fixture(scope="module")
def problem(planned):
    _, plan, case = planned
    return prepare_problem(plan, case.structures, ErrorModel(seed_jitter_sd_mm=1.0, seed_loss_probability=0.1), 2)


EXACT = SamplingOptions(adaptive=False)


def _stored(results, column):
    block = results["target"] if column.group == "target" else results["oars"][column.structure]
    return block[column.metric]


def test_scenario_zero_reproduces_the_exact_evaluation(planned, problem):
    _, plan, case = planned
    values = problem.evaluate(0)["values"]
    exact = evaluate_plan(plan, case.structures, sampling=EXACT).metrics
    assert {c.structure for c in values if c.group == "oars"} == set(plan.results["oars"])
    for column, value in values.items():
        assert value == _stored(exact, column), column.label          # bit for bit, not approximately
        # the stored results are the adaptive evaluation: equal to rounding (Dmean to ~1e-4)
        assert value == pytest.approx(_stored(plan.results, column), rel=1e-4, abs=1e-9), column.label
    goals = {g["goal"]: g["value"] for g in plan.results["goals"]}
    labels = {f"{c.structure} {c.metric}": v for c, v in values.items()}
    for goal, value in goals.items():
        assert labels[goal.rsplit(" ", 2)[0]] == pytest.approx(value, rel=1e-4)


def _moved_plan(plan, seeds):
    moved = [replace(s, position_mm=tuple(p), axis=tuple(a))
             for s, p, a, lost in zip(plan.seeds, seeds.positions_mm, seeds.axes, seeds.lost) if not lost]
    return replace(plan, seeds=tuple(moved))


def test_a_scenario_is_evaluate_plan_of_the_moved_plan(planned, problem):
    _, plan, case = planned
    k = next(k for k in range(1, 50) if problem.scenario_seeds(k).lost.any())   # one with a lost seed
    seeds = problem.scenario_seeds(k)
    assert np.abs(seeds.positions_mm - plan.positions_mm).max() > 1.0          # it did move
    metrics = evaluate_plan(_moved_plan(plan, seeds), case.structures, sampling=EXACT).metrics
    for column, value in problem.evaluate(k)["values"].items():
        block = metrics["target"] if column.group == "target" else metrics["oars"][column.structure]
        assert value == block[column.metric], column.label


def test_the_hottest_sample_search_gives_the_metrics_of_all_samples(planned, problem):
    _, plan, _ = planned
    organs = [s for s in problem.structures if s.group == "oars"]
    assert organs and all(s.cells is not None for s in organs)
    evaluated = 0
    for k in range(3, 7):
        seeds = problem.scenario_seeds(k)
        kept = seeds.kept
        row = problem.evaluate(k)
        evaluated += row["points"]
        for s in organs:
            dose = total_dose(s.points_mm, seeds.positions_mm[kept], problem.geometry.strengths_U[kept],
                              source=plan.seed_model, axes=seeds.axes[kept], formalism=plan.formalism)
            h = DVH.from_samples(dose, np.full(s.n, s.weight), name=s.name)
            column = next(c for c in problem.columns if c.structure == s.name and c.metric == "D0.1cc_Gy")
            assert row["values"][column] == h.D_cc(0.1), s.name
    every = sum(s.n for s in problem.structures)
    assert evaluated / 4 < 0.5 * every       # and it evaluated well under half of the samples


def test_every_organ_metric_a_goal_can_name(planned):
    """Limits on Dmax, D1cc, D2cc, Dmean and the EQD2s add those metrics, with the plan layer's definitions."""
    _, plan, case = planned
    limits = {"aorta": {"Dmax_Gy": 500.0, "D1cc_Gy": 90.0, "D2cc_Gy": 80.0, "Dmean_Gy": 20.0,
                        "EQD2max_Gy": 900.0, "EQD2_D0.1cc_Gy": 300.0}}
    asked = replace(plan, prescription=replace(plan.prescription, oar_limits=limits))
    p = prepare_problem(asked, case.structures, ErrorModel(), 6)
    aorta = [c for c in p.columns if c.structure == "aorta"]
    assert {c.metric for c in aorta} == {"D0.1cc_Gy", *limits["aorta"]}
    values = p.evaluate(0)["values"]
    exact = evaluate_plan(asked, case.structures, sampling=EXACT).metrics["oars"]["aorta"]
    for c in aorta:
        # the plan layer's exact metric (a mean to the last bits of its sum's order)
        assert values[c] == pytest.approx(exact[c.metric], rel=1e-13, abs=0.0), c.metric
    seeds, row = p.scenario_seeds(1), p.evaluate(1)["values"]
    s = next(s for s in p.structures if s.name == "aorta")
    kept = seeds.kept
    dose = total_dose(s.points_mm, seeds.positions_mm[kept], p.geometry.strengths_U[kept], source=plan.seed_model,
                      axes=seeds.axes[kept], formalism=plan.formalism)
    h = DVH.from_samples(dose, np.full(s.n, s.weight))
    assert row[next(c for c in aorta if c.metric == "Dmean_Gy")] == pytest.approx(h.mean_Gy, rel=1e-13, abs=0.0)
    assert row[next(c for c in aorta if c.metric == "D2cc_Gy")] == h.D_cc(2.0)


def test_box_bounds_are_upper_bounds_of_the_dose(planned):
    _, plan, _ = planned
    rng = np.random.default_rng(8)
    table = bound_table(plan.seed_model, plan.formalism)
    seeds = rng.uniform(-20, 20, (6, 3))
    axes = rng.normal(size=(6, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    strengths = rng.uniform(0.3, 1.0, 6)
    lo = rng.uniform(-40, 40, (300, 3))
    hi = lo + rng.uniform(0.5, 8.0, (300, 3))
    bound = box_bounds(lo, hi, seeds, axes, strengths, table, 1.0 / STEP_MM, cos_edges(table.shape[1]))
    pts = rng.uniform(lo[:, None, :], hi[:, None, :], (300, 200, 3)).reshape(-1, 3)
    dose = total_dose(pts, seeds, strengths, source=plan.seed_model, axes=axes, formalism=plan.formalism)
    top = dose.reshape(300, 200).max(axis=1)
    assert np.all(top <= bound)
    # a useful bound: within a factor 2 of the dose in the boxes clear of the seeds by 10 mm
    clear = np.array([np.min(np.linalg.norm(np.clip(seeds, lo[c], hi[c]) - seeds, axis=1)) >= 10.0
                      for c in range(300)])
    assert clear.sum() > 100 and np.all(bound[clear] < 2.0 * top[clear])


def test_bad_input(planned):
    _, plan, case = planned
    with pytest.raises(InputError, match="the plan has no seeds"):
        prepare_problem(replace(plan, seeds=()), case.structures, ErrorModel(), 0)
    no_target = StructureSet([s for s in case.structures.values() if s.role is not Role.TARGET])
    with pytest.raises(InputError, match="no \\(non-empty\\) target"):
        prepare_problem(plan, no_target, ErrorModel(), 0)
    with pytest.raises(InputTypeError, match="errors must be an ErrorModel"):
        prepare_problem(plan, case.structures, {"depth_sd_mm": 1.0}, 0)
    with pytest.raises(InputError, match="seed must be >= 0"):
        prepare_problem(plan, case.structures, ErrorModel(), -3)
