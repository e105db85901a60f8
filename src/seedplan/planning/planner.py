"""The automatic planning chain: CT + structures -> needles -> vertebroplasty -> seeds -> dose -> evaluation.

:func:`plan_case` is the one call behind ``seedplan demo`` and
``seedplan plan``.  It runs named steps over one working context:

1. ``anatomy``: the target; what the structure set lacks, derived from the CT
   (:func:`~seedplan.imaging.derive_anatomy`: the body, the air inside it, the
   treated vertebra's body and pedicles, the canal at the level and its
   neighbours; a given structure always wins, every derived one is stored in the
   plan and named in its notes); absurd targets (in air, outside the body) are
   refused; a CT on which the patient is not prone is planned and flagged; then
   the skin, the needle corridors and obstacles from the structure roles
   (:class:`~seedplan.imaging.Role`):

   * ``target``: the lesion; seeds go inside it expanded by the prescription's
     margin;
   * ``oar`` / ``canal`` / ``avoidance``: no needle within its margin; no seed
     within ``min_seed_canal_distance_mm`` of a ``canal`` structure, none
     inside another organ; organs with a hottest-volume limit in the
     prescription (cord/cauda D0.1cc) constrain the optimiser;
   * ``vertebral_body`` and ``pedicle``: the bone corridor a needle may cross
     (trocar access, as in vertebroplasty); all other bone (HU above
     ``bone_min_hu``) blocks a needle unless a bone drill is allowed;
   * ``body``: the skin (from HU when missing);
2. ``needles``: seed needle trajectories;
3. ``vertebroplasty``: with a vertebral body and ``pvp_approach``, the
   vertebroplasty needles (falling back to one needle, then to the
   parapedicular approach, with a note), the cement volume and its simulated
   fill (:func:`~seedplan.planning.cement.plan_cement`; a recommended volume
   stops where the front would leave the body).  The cement is planned before
   the seeds because radiopaque cement shields them: seed slots inside it
   (+ ``cement_seed_margin_mm``) are removed;
4. ``slots``: candidate seed positions along the needles;
5. ``seeds``: dose-influence matrices and the optimiser;
6. ``plan``: the :class:`~seedplan.plan.Plan` value (needles named N1, N2...
   in plan order);
7. ``dose`` and ``evaluation``: through the plan layer (:mod:`seedplan.plan`),
   the same functions that re-evaluate a saved plan (the dose grid covers every
   organ at risk within reach of a seed), plus the dose with a
   primary-attenuation correction for cement and bone, reported beside the
   TG-43 dose to water.

Each step logs what it did on the ``seedplan`` logger.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .. import __version__
from ..dose import influence_matrix
from ..dose.decay import decay_factor, elapsed_days
from ..errors import GeometryError, InputError, InputTypeError, PlanningError
from ..evaluation.metrics import Evaluation
from ..evaluation.sampling import sample_mask_points
from ..geometry import Grid, distance_near
from ..imaging.anatomy import derive_anatomy
from ..imaging.ct import CTImage
from ..imaging.structures import COMBINED_TARGET, Role, Structure, StructureSet
from ..plan._placement import Geometry, draw_scenario, perpendicular_basis
from ..plan import (
    Goal,
    PlanCement,
    Needle,
    NeedleConstraints,
    Plan,
    PlannedSeed,
    PlanningOptions,
    Prescription,
    corrected_dose_metrics,
    dose_region,
    evaluate_plan,
    organs_outside_grid,
    plan_structures,
    plan_dose_grid,
    plan_metrics,
)
from ..sources import SeedModel, load_seed_model
from .cement import CEMENT_MODELS, CementPlan, level_from_name, plan_cement
from .needles import NeedlePlan, SeedSlots, access_constraints, candidate_slots, plan_needles, pvp_needle_paths
from .seeds import Aims, SeedSolution, optimise_seeds, plan_quality

__all__ = ["plan_case", "replan_on_needles", "PlanningResult", "COVERAGE_MARGIN", "seed_conflicts", "aims_for"]

log = logging.getLogger("seedplan")

#: How far inside the goals the optimiser aims (its samples are coarser than the evaluation's):
#: percentage goals of the target move 0.5 points (at least) or 1 point (at most) inward,
#: dose goals of the target by ``target_dose_fraction``, organ dose limits are multiplied by ``oar_fraction``.
COVERAGE_MARGIN = {"target_dose_fraction": 0.0, "at_least_pct": 0.5, "at_most_pct": 1.0, "oar_fraction": 0.97}


@dataclass(frozen=True, eq=False)
class PlanningResult:
    """Everything :func:`plan_case` computed.

    ``cement`` is the (first level's) planned cement, None when no cement was planned; ``cements`` holds
    every level's in a multi-level plan (the plan's :class:`~seedplan.plan.PlanCement` combines them).
    """

    plan: Plan
    needle_plan: NeedlePlan
    seed_solution: SeedSolution
    dose_grid: Grid
    dose_Gy: np.ndarray
    evaluation: Evaluation
    timings_s: Mapping[str, float]
    cement: CementPlan | None = None
    cements: tuple[CementPlan, ...] = ()


@dataclass(eq=False)
class _Context:
    """The working state the steps of :func:`plan_case` fill in, in order."""

    ct: CTImage
    structures: StructureSet
    presc: Prescription
    opt: PlanningOptions
    model: SeedModel
    case_reference: Mapping[str, Any]
    calibration_date: str
    implant_date: str
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # anatomy
    target: Structure | None = None  # the target; the union of the levels' targets in a multi-level plan
    targets: tuple[Structure, ...] = ()  # each level's target (the target alone in a one-level plan)
    derived: tuple[Structure, ...] = ()
    level: str | None = None
    levels: tuple[str | None, ...] = ()  # the treated level of each target
    constraints: NeedleConstraints | None = None
    level_constraints: dict[str, NeedleConstraints] = field(default_factory=dict)  # per target name
    target_mask: np.ndarray | None = None
    body_mask: np.ndarray | None = None
    forbidden: dict[str, np.ndarray] = field(default_factory=dict)
    corridor: np.ndarray | None = None
    bone: np.ndarray | None = None
    # needles, vertebroplasty, slots, seeds
    needle_plan: NeedlePlan | None = None
    pvp: tuple[Needle, ...] = ()
    cements: list[CementPlan] = field(default_factory=list)  # one per treated vertebral body
    stored_cement: PlanCement | None = None  # a re-plan keeps the planned cement as it was stored
    activities_mCi: tuple[float, ...] | None = None  # a re-plan keeps the ordered activity
    slots: SeedSlots | None = None
    solution: SeedSolution | None = None
    tg43_alternative: dict[str, Any] | None = None  # dose_model="corrected": the TG-43 plan, for the comparison
    # the plan and its dose
    plan: Plan | None = None
    dose_grid: Grid | None = None
    dose_Gy: np.ndarray | None = None
    evaluation: Evaluation | None = None

    @property
    def grid(self) -> Grid:
        return self.ct.grid

    @property
    def multilevel(self) -> bool:
        return len(self.targets) > 1

    @property
    def cement(self) -> CementPlan | None:
        """The first level's planned cement (every level's: :attr:`cements`)."""
        return self.cements[0] if self.cements else None

    def plan_cement(self) -> PlanCement | None:
        """The cement as the plan stores it: the planned one (all levels combined), else a re-plan's stored one."""
        if not self.cements:
            return self.stored_cement
        return PlanCement.combine([x.as_plan_cement(self.grid) for x in self.cements])


# =============================================================================== helpers
def _near(mask: np.ndarray, grid: Grid, max_mm: float, *, strict: bool = False) -> np.ndarray:
    """Voxels within ``max_mm`` of ``mask`` (``< max_mm`` when ``strict``), including the mask."""
    out = np.zeros(mask.shape, dtype=bool)
    found = distance_near(mask, np.asarray(grid.spacing_mm, dtype=float)[::-1], max_mm)
    if found is not None:
        box, d = found
        out[box] = d < max_mm if strict else d <= max_mm
    return out


def _union(structures: StructureSet, grid: Grid, *roles: Role) -> np.ndarray:
    out = np.zeros(grid.shape, dtype=bool)
    for role in roles:
        for s in structures.by_role(role):
            out |= s.mask_on(grid)
    return out


def aims_for(presc: Prescription, target: str, organs: list[str],
             target_rows: Mapping[str, np.ndarray] | None = None) -> Aims:
    """The optimiser's aims: the prescription's goals moved inside by :data:`COVERAGE_MARGIN`.

    With ``target_rows`` (several targets as one implant: each one's rows of the samples of ``target``,
    their union), the target goals are each target's, as the plan's goals are
    (:meth:`~seedplan.plan.Prescription.goals_for_metrics`).
    """
    m = COVERAGE_MARGIN

    def tighten(g: Goal) -> Goal:
        if g.group != "target":
            return g.with_limit(g.limit * m["oar_fraction"])
        if g.in_percent:
            return g.with_limit(min(100.0, g.limit + m["at_least_pct"]) if g.at_least
                                else max(0.0, g.limit - m["at_most_pct"]))
        return g.with_limit(g.limit * (1.0 + m["target_dose_fraction"] * (1 if g.at_least else -1)))

    goals = presc.goals(target, [(o, "oars") for o in organs])
    if target_rows:
        goals = tuple(g for n in target_rows for g in presc.goals(n)) + tuple(g for g in goals if g.group != "target")
    return Aims.from_goals([tighten(g) for g in goals], presc.dose_Gy, target_rows)


def seed_conflicts(slots: SeedSlots, seed_spacing_mm: float, lattice_mm: float) -> list[tuple[int, int]]:
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


# ================================================================================= steps
#: Patient positions in which the back, where the needles enter, faces up.
PRONE = ("HFP", "FFP")


def _anatomy(c: _Context) -> None:
    """The target; what the structure set lacks, derived from the CT; the skin, needle obstacles and corridors."""
    s, grid = c.structures, c.grid
    targets = [t for t in s.by_role(Role.TARGET) if t.name != COMBINED_TARGET]
    if not targets:
        raise PlanningError(f"no structure with role 'target' among {list(s.names)}")
    for t in targets:
        if t.is_empty:
            raise PlanningError(f"target structure {t.name!r} is empty: contour the lesion before planning")
        lo, hi = t.bounds_mm
        if not (grid.contains(lo[None])[0] and grid.contains(hi[None])[0]):
            raise GeometryError(f"target structure {t.name!r} extends outside the CT volume; "
                                "the CT must cover the whole target")
    if any(not x.grid.same_geometry(grid) for x in s.values()):  # everything on the CT grid from here on
        s = s.resampled(grid)
    c.targets = tuple(s[t.name] for t in targets)
    # a real structure set rarely holds every organ at risk: derive the body, the air inside it, the treated
    # vertebra's body and pedicles, and the canal (treated level +- 1) from the CT; a given structure always wins
    notes: list[str] = []
    for t in c.targets:
        s, found = derive_anatomy(c.ct, s, target=t)
        notes.extend(n for n in found if n not in notes)
    if c.multilevel:  # several lesions as one implant: the seeds optimised on their union, to each one's goals
        if COMBINED_TARGET not in s:
            union = np.logical_or.reduce([t.mask_on(grid) for t in c.targets])
            s = StructureSet([*s.values(), Structure(
                COMBINED_TARGET, Role.TARGET, union, grid,
                derived="the union of " + ", ".join(t.name for t in c.targets) + ": the levels planned as one implant")])
        c.notes.append(f"{len(c.targets)} targets planned as one implant ({', '.join(t.name for t in c.targets)}): "
                       "needles and cement per level, the seeds optimised together to each level's goals")
        log.info(c.notes[-1])
    c.structures = s
    c.target = s[COMBINED_TARGET] if c.multilevel else c.targets[0]
    c.target_mask = c.target.mask_on(grid)
    c.derived = tuple(x for x in s.values() if x.derived)
    c.notes.extend(f"anatomy: {n}" for n in notes if "not added" not in n)  # derive_anatomy logs them
    body = s.by_role(Role.BODY)[0].mask_on(grid) if s.by_role(Role.BODY) else None
    for t in c.targets:
        tm = t.mask_on(grid)
        inside = 100.0 * float((tm & body).sum()) / float(tm.sum()) if body is not None else 100.0
        mean_hu = float(np.mean(c.ct.hu[tm]))
        if inside < 50.0 or mean_hu < -500.0:
            raise PlanningError(f"target {t.name!r} lies outside the patient: {inside:.0f} % of it is inside the "
                                f"body, its mean CT value is {mean_hu:.0f} HU (air is -1000); check the target contour "
                                "and that it belongs to this CT")
    position = c.ct.patient_position
    if position not in PRONE:
        c.notes.append(
            (f"the CT shows the patient {'supine' if position in ('HFS', 'FFS') else 'in position ' + str(position)} "
             f"({position})" if position else "the CT gives no patient position (assumed supine for an image file)")
            + ": the needles enter from the back; turn the patient prone and re-scan before the implant, "
            "then plan on the prone CT")
        log.warning(c.notes[-1])
    if c.opt.cement and c.opt.cement_volume_mL is not None and not s.by_role(Role.VERTEBRAL_BODY):
        raise PlanningError(
            f"cement_volume_mL={c.opt.cement_volume_mL:g} was requested but no structure has the role "
            f"'vertebral_body' (structures: {list(s.names)}); contour the treated vertebral body"
        )
    bodies = s.by_role(Role.BODY)
    c.body_mask = bodies[0].mask_on(grid) if bodies else np.asarray(c.ct.hu > -400)
    c.forbidden = {x.name: x.mask_on(grid) for x in s.values()
                   if x.role in (Role.OAR, Role.CANAL, Role.AVOIDANCE) and not x.is_empty}
    c.corridor = _union(s, grid, Role.VERTEBRAL_BODY, Role.PEDICLE)
    c.bone = np.asarray(c.ct.hu >= c.opt.bone_min_hu)


def _treated_level(s: StructureSet, target: Structure, *, multilevel: bool = False) -> str | None:
    """The level of the treated vertebra: from the vertebral body's name, else the target's (``target_S1``).

    With several targets, each target's own level: from its name, else the vertebral body it overlaps most.
    """
    if multilevel:
        level = level_from_name(target.name)
        if level:
            return level
        tm = np.asarray(target.mask, dtype=bool)
        overlaps = [(int((x.mask_on(target.grid) & tm).sum()), x.name) for x in s.by_role(Role.VERTEBRAL_BODY)]
        best = max(overlaps, default=(0, ""))
        return level_from_name(best[1]) if best[0] > 0 else None
    for x in (*s.by_role(Role.VERTEBRAL_BODY), target):
        level = level_from_name(x.name)
        if level:
            return level
    return None


def _track_mask(needles: Sequence[Needle], grid: Grid) -> np.ndarray:
    """The voxels the needles' straight tracks pass through (entry to tip)."""
    out = np.zeros(grid.shape, dtype=bool)
    step = 0.5 * float(min(grid.spacing_mm))
    for n in needles:
        t = np.arange(0.0, n.depth_mm + step, step)
        idx = np.rint(grid.world_to_index(n.entry[None] + t[:, None] * n.direction[None])).astype(int)
        ok = np.all((idx >= 0) & (idx < np.asarray(grid.size)), axis=1)
        out[idx[ok, 2], idx[ok, 1], idx[ok, 0]] = True
    return out


def _needles(c: _Context) -> None:
    """Seed needle trajectories to each target (with the access its level needs).

    In a multi-level plan the levels are planned in turn, each level's needles keeping clear of the
    tracks of the levels before it, and each needle records the target it serves.
    """
    c.levels = tuple(_treated_level(c.structures, t, multilevel=c.multilevel) for t in c.targets)
    c.level = c.levels[0]
    plans: list[NeedlePlan] = []
    taken: dict[str, np.ndarray] = {}
    for t, level in zip(c.targets, c.levels):
        constraints, note = access_constraints(
            replace(c.opt.needle_constraints, min_needle_distance_mm=c.presc.min_needle_distance_mm), level,
            c.opt.bone_access)
        c.level_constraints[t.name] = constraints
        if note:
            note = f"access: {note}" if not c.multilevel else f"access ({t.name}): {note}"
            c.notes.append(note)
            log.info(note)
        log.info("planning needle trajectories (%s mode) to %r", c.opt.needle_mode, t.name)
        try:
            found = plan_needles(
                c.grid, t.mask_on(c.grid), c.body_mask, {**c.forbidden, **taken}, bone=c.bone,
                bone_allowed=c.corridor, constraints=constraints, mode=c.opt.needle_mode,
                spacing_mm=c.presc.min_needle_distance_mm, rng=c.opt.rng_seed,
            )
        except PlanningError as exc:
            if not c.multilevel:
                raise
            raise PlanningError(f"{t.name}: {exc}") from None
        if c.multilevel:
            found = replace(found, needles=tuple(replace(n, target=t.name) for n in found.needles))
            taken[f"needle tracks of {t.name}"] = _track_mask(found.needles, c.grid)
        log.info("%d candidate needles, target-track coverage %.0f %%", len(found), 100 * found.coverage_fraction)
        plans.append(found)
    c.constraints = c.level_constraints[c.targets[0].name]
    c.needle_plan = plans[0] if len(plans) == 1 else _merged(plans, [t.mask_on(c.grid).sum() for t in c.targets])


def _merged(plans: Sequence[NeedlePlan], weights: Sequence[float]) -> NeedlePlan:
    """One needle plan from the levels' (coverage weighted by the targets' volumes)."""
    w = np.asarray(weights, dtype=float)
    return NeedlePlan(
        needles=tuple(n for p in plans for n in p.needles),
        diagnostics=tuple(d for p in plans for d in p.diagnostics),
        mode=plans[0].mode,
        coverage_fraction=float(np.sum(w * [p.coverage_fraction for p in plans]) / w.sum()),
        n_candidates=sum(p.n_candidates for p in plans),
        n_feasible=sum(p.n_feasible for p in plans),
        info={"levels": [dict(p.info) for p in plans]},
    )


def _vertebral_body_of(s: StructureSet, target: Structure, level: str | None) -> Structure | None:
    """The vertebral body a target lies in: the one named for its level, else the one it overlaps most."""
    bodies = s.by_role(Role.VERTEBRAL_BODY)
    named = [x for x in bodies if level and level_from_name(x.name) == level]
    if named:
        return named[0]
    tm = target.mask_on(target.grid)
    overlaps = [(int((x.mask_on(target.grid) & tm).sum()), i) for i, x in enumerate(bodies)]
    best = max(overlaps, default=(0, -1))
    return bodies[best[1]] if best[0] > 0 else None


def _vertebroplasty(c: _Context) -> None:
    """Vertebroplasty needles into the treated vertebral body (each level's), then the cement and its fill."""
    opt, s = c.opt, c.structures
    bodies = s.by_role(Role.VERTEBRAL_BODY)
    if not (opt.pvp_approach and bodies):
        if opt.cement and opt.pvp_approach:
            c.notes.append("cement not planned: no structure with the role 'vertebral_body'")
            log.info(c.notes[-1])
        return
    if not c.multilevel:
        _vertebroplasty_level(c, bodies[0], c.target, c.level, _union(s, c.grid, Role.PEDICLE), c.constraints)
        return
    done: set[str] = set()
    for t, level in zip(c.targets, c.levels):
        vb = _vertebral_body_of(s, t, level)
        if vb is None or vb.name in done:
            c.notes.append(f"{t.name}: no vertebral body of its own"
                           + (f" ({vb.name} is treated for another target)" if vb is not None else "")
                           + ": no vertebroplasty for it")
            log.info(c.notes[-1])
            continue
        done.add(vb.name)
        peds = [x for x in s.by_role(Role.PEDICLE) if level and level_from_name(x.name) == level]
        pedicles = np.logical_or.reduce([x.mask_on(c.grid) for x in peds]) if peds else \
            _union(s, c.grid, Role.PEDICLE)
        _vertebroplasty_level(c, vb, t, level, pedicles, c.level_constraints[t.name])


def _vertebroplasty_level(c: _Context, body: Structure, target: Structure, level: str | None, pedicles: np.ndarray,
                          constraints: NeedleConstraints) -> None:
    """Vertebroplasty needles into one vertebral body, then its cement (added to ``c.pvp`` and ``c.cements``)."""
    opt, s = c.opt, c.structures
    vb = body.mask_on(c.grid)
    where = f"{body.name}: " if c.multilevel else ""

    def paths(approach: str, bilateral: bool) -> tuple[Needle, ...]:
        return tuple(pvp_needle_paths(
            c.grid, vb, c.body_mask, c.forbidden, pedicles=pedicles if pedicles.any() else None, bone=c.bone,
            bone_allowed=c.corridor, approach=approach, bilateral=bilateral,
            constraints=replace(constraints, min_needle_distance_mm=opt.needle_constraints.min_needle_distance_mm),
            rng=opt.rng_seed).needles)

    # the requested approach, then one needle by the same approach, then parapedicular (no pedicle needed)
    attempts = [(opt.pvp_approach, opt.pvp_bilateral)] + ([(opt.pvp_approach, False)] if opt.pvp_bilateral else [])
    if opt.pvp_approach == "transpedicular":
        attempts += [("parapedicular", b) for b in dict.fromkeys((opt.pvp_bilateral, False))]
    failed: list[str] = []
    pvp: tuple[Needle, ...] = ()
    for approach, bilateral in attempts:
        try:
            pvp = paths(approach, bilateral)
            break
        except (PlanningError, InputError) as exc:  # the first sentence says what blocked it
            failed.append(f"{approach} {'bilateral' if bilateral else 'unipedicular'}: {str(exc).split('. ')[0]}")
    if failed:
        if not pvp:
            note = f"no vertebroplasty path ({'; '.join(failed)})"
        elif approach == opt.pvp_approach:
            note = f"unipedicular vertebroplasty only ({pvp[0].label}): the bilateral paths failed: " + \
                   failed[0].split(": ", 1)[1]
        else:
            note = (f"{approach} vertebroplasty{'' if bilateral else ' (one needle)'} instead of {opt.pvp_approach}: "
                    + "; ".join(failed))
        c.notes.append(where + note)
        log.warning(c.notes[-1])
    if c.multilevel:
        pvp = tuple(replace(n, target=target.name, label=f"{n.label} {level or body.name}".strip()) for n in pvp)
    c.pvp = c.pvp + pvp
    if pvp:
        log.info("%d vertebroplasty needle path(s), %s, into %r", len(pvp), approach, body.name)
    if not opt.cement:
        return
    if not pvp:
        c.notes.append(where + "cement not planned: no vertebroplasty needle path")
        log.info(c.notes[-1])
        return
    organs = [x for x in s.values() if x.role in (Role.OAR, Role.CANAL) and not x.is_empty]
    volume = opt.cement_volume_mL
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cement = plan_cement(c.ct, body, [n.tip for n in pvp], lesion=target,
                                 level=level if c.multilevel else None, volume_mL=volume,
                                 material=opt.cement_material, model=CEMENT_MODELS[opt.cement_model],
                                 organs=organs, compartment=_cement_compartment(c, body, level))
    except InputError as exc:
        if opt.cement_volume_mL is not None:  # a volume the user asked for and cannot have: say so and stop
            raise
        # e.g. the tips land in dense (blastic) tumour with no cancellous bone to inject into: the seeds are
        # still planned, without cement, and the plan says why
        c.notes.append(where + f"cement not planned: {exc}")
        log.warning(c.notes[-1])
        return
    for w in caught:
        text = str(w.message)
        if text.startswith("simulate_cement: needle_tips_mm"):  # the planner's own tip in dense bone: a plan note
            tip = text.split("needle_tips_mm[", 1)[1].split("]", 1)[0]
            c.notes.append(where + f"vertebroplasty needle {pvp[int(tip)].label}: its tip"
                           + text.split("]", 1)[1].replace(" lies in", " is in", 1))
            log.info(c.notes[-1])
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    c.cements.append(cement)
    r = cement.result
    log.info("cement%s: %.1f mL (%s) of %s, fill %.1f %%, endplates %s", f" {body.name}" if c.multilevel else "",
             r.volume_mL, cement.volume_source, cement.material.name, r.fill_pct, r.endplate_contact)


def _cement_compartment(c: _Context, body: Structure, level: str | None) -> Structure | None:
    """At a sacral level, the bone the cement may fill without a leak: the body and the sacral bone around it.

    The sacral body's cancellous bone continues into the lateral masses (the ala) without a cortex, so cement
    that spreads there has not leaked (sacroplasty fills the ala).  The compartment is the bone of the
    structures named for the sacrum (``sacral_bone``, TotalSegmentator's ``sacrum``) less the neural canals
    (canal, cauda, foramina: cement there is a leak) and the other levels' bodies.  None elsewhere, or when
    no sacral bone structure is given.
    """
    if not (level and str(level).upper().startswith("S")):
        return None
    sacral = [x for x in c.structures.by_role(Role.BONE) if "sacr" in x.name.lower() and not x.is_empty]
    if not sacral:
        return None
    grid = c.grid
    ext = np.logical_or.reduce([x.mask_on(grid) for x in sacral])
    for x in c.structures.values():
        if x.role == Role.CANAL or (x.role == Role.VERTEBRAL_BODY and x.name != body.name):
            ext &= ~x.mask_on(grid)
    if not (ext & ~body.mask_on(grid)).any():
        return None
    return Structure(f"{body.name}+sacrum", Role.VERTEBRAL_BODY, ext, grid)


def _slots(c: _Context) -> None:
    """Candidate seed slots: the target + margin, away from the canal, out of other organs and of the cement."""
    grid, presc = c.grid, c.presc
    region = _near(c.target_mask, grid, presc.target_margin_mm) & c.body_mask
    canal = np.zeros(grid.shape, dtype=bool)
    exclude = np.zeros(grid.shape, dtype=bool)
    for name, m in c.forbidden.items():
        if c.structures[name].role == Role.CANAL:
            canal |= m
        else:
            exclude |= m
    if canal.any():
        exclude |= _near(canal, grid, presc.min_seed_canal_distance_mm, strict=True)
    if c.cements and c.cements[0].radiopaque:
        exclude |= _near(np.logical_or.reduce([x.result.mask for x in c.cements]), grid, c.opt.cement_seed_margin_mm)
    elif c.stored_cement is not None and c.stored_cement.radiopaque:
        exclude |= _near(c.stored_cement.mask_on(grid), grid, c.opt.cement_seed_margin_mm)
    step = max(5.0, presc.seed_spacing_mm / 2.0)
    c.slots = candidate_slots(c.needle_plan.needles, grid, region, step, exclude=exclude)
    if len(c.slots) == 0:
        raise PlanningError(
            f"no seed slot: the needles' tracks do not cross {c.target.name!r} + {presc.target_margin_mm:g} mm "
            f"away from the canal (+{presc.min_seed_canal_distance_mm:g} mm)"
        )
    log.info("%d candidate seed slots on %d needles", len(c.slots), len(c.needle_plan))


def _attenuation(c: _Context) -> Any:
    """``(F, cement mask)``: ``F(points_mm, slots_mm)`` the primary attenuation factors of the planned cement and
    bone (the corrected dose's); ``(None, None)`` (with a note) when the plan's dose model is TG-43 or there is
    no cement to correct for."""
    if c.opt.dose_model != "corrected":
        return None, None
    cement = c.plan_cement()
    if cement is None:
        c.notes.append("dose_model='corrected' without cement: the seeds are planned on the TG-43 dose")
        log.warning(c.notes[-1])
        return None, None
    from ..dose.heterogeneity import attenuation_factors, mu_map

    cmask = cement.mask_on(c.grid)
    mu = mu_map(c.ct, cmask, cement.material)
    return (lambda p, slots_mm: attenuation_factors(p, slots_mm, mu, c.grid)), cmask


def _slot_scenarios(c: _Context, axes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(slot positions, slot axes, kept)`` of the nominal placement, then of each scenario of robust planning.

    A scenario moves every candidate needle (and the slots on it) as the error model draws it
    (:func:`~seedplan.plan._placement.draw_scenario`, scenario ``k`` of ``robust.seed``); ``kept`` is None
    for the nominal placement, else False for slots whose seed the scenario loses.
    """
    slots, robust = c.slots, c.opt.robust
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = [(slots.positions_mm, axes, None)]
    if robust is None or robust.errors.is_zero:
        return out
    needles = c.needle_plan.needles
    dirs = np.array([n.direction for n in needles], dtype=float)
    b1, b2 = zip(*(perpendicular_basis(d) for d in dirs))
    geometry = Geometry(
        entries_mm=np.array([n.entry_mm for n in needles], dtype=float), directions=dirs,
        basis1=np.array(b1), basis2=np.array(b2), seed_needle=np.asarray(slots.needle_index, dtype=np.intp),
        positions_mm=slots.positions_mm, axes=axes, strengths_U=np.ones(len(slots)))
    for k in range(1, robust.scenarios + 1):
        drawn = draw_scenario(geometry, robust.errors, robust.seed, k)
        out.append((drawn.positions_mm, drawn.axes, drawn.kept))
    note = (f"robust planning: the seeds optimised over the nominal placement and {robust.scenarios} scenarios of "
            f"needle placement errors (lateral {robust.errors.lateral_sd_mm:g} mm, angle "
            f"{robust.errors.angle_sd_deg:g} deg, depth {robust.errors.depth_sd_mm:g} mm SD; seed {robust.seed})")
    if note not in c.notes:
        c.notes.append(note)
        log.info(note)
    return out


def _seeds(c: _Context) -> None:
    """Dose-influence matrices on fine samples, then the optimiser (slots and one activity).

    With ``dose_model="corrected"`` the matrices carry the cement/bone attenuation of every slot-point
    path and the target is the lesion outside the cement; the TG-43 plan of the same options is optimised
    on the same samples and kept for the comparison.
    """
    grid, presc, opt, model, slots = c.grid, c.presc, c.opt, c.model, c.slots
    axes = np.array([c.needle_plan.needles[i].direction for i in slots.needle_index])
    conflicts = seed_conflicts(slots, presc.seed_spacing_mm, opt.min_seed_distance_mm)
    shadow, cmask = _attenuation(c)

    scenarios = _slot_scenarios(c, axes)

    def influence(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """Dose per U of every slot at the structure's samples, the samples of every scenario stacked, and the
        samples (mm).

        Every structure's weights are shared out over the scenarios: a target's coverage is the one expected
        over them, an organ's hottest volume that of the scenarios pooled.  (Holding the organ on the hottest
        volume among all scenarios, a worst case, gave up more coverage than it protected on the demo: with
        the Ji et al. errors its robust D90 fell below the nominal plan's.)
        """
        p, w = sample_mask_points(mask, grid, points_per_mm3=opt.sample_points_per_mm3)
        As, Cs = [], []
        for pos, ax, kept in scenarios:
            A = influence_matrix(p, pos, source=model, axes=ax, formalism=opt.formalism)
            if kept is not None:
                A[:, ~kept] = 0.0  # lost seeds give no dose
            As.append(A)
            if shadow is not None:
                Cs.append(A * shadow(p, pos))
        n = len(scenarios)
        weights = np.tile(w, n) / n
        return (As[0] if n == 1 else np.vstack(As)), weights, \
            (None if shadow is None else Cs[0] if n == 1 else np.vstack(Cs)), p

    def aims_on(p: np.ndarray) -> Aims:
        """The aims, with each level's target measured on its own target samples ``p`` (several levels)."""
        rows: dict[str, np.ndarray] = {}
        if c.multilevel:
            idx = np.rint(grid.world_to_index(p)).astype(np.int64)
            for t in c.targets:
                inside = np.flatnonzero(t.mask_on(grid)[idx[:, 2], idx[:, 1], idx[:, 0]])
                rows[t.name] = np.concatenate([inside + k * len(p) for k in range(len(scenarios))])
            if any(r.size == 0 for r in rows.values()):  # a level without samples (all cement): the union's goals
                rows = {}
        return aims_for(presc, c.target.name, candidates, rows)

    t0 = time.perf_counter()
    candidates = [x.name for x in c.structures.values() if x.role in (Role.OAR, Role.CANAL) and not x.is_empty]
    A_t, w_t, C_t, p_t = influence(c.target_mask)
    A_full, w_full = A_t, w_t
    aims = aims_full = aims_on(p_t)
    if shadow is not None and (c.target_mask & ~cmask).any():
        # on the corrected dose the goals are the lesion's outside the cement: the part the PMMA fills is no
        # longer tumour, and the cement shadows it most (its dose is still reported)
        A_t, w_t, C_t, p_t = influence(c.target_mask & ~cmask)
        aims = aims_on(p_t)
    A_o, w_o, C_o = {}, {}, {}
    for name in dict.fromkeys(g.structure for g, _v in aims.organ(candidates)):  # organs with a limit the samples measure
        A_o[name], w_o[name], C_o[name], _ = influence(c.structures[name].mask_on(grid))
    c.timings["seeds:influence"] = round(time.perf_counter() - t0, 3)
    # activities are ordered at the calibration date; the dose comes from the strength at the implant date
    decay = float(decay_factor(elapsed_days(c.calibration_date, c.implant_date), model.half_life_d))

    def optimise(At: np.ndarray, Ao: Mapping[str, np.ndarray], wt: np.ndarray, aims: Aims = aims) -> SeedSolution:
        return optimise_seeds(
            At, wt, aims, A_oars=Ao, w_oars=w_o, U_per_mCi=model.U_per_mCi * decay,
            activity_range_mCi=tuple(presc.activity_mCi_range), conflicts=conflicts,
            rng=np.random.default_rng(opt.rng_seed), activities_mCi=c.activities_mCi,
            milp_points=400 * max(1, len(c.targets)),
        )

    log.info("optimising seed positions and activity (MILP + local search)")
    # The optimiser sees a coarser sampling than the final evaluation: it aims a little inside the goals.
    if C_t is None:
        sol = optimise(A_t, A_o, w_t)
    else:
        tg43 = optimise(A_full, A_o, w_full, aims_full)  # the plan the TG-43 dose model gives
        log.info("the TG-43 plan: %d seeds x %.2f mCi; now on the cement/bone-corrected dose", tg43.n_seeds,
                 tg43.activity_mCi)
        sol = optimise(C_t, C_o, w_t)
        x = np.zeros(A_t.shape[1], dtype=bool)
        x[list(tg43.chosen)] = True
        shadowed = plan_quality(x, tg43.activity_mCi * model.U_per_mCi * decay, C_t, w_t, C_o, w_o, aims)
        c.tg43_alternative = {
            "seeds": tg43.n_seeds, "activity_mCi": tg43.activity_mCi,
            "total_activity_mCi": round(tg43.n_seeds * tg43.activity_mCi, 4),
            "tg43": {k: round(v, 3) for k, v in tg43.quality.items()},
            "corrected": {k: round(v, 3) for k, v in shadowed.items()},
            "what": "the plan optimised on the TG-43 dose with the same options: its TG-43 dose on the target and "
                    "its corrected dose on the target outside the cement, on the optimiser's samples (not the "
                    "fine evaluation)",
        }
    if sol.n_seeds == 0:
        raise PlanningError("the optimiser placed no seed; check the target and the needle paths")
    log.info("%d seeds x %.2f mCi%s", sol.n_seeds, sol.activity_mCi, "" if sol.goals_met else
             f"; missed on the optimiser's samples (aims set inside the goals): {'; '.join(sol.failed_goals)}")
    c.solution = sol


def _plan(c: _Context) -> None:
    """The plan value: the needles that carry seeds (renamed N1, N2... in order), their seeds, the cement."""
    slots, sol, model = c.slots, c.solution, c.model
    chosen = np.array(sol.chosen)
    used = sorted({int(slots.needle_index[j]) for j in chosen})
    needles: list[Needle] = []
    seeds: list[PlannedSeed] = []
    for number, old in enumerate(used, start=1):
        on = chosen[slots.needle_index[chosen] == old]
        on = on[np.argsort(slots.retraction_mm[on])]
        n = c.needle_plan.needles[old]
        tip = slots.positions_mm[on[0]]  # the tip moves to the deepest seed
        needles.append(replace(n, tip_mm=tuple(float(v) for v in tip), label=Plan.needle_name(number)))
        for j in on:
            seeds.append(PlannedSeed(
                position_mm=tuple(float(v) for v in slots.positions_mm[j]),
                axis=tuple(float(v) for v in n.direction),
                needle=number,
                retraction_mm=float(slots.retraction_mm[j] - slots.retraction_mm[on[0]]),
                activity_mCi=sol.activity_mCi,
                strength_U=sol.activity_mCi * model.U_per_mCi,  # at calibration
            ))
    c.plan = Plan(
        case=dict(c.case_reference),
        prescription=replace(c.presc, seed_model=model.name),
        seed_model=model,
        formalism=c.opt.formalism,
        needles=tuple(needles),
        seeds=tuple(seeds),
        calibration_date=c.calibration_date,
        implant_date=c.implant_date,
        pvp_needles=c.pvp,
        cement=c.plan_cement(),
        structures=c.derived,
        options=c.opt,
        notes=tuple(c.notes),
        optimiser={"activity_trials": [dict(t) for t in sol.trials],
                   **({"dose_model": "corrected", "tg43_alternative": c.tg43_alternative} if c.tg43_alternative
                      else {})},
        software={"name": "seedplan", "version": __version__},
    )


def _dose(c: _Context) -> None:
    """The total dose on a grid (the exported RTDOSE) around the seeds, the target and the organs within reach."""
    log.info("computing the dose grid")
    region = dose_region(c.plan, c.structures, c.grid, reach_mm=c.opt.dose_oar_reach_mm)
    c.dose_grid, c.dose_Gy = plan_dose_grid(c.plan, c.grid, region, spacing_mm=c.opt.dose_spacing_mm,
                                            margin_mm=c.opt.dose_margin_mm)
    outside = organs_outside_grid(c.dose_grid, c.structures, c.grid)
    if outside:
        c.plan = replace(c.plan, notes=c.plan.notes + (
            f"the dose grid (RTDOSE) covers every organ at risk within {c.opt.dose_oar_reach_mm:g} mm of a seed; "
            "parts beyond it, outside the grid: " + ", ".join(f"{k} {v:g} %" for k, v in outside.items()),))


def _evaluation(c: _Context) -> None:
    """Fine-sampled evaluation, goals and, with cement, the corrected dose; the metrics go into the plan."""
    log.info("evaluating the plan (fine-sampled DVHs)")
    c.evaluation = evaluate_plan(c.plan, c.structures)
    corrected = None
    if c.plan.cement is not None and c.opt.heterogeneity:
        log.info("evaluating the dose with the cement/bone attenuation correction")
        t0 = time.perf_counter()
        corrected = corrected_dose_metrics(c.plan, c.ct, c.structures)
        c.timings["evaluation:corrected_dose"] = round(time.perf_counter() - t0, 3)
    metrics = plan_metrics(c.plan, c.evaluation, corrected=corrected)
    notes = tuple(n for n in (_coverage_note(c, metrics), _hot_spot_note(c, metrics)) if n)
    if notes:
        for note in notes:
            log.info(note)
        c.plan = replace(c.plan, notes=c.plan.notes + notes)
        metrics = plan_metrics(c.plan, c.evaluation, corrected=corrected)
    c.plan = c.plan.with_results(metrics)


#: An organ whose limit holds the coverage back: at or above this fraction of its limit.
BINDING_FRACTION = 0.9


def _coverage_note(c: _Context, metrics: Mapping[str, Any]) -> str | None:
    """When a coverage goal (D90, V100) is missed, what held it back: the organ limits the plan runs up
    against (>= :data:`BINDING_FRACTION` of the limit) with their distance to the target, or else the
    needle paths.  None when the coverage goals are met."""
    results = {g["goal"]: g for g in metrics.get("goals") or []}
    goals = {g.label: g for g in c.presc.goals_for_metrics(metrics)}
    missed = [lb for lb, r in results.items() if not r["passed"] and lb in goals
              and goals[lb].group == "target" and goals[lb].at_least]
    if not missed:
        return None
    targets = {t.name: t for t in c.targets}
    names = list(dict.fromkeys(goals[lb].structure for lb in missed))
    near = [distance_near(targets[n].mask_on(c.grid), c.grid.spacing_mm[::-1], 30.0) for n in names if n in targets]
    binding = []
    for lb, r in results.items():
        g = goals.get(lb)
        if g is None or g.group == "target" or g.at_least or r["value"] < BINDING_FRACTION * r["limit"]:
            continue
        organ = c.structures.get(g.structure, None)
        dist = math.inf
        if organ is not None:
            om = organ.mask_on(c.grid)
            for found in near:
                if found is not None and om[found[0]].any():
                    dist = min(dist, float(found[1][om[found[0]]].min()))
        where = "touching the target" if dist < 0.5 * min(c.grid.spacing_mm) else \
            f"{dist:.0f} mm from the target" if math.isfinite(dist) else "more than 30 mm from the target"
        binding.append(f"{g.structure} {g.metric.split('_')[0]} {r['value']:.1f} Gy of {r['limit']:g} ({where})")
    head = f"coverage goals missed ({', '.join(missed)})"
    if binding:
        return (f"{head}: held back by the organ limits {'; '.join(binding)}: the seeds that would cover the "
                "rest of the target would take these organs over their limits")
    n = len(c.plan.needles)
    why = (f"the {n} seed needle{'s' if n != 1 else ''} reach too little of the target (more needles, other "
           "angles or a drill/coaxial access may open other paths)")
    canal = [m for name, m in c.forbidden.items() if c.structures[name].role == Role.CANAL]
    keep_mm = c.presc.min_seed_canal_distance_mm
    if canal:  # the slots' own exclusion (_slots)
        close = int((c.target_mask & _near(np.logical_or.reduce(canal), c.grid, keep_mm, strict=True)).sum())
        pct = 100.0 * close / max(int(c.target_mask.sum()), 1)
        if pct >= 5.0:
            why += (f"; {pct:.0f} % of the target lies within {keep_mm:g} mm of the canal, where no seed is "
                    "placed (min_seed_canal_distance_mm)")
    return f"{head} with no organ at its limit: {why}"


def _hot_spot_note(c: _Context, metrics: Mapping[str, Any]) -> str | None:
    """When a hot-spot goal (V150, V200) is missed with every coverage goal met: what the optimiser's activity
    trials show (none kept both; the lowest activity that kept the coverage and its hot-spot volumes).  None
    otherwise."""
    results = {g["goal"]: g for g in metrics.get("goals") or []}
    goals = {g.label: g for g in c.presc.goals_for_metrics(metrics)}
    target = [lb for lb in results if lb in goals and goals[lb].group == "target"]
    missed = [lb for lb in target if not results[lb]["passed"] and not goals[lb].at_least]
    if not missed or any(not results[lb]["passed"] for lb in target if goals[lb].at_least) or c.solution is None:
        return None
    trials = [t for t in c.solution.trials if not any(" < " in f for f in t.get("failed_goals", ()))]
    head = f"hot-spot goals missed ({', '.join(missed)}) with the coverage met"
    acts = [t["activity_mCi"] for t in c.solution.trials]
    if not trials:
        return f"{head}: no seed activity tried ({min(acts):g}-{max(acts):g} mCi) kept the coverage on the optimiser's samples"
    values = []
    for lb in missed:
        key = f"{goals[lb].structure} {goals[lb].metric}"
        got = [t[key] for t in trials if key in t]
        if got:
            values.append(f"{goals[lb].structure} {goals[lb].metric.split('_')[0]} at {min(got):.1f}-{max(got):.1f} %")
    kept = sorted({t["activity_mCi"] for t in trials})
    return (f"{head}: no seed activity tried ({min(acts):g}-{max(acts):g} mCi) kept both on the optimiser's samples; "
            f"those that kept the coverage ({', '.join(f'{a:g}' for a in kept)} mCi) left " + ", ".join(values)
            + ": fewer, weaker or farther-apart seeds lose coverage before the hot spots shrink")


STEPS = (_anatomy, _needles, _vertebroplasty, _slots, _seeds, _plan, _dose, _evaluation)


# ============================================================================= plan_case
def plan_case(
    ct: CTImage,
    structures: StructureSet,
    prescription: Prescription | None = None,
    *,
    options: PlanningOptions | None = None,
    case_reference: Mapping[str, Any] | None = None,
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
        Stored in the plan (case name, CT series UID and content hash, source paths).

    Returns
    -------
    PlanningResult

    Raises
    ------
    PlanningError
        Empty target, no feasible needle path (naming the blocking
        structure) or no seed slot.
    """
    for name, value, kind in (("ct", ct, CTImage), ("structures", structures, StructureSet),
                              ("prescription", prescription, (Prescription, type(None))),
                              ("options", options, (PlanningOptions, type(None)))):
        if not isinstance(value, kind):
            raise InputTypeError(f"plan_case: {name} must be a {getattr(kind, '__name__', kind[0].__name__)}, "
                                 f"got {type(value).__name__}")
    presc = prescription or Prescription()
    opt = options or PlanningOptions()
    cal = opt.calibration_date or _dt.date.today().isoformat()
    c = _Context(ct, structures, presc, opt, load_seed_model(presc.seed_model), dict(case_reference or {}),
                 calibration_date=cal, implant_date=opt.implant_date or cal)
    t0 = time.perf_counter()
    for step in STEPS:
        t = time.perf_counter()
        step(c)
        name = step.__name__.lstrip("_")
        c.timings[name] = round(time.perf_counter() - t, 3)
        log.log(logging.INFO if c.timings[name] >= 1.0 else logging.DEBUG, "step %s: %.1f s", name, c.timings[name])
    c.timings["total"] = round(time.perf_counter() - t0, 3)
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    run = {"created": created, "timings_s": dict(c.timings), "optimiser_solve_time_s": round(c.solution.solve_time_s, 3)}
    if c.cements:
        run["cement_simulation_time_s"] = round(sum(x.result.elapsed_s for x in c.cements), 3)
    plan = replace(c.plan, run=run)
    return PlanningResult(plan, c.needle_plan, c.solution, c.dose_grid, c.dose_Gy, c.evaluation, c.timings, c.cement,
                          tuple(c.cements))


# ================================================================================ re-plan
def replan_on_needles(
    plan: Plan,
    ct: CTImage,
    structures: StructureSet,
    needles: Sequence[Needle | None],
    *,
    pvp_needles: Sequence[Needle] | None = None,
    activity_mCi: float | None = None,
    case_reference: Mapping[str, Any] | None = None,
) -> PlanningResult:
    """Re-optimise the seeds of ``plan`` along the needles actually placed (the CT room's re-plan).

    Parameters
    ----------
    plan : Plan
        The plan the needles were placed for (its prescription, options, seed model, dates and cement are kept).
    ct, structures : CTImage, StructureSet
        The planning CT and the case's structures (the plan's derived structures are added).
    needles : sequence of Needle or None
        The seed needles as placed, in the planning frame, one per planned needle in plan order
        (:meth:`seedplan.verification.NeedleVerification.actual_needles`); None for a needle not found.
    pvp_needles : sequence of Needle, optional
        The vertebroplasty needles as placed (default: the planned ones).
    activity_mCi : float, optional
        The seed activity; default the plan's (the seeds are already ordered).  ``0`` or None keeps it.

    Returns
    -------
    PlanningResult
        The new plan's notes say which planned needles were missing and how the seeds moved; goals the
        placed needles cannot meet are named in its failed goals.
    """
    if not isinstance(plan, Plan):
        raise InputTypeError(f"replan_on_needles: plan must be a Plan, got {type(plan).__name__}")
    if plan.n_seeds == 0:
        raise InputError("the plan has no seeds: there is nothing to re-plan")
    placed = [(k, n) for k, n in enumerate(needles, start=1) if n is not None]
    if not placed:
        raise PlanningError("none of the planned needles was found on the CT: no seed can be placed")
    opt = plan.options or PlanningOptions()
    activity = float(activity_mCi) if activity_mCi else float(plan.seeds[0].activity_mCi)
    t0 = time.perf_counter()
    c = _Context(ct, plan_structures(plan, structures), plan.prescription, opt, plan.seed_model,
                 dict(case_reference or plan.case), calibration_date=plan.calibration_date,
                 implant_date=plan.implant_date)
    c.stored_cement, c.activities_mCi = plan.cement, (round(activity, 3),)
    c.pvp = tuple(pvp_needles) if pvp_needles is not None else plan.pvp_needles
    missing = [Plan.needle_name(k) for k, n in enumerate(needles, start=1) if n is None]
    if missing:
        c.notes.append(f"re-plan: needle(s) {', '.join(missing)} not found on the CT; their seeds go to the others")
    c.notes.append(f"re-plan on the {len(placed)} needles placed (of {len(needles)} planned), "
                   f"{activity:.3f} mCi seeds as ordered")
    steps = (_anatomy, _set_needles(tuple(n for _k, n in placed)), _slots, _seeds, _plan, _dose, _evaluation)
    for step in steps:
        t = time.perf_counter()
        step(c)
        c.timings[step.__name__.lstrip("_")] = round(time.perf_counter() - t, 3)
    c.timings["total"] = round(time.perf_counter() - t0, 3)
    entries = {tuple(n.entry_mm): k for k, n in placed}
    names = [(Plan.needle_name(j), Plan.needle_name(entries.get(tuple(n.entry_mm), 0)))
             for j, n in enumerate(c.plan.needles, start=1)]
    if any(a != b for a, b in names):
        c.plan = replace(c.plan, notes=c.plan.notes + (
            "re-plan needle names: " + ", ".join(f"{a} = planned {b}" for a, b in names),))
    before = plan.n_seeds
    c.plan = replace(c.plan, notes=c.plan.notes + (
        f"re-plan: {c.plan.n_seeds} seeds (planned {before}); target D90 "
        f"{c.plan.results['target']['D90_Gy']:.1f} Gy (planned {plan.results.get('target', {}).get('D90_Gy', float('nan')):.1f})",),
        run={"created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
             "timings_s": dict(c.timings), "replanned_from": plan.run.get("created", "")})
    c.plan = c.plan.with_results(plan_metrics(c.plan, c.evaluation, corrected=c.plan.results.get("heterogeneity")))
    return PlanningResult(c.plan, c.needle_plan, c.solution, c.dose_grid, c.dose_Gy, c.evaluation, c.timings, None)


def _set_needles(needles: tuple[Needle, ...]):
    """A step that puts the given needles in place of the needle planner's."""

    def _needles_placed(c: _Context) -> None:  # noqa: D401 - a planning step
        c.levels = tuple(_treated_level(c.structures, t, multilevel=c.multilevel) for t in c.targets)
        c.level = c.levels[0]
        c.constraints = c.opt.needle_constraints
        c.needle_plan = NeedlePlan(tuple(replace(n, kind="seed") for n in needles), (), "placed", math.nan,
                                   len(needles), len(needles))

    return _needles_placed
