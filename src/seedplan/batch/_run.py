"""Plan many cases as Dask tasks: a cohort of case files, or one case over a sweep table.

:func:`run_batch` names a folder per case (``OUT/<case>/``), checks a sweep
table before anything runs, skips the cases already planned with the same
inputs, submits one task per remaining case and writes ``OUT/summary.csv``
(one row per case, in the order given).  A task loads its case on the worker
(only the path and a few numbers travel), plans it, writes its folder
all-or-nothing (:func:`~seedplan.outputs.output_folder`, as ``seedplan plan``)
and returns a small row; any error of the case becomes that row's one-line
``error`` and the others go on.

Without a scheduler address the tasks run on a :class:`distributed.LocalCluster`
of this machine (:mod:`seedplan._dask`); with one, on that cluster.  When a
worker dies (killed, out of memory, its node lost) the scheduler runs its cases
again on the other workers; a case folder being written by the dead worker
never appears half-written (the retry replaces the leftover staging folder).
A case that kills its worker again and again (``distributed.scheduler.allowed-failures``,
3 by default) fails alone with ``KilledWorker``.

Resume.  Each case folder holds ``batch.json`` with the SHA-256 of the case's
inputs: the case file's path and bytes, the path, size and modification time
of every file it refers to (CT, structures, seed model file, ``phantom.json``),
the sweep parameters, whether the review outputs were asked for and the
seedplan version.  A case whose folder holds the same hash is not planned
again: its row is read back from its ``metrics.json`` (``force`` plans it
anyway).  A failed case leaves no folder (or its earlier one) and runs again.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import _validate as v
from .._atomic import read_json, write_text_atomic
from .._dask import QuietDask, cluster_arguments, default_workers, open_client
from ..errors import InputError, InputTypeError, SeedplanError
from ._sweep import phantom_recipe, read_sweep, variant_prescription, write_variant_phantom

__all__ = ["BatchResult", "run_batch", "COLUMNS", "SUMMARY", "RECORD"]

log = logging.getLogger("seedplan")

#: The summary file in the output folder.
SUMMARY = "summary.csv"
#: The record of a case's run in its folder (its inputs' hash, its time).
RECORD = "batch.json"
FORMAT = "seedplan-batch-case"
VERSION = 1

#: The columns of the summary (a sweep adds ``sweep_<column>`` for each of its parameters).
COLUMNS = ("case", "status", "goals_met", "failed_goals", "prescription_Gy", "D90_Gy", "V100_pct", "oar",
           "oar_D0.1cc_Gy", "seeds", "activity_mCi", "total_activity_mCi", "needles", "time_s", "error",
           "case_file", "folder")


@dataclass(frozen=True, eq=False)
class BatchResult:
    """The rows of a batch and where its summary is.

    Attributes
    ----------
    rows : tuple of dict
        One per case, in the order given: the :data:`COLUMNS` (and ``sweep_<column>`` of a sweep).
        ``status`` is ``"planned"``, ``"skipped"`` (done earlier with the same inputs) or ``"failed"``
        (``error`` says why, in one line).
    summary_csv : Path
        ``OUT/summary.csv``: the rows as CSV.
    run : dict
        How the run went: cases planned, skipped and failed, workers, scheduler, seconds.
    """

    rows: tuple[Mapping[str, Any], ...]
    summary_csv: Path
    run: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[Mapping[str, Any], ...]:
        """The rows of the cases that failed."""
        return tuple(r for r in self.rows if r["status"] == "failed")

    def row(self, case: str) -> Mapping[str, Any]:
        """The row of one case (its folder name)."""
        for r in self.rows:
            if r["case"] == case:
                return r
        raise InputError(f"no case {case!r} in this batch; its cases are {', '.join(r['case'] for r in self.rows)}")

    def table(self) -> str:
        """The summary as a text table, one line per case (a failed case: its error)."""
        head = ("case", "status", "goals", "D90 Gy", "V100 %", "OAR D0.1cc Gy", "seeds", "mCi", "time s")
        done = {r["case"]: (r["case"], r["status"], "met" if r["goals_met"] else "missed", _fmt(r["D90_Gy"], 1),
                            _fmt(r["V100_pct"], 1),
                            f"{_fmt(r['oar_D0.1cc_Gy'], 1)} ({r['oar']})" if r["oar"] else "-", str(r["seeds"]),
                            _fmt(r["activity_mCi"], 3), _fmt(r["time_s"], 1))
                for r in self.rows if r["status"] != "failed"}
        widths = [max(len(cells[i]) for cells in [head, *done.values(), *((r["case"], "failed") for r in self.failed)]
                      if i < len(cells)) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)).rstrip()]
        for r in self.rows:
            cells = done.get(r["case"]) or (r["case"], "failed", f"error: {r['error']}")
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
        return "\n".join(lines)


def _fmt(x: Any, digits: int) -> str:
    return "-" if not isinstance(x, (int, float)) or not math.isfinite(x) else f"{x:.{digits}f}"


@dataclass(frozen=True)
class _Job:
    """What a task needs: paths and a few numbers (the worker reads the case itself)."""

    name: str
    case_file: str
    folder: str
    variant: Mapping[str, float]
    phantom: Mapping[str, Any] | None
    review: bool
    inputs_sha256: str


# ------------------------------------------------------------------------------------ the cases
def _case_name(path: Path) -> str:
    """A case's folder name: the case file's name, or its folder's for the usual ``case.json``."""
    name = path.stem
    if name.lower() == "case":
        name = path.parent.name or name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "case"


def _referenced(case_file: Path) -> list[Path]:
    """The files and folders a case file refers to (as far as it can be read; a bad one fails in its task)."""
    try:
        data = json.loads(case_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    refs: list[Any] = [data.get("ct"), "phantom.json"]
    st = data.get("structures")
    if isinstance(st, dict):
        refs += [st.get(k) for k in ("rtstruct", "label_map", "legend", "totalsegmentator")]
        if isinstance(st.get("masks"), list):
            refs += [m.get("path") for m in st["masks"] if isinstance(m, dict)]
    presc = data.get("prescription")
    if isinstance(presc, dict) and str(presc.get("seed_model", "")).lower().endswith(".json"):
        refs.append(presc["seed_model"])
    return [case_file.parent / r for r in refs if isinstance(r, str) and r]


def _identity(path: Path) -> list[Any]:
    """Path, size and modification time of a file, or of every file below a folder."""
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(f), None, None])
    return out


def _inputs_sha256(case_file: Path, variant: Mapping[str, float], review: bool) -> str:
    from .. import __version__

    try:
        content = hashlib.sha256(case_file.read_bytes()).hexdigest()
    except OSError:
        content = None
    key = {"case_file": str(case_file), "case_sha256": content, "review": review, "seedplan": __version__,
           "files": [_identity(p) for p in _referenced(case_file)], "variant": dict(variant)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()


def _jobs(cases: Sequence[Path], out: Path, sweep: Any, review: bool) -> tuple[list[_Job], tuple[str, ...]]:
    """The batch's tasks and the sweep's parameter columns; every input error is raised here, before any task."""
    if not cases:
        raise InputError("give one or more case files")
    for p in cases:
        if not p.is_file():
            raise InputError(f"case file {p} does not exist" + ("" if not p.is_dir() else
                             " (it is a folder; give its case file, e.g. case.json)"))
    files = [Path(os.path.abspath(p)) for p in cases]

    def job(name: str, case_file: Path, variant: dict[str, float], recipe: Mapping[str, Any] | None) -> _Job:
        return _Job(name, str(case_file), os.path.realpath(out / name), variant, recipe, review,
                    _inputs_sha256(case_file, variant, review))

    if sweep is None:
        jobs, params = [job(_case_name(f), f, {}, None) for f in files], ()
    else:
        if len(files) != 1:
            raise InputError(f"a sweep table varies one case; got {len(files)} case files (give one case file "
                             "with --sweep, or several without)")
        params, variants = read_sweep(sweep, _case_name(files[0]))
        recipe = phantom_recipe(files[0]) if "lesion_diameter_mm" in params else None
        jobs = [job(name, files[0], values, recipe if "lesion_diameter_mm" in values else None)
                for name, values in variants]
    first: dict[str, _Job] = {}
    for j in jobs:
        if j.name in first:
            raise InputError(f"case files {first[j.name].case_file} and {j.case_file} would both be written to "
                             f"{out / j.name}; rename one of them")
        first[j.name] = j
    return jobs, params


# ------------------------------------------------------------------------------------------ rows
def _row(job: _Job, status: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(case=job.name, status=status, case_file=job.case_file, folder=job.folder, error="")
    row.update(values)
    row.update({f"sweep_{c}": x for c, x in job.variant.items()})
    return row


def _summary(folder: Path) -> dict[str, Any]:
    """The summary values of a plan folder, from its ``metrics.json`` (and the prescription in ``plan.json``).

    ``oar`` is the organ at risk with the highest D0.1cc among those the prescription limits by D0.1cc (the
    cord, cauda equina and sacral roots by default), or among all organs at risk when none is limited.
    """
    from ..plan import Prescription

    m = read_json(folder / "metrics.json", "metrics file")
    plan = read_json(folder / "plan.json", "plan file")
    if not isinstance(m, dict) or not isinstance(plan, dict):
        raise InputError(f"{folder}: metrics.json and plan.json must be JSON objects")
    presc = Prescription.from_dict(plan.get("prescription") or {})
    organs = {**(m.get("oars") or {}), **(m.get("avoidance") or {})}
    limited = {n: o for n, o in organs.items() if "D0.1cc_Gy" in presc.limits_for(n)} or organs

    def d01(name: str) -> float:
        x = limited[name].get("D0.1cc_Gy")
        return float(x) if isinstance(x, (int, float)) else -math.inf

    oar = max(limited, key=d01, default="")
    target, seeds = m.get("target") or {}, m.get("seeds") or {}
    failed = list(m.get("failed_goals") or [])
    return {"goals_met": not failed, "failed_goals": "; ".join(failed), "prescription_Gy": m.get("prescription_Gy"),
            "D90_Gy": target.get("D90_Gy"), "V100_pct": target.get("V100_pct"), "oar": oar,
            "oar_D0.1cc_Gy": limited[oar].get("D0.1cc_Gy") if oar else None, "seeds": seeds.get("count"),
            "activity_mCi": seeds.get("activity_mCi"), "total_activity_mCi": seeds.get("total_activity_mCi"),
            "needles": (m.get("needles") or {}).get("count")}


def _done(job: _Job) -> dict[str, Any] | None:
    """The row of a case planned earlier with the same inputs (None: plan it)."""
    folder = Path(job.folder)
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("inputs_sha256") != job.inputs_sha256:
            return None
        return _row(job, "skipped", time_s=record.get("time_s"), **_summary(folder))
    except (OSError, ValueError, TypeError, AttributeError, SeedplanError):  # missing, or not as batch writes it
        return None


def _message(exc: BaseException) -> str:
    """An error in one line, as the command line prints it."""
    if isinstance(exc, SeedplanError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = f"{exc.strerror or exc}" + (f" ({exc.filename})" if getattr(exc, "filename", None) else "")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------ task
def _plan_task(job: _Job) -> dict[str, Any]:
    """A Dask task: plan one case into its folder; any error of the case becomes its row's ``error``."""
    import numba

    numba.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        return _plan(job, t0)
    except Exception as exc:  # one case never stops the batch
        return _row(job, "failed", error=_message(exc), time_s=round(time.perf_counter() - t0, 2))


def _plan(job: _Job, t0: float) -> dict[str, Any]:
    from .. import __version__
    from ..io import load_case
    from ..outputs import output_folder, write_plan_outputs
    from ..planning import plan_case

    case_file = Path(job.case_file)
    case = None if job.phantom is not None else load_case(case_file)
    inputs = (case_file,) if case is None else (case_file, case.reference["ct"])
    with output_folder(job.folder, what=f"batch case {job.name}", inputs=inputs) as staging:
        if case is None:  # the phantom with this lesion, written beside the plan (its case reference)
            case = load_case(write_variant_phantom(case_file, job.phantom or {}, job.variant["lesion_diameter_mm"],
                                                   staging / "case"))
        presc = variant_prescription(case.prescription, job.variant)
        result = plan_case(case.ct, case.structures, presc, options=case.planning, case_reference=case.reference)
        write_plan_outputs(result, staging, ct=case.ct, structures=case.structures, review=job.review)
        values = _summary(staging)
        time_s = round(time.perf_counter() - t0, 2)
        record = {"format": FORMAT, "version": VERSION, "seedplan_version": __version__, "case": job.name,
                  "case_file": job.case_file, "variant": dict(job.variant), "review": job.review,
                  "inputs_sha256": job.inputs_sha256, "time_s": time_s, "timings_s": dict(result.timings_s)}
        write_text_atomic(staging / RECORD, json.dumps(record, indent=1) + "\n")
    return _row(job, "planned", time_s=time_s, **values)


# ------------------------------------------------------------------------------------------- run
def run_batch(
    cases: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    sweep: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    processes: bool = True,
    force: bool = False,
    review: bool = True,
) -> BatchResult:
    """Plan many cases (or one case over a sweep table) as Dask tasks, one output folder per case.

    Parameters
    ----------
    cases : path or sequence of paths
        Case files (``seedplan-case/1`` JSON).  Each is written to ``out_dir/<name>/``, ``<name>`` being the
        case file's name without ``.json`` (its folder's name for a file called ``case.json``).
    out_dir : path
        The batch folder: a folder per case and ``summary.csv``.
    sweep : path or sequence of mappings, optional
        A sweep table (CSV) of variants of the one case (:func:`~seedplan.batch.read_sweep`): columns
        ``name``, ``dose_Gy``, ``activity_mCi`` (a fixed seed activity), ``lesion_diameter_mm`` (phantom
        cases), or any other number of the prescription.  Checked before any task starts.
    workers : int, optional
        Workers of the local cluster (default: the usable cores, at most one per case to plan).
        Not with ``scheduler`` or ``client``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``) to run on instead of a local cluster;
        its workers need seedplan and must see the case files and ``out_dir`` at the same paths.
    client : distributed.Client, optional
        A client to use as it is (not closed afterwards).
    processes : bool
        Local cluster of processes (default) or of threads in this process.
    force : bool
        Plan every case, even those already planned with the same inputs.
    review : bool
        Also write each case's 3D views, report and DICOM RT export, as ``seedplan plan`` does (default);
        ``False`` writes the plan, table, dose, metrics and DVH only.

    Returns
    -------
    BatchResult

    Raises
    ------
    InputError
        A missing case file, an invalid sweep table, two cases with one folder name, a scheduler that does
        not answer, invalid arguments.  Errors of a case (a missing CT, an invalid prescription, a plan
        that cannot be made...) do not raise: they are that case's ``error``.
    """
    paths = [cases] if isinstance(cases, (str, os.PathLike)) else list(cases)
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise InputTypeError(f"cases must be case file paths, got {type(p).__name__} {p!r}")
    workers, scheduler = cluster_arguments(workers, scheduler, client)
    for name, x in (("processes", processes), ("force", force), ("review", review)):
        v.flag(x, name)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"the batch folder {out} exists and is not a folder; give a folder for the case folders "
                         "and summary.csv")
    t0 = time.perf_counter()
    jobs, params = _jobs([Path(p) for p in paths], out, sweep, review)
    out.mkdir(parents=True, exist_ok=True)

    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        row = None if force else _done(job)
        if row is None:
            todo.append(job)
        else:
            rows[job.name] = row
            log.info("batch: %s: planned earlier with the same inputs, skipped", job.name)
    run: dict[str, Any] = {"workers": 0, "scheduler": None}
    if todo:
        quiet = QuietDask() if client is None and scheduler is None else contextlib.nullcontext()
        with quiet:
            rows.update(_submit(todo, workers, scheduler, client, processes, run))
    ordered = tuple(rows[j.name] for j in jobs)
    columns = COLUMNS + tuple(f"sweep_{c}" for c in params)
    summary = _write_summary(out / SUMMARY, ordered, columns)
    counts = {s: sum(r["status"] == s for r in ordered) for s in ("planned", "skipped", "failed")}
    run.update(counts, total_s=round(time.perf_counter() - t0, 2))
    log.info("batch: %d case(s): %d planned, %d skipped (done earlier), %d failed, in %.1f s; summary %s",
             len(ordered), counts["planned"], counts["skipped"], counts["failed"], run["total_s"], summary)
    return BatchResult(ordered, summary, run)


def _submit(todo: list[_Job], workers: int | None, scheduler: str | None, client: Any, processes: bool,
            run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Run the jobs on Dask; the rows by case name."""
    from distributed import as_completed

    own = client is None
    cluster = None
    try:
        if own:
            n = min(workers or default_workers(), len(todo))
            log.info("batch: starting %s", scheduler or f"a local cluster of {n} worker(s)")
            client, cluster = open_client(n, scheduler, processes)
        try:
            client.wait_for_workers(1, timeout=60)
        except TimeoutError:
            raise InputError("the Dask cluster has no worker (none joined within 60 s)") from None
        run.update(workers=len(client.scheduler_info().get("workers", {})),
                   scheduler=scheduler or ("local cluster" if own else "given client"))
        log.info("batch: %d case(s) to plan on %d worker(s)", len(todo), run["workers"])
        token = uuid.uuid4().hex[:8]
        futures = {client.submit(_plan_task, job, key=f"seedplan-batch-{job.name}-{token}"): job for job in todo}
        rows: dict[str, dict[str, Any]] = {}
        for fut in as_completed(list(futures)):
            job = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # the task catches the case's errors: a worker that kept dying, no seedplan...
                row = _row(job, "failed", error=f"the Dask worker running this case failed: {_message(exc)}")
            fut.release()
            rows[job.name] = row
            what = (f"failed: {row['error']}" if row["status"] == "failed" else
                    f"planned in {row['time_s']:.1f} s, goals {'met' if row['goals_met'] else 'missed'}")
            log.info("batch: %d/%d %s: %s", len(rows), len(todo), job.name, what)
        return rows
    finally:
        if own:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()


def _write_summary(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    return write_text_atomic(path, buf.getvalue())
