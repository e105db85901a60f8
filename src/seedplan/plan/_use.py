"""Using a saved plan: its dose on a grid or at points, its evaluation and its metrics.

Everything here reads a :class:`~seedplan.plan.Plan` and the case's CT and
structures; nothing re-runs a planning algorithm (the cement and the derived
structures are the plan's stored masks).  The planner calls the same
functions at the end of :func:`seedplan.planning.plan_case`, so a plan that
is saved, reloaded and re-evaluated gives the same metrics, byte for byte.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..dose import total_dose, total_dose_grid
from ..errors import InputError
from ..evaluation.dvh import DVH
from ..evaluation.metrics import Evaluation, SamplingOptions, evaluate
from ..evaluation.radiobiology import bed_permanent_Gy, eqd2_Gy
from ..evaluation.sampling import sample_mask_points
from ..geometry import Grid
from ..imaging.ct import CTImage
from ..imaging.structures import COMBINED_TARGET, Role, StructureSet
from ._context import clinical_context
from ._goals import check_goals
from ._plan import Plan

__all__ = [
    "HETEROGENEITY_LABEL",
    "OAR_REACH_MM",
    "dose_region",
    "organs_outside_grid",
    "plan_structures",
    "plan_dose_grid",
    "plan_dose_at",
    "evaluate_plan",
    "corrected_dose_metrics",
    "plan_metrics",
    "reevaluate_plan",
]

#: How the corrected dose is labelled wherever it is reported.
HETEROGENEITY_LABEL = ("TG-43 dose x primary attenuation through cement and bone relative to water "
                       "(approximate; not a TG-186 model-based dose)")

#: Roles whose dose is evaluated.
EVALUATED_ROLES = (Role.TARGET, Role.OAR, Role.CANAL, Role.VERTEBRAL_BODY)


def plan_structures(plan: Plan, structures: StructureSet, *, cement: bool = False) -> StructureSet:
    """The case's structures completed with those the plan derived (and its cement, when asked).

    A structure of the case always wins over a derived one of the same name.
    """
    extra = [s for s in plan.structures if s.name not in structures]
    if cement and plan.cement is not None and "cement" not in structures:
        extra.append(plan.cement.structure())
    return StructureSet([*structures.values(), *extra]) if extra else structures


def _region_points(reference: Grid, region_mask: np.ndarray) -> np.ndarray:
    """World positions of the corners of the mask's index bounding box."""
    k, j, i = np.nonzero(region_mask)
    lo, hi = np.array([i.min(), j.min(), k.min()]), np.array([i.max(), j.max(), k.max()])
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])], float)
    return reference.index_to_world(corners)


def dose_grid_for(plan: Plan, reference: Grid, region_mask: np.ndarray | None = None, *, spacing_mm: float = 1.0,
                  margin_mm: float = 25.0) -> Grid:
    """A dose grid aligned with ``reference`` covering the seeds (and ``region_mask``) plus a margin, cropped to it."""
    pts = [plan.positions_mm]
    if region_mask is not None and region_mask.any():
        pts.append(_region_points(reference, region_mask))
    idx = reference.world_to_index(np.vstack(pts))
    sp = reference.spacing
    lo = np.maximum(idx.min(axis=0) - margin_mm / sp, 0.0)
    hi = np.minimum(idx.max(axis=0) + margin_mm / sp, np.array(reference.size) - 1.0)
    if np.any(hi < lo):
        raise InputError("the plan's seeds lie outside the CT: no dose grid on the CT can hold them")
    origin = reference.index_to_world(np.floor(lo))
    extent = (np.ceil(hi) - np.floor(lo)) * sp
    n = np.floor(extent / spacing_mm + 1e-9).astype(int) + 1
    return Grid(origin, [spacing_mm] * 3, n, reference.direction_matrix)


#: Organs at risk closer than this to a seed are covered by the exported dose grid: at 50 mm a 1 mCi
#: 6711 seed gives ~0.4 Gy to complete decay (TG-43U1 g(5 cm) = 0.364), ~5 % of the prescription for a
#: plan of 14 such seeds.
OAR_REACH_MM = 50.0


def dose_region(plan: Plan, structures: StructureSet, reference: Grid, *, reach_mm: float = OAR_REACH_MM,
                target: bool = True) -> np.ndarray:
    """The voxels (on ``reference``) a dose grid must cover: the target and every organ part within reach of a seed."""
    region = np.zeros(reference.shape, dtype=bool)
    structures = plan_structures(plan, structures)
    if plan.n_seeds:
        idx = reference.world_to_index(plan.positions_mm)[:, ::-1]  # (k, j, i)
        sp = np.asarray(reference.spacing_mm, dtype=float)[::-1]
        lo = np.maximum(np.floor(idx.min(0) - reach_mm / sp), 0).astype(int)
        hi = np.minimum(np.ceil(idx.max(0) + reach_mm / sp) + 1, reference.shape).astype(int)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        for s in structures.values():
            if s.role in (Role.OAR, Role.CANAL) and not s.is_empty:
                region[box] |= s.mask_on(reference)[box]
    if target:
        for s in structures.by_role(Role.TARGET):
            region |= s.mask_on(reference)
    return region


def organs_outside_grid(grid: Grid, structures: StructureSet, reference: Grid) -> dict[str, float]:
    """Per organ at risk, the % of its volume outside ``grid`` (only organs with some part outside)."""
    out = {}
    aligned = np.allclose(grid.direction_matrix, reference.direction_matrix, atol=1e-9)
    if aligned:  # the voxels of ``reference`` inside ``grid``, axis by axis (no per-voxel world positions)
        offset = (np.asarray(reference.origin_mm, float) - np.asarray(grid.origin_mm, float)) @ grid.direction_matrix
        inside_ijk = []
        for a in range(3):
            g = (offset[a] + np.arange(reference.size[a]) * reference.spacing[a]) / grid.spacing[a]
            inside_ijk.append((g >= -0.5) & (g <= grid.size[a] - 0.5))
        ki, ji, ii = inside_ijk[2], inside_ijk[1], inside_ijk[0]
    for s in structures.values():
        if s.role in (Role.OAR, Role.CANAL) and not s.is_empty:
            mask = s.mask_on(reference)
            total = int(np.count_nonzero(mask))
            if aligned:
                inside = int(np.count_nonzero(mask[ki][:, ji][:, :, ii]))
                outside = 100.0 * (total - inside) / total
            else:
                pts = reference.index_to_world(np.argwhere(mask)[:, ::-1].astype(float))
                outside = 100.0 * float(np.mean(~grid.contains(pts)))
            if outside > 0:
                out[s.name] = round(outside, 1)
    return out


def plan_dose_grid(plan: Plan, reference: Grid, region_mask: np.ndarray | None = None, *, spacing_mm: float = 1.0,
                   margin_mm: float = 25.0) -> tuple[Grid, np.ndarray]:
    """Total permanent-implant dose (Gy) of ``plan`` on a grid around its seeds, indexed [z, y, x].

    The grid is aligned with ``reference`` (the CT), covers the seeds and
    ``region_mask`` (on ``reference``) plus ``margin_mm``, and is cropped to ``reference``.
    """
    if plan.n_seeds == 0:
        raise InputError("the plan has no seeds: nothing to compute")
    g = dose_grid_for(plan, reference, region_mask, spacing_mm=spacing_mm, margin_mm=margin_mm)
    dose = total_dose_grid(g, plan.positions_mm, plan.strengths_at_implant_U, source=plan.seed_model, axes=plan.axes,
                           formalism=plan.formalism)
    return g, dose


def plan_dose_at(plan: Plan) -> Callable[[np.ndarray], np.ndarray]:
    """``dose_at(points_mm) -> Gy``: the plan's total dose at points."""
    pos, s, ax = plan.positions_mm, plan.strengths_at_implant_U, plan.axes

    def dose_at(points_mm: np.ndarray) -> np.ndarray:
        return total_dose(points_mm, pos, s, source=plan.seed_model, axes=ax, formalism=plan.formalism)

    return dose_at


def evaluate_plan(plan: Plan, structures: StructureSet, *, sampling: SamplingOptions | None = None) -> Evaluation:
    """Evaluate the plan's dose on its target, organs at risk and vertebral body (fine sampling).

    ``structures`` are the case's; the plan's derived structures are added (:func:`plan_structures`).
    ``sampling`` defaults to :class:`~seedplan.evaluation.SamplingOptions` (adaptive); pass
    ``SamplingOptions(adaptive=False)`` for the exact (reference) evaluation.
    """
    structures = plan_structures(plan, structures)
    keep = [s for s in (*structures.targets, *structures.values())
            if s.role in EVALUATED_ROLES and not s.is_empty]
    keep = list({s.name: s for s in keep}.values())  # the combined target of a multi-level plan first
    bodies = structures.by_role(Role.BODY)
    return evaluate(
        keep,
        plan_dose_at(plan),
        plan.prescription.dose_Gy,
        body=bodies[0] if bodies else None,
        include_points_mm=plan.positions_mm,
        alpha_beta_oar_Gy=plan.prescription.alpha_beta_cord_Gy,
        repair_half_time_h=plan.prescription.repair_half_time_h,
        sampling=sampling,
    )


def corrected_dose_metrics(plan: Plan, ct: CTImage, structures: StructureSet, *,
                           points_per_mm3: float = 1.0, exact: bool = False) -> dict[str, Any]:
    """Target and OAR metrics of the cement/bone-corrected dose (:mod:`seedplan.dose.heterogeneity`).

    Needs the plan's cement.  Structures are sampled at ``points_per_mm3`` (1 mm)
    with partial-volume weights; the target is also reported without its cement-filled part.
    Organs at risk farther than :data:`OAR_REACH_MM` from every seed are left out (their dose is a
    few % of the prescription at most).

    All structures go through one :func:`~seedplan.dose.heterogeneity.heterogeneity_dose_sets` call:
    the target exactly at every point, each organ exactly wherever its dose may reach its hottest
    1 cm^3 (its Dmax, D0.1cc and D1cc are those of the exact ray trace); ``exact=True`` traces every
    point of every organ (the reference).
    """
    from ..dose.heterogeneity import _hottest_dose, heterogeneity_dose_sets, mu_map

    if plan.cement is None:
        raise InputError("the plan has no cement: the cement/bone-corrected dose needs one")
    structures = plan_structures(plan, structures)
    grid = ct.grid
    cmask = plan.cement.mask_on(grid)
    mu = mu_map(ct, cmask, plan.cement.material)
    pos, s, ax, pd = plan.positions_mm, plan.strengths_at_implant_U, plan.axes, plan.prescription.dose_Gy

    def target_block(h: DVH, name: str) -> dict[str, Any]:
        return {"name": name, "volume_cm3": h.volume_cm3, "D90_Gy": h.D(90), "D100_Gy": h.D(100),
                "V100_pct": h.V(pd), "V150_pct": h.V(1.5 * pd), "V200_pct": h.V(2.0 * pd)}

    # (key, name, mask, hottest volume read: None for every point)
    wanted: list[tuple[str, str, np.ndarray, float | None]] = []
    targets = structures.targets
    if targets:
        tm = targets[0].mask_on(grid)
        wanted.append(("target", targets[0].name, tm, None))
        rest = tm & ~cmask
        if rest.any() and rest.sum() < tm.sum():
            wanted.append(("target_outside_cement", f"{targets[0].name} outside cement", rest, None))
    near = dose_region(plan, structures, grid, target=False)  # organs beyond reach get a negligible dose
    for x in structures.values():
        if x.role in (Role.OAR, Role.CANAL) and not x.is_empty:
            m = x.mask_on(grid)
            if (m & near).any():
                wanted.append(("oar", x.name, m, 1.0))
    samples = [sample_mask_points(m, grid, points_per_mm3=points_per_mm3) for _k, _n, m, _v in wanted]
    doses = heterogeneity_dose_sets([p for p, _w in samples], pos, s, mu, grid, weights_cm3=[w for _p, w in samples],
                                    hottest_cm3=[v for *_x, v in wanted], source=plan.seed_model, axes=ax,
                                    formalism=plan.formalism, exact=exact)

    out: dict[str, Any] = {"label": HETEROGENEITY_LABEL, "cement_material": plan.cement.material.name,
                           "sampling_points_per_mm3": points_per_mm3}
    oars: dict[str, Any] = {}
    for (key, name, _m, _v), (_p, w), d in zip(wanted, samples, doses):
        if key == "oar" and float(np.sum(w)) > 1.001 and np.all(np.isfinite(d.dose_Gy)) and d.dose_Gy.min() >= 0:
            # the DVH's Dmax, D0.1cc and D1cc (an organ of more than 1 cm^3) without sorting every sample
            oars[name] = {"Dmax_Gy": float(np.max(d.dose_Gy)), "D0.1cc_Gy": _hottest_dose(d.dose_Gy, w, 0.1),
                          "D1cc_Gy": _hottest_dose(d.dose_Gy, w, 1.0)}
            continue
        h = DVH.from_samples(d.dose_Gy, w, name=name)
        if key == "oar":
            oars[name] = {"Dmax_Gy": h.max_Gy, "D0.1cc_Gy": h.D_cc(0.1), "D1cc_Gy": h.D_cc(1.0)}
        else:
            out[key] = target_block(h, name)
    out["oars"] = oars  # the keys in the order they always had
    out["organs_beyond_mm"] = OAR_REACH_MM
    return out


def plan_metrics(plan: Plan, ev: Evaluation, *, corrected: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``metrics.json`` layout of a plan: its evaluation, goals, seeds, cement and what the planner noted.

    A function of the plan and its evaluation only (no time, no timing), so a
    re-evaluated plan gives the same metrics.
    """
    m = dict(ev.metrics)
    presc = plan.prescription
    if m.get("target"):
        target = dict(m["target"])
        bed = bed_permanent_Gy(target["D90_Gy"], presc.alpha_beta_tumour_Gy, half_life_d=presc.half_life_d,
                               repair_half_time_h=presc.repair_half_time_h)
        target["BED_D90_Gy"] = float(bed)
        target["EQD2_D90_Gy"] = float(eqd2_Gy(bed, presc.alpha_beta_tumour_Gy))
        target["alpha_beta_Gy"] = presc.alpha_beta_tumour_Gy
        m["target"] = target
    m["seeds"] = {
        "count": plan.n_seeds,
        "activity_mCi": plan.seeds[0].activity_mCi if plan.seeds else 0.0,
        "strength_U": plan.seeds[0].strength_U if plan.seeds else 0.0,
        "total_activity_mCi": round(plan.total_activity_mCi, 6),
    }
    m["needles"] = {"count": len(plan.needles)}
    m["dose_model"] = {
        "formalism": f"AAPM TG-43U1 {plan.formalism}, dose to water in water (no heterogeneity correction)",
        "seed_model": plan.seed_model.name,
        "seed_model_status": plan.seed_model_status,
        "total_dose_convention": "permanent implant, D = Ddot0 * T1/2 / ln 2",
    }
    on_corrected = bool(corrected and corrected.get("target") and plan.options is not None
                        and plan.options.dose_model == "corrected")
    # the goals are checked on the dose the seeds were planned on
    # (on the corrected dose: the lesion outside the cement, which PMMA no longer fills with tumour)
    planned_on = (corrected.get("target_outside_cement") or corrected["target"]) if on_corrected else None
    layout = m if not on_corrected else {
        "prescription_Gy": m.get("prescription_Gy"), "target": planned_on,
        "targets": {planned_on["name"]: planned_on}, "oars": corrected.get("oars") or {}}
    goals = presc.goals_for_metrics(layout)
    checks = check_goals(goals, layout)
    m["dose_model"]["goals_checked_on"] = HETEROGENEITY_LABEL if on_corrected else "the TG-43 dose to water"
    m["goals"] = [{"goal": g.goal, "value": g.value, "limit": g.limit, "passed": bool(g.passed)} for g in checks]
    m["failed_goals"] = [g.goal for g in checks if not g.passed]
    if plan.cement is not None:
        m["cement"] = dict(plan.cement.metrics)
    m["clinical_context"] = clinical_context(m.get("cement"), plan.case.get("patient"),
                                             n_levels=max(1, len([n for n in m.get("targets") or {} if n != COMBINED_TARGET])))
    notes = list(plan.notes) + (list(plan.cement.warnings) if plan.cement is not None else [])
    if corrected is not None:
        m["heterogeneity"] = corrected
        t = corrected.get("target") or {}
        pd = presc.dose_Gy
        if t and (t["D90_Gy"] < pd or t["V100_pct"] < presc.v100_goal_pct):
            notes.append(f"with the cement and bone attenuation (approximate correction) the target D90 is "
                         f"{100 * t['D90_Gy'] / pd:.0f} % of PD ({t['D90_Gy']:.1f} Gy) and V100 {t['V100_pct']:.1f} %: "
                         "the TG-43 dose to water overstates the dose the cement shadows"
                         + ("" if on_corrected else "; plan with dose_model='corrected' to make up for it"))
    if plan.optimiser:
        m["optimiser"] = dict(plan.optimiser)
    if notes:
        m["warnings"] = list(m.get("warnings") or []) + notes
    return m


def reevaluate_plan(plan: Plan, ct: CTImage, structures: StructureSet, *,
                    heterogeneity: bool | None = None) -> tuple[Evaluation, dict[str, Any]]:
    """Evaluate a (loaded) plan on its case again: metrics, goals and the corrected dose.

    Parameters
    ----------
    heterogeneity : bool, optional
        Also compute the cement/bone-corrected dose (default: as the plan's options say,
        when it has cement).

    Returns
    -------
    (Evaluation, dict)
        The evaluation and the ``metrics.json`` layout (:func:`plan_metrics`).
    """
    ev = evaluate_plan(plan, structures)
    if heterogeneity is None:
        heterogeneity = plan.options.heterogeneity if plan.options is not None else True
    corrected = corrected_dose_metrics(plan, ct, structures) if heterogeneity and plan.cement is not None else None
    return ev, plan_metrics(plan, ev, corrected=corrected)
