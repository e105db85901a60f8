"""Radioactive decay and the permanent-implant dose convention.

For a permanent implant the total dose is D = Ddot0 * tau with the mean life
tau = T_half / ln 2 (TG-43U1; T_half(I-125) = 59.40 d).  The dose delivered
up to a time T is D(T) = Ddot0 * tau * (1 - exp(-T / tau)).
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

import numpy as np

from ..errors import InputError

#: I-125 half-life in days (TG-43U1, Rivard et al. 2004).
I125_HALF_LIFE_D = 59.40


def _half_life(half_life_d: float) -> float:
    try:
        t = float(half_life_d)
    except (TypeError, ValueError):
        raise InputError(f"half_life_d must be a number of days, got {half_life_d!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise InputError(f"half_life_d must be > 0 days, got {half_life_d!r}")
    return t


def mean_life_h(half_life_d: float = I125_HALF_LIFE_D) -> float:
    """Mean life tau = T_half / ln 2 in hours."""
    return _half_life(half_life_d) * 24.0 / math.log(2.0)


def decay_factor(elapsed_d: Any, half_life_d: float = I125_HALF_LIFE_D) -> Any:
    """exp(-ln 2 * t / T_half) for an elapsed time in days (may be negative: growth back in time)."""
    t = np.asarray(elapsed_d, dtype=float)
    if not np.all(np.isfinite(t)):
        raise InputError("elapsed_d must be finite")
    out = np.exp(-math.log(2.0) * t / _half_life(half_life_d))
    return float(out) if out.ndim == 0 else out


def _as_date(value: Any, name: str) -> _dt.date:
    if isinstance(value, _dt.datetime):
        return value
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        try:
            return _dt.datetime.fromisoformat(value)
        except ValueError:
            raise InputError(f"{name} must be an ISO date such as 2026-11-21 or 2026-11-21T08:00, got {value!r}") from None
    raise InputError(f"{name} must be a date, datetime or ISO string, got {type(value).__name__}")


def elapsed_days(start: Any, end: Any) -> float:
    """Days from ``start`` to ``end`` (dates, datetimes or ISO strings)."""
    a = _as_date(start, "start")
    b = _as_date(end, "end")
    if isinstance(a, _dt.datetime) != isinstance(b, _dt.datetime):
        a = a if isinstance(a, _dt.datetime) else _dt.datetime.combine(a, _dt.time())
        b = b if isinstance(b, _dt.datetime) else _dt.datetime.combine(b, _dt.time())
    if isinstance(a, _dt.datetime):
        if (a.tzinfo is None) != (b.tzinfo is None):
            raise InputError("calibration and implant times must both have a time zone or both have none")
        return (b - a).total_seconds() / 86400.0
    return float((b - a).days)


def strength_at(strength_U: Any, calibration: Any, when: Any, half_life_d: float = I125_HALF_LIFE_D) -> Any:
    """Air-kerma strength at ``when`` given its value at the calibration date."""
    return np.asarray(strength_U, dtype=float) * decay_factor(elapsed_days(calibration, when), half_life_d)


def delivered_fraction(duration_h: Any, half_life_d: float = I125_HALF_LIFE_D) -> Any:
    """Fraction 1 - exp(-T / tau) of the permanent-implant dose delivered by time T (hours)."""
    t = np.asarray(duration_h, dtype=float)
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise InputError(f"duration_h must be finite and >= 0, got {duration_h!r}")
    out = -np.expm1(-t / mean_life_h(half_life_d))
    return float(out) if out.ndim == 0 else out


def dose_delivered_Gy(initial_rate_cGy_h: Any, duration_h: Any = math.inf, half_life_d: float = I125_HALF_LIFE_D) -> Any:
    """Dose (Gy) delivered from implant time up to ``duration_h`` (default: complete decay).

    D(T) = Ddot0 * tau * (1 - exp(-T / tau)); D(inf) = Ddot0 * tau.
    """
    rate = np.asarray(initial_rate_cGy_h, dtype=float)
    tau = mean_life_h(half_life_d)
    frac = 1.0 if np.isinf(duration_h).all() else delivered_fraction(duration_h, half_life_d)
    out = rate * tau * frac / 100.0
    return float(out) if np.ndim(out) == 0 else out
