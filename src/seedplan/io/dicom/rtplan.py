"""RT Plan: the seed implant as a brachy, permanent LDR plan (one channel per needle, a control-point pair per seed)."""

from __future__ import annotations

import datetime as _dt
import math
import os
from typing import Mapping

import numpy as np

from ...errors import InputError
from ...imaging.ct import CTImage, deterministic_uid
from ...plan import Plan
from ._common import (
    RT_PLAN_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
    dicom_date_time,
    ds_list,
    ds_str,
    new_dataset,
    patient_study,
    reference,
    require_ct_uids,
    save_dataset,
)
from ._uids import DicomExport, case_ct_path, plan_uids

__all__ = ["export_rtplan"]


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

    what = f"export_rtplan({path})"
    require_ct_uids(ct, what)
    if plan.n_seeds == 0:
        raise InputError(f"{what}: the plan has no seeds")
    model = plan.seed_model
    tau_h = model.half_life_d * 24.0 / math.log(2.0)
    tau_s = tau_h * 3600.0
    pd = float(plan.prescription.dose_Gy)
    s_implant = plan.strengths_at_implant_U
    uids = plan_uids(plan)
    sop_uid = sop_instance_uid or uids["rtplan"]
    now = _dt.datetime.now().replace(microsecond=0)
    patient = patient_study(ct, ct_source if ct_source is not None else case_ct_path(plan))
    ds = new_dataset(RT_PLAN_STORAGE, sop_uid, "RTPLAN", series_uid=uids["rtplan_series"], series_number=101,
                     patient=patient, when=now, description=f"seedplan {model.name} permanent implant",
                     frame_of_reference_uid=ct.frame_of_reference_uid)

    # RT general plan
    ds.RTPlanLabel = "seedplan"
    ds.RTPlanName = str(plan.case.get("name", "seedplan"))[:64] if isinstance(plan.case, Mapping) else "seedplan"
    ds.RTPlanDescription = (
        f"125I permanent implant, {plan.n_seeds} seeds {model.name} on {len(plan.needles)} needles; "
        f"S_K at calibration {plan.calibration_date}, implant date {plan.implant_date}; PD {pd:g} Gy "
        f"(TG-43 {plan.formalism}, dose to complete decay). ChannelTotalTime = n_seeds x mean life."
    )
    ds.RTPlanDate = now.strftime("%Y%m%d")
    ds.RTPlanTime = now.strftime("%H%M%S")
    ds.RTPlanGeometry = "PATIENT"
    ds.ReferencedStructureSetSequence = Sequence([reference(RT_STRUCTURE_SET_STORAGE, rtstruct_uid or uids["rtstruct"])])

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
    dr.TargetPrescriptionDose = ds_str(pd)
    ds.DoseReferenceSequence = Sequence([dr])

    # RT fraction scheme
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = 1
    fg.NumberOfBeams = 0
    fg.NumberOfBrachyApplicationSetups = 1
    rb = Dataset()
    rb.BrachyApplicationSetupDose = ds_str(pd)
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
    ref_date, ref_time = dicom_date_time(plan.calibration_date)
    src_seq = Sequence()
    for number, sk in enumerate(strengths, start=1):
        src = Dataset()
        src.SourceNumber = number
        src.SourceModelID = model.name[:16]
        src.SourceDescription = model.description[:64]
        src.SourceType = "LINE"
        src.SourceManufacturer = _source_manufacturer(model.description)
        src.ActiveSourceLength = ds_str(model.active_length_mm)
        src.SourceIsotopeName = "I-125" if model.radionuclide.upper().replace("-", "") == "I125" else model.radionuclide
        src.SourceIsotopeHalfLife = ds_str(model.half_life_d)
        src.SourceStrengthUnits = "AIR_KERMA_RATE"
        src.ReferenceAirKermaRate = ds_str(sk)
        if sk < 1.0:
            # SourceStrength (1C) is meant for non-photon sources (ReferenceAirKermaRate 0).  dciodvfy
            # (dicom3tools 2022) tests "is zero" on the integer-truncated rate, so it requires the
            # attribute for S_K < 1 U and rejects it otherwise; write the same S_K for those seeds.
            src.SourceStrength = ds_str(sk)
        src.SourceStrengthReferenceDate = ref_date
        src.SourceStrengthReferenceTime = ref_time
        src_seq.append(src)
    ds.SourceSequence = src_seq

    setup = Dataset()
    # no defined term fits a CT-guided (non-perineal) seed implant
    setup.ApplicationSetupType = "INTERSTITIAL"
    setup.ApplicationSetupNumber = 1
    setup.ApplicationSetupName = "CT-guided seed implant"
    setup.TotalReferenceAirKerma = ds_str(float(np.sum(s_implant)) * tau_h)
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
            ch.ChannelLength = ds_str(needle.depth_mm)
            ch.ChannelTotalTime = ds_str(len(group) * tau_s)
            ch.SourceMovementType = "FIXED"
            # the needle is the source applicator: a rigid applicator linked to its ROI
            ch.SourceApplicatorNumber = needle_no
            ch.SourceApplicatorID = Plan.needle_name(needle_no)[:16]
            ch.SourceApplicatorType = "RIGID"
            ch.SourceApplicatorLength = ds_str(needle.depth_mm)
            roi_no = (needle_roi_numbers or {}).get(needle_no)
            ch.ReferencedROINumber = None if roi_no is None else int(roi_no)
            ch.TransferTubeNumber = None
            ch.ReferencedSourceNumber = source_no
            ch.NumberOfControlPoints = 2 * len(group)
            ch.FinalCumulativeTimeWeight = ds_str(len(group))
            cps = Sequence()
            for i, s in enumerate(group):
                for j in (0, 1):
                    cp = Dataset()
                    cp.ControlPointIndex = 2 * i + j
                    cp.ControlPointRelativePosition = ds_str(s.retraction_mm)
                    cp.ControlPoint3DPosition = ds_list(s.position_mm)
                    cp.ControlPointOrientation = [float(v) for v in s.axis]
                    cp.CumulativeTimeWeight = ds_str(i + j)
                    cps.append(cp)
            ch.BrachyControlPointSequence = cps
            channels.append(ch)
    setup.ChannelSequence = channels
    ds.ApplicationSetupSequence = Sequence([setup])
    ds.ApprovalStatus = "UNAPPROVED"
    out = save_dataset(ds, path, "RTPLAN")
    return DicomExport(out, RT_PLAN_STORAGE, sop_uid, uids["rtplan_series"],
                       {"n_channels": channel_number, "n_sources": len(strengths), "channel_time_per_seed_s": tau_s})
