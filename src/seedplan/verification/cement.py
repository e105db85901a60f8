"""Radiopaque cement on the post-operative CT: volume, fill, cross-section, endplate contact and leaks by site.

:func:`verify_cement` works in the post-op CT around the treated vertebral
body (``search_mm`` around it, mapped through the registration):

1. **cement** is what is bright *and new*: HU at or above the threshold and
   at least ``min_increase_hu`` above the planning CT resampled through the
   registration, so cortical bone (bright in both CTs) is never cement.
   Around metal (HU >= ``metal_hu``, dilated 2 mm) the HU is replaced by its
   grey opening (a 7 mm box), which removes the seed and its bloom but keeps
   cement that surrounds it.  The threshold is half-way between the cement's
   plateau (the median HU inside the surely-cement voxels, HU >= 1200 and
   new) and the planning CT's HU under it - the volume-preserving level of a
   blurred edge - unless ``threshold_hu`` is given;
2. **sites**: the planning structures are sampled on the post-op CT's
   voxels (through the registration).  Cement outside the treated vertebral
   body is assigned, voxel by voxel and in this order of precedence, to the
   ``spinal_canal`` (structures of role canal), a ``foramen`` (structures
   whose name holds "foram", when the case has them), the ``disc`` (a
   structure named "disc"/"intervertebral" when present, else the columns of
   the body's axial footprint beyond its endplates, up to ``disc_reach_mm``),
   ``other_bone`` (bone in the planning CT, HU >= ``bone_hu``: pedicles,
   posterior elements, the needle tract) and ``paravertebral`` (soft tissue
   and veins: everything else).  Each connected piece of outside cement is a
   :class:`CementLeak` reported at its majority site with its whole volume;
   ``leak_mL`` sums them per site and ``outside_vertebral_body`` is the total;
3. **fill figures** in the planning frame (the cement mask resampled onto the
   planning CT): the maximum cross-section ratio
   (:func:`seedplan.planning.cement.cross_section_ratios`), the fill %, the
   endplate contact (cement within 1 mm + one slice of the body's top or
   bottom voxel in a column), and the overlap with the planned cement.

Leaks farther than ``search_mm`` from the body (a pulmonary cement embolism)
are outside the search and not reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .. import _validate as v
from ..errors import GeometryError, InputError, InputTypeError
from ..geometry import Grid
from ..imaging.ct import CTImage
from ..imaging.structures import Role, Structure, StructureSet
from ..plan import Plan
from ..planning.cement import cross_section_ratios
from . import _frames as fr
from .registration import Registration, as_registration

__all__ = ["CementLeak", "CementVerification", "verify_cement", "SITES"]

log = logging.getLogger("seedplan")

#: Leak sites, in their order of precedence.
SITES = ("spinal_canal", "foramen", "disc", "other_bone", "paravertebral")


@dataclass(frozen=True)
class CementLeak:
    """One connected piece of cement outside the treated vertebral body.

    Attributes
    ----------
    site : str
        Its majority site (:data:`SITES`).
    volume_mL : float
    centroid_mm : tuple of 3 floats
        Planning frame.
    sites_mL : mapping
        Its volume per site, voxel by voxel.
    """

    site: str
    volume_mL: float
    centroid_mm: tuple[float, float, float]
    sites_mL: Mapping[str, float]


@dataclass(frozen=True, eq=False)
class CementVerification:
    """The cement found on the post-operative CT.

    Attributes
    ----------
    volume_mL : float
        All the cement found within the search region.
    inside_vertebral_body_mL, outside_vertebral_body_mL : float
    leak_mL : mapping
        Leak volume per site (:data:`SITES`), from the leaks' majority sites, and ``outside_vertebral_body``.
    leaks : tuple of CementLeak
        Pieces of at least ``min_leak_mL``, largest first.
    fill_pct : float
        Cement inside the body as a percentage of the body's volume.
    max_cross_section_ratio, max_slice_ratio : float
        :func:`~seedplan.planning.cement.cross_section_ratios` in the planning frame.
    endplate_contact : {"none", "superior", "inferior", "both"}
    planned_volume_mL : float or None
    dice_with_plan : float or None
        Overlap of the cement found with the planned cement (planning frame).
    threshold_hu : float
    vertebral_body : str
    mask : bool ndarray
        The cement on ``grid`` (read-only).
    grid : Grid
        The post-op CT's sub-grid the mask lies on (post-op frame).
    registration : Registration
    warnings : tuple of str
    """

    volume_mL: float
    inside_vertebral_body_mL: float
    outside_vertebral_body_mL: float
    leak_mL: Mapping[str, float]
    leaks: tuple[CementLeak, ...]
    fill_pct: float
    max_cross_section_ratio: float
    max_slice_ratio: float
    endplate_contact: str
    planned_volume_mL: float | None
    dice_with_plan: float | None
    threshold_hu: float
    vertebral_body: str
    mask: np.ndarray = field(repr=False)
    grid: Grid = field(repr=False)
    registration: Registration = field(repr=False)
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        m = np.asarray(self.mask, bool).copy()
        m.setflags(write=False)
        object.__setattr__(self, "mask", m)
        object.__setattr__(self, "leak_mL", dict(self.leak_mL))

    @property
    def leaked(self) -> bool:
        """True when any leak of at least the reporting size was found."""
        return bool(self.leaks)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (volumes in mL rounded to 0.001)."""
        r3 = lambda x: None if x is None else round(float(x), 3)  # noqa: E731
        return {
            "volume_mL": r3(self.volume_mL),
            "inside_vertebral_body_mL": r3(self.inside_vertebral_body_mL),
            "outside_vertebral_body_mL": r3(self.outside_vertebral_body_mL),
            "leak_mL": {k: r3(x) for k, x in self.leak_mL.items()},
            "leaks": [{"site": lk.site, "volume_mL": r3(lk.volume_mL),
                       "centroid_mm": [round(x, 1) for x in lk.centroid_mm],
                       "sites_mL": {k: r3(x) for k, x in lk.sites_mL.items()}} for lk in self.leaks],
            "fill_pct": round(self.fill_pct, 2),
            "max_cross_section_ratio": round(self.max_cross_section_ratio, 4),
            "max_slice_ratio": round(self.max_slice_ratio, 4),
            "endplate_contact": self.endplate_contact,
            "planned_volume_mL": r3(self.planned_volume_mL),
            "dice_with_plan": None if self.dice_with_plan is None else round(self.dice_with_plan, 3),
            "threshold_hu": round(self.threshold_hu, 1),
            "vertebral_body": self.vertebral_body,
            "warnings": list(self.warnings),
        }


# ============================================================================ helpers
def _pool(structures: Any, plan: Plan | None) -> list[Structure]:
    pool: list[Structure] = []
    if structures is not None:
        if isinstance(structures, StructureSet):
            pool += [structures[n] for n in structures]
        elif isinstance(structures, Structure):
            pool.append(structures)
        else:
            try:
                items = list(structures)
            except TypeError:
                raise InputTypeError(f"structures must be a StructureSet or Structures, got "
                                     f"{type(structures).__name__}") from None
            for s in items:
                if not isinstance(s, Structure):
                    raise InputTypeError(f"structures must hold seedplan Structures, got {type(s).__name__}")
            pool += items
    if plan is not None:
        names = {s.name for s in pool}
        pool += [s for s in plan.structures if s.name not in names]
    return pool


def _vertebral_body(pool: list[Structure], name: str | None, plan: Plan | None) -> Structure:
    if not name and plan is not None and plan.cement is not None and len(plan.cement.vertebral_bodies) > 1:
        # a multi-level plan: the cement belongs to the union of the treated bodies
        found = [s for s in pool if s.name in plan.cement.vertebral_bodies]
        if len(found) == len(plan.cement.vertebral_bodies):
            g = found[0].grid
            return Structure(plan.cement.vertebral_body, Role.VERTEBRAL_BODY,
                             np.logical_or.reduce([s.mask_on(g) for s in found]), g,
                             derived="the union of the treated vertebral bodies")
    wanted = name or (plan.cement.vertebral_body if plan is not None and plan.cement is not None else None)
    if wanted:
        for s in pool:
            if s.name == wanted:
                return s
        if name:
            raise InputError(f"vertebral_body {name!r} is not among the structures "
                             f"({', '.join(s.name for s in pool) or 'none'})")
    bodies = [s for s in pool if s.role == Role.VERTEBRAL_BODY]
    if not bodies:
        raise InputError("verify_cement needs the treated vertebral body: pass the case's structures (a structure "
                         "of role vertebral_body) or vertebral_body=")
    return bodies[0]


def _endplate_contact(cement: np.ndarray, vb: np.ndarray, grid: Grid) -> str:
    """Cement inside the body within 1 mm + one slice of the body's top or bottom voxel of its column."""
    d = grid.direction_matrix
    if not np.allclose(np.abs(d), np.eye(3), atol=1e-3):
        return "unknown"
    inside = cement & vb
    if not inside.any():
        return "none"
    dz = float(grid.spacing_mm[2])
    tol = 1.0 + dz
    k = np.arange(vb.shape[0])[:, None, None]
    top = np.where(vb, k, -1).max(axis=0)
    bot = np.where(vb, k, vb.shape[0]).min(axis=0)
    if d[2, 2] < 0:
        top, bot = bot, top
    sup = bool(np.any(inside & (np.abs(top[None] - k) * dz <= tol + 1e-9)))
    inf = bool(np.any(inside & (np.abs(k - bot[None]) * dz <= tol + 1e-9)))
    return "both" if sup and inf else "superior" if sup else "inferior" if inf else "none"


def _derived_disc(points_plan: np.ndarray, vb_plan: np.ndarray, pgrid: Grid, reach_mm: float) -> np.ndarray:
    """True for points (planning frame) in the body's axial footprint beyond its endplates (within reach)."""
    out = np.zeros(len(points_plan), bool)
    d = pgrid.direction_matrix
    if not len(points_plan) or not np.allclose(np.abs(d), np.eye(3), atol=1e-3):
        return out
    ijk = np.rint(pgrid.world_to_index(points_plan)).astype(int)
    nx, ny, nz = pgrid.size
    ok = (ijk[:, 0] >= 0) & (ijk[:, 0] < nx) & (ijk[:, 1] >= 0) & (ijk[:, 1] < ny)
    foot = vb_plan.any(axis=0)
    k = np.arange(vb_plan.shape[0])[:, None, None]
    top = np.where(vb_plan, k, -1).max(axis=0)
    bot = np.where(vb_plan, k, vb_plan.shape[0]).min(axis=0)
    i, j, kk = ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]
    in_foot = foot[j, i]
    dz = float(pgrid.spacing_mm[2])
    beyond = ((kk > top[j, i]) & ((kk - top[j, i]) * dz <= reach_mm)) | \
        ((kk < bot[j, i]) & ((bot[j, i] - kk) * dz <= reach_mm))
    out[np.nonzero(ok)[0]] = in_foot & beyond
    return out


# ============================================================================ verify
def verify_cement(
    post_ct: CTImage,
    planning_ct: CTImage,
    registration: Any,
    structures: Any = None,
    *,
    plan: Plan | None = None,
    vertebral_body: str | None = None,
    threshold_hu: float | None = None,
    min_increase_hu: float = 500.0,
    metal_hu: float = 2500.0,
    bone_hu: float = 250.0,
    search_mm: float = 40.0,
    disc_reach_mm: float = 15.0,
    min_leak_mL: float = 0.01,
) -> CementVerification:
    """Segment the radiopaque cement on the post-operative CT and report its volume, fill and leaks by site.

    Parameters
    ----------
    post_ct : CTImage
    planning_ct : CTImage
        The CT the plan was made on (what was there before the cement).
    registration : Registration, (4, 4) array or transform file
        Post-op CT -> planning frame (a failed registration raises :class:`RegistrationError`).
    structures : StructureSet or sequence of Structure, optional
        The case's structures (planning frame): the vertebral body, the canal, foramina, discs.  The plan's
        derived structures are added.
    plan : Plan, optional
        Gives the treated body's name, its derived structures and the planned cement to compare with.
    vertebral_body : str, optional
        Name of the treated vertebral body (default the plan's, else the first of role vertebral_body).
    threshold_hu : float, optional
        Cement threshold; default half-way between the cement's plateau and the bone it replaced.
    min_increase_hu : float
        Cement must be this much brighter than the planning CT at the same place.
    metal_hu : float
        Metal (seeds) threshold; around metal the HU is the grey opening.
    bone_hu : float
        Bone in the planning CT (the ``other_bone`` site).
    search_mm : float
        How far around the body to look for cement.
    disc_reach_mm : float
        How far beyond an endplate the derived disc site reaches.
    min_leak_mL : float
        Smaller pieces of outside cement are counted in ``outside_vertebral_body`` but not reported as leaks.

    Raises
    ------
    InputError
        No vertebral body among the structures, bad arguments.
    GeometryError
        The post-op CT does not cover the treated vertebral body.
    RegistrationError
        The registration failed its check.
    """
    from scipy import ndimage

    fr.check_ct(post_ct, "post_ct")
    fr.check_ct(planning_ct, "planning_ct")
    if plan is not None and not isinstance(plan, Plan):
        raise InputTypeError(f"plan must be a seedplan Plan, got {type(plan).__name__}")
    reg = as_registration(registration)
    if threshold_hu is not None:
        threshold_hu = v.number(threshold_hu, "threshold_hu")
    min_increase_hu = v.number(min_increase_hu, "min_increase_hu", lo=0.0)
    metal_hu = v.number(metal_hu, "metal_hu")
    bone_hu = v.number(bone_hu, "bone_hu")
    search_mm = v.number(search_mm, "search_mm", lo=0.0, hi=200.0)
    disc_reach_mm = v.number(disc_reach_mm, "disc_reach_mm", lo=0.0)
    min_leak_mL = v.number(min_leak_mL, "min_leak_mL", lo=0.0)
    pool = _pool(structures, plan)
    vb_s = _vertebral_body(pool, vertebral_body, plan)
    if vb_s.is_empty:
        raise InputError(f"vertebral body structure {vb_s.name!r} is empty")

    # ------------------------------------------------------------------ the search region in the post-op CT
    lo, hi = vb_s.bounds_mm
    lo, hi = np.asarray(lo) - search_mm, np.asarray(hi) + search_mm
    vb_later = reg.to_later(vb_s.centroid_mm)
    if not post_ct.grid.contains(vb_later[None])[0]:
        raise GeometryError(f"the post-operative CT does not contain the treated vertebral body {vb_s.name!r} (its "
                            f"centre maps to ({vb_later[0]:.0f}, {vb_later[1]:.0f}, {vb_later[2]:.0f}) mm): is it "
                            "this patient's CT of the treated level, with the right transform?")
    sub, sl = fr.crop_grid(post_ct.grid, lo, hi, frame_to_grid=reg.inverse_matrix)
    hu = np.asarray(post_ct.hu[sl], dtype=np.float32)
    plan_hu = fr.resample_hu(planning_ct, sub, reg.matrix, default_hu=-1024.0)
    sp = np.asarray(sub.spacing_mm)[::-1]
    vv_mL = sub.voxel_volume_mm3 / 1000.0
    warnings: list[str] = []

    # ------------------------------------------------------------------ cement
    metal = hu >= metal_hu
    if metal.any():
        zone = fr.dilate(metal, 2.0, sp)
        opened = fr.grey_opening(hu, fr.box_size(7.0, sp))
        hu_c = np.where(zone, opened, hu)
    else:
        hu_c = hu
    new = (hu_c - plan_hu) >= min_increase_hu
    if threshold_hu is None:
        sure = (hu_c >= 1200.0) & new
        if sure.any():
            core = ndimage.binary_erosion(sure)
            plateau = float(np.median(hu_c[core if core.any() else sure]))
            under = float(np.median(plan_hu[sure]))
            thr = max(0.5 * (plateau + under), under + min_increase_hu)
        else:
            thr = 1200.0
    else:
        thr = threshold_hu
    cement = (hu_c >= thr) & new
    if cement.any():  # single-voxel specks (noise on a bright edge) are not cement
        lab, n = ndimage.label(cement, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(lab.ravel())
        cement &= (sizes >= 3)[lab]
    if not cement.any():
        warnings.append("no radiopaque cement found around the treated vertebral body")

    # ------------------------------------------------------------------ sites on the post-op voxels
    view = reg.later_grid_in_planning(sub)

    def union(structs: list[Structure]) -> np.ndarray:
        m = np.zeros(sub.shape, bool)
        for s in structs:
            m |= s.mask_on(view)
        return m

    vb = vb_s.mask_on(view)
    canal = union([s for s in pool if s.role == Role.CANAL])
    foramen_s = [s for s in pool if "foram" in s.name.lower()]
    disc_s = [s for s in pool if "disc" in s.name.lower() or "intervertebral" in s.name.lower()]
    if not any(s.role == Role.CANAL for s in pool):
        warnings.append("no spinal canal among the structures: canal leaks are reported as paravertebral")
    inside = cement & vb
    outside = cement & ~vb
    idx_out = np.argwhere(outside)
    pts_plan = reg.to_planning(fr.world_of_indices(sub, idx_out)) if len(idx_out) else np.zeros((0, 3))
    site = np.full(len(idx_out), len(SITES) - 1, int)  # paravertebral unless something better
    sel = tuple(idx_out.T)
    pgrid = planning_ct.grid
    vb_plan = vb_s.mask_on(pgrid)
    checks = [
        ("spinal_canal", canal[sel] if len(idx_out) else np.zeros(0, bool)),
        ("foramen", union(foramen_s)[sel] if foramen_s and len(idx_out) else np.zeros(len(idx_out), bool)),
        ("disc", (union(disc_s)[sel] if disc_s else _derived_disc(pts_plan, vb_plan, pgrid, disc_reach_mm))
         if len(idx_out) else np.zeros(0, bool)),
        ("other_bone", plan_hu[sel] >= bone_hu if len(idx_out) else np.zeros(0, bool)),
    ]
    for name, hit in reversed(checks):  # precedence: the first in SITES wins
        site[hit] = SITES.index(name)

    # ------------------------------------------------------------------ leaks: connected pieces outside
    leaks: list[CementLeak] = []
    leak_mL = {s: 0.0 for s in SITES}
    if len(idx_out):
        lab_o = np.zeros(sub.shape, np.int32)
        lab_o[sel] = 1
        lab_o, n = ndimage.label(lab_o > 0, structure=np.ones((3, 3, 3), bool))
        comp = lab_o[sel]
        for c in range(1, n + 1):
            mine = comp == c
            vol = float(mine.sum() * vv_mL)
            per = {SITES[k]: float((site[mine] == k).sum() * vv_mL) for k in range(len(SITES))
                   if (site[mine] == k).any()}
            major = max(per, key=per.get)
            if vol >= min_leak_mL:
                leaks.append(CementLeak(major, vol, tuple(float(x) for x in pts_plan[mine].mean(axis=0)), per))
                leak_mL[major] += vol
    leaks.sort(key=lambda lk: -lk.volume_mL)
    leak_mL["outside_vertebral_body"] = float(outside.sum() * vv_mL)

    # ------------------------------------------------------------------ fill figures in the planning frame
    where = np.argwhere(vb_plan)
    a0 = np.maximum(where.min(axis=0) - 3, 0)
    a1 = np.minimum(where.max(axis=0) + 4, np.asarray(pgrid.shape))
    psl = tuple(slice(p, q) for p, q in zip(a0, a1))
    pcrop = Grid(pgrid.index_to_world(a0[::-1].astype(float)), pgrid.spacing_mm, (a1 - a0)[::-1],
                 pgrid.direction_matrix)
    cem_p = fr.resample_fraction(cement, sub, pcrop, reg.inverse_matrix) >= 0.5
    vb_p = vb_plan[psl]
    ratio, slice_ratio, _ = cross_section_ratios(cem_p, vb_p)
    fill = 100.0 * float((cem_p & vb_p).sum()) / float(vb_p.sum())
    contact = _endplate_contact(cem_p, vb_p, pcrop)
    planned_mL, dice = None, None
    if plan is not None and plan.cement is not None:
        planned_mL = plan.cement.volume_mL
        pm = plan.cement.mask_on(pgrid)[psl]
        s = int(pm.sum()) + int(cem_p.sum())
        dice = 2.0 * float((pm & cem_p).sum()) / s if s else None
    for lk in leaks:
        warnings.append(f"cement leak: {lk.volume_mL:.2f} mL at the {lk.site.replace('_', ' ')} (centre "
                        f"{lk.centroid_mm[0]:.0f}, {lk.centroid_mm[1]:.0f}, {lk.centroid_mm[2]:.0f} mm)")
    out = CementVerification(
        volume_mL=float(cement.sum() * vv_mL), inside_vertebral_body_mL=float(inside.sum() * vv_mL),
        outside_vertebral_body_mL=float(outside.sum() * vv_mL), leak_mL=leak_mL, leaks=tuple(leaks),
        fill_pct=fill, max_cross_section_ratio=ratio, max_slice_ratio=slice_ratio, endplate_contact=contact,
        planned_volume_mL=planned_mL, dice_with_plan=dice, threshold_hu=float(thr), vertebral_body=vb_s.name,
        mask=cement, grid=sub, registration=reg, warnings=tuple(warnings))
    log.info("cement: %.2f mL (%.2f mL outside the vertebral body, %d leak(s)), threshold %.0f HU",
             out.volume_mL, out.outside_vertebral_body_mL, len(leaks), thr)
    return out
