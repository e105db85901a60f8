"""The ``seedplan`` command.

Every sub-command is a small function ``_cmd_<name>(args) -> int``.  Errors
from the :mod:`seedplan.errors` hierarchy (and file-system errors) are printed
as one line on stderr with exit code 2; nothing prints a traceback unless
``SEEDPLAN_DEBUG=1`` is set.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import SeedplanError

log = logging.getLogger("seedplan")


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = " ".join(record.getMessage().split())
        return f"[seedplan] {text}" if record.levelno < logging.WARNING else f"seedplan: warning: {text}"


def _setup_logging(verbose: bool) -> None:
    """Progress on stderr, one line per message; Python warnings become one logged line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose or os.environ.get("SEEDPLAN_DEBUG") else logging.INFO)
    log.propagate = False

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        log.warning("%s", message)

    warnings.showwarning = show


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
             lesion_type=args.lesion_type, timings=args.timings)
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
    from .robustness import RobustnessOptions, run_robustness, write_robustness

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
    d.add_argument("--level", default="L3", help="vertebral level of the lesion, e.g. L3 (default)")
    d.add_argument("--lesion-diameter-mm", type=float, default=30.0, help="lesion diameter in mm (default 30)")
    d.add_argument("--lesion-type", choices=["lytic", "blastic"], default="lytic")
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
    _setup_logging(args.verbose)
    if args.command in ("demo", "plan", "dose", "export", "view", "robustness"):
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
