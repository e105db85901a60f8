"""The treatment plan as a value and as a versioned JSON file.

A plan holds everything the CT room and a later recomputation need: the case
reference, the prescription, the needles, the seeds (position, axis,
activity, S_K, calibration date) and the results.  ``save_plan`` writes
atomically; ``load_plan`` validates the schema and reports the first problem
with its JSON path.  Floats are written with ``repr`` precision, so a
save/load round trip is exact.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._atomic import read_json, write_text_atomic
from .errors import FileFormatError, InputError
from .planning.needles import Needle
from .planning.prescription import Prescription

FORMAT = "seedplan-plan"
VERSION = 1

__all__ = ["PlannedSeed", "Plan", "save_plan", "load_plan", "FORMAT", "VERSION"]


def _vec(value: Any, where: str) -> tuple[float, float, float]:
    try:
        arr = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{where} must be 3 numbers") from None
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise InputError(f"{where} must be 3 finite numbers, got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _num(value: Any, where: str, *, lo: float | None = None, hi: float | None = None, open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{where} must be finite, got {value!r}")
    if lo is not None and (v < lo or (open_lo and v <= lo)):
        raise InputError(f"{where} must be {'>' if open_lo else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise InputError(f"{where} must be <= {hi}, got {v}")
    return v


def _date(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where} must be an ISO date string such as 2026-11-21")
    try:
        _dt.datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{where} must be an ISO date such as 2026-11-21, got {value!r}") from None
    return value


@dataclass(frozen=True)
class PlannedSeed:
    """One seed of the plan.

    ``needle`` is the 1-based needle number; ``retraction_mm`` the distance
    the needle is withdrawn from its tip before this seed is released
    (0 = the deepest seed).  ``strength_U`` is S_K at the calibration date.
    """

    position_mm: tuple[float, float, float]
    axis: tuple[float, float, float]
    needle: int
    retraction_mm: float
    activity_mCi: float
    strength_U: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "position_mm", _vec(self.position_mm, "seed position_mm"))
        ax = np.asarray(_vec(self.axis, "seed axis"))
        n = float(np.linalg.norm(ax))
        if n < 1e-9:
            raise InputError("seed axis must be a non-zero vector")
        object.__setattr__(self, "axis", tuple(float(v) for v in ax / n) if abs(n - 1.0) > 1e-12 else _vec(ax, "axis"))
        if isinstance(self.needle, bool) or not isinstance(self.needle, (int, np.integer)) or self.needle < 1:
            raise InputError(f"seed needle must be a needle number >= 1, got {self.needle!r}")
        object.__setattr__(self, "needle", int(self.needle))
        object.__setattr__(self, "retraction_mm", _num(self.retraction_mm, "seed retraction_mm", lo=0.0))
        object.__setattr__(self, "activity_mCi", _num(self.activity_mCi, "seed activity_mCi", lo=0.0, hi=10.0, open_lo=True))
        object.__setattr__(self, "strength_U", _num(self.strength_U, "seed strength_U", lo=0.0, hi=15.0, open_lo=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "position_mm": list(self.position_mm),
            "axis": list(self.axis),
            "needle": self.needle,
            "retraction_mm": self.retraction_mm,
            "activity_mCi": self.activity_mCi,
            "strength_U": self.strength_U,
        }


@dataclass(frozen=True)
class Plan:
    """A complete seed-implant plan.

    Attributes
    ----------
    case : mapping
        Case reference (name, CT series UID, frame of reference, source paths).
    prescription : Prescription
    seed_model : str
        Seed model name; ``seed_model_status`` is "verified" or "UNVERIFIED".
    formalism : str
        TG-43 formalism used for the dose ("2D", "1D", "1D-point").
    needles : tuple of Needle
    seeds : tuple of PlannedSeed
    calibration_date, implant_date : str
        ISO dates; seed strengths are given at the calibration date and
        decayed to the implant date for the dose.
    results : mapping
        Metrics (the ``metrics.json`` layout) and optimiser diagnostics.
    """

    case: Mapping[str, Any]
    prescription: Prescription
    seed_model: str
    seed_model_status: str
    formalism: str
    needles: tuple[Needle, ...]
    seeds: tuple[PlannedSeed, ...]
    calibration_date: str
    implant_date: str
    results: Mapping[str, Any] = field(default_factory=dict)
    software: Mapping[str, Any] = field(default_factory=dict)
    created: str = ""
    pvp_needles: tuple[Needle, ...] = ()
    cement: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.formalism not in ("2D", "1D", "1D-point"):
            raise InputError(f"plan formalism must be '2D', '1D' or '1D-point', got {self.formalism!r}")
        if self.seed_model_status not in ("verified", "UNVERIFIED"):
            raise InputError("plan seed_model_status must be 'verified' or 'UNVERIFIED'")
        _date(self.calibration_date, "calibration_date")
        _date(self.implant_date, "implant_date")
        for i, s in enumerate(self.seeds):
            if s.needle > len(self.needles):
                raise InputError(f"seed {i + 1} refers to needle {s.needle}, but the plan has {len(self.needles)} needles")

    # ------------------------------------------------------------- derived
    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def positions_mm(self) -> np.ndarray:
        """Seed centres, (M, 3) mm."""
        return np.array([s.position_mm for s in self.seeds], dtype=float).reshape(-1, 3)

    @property
    def axes(self) -> np.ndarray:
        """Seed axes, (M, 3) unit vectors."""
        return np.array([s.axis for s in self.seeds], dtype=float).reshape(-1, 3)

    @property
    def strengths_at_implant_U(self) -> np.ndarray:
        """S_K of each seed at the implant date (decayed from the calibration date)."""
        from .dose.decay import strength_at
        from .sources import load_seed_model

        model = load_seed_model(self.seed_model)
        s = np.array([x.strength_U for x in self.seeds], dtype=float)
        return np.asarray(strength_at(s, self.calibration_date, self.implant_date, model.half_life_d), dtype=float)

    @property
    def total_activity_mCi(self) -> float:
        return float(sum(s.activity_mCi for s in self.seeds))

    def seeds_on_needle(self, needle: int) -> tuple[PlannedSeed, ...]:
        """Seeds of needle ``needle`` (1-based), deepest first."""
        return tuple(sorted((s for s in self.seeds if s.needle == needle), key=lambda s: s.retraction_mm))

    def with_results(self, results: Mapping[str, Any]) -> "Plan":
        return replace(self, results=dict(results))

    # ----------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "software": dict(self.software),
            "case": dict(self.case),
            "prescription": self.prescription.to_dict(),
            "seed_model": {"name": self.seed_model, "status": self.seed_model_status},
            "formalism": self.formalism,
            "calibration_date": self.calibration_date,
            "implant_date": self.implant_date,
            "needles": [n.to_dict() for n in self.needles],
            "pvp_needles": [n.to_dict() for n in self.pvp_needles],
            "seeds": [s.to_dict() for s in self.seeds],
            "cement": None if self.cement is None else dict(self.cement),
            "results": dict(self.results),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "plan") -> "Plan":
        """Validate a plan mapping (as written by :meth:`to_dict`)."""
        if not isinstance(data, Mapping):
            raise FileFormatError(f"{source}: a plan must be a JSON object")
        if data.get("format") != FORMAT:
            raise FileFormatError(f"{source}: not a seedplan plan (format is {data.get('format')!r}, expected {FORMAT!r})")
        if data.get("version") != VERSION:
            raise FileFormatError(f"{source}: plan version {data.get('version')!r} is not supported (this seedplan reads version {VERSION})")
        known = {"format", "version", "created", "software", "case", "prescription", "seed_model", "formalism",
                 "calibration_date", "implant_date", "needles", "pvp_needles", "seeds", "cement", "results"}
        unknown = set(data) - known
        if unknown:
            raise FileFormatError(f"{source}: unknown keys {sorted(unknown)}")
        required = {"case", "prescription", "seed_model", "formalism", "calibration_date", "implant_date", "needles", "seeds"}
        missing = required - set(data)
        if missing:
            raise FileFormatError(f"{source}: missing keys {sorted(missing)}")
        where = ""
        try:
            where = "prescription"
            presc = Prescription.from_dict(data["prescription"])
            where = "seed_model"
            sm = data["seed_model"]
            if not isinstance(sm, Mapping) or not isinstance(sm.get("name"), str):
                raise InputError("must be an object with a 'name'")
            needles = []
            for i, n in enumerate(_list(data["needles"], "needles")):
                where = f"needles[{i}]"
                needles.append(Needle.from_dict(n))
            pvp = []
            for i, n in enumerate(_list(data.get("pvp_needles", []), "pvp_needles")):
                where = f"pvp_needles[{i}]"
                pvp.append(Needle.from_dict(n))
            seeds = []
            for i, s in enumerate(_list(data["seeds"], "seeds")):
                where = f"seeds[{i}]"
                if not isinstance(s, Mapping):
                    raise InputError("must be an object")
                extra = set(s) - {"position_mm", "axis", "needle", "retraction_mm", "activity_mCi", "strength_U"}
                if extra:
                    raise InputError(f"unknown keys {sorted(extra)}")
                seeds.append(PlannedSeed(s["position_mm"], s["axis"], s["needle"], s["retraction_mm"], s["activity_mCi"], s["strength_U"]))
            where = "case"
            if not isinstance(data["case"], Mapping):
                raise InputError("must be an object")
            where = "plan"
            return cls(
                case=dict(data["case"]),
                prescription=presc,
                seed_model=sm["name"],
                seed_model_status=sm.get("status", "verified"),
                formalism=data["formalism"],
                needles=tuple(needles),
                seeds=tuple(seeds),
                calibration_date=data["calibration_date"],
                implant_date=data["implant_date"],
                results=dict(data.get("results") or {}),
                software=dict(data.get("software") or {}),
                created=str(data.get("created", "")),
                pvp_needles=tuple(pvp),
                cement=None if data.get("cement") is None else dict(data["cement"]),
            )
        except (InputError, KeyError, TypeError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise FileFormatError(f"{source}: {where}: {what}") from None


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise InputError(f"{where} must be a list")
    return value


def save_plan(plan: Plan, path: str | Path) -> Path:
    """Write ``plan`` as JSON to ``path`` atomically (a failure never leaves a partial file)."""
    text = json.dumps(plan.to_dict(), indent=1, allow_nan=False, default=_json_default)
    return write_text_atomic(path, text + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot write {type(o).__name__} to a plan file")


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file."""
    return Plan.from_dict(read_json(path, "plan file"), source=str(path))
