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
from pathlib import Path

from .io.case import load_case, write_phantom_case
from .io.plan_table import format_plan_table
from .outputs import final_path, output_folder, write_plan_outputs

__all__ = ["run_demo"]

log = logging.getLogger("seedplan")


def run_demo(out_dir: Path, *, level: str = "L3", lesion_diameter_mm: float = 30.0,
             lesion_type: str = "lytic") -> Path:
    """Build the phantom, plan it, and write the outputs; returns the output folder.

    The folder is written all-or-nothing (:func:`~seedplan.outputs.output_folder`):
    a failed or interrupted demo leaves an earlier one as it was.
    """
    from .imaging.phantom import make_spine_phantom
    from .planning import plan_case

    out = Path(out_dir)
    with output_folder(out, what="demo") as staging:
        log.info("building the spine phantom: %s, %s lesion of %g mm", level, lesion_type, lesion_diameter_mm)
        ph = make_spine_phantom(level=level, lesion_diameter_mm=lesion_diameter_mm, lesion_type=lesion_type)
        written = write_phantom_case(ph, staging / "case")
        case = load_case(written["case"])  # plan what a user would load: the exported DICOM CT and RTSTRUCT
        reference = dict(case.reference)
        reference["phantom"] = {"level": level, "lesion_diameter_mm": lesion_diameter_mm, "lesion_type": lesion_type}
        result = plan_case(case.ct, case.structures, case.prescription, options=case.planning,
                           case_reference=reference)
        files = write_plan_outputs(result, staging, ct=case.ct, structures=case.structures)
    print(format_plan_table(result.plan))
    print()
    for label, path in files.items():
        print(f"{label}: {final_path(path, staging, out)}")
    return out
