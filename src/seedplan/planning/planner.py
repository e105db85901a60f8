"""The automatic planning chain: CT + structures -> needles -> seeds -> dose -> evaluation.

:func:`plan_case` is the one call behind ``seedplan demo`` and
``seedplan plan``.  It reads the roles of the structures:

* ``target``: the lesion; seeds go inside it expanded by the prescription's
  margin, cropped away from the canal;
* ``oar`` / ``avoidance``: no needle may pass within its margin; organs with
  a limit in the prescription (cord/cauda D0.1cc) constrain the optimiser;
* ``vertebral_body`` and structures named ``pedicle*``: the bone corridor a
  needle may cross (trocar access, as in vertebroplasty); all other bone
  (HU above ``bone_min_hu``) blocks a needle unless a bone drill is allowed;
* ``body``: the skin (from HU when missing).

With a vertebral body and ``PlanningOptions.pvp_approach``, the chain also
plans the vertebroplasty: needle paths into the body, the cement volume and
its simulated fill (:func:`~seedplan.planning.cement.plan_cement`).  The
cement is planned before the seeds because radiopaque cement shields them:
seed slots inside it (+ ``cement_seed_margin_mm``) are removed.  The dose is
then also reported with a primary-attenuation correction for cement and bone,
beside the TG-43 dose to water.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np
from scipy import ndimage

from .. import __version__
from ..dose import influence_matrix, total_dose, total_dose_grid
from ..dose.decay import decay_factor, elapsed_days
from ..errors import GeometryError, InputError, PlanningError
from ..evaluation.metrics import Evaluation, evaluate
from ..evaluation.radiobiology import bed_permanent_Gy, eqd2_Gy
from ..evaluation.sampling import sample_mask_points
from ..geometry import Grid
from ..imaging.ct import CTImage
from ..imaging.structures import Role, Structure, StructureSet
from ..plan import Plan, PlannedSeed
from ..sources import load_seed_model
from .cement import CEMENT_MODELS, CementPlan, plan_cement
from .needles import Needle, NeedleConstraints, NeedlePlan, candidate_slots, plan_needles, pvp_needle_paths
from .prescription import Prescription
from .seeds import SeedGoals, SeedSolution, optimise_seeds

Progress = Callable[[str], None]

#: How far inside the goals the optimiser aims (its samples are coarser than the evaluation's):
#: V100 goal + 0.5 percentage points, V150/V200 limits - 1 point, OAR D0.1cc limits x 0.97.
COVERAGE_MARGIN = {"d90_fraction": 0.0, "v100_pct": 0.5, "v150_pct": 1.0, "v200_pct": 1.0, "oar_fraction": 0.97}

#: HU above which voxels count as bone a needle cannot cross (cortical and dense cancellous bone).
BONE_MIN_HU = 250.0


@dataclass(frozen=True)
class PlanningOptions:
    """Settings of the automatic chain that are not part of the prescription.

    Attributes
    ----------
    needle_mode : {"free", "coplanar"}
        Non-coplanar needles (3D-printed individual template) or parallel needles on a template grid.
    needle_constraints : NeedleConstraints
        Needle limits; its ``min_needle_distance_mm`` is replaced by the prescription's.
    min_seed_distance_mm : float
        Minimum distance between seeds on different needles (crossing tracks).
    formalism : {"2D", "1D", "1D-point"}
    bone_min_hu : float
        Bone threshold for needle paths.
    dose_spacing_mm : float
        Spacing of the exported dose grid.
    dose_margin_mm : float
        Margin of the dose grid around the target and the seeds.
    sample_points_per_mm3 : float
        Density of target/OAR samples for the optimiser.
    calibration_date, implant_date : str, optional
        ISO dates (default: today for both).
    rng_seed : int
        Seed of every randomised step (deterministic plans).
    pvp_approach : {"transpedicular", "parapedicular"} or None
        Also plan the vertebroplasty needles into the treated vertebral body
        (None: skip, and no cement).
    pvp_bilateral : bool
        Bipedicular (one needle per side, the default) or unipedicular (one
        needle aimed at the midline).  When one side is blocked, a bipedicular
        request falls back to a single needle, with a warning.
    cement : bool
        Plan and simulate the cement from the vertebroplasty needle tips.
    cement_volume_mL : float, optional
        Inject this volume instead of the recommended one.
    cement_model : {"combined", "pvp"}
        Volume model (:data:`~seedplan.planning.cement.CEMENT_MODELS`):
        ``"combined"`` (seeds treat the lesion, cement restores strength,
        1-5 mL) or ``"pvp"`` (vertebroplasty alone, cavity filled, 2-9 mL).
    cement_material : str
        A :data:`~seedplan.planning.cement.CEMENT_MATERIALS` key; the default
        30 wt% BaSO4 is a stand-in: enter the product actually used.
    cement_seed_margin_mm : float
        Seeds stay this far outside radiopaque cement.
    heterogeneity : bool
        Also evaluate the dose with the cement/bone primary-attenuation
        correction (:mod:`seedplan.dose.heterogeneity`) when cement is planned.
    """

    needle_mode: str = "free"
    needle_constraints: NeedleConstraints = field(default_factory=lambda: NeedleConstraints(coverage_radius_mm=5.0))
    min_seed_distance_mm: float = 6.0
    formalism: str = "2D"
    bone_min_hu: float = BONE_MIN_HU
    dose_spacing_mm: float = 1.0
    dose_margin_mm: float = 25.0
    sample_points_per_mm3: float = 0.5
    calibration_date: str | None = None
    implant_date: str | None = None
    rng_seed: int = 0
    pvp_approach: str | None = "transpedicular"
    pvp_bilateral: bool = True
    cement: bool = True
    cement_volume_mL: float | None = None
    cement_model: str = "combined"
    cement_material: str = "pmma-baso4-30"
    cement_seed_margin_mm: float = 1.0
    heterogeneity: bool = True

    def __post_init__(self) -> None:
        from .cement import cement_material

        if self.pvp_approach not in (None, "transpedicular", "parapedicular"):
            raise InputError(f"pvp_approach must be 'transpedicular', 'parapedicular' or null, got {self.pvp_approach!r}")
        for k in ("cement", "heterogeneity", "pvp_bilateral"):
            if not isinstance(getattr(self, k), bool):
                raise InputError(f"planning option {k} must be true or false, got {getattr(self, k)!r}")
        v = self.cement_volume_mL
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0):
            raise InputError(f"cement_volume_mL must be a volume > 0 mL or null (use the recommendation), got {v!r}")
        if self.cement_model not in CEMENT_MODELS:
            raise InputError(f"cement_model must be one of {sorted(CEMENT_MODELS)}, got {self.cement_model!r}")
        cement_material(self.cement_material)
        m = self.cement_seed_margin_mm
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not np.isfinite(m) or m < 0:
            raise InputError(f"cement_seed_margin_mm must be a distance >= 0 mm, got {m!r}")


@dataclass(frozen=True, eq=False)
class PlanningResult:
    """Everything :func:`plan_case` computed (``cement`` is None when no cement was planned)."""

    plan: Plan
    needle_plan: NeedlePlan
    seed_solution: SeedSolution
    dose_grid: Grid
    dose_Gy: np.ndarray
    evaluation: Evaluation
    timings_s: Mapping[str, float]
    cement: CementPlan | None = None


def _quiet(_: str) -> None:
    pass


def _near(mask: np.ndarray, grid: Grid, max_mm: float, *, strict: bool = False) -> np.ndarray:
    """Voxels within ``max_mm`` of ``mask`` (``< max_mm`` when ``strict``), including the mask.

    The distance transform runs on the mask's bounding box grown by ``max_mm``:
    the same answer as on the whole grid, at a fraction of the cost.
    """
    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    sp = np.asarray(grid.spacing_mm, dtype=float)[::-1]
    idx = np.argwhere(mask)
    pad = np.ceil(max_mm / sp).astype(int) + 1
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    d = ndimage.distance_transform_edt(~mask[box], sampling=sp)
    out[box] = d < max_mm if strict else d <= max_mm
    return out


def _check_target(target: Structure, ct: CTImage) -> None:
    if target.is_empty:
        raise PlanningError(f"target structure {target.name!r} is empty: contour the lesion before planning")
    lo, hi = target.bounds_mm
    if not (ct.grid.contains(lo[None])[0] and ct.grid.contains(hi[None])[0]):
        raise GeometryError(f"target structure {target.name!r} extends outside the CT volume; the CT must cover the whole target")


def _limit_names(structures: StructureSet, prescription: Prescription) -> dict[str, float]:
    out = {}
    for s in structures.values():
        lim = prescription.limits_for(s.name)
        if "D0.1cc_Gy" in lim and not s.is_empty:
            out[s.name] = float(lim["D0.1cc_Gy"])
    return out


def plan_case(
    ct: CTImage,
    structures: StructureSet,
    prescription: Prescription | None = None,
    *,
    options: PlanningOptions | None = None,
    case_reference: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> PlanningResult:
    """Plan needles and seeds for a CT and its structures, then compute and evaluate the dose.

    Parameters
    ----------
    ct : CTImage
    structures : StructureSet
        Must contain one ``target``; see the module docstring for roles.
    prescription : Prescription, optional
    options : PlanningOptions, optional
    case_reference : mapping, optional
        Stored in the plan (case name, CT series UID, source paths).
    progress : callable, optional
        Receives one line per step.

    Returns
    -------
    PlanningResult

    Raises
    ------
    PlanningError
        Empty target, no feasible needle path (naming the blocking
        structure) or no seed slot.
    """
    import time

    presc = prescription or Prescription()
    opt = options or PlanningOptions()
    say = progress or _quiet
    grid = ct.grid
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = load_seed_model(presc.seed_model)

    targets = structures.by_role(Role.TARGET)
    if not targets:
        raise PlanningError(f"no structure with role 'target' among {list(structures.names)}")
    target = targets[0]
    _check_target(target, ct)
    target_mask = target.mask_on(grid)

    if opt.cement and opt.cement_volume_mL is not None and not structures.by_role(Role.VERTEBRAL_BODY):
        raise PlanningError(
            f"cement_volume_mL={opt.cement_volume_mL:g} was requested but no structure has the role "
            f"'vertebral_body' (structures: {list(structures.names)}); contour the treated vertebral body"
        )
    bodies = structures.by_role(Role.BODY)
    body_mask = bodies[0].mask_on(grid) if bodies else np.asarray(ct.hu > -400)
    forbidden = {
        s.name: s.mask_on(grid)
        for s in structures.values()
        if s.role in (Role.OAR, Role.CANAL, Role.AVOIDANCE) and not s.is_empty
    }
    corridor = np.zeros(grid.shape, dtype=bool)
    for s in structures.values():
        if s.role in (Role.VERTEBRAL_BODY, Role.PEDICLE):
            corridor |= s.mask_on(grid)
    bone = np.asarray(ct.hu >= opt.bone_min_hu)
    timings["structures"] = time.perf_counter() - t0

    # ---- needles
    t = time.perf_counter()
    say(f"planning needle trajectories ({opt.needle_mode} mode) to {target.name!r}")
    nplan = plan_needles(
        grid,
        target_mask,
        body_mask,
        forbidden,
        bone=bone,
        bone_allowed=corridor,
        constraints=replace(opt.needle_constraints, min_needle_distance_mm=presc.min_needle_distance_mm),
        mode=opt.needle_mode,
        spacing_mm=presc.min_needle_distance_mm,
        rng=opt.rng_seed,
    )
    timings["needles"] = time.perf_counter() - t
    say(f"{len(nplan)} candidate needles, target-track coverage {100 * nplan.coverage_fraction:.0f} %")

    # ---- vertebroplasty needles into the treated vertebral body (same machinery)
    pvp: tuple[Needle, ...] = ()
    pvp_note = ""
    bodies_vb = structures.by_role(Role.VERTEBRAL_BODY)
    if opt.pvp_approach and bodies_vb:
        t = time.perf_counter()
        vb = bodies_vb[0].mask_on(grid)
        pedicles = np.zeros(grid.shape, dtype=bool)
        for s in structures.by_role(Role.PEDICLE):
            pedicles |= s.mask_on(grid)
        def pvp_paths(bilateral: bool) -> tuple[Needle, ...]:
            return tuple(pvp_needle_paths(
                grid, vb, body_mask, forbidden, pedicles=pedicles if pedicles.any() else None, bone=bone,
                bone_allowed=corridor, approach=opt.pvp_approach, bilateral=bilateral,
                constraints=opt.needle_constraints, rng=opt.rng_seed).needles)

        try:
            pvp = pvp_paths(opt.pvp_bilateral)
        except PlanningError as exc:
            pvp_note = f"no {opt.pvp_approach} vertebroplasty path: {exc}"
            if opt.pvp_bilateral:  # one side blocked: a single (unipedicular) needle aimed at the midline
                try:
                    pvp = pvp_paths(False)
                    pvp_note = f"unipedicular vertebroplasty only ({pvp[0].label}): the bilateral paths failed: {exc}"
                except PlanningError:
                    pass
            say(pvp_note)
        if pvp:
            say(f"{len(pvp)} vertebroplasty needle path(s), {opt.pvp_approach}, into {bodies_vb[0].name!r}")
        timings["pvp_needles"] = time.perf_counter() - t

    # ---- cement: volume and simulated fill from the vertebroplasty needle tips
    cement: CementPlan | None = None
    cement_note = ""
    if opt.cement and opt.pvp_approach:
        if not bodies_vb:
            cement_note = "cement not planned: no structure with the role 'vertebral_body'"
        elif not pvp:
            cement_note = "cement not planned: no vertebroplasty needle path"
        else:
            t = time.perf_counter()
            cement = plan_cement(ct, bodies_vb[0], [n.tip for n in pvp], lesion=target,
                                 volume_mL=opt.cement_volume_mL, material=opt.cement_material,
                                 model=CEMENT_MODELS[opt.cement_model])
            r = cement.result
            say(f"cement: {r.volume_mL:.1f} mL ({cement.volume_source}) of {cement.material.name}, fill "
                f"{r.fill_pct:.1f} %, endplates {r.endplate_contact}")
            timings["cement"] = time.perf_counter() - t
        if cement_note:
            say(cement_note)

    # ---- seed slots: target + margin, not near the canal/cord, not in other organs
    t = time.perf_counter()
    region = _near(target_mask, grid, presc.target_margin_mm) & body_mask
    canal_like = np.zeros(grid.shape, dtype=bool)
    exclude = np.zeros(grid.shape, dtype=bool)
    for name, m in forbidden.items():
        if structures[name].role == Role.CANAL:
            canal_like |= m
        else:
            exclude |= m
    if canal_like.any():
        exclude |= _near(canal_like, grid, presc.min_seed_canal_distance_mm, strict=True)
    if cement is not None and cement.radiopaque:
        exclude |= _near(cement.result.mask, grid, opt.cement_seed_margin_mm)
    step = max(5.0, presc.seed_spacing_mm / 2.0)
    slots = candidate_slots(nplan.needles, grid, region, step, exclude=exclude)
    if len(slots) == 0:
        raise PlanningError(
            f"no seed slot: the needles' tracks do not cross {target.name!r} + {presc.target_margin_mm:g} mm "
            f"away from the canal (+{presc.min_seed_canal_distance_mm:g} mm)"
        )
    slot_axes = np.array([nplan.needles[i].direction for i in slots.needle_index])
    conflicts = seed_conflicts(slots, presc.seed_spacing_mm, opt.min_seed_distance_mm)
    say(f"{len(slots)} candidate seed slots on {len(nplan)} needles")

    # ---- dose-influence matrices on fine samples
    gen = np.random.default_rng(opt.rng_seed)
    pts_t, w_t = sample_mask_points(target_mask, grid, points_per_mm3=opt.sample_points_per_mm3)
    A_t = influence_matrix(pts_t, slots.positions_mm, source=model, axes=slot_axes, formalism=opt.formalism)
    limits = _limit_names(structures, presc)
    A_o, w_o = {}, {}
    for name in limits:
        p, w = sample_mask_points(structures[name].mask_on(grid), grid, points_per_mm3=opt.sample_points_per_mm3)
        A_o[name] = influence_matrix(p, slots.positions_mm, source=model, axes=slot_axes, formalism=opt.formalism)
        w_o[name] = w
    timings["influence"] = time.perf_counter() - t

    # ---- seed optimisation: activities are ordered at the calibration date, the dose comes from the
    # strength at the implant date
    today = _dt.date.today().isoformat()
    cal = opt.calibration_date or today
    imp = opt.implant_date or cal
    decay = float(decay_factor(elapsed_days(cal, imp), model.half_life_d))
    t = time.perf_counter()
    say("optimising seed positions and activity (MILP + local search)")
    # The optimiser sees a coarser sampling than the final evaluation: it aims a little inside the
    # goals (COVERAGE_MARGIN) so that the evaluated plan meets them too.
    goals = SeedGoals(
        prescription_Gy=presc.dose_Gy,
        d90_min_Gy=presc.dose_Gy * presc.d90_goal_pct_of_pd / 100.0 * (1.0 + COVERAGE_MARGIN["d90_fraction"]),
        v100_min_pct=min(100.0, presc.v100_goal_pct + COVERAGE_MARGIN["v100_pct"]),
        v150_max_pct=max(0.0, presc.v150_limit_pct - COVERAGE_MARGIN["v150_pct"]),
        v200_max_pct=max(0.0, presc.v200_limit_pct - COVERAGE_MARGIN["v200_pct"]),
        oar_d01cc_max_Gy={k: v * COVERAGE_MARGIN["oar_fraction"] for k, v in limits.items()},
    )
    sol = optimise_seeds(
        A_t, w_t, goals, A_oars=A_o, w_oars=w_o, U_per_mCi=model.U_per_mCi * decay,
        activity_range_mCi=tuple(presc.activity_mCi_range), conflicts=conflicts, rng=gen,
    )
    timings["seeds"] = time.perf_counter() - t
    if sol.n_seeds == 0:
        raise PlanningError("the optimiser placed no seed; check the target and the needle paths")
    say(f"{sol.n_seeds} seeds x {sol.activity_mCi:.2f} mCi" + ("" if sol.goals_met else
        f"; missed on the optimiser's samples (aims set inside the goals): {'; '.join(sol.failed_goals)}"))

    # ---- the plan: keep needles that carry seeds; the tip moves to the deepest seed
    chosen = np.array(sol.chosen)
    used = sorted({int(slots.needle_index[j]) for j in chosen})
    needles: list[Needle] = []
    seeds: list[PlannedSeed] = []
    for new_no, old in enumerate(used, start=1):
        on = chosen[slots.needle_index[chosen] == old]
        on = on[np.argsort(slots.retraction_mm[on])]
        n = nplan.needles[old]
        tip = slots.positions_mm[on[0]]
        needles.append(replace(n, tip_mm=tuple(float(v) for v in tip)) if hasattr(n, "tip_mm") else n)
        for j in on:
            seeds.append(
                PlannedSeed(
                    position_mm=tuple(float(v) for v in slots.positions_mm[j]),
                    axis=tuple(float(v) for v in n.direction),
                    needle=new_no,
                    retraction_mm=float(slots.retraction_mm[j] - slots.retraction_mm[on[0]]),
                    activity_mCi=sol.activity_mCi,
                    strength_U=sol.activity_mCi * model.U_per_mCi,  # at calibration
                )
            )
    plan = Plan(
        case=dict(case_reference or {}),
        prescription=presc,
        seed_model=model.name,
        seed_model_status=model.status,
        formalism=opt.formalism,
        needles=tuple(needles),
        seeds=tuple(seeds),
        calibration_date=cal,
        implant_date=imp,
        software={"name": "seedplan", "version": __version__},
        created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        pvp_needles=pvp,
        cement=None if cement is None else cement.to_dict(),
    )

    # ---- dose and evaluation
    t = time.perf_counter()
    say("computing the dose grid and evaluating the plan")
    dgrid, dose = compute_plan_dose(plan, grid, target_mask, spacing_mm=opt.dose_spacing_mm, margin_mm=opt.dose_margin_mm)
    ev = evaluate_plan(plan, structures, grid)
    timings["dose_and_evaluation"] = time.perf_counter() - t
    results = plan_results(plan, ev, sol)
    if cement is not None:
        results["cement"] = cement.metrics()
        if opt.heterogeneity:
            t = time.perf_counter()
            say("evaluating the dose with the cement/bone attenuation correction")
            results["heterogeneity"] = heterogeneity_results(plan, ct, structures, cement)
            timings["heterogeneity"] = time.perf_counter() - t
    notes = [n for n in (pvp_note, cement_note) if n] + (cement.warnings if cement is not None else [])
    if notes:
        results.setdefault("warnings", []).extend(notes)
    plan = plan.with_results(results)
    timings["total"] = time.perf_counter() - t0
    return PlanningResult(plan, nplan, sol, dgrid, dose, ev, timings, cement)


def seed_conflicts(slots, seed_spacing_mm: float, lattice_mm: float) -> list[tuple[int, int]]:
    """Slot pairs that may not both hold a seed.

    On one needle, seeds are at least ``seed_spacing_mm`` apart along it; on
    different needles, at least ``lattice_mm`` apart in space, which keeps
    crossing non-coplanar needles from stacking seeds into hot spots.
    """
    pos = slots.positions_mm
    ndl = slots.needle_index
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=2)
    same = ndl[:, None] == ndl[None, :]
    along = np.abs(slots.retraction_mm[:, None] - slots.retraction_mm[None, :])
    bad = np.where(same, along < seed_spacing_mm - 1e-6, d < lattice_mm - 1e-6)
    a, b = np.nonzero(np.triu(bad, k=1))
    return list(zip(a.tolist(), b.tolist()))


def reevaluate_plan(plan: Plan, ct: CTImage, structures: StructureSet, *,
                    heterogeneity: bool = True) -> tuple[Evaluation, dict[str, Any]]:
    """Evaluate a (loaded) plan on its case again: metrics, cement (re-simulated) and corrected dose.

    Returns
    -------
    (Evaluation, dict)
        The evaluation and the ``metrics.json`` layout (:func:`plan_results`).
    """
    ev = evaluate_plan(plan, structures, ct.grid)
    results = plan_results(plan, ev)
    if plan.cement:
        cement = CementPlan.from_dict(plan.cement, ct, structures)
        results["cement"] = cement.metrics()
        if heterogeneity:
            results["heterogeneity"] = heterogeneity_results(plan, ct, structures, cement)
        if cement.warnings:
            results.setdefault("warnings", []).extend(cement.warnings)
    return ev, results


def dose_grid_for(plan: Plan, reference: Grid, region_mask: np.ndarray | None = None, *, spacing_mm: float = 1.0,
                  margin_mm: float = 25.0) -> Grid:
    """A dose grid aligned with ``reference`` covering the seeds (and ``region_mask``) plus a margin."""
    pts = [plan.positions_mm]
    if region_mask is not None and region_mask.any():
        k, j, i = np.nonzero(region_mask)
        pts.append(reference.index_to_world(np.stack([i, j, k], axis=1).astype(float)))
    P = np.vstack(pts)
    idx = reference.world_to_index(P)
    sp = reference.spacing
    lo = idx.min(axis=0) - margin_mm / sp
    hi = idx.max(axis=0) + margin_mm / sp
    lo = np.maximum(lo, 0.0)
    hi = np.minimum(hi, np.array(reference.size) - 1.0)
    origin = reference.index_to_world(np.floor(lo))
    extent = (np.ceil(hi) - np.floor(lo)) * sp
    n = np.floor(extent / spacing_mm + 1e-9).astype(int) + 1
    return Grid(origin, [spacing_mm] * 3, n, reference.direction_matrix)


def compute_plan_dose(plan: Plan, reference: Grid, region_mask: np.ndarray | None = None, *, spacing_mm: float = 1.0,
                      margin_mm: float = 25.0) -> tuple[Grid, np.ndarray]:
    """Total permanent-implant dose (Gy) of ``plan`` on a grid around its seeds, indexed [z, y, x]."""
    if plan.n_seeds == 0:
        raise InputError("the plan has no seeds: nothing to compute")
    g = dose_grid_for(plan, reference, region_mask, spacing_mm=spacing_mm, margin_mm=margin_mm)
    dose = total_dose_grid(g, plan.positions_mm, plan.strengths_at_implant_U, source=plan.seed_model, axes=plan.axes,
                           formalism=plan.formalism)
    return g, dose


def plan_dose_function(plan: Plan) -> Callable[[np.ndarray], np.ndarray]:
    """``dose_at(points_mm) -> Gy``: exact total dose of the plan at points."""
    pos, s, ax = plan.positions_mm, plan.strengths_at_implant_U, plan.axes

    def dose_at(points_mm: np.ndarray) -> np.ndarray:
        return total_dose(points_mm, pos, s, source=plan.seed_model, axes=ax, formalism=plan.formalism)

    return dose_at


def evaluate_plan(plan: Plan, structures: StructureSet, grid: Grid) -> Evaluation:
    """Evaluate the plan's exact dose on its target and organs at risk (fine sampling)."""
    keep = [s for s in structures.values()
            if s.role in (Role.TARGET, Role.OAR, Role.CANAL, Role.VERTEBRAL_BODY) and not s.is_empty]
    bodies = structures.by_role(Role.BODY)
    return evaluate(
        keep,
        plan_dose_function(plan),
        plan.prescription.dose_Gy,
        body=bodies[0] if bodies else None,
        include_points_mm=plan.positions_mm,
        alpha_beta_oar_Gy=plan.prescription.alpha_beta_cord_Gy,
        repair_half_time_h=plan.prescription.repair_half_time_h,
    )


#: How the corrected dose is labelled wherever it is reported.
HETEROGENEITY_LABEL = ("TG-43 dose x primary attenuation through cement and bone relative to water "
                       "(approximate; not a TG-186 model-based dose)")


def heterogeneity_results(plan: Plan, ct: CTImage, structures: StructureSet, cement: CementPlan, *,
                          points_per_mm3: float = 1.0) -> dict[str, Any]:
    """Target and OAR metrics of the cement/bone-corrected dose (:mod:`seedplan.dose.heterogeneity`).

    Structures are sampled at ``points_per_mm3`` (1 mm) with partial-volume
    weights; the target is also reported without its cement-filled part.
    """
    from ..dose.heterogeneity import heterogeneity_dose, mu_map
    from ..evaluation.dvh import DVH

    grid = ct.grid
    cmask = cement.result.mask
    mu = mu_map(ct, cmask, cement.material)
    pos, s, ax, pd = plan.positions_mm, plan.strengths_at_implant_U, plan.axes, plan.prescription.dose_Gy

    def dvh_of(mask: np.ndarray, name: str) -> DVH:
        p, w = sample_mask_points(mask, grid, points_per_mm3=points_per_mm3)
        d = heterogeneity_dose(p, pos, s, mu, grid, source=plan.seed_model, axes=ax, formalism=plan.formalism)
        return DVH.from_samples(d, w, name=name)

    def target_block(h: DVH, name: str) -> dict[str, Any]:
        return {"name": name, "volume_cm3": h.volume_cm3, "D90_Gy": h.D(90), "D100_Gy": h.D(100),
                "V100_pct": h.V(pd), "V150_pct": h.V(1.5 * pd), "V200_pct": h.V(2.0 * pd)}

    out: dict[str, Any] = {"label": HETEROGENEITY_LABEL, "cement_material": cement.material.name,
                           "sampling_points_per_mm3": points_per_mm3}
    targets = structures.by_role(Role.TARGET)
    if targets:
        tm = targets[0].mask_on(grid)
        out["target"] = target_block(dvh_of(tm, targets[0].name), targets[0].name)
        rest = tm & ~cmask
        if rest.any() and rest.sum() < tm.sum():
            out["target_outside_cement"] = target_block(dvh_of(rest, f"{targets[0].name} outside cement"),
                                                        f"{targets[0].name} outside cement")
    out["oars"] = {}
    for x in structures.values():
        if x.role in (Role.OAR, Role.CANAL) and not x.is_empty:
            h = dvh_of(x.mask_on(grid), x.name)
            out["oars"][x.name] = {"Dmax_Gy": h.max_Gy, "D0.1cc_Gy": h.D_cc(0.1), "D1cc_Gy": h.D_cc(1.0)}
    return out


def plan_results(plan: Plan, ev: Evaluation, sol: SeedSolution | None = None) -> dict[str, Any]:
    """The ``metrics.json`` layout for a plan and its evaluation."""
    m = dict(ev.metrics)
    if m.get("target"):
        presc = plan.prescription
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
        "seed_model": plan.seed_model,
        "seed_model_status": plan.seed_model_status,
        "total_dose_convention": "permanent implant, D = Ddot0 * T1/2 / ln 2",
    }
    checks = plan.prescription.goals_check(m)
    m["goals"] = [{"goal": g.goal, "value": g.value, "limit": g.limit, "passed": bool(g.passed)} for g in checks]
    m["failed_goals"] = [g.goal for g in checks if not g.passed]
    if sol is not None:
        m["optimiser"] = {
            "activity_trials": [dict(t) for t in sol.trials],
            "solve_time_s": round(sol.solve_time_s, 3),
        }
    return m
