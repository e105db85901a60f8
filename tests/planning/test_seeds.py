"""Seed optimiser on an analytic sphere case."""

import numpy as np
import pytest

import seedplan
from seedplan.errors import PlanningError
from seedplan.plan import Goal, Prescription
from seedplan.planning.seeds import Aims, optimise_seeds, plan_quality


def make_aims(v150=60.0, v200=30.0, cord=None):
    """The goals of the old tests: D90 >= PD, V100 >= 95, V150/V200 limits and a cord D0.1cc limit."""
    p = Prescription(v150_limit_pct=v150, v200_limit_pct=v200,
                     oar_limits={} if cord is None else {"cord": {"D0.1cc_Gy": cord}})
    return Aims.from_goals(p.goals("target", [("cord", "oars")] if cord is not None else []), p.dose_Gy)


@pytest.fixture(scope="module")
def sphere_case():
    r = 15.0
    g = np.arange(-r, r + 0.01, 2.0)
    P = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    P = P[np.linalg.norm(P, axis=1) <= r]
    w = np.full(len(P), 8e-3)
    slots = np.array([[x, y, z] for x in (-10, 0, 10) for z in (-10, 0, 10) for y in np.arange(-20, 20.1, 5)
                      if np.linalg.norm([x, y, z]) <= r + 5], float)
    axes = np.tile([0, 1.0, 0], (len(slots), 1))
    A = seedplan.influence_matrix(P, slots, axes=axes)
    cord = np.stack([np.zeros(100), np.full(100, 26.0), np.linspace(-40, 40, 100)], 1)
    Ac = seedplan.influence_matrix(cord, slots, axes=axes)
    wc = np.full(100, 0.04)
    conflicts = [(a, b) for a in range(len(slots)) for b in range(a + 1, len(slots))
                 if slots[a, 0] == slots[b, 0] and slots[a, 2] == slots[b, 2] and abs(slots[a, 1] - slots[b, 1]) < 10]
    return A, w, Ac, wc, slots, conflicts


def test_meets_goals_with_few_seeds(sphere_case):
    A, w, Ac, wc, slots, conflicts = sphere_case
    goals = make_aims(cord=50.0)
    sol = optimise_seeds(A, w, goals, A_oars={"cord": Ac}, w_oars={"cord": wc}, conflicts=conflicts, rng=1)
    assert sol.goals_met, sol.failed_goals
    q = sol.quality
    assert q["target D90_Gy"] >= 120 and q["target V100_pct"] >= 95 and q["target V150_pct"] <= 60
    assert 0.3 <= sol.activity_mCi <= 1.0 and sol.strength_U == pytest.approx(sol.activity_mCi * 1.27)
    # conflicting slots (closer than 10 mm on one needle) are never both used
    chosen = set(sol.chosen)
    assert not any(a in chosen and b in chosen for a, b in conflicts)
    # the reported quality is recomputed independently from the chosen slots
    x = np.zeros(A.shape[1], bool)
    x[list(sol.chosen)] = True
    q2 = plan_quality(x, sol.strength_U, A, w, {"cord": Ac}, {"cord": wc}, goals)
    # the optimiser's D90 and D0.1cc are the DVH's (one weighted-quantile definition)
    from seedplan.evaluation import DVH

    d = sol.strength_U * A[:, x].sum(axis=1)
    assert q2["target D90_Gy"] == DVH.from_samples(d, w).D(90)
    assert q2["cord D0.1cc_Gy"] == DVH.from_samples(sol.strength_U * Ac[:, x].sum(axis=1), wc).D_cc(0.1)
    assert q2 == pytest.approx(dict(q))
    # fewest seeds: every single removal breaks a goal
    from seedplan.planning.seeds import _failed

    for j in sol.chosen:
        y = x.copy()
        y[j] = False
        assert _failed(plan_quality(y, sol.strength_U, A, w, {"cord": Ac}, {"cord": wc}, goals), goals)


def test_deterministic(sphere_case):
    A, w, Ac, wc, slots, conflicts = sphere_case
    goals = make_aims()
    a = optimise_seeds(A, w, goals, conflicts=conflicts, rng=3, activities_mCi=[0.6])
    b = optimise_seeds(A, w, goals, conflicts=conflicts, rng=3, activities_mCi=[0.6])
    assert a.chosen == b.chosen and a.activity_mCi == b.activity_mCi == 0.6


def test_unreachable_goals_report_failures(sphere_case):
    A, w, Ac, wc, slots, conflicts = sphere_case
    goals = make_aims(cord=0.5)  # absurd cord limit
    sol = optimise_seeds(A, w, goals, A_oars={"cord": Ac}, w_oars={"cord": wc}, conflicts=conflicts,
                         activities_mCi=[0.5, 0.8])
    assert not sol.goals_met
    assert any("cord" in f or "V100" in f or "D90" in f for f in sol.failed_goals)


def test_no_slots():
    with pytest.raises(PlanningError, match="no candidate seed slots"):
        optimise_seeds(np.zeros((10, 0)), np.ones(10), make_aims())


def test_violation_sums_the_misses_in_points():
    from seedplan.planning.seeds import _failed, _violation

    goals = make_aims(v150=70.0, v200=40.0, cord=50.0)
    ok = {"target D90_Gy": 130.0, "target V100_pct": 96.0, "target V150_pct": 60.0, "target V200_pct": 30.0,
          "cord D0.1cc_Gy": 40.0}
    assert _violation(ok, goals) == 0.0 and _failed(ok, goals) == []
    bad = {"target D90_Gy": 108.0, "target V100_pct": 94.0, "target V150_pct": 71.0, "target V200_pct": 42.0,
           "cord D0.1cc_Gy": 55.0}
    # V100 1 + D90 10 % + V150 1 + V200 2 + cord 10 %
    assert _violation(bad, goals) == pytest.approx(24.0)
    assert len(_failed(bad, goals)) == 5 and "cord D0.1cc_Gy 55.0 > 50" in _failed(bad, goals)


def test_goal_records_as_volume_conditions():
    """D90 >= L is "V(L) >= 90 %"; V150 <= 70 is "V(1.5 PD) <= 70 %"; D0.1cc is a hottest-volume dose."""
    g = Prescription().goals("PTV", [("cord", "oars")])
    assert [x.label for x in g] == ["PTV D90_Gy >= 120", "PTV V100_pct >= 95", "PTV V150_pct <= 70",
                                    "PTV V200_pct <= 40", "cord D0.1cc_Gy <= 50"]
    assert g[0].volume_condition(120.0) == (120.0, 90.0) and g[2].volume_condition(120.0) == (180.0, 70.0)
    assert g[4].volume_condition(120.0) is None and g[4].hottest_volume_cm3() == 0.1
    assert Goal("cord", "Dmax_Gy", "<=", 60.0, "oars").hottest_volume_cm3() == 0.0


def test_each_targets_goals_are_measured_on_its_own_rows():
    """Two lesions as one implant: a small one the union's V100 >= 95 % could leave short is covered too."""
    def ball(r, centre):
        g = np.arange(-r, r + 0.01, 1.5)
        b = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
        return b[np.linalg.norm(b, axis=1) <= r] + centre

    big, small = ball(14.0, [0, 0, 0]), ball(5.0, [0, 0, 45.0])
    P = np.concatenate([big, small])
    w = np.full(len(P), 8e-3)
    rows = {"target_a": np.arange(len(big)), "target_b": np.arange(len(big), len(P))}
    assert len(small) / len(P) < 0.05  # the small lesion alone can fail and the union still hold 95 %
    slots = np.array([[x, y, z] for x in (-8, 0, 8) for y in np.arange(-20, 20.1, 5) for z in (-8, 0, 8, 45)], float)
    axes = np.tile([0, 1.0, 0], (len(slots), 1))
    A = seedplan.influence_matrix(P, slots, axes=axes)
    conflicts = [(a, b) for a in range(len(slots)) for b in range(a + 1, len(slots))
                 if slots[a, 0] == slots[b, 0] and slots[a, 2] == slots[b, 2] and abs(slots[a, 1] - slots[b, 1]) < 10]
    p = Prescription(v150_limit_pct=100.0, v200_limit_pct=100.0)
    per_target = Aims.from_goals([g_ for n in rows for g_ in p.goals(n)], p.dose_Gy, rows)
    sol = optimise_seeds(A, w, per_target, conflicts=conflicts, rng=1)
    assert sol.goals_met, sol.failed_goals
    x = np.zeros(A.shape[1], bool)
    x[list(sol.chosen)] = True
    d = sol.strength_U * A[:, x].sum(axis=1)
    for name, r_ in rows.items():  # each lesion's V100, worked out here from the dose at its own points
        v100 = 100.0 * w[r_][d[r_] >= p.dose_Gy - 1e-9].sum() / w[r_].sum()
        assert v100 == pytest.approx(sol.quality[f"{name} V100_pct"])
        assert v100 >= 95.0
    # goals on a name without rows are measured on every sample
    union = Aims.from_goals(p.goals("target"), p.dose_Gy, rows)
    q = plan_quality(x, sol.strength_U, A, w, {}, {}, union)
    assert q["target V100_pct"] == pytest.approx(100.0 * w[d >= p.dose_Gy - 1e-9].sum() / w.sum())
    # and optimised on the union's goals alone, the small lesion is left short (what the rows are for)
    alone = optimise_seeds(A, w, Aims.from_goals(p.goals("target"), p.dose_Gy), conflicts=conflicts, rng=1)
    xa = np.zeros(A.shape[1], bool)
    xa[list(alone.chosen)] = True
    da = alone.strength_U * A[:, xa].sum(axis=1)
    b = rows["target_b"]
    assert alone.goals_met and 100.0 * w[b][da[b] >= p.dose_Gy - 1e-9].sum() / w[b].sum() < 95.0
    with pytest.raises(seedplan.errors.InputError, match="target_rows"):
        Aims.from_goals(p.goals("target"), p.dose_Gy, {"target_a": np.array([], int)})
