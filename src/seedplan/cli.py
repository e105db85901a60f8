"""The ``seedplan`` command.

Every sub-command is a small function ``_cmd_<name>(args) -> int``.  Errors
from the :mod:`seedplan.errors` hierarchy (and file-system errors) are printed
as one line on stderr with exit code 2; nothing prints a traceback unless
``SEEDPLAN_DEBUG=1`` is set.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import SeedplanError

log = logging.getLogger("seedplan")


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = " ".join(record.getMessage().split())
        return f"[seedplan] {text}" if record.levelno < logging.WARNING else f"seedplan: warning: {text}"


@contextlib.contextmanager
def _command_logging(verbose: bool) -> Iterator[None]:
    """Progress on stderr, one line per message; Python warnings become one logged line each.

    The logger and ``warnings.showwarning`` are restored on exit, so calling :func:`main` in-process
    (tests, notebooks) leaves the caller's logging as it was.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    saved = (list(log.handlers), log.level, log.propagate, warnings.showwarning)
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose or os.environ.get("SEEDPLAN_DEBUG") else logging.INFO)
    log.propagate = False

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        log.warning("%s", message)

    warnings.showwarning = show
    try:
        yield
    finally:
        log.handlers[:], log.level, log.propagate, warnings.showwarning = saved


def _compile_notice() -> None:
    """Say so when the numerical kernels have not been compiled yet on this installation (the first run waits)."""
    here = Path(__file__).resolve().parent
    cached = [f for d in ("dose", "planning") for f in (here / d / "__pycache__").glob("*.nbi")] \
        if (here / "dose").is_dir() else []
    if not cached and not os.environ.get("NUMBA_CACHE_DIR"):
        log.info("first run on this installation: compiling the numerical kernels (about a minute, once; "
                 "later runs use the compiled cache)")


# --------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out_dir=Path(args.out), level=args.level, lesion_diameter_mm=args.lesion_diameter_mm,
             lesion_type=args.lesion_type, timings=args.timings, dose_model=args.dose_model, case=args.case)
    return 0


# --------------------------------------------------------------------------- plan
def _cmd_plan(args: argparse.Namespace) -> int:
    from .io import format_plan_table, load_case
    import time

    from .outputs import final_path, format_timings, output_folder, write_plan_outputs
    from .planning import plan_case

    log.info("loading case %s", args.case)
    case = load_case(args.case)
    with output_folder(args.out, what="plan", inputs=(args.case, case.reference["ct"])) as staging:
        result = plan_case(case.ct, case.structures, case.prescription, options=case.planning,
                           case_reference=case.reference)
        t = time.perf_counter()
        files = write_plan_outputs(result, staging, ct=case.ct, structures=case.structures)
        t_out = time.perf_counter() - t
    print(format_plan_table(result.plan))
    for label, path in files.items():
        print(f"{label}: {final_path(path, staging, args.out)}")
    if args.timings:
        print("\n" + format_timings(dict(result.timings_s), outputs_s=t_out))
    return 0


# --------------------------------------------------------------------------- dose
def _cmd_dose(args: argparse.Namespace) -> int:
    from .errors import FileFormatError, InputError
    from .geometry import Grid
    from .io import load_plan_case, write_volume
    from .outputs import final_path, output_folder, write_metrics
    from .plan import load_plan, plan_dose_grid, reevaluate_plan, save_plan

    if args.update and args.out:
        raise InputError("give either --out DIR (write the recomputed dose and metrics there) or --update (replace "
                         "them in the plan's own folder), not both")
    plan = load_plan(args.plan)
    plan_file = Path(args.plan).resolve()
    out = plan_file.parent if args.update else Path(args.out or plan_file.parent / "recomputed")
    try:
        case = load_plan_case(plan)
    except FileFormatError as exc:
        case = None
        log.warning("metrics not recomputed: %s", exc)
    if case is not None:
        reference = case.ct.grid
    else:
        lo = plan.positions_mm.min(axis=0) - 30.0
        hi = plan.positions_mm.max(axis=0) + 30.0
        reference = Grid.from_bounds(lo, hi, args.spacing_mm)
    log.info("recomputing the dose of %d seeds (%s, TG-43 %s)", plan.n_seeds, plan.seed_model.name, plan.formalism)
    lines = []
    with output_folder(out, update=args.update, what="recomputed dose") as staging:
        grid, dose = plan_dose_grid(plan, reference, spacing_mm=args.spacing_mm)
        path = write_volume(grid, dose, staging / "dose.nrrd")
        lines.append(f"dose: {final_path(path, staging, out)}  (max {dose.max():.1f} Gy on "
                     f"{grid.size[0]}x{grid.size[1]}x{grid.size[2]} voxels)")
        if case is not None:
            _ev, results = reevaluate_plan(plan, case.ct, case.structures)
            lines.append(f"metrics: {final_path(write_metrics(results, staging / 'metrics.json'), staging, out)}")
            t = results.get("target", {})
            if t:
                lines.append(f"target D90 {t['D90_Gy']:.1f} Gy, V100 {t['V100_pct']:.1f} %")
            if args.update:
                saved = save_plan(plan.with_results(results), staging / plan_file.name)
                lines.append(f"plan: {final_path(saved, staging, out)}")
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------- robustness
def _cmd_robustness(args: argparse.Namespace) -> int:
    from ._atomic import read_json
    from .errors import InputError
    from .io import load_plan_case
    from .outputs import final_path, output_folder
    from .plan import load_plan
    from .io.report import write_report
    from .robustness import RobustnessOptions, robustness_html, run_robustness, write_robustness

    options = RobustnessOptions()
    if args.errors:
        block = read_json(Path(args.errors), "robustness settings file")
        if isinstance(block, dict) and "robustness" in block and len(block) == 1:
            block = block["robustness"]
        if isinstance(block, dict) and not set(block) & {"scenarios", "seed", "errors"}:
            block = {"errors": block}  # an error model alone
        options = RobustnessOptions.from_dict(block, f"{args.errors}")
    if args.scenarios is not None and args.scenarios < 1:
        raise InputError(f"--scenarios must be >= 1, got {args.scenarios}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.seed is not None and args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.scheduler:
        raise InputError("give either --workers (a local cluster) or --scheduler ADDRESS (an existing cluster), not both")
    plan = load_plan(args.plan)
    if plan.n_seeds == 0:
        raise InputError(f"{args.plan}: the plan has no seeds; a robustness analysis needs a plan with seeds")
    case = load_plan_case(plan)
    inputs = tuple(str(p) for p in (args.plan, case.reference.get("case_file"), case.reference.get("ct")) if p)
    with output_folder(args.out, what="robustness", inputs=inputs) as staging:
        result = run_robustness(plan, case.structures, options, scenarios=args.scenarios, seed=args.seed,
                                workers=args.workers, scheduler=args.scheduler)
        files = write_robustness(result, staging)
        # the plan's report with the robustness section
        files["report"] = write_report(plan, staging / "report.html",
                                       sections=[robustness_html(result, image=files["plot"])])
    summary = result.to_dict()
    lines = [f"{result.n_scenarios} scenarios (seed {result.options.seed}) in {result.run['scenarios_s']:.1f} s on "
             f"{result.run['workers']} worker(s)"]
    for m in summary["metrics"]:
        lines.append(f"{m['label']}: nominal {m['nominal']:.1f}, P5 {m['p5']:.1f}, P50 {m['p50']:.1f}, "
                     f"P95 {m['p95']:.1f} {m['unit']}")
    for g in summary["goals"]:
        lines.append(f"{g['goal']}: met in {100.0 * g['probability']:.1f} % of the scenarios "
                     f"(nominal: {'met' if g['nominal_passed'] else 'missed'})")
    for label, path in files.items():
        lines.append(f"{label}: {final_path(path, staging, args.out)}")
    print("\n".join(lines))
    return 0


# -------------------------------------------------------------------------- batch
def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .errors import InputError

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.workers is not None and args.scheduler:
        raise InputError("give either --workers (a local cluster) or --scheduler ADDRESS (an existing cluster), not both")
    result = run_batch(args.cases, args.out, sweep=args.sweep, workers=args.workers, scheduler=args.scheduler,
                       force=args.force, review=not args.no_review)
    print(result.table())
    print(f"summary: {result.summary_csv}")
    if result.failed:
        print(f"seedplan batch: {len(result.failed)} of {len(result.rows)} case(s) failed "
              f"({', '.join(r['case'] for r in result.failed)}); their errors are in the summary", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ replan, postplan
def _registration(later: object, planning: object, plan: object, transform: str | None) -> object:
    """The later CT's registration to the planning CT: registered, or read from ``--transform``."""
    from .verification import read_registration, register_ct

    if transform:
        reg = read_registration(transform, maps="later_to_planning")
    else:
        log.info("registering the CT to the planning CT (rigid, bone-weighted mutual information)")
        reg = register_ct(later, planning, plan=plan)
    reg.require("the re-plan" if plan is not None else "this step")
    sm = reg.summary()
    log.info("registration %s: rotation %.2f deg, shift %.1f mm, bone Dice %s", reg.quality, sm["rotation_deg"],
             sm["shift_mm"], sm["bone_dice"])
    return reg


def _cmd_replan(args: argparse.Namespace) -> int:
    import json
    import time

    from .imaging import load_ct
    from .io import format_plan_table, load_plan_case
    from .outputs import final_path, format_timings, output_folder, write_plan_outputs
    from .plan import load_plan
    from .planning import replan_on_needles
    from .verification import verify_needles

    plan = load_plan(args.plan)
    case = load_plan_case(plan)
    log.info("loading the intra-operative CT %s", args.ct)
    ct = load_ct(args.ct)
    with output_folder(args.out, what="re-plan", inputs=(args.ct,)) as staging:
        t0 = time.perf_counter()
        reg = _registration(ct, case.ct, plan, args.transform)
        found = verify_needles(ct, plan, reg)
        summary = found.summary()
        for d in summary["needles"]:
            log.info("%s: tip %.1f mm, angle %.1f deg from the plan", d["needle"], d["tip_error_mm"], d["angle_deg"])
        for name in summary["unmatched_planned"]:
            log.warning("needle %s was not found on the CT", name)
        result = replan_on_needles(plan, case.ct, case.structures, found.actual_needles("seed"),
                                   activity_mCi=args.activity_mCi)
        t_replan = time.perf_counter() - t0
        from dataclasses import replace

        history = {"replan": {"replanned_from": plan.run.get("created", ""), "needles": summary,
                              "registration": {"matrix_later_to_planning": [[round(float(x), 6) for x in row]
                                                                            for row in reg.matrix],
                                               "quality": reg.quality, "bone_dice": reg.bone_dice},
                              "planned_results": {k: plan.results.get("target", {}).get(k)
                                                  for k in ("D90_Gy", "V100_pct", "V150_pct", "V200_pct")}}}
        result = replace(result, plan=replace(result.plan, history=history))
        t = time.perf_counter()
        files = write_plan_outputs(result, staging, ct=case.ct, structures=case.structures)
        files["needles"] = Path(staging / "needles.json")
        from ._atomic import write_text_atomic

        write_text_atomic(files["needles"], json.dumps(summary, indent=1) + "\n")
        files["registration_check"] = reg.check_image(ct, case.ct, staging / "registration_check.png")
        t_out = time.perf_counter() - t
    print(format_plan_table(result.plan))
    for label, path in files.items():
        print(f"{label}: {final_path(path, staging, args.out)}")
    print(f"\nre-plan in {t_replan:.1f} s after the CT was loaded (registration, needles, seeds, dose, evaluation)")
    if args.timings:
        print(format_timings(dict(result.timings_s), outputs_s=t_out))
    return 0


def _cmd_postplan(args: argparse.Namespace) -> int:
    import json
    import time

    from .imaging import load_ct
    from .io import load_plan_case
    from .outputs import final_path, output_folder, write_postplan_outputs
    from .plan import load_plan
    from .verification import postplan_record, verify_cement, verify_seeds

    plan = load_plan(args.plan)
    if plan.n_seeds == 0:
        from .errors import InputError

        raise InputError(f"{args.plan} has no seeds: a post-implant check compares the seeds found with the plan's")
    case = load_plan_case(plan)
    log.info("loading the post-operative CT %s", args.ct)
    ct = load_ct(args.ct)
    with output_folder(args.out, what="post-implant dosimetry", inputs=(args.ct,)) as staging:
        t0 = time.perf_counter()
        reg = _registration(ct, case.ct, plan, args.transform)
        seeds = verify_seeds(ct, plan, reg, planning_ct=case.ct, expected_count=args.expected_seeds)
        log.info("seeds: %d found, %d matched, %d missing, %d extra", seeds.n_detected, len(seeds.pairs),
                 len(seeds.missing), len(seeds.extra))
        cement = None
        if plan.cement is not None:
            cement = verify_cement(ct, case.ct, reg, case.structures, plan=plan)
            for lk in cement.leaks:
                log.warning("cement leak: %.2f mL at the %s", lk.volume_mL, lk.site.replace("_", " "))
        record = postplan_record(reg, seeds, cement)
        files = write_postplan_outputs(plan, case, ct, reg, seeds, record, staging)
        log.info("post-implant dosimetry in %.1f s", time.perf_counter() - t0)
    m = json.loads(Path(final_path(files["metrics"], staging, args.out)).read_text())
    for k, c in m.get("comparison", {}).items():
        if c.get("planned") is not None and c.get("delivered") is not None:
            print(f"{k:32s} planned {c['planned']:8.1f}   delivered {c['delivered']:8.1f}")
    for label, path in files.items():
        print(f"{label}: {final_path(path, staging, args.out)}")
    return 0


# ------------------------------------------------------------------------ phantom
def _cmd_phantom(args: argparse.Namespace) -> int:
    from .imaging.phantom import make_spine_phantom
    from .io import write_phantom_case
    from .outputs import final_path, output_folder

    log.info("building the spine phantom (level %s, %s mm)", args.level, args.spacing_mm)
    phantom = make_spine_phantom(
        level=args.level,
        spacing_mm=args.spacing_mm,
        lesion_diameter_mm=args.lesion_diameter_mm,
        lesion_type=args.lesion_type,
        include_thoracic=args.thoracic,
    )
    with output_folder(args.out, what="phantom case") as staging:
        written = write_phantom_case(phantom, staging)
    for label, path in written.items():
        print(f"{label}: {final_path(path, staging, args.out)}")
    return 0


# ------------------------------------------------------------------------- models
def _cmd_models(args: argparse.Namespace) -> int:
    from .sources import available_seed_models, load_seed_model

    for name in available_seed_models():
        m = load_seed_model(name)
        flag = "  [UNVERIFIED]" if not m.verified else ""
        print(f"{name:10s} {m.description}  Lambda={m.dose_rate_constant_cGy_h_U:.3f} cGy/h/U  L={m.active_length_mm:.2f} mm{flag}")
    return 0


# ------------------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    from .io.dicom import export_plan_dicom
    from .outputs import final_path, output_folder
    from .plan import load_plan

    plan = load_plan(args.plan)
    log.info("exporting %s as DICOM RT (%d-bit dose)", args.plan, args.bits)
    with output_folder(args.out, what="DICOM export") as staging:
        files = export_plan_dicom(plan, staging, bits=args.bits, dose_spacing_mm=args.dose_spacing_mm,
                                  oar_reach_mm=args.oar_reach_mm)
    for label, path in files.items():
        print(f"{label}: {final_path(path, staging, args.out)}")
    return 0


# --------------------------------------------------------------------------- view
def _has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _cmd_view(args: argparse.Namespace) -> int:
    from .errors import InputError
    from .io import load_plan_case
    from .outputs import final_path, output_folder
    from .plan import load_plan, plan_dose_grid, plan_structures
    from .viz.scene import VIEWS, render_views, show

    views = tuple(v.strip() for v in args.views.split(",") if v.strip())
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise InputError(f"--views: unknown view(s) {bad or args.views!r}; choose from {', '.join(VIEWS)}")
    plan = load_plan(args.plan)
    case = load_plan_case(plan)
    log.info("computing the dose of %d seeds", plan.n_seeds)
    grid, dose = plan_dose_grid(plan, case.ct.grid)
    cement = None if plan.cement is None else plan.cement.structure()
    structures = plan_structures(plan, case.structures)
    screenshots = args.screenshots or not _has_display()
    if not screenshots:
        log.info("opening the 3D view (close the window to exit)")
        show(plan, case.ct, structures, grid, dose, cement=cement)
        return 0
    plan_dir = Path(args.plan).resolve().parent
    out = Path(args.out) if args.out else plan_dir
    if not args.screenshots:
        log.info("no display: writing screenshots instead of opening a window")
    # into the plan's folder: add the views beside the plan; elsewhere: a folder of views
    with output_folder(out, update=out.resolve() == plan_dir, what="3D views") as staging:
        paths = render_views(plan, case.ct, structures, staging, grid, dose, cement=cement, views=views)
    for view, path in paths.items():
        print(f"{view}: {final_path(path, staging, out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``seedplan`` command."""
    p = argparse.ArgumentParser(
        prog="seedplan",
        description="125I seed brachytherapy planning (TG-43) for CT-guided spinal implants.",
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"seedplan {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="also print debug messages (step timings)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run the whole chain on the built-in spine phantom")
    d.add_argument("--out", default="seedplan_demo", help="output folder (default: seedplan_demo)")
    d.add_argument("--level", default=None,
                   help="vertebral level of the lesion: L1-L5, S1-S3 (default L3); adjacent levels planned as one "
                        "implant as L5,S1 (sacral lesions sit 5 mm anterior of the body's centre)")
    d.add_argument("--lesion-diameter-mm", type=float, default=None,
                   help="lesion diameter in mm (default 30; 24 at S2, 20 at S3, 28 for several levels)")
    d.add_argument("--lesion-type", choices=["lytic", "blastic"], default=None, help="(default lytic)")
    d.add_argument("--case", default=None, metavar="{study-s2,study-l5,study-s1}",
                   help="one of the reference study's three cases instead of --level and the lesion options: "
                        "S2 with a soft-tissue mass reaching the foramen, fractured L5 with an S1 lesion, right S1 "
                        "reaching the ilium (phantom, patient block and description in the report)")
    d.add_argument("--dose-model", choices=["tg43", "corrected"], default="tg43",
                   help="plan the seeds on the TG-43 dose (default) or on the cement/bone-corrected dose, the TG-43 "
                        "plan beside it in the report")
    d.add_argument("--timings", action="store_true", help="print the time of each step")
    d.set_defaults(func=_cmd_demo)

    pl = sub.add_parser("plan", help="plan needles and seeds for a case file (CT + structures)")
    pl.add_argument("case", help="case file (JSON, see examples/case_phantom.json)")
    pl.add_argument("--out", default="seedplan_plan", help="output folder (default: seedplan_plan)")
    pl.add_argument("--timings", action="store_true", help="print the time of each step")
    pl.set_defaults(func=_cmd_plan)

    ds = sub.add_parser("dose", help="recompute the dose (and metrics) of a saved plan")
    ds.add_argument("plan", help="plan.json")
    ds.add_argument("--out", default=None, help="output folder (default: PLAN_FOLDER/recomputed)")
    ds.add_argument("--spacing-mm", type=float, default=1.0, help="dose grid spacing (default 1 mm)")
    ds.add_argument("--update", action="store_true",
                    help="replace dose.nrrd, metrics.json and the plan's results in the plan's own folder")
    ds.set_defaults(func=_cmd_dose)

    rp = sub.add_parser("replan", help="re-optimise the seeds along the needles found on an intra-operative CT")
    rp.add_argument("plan", help="plan.json (its case file locates the planning CT)")
    rp.add_argument("--ct", required=True, help="the intra-operative CT with the needles in place (DICOM folder or file)")
    rp.add_argument("--out", required=True, help="output folder for the re-plan")
    rp.add_argument("--transform", default=None,
                    help="a SimpleITK transform file mapping the CT to the planning CT (default: register)")
    rp.add_argument("--activity-mCi", type=float, default=None, help="seed activity (default: the plan's)")
    rp.add_argument("--timings", action="store_true", help="print the time of each step")
    rp.set_defaults(func=_cmd_replan)

    pp = sub.add_parser("postplan", help="post-implant dosimetry: the seeds and cement found on a post-operative CT")
    pp.add_argument("ct", help="the post-operative CT (DICOM folder or file)")
    pp.add_argument("--plan", required=True, help="plan.json of the implant (its case file locates the planning CT)")
    pp.add_argument("--out", required=True, help="output folder")
    pp.add_argument("--transform", default=None,
                    help="a SimpleITK transform file mapping the CT to the planning CT (default: register)")
    pp.add_argument("--expected-seeds", type=int, default=None, help="the number of seeds implanted, if known")
    pp.set_defaults(func=_cmd_postplan)

    ph = sub.add_parser("phantom", help="write the synthetic spine phantom as DICOM CT + RTSTRUCT + NIfTI labels")
    ph.add_argument("out", help="output folder")
    ph.add_argument("--level", default="L3", help="vertebral level of the lesion (default L3)")
    ph.add_argument("--spacing-mm", type=float, default=1.0, help="voxel size in mm (default 1.0)")
    ph.add_argument("--lesion-diameter-mm", type=float, default=30.0)
    ph.add_argument("--lesion-type", choices=["lytic", "blastic"], default="lytic")
    ph.add_argument("--thoracic", action="store_true", help="include the lower thoracic spine (T11-T12)")
    ph.set_defaults(func=_cmd_phantom)

    m = sub.add_parser("models", help="list the seed models in the library")
    m.set_defaults(func=_cmd_models)

    ex = sub.add_parser("export", help="export a saved plan as DICOM RTPLAN, RTDOSE and RTSTRUCT")
    ex.add_argument("plan", help="plan.json (its case file locates the CT)")
    ex.add_argument("--out", required=True, help="output folder for RTPLAN.dcm, RTDOSE.dcm, RTSTRUCT.dcm")
    ex.add_argument("--bits", type=int, choices=[16, 32], default=16, help="RTDOSE integer size (default 16)")
    ex.add_argument("--dose-spacing-mm", type=float, default=1.0, help="dose grid spacing (default 1 mm)")
    ex.add_argument("--oar-reach-mm", type=float, default=50.0,
                    help="the RTDOSE grid covers every organ at risk within this distance of a seed (default 50 mm)")
    ex.set_defaults(func=_cmd_export)

    rb = sub.add_parser("robustness", help="how the plan's metrics spread under needle and seed placement errors "
                        "(Monte Carlo scenarios on Dask)")
    rb.add_argument("plan", help="plan.json (its case file locates the CT and structures)")
    rb.add_argument("--out", required=True, help="output folder for robustness.json, robustness_scenarios.csv, "
                    "robustness.png")
    rb.add_argument("--scenarios", type=int, default=None, help="perturbed scenarios to draw (default 1000); "
                    "scenario 0, the nominal plan, comes on top")
    rb.add_argument("--seed", type=int, default=None, help="random seed (default 0): same seed, same results")
    rb.add_argument("--workers", type=int, default=None, help="worker processes of the local Dask cluster "
                    "(default: the usable cores)")
    rb.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="run on an existing Dask cluster, e.g. tcp://scheduler-host:8786 (its workers need seedplan)")
    rb.add_argument("--errors", default=None, metavar="FILE",
                    help="JSON robustness settings {\"scenarios\", \"seed\", \"errors\": {...}} or an error model "
                    "alone (default: the template-guided placement accuracy of Ji et al. 2021)")
    rb.set_defaults(func=_cmd_robustness)

    bt = sub.add_parser("batch", help="plan many case files, or one case over a sweep table, as Dask tasks "
                        "(a folder per case and summary.csv)")
    bt.add_argument("cases", nargs="+", metavar="CASE", help="case files (JSON); with --sweep, one")
    bt.add_argument("--out", required=True, help="batch folder: OUT/<case>/ per case and OUT/summary.csv")
    bt.add_argument("--sweep", default=None, metavar="TABLE.csv",
                    help="CSV of variants of the one case, one per row: columns name, dose_Gy, activity_mCi (a fixed "
                    "seed activity), lesion_diameter_mm (phantom cases) or any other number of the prescription")
    bt.add_argument("--workers", type=int, default=None, help="worker processes of the local Dask cluster "
                    "(default: the usable cores)")
    bt.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="run on an existing Dask cluster, e.g. tcp://scheduler-host:8786 (its workers need seedplan "
                    "and the same paths to the cases and OUT)")
    bt.add_argument("--force", action="store_true", help="plan every case again, also those planned earlier with "
                    "the same inputs")
    bt.add_argument("--no-review", action="store_true", help="write plan, table, dose, metrics and DVH only (no 3D "
                    "views, report or DICOM export): faster for large sweeps")
    bt.set_defaults(func=_cmd_batch)

    vw = sub.add_parser("view", help="review a saved plan in 3D (a window, or PNG screenshots without a display)")
    vw.add_argument("plan", help="plan.json (its case file locates the CT)")
    vw.add_argument("--screenshots", action="store_true", help="write PNG views instead of opening a window")
    vw.add_argument("--out", default=None, help="folder for the screenshots (default: the plan's folder)")
    vw.add_argument("--views", default="anterior,left,posterior,oblique",
                    help="comma-separated views: anterior, left, posterior, right, superior, oblique")
    vw.set_defaults(func=_cmd_view)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seedplan`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _command_logging(args.verbose):
        return _run(parser, args)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the parsed command; a :class:`SeedplanError` or OS error becomes one line and exit code 2."""
    if args.command in ("demo", "plan", "dose", "export", "view", "robustness", "batch", "replan", "postplan"):
        _compile_notice()
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except SeedplanError as exc:
        if os.environ.get("SEEDPLAN_DEBUG"):
            raise
        print(f"seedplan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if os.environ.get("SEEDPLAN_DEBUG"):
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"seedplan {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seedplan {args.command}: interrupted", file=sys.stderr)
        return 130


def console_main() -> int:
    """The ``seedplan`` console command: :func:`main`, then leave without the interpreter's teardown.

    After a run that loaded VTK, numba (LLVM) and matplotlib, the teardown (module and C-library finalisers)
    takes ~0.8 s and does nothing a finished command needs.  The atexit handlers still run (logging flushed,
    temporary files removed) and the output streams are flushed, then the process ends with ``os._exit``.
    The usual exit instead (the code is returned for ``sys.exit``) when a profiler or tracer is active (its
    atexit-free output would be lost), when other Python threads still run (they are joined), or when
    :func:`main` raises.
    """
    import atexit
    import threading

    code = main()
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if (run_exitfuncs is None or sys.getprofile() is not None or sys.gettrace() is not None
            or threading.active_count() > 1):
        return code
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or replaced streams: nothing to flush
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
