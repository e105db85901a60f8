"""The plan report: one self-contained, printable HTML file.

Images are embedded as base64 PNG data URIs; the file has no external
stylesheet, script, font or link, so it can be mailed, archived and printed
as it is.  Every piece of text taken from the plan is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .._atomic import write_text_atomic
from ..errors import InputError
from ..plan import Plan
from .plan_table import plan_table_rows

__all__ = ["write_report", "write_plan_report", "write_plan_figures", "report_html"]

_SLICE_KEYS = ("axial", "sagittal", "coronal")
_DVH_KEY = "dvh"
_FORMALISM = "TG-43U1 {f}, dose to water in water; permanent implant D = Ḋ0·T½/ln 2"
_FOOTER = ("For research use only. Not a medical device. Every plan, dose value and seed position must be "
           "checked by a qualified medical physicist before any clinical use.")

_CSS = """
*{box-sizing:border-box}
body{font-family:"Helvetica Neue",Arial,sans-serif;font-size:10.5pt;color:#1d1d1f;margin:0;background:#f3f4f6}
main{max-width:200mm;margin:0 auto;padding:10mm 12mm;background:#fff}
h1{font-size:17pt;margin:0 0 2mm}
h2{font-size:12.5pt;margin:7mm 0 2mm;padding-bottom:1mm;border-bottom:2px solid #1f4e79;color:#1f4e79}
h3{font-size:11pt;margin:4mm 0 1mm}
.meta{color:#555;font-size:9.5pt;margin:0 0 3mm}
.meta span{margin-right:5mm}
table{border-collapse:collapse;width:100%;margin:1mm 0 2mm;font-size:9pt}
th,td{border:1px solid #cfd4da;padding:1mm 1.6mm;text-align:left;vertical-align:top}
th{background:#eef2f6;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.needle-first td{border-top:2px solid #8a97a6}
.badge{display:inline-block;padding:0.2mm 2mm;border-radius:2mm;font-weight:700;font-size:8.5pt;color:#fff}
.badge.pass{background:#1e7b34}
.badge.fail{background:#b3261e}
.alert{border:2px solid #b3261e;background:#fdecea;color:#7a1a14;padding:2.5mm 3.5mm;margin:3mm 0;border-radius:1.5mm}
.alert strong{font-size:11pt}
.note{border-left:4px solid #1f4e79;background:#f1f5fa;padding:2mm 3mm;margin:2mm 0}
.small{font-size:8.5pt;color:#444}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:0.6mm 4mm;margin:1mm 0}
dl.kv dt{font-weight:600}
dl.kv dd{margin:0}
figure{margin:2mm 0 4mm;text-align:center;page-break-inside:avoid;break-inside:avoid}
figure img{max-width:100%;border:1px solid #d6d9dd}
figcaption{font-size:9pt;color:#444}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:3mm}
.grid2 figure{margin:0}
ul{margin:1mm 0;padding-left:6mm}
footer{margin-top:8mm;padding-top:2mm;border-top:1px solid #999;font-size:9pt;color:#333}
@page{size:A4;margin:12mm}
@media print{
 body{background:#fff;font-size:9.5pt}
 main{max-width:none;padding:0}
 h2{page-break-after:avoid;break-after:avoid}
 table,tr{page-break-inside:avoid;break-inside:avoid}
 .alert,.badge{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 section.images{page-break-before:always;break-before:page}
}
"""


# ------------------------------------------------------------------ formatting helpers
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None or isinstance(value, bool):
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if not math.isfinite(v):
        return "–"
    return f"{v:.{digits}f}{(' ' + unit) if unit else ''}"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], *, num_from: int = 1, row_class: str = "") -> str:
    """A table; ``head`` is escaped here, cells must already be HTML."""
    th = "".join(f'<th class="num">{_e(h)}</th>' if i >= num_from else f"<th>{_e(h)}</th>" for i, h in enumerate(head))
    body = []
    for r in rows:
        tds = "".join(f'<td class="num">{c}</td>' if i >= num_from else f"<td>{c}</td>" for i, c in enumerate(r))
        cls = f' class="{row_class}"' if row_class else ""
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(path: str | Path, caption: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"report image {p} does not exist")
    data = p.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputError(f"report image {p} is not a PNG file")
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _badge(passed: Any) -> str:
    return '<span class="badge pass">PASS</span>' if passed else '<span class="badge fail">FAIL</span>'


def _plan_of(result_or_plan: Any) -> Plan:
    plan = getattr(result_or_plan, "plan", result_or_plan)
    if not isinstance(plan, Plan):
        raise InputError(f"write_report needs a Plan or a PlanningResult, got {type(result_or_plan).__name__}")
    return plan


# ------------------------------------------------------------------------- sections
def _seed_model_section(plan: Plan) -> str:
    out = ["<h2>Dose calculation and seed model</h2>"]
    dm = (plan.results or {}).get("dose_model") or {}
    out.append('<dl class="kv">')
    out.append(f"<dt>Formalism</dt><dd>{_e(_FORMALISM.format(f=plan.formalism))}</dd>")
    if dm.get("formalism"):
        out.append(f"<dt>Dose model</dt><dd>{_e(dm['formalism'])}</dd>")
    model = plan.seed_model
    out.append(f"<dt>Seed model</dt><dd><strong>{_e(model.name)}</strong> ({_e(plan.seed_model_status)})</dd>")
    prov = model.provenance or {}
    out.append(f"<dt>Summary</dt><dd>{_e(model.summary())}</dd>")
    out.append(f"<dt>Citation</dt><dd>{_e(model.citation or 'none recorded')}</dd>")
    if prov.get("dataset") and prov.get("dataset") != model.citation:
        out.append(f"<dt>Dataset</dt><dd>{_e(prov['dataset'])}</dd>")
    if prov.get("how_obtained"):
        out.append(f"<dt>Provenance</dt><dd>{_e(prov['how_obtained'])}</dd>")
    if prov.get("UNVERIFIED"):
        out.append(f"<dt>Verification</dt><dd>{_e(prov['UNVERIFIED'])}</dd>")
    out.append(f"<dt>Capsule</dt><dd>{_num(model.capsule_length_mm, 2)} × {_num(model.capsule_diameter_mm, 2)} mm, "
               f"T½ {_num(model.half_life_d, 2)} d, Λ {_num(model.dose_rate_constant_cGy_h_U, 3)} cGy h⁻¹ U⁻¹</dd>")
    out.append(f"<dt>Dates</dt><dd>seed strengths at calibration {_e(plan.calibration_date)}; "
               f"implant {_e(plan.implant_date)}</dd>")
    out.append("</dl>")
    return "".join(out)


def _unverified(plan: Plan) -> bool:
    return not plan.seed_model.verified


def _prescription_section(plan: Plan) -> str:
    p = plan.prescription
    out = ["<h2>Prescription</h2>", '<dl class="kv">']
    out.append(f"<dt>Prescription dose (PD)</dt><dd><strong>{_num(p.dose_Gy, 1, 'Gy')}</strong> (minimum peripheral dose, total over the implant life)</dd>")
    out.append(f"<dt>Target goals</dt><dd>D90 ≥ {_num(p.d90_goal_pct_of_pd, 0)} % of PD, V100 ≥ {_num(p.v100_goal_pct, 0)} %, "
               f"V150 ≤ {_num(p.v150_limit_pct, 0)} %, V200 ≤ {_num(p.v200_limit_pct, 0)} %</dd>")
    limits = "; ".join(f"{_e(name)}: " + ", ".join(f"{_e(k)} ≤ {_num(v, 1)}" for k, v in lim.items())
                       for name, lim in (p.oar_limits or {}).items())
    out.append(f"<dt>Organ limits</dt><dd>{limits or 'none'}</dd>")
    out.append(f"<dt>Seeds</dt><dd>activity {_num(p.activity_mCi_range[0], 2)}–{_num(p.activity_mCi_range[1], 2)} mCi per seed, "
               f"spacing {_num(p.seed_spacing_mm, 1, 'mm')}, ≥ {_num(p.min_seed_canal_distance_mm, 1, 'mm')} from the canal</dd>")
    out.append(f"<dt>Needles</dt><dd>≥ {_num(p.min_needle_distance_mm, 1, 'mm')} apart; target margin {_num(p.target_margin_mm, 1, 'mm')}</dd>")
    out.append(f"<dt>Radiobiology</dt><dd>α/β tumour {_num(p.alpha_beta_tumour_Gy, 1, 'Gy')}, cord {_num(p.alpha_beta_cord_Gy, 1, 'Gy')}, "
               f"repair T½ {_num(p.repair_half_time_h, 1, 'h')}</dd>")
    out.append("</dl>")
    return "".join(out)


def _goals_section(plan: Plan) -> str:
    r = plan.results or {}
    goals = r.get("goals") or []
    out = ["<h2>Plan goals</h2>"]
    if not goals:
        out.append('<p class="note">No goals were evaluated for this plan.</p>')
        return "".join(out)
    rows = []
    for g in goals:
        rows.append([_badge(g.get("passed")), _e(g.get("goal", "")), _num(g.get("value"), 2), _num(g.get("limit"), 2)])
    out.append(_table(["Result", "Goal", "Value", "Limit"], rows, num_from=2, row_class="goal-row"))
    failed = r.get("failed_goals") or []
    if failed:
        out.append('<div class="alert"><strong>Goals not met:</strong> ' + "; ".join(_e(f) for f in failed) + "</div>")
    return "".join(out)


def _metrics_section(plan: Plan) -> str:
    r = plan.results or {}
    out = ["<h2>Dose metrics</h2>"]
    targets = r.get("targets") or ({"target": r["target"]} if r.get("target") else {})
    if targets:
        keys = [("volume_cm3", "Volume (cm³)", 2), ("D90_Gy", "D90 (Gy)", 1), ("D100_Gy", "D100 (Gy)", 1),
                ("V100_pct", "V100 (%)", 1), ("V150_pct", "V150 (%)", 1), ("V200_pct", "V200 (%)", 1),
                ("CI", "CI", 3), ("EI", "EI", 3), ("HI", "HI", 3)]
        rows = [[_e(name)] + [_num(m.get(k), d) for k, _, d in keys] for name, m in targets.items()]
        out.append("<h3>Target</h3>" + _table(["Structure"] + [h for _, h, _ in keys], rows))
    oars = r.get("oars") or {}
    if oars:
        keys = [("volume_cm3", "Volume (cm³)", 1), ("Dmax_Gy", "Dmax (Gy)", 1), ("D0.1cc_Gy", "D0.1cc (Gy)", 1),
                ("D1cc_Gy", "D1cc (Gy)", 1), ("D2cc_Gy", "D2cc (Gy)", 1), ("Dmean_Gy", "Dmean (Gy)", 1)]
        if any("EQD2max_Gy" in m for m in oars.values()):
            keys.append(("EQD2max_Gy", "EQD2 max (Gy)", 1))
        if any("EQD2_D0.1cc_Gy" in m for m in oars.values()):
            keys.append(("EQD2_D0.1cc_Gy", "EQD2 D0.1cc (Gy)", 1))
        rows = [[_e(name)] + [_num(m.get(k), d) for k, _, d in keys] for name, m in oars.items()]
        out.append("<h3>Organs at risk</h3>" + _table(["Organ"] + [h for _, h, _ in keys], rows, row_class="oar-row"))
        rb = r.get("radiobiology") or {}
        if rb:
            out.append(f'<p class="small">EQD2 with α/β {_num(rb.get("alpha_beta_oar_Gy"), 1)} Gy, repair T½ '
                       f'{_num(rb.get("repair_half_time_h"), 1)} h: {_e(rb.get("model", ""))}</p>')
    vbs = r.get("vertebral_bodies") or {}
    if vbs:
        keys = [("volume_cm3", "Volume (cm³)", 1), ("Dmean_Gy", "Dmean (Gy)", 1), ("D90_Gy", "D90 (Gy)", 1),
                ("V100_pct", "V100 (%)", 1), ("V150_pct", "V150 (%)", 1)]
        rows = [[_e(name)] + [_num(m.get(k), d) for k, _, d in keys] for name, m in vbs.items()]
        out.append("<h3>Vertebral bodies</h3>" + _table(["Structure"] + [h for _, h, _ in keys], rows))
    if not (targets or oars or vbs):
        out.append('<p class="note">No dose metrics in this plan.</p>')
    return "".join(out)


def _plan_table_section(plan: Plan) -> str:
    out = ["<h2>Treatment plan</h2>",
           '<p class="small">Coordinates are patient LPS mm (+x left, +y posterior, +z superior) in the planning CT. '
           "Retraction method: advance the needle to its tip, release the deepest seed (retraction 0), withdraw by "
           "the listed distance from the tip and release the next seed.</p>"]
    head = ["Needle", "Entry x, y, z (mm)", "Axial °", "Sagittal °", "Depth (mm)", "Seed", "Retraction (mm)",
            "Seed x, y, z (mm)", "Activity (mCi)", "S_K (U)"]
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = []
    rows = plan_table_rows(plan)
    by_needle: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_needle.setdefault(row["needle"], []).append(row)
    for n, needle in enumerate(plan.needles, start=1):
        e = needle.entry
        level = f'<br><span class="small">{_e(needle.target)}</span>' if needle.target else ""
        needle_cells = (f'<td rowspan="{{span}}"><strong>{Plan.needle_name(n)}</strong>{level}</td>'
                        f'<td rowspan="{{span}}" class="num">{e[0]:.1f}, {e[1]:.1f}, {e[2]:.1f}</td>'
                        f'<td rowspan="{{span}}" class="num">{needle.angle_to_axial_deg:.1f}</td>'
                        f'<td rowspan="{{span}}" class="num">{needle.angle_to_sagittal_deg:.1f}</td>'
                        f'<td rowspan="{{span}}" class="num">{needle.depth_mm:.1f}</td>')
        seeds = by_needle.get(Plan.needle_name(n), [])
        if not seeds:
            body.append('<tr class="needle-first needle-empty">' + needle_cells.format(span=1)
                        + '<td colspan="5">no seeds on this needle</td></tr>')
            continue
        for i, s in enumerate(seeds):
            first = needle_cells.format(span=len(seeds)) if i == 0 else ""
            cls = "seed-row needle-first" if i == 0 else "seed-row"
            body.append(
                f'<tr class="{cls}">{first}<td class="num">{s["seed"]}</td><td class="num">{s["retraction_mm"]:.1f}</td>'
                f'<td class="num">{s["seed_x_mm"]:.1f}, {s["seed_y_mm"]:.1f}, {s["seed_z_mm"]:.1f}</td>'
                f'<td class="num">{s["activity_mCi"]:.3f}</td><td class="num">{s["strength_U"]:.4f}</td></tr>'
            )
    out.append(f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    acts = sorted({s.activity_mCi for s in plan.seeds})
    act = ", ".join(f"{a:.3f}" for a in acts) if acts else "–"
    out.append('<dl class="kv">'
               f"<dt>Totals</dt><dd>{plan.n_seeds} seeds on {len(plan.needles)} needles; activity per seed {_e(act)} mCi; "
               f"total activity <strong>{plan.total_activity_mCi:.2f} mCi</strong></dd></dl>")
    if plan.pvp_needles:
        rows2 = []
        for k, n in enumerate(plan.pvp_needles, start=1):
            e, t = n.entry, n.tip
            rows2.append([_e(Plan.pvp_needle_name(n, k)), f"{e[0]:.1f}, {e[1]:.1f}, {e[2]:.1f}", f"{t[0]:.1f}, {t[1]:.1f}, {t[2]:.1f}",
                          f"{n.angle_to_axial_deg:.1f}", f"{n.angle_to_sagittal_deg:.1f}", f"{n.depth_mm:.1f}"])
        out.append("<h3>Vertebroplasty (PVP) needles</h3>")
        out.append(_table(["Needle", "Entry x, y, z (mm)", "Tip x, y, z (mm)", "Axial °", "Sagittal °", "Depth (mm)"],
                          rows2, row_class="pvp-row"))
    return "".join(out)


def _cement_section(plan: Plan) -> str:
    """The vertebroplasty cement plan and the cement/bone-corrected dose beside TG-43."""
    if plan.cement is None:
        return ""
    c, inputs, mat = plan.cement.metrics, plan.cement.inputs, plan.cement.material
    r = plan.results or {}
    rec = inputs.get("recommendation") or {}
    leaks = [(k, v) for k, v in (c.get("leak_flags") or {}).items()]
    rows = [
        ("Vertebral body", _e(c.get("vertebral_body", "")) + (
            " (the cement may spread into the sacral bone around it, less the neural canals: not a leak)"
            if c.get("compartment") else "")),
        ("Cement", _e(mat.name) + (" (radiopaque: seeds kept out of it)" if plan.cement.radiopaque else "")),
        ("Planned volume", f'{_num(inputs.get("planned_mL"), 1, "mL")} ' + (
            "(recommended)" if c.get("volume_source") == "recommended" else
            f'(requested; recommended {_num(rec.get("volume_mL"), 1, "mL")})')),
        ("Simulated volume", _num(c.get("volume_mL"), 2, "mL")),
        ("Fill of the vertebral body", _num(c.get("fill_pct"), 1, "%")),
        ("Max cement cross-section ratio", _num(c.get("max_cross_section_ratio"), 2)),
        ("Endplate contact", _e(c.get("endplate_contact", ""))),
        ("Leak-risk flags", ", ".join(f"<strong>{_e(k)}</strong> at {_num(v, 1, 'mL')}" for k, v in leaks if v is not None)
         or "none"),
        ("Injection from", "; ".join("(" + ", ".join(f"{x:.1f}" for x in t) + ") mm" for t in inputs.get("tips_mm") or [])),
    ]
    out = ["<h2>Vertebroplasty cement</h2>", _table(["Item", "Value"], rows, num_from=2)]
    levels = c.get("levels") or {}
    if levels:  # a multi-level plan: each vertebral body's cement
        lrows = [[_e(name), _num(b.get("volume_mL"), 2, "mL"), _num(b.get("recommended_mL"), 2, "mL"),
                  _num(b.get("fill_pct"), 1, "%"), _num(b.get("max_cross_section_ratio"), 2),
                  _e(b.get("endplate_contact", "")),
                  ", ".join(_e(k) for k, v in (b.get("leak_flags") or {}).items() if v is not None) or "none"]
                 for name, b in levels.items()]
        out.append("<h3>Per level</h3>" + _table(["Vertebral body", "Volume", "Recommended", "Fill",
                                                   "Max cross-section ratio", "Endplate contact", "Leak flags"], lrows))
    reasoning = rec.get("reasoning") or []
    if reasoning:
        out.append('<p class="small">Volume recommendation:</p><ul class="small">'
                   + "".join(f"<li>{_e(x)}</li>" for x in reasoning) + "</ul>")
    if inputs.get("model"):
        out.append(f'<p class="small">Fill simulation: {_e(inputs["model"])}.</p>')
    het = r.get("heterogeneity") or {}
    t = r.get("target") or {}
    if het.get("target") and t:
        h = het["target"]
        rows = [(_e(k), _num(t.get(k), 1), _num(h.get(k), 1)) for k in ("D90_Gy", "D100_Gy", "V100_pct", "V150_pct", "V200_pct")]
        ho = het.get("target_outside_cement")
        if ho:
            rows += [(_e(f"{k} (target outside cement)"), "–", _num(ho.get(k), 1)) for k in ("D90_Gy", "V100_pct")]
        for name, o in (het.get("oars") or {}).items():
            tw = (r.get("oars") or {}).get(name) or {}
            rows.append((_e(f"{name} D0.1cc_Gy"), _num(tw.get("D0.1cc_Gy"), 1), _num(o.get("D0.1cc_Gy"), 1)))
        out.append("<h3>Dose with cement and bone</h3>")
        out.append(_table(["Metric", "TG-43 dose to water", "Corrected (approximate)"], rows))
        alt = (plan.optimiser or {}).get("tg43_alternative")
        if alt:
            out.append(f'<p class="small">Corrected: {_e(het.get("label", ""))}. This plan was optimised on the '
                       "corrected dose and its goals are checked on the target outside the cement.</p>")
            out.append(_side_by_side(plan, alt))
        else:
            out.append(f'<p class="small">Corrected: {_e(het.get("label", ""))}. The plan and its goals use the '
                       "TG-43 dose to water (plan with dose_model='corrected' to make up for the cement's "
                       "shadow).</p>")
    return "".join(out)


def _side_by_side(plan: Plan, alt: Mapping[str, Any]) -> str:
    """The plan optimised on the corrected dose beside the TG-43 plan of the same options."""
    r = plan.results or {}
    t, het = r.get("target") or {}, r.get("heterogeneity") or {}
    ho = het.get("target_outside_cement") or het.get("target") or {}
    name = t.get("name", "target")
    tg, co = alt.get("tg43") or {}, alt.get("corrected") or {}
    rows = [
        ("Seeds", str(alt.get("seeds")), str(plan.n_seeds)),
        ("Activity per seed (mCi)", _num(alt.get("activity_mCi"), 2), _num(plan.seeds[0].activity_mCi, 2)),
        ("Total activity (mCi)", _num(alt.get("total_activity_mCi"), 2), _num(plan.total_activity_mCi, 2)),
        ("TG-43 target D90 (Gy)", _num(tg.get(f"{name} D90_Gy"), 1), _num(t.get("D90_Gy"), 1)),
        ("TG-43 target V100 (%)", _num(tg.get(f"{name} V100_pct"), 1), _num(t.get("V100_pct"), 1)),
        ("Corrected D90 outside cement (Gy)", _num(co.get(f"{name} D90_Gy"), 1), _num(ho.get("D90_Gy"), 1)),
        ("Corrected V100 outside cement (%)", _num(co.get(f"{name} V100_pct"), 1), _num(ho.get("V100_pct"), 1)),
        ("Corrected V200 outside cement (%)", _num(co.get(f"{name} V200_pct"), 1), _num(ho.get("V200_pct"), 1)),
    ]
    return ("<h3>Planned on TG-43 vs on the corrected dose</h3>"
            + _table(["", "TG-43 plan (same options)", "This plan (corrected dose)"], rows)
            + f'<p class="small">{_e(alt.get("what", ""))}; this plan: the fine evaluation.</p>')


def _history_section(plan: Plan) -> str:
    """A re-plan's needles as placed against the plan, or a post-implant check's planned vs delivered dose."""
    h = plan.history or {}
    out = []
    rp = h.get("replan")
    if rp:
        nd = rp.get("needles") or {}
        rows = [(_e(d["needle"]), _num(d.get("tip_error_mm"), 1), _num(d.get("entry_error_mm"), 1),
                 _num(d.get("angle_deg"), 1), _num(d.get("depth_error_mm"), 1)) for d in nd.get("needles", [])]
        out.append("<h2>Needles as placed (re-plan)</h2>")
        out.append(_table(["Needle", "Tip error (mm)", "Entry error (mm)", "Angle (deg)", "Depth error (mm)"], rows))
        if nd.get("unmatched_planned"):
            out.append('<div class="alert"><strong>Not found on the CT:</strong> '
                       + ", ".join(_e(x) for x in nd["unmatched_planned"]) + "</div>")
        pr = rp.get("planned_results") or {}
        t = (plan.results or {}).get("target") or {}
        rows = [(_e(k), _num(pr.get(k), 1), _num(t.get(k), 1)) for k in ("D90_Gy", "V100_pct", "V150_pct", "V200_pct")]
        out.append(_table(["Target", "Planned", "Re-planned on the placed needles"], rows))
    pp = h.get("postplan")
    if pp:
        s = pp.get("seeds") or {}
        out.append("<h2>Post-implant check</h2>")
        out.append(f"<p>{_e(s.get('count'))} seeds found on the post-operative CT; "
                   f"{len(s.get('matched') or [])} matched to the plan (mean distance {_num(s.get('mean_distance_mm'), 1)} "
                   f"mm), missing: {_e(s.get('missing') or 'none')}, extra: {_e(s.get('extra') or 'none')}.</p>")
        comp = (plan.results or {}).get("comparison") or {}
        rows = [(_e(k), _num(c.get("planned"), 1), _num(c.get("delivered"), 1), _num(c.get("difference"), 1))
                for k, c in comp.items()]
        if rows:
            out.append(_table(["Metric", "Planned", "Delivered", "Difference"], rows))
        c = pp.get("cement")
        if c:
            leaks = ", ".join(f"{_e(lk['site'])} {_num(lk['volume_mL'], 2, 'mL')}" for lk in c.get("leaks") or [])
            out.append(f"<p>Cement found: {_num(c.get('volume_mL'), 2, 'mL')}, fill {_num(c.get('fill_pct'), 1, '%')}, "
                       f"max cross-section ratio {_num(c.get('max_cross_section_ratio'), 2)}, endplate contact "
                       f"{_e(c.get('endplate_contact'))}; leaks: {leaks or 'none'}.</p>")
    return "".join(out)


def _case_section(case: Mapping[str, Any]) -> str:
    """The case file's description and patient block (as given), when it has them."""
    out = []
    if case.get("description"):
        out.append(f'<p class="case-description">{_e(case["description"])}</p>')
    patient = case.get("patient") or {}
    if patient:
        labels = {"age_y": "age {} y", "primary": "primary {}", "primary_growth": "{} growth",
                  "metastatic_segments": "{} metastatic segment(s)", "kps": "KPS {}"}
        items = [labels[k].format(f"{patient[k]:g}" if isinstance(patient[k], float) else patient[k])
                 for k in labels if k in patient]
        out.append(f'<p class="meta small">Patient: {_e(", ".join(items))}</p>')
    return "".join(out)


def _context_section(plan: Plan) -> str:
    """Published figures beside the plan's own (cement distribution, leak and pain factors, prognostic index)."""
    ctx = (plan.results or {}).get("clinical_context")
    if not ctx:
        return ""
    out = ["<h2>Clinical context</h2>", f'<p class="note">{_e(ctx.get("label", ""))}.</p>']
    cs = ctx.get("cross_section")
    if cs:
        verdict = "above" if cs.get("above") else "below"
        out.append(f"<h3>Cement distribution</h3><p>Maximum cement cross-section ratio {_num(cs.get('value'), 2)} "
                   f"({verdict} {_num(cs.get('threshold'), 2)}).</p><p class=\"small\">{_e(cs.get('source', ''))}</p>")
    lr = ctx.get("leak_risk_factors")
    if lr:
        rows = [(_e(k), _e(v)) for k, v in (lr.get("factors") or {}).items()]
        out.append("<h3>Cement-leak risk factors</h3>" + _table(["Factor", "What the plan knows"], rows, num_from=2)
                   + f'<p class="small">{_e(lr.get("source", ""))}</p>')
    rp = ctx.get("residual_pain_factors")
    if rp:
        rows = [("Treated vertebrae", _e(rp.get("treated_vertebrae"))),
                ("Cement touching the endplates", _e(rp.get("endplate_contact"))),
                ("Lesion filled by cement", _num(rp.get("lesion_filled_by_cement_pct"), 1, "%")),
                ("Fill of the vertebral body", _num(rp.get("fill_pct"), 1, "%"))]
        out.append("<h3>Residual-pain factors</h3>" + _table(["Factor", "This plan"], rows, num_from=2)
                   + f'<p class="small">{_e(rp.get("source", ""))}</p>')
    pi = ctx.get("prognostic_index") or {}
    out.append("<h3>Prognostic index</h3>")
    if pi.get("computed"):
        out.append(f"<p>{_e(pi['formula'])}: <strong>PI = {_num(pi['PI'], 3)}</strong> (codes: "
                   + ", ".join(f"{_e(k)} {_e(v)}" for k, v in pi["codes"].items()) + ").</p>"
                   + f'<p class="small">Coding assumed: {_e("; ".join(f"{k}: {v}" for k, v in pi["coding_assumed"].items()))}'
                   f' - {_e(pi["coding_note"])}. {_e(pi["source"])}.</p>')
        if pi.get("kaplan_meier"):
            out.append('<ul class="small">' + "".join(f"<li>{_e(x)}</li>" for x in pi["kaplan_meier"].values())
                       + "</ul>")
    else:
        out.append(f'<p class="small">Not computed: {_e(pi.get("note", ""))}.</p>')
    return "".join(out)


def _warnings_section(plan: Plan, unverified: bool) -> str:
    r = plan.results or {}
    items = [str(w) for w in (r.get("warnings") or [])]
    for ne in r.get("not_evaluated") or []:
        items.append(f"not evaluated: {ne}")
    if unverified:
        items.append(f"seed model {plan.seed_model.name} is UNVERIFIED")
    for f in r.get("failed_goals") or []:
        items.append(f"goal not met: {f}")
    out = ["<h2>Warnings</h2>"]
    if items:
        out.append("<ul class=\"warnings\">" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>")
    else:
        out.append("<p>None.</p>")
    return "".join(out)


def _images_section(images: Mapping[str, str | Path]) -> str:
    out = []
    if _DVH_KEY in images:
        out.append("<h2>Dose-volume histogram</h2>" + _img(images[_DVH_KEY], "Cumulative DVH"))
    slices = [k for k in _SLICE_KEYS if k in images]
    if slices:
        out.append("<h2>Slice views</h2>")
        out.extend(_img(images[k], f"{k.capitalize()} slice through the target centroid") for k in slices)
    extra = [k for k in images if k != _DVH_KEY and k not in _SLICE_KEYS]
    if extra:
        out.append("<h2>3D views</h2>")
        out.append('<div class="grid2">' + "".join(_img(images[k], k.replace("_", " ")) for k in extra) + "</div>")
    return f'<section class="images">{"".join(out)}</section>' if out else ""


# ----------------------------------------------------------------------------- public
def report_html(result_or_plan: Any, *, images: Mapping[str, str | Path] | None = None, title: str | None = None,
                date: str | None = None, sections: Sequence[str] = ()) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    from .. import __version__
    from ..plan import CITATIONS

    plan = _plan_of(result_or_plan)
    case = plan.case or {}
    case_name = str(case.get("name") or case.get("case_name") or "unnamed case")
    software = plan.software or {}
    sw = f"{software.get('name', 'seedplan')} {software.get('version', __version__)}"
    when = date or plan.run.get("created") or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    ttl = title or "125I seed implant plan"
    unverified = _unverified(plan)

    parts = [f"<h1>{_e(ttl)}</h1>",
             f'<p class="meta"><span>Case: <strong>{_e(case_name)}</strong></span><span>Plan date: {_e(when)}</span>'
             f"<span>Software: {_e(sw)}</span></p>"]
    if case.get("ct_series_uid"):
        parts.append(f'<p class="meta small">CT series UID {_e(case["ct_series_uid"])}</p>')
    parts.append(_case_section(case))
    if unverified:
        parts.append('<div class="alert unverified"><strong>UNVERIFIED seed model: '
                     f"{_e(plan.seed_model.name)}</strong><br>The TG-43 dataset of this seed model has not been verified "
                     "against its primary publication. Doses in this report must not be used clinically until a "
                     "physicist has verified the dataset.</div>")
    r = plan.results or {}
    t = r.get("target") or {}
    summary = (f"{plan.n_seeds} seeds, {len(plan.needles)} needles, total activity {plan.total_activity_mCi:.2f} mCi; "
               f"PD {plan.prescription.dose_Gy:g} Gy")
    if t:
        summary += f"; target D90 {_num(t.get('D90_Gy'), 1)} Gy, V100 {_num(t.get('V100_pct'), 1)} %"
    failed = r.get("failed_goals") or []
    if r.get("goals") is not None:
        summary += "; goals: " + ("all met" if not failed else f"{len(failed)} NOT met")
    parts.append(f'<p class="note">{_e(summary)}</p>')
    parts.append(_seed_model_section(plan))
    parts.append(_prescription_section(plan))
    parts.append(_goals_section(plan))
    parts.append(_metrics_section(plan))
    parts.append(_plan_table_section(plan))
    parts.append(_cement_section(plan))
    parts.append(_history_section(plan))
    parts.append(_context_section(plan))
    if images:
        parts.append(_images_section(images))
    parts.extend(sections)
    parts.append(_warnings_section(plan, unverified))
    parts.append("<h2>Sources of the prescription defaults</h2><ul class=\"small\">"
                 + "".join(f"<li><strong>{_e(k)}</strong>: {_e(v)}</li>" for k, v in CITATIONS.items()) + "</ul>")
    parts.append(f"<footer><strong>{_e(_FOOTER)}</strong><br>Generated by {_e(sw)}.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(ttl)}: {_e(case_name)}</title>"
            f"<style>{_CSS}</style></head><body><main>{''.join(parts)}</main></body></html>\n")


def write_report(result_or_plan: Any, out_path: str | Path, *, images: Mapping[str, str | Path] | None = None,
                 title: str | None = None, date: str | None = None, sections: Sequence[str] = ()) -> Path:
    """Write the plan report as one self-contained HTML file, atomically.

    Parameters
    ----------
    result_or_plan : PlanningResult or Plan
        The plan (with its ``results`` metrics and goals).
    out_path : path-like
        Destination ``.html`` file.
    images : mapping, optional
        Name -> PNG path, embedded as data URIs: ``"dvh"``, ``"axial"``,
        ``"sagittal"``, ``"coronal"``; any other name (3D screenshots) goes
        into a "3D views" section.
    title, date : str, optional
        Report title and date (default: the plan's creation time).
    sections : sequence of str
        Further HTML sections (already escaped, e.g. :func:`seedplan.robustness.robustness_html`), placed
        before the warnings.

    Returns
    -------
    Path
    """
    return write_text_atomic(out_path, report_html(result_or_plan, images=images, title=title, date=date,
                                                   sections=sections))


def write_plan_figures(result: Any, ct: Any, structures: Any, out_dir: str | Path,
                       **slice_kwargs: Any) -> dict[str, Path]:
    """Render the report's figures into ``out_dir``: the slice views and the DVH (PNG).

    Parameters
    ----------
    result, ct, structures, out_dir, **slice_kwargs
        See :func:`write_plan_report`.

    Returns
    -------
    dict
        ``"axial"``, ``"sagittal"``, ``"coronal"`` and ``"dvh"`` -> path.
    """
    from ..viz.dvh_plot import plot_dvh
    from ..viz.slices import render_slice_views

    out = Path(out_dir)
    plan = _plan_of(result)
    paths: dict[str, Path] = dict(render_slice_views(ct, structures, plan, result.dose_grid, result.dose_Gy, out,
                                                     **slice_kwargs))
    roles = {s.name: s.role for s in structures.values()} if structures is not None else None
    paths["dvh"] = plot_dvh(result.evaluation, plan.prescription.dose_Gy, out / "dvh.png", roles=roles)
    return paths


def write_plan_report(result: Any, ct: Any, structures: Any, out_dir: str | Path, *,
                      images: Mapping[str, str | Path] | None = None,
                      figures: Mapping[str, Path] | None = None, **slice_kwargs: Any) -> dict[str, Path]:
    """Render the slice views and the DVH into ``out_dir`` and write ``report.html``.

    Parameters
    ----------
    result : PlanningResult
        From :func:`~seedplan.planning.plan_case` (plan, dose grid and array, evaluation), or any
        object with ``plan``, ``dose_grid``, ``dose_Gy`` and ``evaluation``.
    ct : CTImage
    structures : StructureSet
    out_dir : path-like
    images : mapping, optional
        Extra PNGs (e.g. 3D screenshots) to embed.
    figures : mapping, optional
        What :func:`write_plan_figures` returned for these arguments, when it was called already (in
        another process, beside other work): the figures are not drawn again.
    **slice_kwargs
        Passed to :func:`~seedplan.viz.slices.render_slice_views`.

    Returns
    -------
    dict
        ``"axial"``, ``"sagittal"``, ``"coronal"``, ``"dvh"`` and ``"report"`` -> path.
    """
    out = Path(out_dir)
    plan = _plan_of(result)
    paths: dict[str, Path] = dict(figures) if figures is not None else write_plan_figures(
        result, ct, structures, out, **slice_kwargs)
    all_images: dict[str, Path] = dict(paths)
    for k, v in (images or {}).items():
        all_images[k] = Path(v)
    paths["report"] = write_report(plan, out / "report.html", images=all_images)
    return paths
