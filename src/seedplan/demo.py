"""``seedplan demo``: the whole chain on the built-in spine phantom.

Writes into the output folder:

* ``case/`` - the phantom as a DICOM CT series, RTSTRUCT, NIfTI label map and
  ``case.json`` (so ``seedplan plan OUT/case/case.json`` replans it);
* ``plan.json`` - the plan (needles, seeds, prescription, results);
* ``plan_table.csv`` - the treatment plan table for the CT room;
* ``dose.nrrd`` - the total dose (Gy) on a 1 mm grid around the target;
* ``metrics.json`` - the plan metrics;
* ``dvh.csv`` - cumulative DVHs in cm^3 and %;
* ``report.html`` - the printable plan report, with the slice views and the
  DVH as PNGs beside it;
* ``dicom/`` - RTPLAN, RTDOSE and RTSTRUCT referencing the CT in ``case/ct``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .io.case import load_case, write_case_file
from .io.plan_table import format_plan_table
from .outputs import write_plan_outputs


def run_demo(
    out_dir: Path,
    *,
    level: str = "L3",
    lesion_diameter_mm: float = 30.0,
    lesion_type: str = "lytic",
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Build the phantom, plan it, and write the outputs; returns the output folder."""
    from .imaging.phantom import export_phantom_case, make_spine_phantom
    from .planning.planner import plan_case

    say = progress or (lambda _m: None)
    out = Path(out_dir)
    say(f"building the spine phantom: {level}, {lesion_type} lesion of {lesion_diameter_mm:g} mm")
    ph = make_spine_phantom(level=level, lesion_diameter_mm=lesion_diameter_mm, lesion_type=lesion_type)
    written = export_phantom_case(ph, out / "case", progress=say)
    case_file = write_case_file(out / "case" / "case.json", ct=str(written["ct"]), rtstruct=str(written["rtstruct"]),
                                name=f"seedplan spine phantom {level} {lesion_type} {lesion_diameter_mm:g} mm")
    case = load_case(case_file)  # plan what a user would load: the exported DICOM CT and RTSTRUCT
    reference = dict(case.reference)
    reference["phantom"] = {"level": level, "lesion_diameter_mm": lesion_diameter_mm, "lesion_type": lesion_type}
    result = plan_case(case.ct, case.structures, case.prescription, case_reference=reference, progress=say)
    files = write_plan_outputs(result, out, ct=case.ct, structures=case.structures, progress=say)
    print(format_plan_table(result.plan))
    print()
    for label, path in files.items():
        print(f"{label}: {path}")
    return out
