"""The optimiser's fast paths against the code they replace (kept below, verbatim, as the reference).

``plan_quality`` (sums without gathering columns, D_x by partition with equal weights), the local search
(organ-only checks, candidate plans filled in place) and the whole optimiser must give the same plans,
bit for bit, as the previous implementation; the helpers are compared with NumPy directly.
"""

from typing import Mapping

import numpy as np
import pytest

import seedplan
from seedplan.evaluation.dvh import dose_covering
from seedplan.plan import Prescription
from seedplan.planning import seeds as S
from seedplan.planning.seeds import Aims, _covering, _failed, _key, _sum_columns, _volume_pct, optimise_seeds


# ------------------------------------------------------------ the previous implementation (reference)
def _ref_plan_quality(
    x: np.ndarray,
    strength_U: float,
    A_target: np.ndarray,
    w_target: np.ndarray,
    A_oars: Mapping[str, np.ndarray],
    w_oars: Mapping[str, np.ndarray],
    aims: Aims,
) -> dict[str, float]:
    """The value of every goal the optimiser can measure, for slot selection ``x`` (keys ``"<structure> <metric>"``).

    D_x target goals are the dose covering x % of the target samples, V_y goals
    the % receiving y % of the prescription, organ goals the minimum dose to
    the hottest v cm^3 (:func:`seedplan.evaluation.dvh.dose_covering`).
    """
    sel = np.flatnonzero(x)
    d = strength_U * A_target[:, sel].sum(axis=1) if sel.size else np.zeros(A_target.shape[0])
    q: dict[str, float] = {}
    for g, _level, pct in aims.target:
        if g.metric.startswith("V"):
            q[_key(g)] = float(_volume_pct(d, w_target, _level))
        else:
            q[_key(g)] = dose_covering(d, w_target, pct / 100.0 * w_target.sum())
    for g, vol in aims.organ(list(A_oars)):
        A = A_oars[g.structure]
        do = strength_U * A[:, sel].sum(axis=1) if sel.size else np.zeros(A.shape[0])
        q[_key(g)] = dose_covering(do, w_oars[g.structure], vol) if do.size else 0.0
    return q


def _ref_local_search(
    x: np.ndarray,
    S: float,
    A_t: np.ndarray,
    w_t: np.ndarray,
    A_oars: Mapping[str, np.ndarray],
    w_oars: Mapping[str, np.ndarray],
    goals: Aims,
    conflicts: np.ndarray,
    max_rounds: int = 200,
) -> np.ndarray:
    pd = goals.prescription_Gy
    x = x.copy()
    k = x.size
    neighbours: list[list[int]] = [[] for _ in range(k)]
    for a, b in conflicts:
        neighbours[a].append(int(b))
        neighbours[b].append(int(a))
    coverage = [g for g, _l, _p in goals.target if g.at_least]
    organs = [g for g, _v in goals.organ(list(A_oars))]

    def coverage_ok(q):
        return all(g.passed(q[_key(g)] + 1e-9) for g in coverage)

    def oar_ok(q):
        return all(g.passed(q[_key(g)] - 1e-9) for g in organs)

    q = _ref_plan_quality(x, S, A_t, w_t, A_oars, w_oars, goals)
    # 1. repair coverage: add the slot that brings most under-dosed volume to PD
    for _ in range(max_rounds):
        if coverage_ok(q):
            break
        d = S * A_t[:, x].sum(axis=1)
        under = d < pd
        blocked = np.zeros(k, dtype=bool)
        for j in np.flatnonzero(x):
            blocked[neighbours[j]] = True
        free = np.flatnonzero(~x & ~blocked)
        if free.size == 0:
            break
        gain = ((d[under, None] + S * A_t[np.ix_(under, free)]) >= pd).T @ w_t[under]
        best = None
        for j in free[np.argsort(-gain, kind="stable")][:8]:
            trial = x.copy()
            trial[j] = True
            qt = _ref_plan_quality(trial, S, A_t, w_t, A_oars, w_oars, goals)
            if oar_ok(qt):
                best = (trial, qt)
                break
        if best is None:
            break
        x, q = best
    # 2. while a goal fails, add, remove or move the seed whose change helps most: coverage
    #    first, then V150 / V200 without losing coverage, keeping the OAR limits
    x0, x = x, _ref_reduce_violation(x, S, A_t, w_t, A_oars, w_oars, goals, neighbours)
    #    if that stalls, trade coverage against hot spots; keep the result only if it meets every goal
    if _failed(_ref_plan_quality(x, S, A_t, w_t, A_oars, w_oars, goals), goals):
        xt = _ref_reduce_violation(x0, S, A_t, w_t, A_oars, w_oars, goals, neighbours, coverage_first=False)
        if not _failed(_ref_plan_quality(xt, S, A_t, w_t, A_oars, w_oars, goals), goals):
            x = xt
    q = _ref_plan_quality(x, S, A_t, w_t, A_oars, w_oars, goals)
    # 3. prune: remove seeds whose removal keeps every goal that is currently met
    met_before = set(_failed(q, goals))
    improved = True
    while improved:
        improved = False
        sel = np.flatnonzero(x)
        if sel.size == 0:
            break
        d = S * A_t[:, sel].sum(axis=1)
        # least useful first: smallest dose delivered to target points near PD
        near = np.abs(d - pd) < 0.5 * pd
        contribution = (A_t[np.ix_(near, sel)] * w_t[near, None]).sum(axis=0)
        for j in sel[np.argsort(contribution, kind="stable")]:
            trial = x.copy()
            trial[j] = False
            qt = _ref_plan_quality(trial, S, A_t, w_t, A_oars, w_oars, goals)
            if set(_failed(qt, goals)) <= met_before and coverage_ok(qt) >= coverage_ok(q):
                x, q = trial, qt
                met_before = set(_failed(q, goals))
                improved = True
                break
    return x


def _ref_reduce_violation(x, S, A_t, w_t, A_oars, w_oars, goals, neighbours, *, coverage_first: bool = True,
                      max_moves: int = 60):
    """Add, remove or move one seed at a time while that brings the plan closer to its goals.

    Every target goal reads "the volume receiving >= level is at least / at
    most p %" (D90 >= L exactly when >= 90 % of the volume receives L).  The
    coverage shortfall sums the misses of the at-least goals (V100, D90), the
    hot-spot excess those of the at-most goals (V150, V200), in percentage
    points.  With ``coverage_first`` a move must lower the
    shortfall, or keep it and lower the excess; otherwise a move must lower
    their sum, so that some coverage can be traded for more hot-spot volume
    on the way to a plan meeting every goal.  Every move keeps the
    organ-at-risk limits.
    """
    organs = [g for g, _v in goals.organ(list(A_oars))]

    def shortfall_excess(d):
        # every target goal as "the volume receiving >= level is at least / at most p %"
        cov = hot = 0.0
        for g, level, pct in goals.target:
            vol = _volume_pct(d, w_t, level)
            if g.at_least:
                cov = cov + np.maximum(pct - vol, 0)
            else:
                hot = hot + np.maximum(vol - pct, 0)
        return np.round(cov + np.zeros(d.shape[1]), 9), np.round(hot + np.zeros(d.shape[1]), 9)

    x = x.copy()
    d = S * A_t[:, x].sum(axis=1)
    cov, hot = (float(a[0]) for a in shortfall_excess(d[:, None]))
    for _ in range(max_moves):
        if cov <= 0 and hot <= 0:
            break
        cols, moves = [], []
        sel = np.flatnonzero(x)
        for j in [None, *sel]:  # j: the seed that moves or goes (None: only add one)
            base = d if j is None else d - S * A_t[:, j]
            blocked = np.zeros(x.size, dtype=bool)
            for o in sel:
                if o != j:
                    blocked[neighbours[o]] = True
            free = np.flatnonzero(~x & ~blocked)
            if j is not None:
                cols.append(base[:, None])
                moves.append((j, None))
            cols.append(base[:, None] + S * A_t[:, free])
            moves.extend((j, int(f)) for f in free)
        c, h = shortfall_excess(np.concatenate(cols, axis=1))
        if coverage_first:
            better = (c < cov - 1e-9) | ((c <= cov + 1e-9) & (h < hot - 1e-9))
            order = np.lexsort((h, c))
        else:
            better = c + h < cov + hot - 1e-9
            order = np.lexsort((h, c + h))
        moved = False
        for m in order[:8]:
            if not better[m]:
                break
            trial = x.copy()
            j, f = moves[m]
            if j is not None:
                trial[j] = False
            if f is not None:
                trial[f] = True
            if organs:
                qt = _ref_plan_quality(trial, S, A_t, w_t, A_oars, w_oars, goals)
                if not all(g.passed(qt[_key(g)] - 1e-9) for g in organs):
                    continue
            x, cov, hot, moved = trial, float(c[m]), float(h[m]), True
            break
        if not moved:
            break
        d = S * A_t[:, x].sum(axis=1)
    return x


# ------------------------------------------------------------------------------------------- cases
def _aims(cord=None, v150=60.0, v200=30.0):
    p = Prescription(v150_limit_pct=v150, v200_limit_pct=v200,
                     oar_limits={} if cord is None else {"cord": {"D0.1cc_Gy": cord}})
    return Aims.from_goals(p.goals("target", [("cord", "oars")] if cord is not None else []), p.dose_Gy)


def _case(seed, r=15.0, pitch=2.0, weights="equal"):
    rng = np.random.default_rng(seed)
    g = np.arange(-r, r + 0.01, pitch)
    P = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    P = P[np.linalg.norm(P, axis=1) <= r] + rng.uniform(-0.3, 0.3, 3)
    w = np.full(len(P), pitch ** 3 / 1000.0) if weights == "equal" else rng.uniform(0.5, 1.5, len(P)) * 8e-3
    slots = np.array([[x, y, z] for x in (-10, 0, 10) for z in (-10, 0, 10) for y in np.arange(-20, 20.1, 5)
                      if np.linalg.norm([x, y, z]) <= r + 5], float)
    axes = np.tile([0, 1.0, 0], (len(slots), 1))
    A = seedplan.influence_matrix(P, slots, axes=axes)
    cord = np.stack([np.full(300, 1.0), np.full(300, 22.0), np.linspace(-40, 40, 300)], 1)
    cord = np.vstack([cord, cord + [0.0, 2.0, 0.0]])
    Ac = seedplan.influence_matrix(cord, slots, axes=axes)
    wc = np.full(len(cord), 1e-3)
    conflicts = [(a, b) for a in range(len(slots)) for b in range(a + 1, len(slots))
                 if slots[a, 0] == slots[b, 0] and slots[a, 2] == slots[b, 2] and abs(slots[a, 1] - slots[b, 1]) < 10]
    return A, w, Ac, wc, conflicts


def _solve(case, aims, **kw):
    A, w, Ac, wc, conflicts = case
    return optimise_seeds(A, w, aims, A_oars={"cord": Ac}, w_oars={"cord": wc}, conflicts=conflicts, rng=3, **kw)


def _reference(monkeypatch):
    monkeypatch.setattr(S, "plan_quality", _ref_plan_quality)
    monkeypatch.setattr(S, "_local_search", _ref_local_search)
    monkeypatch.setattr(S, "_reduce_violation", _ref_reduce_violation)


def _same(a, b):
    assert a.chosen == b.chosen
    assert a.activity_mCi == b.activity_mCi and a.strength_U == b.strength_U
    assert dict(a.quality) == dict(b.quality)
    assert a.failed_goals == b.failed_goals
    assert a.trials == b.trials


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("seed,weights,cord,v150", [(0, "equal", 50.0, 60.0), (1, "unequal", 50.0, 60.0),
                                                    (2, "equal", 30.0, 40.0), (3, "equal", None, 35.0)])
def test_optimiser_equals_previous_implementation(monkeypatch, seed, weights, cord, v150):
    """The whole optimiser (sweep, LP rounding, local search, MILP) gives the previous plan, bit for bit,
    also when goals fail (tight cord limit, V150 limit) and with unequal sample weights."""
    case = _case(seed, weights=weights)
    aims = _aims(cord=cord, v150=v150)
    fast = _solve(case, aims)
    assert not S._TRANSPOSED and not S._CUMSUM  # the per-optimisation tables are gone with it
    with monkeypatch.context() as m:
        _reference(m)
        ref = _solve(case, aims)
    _same(fast, ref)


def test_plan_quality_equals_previous_implementation():
    A, w, Ac, wc, _c = _case(5)
    aims = _aims(cord=40.0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = rng.random(A.shape[1]) < rng.uniform(0.05, 0.6)
        s = rng.uniform(0.3, 1.3)
        assert S.plan_quality(x, s, A, w, {"cord": Ac}, {"cord": wc}, aims) == \
            _ref_plan_quality(x, s, A, w, {"cord": Ac}, {"cord": wc}, aims)


def test_sum_columns_equals_numpy():
    """NumPy adds the columns of an (N >= 2, k) array left to right; the kernels too (on the matrix, and on its
    transpose during an optimisation): equal bit for bit."""
    rng = np.random.default_rng(1)
    for _ in range(500):
        n, k = int(rng.integers(1, 400)), int(rng.integers(1, 120))
        A = rng.random((n, k)) * 10.0 ** rng.uniform(-4, 4, (n, k))
        sel = np.sort(rng.choice(k, int(rng.integers(1, k + 1)), replace=False))
        ref = A[:, sel].sum(axis=1)
        np.testing.assert_array_equal(_sum_columns(A, sel), ref)
        with S._with_transposed([A]):
            assert n < 2 or id(A) in S._TRANSPOSED
            np.testing.assert_array_equal(_sum_columns(A, sel), ref)
        assert id(A) not in S._TRANSPOSED


def test_covering_equals_dose_covering():
    rng = np.random.default_rng(2)
    for trial in range(300):
        n = int(rng.integers(1, 3000))
        d = np.round(rng.gamma(2.0, 40.0, n), int(rng.integers(0, 3)))  # ties
        w = np.full(n, 8e-3) if trial % 3 else rng.uniform(1e-3, 1e-2, n)
        for v in (0.0, 0.1, 0.9 * w.sum(), w.sum(), 2 * w.sum()):
            assert _covering(d, w, v) == dose_covering(d, w, v)
