"""RT Dose: the plan's total dose on its grid (multi-frame, 16- or 32-bit, GY, PHYSICAL, BRACHY)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...geometry import Grid
from ...imaging.ct import CTImage, deterministic_uid
from ...plan import Plan
from ._common import (
    RT_DOSE_STORAGE,
    RT_PLAN_STORAGE,
    ds_list,
    ds_str,
    new_dataset,
    patient_study,
    reference,
    require_ct_uids,
    save_dataset,
)
from ._uids import DicomExport, case_ct_path, plan_uids

__all__ = ["export_rtdose", "DoseQuantisationWarning", "QUANTISATION_WARN_FRACTION"]

_FRAME_OFFSET_TAG = 0x3004000C
#: Quantisation step above which :func:`export_rtdose` warns, as a fraction of the prescription dose.
QUANTISATION_WARN_FRACTION = 1e-3


class DoseQuantisationWarning(UserWarning):
    """The RTDOSE integer step is coarser than 0.1 % of the prescription dose."""


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
        UID of this RTDOSE (default: derived from the plan and the stored dose values).
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

    what = f"export_rtdose({path})"
    require_ct_uids(ct, what)
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
    scaling_str = ds_str(dmax / top) if dmax > 0 else "1"
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
    sop_uid = sop_instance_uid or deterministic_uid("seedplan-dicom-rt", uids["rtdose_series"], _digest(dose_grid, stored))
    now = _dt.datetime.now().replace(microsecond=0)
    patient = patient_study(ct, ct_source if ct_source is not None else case_ct_path(plan))
    ds = new_dataset(RT_DOSE_STORAGE, sop_uid, "RTDOSE", series_uid=uids["rtdose_series"], series_number=102,
                     patient=patient, when=now, description=f"seedplan TG-43 dose ({plan.formalism})",
                     frame_of_reference_uid=ct.frame_of_reference_uid)
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    # image plane
    ds.ImagePositionPatient = ds_list(origin)
    ds.ImageOrientationPatient = ds_list(np.concatenate([row_dir, col_dir]))
    ds.PixelSpacing = [ds_str(sy), ds_str(sx)]
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
    ds.DoseComment = f"TG-43 {plan.formalism}, {plan.seed_model.name}, dose to complete decay"[:64]
    ds.DoseSummationType = "BRACHY"
    ref_plan = reference(RT_PLAN_STORAGE, rtplan_uid or uids["rtplan"])
    ref_fg = Dataset()
    ref_fg.ReferencedFractionGroupNumber = 1
    ref_setup = Dataset()
    ref_setup.ReferencedBrachyApplicationSetupNumber = 1
    ref_fg.ReferencedBrachyApplicationSetupSequence = Sequence([ref_setup])
    ref_plan.ReferencedFractionGroupSequence = Sequence([ref_fg])
    ds.ReferencedRTPlanSequence = Sequence([ref_plan])
    ds.GridFrameOffsetVector = [ds_str(k * sz) for k in range(nz)]
    ds.DoseGridScaling = scaling_str
    ds.TissueHeterogeneityCorrection = "WATER"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds["PixelData"].VR = "OW"
    out = save_dataset(ds, path, "RTDOSE")
    info = {"dose_grid_scaling": scaling, "quantisation_step_Gy": step, "bits": bits, "warning": message,
            "max_Gy": dmax}
    return DicomExport(out, RT_DOSE_STORAGE, sop_uid, uids["rtdose_series"], info)


def _digest(grid: Grid, stored: np.ndarray) -> str:
    h = hashlib.sha256(repr((grid.origin_mm, grid.spacing_mm, grid.size, grid.direction)).encode("ascii"))
    h.update(np.ascontiguousarray(stored).tobytes())
    return h.hexdigest()
