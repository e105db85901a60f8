"""The output folder of a planning run: plan, table, dose volume, metrics, review images, report and DICOM RT."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ._atomic import atomic_folder, write_text_atomic
from .errors import InputError
from .io.plan_table import write_plan_summary, write_plan_table_csv
from .io.volumes import write_volume
from .plan import plan_structures, save_plan

__all__ = ["output_folder", "write_plan_outputs", "write_postplan_outputs", "write_metrics", "write_dvh_csv",
           "metrics_json", "MARKER"]

log = logging.getLogger("seedplan")

#: The file that marks a folder seedplan wrote (and may therefore replace as a whole).
MARKER = ".seedplan"


def _seedplan_folder(folder: Path) -> bool:
    """True for a folder seedplan may replace: missing, empty, or written by seedplan (a plan or a DICOM export)."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    return (not any(folder.iterdir()) or any((folder / f).is_file() for f in (MARKER, "plan.json", "RTPLAN.dcm")))


@contextlib.contextmanager
def output_folder(out: str | os.PathLike[str], *, update: bool = False, what: str = "output",
                  inputs: tuple[str | os.PathLike[str], ...] = ()) -> Iterator[Path]:
    """An output folder written all-or-nothing (:func:`seedplan._atomic.atomic_folder`).

    Yields the staging folder; when the ``with`` body returns, it replaces ``out``
    as a whole (``update``: starting from a copy of ``out``, for commands that add
    or replace a few files).  A failed or interrupted run leaves ``out`` as it
    was, and two runs into one folder cannot interleave.

    Parameters
    ----------
    update : bool
        Keep the files of ``out`` that this run does not write.
    what : str
        What the folder is, for messages ("output", "DICOM export"...).
    inputs : paths
        Files this run reads: refused when they lie inside ``out`` (replacing the
        folder would delete them).

    Raises
    ------
    InputError
        ``out`` is an existing folder seedplan did not write (it would be replaced
        as a whole), or it holds one of ``inputs``.
    """
    dest = Path(out)
    real = Path(os.path.realpath(dest))
    if not update:
        for f in inputs:
            if Path(os.path.realpath(f)).is_relative_to(real):
                raise InputError(f"the {what} folder {dest} holds {f}, which this run reads; the folder is replaced "
                                 "as a whole: choose another output folder")
        if not _seedplan_folder(real):
            raise InputError(f"the {what} folder {dest} exists and holds files seedplan did not write; it would be "
                             "replaced as a whole: choose a new or empty folder")
    with atomic_folder(real, update=update) as staging:
        yield staging
        write_text_atomic(staging / MARKER, f"written by seedplan: {what}\n")


def format_timings(timings_s: dict, outputs_s: float | None = None) -> str:
    """The time of each planning step (and of writing the outputs) as a small table."""
    rows = [(k, v) for k, v in timings_s.items() if k != "total"]
    if outputs_s is not None:
        rows.append(("outputs (files, views, report, DICOM)", outputs_s))
    total = float(timings_s.get("total", 0.0)) + (outputs_s or 0.0)
    width = max(len(k) for k, _ in rows + [("total", 0)])
    lines = [f"{'step'.ljust(width)}  seconds"] + [f"{k.ljust(width)}  {v:7.2f}" for k, v in rows]
    return "\n".join(lines + [f"{'total'.ljust(width)}  {total:7.2f}"])


def final_path(path: Path, staging: Path, out: str | os.PathLike[str]) -> Path:
    """Where ``path`` (written below ``staging``) is once the staging folder has replaced ``out``."""
    try:
        return Path(out) / Path(path).relative_to(staging)
    except ValueError:
        return Path(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def metrics_json(metrics: dict) -> str:
    """The text of ``metrics.json``: a function of the metrics only (same metrics, same bytes)."""
    return json.dumps(metrics, indent=1, default=_json_default, allow_nan=True) + "\n"


def write_metrics(metrics: dict, path: Path) -> Path:
    """Write the metrics dictionary as JSON, atomically."""
    return write_text_atomic(path, metrics_json(metrics))


def write_dvh_csv(evaluation: Any, prescription_Gy: float, path: Path) -> Path:
    """Cumulative DVHs (cm^3 and %) of every evaluated structure, 1 % of PD bins up to 5 x PD, as CSV."""
    step = 0.01 * prescription_Gy
    edges = np.arange(0.0, 5.0 * prescription_Gy + step / 2, step)
    lines = ["structure,dose_Gy,volume_cm3,volume_pct"]
    for name, dvh in evaluation.dvhs.items():
        d, v, p = dvh.cumulative(edges)
        lines += [f"{name},{a:.3f},{b:.5f},{c:.4f}" for a, b, c in zip(d, v, p)]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def write_plan_outputs(result: Any, out_dir: Path, *, ct: Any = None, structures: Any = None,
                       review: bool = True) -> dict[str, Path]:
    """Write the output folder of a :class:`~seedplan.planning.PlanningResult`.

    Always ``plan.json``, ``plan_table.csv``, ``plan_summary.txt``, ``dose.nrrd``,
    ``metrics.json`` and ``dvh.csv``; ``cement.nrrd`` (the planned cement, 0/1
    on the CT grid) when cement was planned.  With the CT and structures (and
    ``review``), also the 3D views ``view3d_*.png``, the slice and DVH PNGs,
    ``report.html`` and the DICOM RT export in ``dicom/``; on Linux with two cores or more the 3D views
    are rendered in a forked child process meanwhile (:mod:`seedplan._forked`).
    """
    plan = result.plan
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "plan": save_plan(plan, out / "plan.json"),
        "plan_table": write_plan_table_csv(plan, out / "plan_table.csv"),
        "plan_summary": write_plan_summary(plan, out / "plan_summary.txt"),
        "dose": write_volume(result.dose_grid, result.dose_Gy, out / "dose.nrrd"),
        "metrics": write_metrics(dict(plan.results), out / "metrics.json"),
        "dvh": write_dvh_csv(result.evaluation, plan.prescription.dose_Gy, out / "dvh.csv"),
    }
    if plan.cement is not None:
        files["cement"] = write_volume(plan.cement.grid, plan.cement.mask.astype(np.uint8), out / "cement.nrrd")
    if review and ct is not None and structures is not None:
        from ._forked import forked_call
        from .io.dicom import export_plan_dicom
        from .io.report import write_plan_figures, write_plan_report
        from .viz.scene import render_views

        shown = plan_structures(plan, structures, cement=True)  # outlined in the slices, exported in RTSTRUCT
        log.info("rendering the 3D views (off-screen)")
        # the 3D views (VTK) in a child process on the other core while this one writes DICOM and the figures;
        # in this process when that is not possible (VTK already loaded here, one core, other threads...)
        with forked_call(render_views, plan, ct, plan_structures(plan, structures), out, result.dose_grid,
                         result.dose_Gy, cement=None if plan.cement is None else plan.cement.structure(),
                         avoid_modules=("vtkmodules",)) as views_call:
            log.info("exporting DICOM RT (RTPLAN, RTDOSE, RTSTRUCT)")
            dicom = export_plan_dicom(plan, out / "dicom", ct=ct, structures=structures,
                                      dose=(result.dose_grid, result.dose_Gy))
            log.info("rendering slice views, DVH and report.html")
            figures = write_plan_figures(result, ct, shown, out)
            views = views_call.result()
        files.update({f"view3d_{k}": v for k, v in views.items()})
        files.update({f"dicom_{k}": v for k, v in dicom.items()})
        report = write_plan_report(result, ct, shown, out, images={f"3D {k} view": v for k, v in views.items()},
                                   figures=figures)
        files.update({(k if k not in files else f"{k}_png"): v for k, v in report.items()})
    log.info("wrote %d files to %s", len(files), out)
    return files


def write_postplan_outputs(plan: Any, case: Any, later_ct: Any, registration: Any, seeds: Any,
                           record: dict, out_dir: Path) -> dict[str, Path]:
    """The post-implant dosimetry folder: the plan as delivered and what it delivered, beside the plan.

    Writes ``postplan.json`` (registration, seeds found in planning coordinates, matched, missing and extra
    seeds, cement), ``delivered_plan.json``, ``metrics.json`` (the plan's layout for the delivered dose, with a
    ``comparison`` block), ``dose.nrrd``, ``dvh.csv``, ``report.html`` with slice views of the post-operative
    CT (in the planning frame) under the seeds found, ``registration_check.png`` and ``dicom/`` (RTSTRUCT,
    RTPLAN and RTDOSE of the delivered dose, on the planning CT).
    """
    from dataclasses import replace
    from types import SimpleNamespace

    from .imaging.ct import CTImage
    from .io.dicom import export_plan_dicom
    from .io.report import write_plan_report
    from .plan import corrected_dose_metrics, dose_region, evaluate_plan, plan_dose_grid, plan_metrics
    from .verification import comparison, delivered_plan
    from .verification._frames import inverse, resample_hu

    out = Path(out_dir)
    delivered = delivered_plan(plan, seeds)
    log.info("evaluating the delivered dose")
    ev = evaluate_plan(delivered, case.structures)
    corrected = corrected_dose_metrics(delivered, case.ct, case.structures) if delivered.cement is not None else None
    metrics = plan_metrics(delivered, ev, corrected=corrected)
    metrics["comparison"] = comparison(plan.results, metrics)
    delivered = replace(delivered, results=metrics, history={"postplan": record})
    grid, dose = plan_dose_grid(delivered, case.ct.grid, dose_region(delivered, case.structures, case.ct.grid))
    files = {
        "postplan": write_text_atomic(out / "postplan.json", json.dumps(record, indent=1) + "\n"),
        "delivered_plan": save_plan(delivered, out / "delivered_plan.json"),
        "metrics": write_metrics(metrics, out / "metrics.json"),
        "dose": write_volume(grid, dose, out / "dose.nrrd"),
        "dvh": write_dvh_csv(ev, plan.prescription.dose_Gy, out / "dvh.csv"),
        "registration_check": registration.check_image(later_ct, case.ct, out / "registration_check.png"),
    }
    post = CTImage(case.ct.grid, resample_hu(later_ct, case.ct.grid, inverse(registration.matrix)),
                   description="post-operative CT in the planning frame")
    result = SimpleNamespace(plan=delivered, dose_grid=grid, dose_Gy=dose, evaluation=ev)
    log.info("rendering the slice views over the post-operative CT and report.html")
    shown = plan_structures(delivered, case.structures)
    report = write_plan_report(result, post, shown, out)
    files.update({(k if k not in files else f"{k}_png"): v for k, v in report.items()})
    log.info("exporting DICOM RT of the delivered dose")
    dicom = export_plan_dicom(delivered, out / "dicom", ct=case.ct, structures=case.structures, dose=(grid, dose))
    files.update({f"dicom_{k}": v for k, v in dicom.items()})
    return files
