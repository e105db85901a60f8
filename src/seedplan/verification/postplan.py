"""Post-implant dosimetry: the plan as delivered, from the seeds found on the post-operative CT.

:func:`delivered_plan` turns a plan and its :class:`~seedplan.verification.SeedVerification` into a
:class:`~seedplan.plan.Plan` whose seeds are the detected ones, in the planning frame, at the plan's
strengths (a matched seed keeps its planned strength, an extra one gets the plan's per-seed strength),
decayed to the implant date as every plan's dose is.  Its dose and metrics come from the same plan layer
as the planned dose, so the two compare term by term (:func:`comparison`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from ..plan import Plan, PlannedSeed
from .seeds import SeedVerification

__all__ = ["delivered_plan", "comparison", "postplan_record"]


def _needle_of(point: np.ndarray, plan: Plan) -> tuple[int, float]:
    """The plan's needle nearest to ``point`` (1-based) and the retraction along it (mm from its tip)."""
    best, best_d, best_r = 1, np.inf, 0.0
    for k, n in enumerate(plan.needles, start=1):
        d = n.direction
        t = float(np.clip((point - n.entry) @ d, 0.0, n.depth_mm))
        dist = float(np.linalg.norm(n.entry + t * d - point))
        if dist < best_d:
            best, best_d, best_r = k, dist, n.depth_mm - t
    return best, max(0.0, best_r)


def delivered_plan(plan: Plan, seeds: SeedVerification) -> Plan:
    """The plan with the seeds found on the post-operative CT (planning frame) in place of the planned ones."""
    if not isinstance(seeds, SeedVerification):
        raise InputError(f"seeds must be a SeedVerification (verify_seeds), got {type(seeds).__name__}")
    if seeds.n_detected == 0:
        raise InputError("no seed was found on the post-operative CT: there is no delivered dose to compute")
    if not plan.needles:
        raise InputError("the plan has no needles: its seeds cannot be assigned")
    matched = {p.detected: p.planned for p in seeds.pairs}
    typical = plan.seeds[0] if plan.seeds else None
    out = []
    for j, (pos, ax) in enumerate(zip(seeds.positions_mm, seeds.axes)):
        src = plan.seeds[matched[j]] if j in matched else typical
        needle, retraction = _needle_of(pos, plan)
        out.append(PlannedSeed(tuple(float(x) for x in pos), tuple(float(x) for x in ax), needle, retraction,
                               src.activity_mCi, src.strength_U))
    notes = [f"post-implant: {seeds.n_detected} seeds found on the post-operative CT ({len(seeds.pairs)} matched to "
             f"the {seeds.n_planned} planned, {len(seeds.missing)} missing, {len(seeds.extra)} extra); the delivered "
             "dose uses the planned strengths, decayed to the implant date"]
    return replace(plan, seeds=tuple(out), notes=tuple(notes), results={}, optimiser={})


def comparison(planned: Mapping[str, Any], delivered: Mapping[str, Any]) -> dict[str, Any]:
    """Planned vs delivered: target D90, V100, V150, V200, each organ's D0.1cc, and the seed counts."""
    out: dict[str, Any] = {}
    pt, dt = planned.get("target") or {}, delivered.get("target") or {}
    for k in ("D90_Gy", "V100_pct", "V150_pct", "V200_pct"):
        if k in pt and k in dt:
            out[f"target {k}"] = {"planned": pt[k], "delivered": dt[k], "difference": dt[k] - pt[k]}
    for name, m in (delivered.get("oars") or {}).items():
        q = (planned.get("oars") or {}).get(name)
        if q and "D0.1cc_Gy" in q:
            out[f"{name} D0.1cc_Gy"] = {"planned": q["D0.1cc_Gy"], "delivered": m["D0.1cc_Gy"],
                                        "difference": m["D0.1cc_Gy"] - q["D0.1cc_Gy"]}
    ps, ds = (planned.get("seeds") or {}).get("count"), (delivered.get("seeds") or {}).get("count")
    out["seed count"] = {"planned": ps, "delivered": ds, "difference": None if ps is None or ds is None else ds - ps}
    return out


def postplan_record(registration: Any, seeds: SeedVerification, cement: Any | None) -> dict[str, Any]:
    """``postplan.json``: the registration, the seeds (planning frame) and the cement found."""
    s = seeds.summary()
    rec: dict[str, Any] = {
        "registration": {"matrix_later_to_planning": [[round(float(x), 6) for x in row] for row in registration.matrix],
                         "metric": registration.metric, "quality": registration.quality,
                         "bone_dice": registration.bone_dice, "source": registration.source},
        "seeds": {
            "count": seeds.n_detected,
            "positions_mm": [[round(float(x), 3) for x in p] for p in seeds.positions_mm],
            "axes": [[round(float(x), 5) for x in a] for a in seeds.axes],
            "matched": [{"planned": p["planned"], "detected": p["detected"], "distance_mm": p["distance_mm"]}
                        for p in s["pairs"]],
            "missing": s["missing"],
            "extra": s["extra"],
            "mean_distance_mm": s["mean_distance_mm"],
            "max_distance_mm": s["max_distance_mm"],
            "warnings": s["warnings"],
        },
    }
    if cement is not None:
        c = cement.summary()
        rec["cement"] = {"volume_mL": c["volume_mL"], "max_cross_section_ratio": c["max_cross_section_ratio"],
                         "endplate_contact": c["endplate_contact"], "fill_pct": c["fill_pct"],
                         "outside_vertebral_body_mL": c["outside_vertebral_body_mL"],
                         "leaks": [{"site": lk["site"], "volume_mL": lk["volume_mL"]} for lk in c["leaks"]],
                         "warnings": c["warnings"]}
    return rec
