"""The plan file: exact round trip, atomic writes, validation of corrupt or hand-edited files."""

import json

import pytest

from seedplan.errors import FileFormatError
from seedplan.plan import Plan, PlannedSeed, load_plan, save_plan
from seedplan.plan import Needle
from seedplan.plan import Prescription


def make_plan():
    needles = (Needle((60.1, 80.2, 1.0), (0.3, -5.0, 1.0)), Needle((-55.0, 82.0, -9.5), (-2.0, -4.0, -9.5)))
    seeds = (
        PlannedSeed((0.3, -5.0, 1.0), (-0.58, -0.81, 0.0), 1, 0.0, 0.6, 0.762),
        PlannedSeed((6.1, 3.1, 1.0), (-0.58, -0.81, 0.0), 1, 10.0, 0.6, 0.762),
        PlannedSeed((-2.0, -4.0, -9.5), (0.51, -0.86, 0.0), 2, 0.0, 0.6, 0.762),
    )
    return Plan(case={"name": "test"}, prescription=Prescription(), seed_model="6711",
                formalism="2D", needles=needles, seeds=seeds, calibration_date="2026-11-01", implant_date="2026-11-21",
                results={"target": {"D90_Gy": 123.456789012345}})


def test_round_trip_exact(tmp_path):
    p = make_plan()
    path = save_plan(p, tmp_path / "plan.json")
    q = load_plan(path)
    assert q.to_dict() == p.to_dict()
    assert q.seeds == p.seeds and q.needles == p.needles and q.prescription == p.prescription
    # decay from calibration to implant date (20 days)
    import math

    assert q.strengths_at_implant_U[0] == pytest.approx(0.762 * math.exp(-math.log(2) * 20 / 59.4))


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "plan.json"
    save_plan(make_plan(), path)
    before = path.read_text()
    import seedplan.plan._plan as plan_mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plan_mod.json, "dumps", boom)
    with pytest.raises(RuntimeError):
        save_plan(make_plan(), path)
    assert path.read_text() == before
    assert [f.name for f in tmp_path.iterdir()] == ["plan.json"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("seeds"), "missing keys"),
        (lambda d: d.__setitem__("version", 99), "version"),
        (lambda d: d["seeds"][0].__setitem__("activity_mCi", -1), "seeds[0]"),
        (lambda d: d["seeds"][0].__setitem__("position_mm", [1, 2]), "seeds[0]"),
        (lambda d: d["seeds"][1].__setitem__("needle", 7), "needle 7"),
        (lambda d: d["needles"][0].__setitem__("tip_mm", d["needles"][0]["entry_mm"]), "needles[0]"),
        (lambda d: d["prescription"].__setitem__("dose_Gy", 5000), "prescription"),
        (lambda d: d.__setitem__("extra", 1), "unknown keys"),
        (lambda d: d.__setitem__("implant_date", "yesterday"), "implant_date"),
        # the JSON path of the actual bad value, not the last one read
        (lambda d: d.__setitem__("seeds", "many"), "seeds: must be a list, got str 'many'"),
        (lambda d: d.__setitem__("needles", {"N1": 1}), "needles: must be a list"),
        # absurd but well formed: an implant two years before the calibration
        (lambda d: d.__setitem__("implant_date", "2024-11-01"), "days before calibration_date"),
        (lambda d: d["seeds"][0].__setitem__("position_mm", [1e30, 0, 0]), "seeds[0]"),
    ],
)
def test_hand_edited_plans_rejected(tmp_path, edit, message):
    d = make_plan().to_dict()
    edit(d)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(d))
    with pytest.raises(FileFormatError) as info:
        load_plan(path)
    assert message in str(info.value) and "plan.json" in str(info.value)


def test_corrupt_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text('{"format": "seedplan-plan", "version": 1, "se')
    with pytest.raises(FileFormatError, match="not valid JSON"):
        load_plan(path)
    with pytest.raises(FileFormatError, match="cannot read"):
        load_plan(tmp_path / "nope.json")
