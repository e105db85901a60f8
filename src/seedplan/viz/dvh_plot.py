"""Cumulative dose-volume histogram plot (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._atomic import atomic_path
from ..errors import InputError
from .slices import PNG_COMPRESS_LEVEL, structure_color

__all__ = ["plot_dvh"]


def _dvhs_of(evaluation_or_dvhs: Any) -> Mapping[str, Any]:
    dvhs = getattr(evaluation_or_dvhs, "dvhs", evaluation_or_dvhs)
    if not isinstance(dvhs, Mapping):
        raise InputError("plot_dvh needs an Evaluation (with .dvhs) or a mapping of structure name -> DVH")
    return dvhs


def _readable_on_white(colour: str) -> Any:
    """Darken light structure colours (made for a CT background) so they read on white paper."""
    from matplotlib.colors import to_hex, to_rgb

    rgb = np.array(to_rgb(colour))
    lum = float(rgb @ np.array([0.299, 0.587, 0.114]))
    return to_hex(rgb * (0.45 / lum)) if lum > 0.45 else colour


def plot_dvh(
    evaluation_or_dvhs: Any,
    prescription_Gy: float,
    path: str | Path,
    *,
    max_dose_factor: float = 2.5,
    names: Sequence[str] | None = None,
    roles: Mapping[str, Any] | None = None,
    title: str = "Cumulative DVH",
) -> Path:
    """Write a cumulative DVH (% volume versus dose) as a PNG, atomically.

    Parameters
    ----------
    evaluation_or_dvhs : Evaluation or mapping
        An :class:`~seedplan.evaluation.metrics.Evaluation` or a mapping
        structure name -> :class:`~seedplan.evaluation.dvh.DVH`.
    prescription_Gy : float
        Prescription dose; marked on the plot, and the dose axis ends at
        ``max_dose_factor`` times it.
    path : path-like
        Destination PNG.
    names : sequence of str, optional
        Structures to draw (default: all).
    roles : mapping, optional
        Structure name -> role, for the structure colours (target = green).

    Returns
    -------
    Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pd = float(prescription_Gy)
    if not np.isfinite(pd) or pd <= 0:
        raise InputError(f"prescription_Gy must be > 0, got {prescription_Gy!r}")
    dvhs = _dvhs_of(evaluation_or_dvhs)
    selected = list(dvhs) if names is None else [n for n in names if n in dvhs]
    edges = np.linspace(0.0, max_dose_factor * pd, 501)

    fig = Figure(figsize=(8.0, 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.09, 0.11, 0.62, 0.8))
    used: set[str] = set()
    for name in selected:
        dvh = dvhs[name]
        role = (roles or {}).get(name)
        if role is None and name == "target":
            role = "target"
        colour = _readable_on_white(structure_color(name, role))
        ls = "-" if colour not in used else "--"
        used.add(colour)
        _, _, pct = dvh.cumulative(edges)
        ax.plot(edges, pct, color=colour, lw=2.0 if str(getattr(role, "value", role)) == "target" else 1.5,
                ls=ls, label=name)
    ax.axvline(pd, color="black", ls=":", lw=1.2, label=f"PD = {pd:g} Gy")
    ax.axhline(90.0, color="0.6", ls=":", lw=0.8)
    ax.set_xlim(0.0, max_dose_factor * pd)
    ax.set_ylim(0.0, 102.0)
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.set_title(title)
    ax.grid(True, color="0.9")
    ax.set_facecolor("white")
    sec = ax.secondary_xaxis("top", functions=(lambda d: 100.0 * d / pd, lambda p: p * pd / 100.0))
    sec.set_xlabel("Dose (% of PD)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=True)
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return out
