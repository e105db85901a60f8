"""The output folder of a planning run: plan, table, dose volume and metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._atomic import write_text_atomic
from .io.plan_table import write_plan_table_csv
from .io.volumes import write_volume
from .plan import save_plan


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_metrics(metrics: dict, path: Path) -> Path:
    """Write the metrics dictionary as JSON, atomically."""
    return write_text_atomic(path, json.dumps(metrics, indent=1, default=_json_default, allow_nan=True) + "\n")


def write_dvh_csv(evaluation: Any, prescription_Gy: float, path: Path) -> Path:
    """Cumulative DVHs (cm^3 and %) of every evaluated structure, 1 % of PD bins up to 5 x PD, as CSV."""
    step = 0.01 * prescription_Gy
    edges = np.arange(0.0, 5.0 * prescription_Gy + step / 2, step)
    lines = ["structure,dose_Gy,volume_cm3,volume_pct"]
    for name, dvh in evaluation.dvhs.items():
        d, v, p = dvh.cumulative(edges)
        lines += [f"{name},{a:.3f},{b:.5f},{c:.4f}" for a, b, c in zip(d, v, p)]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def write_plan_outputs(
    result: Any,
    out_dir: Path,
    *,
    ct: Any = None,
    structures: Any = None,
    review: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write the output folder of a :class:`~seedplan.planning.planner.PlanningResult`.

    Always ``plan.json``, ``plan_table.csv``, ``dose.nrrd``, ``metrics.json`` and
    ``dvh.csv``; ``cement.nrrd`` (the simulated cement, 0/1 on the CT grid) when cement was planned.
    With the CT and structures (and ``review``), also the 3D views ``view3d_*.png``, the slice and
    DVH PNGs, ``report.html`` and the DICOM RT export in ``dicom/``.
    """
    say = progress or (lambda _m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "plan": save_plan(result.plan, out / "plan.json"),
        "plan_table": write_plan_table_csv(result.plan, out / "plan_table.csv"),
        "dose": write_volume(result.dose_grid, result.dose_Gy, out / "dose.nrrd"),
        "metrics": write_metrics(dict(result.plan.results), out / "metrics.json"),
        "dvh": write_dvh_csv(result.evaluation, result.plan.prescription.dose_Gy, out / "dvh.csv"),
    }
    cement = getattr(result, "cement", None)
    if cement is not None and ct is not None:
        files["cement"] = write_volume(ct.grid, cement.result.mask.astype(np.uint8), out / "cement.nrrd")
    if review and ct is not None and structures is not None:
        from .imaging.structures import StructureSet
        from .io.dicom_rt import export_plan_dicom
        from .io.report import write_plan_report

        from .viz.scene import render_views

        cement_s = cement.structure(ct.grid) if cement is not None else None
        say("rendering the 3D views (off-screen)")
        views = render_views(result.plan, ct, structures, out, result.dose_grid, result.dose_Gy, cement=cement_s)
        files.update({f"view3d_{k}": v for k, v in views.items()})
        if cement_s is not None and "cement" not in structures:  # outlined in the slices, exported in RTSTRUCT
            structures = StructureSet([*structures.values(), cement_s])

        say("exporting DICOM RT (RTPLAN, RTDOSE, RTSTRUCT)")
        dicom = export_plan_dicom(result.plan, out / "dicom", ct=ct, structures=structures,
                                  dose=(result.dose_grid, result.dose_Gy))
        files.update({f"dicom_{k}": v for k, v in dicom.items()})
        say("rendering slice views, DVH and report.html")
        report = write_plan_report(result, ct, structures, out, images={f"3D {k} view": v for k, v in views.items()})
        files.update({(k if k not in files else f"{k}_png"): v for k, v in report.items()})
    say(f"wrote {len(files)} files to {out}")
    return files
