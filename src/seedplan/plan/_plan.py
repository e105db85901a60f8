"""The treatment plan as a value and as a self-contained, versioned JSON file.

A plan holds everything the CT room and a later recomputation need: the case
reference, the prescription and planning options, the seed model's whole
TG-43 dataset, the needles, the seeds (position, axis, activity, S_K,
calibration date), the planned cement and the structures seedplan derived
(as stored masks, never as recipes), and the results.

On disk (format ``seedplan-plan`` version 2):

* the case file and the CT are referred to by paths relative to the plan
  file, with the CT's series UID and a content hash, so a copied or moved
  output folder still works and a changed CT is refused;
* the seed model is embedded with the SHA-256 of its canonical JSON; loading
  uses the embedded dataset (an old plan reproduces its dose exactly) and
  says so in one warning line when the built-in model of that name differs;
* everything that depends on when and how fast the plan was made (the time
  of the run, timings) sits in one ``"run"`` block: two runs on the same
  input give files identical outside it.

``save_plan`` writes atomically; ``load_plan`` validates the schema and
reports the first problem with its JSON path.  Version-1 files still load
(their seed model resolved by name among the built-in models).  Floats are
written with ``repr`` precision, so a save/load round trip is exact.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import _validate as v
from .._atomic import read_json, write_text_atomic
from ..errors import FileFormatError, InputError, SeedModelError
from ..imaging.structures import Structure
from ..sources import SeedModel, load_seed_model, seed_model_from_dict
from ._cement import PlanCement
from ._masks import decode_mask, encode_mask
from ._needle import Needle
from ._options import PlanningOptions, check_dates
from ._prescription import Prescription

FORMAT = "seedplan-plan"
VERSION = 2

__all__ = ["PlannedSeed", "Plan", "save_plan", "load_plan", "FORMAT", "VERSION"]

log = logging.getLogger("seedplan")

#: Positions farther than this from the origin (mm) are not patient coordinates.
MAX_ABS_MM = 1e5
#: The most seeds a plan holds (a permanent implant holds tens to a couple of hundred).
MAX_SEEDS = 1000
#: No seed lies farther than this from the median seed position (mm).
MAX_SEED_SPREAD_MM = 150.0

#: Keys of ``plan.case`` that hold paths (absolute in memory, relative to the plan file on disk).
CASE_PATH_KEYS = ("case_file", "ct")


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
        set_ = lambda k, x: object.__setattr__(self, k, x)  # noqa: E731
        set_("position_mm", v.vector(self.position_mm, "seed position_mm", max_abs=MAX_ABS_MM))
        ax = np.asarray(v.vector(self.axis, "seed axis"))
        n = float(np.linalg.norm(ax))
        if n < 1e-9:
            raise InputError("seed axis must be a non-zero vector")
        set_("axis", tuple(float(x) for x in ax / n) if abs(n - 1.0) > 1e-12 else tuple(float(x) for x in ax))
        set_("needle", v.integer(self.needle, "seed needle (a needle number)", lo=1))
        set_("retraction_mm", v.number(self.retraction_mm, "seed retraction_mm", lo=0.0))
        set_("activity_mCi", v.number(self.activity_mCi, "seed activity_mCi", lo=0.0, hi=10.0, lo_open=True))
        set_("strength_U", v.number(self.strength_U, "seed strength_U", lo=0.0, hi=15.0, lo_open=True))

    def to_dict(self) -> dict[str, Any]:
        return {"position_mm": list(self.position_mm), "axis": list(self.axis), "needle": self.needle,
                "retraction_mm": self.retraction_mm, "activity_mCi": self.activity_mCi, "strength_U": self.strength_U}

    @classmethod
    def from_dict(cls, s: Any) -> "PlannedSeed":
        v.mapping(s, "seed")
        extra = set(s) - {"position_mm", "axis", "needle", "retraction_mm", "activity_mCi", "strength_U"}
        if extra:
            raise InputError(f"unknown keys {sorted(extra)}")
        return cls(s["position_mm"], s["axis"], s["needle"], s["retraction_mm"], s["activity_mCi"], s["strength_U"])


@dataclass(frozen=True)
class Plan:
    """A complete seed-implant plan.

    Attributes
    ----------
    case : mapping
        Case reference: name, ``case_file`` and ``ct`` (absolute paths in memory), the CT's
        ``ct_series_uid`` and ``ct_sha256`` (:attr:`seedplan.imaging.CTImage.content_sha256`).
    prescription : Prescription
    seed_model : SeedModel
        The whole TG-43 dataset the dose is computed with (a built-in name is accepted and resolved).
    formalism : str
        TG-43 formalism used for the dose ("2D", "1D", "1D-point").
    needles : tuple of Needle
        Seed needles; needle ``k`` (1-based) is named ``N<k>`` everywhere (:meth:`needle_name`).
    seeds : tuple of PlannedSeed
    calibration_date, implant_date : str
        ISO dates; seed strengths are given at the calibration date and
        decayed to the implant date for the dose.
    results : mapping
        The metrics (the ``metrics.json`` layout).
    pvp_needles : tuple of Needle
        Vertebroplasty needles.
    cement : PlanCement or None
        The planned cement, stored as a result.
    structures : tuple of Structure
        Structures seedplan derived for this plan (their ``derived`` says how), stored as masks so
        that the plan re-evaluates exactly; the case's own structures are read from the case.
    options : PlanningOptions or None
        The options the plan was made with.
    notes : tuple of str
        What the planner said that a reader must know (fallbacks, derived anatomy...).
    optimiser : mapping
        The optimiser's record (activities tried and their outcome).
    software : mapping
        Name and version of the program that made the plan.
    history : mapping
        Where the plan comes from when it is not a first plan: ``"replan"`` (the needles as placed and their
        deviations, the registration) or ``"postplan"`` (the seeds and cement found on the post-operative CT).
    run : mapping
        When and how fast the plan was made (``created``, ``timings_s``): the only part that
        differs between two runs on the same input.
    """

    case: Mapping[str, Any]
    prescription: Prescription
    seed_model: SeedModel
    formalism: str
    needles: tuple[Needle, ...]
    seeds: tuple[PlannedSeed, ...]
    calibration_date: str
    implant_date: str
    results: Mapping[str, Any] = field(default_factory=dict)
    pvp_needles: tuple[Needle, ...] = ()
    cement: PlanCement | None = None
    structures: tuple[Structure, ...] = ()
    options: PlanningOptions | None = None
    notes: tuple[str, ...] = ()
    optimiser: Mapping[str, Any] = field(default_factory=dict)
    software: Mapping[str, Any] = field(default_factory=dict)
    history: Mapping[str, Any] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.seed_model, SeedModel):
            object.__setattr__(self, "seed_model", load_seed_model(self.seed_model))
        v.choice(self.formalism, "plan formalism", ("2D", "1D", "1D-point"))
        v.iso_date(self.calibration_date, "calibration_date")
        v.iso_date(self.implant_date, "implant_date")
        check_dates(self.calibration_date, self.implant_date)
        if not isinstance(self.prescription, Prescription):
            raise InputError(f"plan prescription must be a Prescription, got {type(self.prescription).__name__}")
        for name in ("needles", "pvp_needles", "seeds", "structures", "notes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for i, s in enumerate(self.seeds):
            if s.needle > len(self.needles):
                raise InputError(f"seed {i + 1} refers to needle {s.needle}, but the plan has {len(self.needles)} needles")
        if len(self.seeds) > MAX_SEEDS:
            raise InputError(f"a plan of {len(self.seeds)} seeds is not a seed implant (at most {MAX_SEEDS})")
        if len(self.seeds) > 1:
            p = self.positions_mm
            far = np.linalg.norm(p - np.median(p, axis=0), axis=1)
            k = int(np.argmax(far))
            if far[k] > MAX_SEED_SPREAD_MM:
                raise InputError(f"seed {k + 1} at ({p[k, 0]:.1f}, {p[k, 1]:.1f}, {p[k, 2]:.1f}) mm lies {far[k]:.0f} mm "
                                 f"from the other seeds; an implant spans a few cm (at most {MAX_SEED_SPREAD_MM:g} mm "
                                 "here): check its position")
        if self.cement is not None and not isinstance(self.cement, PlanCement):
            raise InputError(f"plan cement must be a PlanCement or None, got {type(self.cement).__name__}")

    # ------------------------------------------------------------- derived
    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def seed_model_status(self) -> str:
        """``"verified"`` or ``"UNVERIFIED"``."""
        return self.seed_model.status

    @property
    def positions_mm(self) -> np.ndarray:
        """Seed centres, (M, 3) mm."""
        return np.array([s.position_mm for s in self.seeds], dtype=float).reshape(-1, 3)

    @property
    def axes(self) -> np.ndarray:
        """Seed axes, (M, 3) unit vectors."""
        return np.array([s.axis for s in self.seeds], dtype=float).reshape(-1, 3)

    @property
    def strengths_U(self) -> np.ndarray:
        """S_K of each seed at the calibration date."""
        return np.array([s.strength_U for s in self.seeds], dtype=float)

    @property
    def strengths_at_implant_U(self) -> np.ndarray:
        """S_K of each seed at the implant date (decayed from the calibration date)."""
        from ..dose.decay import strength_at

        return np.asarray(strength_at(self.strengths_U, self.calibration_date, self.implant_date,
                                      self.seed_model.half_life_d), dtype=float)

    @property
    def total_activity_mCi(self) -> float:
        return float(sum(s.activity_mCi for s in self.seeds))

    @staticmethod
    def needle_name(number: int) -> str:
        """The name of seed needle ``number`` (1-based) in every output: ``"N3"``."""
        return f"N{int(number)}"

    @staticmethod
    def pvp_needle_name(needle: Needle, number: int) -> str:
        """The name of a vertebroplasty needle: ``"PVP left"``."""
        return f"PVP {needle.label or number}"

    def seeds_on_needle(self, needle: int) -> tuple[PlannedSeed, ...]:
        """Seeds of needle ``needle`` (1-based), deepest first."""
        return tuple(sorted((s for s in self.seeds if s.needle == needle), key=lambda s: s.retraction_mm))

    def with_results(self, results: Mapping[str, Any]) -> "Plan":
        return replace(self, results=dict(results))

    # ----------------------------------------------------------------- I/O
    def to_dict(self, base_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The plan file's content; with ``base_dir``, case paths are written relative to it."""
        case = dict(self.case)
        if base_dir is not None:
            for k in CASE_PATH_KEYS:
                if isinstance(case.get(k), str) and os.path.isabs(case[k]):
                    case[k] = Path(os.path.relpath(case[k], Path(base_dir).resolve())).as_posix()
        model = self.seed_model.to_dict()
        return {
            "format": FORMAT,
            "version": VERSION,
            "software": dict(self.software),
            "case": case,
            "prescription": self.prescription.to_dict(),
            "options": None if self.options is None else self.options.to_dict(),
            "seed_model": {"name": self.seed_model.name, "status": self.seed_model_status,
                           "sha256": seed_model_sha256(model), "dataset": model},
            "formalism": self.formalism,
            "calibration_date": self.calibration_date,
            "implant_date": self.implant_date,
            "needles": [n.to_dict() for n in self.needles],
            "pvp_needles": [n.to_dict() for n in self.pvp_needles],
            "seeds": [s.to_dict() for s in self.seeds],
            "cement": None if self.cement is None else self.cement.to_dict(),
            "structures": [_structure_to_dict(s) for s in self.structures],
            "notes": list(self.notes),
            "optimiser": dict(self.optimiser),
            "results": dict(self.results),
            "history": dict(self.history),
            "run": dict(self.run),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "plan",
                  base_dir: str | os.PathLike[str] | None = None) -> "Plan":
        """Validate a plan mapping (as written by :meth:`to_dict`); relative case paths resolve against ``base_dir``."""
        if not isinstance(data, Mapping):
            raise FileFormatError(f"{source}: a plan must be a JSON object")
        if data.get("format") != FORMAT:
            raise FileFormatError(f"{source}: not a seedplan plan (format is {data.get('format')!r}, expected {FORMAT!r})")
        version = data.get("version")
        if version not in (1, VERSION):
            raise FileFormatError(f"{source}: plan version {version!r} is not supported (this seedplan reads "
                                  f"versions 1 and {VERSION})")
        known = _V1_KEYS if version == 1 else _V2_KEYS
        unknown = set(data) - known
        if unknown:
            raise FileFormatError(f"{source}: unknown keys {sorted(unknown)}")
        missing = _REQUIRED - set(data)
        if missing:
            raise FileFormatError(f"{source}: missing keys {sorted(missing)}")
        where = ""
        try:
            where = "case"
            case = dict(v.mapping(data["case"], "case"))
            if base_dir is not None:
                for k in CASE_PATH_KEYS:
                    if isinstance(case.get(k), str) and not os.path.isabs(case[k]):
                        case[k] = str((Path(base_dir) / case[k]).resolve())
            where = "prescription"
            presc = Prescription.from_dict(data["prescription"])
            where = "seed_model"
            model = _seed_model(data["seed_model"], version, source)
            where = "options"
            opts = None if data.get("options") is None else PlanningOptions.from_dict(data["options"], "options")
            needles, pvp, seeds = [], [], []
            where = "needles"
            for i, n in enumerate(_list(data["needles"], "needles")):
                where = f"needles[{i}]"
                needles.append(Needle.from_dict(n))
            where = "pvp_needles"
            for i, n in enumerate(_list(data.get("pvp_needles", []), "pvp_needles")):
                where = f"pvp_needles[{i}]"
                pvp.append(Needle.from_dict(n))
            where = "seeds"
            for i, s in enumerate(_list(data["seeds"], "seeds")):
                where = f"seeds[{i}]"
                seeds.append(PlannedSeed.from_dict(s))
            where = "notes"
            notes = [str(x) for x in _list(data.get("notes", []), "notes")]
            cement = None
            if data.get("cement") is not None:
                where = "cement"
                if version == 1:
                    notes.append("version-1 plan: its cement was stored as a recipe, not as the filled voxels; "
                                 "the cement ROI and the cement/bone-corrected dose need a re-plan")
                else:
                    cement = PlanCement.from_dict(data["cement"], f"{source}: cement")
            structures = []
            where = "structures"
            for i, s in enumerate(_list(data.get("structures", []), "structures")):
                where = f"structures[{i}]"
                structures.append(_structure_from_dict(s, f"{source}: structures[{i}]"))
            where = "plan"
            run = dict(data.get("run") or {})
            if version == 1 and data.get("created"):
                run["created"] = str(data["created"])
            return cls(
                case=case, prescription=presc, seed_model=model, formalism=data["formalism"],
                needles=tuple(needles), seeds=tuple(seeds), calibration_date=data["calibration_date"],
                implant_date=data["implant_date"], results=dict(data.get("results") or {}), pvp_needles=tuple(pvp),
                cement=cement, structures=tuple(structures), options=opts, notes=tuple(notes),
                optimiser=dict(data.get("optimiser") or {}), software=dict(data.get("software") or {}),
                history=dict(data.get("history") or {}), run=run,
            )
        except FileFormatError:
            raise
        except (InputError, KeyError, TypeError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise FileFormatError(f"{source}: {where}: {what}") from None


_REQUIRED = {"case", "prescription", "seed_model", "formalism", "calibration_date", "implant_date", "needles", "seeds"}
_V1_KEYS = {"format", "version", "created", "software", "case", "prescription", "seed_model", "formalism",
            "calibration_date", "implant_date", "needles", "pvp_needles", "seeds", "cement", "results"}
_V2_KEYS = {"format", "version", "software", "case", "prescription", "options", "seed_model", "formalism",
            "calibration_date", "implant_date", "needles", "pvp_needles", "seeds", "cement", "structures", "notes",
            "optimiser", "results", "history", "run"}


def seed_model_sha256(model: SeedModel | Mapping[str, Any]) -> str:
    """SHA-256 of a seed model's canonical JSON (sorted keys, no spaces, ``repr`` floats)."""
    import hashlib

    d = model.to_dict() if isinstance(model, SeedModel) else model
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _seed_model(entry: Any, version: int, source: str) -> SeedModel:
    v.mapping(entry, "seed_model")
    name = v.text(entry.get("name"), "seed_model.name")
    if version == 1:  # the name of a built-in model
        try:
            return load_seed_model(name)
        except SeedModelError as exc:
            raise InputError(f"this version-1 plan names seed model {name!r}, which is not built in ({exc}); "
                             "re-plan with the model file") from None
    dataset = v.mapping(entry.get("dataset"), "seed_model.dataset")
    digest = seed_model_sha256(dataset)
    if digest != entry.get("sha256"):
        raise InputError("the embedded dataset does not match its sha256: the plan file was altered; restore it")
    model = seed_model_from_dict(dataset, source=f"{source}: seed_model.dataset")
    try:
        builtin = load_seed_model(model.name) if "/" not in model.name and not model.name.endswith(".json") else None
    except SeedModelError:
        builtin = None
    if builtin is not None and seed_model_sha256(builtin) != digest:
        log.warning("%s: seed model %r differs from the built-in model of that name; the plan's own dataset is used",
                    source, model.name)
    return model


def _structure_to_dict(s: Structure) -> dict[str, Any]:
    return {"name": s.name, "role": s.role.value, "derived": s.derived, "mask": encode_mask(s.mask, s.grid)}


def _structure_from_dict(d: Any, where: str) -> Structure:
    v.mapping(d, "structure")
    mask, grid = decode_mask(d.get("mask"), f"{where}.mask")
    return Structure(v.text(d.get("name"), "name"), d.get("role"), mask, grid, str(d.get("derived") or ""))


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise InputError(f"must be a list, got {type(value).__name__} {str(value)[:40]!r}")
    return value


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


def plan_json(plan: Plan, path: str | Path) -> str:
    """The text of ``plan`` as the file ``path`` (paths relative to its folder)."""
    return json.dumps(plan.to_dict(base_dir=Path(path).parent), indent=1, allow_nan=False,
                      default=_json_default) + "\n"


def save_plan(plan: Plan, path: str | Path) -> Path:
    """Write ``plan`` as JSON to ``path`` atomically (a failure never leaves a partial file)."""
    return write_text_atomic(path, plan_json(plan, path))


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file (case paths resolve relative to its folder)."""
    p = Path(path)
    return Plan.from_dict(read_json(p, "plan file"), source=str(p), base_dir=p.resolve().parent)
