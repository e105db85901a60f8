"""UIDs derived from a plan, and the record of what one export wrote."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ...imaging.ct import deterministic_uid
from ...plan import Plan


@dataclass(frozen=True)
class DicomExport:
    """What one export function wrote.

    Attributes
    ----------
    path : pathlib.Path
    sop_class_uid, sop_instance_uid, series_instance_uid : str
    info : mapping
        Object-specific details: for RTDOSE ``dose_grid_scaling``,
        ``quantisation_step_Gy``, ``bits`` and ``warning`` (message or None);
        for RTSTRUCT ``roi_numbers`` (name -> number), ``needle_roi_numbers``
        (needle number -> ROI number) and ``target_roi_number``.
    """

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    info: Mapping[str, Any] = field(default_factory=dict)


def plan_key(plan: Plan) -> str:
    """SHA-256 of the plan's content, leaving out its run record (time of the run, timings) and where its files
    are (the case is identified by its CT's series UID and content hash)."""
    d = plan.to_dict()
    d.pop("run", None)
    d["case"] = {k: v for k, v in d["case"].items() if k not in ("case_file", "ct")}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def plan_uids(plan: Plan) -> dict[str, str]:
    """UIDs derived from the plan's content: the same plan always exports with the same UIDs.

    Returns
    -------
    dict
        ``rtplan`` / ``rtstruct`` (SOP instance UIDs) and ``rtplan_series`` /
        ``rtstruct_series`` / ``rtdose_series`` (series UIDs).
    """
    key = plan_key(plan)
    kinds = ("rtplan", "rtstruct", "rtplan_series", "rtstruct_series", "rtdose_series")
    return {k: deterministic_uid("seedplan-dicom-rt", key, k) for k in kinds}


def case_ct_path(plan: Plan) -> Path | None:
    """The plan's CT file or folder, when it still exists (patient and study attributes are copied from it)."""
    p = plan.case.get("ct") if isinstance(plan.case, Mapping) else None
    if isinstance(p, str) and p and Path(p).exists():
        return Path(p)
    return None
