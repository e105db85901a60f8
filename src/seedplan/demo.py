"""``seedplan demo``: the whole chain on the built-in spine phantom.

Writes into the output folder:

* ``case/`` - the phantom as a DICOM CT series, RTSTRUCT, NIfTI label map and
  ``case.json`` (so ``seedplan plan OUT/case/case.json`` replans it);
* ``plan.json`` - the plan (needles, seeds, prescription, seed model, cement, results);
* ``plan_table.csv`` and ``plan_summary.txt`` - the treatment plan table for the CT room;
* ``dose.nrrd`` - the total dose (Gy) on a 1 mm grid around the target;
* ``metrics.json`` - the plan metrics;
* ``dvh.csv`` - cumulative DVHs in cm^3 and %;
* ``report.html`` - the printable plan report, with the slice views, the
  DVH and the 3D views as PNGs beside it;
* ``dicom/`` - RTPLAN, RTDOSE and RTSTRUCT referencing the CT in ``case/ct``.
"""

from __future__ import annotations

import logging
from dataclasses import replace as dc_replace
from pathlib import Path

from .io.case import load_case, write_phantom_case
from .io.plan_table import format_plan_table
from .outputs import final_path, format_timings, output_folder, write_plan_outputs

__all__ = ["run_demo"]

log = logging.getLogger("seedplan")


def _reuse_case(phantom: object, earlier: Path, staging: Path) -> bool:
    """Link the earlier demo's case folder into the new one when it holds this very phantom (same CT series,
    same structure volumes, written by this version), instead of writing 100+ DICOM slices again."""
    import json
    import os
    import shutil

    from . import __version__
    from .io.case import phantom_info

    info = earlier / "phantom.json"
    try:
        old = json.loads(info.read_text())
    except (OSError, ValueError):
        return False
    if old != phantom_info(phantom, series_uid=phantom.ct.series_uid, version=__version__):
        return False

    def link(src: str, dst: str) -> str:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return dst

    shutil.copytree(earlier, staging, copy_function=link)
    log.info("reusing the phantom case of the earlier demo in %s (same phantom)", earlier)
    return True


#: Where the demo puts a sacral lesion: 5 mm anterior of the body's centre (LPS -y).  A lesion centred in
#: S1 or S2 reaches within 3-4 mm of the cauda equina in the sacral canal, where no seed plan gives the
#: lesion 120 Gy with the cauda's D0.1cc within 50 Gy; at 5 mm the S1 demo meets every goal.
SACRAL_LESION_OFFSET_MM = (0.0, -5.0, 0.0)


def demo_lesion_offsets(level: str) -> list[tuple[float, float, float]]:
    """The lesion centre offset of each level of ``level`` (``"L5,S1"``): sacral lesions sit anteriorly."""
    import re

    parts = [q.upper() for q in re.split(r"[,\s;+]+", str(level).strip()) if q]
    return [SACRAL_LESION_OFFSET_MM if q.startswith("S") else (0.0, 0.0, 0.0) for q in parts] or [(0.0, 0.0, 0.0)]


def run_demo(out_dir: Path, *, level: str = "L3", lesion_diameter_mm: float = 30.0,
             lesion_type: str = "lytic", timings: bool = False, dose_model: str = "tg43") -> Path:
    """Build the phantom, plan it, and write the outputs; returns the output folder.

    The folder is written all-or-nothing (:func:`~seedplan.outputs.output_folder`):
    a failed or interrupted demo leaves an earlier one as it was.  ``timings``: also
    print the time of each step.  ``dose_model="corrected"``: plan the seeds on the cement/bone-corrected
    dose (:class:`~seedplan.plan.PlanningOptions`), the TG-43 plan beside it in the report.
    """
    import time

    from .imaging.phantom import make_spine_phantom
    from .planning import plan_case

    out = Path(out_dir)
    t0 = time.perf_counter()
    with output_folder(out, what="demo") as staging:
        log.info("building the spine phantom: %s, %s lesion of %g mm", level, lesion_type, lesion_diameter_mm)
        ph = make_spine_phantom(level=level, lesion_diameter_mm=lesion_diameter_mm, lesion_type=lesion_type,
                                lesion_center_offset_mm=demo_lesion_offsets(level))
        if not _reuse_case(ph, out / "case", staging / "case"):
            write_phantom_case(ph, staging / "case")
        case = load_case(staging / "case" / "case.json")  # plan what a user would load: the DICOM CT and RTSTRUCT
        reference = dict(case.reference)
        reference["phantom"] = {"level": level, "lesion_diameter_mm": lesion_diameter_mm, "lesion_type": lesion_type,
                                "lesion_center_offset_mm": [list(o) for o in demo_lesion_offsets(level)]}
        t_case = time.perf_counter() - t0
        options = dc_replace(case.planning, dose_model=dose_model) if dose_model != case.planning.dose_model \
            else case.planning
        result = plan_case(case.ct, case.structures, case.prescription, options=options,
                           case_reference=reference)
        t = time.perf_counter()
        files = write_plan_outputs(result, staging, ct=case.ct, structures=case.structures)
        t_out = time.perf_counter() - t
    print(format_plan_table(result.plan))
    print()
    for label, path in files.items():
        print(f"{label}: {final_path(path, staging, out)}")
    if timings:
        print()
        print(format_timings({"phantom case": round(t_case, 3), **result.timings_s}, outputs_s=t_out))
        print(f"(whole demo {time.perf_counter() - t0:.1f} s)")
    return out
