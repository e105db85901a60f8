"""The files of a robustness analysis: ``robustness.json``, ``robustness_scenarios.csv``, ``robustness.png``.

``robustness_html`` gives the analysis as a plain HTML fragment (escaped, no
scripts) for the plan report.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, write_text_atomic
from ..errors import InputError, InputTypeError
from ._run import RobustnessResult

__all__ = ["plot_robustness", "robustness_csv", "robustness_html", "robustness_json", "write_robustness"]


def _check(result: Any) -> RobustnessResult:
    if not isinstance(result, RobustnessResult):
        raise InputTypeError(f"result must be a RobustnessResult, got {type(result).__name__}")
    return result


def robustness_json(result: RobustnessResult) -> str:
    """The text of ``robustness.json`` (same result, same bytes)."""
    return json.dumps(_check(result).to_dict(), indent=1, allow_nan=False) + "\n"


def robustness_csv(result: RobustnessResult) -> str:
    """The text of ``robustness_scenarios.csv``: one row per scenario (0 = nominal), full precision."""
    r = _check(result)
    head = ["scenario", "seeds_lost", "max_seed_shift_mm"] + [c.label for c in r.columns]
    lines = [",".join(_csv_cell(h) for h in head)]
    for k in range(len(r.values)):
        cells = [str(k), str(int(r.seeds_lost[k])), repr(float(r.max_shift_mm[k]))]
        cells += [repr(float(x)) for x in r.values[k]]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _csv_cell(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(ch in text for ch in ',"\n') else text


def plot_robustness(result: RobustnessResult, path: str | Path) -> Path:
    """``robustness.png``: box plots (P5-P95 whiskers, nominal and goal marks) and the target's DVH band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    r = _check(result)
    limits: dict[tuple[str, str], list[float]] = {}
    for g in r.goals:
        limits.setdefault((g.structure, g.metric), []).append(g.limit)
    gy = [i for i, c in enumerate(r.columns) if c.unit == "Gy"]
    pct = [i for i, c in enumerate(r.columns) if c.unit == "%"]

    fig = Figure(figsize=(12.0, 8.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_gy = fig.add_axes((0.07, 0.58, 0.58, 0.34))
    ax_pct = fig.add_axes((0.72, 0.58, 0.25, 0.34))
    ax_dvh = fig.add_axes((0.07, 0.08, 0.90, 0.38))

    def boxes(ax: Any, cols: list[int], unit: str) -> None:
        if not cols:
            ax.set_axis_off()
            return
        data = [r.values[1:, i] for i in cols]
        ax.boxplot(data, whis=(5, 95), showfliers=False, widths=0.6, patch_artist=True,
                   boxprops={"facecolor": "#cfe3f5", "edgecolor": "#2b5d8a"}, medianprops={"color": "#2b5d8a"})
        xs = np.arange(1, len(cols) + 1)
        ax.plot(xs, [r.values[0, i] for i in cols], "D", color="#c0392b", ms=6, label="nominal", zorder=3)
        first = True
        for x, i in zip(xs, cols):
            for lim in limits.get((r.columns[i].structure, r.columns[i].metric), []):
                ax.hlines(lim, x - 0.4, x + 0.4, colors="black", linestyles="--", lw=1.2,
                          label="goal" if first else None)
                first = False
        ax.set_xticks(xs)
        ax.set_xticklabels([r.columns[i].label.replace(" ", "\n", 1) for i in cols], fontsize=8)
        ax.set_ylabel(unit)
        ax.grid(True, axis="y", color="0.9")
        ax.legend(fontsize=8, loc="best")

    boxes(ax_gy, gy, "Gy")
    boxes(ax_pct, pct, "% of the target")
    ax_gy.set_title(f"{r.n_scenarios} scenarios: boxes P25-P75, whiskers P5-P95", fontsize=10)

    edges = r.dvh_edges_Gy
    band = np.percentile(r.dvh_pct[1:].astype(float), [5.0, 50.0, 95.0], axis=0)
    target = next((c.structure for c in r.columns if c.group == "target"), "target")
    ax_dvh.fill_between(edges, band[0], band[2], color="#a8d5a2", alpha=0.7, label=f"{target} P5-P95")
    ax_dvh.plot(edges, band[1], color="#2e7d32", lw=1.5, label=f"{target} P50")
    ax_dvh.plot(edges, r.dvh_pct[0], color="#c0392b", lw=1.5, ls="--", label=f"{target} nominal")
    pd = float(r.plan_summary.get("prescription_Gy", edges[100]))
    ax_dvh.axvline(pd, color="black", ls=":", lw=1.0, label=f"PD = {pd:g} Gy")
    ax_dvh.set_xlim(0.0, float(edges[-1]))
    ax_dvh.set_ylim(0.0, 102.0)
    ax_dvh.set_xlabel("Dose (Gy)")
    ax_dvh.set_ylabel("Volume (%)")
    ax_dvh.set_title("Target DVH under placement errors", fontsize=10)
    ax_dvh.grid(True, color="0.9")
    ax_dvh.legend(fontsize=8, loc="upper right")
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return out


def write_robustness(result: RobustnessResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``robustness.json``, ``robustness_scenarios.csv`` and ``robustness.png`` into ``out_dir``.

    Each file is written atomically; commands write into a staging folder
    (:func:`seedplan.outputs.output_folder`) so that the three appear together.
    """
    r = _check(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "summary": write_text_atomic(out / "robustness.json", robustness_json(r)),
        "scenarios": write_text_atomic(out / "robustness_scenarios.csv", robustness_csv(r)),
        "plot": plot_robustness(r, out / "robustness.png"),
    }


# -------------------------------------------------------------------------------------------- HTML
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _n(value: Any, digits: int = 1) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return _e(value)
    return f"{x:.{digits}f}" if math.isfinite(x) else "&ndash;"


def robustness_html(result: RobustnessResult, *, image: str | Path | None = None) -> str:
    """The analysis as a plain HTML fragment (a ``<section>``; escaped, no scripts, no styles).

    Parameters
    ----------
    image : path, optional
        ``robustness.png`` to embed as a data URI.
    """
    r = _check(result)
    d = r.to_dict()
    errors = r.options.errors
    parts = ['<section class="robustness">', "<h2>Robustness to placement errors</h2>"]
    parts.append(
        f"<p>{r.n_scenarios} scenarios of needle and seed placement errors (seed {r.options.seed}; scenario 0 is "
        "the plan as planned; statistics over the perturbed scenarios). Needle lateral displacement SD "
        f"{_n(errors.lateral_sd_mm, 2)} mm per axis, angle SD {_n(errors.angle_sd_deg, 2)}&deg; per axis about the "
        f"entry, depth SD {_n(errors.depth_sd_mm, 2)} mm; seed jitter along the track SD "
        f"{_n(errors.seed_jitter_sd_mm, 2)} mm; seed loss probability {_n(errors.seed_loss_probability, 3)}.</p>")
    rows = []
    for m in d["metrics"]:
        rows.append("<tr>" + f"<td>{_e(m['structure'])}</td><td>{_e(m['metric'])}</td>" + "".join(
            f'<td class="num">{_n(m[k])}</td>' for k in ("nominal", "mean", "p5", "p50", "p95")) + "</tr>")
    parts.append("<table><thead><tr><th>Structure</th><th>Metric</th><th class=\"num\">Nominal</th>"
                 "<th class=\"num\">Mean</th><th class=\"num\">P5</th><th class=\"num\">P50</th>"
                 "<th class=\"num\">P95</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    if d["goals"]:
        rows = []
        for g in d["goals"]:
            nominal = "met" if g["nominal_passed"] else "missed"
            rows.append(f"<tr><td>{_e(g['goal'])}</td><td class=\"num\">{_n(g['nominal_value'])}</td>"
                        f"<td>{nominal}</td><td class=\"num\">{_n(100.0 * g['probability'])} %</td></tr>")
        rows.append(f"<tr><td>all goals</td><td></td><td></td>"
                    f"<td class=\"num\">{_n(100.0 * d['all_goals_probability'])} %</td></tr>")
        parts.append("<table><thead><tr><th>Goal</th><th class=\"num\">Nominal value</th><th>Nominal</th>"
                     "<th class=\"num\">Probability met</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    if r.nominal_differences:
        parts.append("<p>Scenario 0 differs from the plan's stored metrics: "
                     + _e("; ".join(r.nominal_differences)) + "</p>")
    if image is not None:
        p = Path(image)
        if not p.is_file():
            raise InputError(f"robustness image {p} does not exist")
        data = p.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise InputError(f"robustness image {p} is not a PNG file")
        caption = "Metrics over the scenarios and the target DVH band"
        parts.append(f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,'
                     f'{base64.b64encode(data).decode("ascii")}"><figcaption>{_e(caption)}</figcaption></figure>')
    parts.append("</section>")
    return "\n".join(parts)
