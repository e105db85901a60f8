"""Several adjacent levels planned as one implant (L5 + S1): needles and cement per level, the seeds optimised
jointly to each level's goals, per-level and combined metrics."""


import numpy as np
import pytest

from seedplan.dose import total_dose
from seedplan.dose.materials import DEFAULT_CEMENT, cement_material
from seedplan.errors import GeometryError, InputError
from seedplan.evaluation.sampling import sample_mask_points
from seedplan.geometry import Grid
from seedplan.imaging import COMBINED_TARGET, make_spine_phantom
from seedplan.io import format_plan_table, plan_table_rows
from seedplan.plan import PlanCement, Prescription, evaluate_plan, load_plan, save_plan
from seedplan.planning import plan_case

LEVELS = ("target_L5", "target_S1")


@pytest.fixture(scope="module")
def two_levels():
    ph = make_spine_phantom(level="L5,S1", spacing_mm=2.0, lesion_diameter_mm=(26.0, 26.0),
                            lesion_center_offset_mm=[(0.0, 0.0, 0.0), (0.0, -5.0, 0.0)])
    return ph, plan_case(ph.ct, ph.structures)


def test_each_level_has_its_needles_cement_and_metrics(two_levels):
    ph, result = two_levels
    plan, m = result.plan, result.plan.results
    assert m["target"]["name"] == COMBINED_TARGET
    assert set(m["targets"]) == {COMBINED_TARGET, *LEVELS}
    # the union's volume is the levels' volumes added (the lesions do not overlap)
    assert m["target"]["volume_cm3"] == pytest.approx(sum(m["targets"][n]["volume_cm3"] for n in LEVELS), rel=1e-6)
    # every seed needle serves one level, both levels have needles and seeds
    assert {n.target for n in plan.needles} == set(LEVELS)
    for name in LEVELS:
        on = [k for k, n in enumerate(plan.needles, start=1) if n.target == name]
        assert any(s.needle in on for s in plan.seeds)
    # a vertebroplasty per level, the cement per vertebral body and their sum
    assert {n.target for n in plan.pvp_needles} == set(LEVELS)
    cement = m["cement"]
    assert set(cement["levels"]) == {"vertebral_body_L5", "vertebral_body_S1"}
    assert cement["volume_mL"] == pytest.approx(sum(b["volume_mL"] for b in cement["levels"].values()), abs=2e-3)
    assert plan.cement.vertebral_bodies == ("vertebral_body_L5", "vertebral_body_S1")
    vb5 = ph.structures["vertebral_body_L5"].mask
    vb1 = ph.structures["vertebral_body_S1"].mask
    assert (plan.cement.mask & vb5).any() and (plan.cement.mask & vb1).any()
    # the goals are each level's, the clinical context counts two treated vertebrae
    goals = {g["goal"] for g in m["goals"]}
    for name in LEVELS:
        assert f"{name} D90_Gy >= 120" in goals and f"{name} V100_pct >= 95" in goals
    assert not any(g.startswith(COMBINED_TARGET + " D90") for g in goals)
    assert m["clinical_context"]["residual_pain_factors"]["treated_vertebrae"] == 2
    assert any("2 targets planned as one implant" in n for n in plan.notes)


def test_the_seeds_are_optimised_jointly(two_levels):
    """Each level's dose includes its neighbour's seeds: removing them lowers it."""
    ph, result = two_levels
    plan = result.plan
    own = {name: [i for i, s in enumerate(plan.seeds) if plan.needles[s.needle - 1].target == name] for name in LEVELS}
    s_U, pos, axes = plan.strengths_at_implant_U, plan.positions_mm, plan.axes
    for name in LEVELS:
        pts, w = sample_mask_points(ph.structures[name].mask, ph.ct.grid, points_per_mm3=0.5)
        both = total_dose(pts, pos, s_U, source=plan.seed_model, axes=axes, formalism=plan.formalism)
        k = own[name]
        alone = total_dose(pts, pos[k], s_U[k], source=plan.seed_model, axes=axes[k], formalism=plan.formalism)
        assert np.all(both >= alone - 1e-9)
        gain = float(np.sum(w * (both - alone)) / np.sum(w))
        assert gain > 1.0  # Gy: the neighbour's seeds add to the level's mean dose


def test_a_saved_two_level_plan_reevaluates_the_same(two_levels, tmp_path):
    ph, result = two_levels
    path = save_plan(result.plan, tmp_path / "plan.json")
    again = load_plan(path)
    assert [n.target for n in again.needles] == [n.target for n in result.plan.needles]
    assert again.cement.metrics["levels"] == result.plan.cement.metrics["levels"]
    ev = evaluate_plan(again, ph.structures)
    for name in (COMBINED_TARGET, *LEVELS):
        assert ev.metrics["targets"][name]["D90_Gy"] == pytest.approx(result.plan.results["targets"][name]["D90_Gy"],
                                                                      rel=1e-9)


def test_the_table_names_each_needles_level(two_levels, tmp_path):
    plan = two_levels[1].plan
    rows = plan_table_rows(plan)
    assert {r["target"] for r in rows} == set(LEVELS)
    text = format_plan_table(plan)
    assert "all targets: D90" in text
    for name in LEVELS:
        assert f"  {name}: D90" in text


def test_goals_of_a_combined_target_are_the_levels():
    presc = Prescription()
    block = {"D90_Gy": 130.0, "V100_pct": 96.0, "V150_pct": 60.0, "V200_pct": 30.0}
    metrics = {"prescription_Gy": 120.0, "target": {"name": COMBINED_TARGET, **block},
               "targets": {COMBINED_TARGET: block, "target_L5": {**block, "D90_Gy": 110.0}, "target_S1": block},
               "oars": {"cauda_equina": {"D0.1cc_Gy": 45.0}}}
    checked = {g.goal: g for g in presc.goals_check(metrics)}
    assert checked["target_L5 D90_Gy >= 120"].value == 110.0 and not checked["target_L5 D90_Gy >= 120"].passed
    assert checked["target_S1 D90_Gy >= 120"].passed
    assert checked["cauda_equina D0.1cc_Gy <= 50"].passed
    assert not any(k.startswith(COMBINED_TARGET) for k in checked)


def _cement(name, mask, grid, volume_mL, mat):
    metrics = {"volume_mL": volume_mL, "fill_pct": 10.0, "max_cross_section_ratio": 0.2, "endplate_contact": "none",
               "leak_flags": {"canal": None, "disc": 0.5}, "recommended_mL": volume_mL, "volume_source": "recommended",
               "vertebral_body": name, "material": "m", "max_slice_ratio": 0.3}
    return PlanCement(name, mat, mask, grid, metrics, ("w",), {"tips_mm": []})


def test_plan_cement_combine_adds_the_levels():
    grid = Grid(np.zeros(3), np.ones(3), np.array([10, 10, 10]), np.eye(3))
    a = np.zeros(grid.shape, bool)
    a[1:3] = True
    b = np.zeros(grid.shape, bool)
    b[6:8] = True
    mat = cement_material(DEFAULT_CEMENT)
    x, y = _cement("vb_L5", a, grid, 2.0, mat), _cement("vb_S1", b, grid, 3.0, mat)
    both = PlanCement.combine([x, y])
    assert both.volume_mL == pytest.approx(5.0)
    assert both.vertebral_bodies == ("vb_L5", "vb_S1")
    np.testing.assert_array_equal(both.mask, a | b)
    assert both.metrics["leak_flags"] == {"canal": None, "disc": 1.0}
    assert set(both.metrics["levels"]) == {"vb_L5", "vb_S1"}
    assert PlanCement.combine([x]) is x
    with pytest.raises(InputError, match="at least one"):
        PlanCement.combine([])
    other = Grid(np.ones(3), np.ones(3), np.array([10, 10, 10]), np.eye(3))
    with pytest.raises(GeometryError, match="different grids"):
        PlanCement.combine([x, _cement("vb_S1", b, other, 3.0, mat)])
