"""A CT volume as a DICOM CT image series, one file per slice."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...imaging.ct import CTImage, deterministic_uid
from ._common import CT_IMAGE_STORAGE, new_dataset, save_dataset

__all__ = ["write_ct_dicom_series"]

log = logging.getLogger("seedplan")


def _ds6(v: float) -> str:
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return s if s not in ("-0", "") else "0"


def write_ct_dicom_series(
    ct: CTImage,
    folder: str | os.PathLike[str],
    *,
    patient_id: str = "SEEDPLAN-PHANTOM",
    patient_name: str = "Seedplan^Phantom",
    series_description: str | None = None,
    study_description: str = "seedplan",
    series_number: int = 1,
    uid_seed: Any = None,
    overwrite: bool = True,
) -> CTImage:
    """Write ``ct`` as a DICOM CT series, one file per slice (``CT_0001.dcm`` ...).

    Parameters
    ----------
    ct : CTImage
        Volume to write.  Oblique and flipped directions are kept exactly
        (ImageOrientationPatient/ImagePositionPatient per slice); the patient
        position is ``ct.patient_position`` (HFS when unknown).
    folder : path-like
        Output folder, created if needed.
    patient_id, patient_name, series_description, study_description, series_number
        DICOM identification attributes.
    uid_seed : any, optional
        When given, every UID (study, series, frame of reference, SOP
        instances) is derived deterministically from it; otherwise the UIDs
        already on ``ct`` are reused and missing ones are random (give a CT
        without UIDs, or a seed, to create a genuinely new series).
    overwrite : bool
        When False, refuse to write into a folder that already holds
        ``.dcm`` files.  When True (default), ``CT_*.dcm`` files left from a
        previous series are removed after the new series is in place.

    Returns
    -------
    CTImage
        ``ct`` with the UIDs of the written series (``series_uid``,
        ``frame_of_reference_uid``, ``study_uid``, ``sop_instance_uids``).

    Notes
    -----
    HU are stored as signed 16-bit integers with RescaleSlope 1 and
    RescaleIntercept 0 when they fit (rounded to 1 HU); otherwise a slope is
    chosen so the range fits.
    """
    from pydicom.uid import generate_uid

    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputError(f"DICOM output folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    old = sorted(out.glob("*.dcm"))
    if old and not overwrite:
        raise InputError(f"{out} already holds {len(old)} .dcm files; pass overwrite=True or use an empty folder")

    grid = ct.grid
    nx, ny, nz = grid.size

    def uid(kind: str, existing: str | None) -> str:
        if uid_seed is not None:
            return deterministic_uid("seedplan", uid_seed, kind)
        return existing or str(generate_uid())

    study_uid = uid("study", ct.study_uid)
    series_uid = uid("series", ct.series_uid if uid_seed is None and ct.series_uid else None)
    for_uid = uid("for", ct.frame_of_reference_uid)
    if uid_seed is not None:
        sop_uids = tuple(deterministic_uid("seedplan", uid_seed, "sop", k) for k in range(nz))
    elif len(ct.sop_instance_uids) == nz:
        sop_uids = ct.sop_instance_uids
    else:
        sop_uids = tuple(str(generate_uid()) for _ in range(nz))

    hu = np.asarray(ct.hu, dtype=np.float64)
    lo, hi = float(hu.min()), float(hu.max())
    if lo >= -32768 and hi <= 32767:
        slope, intercept = 1.0, 0.0
    else:
        intercept = (lo + hi) / 2.0
        slope = max((hi - lo) / 65000.0, 1e-6)
    stored = np.clip(np.round((hu - intercept) / slope), -32768, 32767).astype(np.int16)

    dmat = grid.direction_matrix
    row_dir, col_dir = dmat[:, 0], dmat[:, 1]
    sp = grid.spacing
    fixed = uid_seed is not None or bool(ct.sop_instance_uids)
    when = _dt.datetime(2026, 1, 1, 12) if fixed else _dt.datetime.now().replace(microsecond=0)
    desc = series_description if series_description is not None else (ct.description or "seedplan CT")
    patient = {"PatientName": patient_name, "PatientID": patient_id, "StudyInstanceUID": study_uid,
               "StudyDate": when.strftime("%Y%m%d"), "StudyTime": when.strftime("%H%M%S"),
               "StudyDescription": study_description}

    written: list[Path] = []
    for k in range(nz):
        ds = new_dataset(CT_IMAGE_STORAGE, sop_uids[k], "CT", series_uid=series_uid, series_number=series_number,
                         patient=patient, when=when, description=desc, frame_of_reference_uid=for_uid)
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.ContentDate, ds.ContentTime = ds.SeriesDate, ds.SeriesTime
        ds.BodyPartExamined = "SPINE"  # an unpaired body part: general series Laterality (type 2C) is absent
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.PatientPosition = ct.patient_position or "HFS"
        ipp = grid.index_to_world((0.0, 0.0, float(k)))
        ds.ImagePositionPatient = [_ds6(v) for v in ipp]
        ds.ImageOrientationPatient = [_ds6(v) for v in np.concatenate([row_dir, col_dir])]
        ds.SliceLocation = _ds6(float(ipp @ np.cross(row_dir, col_dir)))
        ds.SliceThickness = _ds6(sp[2])
        ds.SpacingBetweenSlices = _ds6(sp[2])
        ds.PixelSpacing = [_ds6(sp[1]), _ds6(sp[0])]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = _ds6(intercept)
        ds.RescaleSlope = _ds6(slope)
        ds.RescaleType = "HU"
        ds.KVP = "120"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.PixelData = np.ascontiguousarray(stored[k]).astype("<i2").tobytes()
        written.append(save_dataset(ds, out / f"CT_{k + 1:04d}.dcm", "DICOM slice"))
        if (k + 1) % 50 == 0:
            log.debug("wrote %d/%d CT slices", k + 1, nz)
    keep = set(written)
    for f in old:
        if f not in keep and f.name.startswith("CT_"):
            f.unlink(missing_ok=True)
    return replace(ct, series_uid=series_uid, frame_of_reference_uid=for_uid, study_uid=study_uid,
                   sop_instance_uids=sop_uids, patient_id=patient_id, description=desc)
