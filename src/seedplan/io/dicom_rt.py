"""DICOM RT export of a seed plan: RTPLAN, RTDOSE and RTSTRUCT.

The three objects reference the planning CT series (same StudyInstanceUID,
FrameOfReferenceUID and patient identification) and each other:
RTDOSE -> RTPLAN -> RTSTRUCT -> CT series.  Every file is written
atomically in Explicit VR Little Endian with ``enforce_file_format=True``,
and every DS value is formatted to at most 16 characters.

Conventions
-----------
RTPLAN (RT Plan Storage, brachy, permanent LDR implant)
    * ``BrachyTreatmentTechnique`` PERMANENT, ``BrachyTreatmentType`` LDR,
      ``RTPlanGeometry`` PATIENT with a ``ReferencedStructureSetSequence``;
      ``ApprovalStatus`` UNAPPROVED.
    * One ``SourceSequence`` item per distinct seed strength (one item for
      the usual single-strength plan).  ``ReferenceAirKermaRate`` is the
      seed's S_K at the calibration date in uGy h^-1 at 1 m (numerically
      equal to U); ``SourceStrengthReferenceDate/Time`` is the calibration
      date (00:00 when the plan gives no time).  ``SourceIsotopeHalfLife``
      is in days (the seed model's half-life).  ``SourceStrengthUnits`` is
      AIR_KERMA_RATE; ``SourceStrength`` (the same S_K) is written only for
      S_K < 1 U, where dciodvfy's integer-truncated condition requires it.
    * One application setup; one channel per needle (per needle and source
      when a needle carries seeds of different strengths; needles without
      seeds get no channel).  ``ChannelLength`` is the needle depth (skin
      entry to tip, mm).
    * Each seed is a *pair* of control points with the same
      ``ControlPointRelativePosition`` = the seed's retraction distance from
      the needle tip (0 = deepest seed; control points in delivery order,
      deepest first), ``ControlPoint3DPosition`` = seed centre (mm, patient
      LPS) and ``ControlPointOrientation`` = seed axis direction cosines.
      Cumulative time weights rise by 1 across each pair, so
      ``FinalCumulativeTimeWeight`` = number of seeds in the channel.
    * Time convention: ``ChannelTotalTime`` = n_seeds x tau, with the mean
      life tau = T_half / ln 2 in seconds.  A reader that takes the dwell
      time of a seed as dW x ChannelTotalTime / FinalCumulativeTimeWeight
      gets tau per seed, hence the dose to complete decay D = S_K x tau x
      (dose rate per unit S_K) -- provided it decays S_K from the
      ``SourceStrengthReferenceDate`` to the implant date.  The implant date
      is written in ``RTPlanDescription``; ``TotalReferenceAirKerma`` is
      sum(S_K at implant) x tau(h) in uGy at 1 m (decay included).
    * ``FractionGroupSequence``: 1 fraction, 0 beams, 1 brachy application
      setup whose ``BrachyApplicationSetupDose`` is the prescription dose;
      ``DoseReferenceSequence`` holds the prescription (``TargetPrescriptionDose``
      = PD), as a VOLUME on the target ROI when its number is known.
RTDOSE (RT Dose Storage)
    Multi-frame, unsigned 16-bit by default (``bits=32`` optional): stored =
    round-half-up(dose / DoseGridScaling) clipped to the integer range,
    DoseGridScaling = max / (2^bits - 1) as written in the file (<= 16
    characters).  ``ImagePositionPatient`` is the centre of voxel (0, 0, 0),
    ``ImageOrientationPatient`` the grid's first two direction columns,
    ``GridFrameOffsetVector`` is relative (0, dz, 2 dz ...) with
    ``FrameIncrementPointer`` -> (3004,000C).  A left-handed grid (third
    axis opposite to row x column) is written with its frames reversed so
    the offsets stay positive.  DoseUnits GY, DoseType PHYSICAL,
    DoseSummationType BRACHY, TissueHeterogeneityCorrection WATER.
RTSTRUCT
    The case's structures (contours from
    :func:`seedplan.imaging.structures.write_rtstruct`) plus one ROI per
    needle (an OPEN_NONPLANAR contour entry -> tip, RTROIInterpretedType
    BRACHY_CHANNEL), one per vertebroplasty needle (``pvp_needle_<side>``,
    interpreted type empty: no defined term fits) and one ROI ``seeds``
    holding a POINT contour per seed (RTROIInterpretedType MARKER).  A
    planned cement is added as the ROI ``cement`` (AVOIDANCE: seeds stay out).

UIDs
    The RTPLAN and RTSTRUCT SOP instance UIDs are derived from the plan's
    content (:func:`plan_uids`), so objects exported separately still
    reference each other; the RTDOSE gets a fresh UID.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .._atomic import atomic_path
from ..errors import FileFormatError, InputError
from ..geometry import Grid
from ..imaging.ct import CTImage, deterministic_uid
from ..imaging.structures import RT_STRUCTURE_SET_STORAGE, StructureSet, write_rtstruct
from .case import load_plan_case
from ..plan import Plan

__all__ = [
    "RT_DOSE_STORAGE",
    "RT_PLAN_STORAGE",
    "RT_STRUCTURE_SET_STORAGE",
    "DicomExport",
    "DoseQuantisationWarning",
    "plan_uids",
    "export_rtdose",
    "export_rtplan",
    "export_rtstruct",
    "export_plan_dicom",
]

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
_FRAME_OFFSET_TAG = 0x3004000C
#: Quantisation step above which :func:`export_rtdose` warns, as a fraction of the prescription dose.
QUANTISATION_WARN_FRACTION = 1e-3


class DoseQuantisationWarning(UserWarning):
    """The RTDOSE integer step is coarser than 0.1 % of the prescription dose."""


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


# ============================================================================ helpers
def _ds(value: float) -> str:
    """A DS string of at most 16 characters for a finite number."""
    from pydicom.valuerep import format_number_as_ds

    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"cannot write the non-finite number {value!r} to a DICOM DS attribute")
    return "0" if v == 0.0 else format_number_as_ds(v)


def _ds_list(values: Any) -> list[str]:
    return [_ds(v) for v in np.asarray(values, dtype=float).reshape(-1)]


def _plan_key(plan: Plan) -> str:
    text = json.dumps(plan.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def plan_uids(plan: Plan) -> dict[str, str]:
    """UIDs derived from the plan's content.

    Returns
    -------
    dict
        ``rtplan`` / ``rtstruct`` (SOP instance UIDs) and ``rtplan_series`` /
        ``rtstruct_series`` / ``rtdose_series`` (series UIDs).
    """
    key = _plan_key(plan)
    kinds = ("rtplan", "rtstruct", "rtplan_series", "rtstruct_series", "rtdose_series")
    return {k: deterministic_uid("seedplan-dicom-rt", key, k) for k in kinds}


def _dicom_date_time(iso: str) -> tuple[str, str]:
    d = _dt.datetime.fromisoformat(iso)
    return d.strftime("%Y%m%d"), d.strftime("%H%M%S")


def _require_ct_uids(ct: CTImage, what: str) -> None:
    if not isinstance(ct, CTImage):
        raise InputError(f"{what}: ct must be a seedplan CTImage, got {type(ct).__name__}")
    missing = [n for n, v in (("SeriesInstanceUID", ct.series_uid), ("FrameOfReferenceUID", ct.frame_of_reference_uid)) if not v]
    if missing:
        raise InputError(
            f"{what}: the CT has no {' / '.join(missing)}; DICOM RT objects must reference a DICOM CT series "
            "(load it with load_ct() from DICOM, or write it with write_ct_dicom_series() first)"
        )


def _patient_study(ct: CTImage, ct_source: str | os.PathLike[str] | None) -> dict[str, str]:
    """Patient and study attributes, copied from a file of the CT series when one is reachable."""
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
    if ct_source is None:
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


def _base_dataset(sop_class: str, sop_uid: str, modality: str, series_uid: str, series_number: int,
                  ct: CTImage, patient: Mapping[str, str], now: _dt.datetime, description: str) -> Any:
    """Patient, study, series, frame of reference, equipment and SOP common modules."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    from .. import __version__

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = patient["StudyDate"]
    ds.SeriesDate = date
    ds.StudyTime = patient["StudyTime"]
    ds.SeriesTime = time
    ds.AccessionNumber = patient["AccessionNumber"]
    ds.Modality = modality
    ds.Manufacturer = "seedplan"
    ds.ReferringPhysicianName = patient["ReferringPhysicianName"]
    if patient["StudyDescription"]:
        ds.StudyDescription = patient["StudyDescription"]
    ds.SeriesDescription = description[:64]
    ds.OperatorsName = ""
    ds.ManufacturerModelName = "seedplan"
    ds.PatientName = patient["PatientName"]
    ds.PatientID = patient["PatientID"]
    ds.PatientBirthDate = patient["PatientBirthDate"]
    ds.PatientSex = patient["PatientSex"]
    ds.SoftwareVersions = __version__
    ds.StudyInstanceUID = patient["StudyInstanceUID"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = patient["StudyID"]
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = ct.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    return ds


def _save(ds: Any, path: str | os.PathLike[str], what: str) -> Path:
    out = Path(path)
    with atomic_path(out) as tmp:
        try:
            ds.save_as(tmp, enforce_file_format=True)
        except Exception as exc:  # noqa: BLE001 - any pydicom write failure
            raise FileFormatError(f"cannot write {what} {out}: {type(exc).__name__}: {exc}") from None
    return out


def _ref(sop_class: str, sop_uid: str) -> Any:
    from pydicom.dataset import Dataset

    r = Dataset()
    r.ReferencedSOPClassUID = sop_class
    r.ReferencedSOPInstanceUID = sop_uid
    return r


# ============================================================================ RTDOSE
def export_rtdose(
    plan: Plan,
    dose_grid: Grid,
    dose_Gy: Any,
    ct: CTImage,
    path: str | os.PathLike[str],
    *,
    bits: int = 16,
    prescription_Gy: float | None = None,
    rtplan_uid: str | None = None,
    sop_instance_uid: str | None = None,
    ct_source: str | os.PathLike[str] | None = None,
) -> DicomExport:
    """Write the total dose as a DICOM RTDOSE referencing the plan and the CT.

    Parameters
    ----------
    plan : Plan
    dose_grid : Grid
        Geometry of ``dose_Gy`` (same frame of reference as the CT).
    dose_Gy : array_like
        Total dose in Gy, shape ``dose_grid.shape`` (``[z, y, x]``), >= 0.
    ct : CTImage
        The planning CT (gives study, frame of reference and patient).
    path : path-like
        Output file, written atomically.
    bits : {16, 32}
        Unsigned integer size of the stored values (16 is the most
        interoperable and validates with ``dciodvfy``).
    prescription_Gy : float, optional
        Reference for the quantisation check (default: the plan's PD).
    rtplan_uid : str, optional
        SOPInstanceUID of the referenced RTPLAN (default ``plan_uids(plan)["rtplan"]``).
    sop_instance_uid : str, optional
        UID of this RTDOSE (default: a new UID).
    ct_source : path-like, optional
        CT folder/file to copy patient and study attributes from
        (default: ``plan.case["ct"]`` when it exists).

    Returns
    -------
    DicomExport
        ``info`` holds ``dose_grid_scaling``, ``quantisation_step_Gy``,
        ``bits`` and ``warning`` (the message, or None).

    Warns
    -----
    DoseQuantisationWarning
        When the step (DoseGridScaling) exceeds 0.1 % of the prescription dose.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    what = f"export_rtdose({path})"
    _require_ct_uids(ct, what)
    if not isinstance(dose_grid, Grid):
        raise InputError(f"{what}: dose_grid must be a seedplan Grid, got {type(dose_grid).__name__}")
    if bits not in (16, 32):
        raise InputError(f"{what}: bits must be 16 or 32, got {bits!r}")
    dose = np.asarray(dose_Gy, dtype=np.float64)
    if dose.shape != dose_grid.shape:
        raise InputError(f"{what}: dose shape {dose.shape} does not match the grid shape {dose_grid.shape} (z, y, x)")
    if not np.all(np.isfinite(dose)):
        raise InputError(f"{what}: the dose contains NaN or infinite values")
    if dose.size and float(dose.min()) < 0.0:
        raise InputError(f"{what}: the dose has negative values (min {float(dose.min()):g} Gy); RTDOSE PHYSICAL is unsigned")
    pd = float(plan.prescription.dose_Gy if prescription_Gy is None else prescription_Gy)
    if not (math.isfinite(pd) and pd > 0):
        raise InputError(f"{what}: prescription_Gy must be > 0, got {prescription_Gy!r}")

    # geometry: frames along the slice normal row x column, positive offsets
    dmat = dose_grid.direction_matrix
    row_dir, col_dir = dmat[:, 0], dmat[:, 1]
    normal = np.cross(row_dir, col_dir)
    nx, ny, nz = dose_grid.size
    sx, sy, sz = dose_grid.spacing_mm
    if float(np.dot(normal, dmat[:, 2])) < 0:
        dose = dose[::-1]
        origin = dose_grid.index_to_world([0.0, 0.0, float(nz - 1)])
    else:
        origin = dose_grid.origin

    # quantisation
    top = float(2**bits - 1)
    dmax = float(dose.max()) if dose.size else 0.0
    scaling_str = _ds(dmax / top) if dmax > 0 else "1"
    scaling = float(scaling_str)
    dtype = np.dtype("<u2") if bits == 16 else np.dtype("<u4")
    stored = np.clip(np.floor(dose / scaling + 0.5), 0, top).astype(dtype)
    step = scaling if dmax > 0 else 0.0
    message = None
    if step > QUANTISATION_WARN_FRACTION * pd:
        message = (
            f"{Path(path).name}: RTDOSE quantisation step {step:.4g} Gy (max {dmax:.4g} Gy / {int(top)}) exceeds "
            f"{100 * QUANTISATION_WARN_FRACTION:g} % of the prescription ({pd:g} Gy); use bits=32 or cap the dose"
        )
        warnings.warn(message, DoseQuantisationWarning, stacklevel=2)

    uids = plan_uids(plan)
    sop_uid = sop_instance_uid or str(generate_uid())
    now = _dt.datetime.now()
    patient = _patient_study(ct, ct_source if ct_source is not None else _case_ct_path(plan))
    ds = _base_dataset(RT_DOSE_STORAGE, sop_uid, "RTDOSE", uids["rtdose_series"], 102, ct, patient, now,
                       f"seedplan TG-43 dose ({plan.formalism})")
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    # image plane
    ds.ImagePositionPatient = _ds_list(origin)
    ds.ImageOrientationPatient = _ds_list(np.concatenate([row_dir, col_dir]))
    ds.PixelSpacing = [_ds(sy), _ds(sx)]
    ds.SliceThickness = ""
    # image pixel / multi-frame
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = int(nz)
    ds.FrameIncrementPointer = _FRAME_OFFSET_TAG
    ds.Rows = int(ny)
    ds.Columns = int(nx)
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    # RT dose
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseComment = f"TG-43 {plan.formalism}, {plan.seed_model}, dose to complete decay"[:64]
    ds.DoseSummationType = "BRACHY"
    ref_plan = _ref(RT_PLAN_STORAGE, rtplan_uid or uids["rtplan"])
    ref_fg = Dataset()
    ref_fg.ReferencedFractionGroupNumber = 1
    ref_setup = Dataset()
    ref_setup.ReferencedBrachyApplicationSetupNumber = 1
    ref_fg.ReferencedBrachyApplicationSetupSequence = Sequence([ref_setup])
    ref_plan.ReferencedFractionGroupSequence = Sequence([ref_fg])
    ds.ReferencedRTPlanSequence = Sequence([ref_plan])
    ds.GridFrameOffsetVector = [_ds(k * sz) for k in range(nz)]
    ds.DoseGridScaling = scaling_str
    ds.TissueHeterogeneityCorrection = "WATER"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds["PixelData"].VR = "OW"
    out = _save(ds, path, "RTDOSE")
    info = {"dose_grid_scaling": scaling, "quantisation_step_Gy": step, "bits": bits, "warning": message,
            "max_Gy": dmax}
    return DicomExport(out, RT_DOSE_STORAGE, sop_uid, uids["rtdose_series"], info)


def _case_ct_path(plan: Plan) -> Path | None:
    p = plan.case.get("ct") if isinstance(plan.case, Mapping) else None
    if isinstance(p, str) and p and Path(p).exists():
        return Path(p)
    return None


# ============================================================================ RTPLAN
def _source_manufacturer(description: str) -> str:
    head = description.split(" model ")[0].strip()
    return head[:64] or "unknown"


def export_rtplan(
    plan: Plan,
    ct: CTImage,
    path: str | os.PathLike[str],
    *,
    rtstruct_uid: str | None = None,
    needle_roi_numbers: Mapping[int, int] | None = None,
    target_roi_number: int | None = None,
    sop_instance_uid: str | None = None,
    ct_source: str | os.PathLike[str] | None = None,
) -> DicomExport:
    """Write the plan as a DICOM RT Plan (brachy, permanent LDR seeds).

    The conventions (control-point pairs, time weights, strengths, dates)
    are described in the module docstring.

    Parameters
    ----------
    plan : Plan
    ct : CTImage
        The planning CT (study, frame of reference, patient).
    path : path-like
        Output file, written atomically.
    rtstruct_uid : str, optional
        SOPInstanceUID of the RTSTRUCT with the target and needles (default
        ``plan_uids(plan)["rtstruct"]``, what :func:`export_rtstruct` uses).
    needle_roi_numbers : mapping needle number -> ROI number, optional
        Needle ROIs of that RTSTRUCT, written as each channel's ``ReferencedROINumber``.
    target_roi_number : int, optional
        Target ROI; the prescription becomes a VOLUME dose reference on it
        (a SITE dose reference otherwise).
    sop_instance_uid : str, optional
        UID of this RTPLAN (default ``plan_uids(plan)["rtplan"]``).
    ct_source : path-like, optional
        CT folder/file to copy patient and study attributes from.

    Returns
    -------
    DicomExport
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from ..sources import load_seed_model

    what = f"export_rtplan({path})"
    _require_ct_uids(ct, what)
    if plan.n_seeds == 0:
        raise InputError(f"{what}: the plan has no seeds")
    model = load_seed_model(plan.seed_model)
    tau_h = model.half_life_d * 24.0 / math.log(2.0)
    tau_s = tau_h * 3600.0
    pd = float(plan.prescription.dose_Gy)
    s_implant = plan.strengths_at_implant_U
    uids = plan_uids(plan)
    sop_uid = sop_instance_uid or uids["rtplan"]
    now = _dt.datetime.now()
    patient = _patient_study(ct, ct_source if ct_source is not None else _case_ct_path(plan))
    ds = _base_dataset(RT_PLAN_STORAGE, sop_uid, "RTPLAN", uids["rtplan_series"], 101, ct, patient, now,
                       f"seedplan {plan.seed_model} permanent implant")

    # RT general plan
    ds.RTPlanLabel = "seedplan"
    ds.RTPlanName = str(plan.case.get("name", "seedplan"))[:64] if isinstance(plan.case, Mapping) else "seedplan"
    ds.RTPlanDescription = (
        f"125I permanent implant, {plan.n_seeds} seeds {plan.seed_model} on {len(plan.needles)} needles; "
        f"S_K at calibration {plan.calibration_date}, implant date {plan.implant_date}; PD {pd:g} Gy "
        f"(TG-43 {plan.formalism}, dose to complete decay). ChannelTotalTime = n_seeds x mean life."
    )
    ds.RTPlanDate = now.strftime("%Y%m%d")
    ds.RTPlanTime = now.strftime("%H%M%S")
    ds.RTPlanGeometry = "PATIENT"
    ds.ReferencedStructureSetSequence = Sequence([_ref(RT_STRUCTURE_SET_STORAGE, rtstruct_uid or uids["rtstruct"])])

    # RT prescription
    dr = Dataset()
    dr.DoseReferenceNumber = 1
    dr.DoseReferenceUID = deterministic_uid("seedplan-dicom-rt", sop_uid, "dose-reference")
    if target_roi_number is not None:
        dr.DoseReferenceStructureType = "VOLUME"
        dr.ReferencedROINumber = int(target_roi_number)
    else:
        dr.DoseReferenceStructureType = "SITE"
    dr.DoseReferenceDescription = f"PD {pd:g} Gy (D90 >= PD) to the target"[:64]
    dr.DoseReferenceType = "TARGET"
    dr.TargetPrescriptionDose = _ds(pd)
    ds.DoseReferenceSequence = Sequence([dr])

    # RT fraction scheme
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = 1
    fg.NumberOfBeams = 0
    fg.NumberOfBrachyApplicationSetups = 1
    rb = Dataset()
    rb.BrachyApplicationSetupDose = _ds(pd)
    rb.ReferencedBrachyApplicationSetupNumber = 1
    fg.ReferencedBrachyApplicationSetupSequence = Sequence([rb])
    ds.FractionGroupSequence = Sequence([fg])

    # RT brachy application setups
    ds.BrachyTreatmentTechnique = "PERMANENT"
    ds.BrachyTreatmentType = "LDR"
    tm = Dataset()
    tm.TreatmentMachineName = "MANUAL_SEEDS"
    tm.Manufacturer = "seedplan"
    ds.TreatmentMachineSequence = Sequence([tm])

    # one source per distinct strength, in order of first appearance
    strengths: list[float] = []
    for s in plan.seeds:
        if s.strength_U not in strengths:
            strengths.append(s.strength_U)
    ref_date, ref_time = _dicom_date_time(plan.calibration_date)
    src_seq = Sequence()
    for number, sk in enumerate(strengths, start=1):
        src = Dataset()
        src.SourceNumber = number
        src.SourceModelID = plan.seed_model[:16]
        src.SourceDescription = model.description[:64]
        src.SourceType = "LINE"
        src.SourceManufacturer = _source_manufacturer(model.description)
        src.ActiveSourceLength = _ds(model.active_length_mm)
        src.SourceIsotopeName = "I-125" if model.radionuclide.upper().replace("-", "") == "I125" else model.radionuclide
        src.SourceIsotopeHalfLife = _ds(model.half_life_d)
        src.SourceStrengthUnits = "AIR_KERMA_RATE"
        src.ReferenceAirKermaRate = _ds(sk)
        if sk < 1.0:
            # SourceStrength (1C) is meant for non-photon sources (ReferenceAirKermaRate 0).  dciodvfy
            # (dicom3tools 2022) tests "is zero" on the integer-truncated rate, so it requires the
            # attribute for S_K < 1 U and rejects it otherwise; write the same S_K for those seeds.
            src.SourceStrength = _ds(sk)
        src.SourceStrengthReferenceDate = ref_date
        src.SourceStrengthReferenceTime = ref_time
        src_seq.append(src)
    ds.SourceSequence = src_seq

    setup = Dataset()
    # no defined term fits a CT-guided (non-perineal) seed implant
    setup.ApplicationSetupType = "INTERSTITIAL"
    setup.ApplicationSetupNumber = 1
    setup.ApplicationSetupName = "CT-guided seed implant"
    setup.TotalReferenceAirKerma = _ds(float(np.sum(s_implant)) * tau_h)
    channels = Sequence()
    channel_number = 0
    for needle_no, needle in enumerate(plan.needles, start=1):
        seeds = plan.seeds_on_needle(needle_no)
        for source_no, sk in enumerate(strengths, start=1):
            group = [s for s in seeds if s.strength_U == sk]
            if not group:
                continue
            channel_number += 1
            ch = Dataset()
            ch.ChannelNumber = channel_number
            ch.ChannelLength = _ds(needle.depth_mm)
            ch.ChannelTotalTime = _ds(len(group) * tau_s)
            ch.SourceMovementType = "FIXED"
            # the needle is the source applicator: a rigid applicator linked to its ROI
            ch.SourceApplicatorNumber = needle_no
            ch.SourceApplicatorID = (needle.label or f"N{needle_no}")[:16]
            ch.SourceApplicatorType = "RIGID"
            ch.SourceApplicatorLength = _ds(needle.depth_mm)
            roi_no = (needle_roi_numbers or {}).get(needle_no)
            ch.ReferencedROINumber = None if roi_no is None else int(roi_no)
            ch.TransferTubeNumber = None
            ch.ReferencedSourceNumber = source_no
            ch.NumberOfControlPoints = 2 * len(group)
            ch.FinalCumulativeTimeWeight = _ds(len(group))
            cps = Sequence()
            for i, s in enumerate(group):
                for j in (0, 1):
                    cp = Dataset()
                    cp.ControlPointIndex = 2 * i + j
                    cp.ControlPointRelativePosition = _ds(s.retraction_mm)
                    cp.ControlPoint3DPosition = _ds_list(s.position_mm)
                    cp.ControlPointOrientation = [float(v) for v in s.axis]
                    cp.CumulativeTimeWeight = _ds(i + j)
                    cps.append(cp)
            ch.BrachyControlPointSequence = cps
            channels.append(ch)
    setup.ChannelSequence = channels
    ds.ApplicationSetupSequence = Sequence([setup])
    ds.ApprovalStatus = "UNAPPROVED"
    out = _save(ds, path, "RTPLAN")
    return DicomExport(out, RT_PLAN_STORAGE, sop_uid, uids["rtplan_series"],
                       {"n_channels": channel_number, "n_sources": len(strengths), "channel_time_per_seed_s": tau_s})


# ============================================================================ RTSTRUCT
def export_rtstruct(
    plan: Plan,
    ct: CTImage,
    structures: StructureSet | None,
    path: str | os.PathLike[str],
    *,
    include_seeds: bool = True,
    sop_instance_uid: str | None = None,
    ct_source: str | os.PathLike[str] | None = None,
) -> DicomExport:
    """Write the case's structures plus the needles (and seeds) as an RTSTRUCT.

    Parameters
    ----------
    plan : Plan
    ct : CTImage
        The planning CT; structures must lie on its grid.
    structures : StructureSet or None
        Targets, organs at risk... (None: needles and seeds only).
    path : path-like
        Output file, written atomically.
    include_seeds : bool
        Add the ROI ``seeds`` (one POINT contour per seed, MARKER).
    sop_instance_uid : str, optional
        Default ``plan_uids(plan)["rtstruct"]`` (what :func:`export_rtplan` references).
    ct_source : path-like, optional
        CT folder/file to copy patient and study attributes from.

    Returns
    -------
    DicomExport
        ``info``: ``roi_numbers`` (name -> number), ``needle_roi_numbers``
        (needle number -> ROI number), ``target_roi_number`` (or None).
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from ..imaging.structures import Role

    what = f"export_rtstruct({path})"
    _require_ct_uids(ct, what)
    structs = StructureSet() if structures is None else structures
    if not isinstance(structs, StructureSet):
        structs = StructureSet(structs)
    uids = plan_uids(plan)
    sop_uid = sop_instance_uid or uids["rtstruct"]
    with tempfile.TemporaryDirectory(prefix="seedplan-rtstruct-") as tmpdir:
        tmp = Path(tmpdir) / "rtstruct.dcm"
        write_rtstruct(structs, ct, tmp, label="seedplan plan")
        ds = pydicom.dcmread(tmp)
    now = _dt.datetime.now()
    patient = _patient_study(ct, ct_source if ct_source is not None else _case_ct_path(plan))
    base = _base_dataset(RT_STRUCTURE_SET_STORAGE, sop_uid, "RTSTRUCT", uids["rtstruct_series"], 100, ct, patient,
                         now, "seedplan structures, needles and seeds")
    for elem in base:
        ds[elem.tag] = elem
    ds.file_meta = base.file_meta
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")

    roi_numbers = {str(r.ROIName): int(r.ROINumber) for r in ds.StructureSetROISequence}
    target_roi = None
    for s in structs.values():
        if s.role is Role.TARGET and s.name[:64] in roi_numbers:
            target_roi = roi_numbers[s.name[:64]]
            break
    next_number = max(roi_numbers.values(), default=0) + 1
    for_uid = ct.frame_of_reference_uid

    def unique(name: str) -> str:
        out, n = name, 2
        while out in roi_numbers:
            out, n = f"{name}_{n}", n + 1
        return out

    def add_roi(name: str, interpreted: str, color: tuple[int, int, int], contours: list[tuple[str, np.ndarray]]) -> int:
        nonlocal next_number
        number = next_number
        next_number += 1
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = for_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ROIDisplayColor = list(color)
        rc.ReferencedROINumber = number
        cseq = Sequence()
        for ctype, pts in contours:
            c = Dataset()
            c.ContourGeometricType = ctype
            c.NumberOfContourPoints = int(pts.shape[0])
            c.ContourData = _ds_list(pts)
            cseq.append(c)
        rc.ContourSequence = cseq
        ds.ROIContourSequence.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.ROIObservationLabel = name[:16]
        obs.RTROIInterpretedType = interpreted
        obs.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(obs)
        roi_numbers[name] = number
        return number

    needle_rois: dict[int, int] = {}
    for i, n in enumerate(plan.needles, start=1):
        name = unique(f"needle_{n.label or i}"[:60])
        needle_rois[i] = add_roi(name, "BRACHY_CHANNEL", (255, 255, 0),
                                 [("OPEN_NONPLANAR", np.array([n.entry_mm, n.tip_mm], dtype=float))])
    for i, n in enumerate(plan.pvp_needles, start=1):  # vertebroplasty paths: not brachy channels, type left empty
        add_roi(unique(f"pvp_needle_{n.label or i}"[:60]), "", (255, 182, 193),
                [("OPEN_NONPLANAR", np.array([n.entry_mm, n.tip_mm], dtype=float))])
    if include_seeds and plan.n_seeds:
        add_roi(unique("seeds"), "MARKER", (255, 128, 0),
                [("POINT", np.asarray(p, dtype=float).reshape(1, 3)) for p in plan.positions_mm])
    out = _save(ds, path, "RTSTRUCT")
    return DicomExport(out, RT_STRUCTURE_SET_STORAGE, sop_uid, uids["rtstruct_series"],
                       {"roi_numbers": dict(roi_numbers), "needle_roi_numbers": needle_rois,
                        "target_roi_number": target_roi})


# ============================================================================ all three
def export_plan_dicom(
    plan: Plan,
    out_dir: str | os.PathLike[str],
    *,
    ct: CTImage | None = None,
    structures: StructureSet | None = None,
    dose: tuple[Grid, Any] | None = None,
    bits: int = 16,
    dose_spacing_mm: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write ``RTSTRUCT.dcm``, ``RTPLAN.dcm`` and ``RTDOSE.dcm`` for a plan.

    Parameters
    ----------
    plan : Plan
    out_dir : path-like
        Output folder (created).
    ct, structures : optional
        The planning CT and structures; loaded from ``plan.case["case_file"]``
        when None.
    dose : (Grid, ndarray), optional
        Dose grid and total dose in Gy; computed with
        :func:`~seedplan.planning.planner.compute_plan_dose` on the CT grid
        when None.
    bits : {16, 32}
        RTDOSE integer size.
    dose_spacing_mm : float
        Spacing of the computed dose grid.
    progress : callable, optional
        Receives short progress messages.

    Returns
    -------
    dict
        ``{"rtstruct": path, "rtplan": path, "rtdose": path}``.
    """
    from ..planning.planner import compute_plan_dose

    say = progress or (lambda _m: None)
    if bits not in (16, 32):
        raise InputError(f"export_plan_dicom: bits must be 16 or 32, got {bits!r}")
    if not isinstance(plan, Plan):
        raise InputError(f"export_plan_dicom: plan must be a seedplan Plan, got {type(plan).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"export_plan_dicom: output path {out} exists and is not a folder")
    ct_source: Path | None = None
    if ct is None:
        case = load_plan_case(plan)
        ct = case.ct
        ct_source = Path(case.reference["ct"])
        if structures is None:
            structures = case.structures
        expected = plan.case.get("ct_series_uid")
        if expected and ct.series_uid != expected:
            raise FileFormatError(
                f"{plan.case.get('case_file')}: its CT series {ct.series_uid} is not the plan's CT series {expected}"
            )
    else:
        _require_ct_uids(ct, "export_plan_dicom")
        expected = plan.case.get("ct_series_uid") if isinstance(plan.case, Mapping) else None
        if expected and ct.series_uid != expected:
            warnings.warn(f"export_plan_dicom: the CT series {ct.series_uid} is not the plan's CT series {expected}",
                          stacklevel=2)
        if structures is None:
            case_file = plan.case.get("case_file") if isinstance(plan.case, Mapping) else None
            if case_file and Path(str(case_file)).is_file():
                structures = load_plan_case(plan).structures
    _require_ct_uids(ct, "export_plan_dicom")
    if dose is None:
        say(f"computing the dose of {plan.n_seeds} seeds on a {dose_spacing_mm:g} mm grid")
        grid, dose_Gy = compute_plan_dose(plan, ct.grid, spacing_mm=dose_spacing_mm)
    else:
        try:
            grid, dose_Gy = dose
        except (TypeError, ValueError):
            raise InputError("export_plan_dicom: dose must be a (Grid, dose_Gy array) pair") from None
    if structures is not None and structures.grid is not None and not structures.grid.same_geometry(ct.grid):
        structures = structures.resampled(ct.grid)
    if plan.cement and structures is not None and "cement" not in structures:
        from ..planning.cement import CementPlan

        say("re-simulating the planned cement for the RTSTRUCT")
        cement = CementPlan.from_dict(plan.cement, ct, structures)
        structures = StructureSet([*structures.values(), cement.structure(ct.grid)])
    out.mkdir(parents=True, exist_ok=True)
    say(f"writing DICOM RT to {out}")
    rs = export_rtstruct(plan, ct, structures, out / "RTSTRUCT.dcm", ct_source=ct_source)
    rp = export_rtplan(plan, ct, out / "RTPLAN.dcm", rtstruct_uid=rs.sop_instance_uid,
                       needle_roi_numbers=rs.info["needle_roi_numbers"], target_roi_number=rs.info["target_roi_number"],
                       ct_source=ct_source)
    rd = export_rtdose(plan, grid, dose_Gy, ct, out / "RTDOSE.dcm", bits=bits, rtplan_uid=rp.sop_instance_uid,
                       ct_source=ct_source)
    return {"rtstruct": rs.path, "rtplan": rp.path, "rtdose": rd.path}
