"""One family of input validators, keyword-driven, used by every module.

Each validator takes the value and the name to put in the message (the
argument, the JSON path or the case-file key: whatever the user can find),
and returns the value normalised (floats, tuples, contiguous arrays).  A value
of the wrong type raises :class:`~seedplan.errors.InputTypeError`; a value of
the right type that is out of range raises :class:`~seedplan.errors.InputError`
(``InputTypeError`` is an ``InputError`` too).  Strings are never numbers and
booleans are never numbers: ``"1.5"`` and ``True`` are refused everywhere.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from typing import Any, Iterable

import numpy as np

from .errors import InputError, InputTypeError

__all__ = ["number", "array", "integer", "flag", "choice", "vector", "points", "iso_date", "mapping", "text"]


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


def _is_real_scalar(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def number(value: Any, name: str, *, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number within ``[lo, hi]`` (``lo_open``/``hi_open``: strict bounds), as float."""
    if not _is_real_scalar(value):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {value!r}")
    low = lo is not None and (v <= lo if lo_open else v < lo)
    high = hi is not None and (v >= hi if hi_open else v > hi)
    if low or high:
        raise InputError(f"{name} must be {_range_text(lo, hi, lo_open, hi_open)}, got {value!r}")
    return v


def array(value: Any, name: str, *, lo: float | None = None, lo_open: bool = False, unit: str = "") -> np.ndarray:
    """A number or an array of finite real numbers, each ``>= lo`` (``> lo`` with ``lo_open``), as float64."""
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise InputTypeError(f"{name} must be a number or an array of numbers, got {type(value).__name__} {value!r}")
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise InputTypeError(f"{name} must be a number or an array of real numbers, got {arr.dtype} values")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite, got {value!r}")
    if lo is not None and np.any(arr <= lo if lo_open else arr < lo):
        raise InputError(f"{name} must be {'>' if lo_open else '>='} {lo:g}{(' ' + unit) if unit else ''}, "
                         f"got {value!r}")
    return arr


def integer(value: Any, name: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """An integer within ``[lo, hi]``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise InputError(f"{name} must be {_range_text(lo, hi, False, False)}, got {v}")
    return v


def flag(value: Any, name: str) -> bool:
    """``True`` or ``False`` (not 0/1, not "yes")."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def choice(value: Any, name: str, options: Iterable[Any]) -> Any:
    """One of ``options`` (same type and equal: ``True`` is not ``1``)."""
    opts = tuple(options)
    if any(value is o or (type(value) is type(o) and value == o) for o in opts):
        return value
    raise InputError(f"{name} must be one of {', '.join(repr(o) for o in opts)}, got {value!r}")


def text(value: Any, name: str, *, empty: bool = False) -> str:
    """A string (non-empty unless ``empty``)."""
    if not isinstance(value, str):
        raise InputTypeError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    if not empty and not value.strip():
        raise InputError(f"{name} must not be empty")
    return value


def vector(value: Any, name: str, *, size: int = 3, unit: str = "mm", max_abs: float | None = None) -> tuple[float, ...]:
    """``size`` finite real numbers (each within ``max_abs`` of 0 when given), as a tuple of floats."""
    arr = points(value, name, dim=size, unit=unit, single=True, max_abs=max_abs)
    return tuple(float(v) for v in arr[0])


def points(value: Any, name: str, *, dim: int = 3, unit: str = "mm", single: bool = False,
           max_points: int | None = None, max_abs: float | None = None, min_points: int = 0) -> np.ndarray:
    """An ``(N, dim)`` array of finite real numbers (a single point of ``dim`` values becomes ``(1, dim)``).

    Parameters
    ----------
    single : bool
        Exactly one point is expected.
    max_points : int, optional
        Refuse more rows than this (:class:`~seedplan.errors.ResourceError`), before any copy.
    max_abs : float, optional
        Refuse coordinates farther than this from 0 (absurd positions, e.g. 1e30 mm).
    min_points : int
        Refuse fewer rows than this.
    """
    what = f"{dim} numbers" if single else f"an (N, {dim}) array of numbers"
    if value is None or isinstance(value, (str, bytes, Mapping)):
        raise InputTypeError(f"{name} must be {what} ({unit}), got {type(value).__name__}")
    arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
    if arr.dtype == object:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputTypeError(f"{name} must be {what} ({unit})") from None
    if arr.dtype.kind not in "iuf":
        kind = {"b": "booleans", "c": "complex numbers", "U": "strings", "S": "bytes"}.get(arr.dtype.kind, str(arr.dtype))
        raise InputTypeError(f"{name} must be {what} ({unit}), got {kind}")
    if arr.ndim == 1 and arr.shape[0] == dim:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim or (single and arr.shape[0] != 1):
        raise InputError(f"{name} must be {what} ({unit}), got shape {np.shape(value)}")
    if arr.shape[0] < min_points:
        raise InputError(f"{name} is empty: give at least {min_points} point{'s' if min_points > 1 else ''}")
    if max_points is not None and arr.shape[0] > max_points:
        from .errors import ResourceError

        raise ResourceError(f"{name} has {arr.shape[0]:,} rows; at most {max_points:,} are accepted here")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise InputError(f"{name} contains NaN or inf (first at row {bad}); values must be finite {unit}")
    if max_abs is not None and arr.size and float(np.abs(arr).max()) > max_abs:
        bad = int(np.argmax(np.abs(arr).max(axis=1)))
        raise InputError(f"{name}[{bad}] = {arr[bad].tolist()} lies farther than {max_abs:g} {unit} from the "
                         "origin; positions must be in patient coordinates")
    return arr


def iso_date(value: Any, name: str) -> str:
    """An ISO date (``2026-11-21``) or date-time string; returned unchanged."""
    if not isinstance(value, str):
        raise InputTypeError(f"{name} must be an ISO date string such as 2026-11-21, got {value!r}")
    try:
        _dt.datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{name} must be an ISO date such as 2026-11-21, got {value!r}") from None
    return value


def mapping(value: Any, name: str) -> Mapping:
    """A mapping (JSON object)."""
    if not isinstance(value, Mapping):
        raise InputTypeError(f"{name} must be an object (mapping), got {type(value).__name__}")
    return value
