"""Plan goals as records: one definition used by the optimiser, the evaluation, the report and metrics.json.

A :class:`Goal` says ``<structure> <metric> <comparison> <limit>``, e.g.
``target D90_Gy >= 120`` or ``cauda_equina D0.1cc_Gy <= 50``.  Its value is
read from the metrics layout of :func:`seedplan.evaluation.evaluate`
(``metrics["target"]`` for target goals, ``metrics["oars"][name]`` or
``metrics["avoidance"][name]`` for organ limits).  The prescription derives
the goals (:meth:`~seedplan.plan.Prescription.goals`); the optimiser aims at
tightened copies (:meth:`Goal.with_limit`).

Metric names
------------
``D<x>_Gy``       dose covering x % of the volume (D90_Gy);
``V<y>_pct``      % of the volume receiving >= y % of the prescription dose (V100_pct);
``D<v>cc_Gy``     minimum dose to the hottest v cm^3 (D0.1cc_Gy, D2cc_Gy);
``Dmax_Gy``, ``Dmean_Gy`` and the EQD2 entries of the OAR layout.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, NamedTuple

from .. import _validate as v
from ..errors import InputError, InputTypeError

__all__ = ["Goal", "GoalResult", "check_goals", "GROUPS"]

#: Where a goal's value lives in the metrics layout.
GROUPS = ("target", "oars", "avoidance")

_D_PCT = re.compile(r"^D(\d+(?:\.\d+)?)_Gy$")
_V_PCT = re.compile(r"^V(\d+(?:\.\d+)?)_pct$")
_D_CC = re.compile(r"^D(\d+(?:\.\d+)?)cc_Gy$")


class GoalResult(NamedTuple):
    """One checked goal: ``(goal, value, limit, passed)``; ``goal`` is the goal's label."""

    goal: str
    value: float
    limit: float
    passed: bool


@dataclass(frozen=True)
class Goal:
    """One plan goal.

    Parameters
    ----------
    structure : str
        Structure name (the target's name for target goals).
    metric : str
        Key in the structure's metrics (see the module docstring).
    comparison : {">=", "<="}
    limit : float
        In Gy for ``*_Gy`` metrics, in % for ``*_pct``.
    group : {"target", "oars", "avoidance"}
        Where the value is found in the metrics layout.
    """

    structure: str
    metric: str
    comparison: str
    limit: float
    group: str = "target"

    def __post_init__(self) -> None:
        v.text(self.structure, "goal structure")
        v.text(self.metric, "goal metric")
        v.choice(self.comparison, "goal comparison", (">=", "<="))
        object.__setattr__(self, "limit", v.number(self.limit, f"goal {self.structure} {self.metric} limit"))
        v.choice(self.group, "goal group", GROUPS)

    # ------------------------------------------------------------ reading
    @property
    def label(self) -> str:
        """``"PTV D90_Gy >= 120"``."""
        return f"{self.structure} {self.metric} {self.comparison} {self.limit:g}"

    @property
    def at_least(self) -> bool:
        return self.comparison == ">="

    @property
    def in_percent(self) -> bool:
        return self.metric.endswith("_pct")

    def passed(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def violation(self, value: float) -> float:
        """How far ``value`` misses the goal, in percentage points (doses as % of the limit); 0 when met."""
        miss = self.limit - value if self.at_least else value - self.limit
        if miss <= 0:
            return 0.0
        return miss if self.in_percent else miss / max(abs(self.limit), 1e-9) * 100.0

    def describe_miss(self, value: float) -> str:
        """``"PTV D90_Gy 108.0 < 120"``: the goal and the value that misses it."""
        op = "<" if self.at_least else ">"
        return f"{self.structure} {self.metric} {value:.1f} {op} {self.limit:g}"

    def value_in(self, metrics: Mapping[str, Any]) -> float:
        """This goal's value in an ``evaluate(...).metrics`` layout."""
        if self.group == "target":  # one of several targets (a multi-level plan), else the target
            named = (metrics.get("targets") or {}).get(self.structure)
            block = named if named is not None else metrics.get("target")
            where = f"metrics['targets'][{self.structure!r}]" if named is not None else "metrics['target']"
        else:
            block = (metrics.get(self.group) or {}).get(self.structure)
            where = f"metrics[{self.group!r}][{self.structure!r}]"
        if not block or self.metric not in block:
            raise InputError(f"{where} has no {self.metric!r} needed by the goal {self.label!r}; "
                             "pass the layout returned by evaluate()")
        return float(block[self.metric])

    def with_limit(self, limit: float) -> "Goal":
        return replace(self, limit=limit)

    # --------------------------------------------------------- for the optimiser
    def volume_condition(self, prescription_Gy: float) -> tuple[float, float] | None:
        """A target goal as "the volume (%) receiving >= level Gy" compared with a percentage.

        ``D90_Gy >= L`` is ``V(L) >= 90 %``; ``V150_pct <= 70`` is ``V(1.5 PD) <= 70 %``.
        Returns ``(level_Gy, percent)``, or None for a metric that is not a D_x or V_y.
        """
        m = _D_PCT.match(self.metric)
        if m:
            return self.limit, float(m.group(1))
        m = _V_PCT.match(self.metric)
        if m:
            return float(m.group(1)) / 100.0 * prescription_Gy, self.limit
        return None

    def hottest_volume_cm3(self) -> float | None:
        """For ``D<v>cc_Gy`` the volume v, for ``Dmax_Gy`` 0; None otherwise."""
        if self.metric == "Dmax_Gy":
            return 0.0
        m = _D_CC.match(self.metric)
        return float(m.group(1)) if m else None


def check_goals(goals: Any, metrics: Mapping[str, Any]) -> list[GoalResult]:
    """Check goals against an ``evaluate(...).metrics`` layout, in order."""
    if not isinstance(metrics, Mapping):
        raise InputTypeError(f"metrics must be the mapping from evaluate(), got {type(metrics).__name__}")
    out = []
    for g in goals:
        val = g.value_in(metrics)
        out.append(GoalResult(g.label, val, g.limit, bool(g.passed(val)) and math.isfinite(val)))
    return out
