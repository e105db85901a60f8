"""Seed optimisation: which candidate slots hold a seed, and the implant's single activity.

Formulation
-----------
The optimiser works on dose-influence matrices (Gy per U of a permanent
implant): ``A_T`` (target sample points x slots) and one ``A_O`` per organ at
risk.  For one per-seed strength ``S`` (from the activity in mCi) it solves
the mixed-integer programme, with SciPy's ``milp`` (HiGHS)::

    minimise    sum_j x_j  +  lambda_cov * sum_i w_i s_i  +  lambda_oar * sum_k o_k / L_k
    subject to  S * (A_T x)_i / PD + s_i >= c_i      for sampled target points i
                S * (A_O x)_k - o_k      <= L_k      for sampled OAR points k
                         x_a + x_b <= 1                      for conflicting slots (a, b)
                x_j in {0, 1},  0 <= s_i <= c_i,  o_k >= 0

on a down-sampled set of points (``c_i = 1``: the point should receive PD;
``w_i`` its share of the target volume; the slacks keep the problem feasible
when a goal cannot be met, and their weights make coverage and OAR sparing
dominate the seed count).  Candidate slots are laid at half the seed
spacing along each needle; the conflict rows keep the chosen seeds at
least one seed spacing apart.

At each activity of the sweep the LP relaxation of this programme (HiGHS) is rounded at 0.5 and refined by a deterministic local search on
the full matrices: add the slot that covers most under-dosed target volume
while a coverage goal fails; then add, remove or move one seed at a time,
coverage first and V150/V200 next, and, when that stalls, trading coverage
against hot spots (kept only if every goal is then met); finally remove
seeds whose removal keeps every goal met.  At the best activity the mixed-integer programme itself is
solved (HiGHS branch and bound, node-limited so that the result is
deterministic), refined the same way, and kept when it is better.  One
activity serves the whole implant, as clinics order one batch; the plan
meeting all goals with the fewest seeds wins, ties going to the lower
activity.  When no activity meets every goal the plan failing the fewest
goals (then with the smallest total violation) is returned with the failed goals
named.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numba as nb
import numpy as np

from ..errors import InputError, PlanningError
from ..evaluation.dvh import _RTOL, dose_covering
from ..plan import Goal

__all__ = ["Aims", "SeedSolution", "optimise_seeds", "plan_quality"]


@dataclass(frozen=True)
class Aims:
    """The goals the optimiser works to, compiled for its sample matrices.

    Built from :class:`~seedplan.plan.Goal` records (usually tightened copies of
    the prescription's goals).  Target goals on D_x or V_y become "the volume
    receiving >= level Gy is at least / at most p %"; organ goals on
    ``D<v>cc_Gy`` or ``Dmax_Gy`` become hottest-volume limits on that organ's
    samples.  Goals the samples cannot measure are left to the evaluation.

    With several targets planned as one implant (``target_rows``), a target
    goal on one of them is measured on its own rows of the target samples;
    any other target goal on all of them.
    """

    prescription_Gy: float
    goals: tuple[Goal, ...]
    target_rows: Mapping[str, np.ndarray] = field(default_factory=dict, compare=False)

    @classmethod
    def from_goals(cls, goals: Sequence[Goal], prescription_Gy: float,
                   target_rows: Mapping[str, np.ndarray] | None = None) -> "Aims":
        """The aims of ``goals``; ``target_rows``: target name -> its row indices in the target samples."""
        if not all(isinstance(g, Goal) for g in goals):
            raise InputError("goals must be seedplan.plan.Goal records")
        rows = {}
        for name, r in (target_rows or {}).items():
            r = np.asarray(r)
            if r.ndim != 1 or r.size == 0 or not np.issubdtype(r.dtype, np.integer) or r.min() < 0:
                raise InputError(f"target_rows[{name!r}] must be a non-empty 1D array of row indices >= 0")
            rows[str(name)] = r.astype(np.int64)
        return cls(float(prescription_Gy), tuple(goals), MappingProxyType(rows))

    def rows(self, goal: Goal) -> np.ndarray | None:
        """The target sample rows ``goal`` is measured on (None: all of them)."""
        return self.target_rows.get(goal.structure)

    @property
    def target(self) -> tuple[tuple[Goal, float, float], ...]:
        """``(goal, level_Gy, percent)`` of each target goal."""
        memo = self.__dict__.setdefault("_memo", {})  # the goals never change: worked out once
        if "target" not in memo:
            out = []
            for g in self.goals:
                c = g.volume_condition(self.prescription_Gy) if g.group == "target" else None
                if c is not None:
                    out.append((g, *c))
            memo["target"] = tuple(out)
        return memo["target"]

    def organ(self, names: Sequence[str]) -> tuple[tuple[Goal, float], ...]:
        """``(goal, hottest volume cm^3)`` of each organ goal the samples of ``names`` can measure."""
        memo = self.__dict__.setdefault("_memo", {})
        key = ("organ", tuple(names))
        if key not in memo:
            out = []
            for g in self.goals:
                vol = g.hottest_volume_cm3() if g.group != "target" and g.structure in names else None
                if vol is not None:
                    out.append((g, vol))
            memo[key] = tuple(out)
        return memo[key]


def _key(g: Goal) -> str:
    return f"{g.structure} {g.metric}"


@dataclass(frozen=True)
class SeedSolution:
    """Result of :func:`optimise_seeds`.

    Attributes
    ----------
    chosen : tuple of int
        Indices of the slots that hold a seed, ascending.
    activity_mCi, strength_U : float
        The single per-seed activity and its air-kerma strength.
    quality : dict
        ``"<structure> <metric>"`` -> value of the chosen plan on the full samples (:func:`plan_quality`).
    failed_goals : tuple of str
        Goals the best plan does not meet (empty when all are met).
    trials : tuple of dict
        One summary per activity tried (for the report and reproducibility).
    """

    chosen: tuple[int, ...]
    activity_mCi: float
    strength_U: float
    quality: Mapping[str, float]
    failed_goals: tuple[str, ...]
    trials: tuple[Mapping[str, Any], ...]
    solve_time_s: float

    @property
    def n_seeds(self) -> int:
        return len(self.chosen)

    @property
    def goals_met(self) -> bool:
        return not self.failed_goals


# ---------------------------------------------------------------- evaluation
def _volume_pct(d: np.ndarray, w: np.ndarray, level_Gy: float) -> np.ndarray:
    """% of the weight with dose >= level (``d`` may be (N,) or (N, K) for K candidate plans)."""
    return (d >= level_Gy - 1e-9).astype(float).T @ w * (100.0 / w.sum())


@nb.njit(cache=True)
def _sum_columns_kernel(A, sel):
    out = np.empty(A.shape[0])
    k = sel.shape[0]
    for r in range(A.shape[0]):
        acc = A[r, sel[0]]
        for i in range(1, k):
            acc += A[r, sel[i]]
        out[r] = acc
    return out


@nb.njit(cache=True)
def _move_indicators(d, SA, gone, added, level):
    """``(dose >= level)`` as 0.0 / 1.0 for every candidate plan, one column each.

    Candidate ``c`` is the current plan ``d`` less the seed ``gone[c]`` (-1: none) plus the seed
    ``added[c]`` (-1: none), with the same float operations as ``(d - SA[:, j]) + SA[:, f]``.
    """
    n = d.shape[0]
    k = gone.shape[0]
    out = np.empty((n, k))
    for r in range(n):
        for c in range(k):
            v = d[r]
            if gone[c] >= 0:
                v = v - SA[r, gone[c]]
            if added[c] >= 0:
                v = v + SA[r, added[c]]
            out[r, c] = 1.0 if v >= level else 0.0
    return out


@nb.njit(cache=True)
def _sum_rows_kernel(At, sel):
    out = At[sel[0]].copy()
    for i in range(1, sel.shape[0]):
        row = At[sel[i]]
        for r in range(out.shape[0]):
            out[r] += row[r]
    return out


#: ``id(A) -> (A, A.T as a C array)`` of the influence matrices of the optimisations running: a column of
#: ``A`` is then a contiguous row to add.
_TRANSPOSED: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _sum_columns(A: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """``A[:, sel].sum(axis=1)`` without gathering the columns.

    On an (N, k) array with N >= 2 rows NumPy adds the columns one after the
    other, left to right, for every row; the kernels do the same additions in
    the same order, so the sums are the same bit for bit (tested against NumPy).
    """
    if A.shape[0] < 2 or sel.size == 0 or A.dtype != np.float64:
        return A[:, sel].sum(axis=1)
    hit = _TRANSPOSED.get(id(A))
    if hit is not None and hit[0] is A:
        return _sum_rows_kernel(hit[1], np.ascontiguousarray(sel, dtype=np.int64))
    if not A.flags.c_contiguous:
        return A[:, sel].sum(axis=1)
    return _sum_columns_kernel(A, np.ascontiguousarray(sel, dtype=np.int64))


#: ``id(w) -> (w, cumsum(w) or None)`` of the sample weights of the optimisations running (asked for
#: thousands of times during one).
_CUMSUM: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}


def _cumsum_if_equal(w: np.ndarray) -> np.ndarray | None:
    return np.cumsum(w) if w[0] == w[-1] and np.all(w == w[0]) else None


def _equal_weights_cumsum(w: np.ndarray) -> np.ndarray | None:
    """``np.cumsum(w)`` when every weight is the same (None otherwise); worked out once per optimisation."""
    hit = _CUMSUM.get(id(w))
    if hit is not None and hit[0] is w:
        return hit[1]
    return _cumsum_if_equal(w)


def _covering(d: np.ndarray, w: np.ndarray, volume: float) -> float:
    """:func:`~seedplan.evaluation.dvh.dose_covering`, without sorting when every sample weighs the same.

    With equal weights the hottest-first cumulative volume is the same whatever the order of the
    samples, so the answer is the ``idx``-th largest dose (``idx`` where that volume reaches
    ``volume``), which :func:`numpy.partition` finds in linear time: the same value, bit for bit.
    """
    n = d.shape[0]
    cum = _equal_weights_cumsum(w) if n >= 64 else None
    if cum is None:
        return dose_covering(d, w, volume)
    idx = min(int(np.searchsorted(cum, volume * (1.0 - _RTOL), side="left")), n - 1)
    return float(np.partition(d, n - 1 - idx)[n - 1 - idx])


def plan_quality(
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
    return _quality(x, strength_U, A_target, w_target, A_oars, w_oars, aims)


def _quality(x, strength_U, A_target, w_target, A_oars, w_oars, aims, *, organs_only: bool = False) -> dict[str, float]:
    """:func:`plan_quality`; ``organs_only``: only the organ goals (what a check of the organ limits reads)."""
    sel = np.flatnonzero(x)
    q: dict[str, float] = {}
    if not organs_only:
        d = strength_U * _sum_columns(A_target, sel) if sel.size else np.zeros(A_target.shape[0])
        for g, _level, pct in aims.target:
            rows = aims.rows(g)
            dg, wg = (d, w_target) if rows is None else (d[rows], w_target[rows])
            if g.metric.startswith("V"):
                q[_key(g)] = float(_volume_pct(dg, wg, _level))
            else:
                q[_key(g)] = _covering(dg, wg, pct / 100.0 * wg.sum())
    for g, vol in aims.organ(list(A_oars)):
        A = A_oars[g.structure]
        do = strength_U * _sum_columns(A, sel) if sel.size else np.zeros(A.shape[0])
        q[_key(g)] = _covering(do, w_oars[g.structure], vol) if do.size else 0.0
    return q


def _failed(q: Mapping[str, float], aims: Aims) -> list[str]:
    return [g.describe_miss(q[_key(g)]) for g in aims.goals if _key(g) in q and not g.passed(q[_key(g)] + (
        1e-9 if g.at_least else -1e-9))]


def _violation(q: Mapping[str, float], aims: Aims) -> float:
    """How far a plan misses its goals, in percentage points (doses as % of their goal or limit)."""
    return float(sum(g.violation(q[_key(g)]) for g in aims.goals if _key(g) in q))


# ----------------------------------------------------------------------- MILP
def _milp(
    S: float,
    A_t: np.ndarray,
    w_t: np.ndarray,
    A_o: np.ndarray,
    lim_o: np.ndarray,
    pd: float,
    time_limit_s: float,
    node_limit: int,
    lambda_cov: float,
    lambda_oar: float,
    conflicts: np.ndarray,
) -> tuple[np.ndarray | None, str]:
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix, hstack, identity, vstack

    n, k = A_t.shape
    m = A_o.shape[0]
    wn = w_t / w_t.sum()
    c = np.concatenate([np.ones(k), lambda_cov * wn, lambda_oar / np.maximum(lim_o, 1e-9)])
    rows = [hstack([csr_matrix(S * A_t / pd), identity(n, format="csr"), csr_matrix((n, m))])]
    lo = [np.ones(n)]
    hi = [np.full(n, np.inf)]
    if m:
        rows.append(hstack([csr_matrix(S * A_o), csr_matrix((m, n)), -identity(m, format="csr")]))
        lo.append(np.full(m, -np.inf))
        hi.append(lim_o)
    if len(conflicts):
        r = np.repeat(np.arange(len(conflicts)), 2)
        pair = csr_matrix((np.ones(r.size), (r, conflicts.reshape(-1))), shape=(len(conflicts), k))
        rows.append(hstack([pair, csr_matrix((len(conflicts), n + m))]))
        lo.append(np.full(len(conflicts), -np.inf))
        hi.append(np.ones(len(conflicts)))
    cons = LinearConstraint(vstack(rows).tocsr(), np.concatenate(lo), np.concatenate(hi))
    integrality = np.concatenate([np.full(k, 1 if node_limit > 0 else 0), np.zeros(n + m)])
    bounds = Bounds(np.zeros(k + n + m), np.concatenate([np.ones(k), np.ones(n), np.full(m, np.inf)]))
    res = milp(c, constraints=cons, integrality=integrality, bounds=bounds,
               options={"node_limit": max(node_limit, 1), "time_limit": time_limit_s, "disp": False, "mip_rel_gap": 0.02})
    if res.x is None:
        return None, str(res.message)
    status = "LP relaxation" if node_limit <= 0 else str(res.message).split("(")[-1].rstrip(")")
    if node_limit <= 0:  # round the relaxation, then repair any conflict it creates
        x = res.x[:k] >= 0.5
        for a, b in conflicts:
            if x[a] and x[b]:
                x[b if res.x[b] < res.x[a] else a] = False
        return x, status
    return np.round(res.x[:k]).astype(bool), status


# --------------------------------------------------------------- local search
def _local_search(
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

    q = plan_quality(x, S, A_t, w_t, A_oars, w_oars, goals)
    # 1. repair coverage: add the slot that brings most under-dosed volume to PD
    for _ in range(max_rounds):
        if coverage_ok(q):
            break
        d = S * _sum_columns(A_t, np.flatnonzero(x))
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
            if oar_ok(_quality(trial, S, A_t, w_t, A_oars, w_oars, goals, organs_only=True)):
                best = (trial, plan_quality(trial, S, A_t, w_t, A_oars, w_oars, goals))
                break
        if best is None:
            break
        x, q = best
    # 2. while a goal fails, add, remove or move the seed whose change helps most: coverage
    #    first, then V150 / V200 without losing coverage, keeping the OAR limits
    x0, x = x, _reduce_violation(x, S, A_t, w_t, A_oars, w_oars, goals, neighbours)
    #    if that stalls, trade coverage against hot spots; keep the result only if it meets every goal
    if _failed(plan_quality(x, S, A_t, w_t, A_oars, w_oars, goals), goals):
        xt = _reduce_violation(x0, S, A_t, w_t, A_oars, w_oars, goals, neighbours, coverage_first=False)
        if not _failed(plan_quality(xt, S, A_t, w_t, A_oars, w_oars, goals), goals):
            x = xt
    q = plan_quality(x, S, A_t, w_t, A_oars, w_oars, goals)
    # 3. prune: remove seeds whose removal keeps every goal that is currently met
    met_before = set(_failed(q, goals))
    improved = True
    while improved:
        improved = False
        sel = np.flatnonzero(x)
        if sel.size == 0:
            break
        d = S * _sum_columns(A_t, sel)
        # least useful first: smallest dose delivered to target points near PD
        near = np.abs(d - pd) < 0.5 * pd
        contribution = (A_t[np.ix_(near, sel)] * w_t[near, None]).sum(axis=0)
        for j in sel[np.argsort(contribution, kind="stable")]:
            trial = x.copy()
            trial[j] = False
            qt = plan_quality(trial, S, A_t, w_t, A_oars, w_oars, goals)
            if set(_failed(qt, goals)) <= met_before and coverage_ok(qt) >= coverage_ok(q):
                x, q = trial, qt
                met_before = set(_failed(q, goals))
                improved = True
                break
    return x


def _reduce_violation(x, S, A_t, w_t, A_oars, w_oars, goals, neighbours, *, coverage_first: bool = True,
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

    def shortfall_excess(d, moves=None):
        # every target goal as "the volume receiving >= level is at least / at most p %"; with ``moves``
        # (gone, added) the candidate plans' columns are formed inside the comparison, not stored
        cov = hot = 0.0
        levels = list(dict.fromkeys(level for _g, level, _p in goals.target))  # D90 and V100 share one
        if moves is None:
            hit = {level: (d >= level - 1e-9).astype(float) for level in levels}
        else:  # the candidate plans: the same 0/1 matrices as _volume_pct, the same products
            hit = {level: _move_indicators(d, SA, moves[0], moves[1], level - 1e-9) for level in levels}
        vols: dict[tuple[float, str | None], np.ndarray] = {}
        for g, level, pct in goals.target:
            rows = goals.rows(g)
            key = (level, None if rows is None else g.structure)
            if key not in vols:
                vols[key] = hit[level].T @ w_t * (100.0 / w_t.sum()) if rows is None else \
                    hit[level][rows].T @ w_t[rows] * (100.0 / w_t[rows].sum())
            vol = vols[key]
            if g.at_least:
                cov = cov + np.maximum(pct - vol, 0)
            else:
                hot = hot + np.maximum(vol - pct, 0)
        k = d.shape[1] if moves is None else moves[0].shape[0]
        return np.round(cov + np.zeros(k), 9), np.round(hot + np.zeros(k), 9)

    x = x.copy()
    SA = S * A_t  # S * A_t[:, j] == SA[:, j], bit for bit
    d = S * _sum_columns(A_t, np.flatnonzero(x))
    cov, hot = (float(a[0]) for a in shortfall_excess(d[:, None]))
    for _ in range(max_moves):
        if cov <= 0 and hot <= 0:
            break
        moves = []
        sel = np.flatnonzero(x)
        # how many chosen seeds block each slot (a seed that moves or goes no longer blocks its neighbours)
        n_block = np.zeros(x.size, dtype=np.int64)
        for o in sel:
            np.add.at(n_block, neighbours[o], 1)
        for j in [None, *sel]:  # j: the seed that moves or goes (None: only add one)
            if j is None:
                blocked = n_block > 0
            else:
                own = np.zeros(x.size, dtype=np.int64)
                np.add.at(own, neighbours[j], 1)
                blocked = n_block - own > 0
            free = np.flatnonzero(~x & ~blocked)
            if j is not None:
                moves.append((j, None))
            moves.extend((j, int(f)) for f in free)
        gone = np.array([-1 if j is None else j for j, _f in moves], dtype=np.int64)
        added = np.array([-1 if f is None else f for _j, f in moves], dtype=np.int64)
        c, h = shortfall_excess(d, (gone, added))
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
                qt = _quality(trial, S, A_t, w_t, A_oars, w_oars, goals, organs_only=True)
                if not all(g.passed(qt[_key(g)] - 1e-9) for g in organs):
                    continue
            x, cov, hot, moved = trial, float(c[m]), float(h[m]), True
            break
        if not moved:
            break
        d = S * _sum_columns(A_t, np.flatnonzero(x))
    return x


# ------------------------------------------------------------------ top level
def optimise_seeds(
    A_target: np.ndarray,
    w_target: np.ndarray,
    goals: Aims,
    *,
    A_oars: Mapping[str, np.ndarray] | None = None,
    w_oars: Mapping[str, np.ndarray] | None = None,
    U_per_mCi: float = 1.270,
    activities_mCi: Sequence[float] | None = None,
    activity_range_mCi: tuple[float, float] = (0.3, 1.0),
    milp_points: int = 400,
    milp_node_limit: int = 1,
    milp_time_limit_s: float = 20.0,
    conflicts: Sequence[tuple[int, int]] | np.ndarray = (),
    rng: np.random.Generator | int | None = 0,
) -> SeedSolution:
    """Choose seed slots and one per-seed activity meeting the goals with the fewest seeds.

    Parameters
    ----------
    A_target : (N, K) array
        Total dose (Gy) per U of each candidate slot at each target sample point.
    w_target : (N,) array
        Volume (cm^3) each target sample represents.
    goals : Aims
        The goals to meet (:meth:`Aims.from_goals`), with the prescription dose.
    A_oars, w_oars : mapping name -> array, optional
        The same for organs at risk with a hottest-volume goal (D0.1cc, Dmax) in ``goals``.
    activities_mCi : sequence of float, optional
        Activities to try; default: 0.1 mCi steps over ``activity_range_mCi``,
        refined by 0.05 mCi around the best.
    conflicts : sequence of (int, int)
        Pairs of slots that cannot both hold a seed (e.g. closer than the
        seed spacing on one needle).
    milp_node_limit, milp_time_limit_s : int, float
        Branch-and-bound node limit (deterministic) and a wall-clock safety
        limit that only a pathological case reaches (the result may then
        depend on machine speed).
    rng : Generator or int
        Seeds the down-sampling of points for the MILP (deterministic).

    Returns
    -------
    SeedSolution

    Notes
    -----
    The linear algebra runs on one BLAS thread (:func:`threadpoolctl.threadpool_limits`):
    its products are small (a few hundred points by a few hundred slots), so
    more BLAS threads only contend with the numba kernels' thread pool and with
    each other on a 2-core machine.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _optimise_seeds(A_target, w_target, goals, A_oars=A_oars, w_oars=w_oars, U_per_mCi=U_per_mCi,
                               activities_mCi=activities_mCi, activity_range_mCi=activity_range_mCi,
                               milp_points=milp_points, milp_node_limit=milp_node_limit,
                               milp_time_limit_s=milp_time_limit_s, conflicts=conflicts, rng=rng)


def _with_transposed(arrays: Sequence[np.ndarray], weights: Sequence[np.ndarray] = ()):
    """A context in which :func:`_sum_columns` reads these (unchanging) matrices' columns as contiguous rows
    and :func:`_covering` finds these weights' cumulative sums worked out."""
    from contextlib import contextmanager

    @contextmanager
    def ctx():
        keys, wkeys = [], []
        for A in arrays:
            if A.ndim == 2 and A.shape[0] >= 2 and A.dtype == np.float64 and id(A) not in _TRANSPOSED:
                _TRANSPOSED[id(A)] = (A, np.ascontiguousarray(A.T))
                keys.append(id(A))
        for w in weights:
            if w.ndim == 1 and w.size and id(w) not in _CUMSUM:
                _CUMSUM[id(w)] = (w, _cumsum_if_equal(w))
                wkeys.append(id(w))
        try:
            yield
        finally:
            for k in keys:
                _TRANSPOSED.pop(k, None)
            for k in wkeys:
                _CUMSUM.pop(k, None)

    return ctx()


def _optimise_seeds(A_target, w_target, goals, *, A_oars, w_oars, U_per_mCi, activities_mCi, activity_range_mCi,
                    milp_points, milp_node_limit, milp_time_limit_s, conflicts, rng) -> SeedSolution:
    """:func:`optimise_seeds` (its BLAS threads already limited)."""
    t0 = time.perf_counter()
    A_t = np.asarray(A_target, dtype=np.float64)
    w_t = np.asarray(w_target, dtype=np.float64)
    if not isinstance(goals, Aims):
        raise InputError(f"goals must be an Aims (Aims.from_goals(goals, prescription_Gy)), got {type(goals).__name__}")
    if A_t.ndim != 2 or A_t.shape[1] == 0:
        raise PlanningError("no candidate seed slots: the needles do not cross the target region")
    if w_t.shape != (A_t.shape[0],) or A_t.shape[0] == 0:
        raise InputError("w_target must have one weight per row of A_target, and the target must have samples")
    A_oars = {k: np.asarray(v, dtype=np.float64) for k, v in (A_oars or {}).items()}
    w_oars = {k: np.asarray(v, dtype=np.float64) for k, v in (w_oars or {}).items()}
    lo, hi = activity_range_mCi
    if not (0 < lo <= hi):
        raise InputError(f"activity_range_mCi must satisfy 0 < low <= high, got {activity_range_mCi}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    pairs = np.asarray(conflicts, dtype=np.int64).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= A_t.shape[1]):
        raise InputError("conflicts must index candidate slots (columns of A_target)")

    # down-sample for the MILP: target points, and OAR points that could exceed their limit
    n = A_t.shape[0]
    pick = np.sort(gen.choice(n, size=min(n, milp_points), replace=False))
    A_sub, w_sub = A_t[pick], w_t[pick]
    oar_rows, oar_lims = [], []
    s_max = hi * U_per_mCi
    for g, _vol in goals.organ(list(A_oars)):
        limit = g.limit
        A = A_oars[g.structure]
        worst = s_max * A.sum(axis=1)
        cand = np.flatnonzero(worst > limit)
        cand = cand[np.argsort(-worst[cand], kind="stable")][:300]
        oar_rows.append(A[cand])
        oar_lims.append(np.full(cand.size, limit))
    A_o = np.vstack(oar_rows) if oar_rows else np.zeros((0, A_t.shape[1]))
    lim_o = np.concatenate(oar_lims) if oar_lims else np.zeros(0)

    with _with_transposed([A_t, *A_oars.values()], [w_t, *w_oars.values()]):
        return _sweep(A_t, w_t, goals, A_oars, w_oars, U_per_mCi, activities_mCi, activity_range_mCi, milp_node_limit,
                      milp_time_limit_s, pairs, A_sub, w_sub, A_o, lim_o, t0)


def _sweep(A_t, w_t, goals, A_oars, w_oars, U_per_mCi, activities_mCi, activity_range_mCi, milp_node_limit,
           milp_time_limit_s, pairs, A_sub, w_sub, A_o, lim_o, t0) -> SeedSolution:
    """The activity sweep of :func:`optimise_seeds` (its samples drawn, its MILP rows chosen)."""
    lo, hi = activity_range_mCi
    trials: list[dict[str, Any]] = []
    cache: dict[float, tuple[np.ndarray, dict, list]] = {}

    def run(a: float, node_limit: int = 0) -> tuple[np.ndarray, dict, list]:
        a = round(float(a), 3)
        if a in cache and node_limit == 0:
            return cache[a]
        S = a * U_per_mCi
        x0, status = _milp(S, A_sub, w_sub, A_o, lim_o, goals.prescription_Gy, milp_time_limit_s, node_limit, 400.0,
                           1000.0, pairs)
        if x0 is None:
            x0 = np.zeros(A_t.shape[1], dtype=bool)
        x = _local_search(x0, S, A_t, w_t, A_oars, w_oars, goals, pairs)
        q = plan_quality(x, S, A_t, w_t, A_oars, w_oars, goals)
        fails = _failed(q, goals)
        trials.append({"activity_mCi": a, "n_seeds": int(x.sum()), "solver": status, "failed_goals": fails,
                       **{k: round(v, 3) for k, v in q.items()}})
        def rank(x: np.ndarray, q: Mapping[str, float], fails: list) -> tuple:
            return (len(fails), _violation(q, goals) if fails else 0.0, int(x.sum()))

        if a not in cache or rank(x, q, fails) < rank(*cache[a]):
            cache[a] = (x, q, fails)
        return cache[a]

    def key(a: float):
        x, q, fails = cache[round(float(a), 3)]
        return (len(fails), _violation(q, goals) if fails else 0.0, int(x.sum()), a)

    if activities_mCi is not None:
        grid = sorted({round(float(a), 3) for a in activities_mCi})
        for a in grid:
            if not (lo - 1e-9 <= a <= hi + 1e-9):
                raise InputError(f"activity {a} mCi is outside activity_range_mCi {activity_range_mCi}")
            run(a)
    else:
        grid = list(np.round(np.arange(lo, hi + 1e-9, 0.1), 3))
        if grid[-1] < hi - 1e-9:
            grid.append(round(hi, 3))
        for a in grid:
            run(a)
        best = min(cache, key=key)
        for a in (best - 0.05, best + 0.05):
            if lo - 1e-9 <= a <= hi + 1e-9:
                run(a)
    best = min(cache, key=key)
    if milp_node_limit > 0:
        run(best, milp_node_limit)  # the mixed-integer programme at the chosen activity; kept if better
        best = min(cache, key=key)
    x, q, fails = cache[best]
    return SeedSolution(
        chosen=tuple(int(i) for i in np.flatnonzero(x)),
        activity_mCi=float(best),
        strength_U=float(best * U_per_mCi),
        quality=q,
        failed_goals=tuple(fails),
        trials=tuple(sorted(trials, key=lambda t: t["activity_mCi"])),
        solve_time_s=time.perf_counter() - t0,
    )
