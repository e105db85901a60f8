"""What every DICOM object seedplan writes shares: UIDs, number formatting, the common modules, the atomic save."""

from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..._atomic import atomic_path
from ...errors import FileFormatError, InputError
from ...imaging.ct import CTImage, deterministic_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"


def ds_str(value: float) -> str:
    """A DS string of at most 16 characters for a finite number."""
    from pydicom.valuerep import format_number_as_ds

    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"cannot write the non-finite number {value!r} to a DICOM DS attribute")
    return "0" if v == 0.0 else format_number_as_ds(v)


def ds_list(values: Any) -> list[str]:
    return [ds_str(v) for v in np.asarray(values, dtype=float).reshape(-1)]


def raw_ds(tag: int, values: list[str]) -> Any:
    """A DS multi-value element stored raw (pydicom validates each value slowly otherwise)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    data = "\\".join(values).encode("ascii")
    if len(data) % 2:
        data += b" "
    return RawDataElement(Tag(tag), "DS", len(data), data, 0, False, True)


def dicom_date_time(when: _dt.datetime | str) -> tuple[str, str]:
    d = _dt.datetime.fromisoformat(when) if isinstance(when, str) else when
    return d.strftime("%Y%m%d"), d.strftime("%H%M%S")


def require_ct_uids(ct: CTImage, what: str) -> None:
    if not isinstance(ct, CTImage):
        raise InputError(f"{what}: ct must be a seedplan CTImage, got {type(ct).__name__}")
    missing = [n for n, v in (("SeriesInstanceUID", ct.series_uid), ("FrameOfReferenceUID", ct.frame_of_reference_uid))
               if not v]
    if missing:
        raise InputError(
            f"{what}: the CT has no {' / '.join(missing)}; DICOM RT objects must reference a DICOM CT series "
            "(load it with load_ct() from DICOM, or write it with write_ct_dicom_series() first)"
        )


def patient_study(ct: CTImage, ct_source: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Patient and study attributes of the CT, copied from a file of its series when one is reachable."""
    study_uid = ct.study_uid or deterministic_uid("seedplan", "study-of", ct.series_uid)
    info = {
        "PatientName": "Seedplan^Phantom" if ct.patient_id is None else str(ct.patient_id),
        "PatientID": ct.patient_id or "SEEDPLAN",
        "PatientBirthDate": "",
        "PatientSex": "O",
        "StudyDate": "",
        "StudyTime": "",
        "ReferringPhysicianName": "",
        "StudyID": "1",
        "AccessionNumber": "",
        "StudyDescription": "",
        "StudyInstanceUID": study_uid,
    }
    if ct_source is None or not Path(ct_source).exists():
        return info
    src = Path(ct_source)
    if src.is_dir():
        candidates = sorted(src.glob("*.dcm"))[:1] or sorted(p for p in src.iterdir() if p.is_file())[:5]
    else:
        candidates = [src]
    import pydicom

    for f in candidates:
        try:
            hdr = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM: keep the defaults
            continue
        if str(getattr(hdr, "SeriesInstanceUID", "")) != ct.series_uid:
            continue
        for k in info:
            if k in hdr and hdr[k].value is not None:
                info[k] = str(hdr[k].value)
        break
    return info


def new_dataset(sop_class: str, sop_uid: str, modality: str, *, series_uid: str, series_number: int,
                patient: Mapping[str, str], when: _dt.datetime, description: str,
                frame_of_reference_uid: str | None) -> Any:
    """A dataset with the file meta and the common modules: SOP common, patient, general study,
    general series, frame of reference and general equipment."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    from ... import __version__

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    date, time = dicom_date_time(when)
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = patient.get("StudyDate", "")
    ds.SeriesDate = date
    ds.StudyTime = patient.get("StudyTime", "")
    ds.SeriesTime = time
    ds.AccessionNumber = patient.get("AccessionNumber", "")
    ds.Modality = modality
    ds.Manufacturer = "seedplan"
    ds.ReferringPhysicianName = patient.get("ReferringPhysicianName", "")
    if patient.get("StudyDescription"):
        ds.StudyDescription = patient["StudyDescription"][:64]
    ds.SeriesDescription = description[:64]
    ds.OperatorsName = ""
    ds.ManufacturerModelName = "seedplan"
    ds.PatientName = patient["PatientName"]
    ds.PatientID = patient["PatientID"]
    ds.PatientBirthDate = patient.get("PatientBirthDate", "")
    ds.PatientSex = patient.get("PatientSex", "O")
    ds.SoftwareVersions = __version__
    ds.StudyInstanceUID = patient["StudyInstanceUID"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = patient.get("StudyID", "1")
    ds.SeriesNumber = int(series_number)
    ds.InstanceNumber = 1
    if frame_of_reference_uid:
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
    return ds


def _as_written(ds: Any) -> None:
    """Mark every sequence item of ``ds`` as already in the encoding it is written in (explicit VR little
    endian, its own character set).  pydicom otherwise parses every raw element of an item again before
    writing it (``raw_ds`` values: 1.2 s of validation for the demo's RTSTRUCT contours).  The top-level
    dataset is left to pydicom, which resolves its ambiguous VRs (pixel data) there."""
    for elem in ds.elements():
        if getattr(elem, "VR", None) == "SQ" and not isinstance(elem.value, (bytes, bytearray)):
            for item in elem.value:
                item.set_original_encoding(False, True, item._character_set)
                _as_written(item)


def save_dataset(ds: Any, path: str | os.PathLike[str], what: str) -> Path:
    """Write ``ds`` to ``path`` atomically (Explicit VR Little Endian, full file format)."""
    out = Path(path)
    _as_written(ds)
    with atomic_path(out) as tmp:
        try:
            ds.save_as(tmp, enforce_file_format=True)
        except Exception as exc:  # noqa: BLE001 - any pydicom write failure
            raise FileFormatError(f"cannot write {what} {out}: {type(exc).__name__}: {exc}") from None
    return out


def reference(sop_class: str, sop_uid: str) -> Any:
    """A referenced-SOP item."""
    from pydicom.dataset import Dataset

    r = Dataset()
    r.ReferencedSOPClassUID = sop_class
    r.ReferencedSOPInstanceUID = sop_uid
    return r
