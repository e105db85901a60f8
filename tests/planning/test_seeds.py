"""Seed optimiser on an analytic sphere case."""

import numpy as np
import pytest

import seedplan
from seedplan.errors import PlanningError
from seedplan.planning.seeds import SeedGoals, optimise_seeds, plan_quality


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
    goals = SeedGoals(120.0, 120.0, 95.0, 60.0, 30.0, {"cord": 50.0})
    sol = optimise_seeds(A, w, goals, A_oars={"cord": Ac}, w_oars={"cord": wc}, conflicts=conflicts, rng=1)
    assert sol.goals_met, sol.failed_goals
    q = sol.quality
    assert q["D90_Gy"] >= 120 and q["V100_pct"] >= 95 and q["V150_pct"] <= 60
    assert 0.3 <= sol.activity_mCi <= 1.0 and sol.strength_U == pytest.approx(sol.activity_mCi * 1.27)
    # conflicting slots (closer than 10 mm on one needle) are never both used
    chosen = set(sol.chosen)
    assert not any(a in chosen and b in chosen for a, b in conflicts)
    # the reported quality is recomputed independently from the chosen slots
    x = np.zeros(A.shape[1], bool)
    x[list(sol.chosen)] = True
    q2 = plan_quality(x, sol.strength_U, A, w, {"cord": Ac}, {"cord": wc}, goals)
    assert q2 == pytest.approx(dict(q))
    # fewest seeds: every single removal breaks a goal
    from seedplan.planning.seeds import _failed

    for j in sol.chosen:
        y = x.copy()
        y[j] = False
        assert _failed(plan_quality(y, sol.strength_U, A, w, {"cord": Ac}, {"cord": wc}, goals), goals)


def test_deterministic(sphere_case):
    A, w, Ac, wc, slots, conflicts = sphere_case
    goals = SeedGoals(120.0, 120.0)
    a = optimise_seeds(A, w, goals, conflicts=conflicts, rng=3, activities_mCi=[0.6])
    b = optimise_seeds(A, w, goals, conflicts=conflicts, rng=3, activities_mCi=[0.6])
    assert a.chosen == b.chosen and a.activity_mCi == b.activity_mCi == 0.6


def test_unreachable_goals_report_failures(sphere_case):
    A, w, Ac, wc, slots, conflicts = sphere_case
    goals = SeedGoals(120.0, 120.0, 95.0, 60.0, 30.0, {"cord": 0.5})  # absurd cord limit
    sol = optimise_seeds(A, w, goals, A_oars={"cord": Ac}, w_oars={"cord": wc}, conflicts=conflicts,
                         activities_mCi=[0.5, 0.8])
    assert not sol.goals_met
    assert any("cord" in f or "V100" in f or "D90" in f for f in sol.failed_goals)


def test_no_slots():
    with pytest.raises(PlanningError, match="no candidate seed slots"):
        optimise_seeds(np.zeros((10, 0)), np.ones(10), SeedGoals(120.0, 120.0))


def test_violation_sums_the_misses_in_points():
    from seedplan.planning.seeds import SeedGoals, _violation

    goals = SeedGoals(prescription_Gy=120.0, d90_min_Gy=120.0, v100_min_pct=95.0, v150_max_pct=70.0,
                      v200_max_pct=40.0, oar_d01cc_max_Gy={"cord": 50.0})
    ok = {"D90_Gy": 130.0, "V100_pct": 96.0, "V150_pct": 60.0, "V200_pct": 30.0, "cord:D0.1cc_Gy": 40.0}
    assert _violation(ok, goals) == 0.0
    bad = {"D90_Gy": 108.0, "V100_pct": 94.0, "V150_pct": 71.0, "V200_pct": 42.0, "cord:D0.1cc_Gy": 55.0}
    # V100 1 + D90 10 % + V150 1 + V200 2 + cord 10 %
    assert _violation(bad, goals) == pytest.approx(24.0)
