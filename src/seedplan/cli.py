"""The ``seedplan`` command.

Every sub-command is a small function ``_cmd_<name>(args) -> int``.  Errors
from the :mod:`seedplan.errors` hierarchy (and file-system errors) are printed
as one line on stderr with exit code 2; nothing prints a traceback unless
``SEEDPLAN_DEBUG=1`` is set.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import SeedplanError


def _progress(message: str) -> None:
    print(f"[seedplan] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        out_dir=Path(args.out),
        level=args.level,
        lesion_diameter_mm=args.lesion_diameter_mm,
        lesion_type=args.lesion_type,
        progress=_progress,
    )
    return 0


# ------------------------------------------------------------------------ phantom
def _cmd_phantom(args: argparse.Namespace) -> int:
    from .imaging.phantom import export_phantom_case, make_spine_phantom

    _progress(f"building the spine phantom (level {args.level}, {args.spacing_mm} mm)")
    phantom = make_spine_phantom(
        level=args.level,
        spacing_mm=args.spacing_mm,
        lesion_diameter_mm=args.lesion_diameter_mm,
        lesion_type=args.lesion_type,
        include_thoracic=args.thoracic,
    )
    written = export_phantom_case(phantom, Path(args.out), progress=_progress)
    for label, path in written.items():
        print(f"{label}: {path}")
    return 0


# ------------------------------------------------------------------------- models
def _cmd_models(args: argparse.Namespace) -> int:
    from .sources import available_seed_models, load_seed_model

    for name in available_seed_models():
        m = load_seed_model(name)
        flag = "  [UNVERIFIED]" if not m.verified else ""
        print(f"{name:10s} {m.description}  Lambda={m.dose_rate_constant_cGy_h_U:.3f} cGy/h/U  L={m.active_length_mm:.2f} mm{flag}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``seedplan`` command."""
    p = argparse.ArgumentParser(
        prog="seedplan",
        description="125I seed brachytherapy planning (TG-43) for CT-guided spinal implants.",
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"seedplan {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run the whole chain on the built-in spine phantom")
    d.add_argument("--out", default="seedplan_demo", help="output folder (default: seedplan_demo)")
    d.add_argument("--level", default="L3", help="vertebral level of the lesion, e.g. L3 (default)")
    d.add_argument("--lesion-diameter-mm", type=float, default=30.0, help="lesion diameter in mm (default 30)")
    d.add_argument("--lesion-type", choices=["lytic", "blastic"], default="lytic")
    d.set_defaults(func=_cmd_demo)

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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seedplan`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
