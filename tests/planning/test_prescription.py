import copy
import dataclasses
import json
import pickle

import pytest

from seedplan.errors import InputError, InputTypeError
from seedplan.plan import CITATIONS, GoalResult, Prescription


def test_defaults_and_citations():
    p = Prescription()
    assert p.dose_Gy == 120.0 and p.seed_model == "6711" and p.activity_mCi_range == (0.3, 1.0)
    assert p.d90_goal_pct_of_pd == 100 and p.v100_goal_pct == 95
    assert p.seed_spacing_mm == 10 and p.min_needle_distance_mm == 5
    assert p.min_seed_canal_distance_mm == 5 and p.target_margin_mm == 5
    assert p.oar_limits["cord"]["D0.1cc_Gy"] == 50
    assert p.half_life_d == 59.40 and p.alpha_beta_cord_Gy == 2 and p.alpha_beta_tumour_Gy == 10
    assert set(CITATIONS) == {f.name for f in dataclasses.fields(Prescription)}
    assert all(CITATIONS.values())
    re = Prescription.after_prior_ebrt()
    assert re.dose_Gy == 100 and re.limits_for("Cord") == {"D0.1cc_Gy": 40.0}


def test_round_trip_exact_and_immutable():
    p = Prescription(dose_Gy=110, activity_mCi_range=[0.35, 0.7], oar_limits={"Cord": {"D0.1cc_Gy": 45, "Dmax_Gy": 80}})
    d = p.to_dict()
    assert Prescription.from_dict(d) == p
    assert Prescription.from_dict(json.loads(json.dumps(d))) == p
    assert Prescription.from_dict(d).to_dict() == d
    assert pickle.loads(pickle.dumps(p)) == p and copy.deepcopy(p) == p and hash(p) == hash(Prescription.from_dict(d))
    d["oar_limits"]["Cord"]["Dmax_Gy"] = 1.0  # mutating the dict does not touch p
    assert p.oar_limits["Cord"]["Dmax_Gy"] == 80
    with pytest.raises(TypeError):
        p.oar_limits["Cord"] = {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.dose_Gy = 100


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dose_Gy": 79.9}, "prescription dose.*80-160"),
        ({"dose_Gy": 200}, "prescription dose.*80-160"),
        ({"dose_Gy": float("nan")}, "prescription dose"),
        ({"activity_mCi_range": (0.0, 0.5)}, "activity_mCi_range low"),
        ({"activity_mCi_range": (0.3, 6.0)}, "activity_mCi_range high"),
        ({"activity_mCi_range": (0.8, 0.4)}, "low <= high"),
        ({"activity_mCi_range": 0.5}, "activity_mCi_range"),
        ({"seed_spacing_mm": 4.0}, "seed_spacing_mm"),
        ({"min_seed_canal_distance_mm": 2.0}, "min_seed_canal_distance_mm"),
        ({"v100_goal_pct": 101}, "v100_goal_pct"),
        ({"oar_limits": {"cord": {"D5cc": 10}}}, "unknown metric 'D5cc'"),
        ({"oar_limits": {"cord": {"Dmax_Gy": -1}}}, "oar_limits"),
        ({"oar_limits": {"": {"Dmax_Gy": 1}}}, "non-empty"),
        ({"alpha_beta_cord_Gy": 0}, "alpha_beta_cord_Gy"),
        ({"seed_model": ""}, "seed_model"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        Prescription(**kwargs)


def test_type_errors_and_unknown_keys():
    with pytest.raises(InputTypeError, match="dose_Gy"):
        Prescription(dose_Gy="120")
    with pytest.raises(InputTypeError, match="dose_Gy"):
        Prescription(dose_Gy=True)
    with pytest.raises(InputError, match="'dose_gy'"):
        Prescription.from_dict({"dose_gy": 120})
    with pytest.raises(InputTypeError):
        Prescription.from_dict([("dose_Gy", 120)])


def _metrics(pd=120.0, d90=125.0, v100=96.0, v150=75.0, v200=20.0, cord_d01=55.0):
    return {
        "prescription_Gy": pd,
        "target": {"name": "PTV", "D90_Gy": d90, "V100_pct": v100, "V150_pct": v150, "V200_pct": v200},
        "oars": {
            "SpinalCord": {"D0.1cc_Gy": cord_d01, "Dmax_Gy": 70.0},
            "Cauda_Equina": {"D0.1cc_Gy": 10.0},
            "Aorta": {"D0.1cc_Gy": 90.0},
        },
        "avoidance": {},
    }


def test_goals_check():
    res = Prescription().goals_check(_metrics())
    assert all(isinstance(r, GoalResult) for r in res)
    by_goal = {r.goal: r for r in res}
    assert by_goal["PTV D90_Gy >= 120"] == ("PTV D90_Gy >= 120", 125.0, 120.0, True)
    assert by_goal["PTV V100_pct >= 95"].passed
    assert not by_goal["PTV V150_pct <= 70"].passed
    assert by_goal["PTV V200_pct <= 40"].passed
    assert by_goal["SpinalCord D0.1cc_Gy <= 50"] == ("SpinalCord D0.1cc_Gy <= 50", 55.0, 50.0, False)
    assert by_goal["Cauda_Equina D0.1cc_Gy <= 50"].passed
    assert not any(g.startswith("Aorta") for g in by_goal)  # no default aorta limit
    p = Prescription(oar_limits={"aorta": {"D0.1cc_Gy": 100.0}, "cord": {"D0.1cc_Gy": 60.0}})
    assert [r.passed for r in p.goals_check(_metrics())][-2:] == [True, True]
    with pytest.raises(InputError, match="prescription"):
        Prescription(dose_Gy=100).goals_check(_metrics())


def test_goals_check_on_evaluate_output():
    import numpy as np

    from seedplan.evaluation.metrics import evaluate
    from seedplan.geometry import Grid

    class S:
        def __init__(self, name, role, mask, grid):
            self.name, self.role, self.mask, self.grid = name, role, mask, grid

    g = Grid.from_bounds((-20, -20, -20), (20, 20, 20), 1.0)
    c = g.voxel_centers_mm()
    r = np.linalg.norm(c, axis=-1)
    cord = (c[..., 0] - 14) ** 2 + c[..., 1] ** 2 <= 16

    def dose(p):
        return 2400.0 / np.maximum(np.sum(np.asarray(p) ** 2, axis=1), 1.0)

    ev = evaluate([S("PTV", "target", r <= 4, g), S("cord", "oar", cord, g)], dose, 120.0)
    res = Prescription().goals_check(ev.metrics)
    goals = [x.goal for x in res]
    assert goals[0].startswith("PTV D90_Gy") and goals[-1] == "cord D0.1cc_Gy <= 50"
    assert res[-1].value == ev.metrics["oars"]["cord"]["D0.1cc_Gy"]
