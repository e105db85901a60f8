"""The case file: a small JSON that tells ``seedplan plan`` where a patient's data is.

Format (paths are relative to the case file)::

    {
      "format": "seedplan-case/1",
      "name": "patient 001, L3 metastasis",
      "ct": "ct/",                                  # DICOM folder, .nii.gz, .nrrd or .mha
      "ct_series_uid": "1.2.3...",                  # optional: pick one series in a folder
      "structures": {"rtstruct": "rtstruct.dcm"},   # or {"label_map": "labels.nii.gz", "legend": "labels.json"}
                                                    # or {"masks": [{"path": "gtv.nii.gz", "name": "target", "role": "target"}]}
      "roles": {"GTV": "target", "Cord": "oar"},    # optional: override roles guessed from names
      "prescription": {"dose_Gy": 120},             # optional: any Prescription field
      "planning": {"needle_mode": "free", "formalism": "2D",
                   "calibration_date": "2026-11-20", "implant_date": "2026-11-21",
                   "pvp_approach": "transpedicular", "cement_model": "combined",
                   "cement_material": "pmma-baso4-30", "cement_volume_mL": null}   # optional
    }

See ``examples/case_phantom.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .._atomic import read_json
from ..errors import FileFormatError, InputError
from ..imaging.ct import CTImage, load_ct
from ..imaging.structures import Role, StructureSet, load_label_map, load_mask, load_rtstruct
from ..planning.prescription import Prescription

FORMAT = "seedplan-case/1"
_KEYS = {"format", "name", "ct", "ct_series_uid", "structures", "roles", "prescription", "planning"}
_PLANNING_KEYS = {"needle_mode", "formalism", "calibration_date", "implant_date", "dose_spacing_mm", "rng_seed",
                  "pvp_approach", "pvp_bilateral", "cement", "cement_volume_mL", "cement_model", "cement_material",
                  "cement_seed_margin_mm", "heterogeneity"}


@dataclass(frozen=True, eq=False)
class Case:
    """A loaded case: CT, structures, prescription and planning settings."""

    name: str
    ct: CTImage
    structures: StructureSet
    prescription: Prescription
    planning: Mapping[str, Any] = field(default_factory=dict)
    reference: Mapping[str, Any] = field(default_factory=dict)


def _path(base: Path, value: Any, key: str, source: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise FileFormatError(f"{source}: {key} must be a path (relative to the case file)")
    p = Path(value)
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise FileFormatError(f"{source}: {key} {value!r} does not exist ({p})")
    return p


def load_case(path: str | Path) -> Case:
    """Read a case file and load its CT and structures (errors name the file and key)."""
    src = Path(path)
    data = read_json(src, "case file")
    if not isinstance(data, Mapping):
        raise FileFormatError(f"{src}: a case file must be a JSON object")
    if data.get("format") != FORMAT:
        raise FileFormatError(f"{src}: format must be {FORMAT!r}, got {data.get('format')!r}")
    unknown = set(data) - _KEYS
    if unknown:
        raise FileFormatError(f"{src}: unknown keys {sorted(unknown)}; valid keys are {sorted(_KEYS)}")
    base = src.parent
    ct_path = _path(base, data.get("ct"), "ct", src)
    ct = load_ct(ct_path, series_uid=data.get("ct_series_uid"))

    roles_raw = data.get("roles") or {}
    if not isinstance(roles_raw, Mapping):
        raise FileFormatError(f"{src}: roles must map structure names to roles")
    try:
        roles = {str(k): Role(str(v)) for k, v in roles_raw.items()}
    except ValueError as exc:
        raise FileFormatError(f"{src}: roles: {exc}; valid roles are {[r.value for r in Role]}") from None

    st = data.get("structures")
    if not isinstance(st, Mapping) or len(st) == 0:
        raise FileFormatError(f"{src}: structures must be an object with 'rtstruct', 'label_map' or 'masks'")
    if "rtstruct" in st:
        structures = load_rtstruct(_path(base, st["rtstruct"], "structures.rtstruct", src), ct)
    elif "label_map" in st:
        legend = _path(base, st.get("legend"), "structures.legend", src)
        structures = load_label_map(_path(base, st["label_map"], "structures.label_map", src), legend, reference=ct.grid)
    elif "masks" in st:
        items = st["masks"]
        if not isinstance(items, list) or not items:
            raise FileFormatError(f"{src}: structures.masks must be a non-empty list")
        loaded = []
        for i, m in enumerate(items):
            if not isinstance(m, Mapping) or "path" not in m or "name" not in m:
                raise FileFormatError(f"{src}: structures.masks[{i}] needs 'path' and 'name'")
            loaded.append(load_mask(_path(base, m["path"], f"structures.masks[{i}].path", src), m["name"],
                                    m.get("role", "oar"), reference=ct.grid))
        structures = StructureSet(loaded)
    else:
        raise FileFormatError(f"{src}: structures must give 'rtstruct', 'label_map' or 'masks', got {sorted(st)}")
    if roles:
        missing = [n for n in roles if n not in structures]
        if missing:
            raise FileFormatError(f"{src}: roles name structures that are not in the case: {missing}; available: {list(structures.names)}")
        structures = StructureSet(
            s.renamed(role=roles[s.name]) if s.name in roles else s for s in structures.values()
        )
    try:
        presc = Prescription.from_dict(data.get("prescription") or {})
    except InputError as exc:
        raise FileFormatError(f"{src}: prescription: {exc}") from None
    planning = data.get("planning") or {}
    if not isinstance(planning, Mapping) or set(planning) - _PLANNING_KEYS:
        raise FileFormatError(f"{src}: planning accepts only {sorted(_PLANNING_KEYS)}")
    from ..planning.planner import PlanningOptions

    try:
        PlanningOptions(**planning)
    except (InputError, TypeError) as exc:
        raise FileFormatError(f"{src}: planning: {exc}") from None
    name = str(data.get("name") or src.stem)
    reference = {
        "name": name,
        "case_file": str(src.resolve()),
        "ct": str(ct_path.resolve()),
        "ct_series_uid": ct.series_uid,
    }
    return Case(name, ct, structures, presc, dict(planning), reference)


def write_case_file(path: str | Path, *, ct: str, rtstruct: str | None = None, label_map: str | None = None,
                    legend: str | None = None, name: str = "", prescription: Prescription | None = None,
                    planning: Mapping[str, Any] | None = None) -> Path:
    """Write a case file (paths are stored relative to the case file's folder when possible)."""
    from .._atomic import write_text_atomic

    dest = Path(path)

    def rel(p: str) -> str:
        try:
            return str(Path(p).resolve().relative_to(dest.resolve().parent))
        except ValueError:
            return str(Path(p).resolve())

    if rtstruct:
        structures: dict[str, Any] = {"rtstruct": rel(rtstruct)}
    elif label_map and legend:
        structures = {"label_map": rel(label_map), "legend": rel(legend)}
    else:
        raise InputError("write_case_file needs rtstruct, or label_map and legend")
    data: dict[str, Any] = {"format": FORMAT, "name": name or dest.stem, "ct": rel(ct), "structures": structures}
    if prescription is not None:
        data["prescription"] = prescription.to_dict()
    if planning:
        data["planning"] = dict(planning)
    return write_text_atomic(dest, json.dumps(data, indent=1) + "\n")


def load_plan_case(plan: Any) -> Case:
    """The case a saved plan was made on (``plan.case["case_file"]``).

    Raises
    ------
    InputError
        The plan has no case reference.
    FileFormatError
        The case file is gone.
    """
    case_file = plan.case.get("case_file") if isinstance(plan.case, Mapping) else None
    if not case_file:
        raise InputError("the plan has no case reference (case.case_file); its CT cannot be found")
    if not Path(str(case_file)).is_file():
        raise FileFormatError(f"the plan's case file {case_file} does not exist; the CT is needed "
                              "(move the case back or re-plan)")
    return load_case(case_file)
