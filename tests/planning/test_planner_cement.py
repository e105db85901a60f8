"""The vertebroplasty cement inside the planning chain (phantom, 30 mm lytic L3 lesion)."""

import numpy as np
import pytest

from seedplan.errors import InputError
from seedplan.imaging.structures import Role, StructureSet
from seedplan.plan import load_plan, save_plan
from seedplan.plan import reevaluate_plan
from seedplan.planning import PlanningOptions, plan_case
from seedplan.planning.cement import cement_excludes_slots


def test_cement_is_planned_with_the_combined_model(result):
    c = result.cement
    assert c is not None and c.vertebral_body == "vertebral_body_L3" and c.level == "L3"
    assert c.lesion_type == "lytic"  # +30 HU lesion
    rec = c.recommendation
    # combined model: 16.2 % of the body outside the 13.6 cm3 cavity, cavity not counted, 1-5 mL
    assert rec.volume_mL == pytest.approx(0.162 * (rec.vb_volume_cm3 - rec.lesion_volume_cm3), rel=1e-9)
    assert 1.0 <= rec.volume_mL <= 5.0
    assert c.result.volume_mL == pytest.approx(rec.volume_mL, abs=1e-3)
    m = result.plan.results["cement"]
    assert m["volume_mL"] == pytest.approx(c.result.volume_mL, abs=1e-3)
    assert m["fill_pct"] == pytest.approx(100 * c.result.volume_mL / rec.vb_volume_cm3, rel=0.01)
    assert set(m["leak_flags"]) == {"outside_body", "cortical_defect", "posterior_wall", "basivertebral_foramen"}


def test_pvp_tips_aim_at_the_middle_of_each_half(result, phantom):
    vb = phantom.structures["vertebral_body_L3"]
    x = vb.grid.index_to_world(np.argwhere(vb.mask)[:, ::-1].astype(float))[:, 0]
    half = (x.max() - x.min()) / 2
    for n in result.plan.pvp_needles:
        assert abs(abs(n.tip[0] - x.mean()) - half / 2) <= 3.0, n
        assert (n.tip[0] > x.mean()) == (n.label == "left")


def test_no_seed_in_radiopaque_cement(result, phantom):
    c = result.cement
    assert c.radiopaque
    inside = cement_excludes_slots(result.plan.positions_mm, c.result.mask, phantom.ct.grid, margin_mm=0.0)
    assert not inside.any()


def test_coverage_goals_still_met_with_cement(result):
    t = result.plan.results["target"]
    assert t["D90_Gy"] >= 120.0 and t["V100_pct"] >= 95.0
    assert result.plan.results["failed_goals"] == []


def test_corrected_dose_reported_beside_tg43(result):
    r = result.plan.results
    h = r["heterogeneity"]
    assert "TG-43" in h["label"] and "not a TG-186" in h["label"]
    # cement and bone only absorb (mu >= water) -> the corrected dose is lower everywhere
    assert h["target"]["D90_Gy"] < r["target"]["D90_Gy"]
    assert h["target"]["V100_pct"] < r["target"]["V100_pct"]
    # the cement-filled part of the target is the shadowed part
    assert h["target_outside_cement"]["D90_Gy"] > h["target"]["D90_Gy"]
    for name, o in h["oars"].items():
        assert o["D0.1cc_Gy"] <= r["oars"][name]["D0.1cc_Gy"] * 1.001


def test_plan_file_stores_the_cement_and_reloading_never_simulates(result, phantom, tmp_path, monkeypatch):
    import json

    import seedplan.planning.cement as cement_module
    from seedplan.errors import FileFormatError
    from seedplan.outputs import metrics_json

    path = save_plan(result.plan, tmp_path / "plan.json")

    def no_simulation(*args, **kwargs):
        raise AssertionError("a saved plan must not re-simulate its cement")

    monkeypatch.setattr(cement_module, "simulate_cement", no_simulation)
    plan = load_plan(path)
    assert np.array_equal(plan.cement.mask, result.cement.result.mask)
    assert plan.cement.material == result.cement.material
    ev, res = reevaluate_plan(plan, phantom.ct, phantom.structures)
    # the re-evaluated metrics are the planned ones, byte for byte
    assert metrics_json(res) == metrics_json(dict(result.plan.results))
    # an altered mask is refused, with the JSON path
    data = json.loads(path.read_text())
    data["cement"]["mask"]["box_upper_zyx"][0] -= 1
    path.write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match="cement.mask"):
        load_plan(path)


def test_requested_volume_and_material(phantom):
    r = plan_case(phantom.ct, phantom.structures,
                  options=PlanningOptions(cement_volume_mL=2.5, cement_material="pmma", heterogeneity=False))
    c = r.cement
    assert c.volume_source == "requested" and c.result.volume_mL == pytest.approx(2.5, abs=1e-3)
    assert not c.radiopaque and "heterogeneity" not in r.plan.results
    # pure PMMA is water-like for 125I: seeds are not kept out of it
    assert r.plan.cement.material.radiopacifier == "none" and not r.plan.cement.radiopaque


def test_cement_bad_input(phantom):
    with pytest.raises(InputError, match="volume_mL=60 exceeds what the vertebral body can hold"):
        plan_case(phantom.ct, phantom.structures, options=PlanningOptions(cement_volume_mL=60.0))
    for bad in ({"cement_volume_mL": -1.0}, {"cement_model": "max"}, {"cement_material": "gold"},
                {"cement_seed_margin_mm": -1}, {"cement": "yes"}, {"pvp_approach": "anterior"}):
        with pytest.raises(InputError):
            PlanningOptions(**bad)
    # without a vertebral body the planner derives one from the CT (and says so) rather than giving up
    no_vb = StructureSet([s for s in phantom.structures.values() if s.role != Role.VERTEBRAL_BODY])
    r = plan_case(phantom.ct, no_vb, options=PlanningOptions(cement_volume_mL=3.0, heterogeneity=False))
    assert r.plan.cement.vertebral_body == "vertebral_body" and r.plan.cement.volume_mL == pytest.approx(3.0, abs=0.01)
    assert any(n.startswith("anatomy: vertebral_body:") for n in r.plan.notes)


def test_unipedicular_and_fallback_when_one_side_is_blocked(phantom):
    from seedplan.imaging.structures import Structure

    g = phantom.ct.grid
    r = plan_case(phantom.ct, phantom.structures, options=PlanningOptions(pvp_bilateral=False, heterogeneity=False))
    (n,) = r.plan.pvp_needles
    assert n.label.startswith("unilateral") and abs(n.tip[0]) < 10.0  # towards the midline (bilateral: 11.9 mm)
    assert r.cement.tips_mm == (tuple(n.tip),)
    # a wall over the skin of the patient's left back blocks the left transpedicular path
    k, j, i = np.indices(g.shape)
    xyz = g.index_to_world(np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(float)).reshape(*g.shape, 3)
    wall = phantom.structures["body"].mask & (xyz[..., 0] > 2.0) & (xyz[..., 1] > 60.0)
    s = StructureSet([*phantom.structures.values(), Structure("left_dressing", Role.AVOIDANCE, wall, g)])
    r = plan_case(phantom.ct, s, options=PlanningOptions(heterogeneity=False))
    (n,) = r.plan.pvp_needles
    assert n.label == "unilateral-right" and n.entry[0] < 0
    assert any(w.startswith("unipedicular vertebroplasty only") and "from the left" in w
               for w in r.plan.results["warnings"])
    assert r.cement is not None and len(r.cement.tips_mm) == 1
