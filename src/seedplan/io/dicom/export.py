"""All three DICOM RT objects of a plan, referencing each other and the planning CT."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...geometry import Grid
from ...imaging.ct import CTImage
from ...imaging.structures import StructureSet
from ...plan import OAR_REACH_MM, Plan, dose_region, plan_dose_grid, plan_structures
from ..case import load_plan_case
from ._common import require_ct_uids
from .ct_series import write_ct_dicom_series
from .rtdose import export_rtdose
from .rtplan import export_rtplan
from .rtstruct import export_rtstruct

__all__ = ["export_plan_dicom"]

log = logging.getLogger("seedplan")


def export_plan_dicom(
    plan: Plan,
    out_dir: str | os.PathLike[str],
    *,
    ct: CTImage | None = None,
    structures: StructureSet | None = None,
    dose: tuple[Grid, Any] | None = None,
    bits: int = 16,
    dose_spacing_mm: float = 1.0,
    oar_reach_mm: float = OAR_REACH_MM,
    ct_series: bool | None = None,
) -> dict[str, Path]:
    """Write ``RTSTRUCT.dcm``, ``RTPLAN.dcm`` and ``RTDOSE.dcm`` for a plan.

    Parameters
    ----------
    plan : Plan
    out_dir : path-like
        Output folder (created).
    ct, structures : optional
        The planning CT and structures; loaded from the plan's case when None.
        The plan's derived structures and its cement are added to the RTSTRUCT.
    dose : (Grid, ndarray), optional
        Dose grid and total dose in Gy; computed with
        :func:`~seedplan.plan.plan_dose_grid` on the CT grid when None, covering the
        target, the seeds and every organ at risk within ``oar_reach_mm`` of a seed.
    bits : {16, 32}
        RTDOSE integer size.
    dose_spacing_mm : float
        Spacing of the computed dose grid.
    oar_reach_mm : float
        See ``dose``.
    ct_series : bool, optional
        Also write the CT as a DICOM series (``ct/``), which the RT objects then
        reference.  Default: when the plan's CT is not a DICOM series (a NIfTI,
        NRRD or MHA file).

    Returns
    -------
    dict
        ``{"rtstruct": path, "rtplan": path, "rtdose": path}`` (and ``"ct"``: the folder).
    """
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
        ct, ct_source = case.ct, Path(case.reference["ct"])
        if structures is None:
            structures = case.structures
    else:
        require_ct_uids(ct, "export_plan_dicom")
        expected = plan.case.get("ct_series_uid")
        if expected and ct.series_uid != expected:
            warnings.warn(f"export_plan_dicom: the CT series {ct.series_uid} is not the plan's CT series {expected}",
                          stacklevel=2)
        if structures is None and plan.case.get("case_file") and Path(str(plan.case["case_file"])).is_file():
            structures = load_plan_case(plan).structures
    require_ct_uids(ct, "export_plan_dicom")
    if dose is None:
        log.info("computing the dose of %d seeds on a %g mm grid", plan.n_seeds, dose_spacing_mm)
        region = dose_region(plan, structures if structures is not None else StructureSet(), ct.grid,
                             reach_mm=oar_reach_mm)
        grid, dose_Gy = plan_dose_grid(plan, ct.grid, region, spacing_mm=dose_spacing_mm)
    else:
        try:
            grid, dose_Gy = dose
        except (TypeError, ValueError):
            raise InputError("export_plan_dicom: dose must be a (Grid, dose_Gy array) pair") from None
    if structures is not None:
        structures = plan_structures(plan, structures, cement=True)
        if structures.grid is not None and not structures.grid.same_geometry(ct.grid):
            structures = structures.resampled(ct.grid)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    source = Path(str(plan.case.get("ct", ""))) if plan.case.get("ct") else None
    if ct_series is None:
        ct_series = source is not None and source.exists() and not source.is_dir()
    if ct_series:  # a NIfTI/NRRD/MHA CT: write it as the DICOM series the RT objects reference
        log.info("writing the CT as a DICOM series (%d slices) to %s", ct.grid.size[2], out / "ct")
        ct = write_ct_dicom_series(ct, out / "ct", series_description=ct.description or "seedplan CT")
        ct_source, written["ct"] = out / "ct", out / "ct"
    log.info("writing DICOM RT to %s", out)
    rs = export_rtstruct(plan, ct, structures, out / "RTSTRUCT.dcm", ct_source=ct_source)
    rp = export_rtplan(plan, ct, out / "RTPLAN.dcm", rtstruct_uid=rs.sop_instance_uid,
                       needle_roi_numbers=rs.info["needle_roi_numbers"], target_roi_number=rs.info["target_roi_number"],
                       ct_source=ct_source)
    rd = export_rtdose(plan, grid, dose_Gy, ct, out / "RTDOSE.dcm", bits=bits, rtplan_uid=rp.sop_instance_uid,
                       ct_source=ct_source)
    return {**written, "rtstruct": rs.path, "rtplan": rp.path, "rtdose": rd.path}
