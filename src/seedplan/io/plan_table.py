"""The treatment plan table the surgeon follows in the CT room.

One row per seed, grouped by needle: the needle's name (``N1``, ``N2``...,
the same in every output), entry point (patient LPS mm), the needle's angles
to the axial and sagittal planes, its insertion depth, and for each seed the
retraction distance from the tip (retraction method: advance to the deepest
position, release, withdraw by the listed distance, release the next seed
...), its position and activity.  ``plan_table.csv`` holds these rows and
nothing else; the summary lines (seed count, per-seed and total activity,
the plan metrics, the vertebroplasty needles and cement) go with the
fixed-width table into ``plan_summary.txt``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from .._atomic import write_text_atomic
from ..imaging.structures import COMBINED_TARGET
from ..plan import Plan

COLUMNS = [
    "needle",
    "entry_x_mm",
    "entry_y_mm",
    "entry_z_mm",
    "tip_x_mm",
    "tip_y_mm",
    "tip_z_mm",
    "angle_to_axial_deg",
    "angle_to_sagittal_deg",
    "depth_mm",
    "seed",
    "retraction_mm",
    "seed_x_mm",
    "seed_y_mm",
    "seed_z_mm",
    "activity_mCi",
    "strength_U",
    "target",
]


def plan_table_rows(plan: Plan) -> list[dict[str, Any]]:
    """The table as a list of row dictionaries (keys :data:`COLUMNS`)."""
    rows = []
    seed_no = 0
    for n, needle in enumerate(plan.needles, start=1):
        e, t = needle.entry, needle.tip
        for s in plan.seeds_on_needle(n):
            seed_no += 1
            rows.append(
                {
                    "needle": Plan.needle_name(n),
                    "entry_x_mm": round(float(e[0]), 1),
                    "entry_y_mm": round(float(e[1]), 1),
                    "entry_z_mm": round(float(e[2]), 1),
                    "tip_x_mm": round(float(t[0]), 1),
                    "tip_y_mm": round(float(t[1]), 1),
                    "tip_z_mm": round(float(t[2]), 1),
                    "angle_to_axial_deg": round(needle.angle_to_axial_deg, 1),
                    "angle_to_sagittal_deg": round(needle.angle_to_sagittal_deg, 1),
                    "depth_mm": round(needle.depth_mm, 1),
                    "seed": seed_no,
                    "retraction_mm": round(s.retraction_mm, 1),
                    "seed_x_mm": round(s.position_mm[0], 1),
                    "seed_y_mm": round(s.position_mm[1], 1),
                    "seed_z_mm": round(s.position_mm[2], 1),
                    "activity_mCi": round(s.activity_mCi, 3),
                    "strength_U": round(s.strength_U, 4),
                    "target": needle.target,
                }
            )
    return rows


def summary_lines(plan: Plan) -> list[str]:
    """Summary lines: seeds, activity, key metrics, dose convention."""
    r = plan.results or {}
    t = r.get("target", {})
    acts = sorted({s.activity_mCi for s in plan.seeds})
    act = f"{acts[0]:.3f}" if len(acts) == 1 else ", ".join(f"{a:.3f}" for a in acts)
    lines = [
        f"seeds: {plan.n_seeds} x {act} mCi (S_K {plan.seeds[0].strength_U:.4f} U at {plan.calibration_date})"
        if plan.seeds
        else "seeds: none",
        f"total activity: {plan.total_activity_mCi:.2f} mCi   needles: {len(plan.needles)}",
        f"seed model: {plan.seed_model.name} ({plan.seed_model_status}), TG-43 {plan.formalism} dose to water, "
        f"permanent implant D = Ddot0 x T1/2 / ln 2",
        f"prescription: {plan.prescription.dose_Gy:g} Gy",
    ]
    if t:
        lines.append(
            ("all targets" if t.get("name") == COMBINED_TARGET else "target") + ": D90 {D90_Gy:.1f} Gy  D100 {D100_Gy:.1f} Gy  V100 {V100_pct:.1f} %  V150 {V150_pct:.1f} %  "
            "V200 {V200_pct:.1f} %  CI {CI:.3f}  EI {EI:.3f}  HI {HI:.3f}".format(**{k: t.get(k, float('nan')) for k in
                                                                                   ("D90_Gy", "D100_Gy", "V100_pct", "V150_pct",
                                                                                    "V200_pct", "CI", "EI", "HI")})
        )
    levels = {n: b for n, b in (r.get("targets") or {}).items() if n != COMBINED_TARGET}
    if t.get("name") == COMBINED_TARGET:
        for name, b in levels.items():
            lines.append(f"  {name}: D90 {b.get('D90_Gy', float('nan')):.1f} Gy  V100 {b.get('V100_pct', float('nan')):.1f} %  "
                         f"V150 {b.get('V150_pct', float('nan')):.1f} %  V200 {b.get('V200_pct', float('nan')):.1f} %  "
                         f"({sum(1 for n in plan.needles if n.target == name)} needles, "
                         f"{sum(1 for x in plan.seeds if plan.needles[x.needle - 1].target == name)} seeds)")
    for name, m in (r.get("oars") or {}).items():
        lines.append(f"{name}: Dmax {m.get('Dmax_Gy', float('nan')):.1f} Gy  D0.1cc {m.get('D0.1cc_Gy', float('nan')):.1f} Gy  "
                     f"D1cc {m.get('D1cc_Gy', float('nan')):.1f} Gy  D2cc {m.get('D2cc_Gy', float('nan')):.1f} Gy")
    cement = r.get("cement")
    if cement:
        nan = float("nan")
        leaks = [f"{k} at {v:.1f} mL" for k, v in (cement.get("leak_flags") or {}).items() if v is not None]
        lines.append(
            f"cement: {cement.get('volume_mL', nan):.1f} mL {cement.get('material', '')} ("
            + ("recommended" if cement.get("volume_source") == "recommended" else
               f"requested; recommended {cement.get('recommended_mL', nan):.1f} mL")
            + f") into {cement.get('vertebral_body', '')}"
            + (" and the sacral bone around it" if cement.get("compartment") else "") + ", "
            f"fill {cement.get('fill_pct', nan):.1f} %, max cross-section ratio {cement.get('max_cross_section_ratio', nan):.2f}, "
            f"endplate contact {cement.get('endplate_contact', '')}, leak flags: {', '.join(leaks) if leaks else 'none'}"
        )
    het = r.get("heterogeneity")
    if het and het.get("target"):
        h = het["target"]
        lines.append(f"cement/bone-corrected dose (approximate, not TG-186): target D90 {h.get('D90_Gy', float('nan')):.1f} Gy, "
                     f"V100 {h.get('V100_pct', float('nan')):.1f} %")
    for k, n in enumerate(plan.pvp_needles, start=1):
        e, t = n.entry, n.tip
        lines.append(
            f"{Plan.pvp_needle_name(n, k)} needle: entry ({e[0]:.1f}, {e[1]:.1f}, {e[2]:.1f}) mm, "
            f"tip ({t[0]:.1f}, {t[1]:.1f}, {t[2]:.1f}) mm, depth {n.depth_mm:.1f} mm, "
            f"axial {n.angle_to_axial_deg:.1f} deg, sagittal {n.angle_to_sagittal_deg:.1f} deg"
        )
    failed = r.get("failed_goals") or []
    lines.append("goals: all met" if not failed else "goals NOT met: " + "; ".join(failed))
    return lines


def format_plan_table(plan: Plan) -> str:
    """The table as fixed-width text for the terminal."""
    head = ["Ndl", "Entry x,y,z (mm)", "Axial°", "Sagit°", "Depth", "Seed", "Retract", "Seed x,y,z (mm)", "mCi"]
    out = []
    for row in plan_table_rows(plan):
        out.append(
            [
                str(row["needle"]),
                f"{row['entry_x_mm']:.1f}, {row['entry_y_mm']:.1f}, {row['entry_z_mm']:.1f}",
                f"{row['angle_to_axial_deg']:.1f}",
                f"{row['angle_to_sagittal_deg']:.1f}",
                f"{row['depth_mm']:.1f}",
                str(row["seed"]),
                f"{row['retraction_mm']:.1f}",
                f"{row['seed_x_mm']:.1f}, {row['seed_y_mm']:.1f}, {row['seed_z_mm']:.1f}",
                f"{row['activity_mCi']:.3f}",
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in out)) if out else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    prev = None
    for r in out:
        shown = r if r[0] != prev else [""] * 5 + r[5:]
        prev = r[0]
        lines.append("  ".join(c.ljust(w) for c, w in zip(shown, widths)))
    reasoning = (plan.cement.inputs.get("recommendation") or {}).get("reasoning") or [] if plan.cement else []
    extra = ["", "cement volume recommendation:"] + [f"  {x}" for x in reasoning] if reasoning else []
    return "\n".join(lines + [""] + summary_lines(plan) + extra)


def write_plan_table_csv(plan: Plan, path: str | Path) -> Path:
    """Write the table as a plain CSV (a header and one row per seed), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in plan_table_rows(plan):
        w.writerow(row)
    return write_text_atomic(path, buf.getvalue())


def write_plan_summary(plan: Plan, path: str | Path) -> Path:
    """Write the fixed-width table and the summary lines (:func:`format_plan_table`) as text, atomically."""
    return write_text_atomic(path, format_plan_table(plan) + "\n")
