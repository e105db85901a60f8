"""The case file: a small JSON that tells ``seedplan plan`` where a patient's data is.

Format (paths are relative to the case file)::

    {
      "format": "seedplan-case/1",
      "name": "patient 001, L3 metastasis",
      "description": "one paragraph shown in the report",  # optional
      "ct": "ct/",                                  # DICOM folder, .nii.gz, .nrrd or .mha
      "ct_series_uid": "1.2.3...",                  # optional: pick one series in a folder
      "patient_position": "HFP",                    # optional for NIfTI/NRRD/MHA (a DICOM CT gives its own)
      "structures": {"rtstruct": "rtstruct.dcm",    # any combination of sources; a name given by an earlier
                     "masks": [{"path": "gtv.nii.gz", "name": "target", "role": "target"}],   # source wins:
                     "label_map": "labels.nii.gz", "legend": "labels.json",               # masks, rtstruct,
                     "totalsegmentator": "seg.nii.gz"},                                 # label_map, totalseg.
      "roles": {"GTV": "target", "Cord": "oar"},    # optional: override roles guessed from names
      "prescription": {"dose_Gy": 120},             # optional: any Prescription field; "seed_model" may
                                                    # name a seed model file (relative to the case file)
      "patient": {"age_y": 64, "primary": "prostate", "primary_growth": "slow",    # optional: the clinical
                  "metastatic_segments": 2, "kps": 80},                           # context of the report
      "planning": {"needle_mode": "free", "formalism": "2D",
                   "calibration_date": "2026-11-20", "implant_date": "2026-11-21",
                   "pvp_approach": "transpedicular", "cement_model": "combined",
                   "cement_material": "pmma-baso4-30", "cement_volume_mL": null}   # optional
    }

See ``examples/case_phantom.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .._atomic import read_json, write_text_atomic
from ..errors import FileFormatError, InputError
from ..imaging.ct import CTImage, load_ct
from ..imaging.structures import Role, StructureSet, load_label_map, load_mask, load_rtstruct
from ..imaging.totalseg import load_totalsegmentator
from ..plan import PlanningOptions, Prescription
from ..plan._context import patient_from_dict
from ..sources import load_seed_model

log = logging.getLogger("seedplan")

FORMAT = "seedplan-case/1"
_KEYS = {"format", "name", "description", "ct", "ct_series_uid", "patient_position", "structures", "roles",
         "prescription", "planning", "patient"}
#: Structure sources, in order of precedence: a name given by an earlier source wins over a later one
#: (hand-drawn contours over an auto-segmentation).
_SOURCES = ("masks", "rtstruct", "label_map", "totalsegmentator")

__all__ = ["Case", "load_case", "write_case_file", "load_plan_case", "write_phantom_case", "FORMAT"]


@dataclass(frozen=True, eq=False)
class Case:
    """A loaded case: CT, structures, prescription and planning options.

    ``reference`` is what a plan stores about its case: the name, the case
    file and the CT (absolute paths), the CT's series UID and content hash.
    """

    name: str
    ct: CTImage
    structures: StructureSet
    prescription: Prescription
    planning: PlanningOptions = field(default_factory=PlanningOptions)
    reference: Mapping[str, Any] = field(default_factory=dict)


def _path(base: Path, value: Any, key: str, source: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise FileFormatError(f"{source}: {key} must be a path (relative to the case file)")
    p = Path(value)
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise FileFormatError(f"{source}: {key} {value!r} does not exist ({p})")
    return p


def load_case(path: str | Path, *, seed_model_file: bool = True) -> Case:
    """Read a case file and load its CT and structures (errors name the file and key).

    ``seed_model_file=False`` skips loading a seed model file the prescription
    names (a saved plan carries its own model and needs only the CT and structures).
    """
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
    position = data.get("patient_position")
    if position is not None and not isinstance(position, str):
        raise FileFormatError(f"{src}: patient_position must be a string such as \"HFP\" (head first, prone)")
    try:
        ct = load_ct(ct_path, series_uid=data.get("ct_series_uid"), patient_position=position)
    except InputError as exc:
        raise FileFormatError(f"{src}: {exc}") from None

    roles_raw = data.get("roles") or {}
    if not isinstance(roles_raw, Mapping):
        raise FileFormatError(f"{src}: roles must map structure names to roles")
    try:
        roles = {str(k): Role(str(v)) for k, v in roles_raw.items()}
    except ValueError as exc:
        raise FileFormatError(f"{src}: roles: {exc}; valid roles are {[r.value for r in Role]}") from None

    structures = _load_structures(data.get("structures"), ct, base, src)
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
    if seed_model_file and presc.seed_model.lower().endswith(".json"):  # a seed model file, relative to the case
        model_file = _path(base, presc.seed_model, "prescription.seed_model", src)
        try:
            load_seed_model(model_file)
        except InputError as exc:
            raise FileFormatError(f"{src}: prescription.seed_model: {exc}") from None
        presc = replace(presc, seed_model=str(model_file.resolve()))
    try:
        planning = PlanningOptions.from_dict(data.get("planning") or {}, "planning")
    except InputError as exc:
        raise FileFormatError(f"{src}: {exc}") from None
    try:
        patient = patient_from_dict(data["patient"]) if data.get("patient") is not None else None
    except InputError as exc:
        raise FileFormatError(f"{src}: {exc}") from None
    name = str(data.get("name") or src.stem)
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise FileFormatError(f"{src}: description must be a string (one paragraph shown in the report)")
    reference = {
        "name": name,
        "case_file": str(src.resolve()),
        "ct": str(ct_path.resolve()),
        "ct_series_uid": ct.series_uid,
        "ct_sha256": ct.content_sha256,
    }
    if description:
        reference["description"] = description
    if patient:
        reference["patient"] = patient
    return Case(name, ct, structures, presc, planning, reference)


def _load_structures(st: Any, ct: CTImage, base: Path, src: Path) -> StructureSet:
    """The case's structures from any combination of sources, on the CT grid (see :data:`_SOURCES`)."""
    if not isinstance(st, Mapping) or not (set(st) & set(_SOURCES)):
        raise FileFormatError(f"{src}: structures must be an object with one or more of {list(_SOURCES)} "
                              "(and 'legend' with 'label_map')")
    unknown = set(st) - set(_SOURCES) - {"legend"}
    if unknown:
        raise FileFormatError(f"{src}: structures: unknown keys {sorted(unknown)}; valid keys are "
                              f"{list(_SOURCES) + ['legend']}")
    out: dict[str, Any] = {}
    for key in _SOURCES:
        if key not in st:
            continue
        try:
            if key == "rtstruct":
                got = load_rtstruct(_path(base, st[key], "structures.rtstruct", src), ct).values()
            elif key == "label_map":
                legend = _path(base, st.get("legend"), "structures.legend", src)
                got = load_label_map(_path(base, st[key], "structures.label_map", src), legend, reference=ct.grid,
                                     resample=True).values()
            elif key == "totalsegmentator":
                got = load_totalsegmentator(_path(base, st[key], "structures.totalsegmentator", src), ct).values()
            else:
                items = st[key]
                if not isinstance(items, list) or not items:
                    raise FileFormatError(f"{src}: structures.masks must be a non-empty list")
                got = []
                for i, m in enumerate(items):
                    if not isinstance(m, Mapping) or "path" not in m or "name" not in m:
                        raise FileFormatError(f"{src}: structures.masks[{i}] needs 'path' and 'name'")
                    got.append(load_mask(_path(base, m["path"], f"structures.masks[{i}].path", src), m["name"],
                                         m.get("role", "oar"), reference=ct.grid, resample=True))
        except InputError as exc:
            raise FileFormatError(f"{src}: structures.{key}: {exc}") from None
        for s in got:
            if s.name in out:
                log.info("%s: structure %r from structures.%s is also given earlier; the earlier one is kept",
                         src.name, s.name, key)
            else:
                out[s.name] = s
    return StructureSet(out.values())


def write_case_file(path: str | Path, *, ct: str, rtstruct: str | None = None, label_map: str | None = None,
                    legend: str | None = None, name: str = "", prescription: Prescription | None = None,
                    planning: PlanningOptions | Mapping[str, Any] | None = None, description: str | None = None,
                    patient: Mapping[str, Any] | None = None) -> Path:
    """Write a case file (paths are stored relative to the case file's folder when possible).

    ``description``: a paragraph the report shows; ``patient``: the clinical block
    (:func:`~seedplan.plan._context.patient_from_dict`, validated here).
    """
    dest = Path(path)
    if description is not None and not isinstance(description, str):
        raise InputError(f"description must be a string, got {type(description).__name__}")
    patient_block = patient_from_dict(patient) if patient is not None else None

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
    if description:
        data["description"] = description
    if patient_block:
        data["patient"] = patient_block
    if prescription is not None:
        data["prescription"] = prescription.to_dict()
    if planning:
        data["planning"] = planning.to_dict() if isinstance(planning, PlanningOptions) else dict(planning)
    return write_text_atomic(dest, json.dumps(data, indent=1) + "\n")


def load_plan_case(plan: Any) -> Case:
    """The case a saved plan was made on, checked against the plan's CT reference.

    Raises
    ------
    InputError
        The plan has no case reference.
    FileFormatError
        The case file is gone, or its CT is not the plan's CT (another series, or
        the same series with other voxels).
    """
    ref = plan.case if isinstance(plan.case, Mapping) else {}
    case_file = ref.get("case_file")
    if not case_file:
        raise InputError("the plan has no case reference (case.case_file); its CT cannot be found")
    if not Path(str(case_file)).is_file():
        raise FileFormatError(f"the plan's case file {case_file} does not exist; the CT is needed "
                              "(keep the case folder beside the plan, or re-plan)")
    case = load_case(case_file, seed_model_file=False)
    expected = ref.get("ct_series_uid")
    if expected and case.ct.series_uid != expected:
        raise FileFormatError(f"{case_file}: its CT series {case.ct.series_uid} is not the plan's CT series {expected}")
    digest = ref.get("ct_sha256")
    if digest and case.ct.content_sha256 != digest:
        raise FileFormatError(f"{case_file}: its CT {case.reference['ct']} no longer matches the plan (the voxels or "
                              "the geometry changed since planning); restore the planning CT or re-plan")
    return case


def phantom_info(phantom: Any, *, series_uid: str | None, version: str) -> dict[str, Any]:
    """What ``phantom.json`` records about a phantom case (and what tells two identical phantoms apart)."""
    return {
        "level": phantom.level,
        "lesion_type": phantom.lesion_type,
        "lesion_diameter_mm": phantom.lesion_diameter_mm,
        "lesion_center_mm": list(phantom.lesion_center_mm),
        "posterior_breach": phantom.posterior_breach,
        "spacing_mm": list(phantom.ct.grid.spacing_mm),
        "series_instance_uid": series_uid,
        "frame_of_reference_uid": phantom.ct.frame_of_reference_uid,
        "ct_sha256": phantom.ct.content_sha256,
        "volumes_cm3": {n: round(s.volume_cm3, 4) for n, s in phantom.structures.items()},
        "seedplan_version": version,
    }


def write_phantom_case(phantom: Any, out_dir: str | Path, *, name: str | None = None, description: str | None = None,
                       patient: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write a spine phantom as a planning case folder, with its case file.

    Writes ``OUT/ct/`` (DICOM CT series), ``OUT/rtstruct.dcm`` (referencing
    that series), ``OUT/labels.nii.gz`` + ``OUT/labels.json`` (legend),
    ``OUT/phantom.json`` (lesion parameters) and ``OUT/case.json``.  Every
    file is written atomically.  ``name``, ``description`` and ``patient``
    go into the case file (:func:`write_case_file`); the default name
    describes the phantom.

    Returns
    -------
    dict
        ``{"ct", "rtstruct", "labels", "legend", "info", "case"}`` paths.
    """
    from ..imaging.phantom import SpinePhantom
    from ..imaging.structures import write_label_map
    from .dicom.ct_series import write_ct_dicom_series
    from .dicom.rtstruct import write_rtstruct

    if not isinstance(phantom, SpinePhantom):
        raise InputError(f"write_phantom_case needs a SpinePhantom, got {type(phantom).__name__}")
    if patient is not None:  # before the slices are written
        patient_from_dict(patient)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder")
    log.info("writing %d DICOM CT slices to %s", phantom.ct.grid.size[2], out / "ct")
    ct = write_ct_dicom_series(phantom.ct, out / "ct", series_description=phantom.ct.description,
                               study_description="seedplan spine phantom")
    log.info("writing RTSTRUCT with %d structures", len(phantom.structures))
    rt = write_rtstruct(phantom.structures, ct, out / "rtstruct.dcm", label="phantom", uid_seed=ct.series_uid)
    lab, legend = write_label_map(phantom.structures, out / "labels.nii.gz", legend_path=out / "labels.json")
    from .. import __version__

    info = phantom_info(phantom, series_uid=ct.series_uid, version=__version__)
    info_path = write_text_atomic(out / "phantom.json", json.dumps(info, indent=2) + "\n")
    name = name or f"seedplan spine phantom {phantom.level} {phantom.lesion_type} {phantom.lesion_diameter_mm:g} mm"
    case = write_case_file(out / "case.json", ct=str(out / "ct"), rtstruct=str(rt), name=name,
                           description=description, patient=patient)
    return {"ct": out / "ct", "rtstruct": rt, "labels": lab, "legend": legend, "info": info_path, "case": case}
