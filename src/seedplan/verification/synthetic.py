"""Synthetic intra-operative and post-operative CTs of a plan, with known truth.

:func:`synthetic_ct` turns a plan and its planning CT into the CT the CT room
would take after the needles were inserted (``kind="intraop"``) or after the
implant (``kind="postop"``), and returns what is really in it
(:class:`SyntheticTruth`): where every needle and seed went, which seed is
missing or migrated, the cement leak and its volume, and the patient's
motion.  It exists to test the verification layer (and the re-plan) against
planted truth.

How the CT is made, in order:

1. **patient motion**: the planning CT is resampled (linear) with the inverse
   of a known rigid motion ``motion`` (planning -> later LPS), so the later
   CT shows the patient moved;
2. **needles** (intra-op): each planned needle is perturbed by the error
   model (entry offset across the needle, angle, depth) and drawn as a metal
   cylinder from its tip to ``needle_outside_mm`` beyond the skin entry
   (seed needles 1.2 mm, 18G; vertebroplasty needles ``pvp_diameter_mm``);
3. **seeds** (post-op): each planned seed moves with its needle - by the
   displacement of the needle's point at the seed's retraction from the
   tip, planned to actual, and turned with the needle - plus a per-seed
   jitter of position and axis; it is drawn as a capsule (the plan's seed
   model: capsule length and diameter, 0.8 x 4.5 mm for the 6711) with a
   dense marker rod (the model's active length); ``missing_seeds`` planned
   seeds are not implanted and ``migrated_seeds`` are moved ``migration_mm``
   away;
4. **cement**: the plan's stored cement mask (:class:`~seedplan.plan.PlanCement`),
   linearly interpolated (partial volume), at ``cement_hu``, plus an optional
   leak planted in the spinal canal (an ellipsoid behind the posterior wall)
   or in a paravertebral vein (a 4 mm tube leaving the body's antero-lateral
   wall) of ``leak_volume_mL``;
5. needles, cement and the leak are rasterised by supersampling each voxel
   (sub-voxel step <= 0.15 mm) and mixed with the background by their volume
   fraction, and the volume is blurred with a Gaussian point-spread function
   (``psf_sigma_mm``); each seed is drawn on that sub-voxel lattice, blurred
   there by the same point-spread function and averaged into the voxels, so
   its partial-volume profile varies smoothly with its position and
   orientation - it blooms and saturates like on a scanner;
6. **metal streaks**: ``streaks`` bright and dark lines through each seed in
   the axial slices it occupies (amplitude ``streak_hu``, decaying with the
   distance from the seed), Gaussian noise ``noise_hu``, and clipping to
   [-1024, ``hu_max``] (3071: a 12-bit scanner).

Effective HU of the materials (``capsule_hu``: the titanium wall averaged
with the air inside the capsule; ``marker_hu``: the silver rod;
``needle_hu``: steel; ``cement_hu``: BaSO4/ZrO2-loaded PMMA, 1500-3000 HU in
the project's reference notes) are assumptions of this synthetic model, set
only so that metal saturates the scanner and cement stays well below it.

The default needle error model is the template-guided series of Ji et al.
(J Radiat Res 2021;62:910-917): depth 5.2 +/- 4.8 mm, entry 3.4 +/- 1.7 mm,
angle 2.8 +/- 1.7 deg.  Each magnitude is drawn from a gamma distribution with
the reported mean and SD (non-negative, same mean and spread); the direction
(across the needle, the tilt's azimuth, deeper or shallower) is uniform.  Their
tip error, 4.4 +/- 2.9 mm, is not a parameter: here it follows from the three
and from the needle's length, and comes out larger on the long oblique paths of
a spinal plan (a 2.8 deg tilt moves a 130 mm deep tip by 6 mm).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .. import _validate as v
from ..errors import GeometryError, InputError, InputTypeError
from ..geometry import Grid
from ..imaging.ct import CTImage, deterministic_uid
from ..imaging.structures import Role, StructureSet
from ..plan import Needle, Plan
from . import _frames as fr

__all__ = ["NeedleErrorModel", "JI_2021", "NO_ERRORS", "SyntheticTruth", "SyntheticCT", "synthetic_ct",
           "rigid_motion", "LEAK_SITES"]

log = logging.getLogger("seedplan")

#: Where :func:`synthetic_ct` can plant a cement leak, and the site name the verification reports for it.
LEAK_SITES = {"canal": "spinal_canal", "vein": "paravertebral"}

#: Largest sub-voxel sampling step (mm) of the supersampled rasterisation.
SUBSTEP_MM = 0.15


@dataclass(frozen=True)
class NeedleErrorModel:
    """Placement errors, drawn per needle: mean +/- SD of each magnitude (gamma distributed).

    Attributes
    ----------
    entry_mm, entry_sd_mm : float
        Offset of the entry point across the needle (mm).
    angle_deg, angle_sd_deg : float
        Tilt of the needle about its entry (deg), random azimuth.
    depth_mm, depth_sd_mm : float
        Change of the insertion depth (mm), deeper or shallower at random.
    seed_jitter_mm : float
        SD (mm, per axis) of each seed's position about its place on the actual needle.
    seed_axis_jitter_deg : float
        SD (deg) of each seed's axis about the actual needle direction.
    """

    entry_mm: float = 3.4
    entry_sd_mm: float = 1.7
    angle_deg: float = 2.8
    angle_sd_deg: float = 1.7
    depth_mm: float = 5.2
    depth_sd_mm: float = 4.8
    seed_jitter_mm: float = 0.5
    seed_axis_jitter_deg: float = 3.0

    def __post_init__(self) -> None:
        for k in ("entry_mm", "entry_sd_mm", "angle_deg", "angle_sd_deg", "depth_mm", "depth_sd_mm",
                  "seed_jitter_mm", "seed_axis_jitter_deg"):
            object.__setattr__(self, k, v.number(getattr(self, k), f"NeedleErrorModel.{k}", lo=0.0))
        if self.angle_deg + 4 * self.angle_sd_deg > 45:
            raise InputError("NeedleErrorModel: angle errors must stay well below 45 deg")


#: Ji et al., J Radiat Res 2021;62:910-917 (3D-printed template, 318 needles): depth 0.52 +/- 0.48 cm,
#: entry 3.4 +/- 1.7 mm, angle 2.8 +/- 1.7 deg.
JI_2021 = NeedleErrorModel()
#: Needles exactly as planned, seeds exactly on their planned positions and axes.
NO_ERRORS = NeedleErrorModel(0, 0, 0, 0, 0, 0, 0, 0)


def rigid_motion(rotation_deg: Any = (0.0, 0.0, 0.0), translation_mm: Any = (0.0, 0.0, 0.0),
                 center_mm: Any = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The 4x4 planning -> later matrix of a patient motion: rotations about x, then y, then z (deg, right-handed,
    LPS axes) about ``center_mm``, then the translation (mm)."""
    rx, ry, rz = np.radians(v.vector(rotation_deg, "rotation_deg", unit="deg"))
    t = np.array(v.vector(translation_mm, "translation_mm"))
    c = np.array(v.vector(center_mm, "center_mm"))
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    r = r_z @ r_y @ r_x
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + t
    return m


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """What a synthetic CT really contains (planning LPS unless said otherwise).

    Attributes
    ----------
    kind : {"intraop", "postop"}
    later_to_planning : (4, 4) ndarray
        The exact registration (later-CT LPS -> planning LPS).
    needles : tuple of Needle
        The actual needles (entry at the skin, tip), seed needles in plan order then the vertebroplasty
        needles; labels as in the plan (``N1``..., ``PVP left``...).
    needle_errors : tuple of mapping
        Per needle: the drawn ``entry_mm`` offset, ``angle_deg`` tilt and signed ``depth_mm`` change.
    seed_positions_mm, seed_axes : (K, 3) ndarray
        Centres and unit axes of the implanted seeds (post-op; empty for intra-op).
    seed_plan_index : tuple of int
        The planned seed (0-based) each implanted seed is.
    missing_seeds, migrated_seeds : tuple of int
        Planned seeds not implanted, and planned seeds that migrated (0-based).
    leak_site : str or None
        The site the verification should report (:data:`LEAK_SITES`), None without a leak.
    leak_volume_mL : float
        Leak volume as drawn (sum of the voxel fractions).
    leak_center_mm : tuple or None
    cement_volume_mL : float
        The planned cement as drawn (sum of the voxel fractions), without the leak.
    """

    kind: str
    later_to_planning: np.ndarray
    needles: tuple[Needle, ...]
    needle_errors: tuple[Mapping[str, float], ...]
    seed_positions_mm: np.ndarray
    seed_axes: np.ndarray
    seed_plan_index: tuple[int, ...]
    missing_seeds: tuple[int, ...] = ()
    migrated_seeds: tuple[int, ...] = ()
    leak_site: str | None = None
    leak_volume_mL: float = 0.0
    leak_center_mm: tuple[float, float, float] | None = None
    cement_volume_mL: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def n_seeds(self) -> int:
        return int(len(self.seed_positions_mm))


@dataclass(frozen=True, eq=False)
class SyntheticCT:
    """A synthetic later CT and its truth."""

    ct: CTImage
    truth: SyntheticTruth


# ============================================================================ rasterisation
class _Canvas:
    """Accumulates material volume fractions on the later grid by supersampling each voxel."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.sp = np.asarray(grid.spacing_mm, float)
        self.sub = np.maximum(np.ceil(self.sp / SUBSTEP_MM).astype(int), 1)  # per i, j, k
        # sub-voxel offsets in index units, (S, 3) in (i, j, k)
        axes = [(np.arange(n) + 0.5) / n - 0.5 for n in self.sub]
        oi, oj, ok = np.meshgrid(*axes, indexing="ij")
        self.offsets = np.stack([oi.ravel(), oj.ravel(), ok.ravel()], axis=1)

    def voxels_near(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> np.ndarray | None:
        """Integer (i, j, k) of the voxels whose box meets the world box (axis-aligned in the grid's index space)."""
        corners = np.array([[x, y, z] for x in (lo_mm[0], hi_mm[0]) for y in (lo_mm[1], hi_mm[1])
                            for z in (lo_mm[2], hi_mm[2])])
        idx = self.grid.world_to_index(corners)
        a = np.maximum(np.floor(idx.min(axis=0) - 0.5).astype(int), 0)
        b = np.minimum(np.ceil(idx.max(axis=0) + 0.5).astype(int) + 1, np.asarray(self.grid.size))
        if np.any(b <= a):
            return None
        ii, jj, kk = np.meshgrid(*(np.arange(p, q) for p, q in zip(a, b)), indexing="ij")
        return np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1)

    def fractions(self, ijk: np.ndarray, inside: Any, chunk: int = 4000) -> np.ndarray:
        """Fraction of each voxel ``ijk`` for which ``inside(points_mm) -> bool`` holds (supersampled)."""
        out = np.empty(len(ijk))
        s = len(self.offsets)
        for a in range(0, len(ijk), chunk):
            block = ijk[a:a + chunk].astype(float)
            pts = self.grid.index_to_world((block[:, None, :] + self.offsets[None]).reshape(-1, 3))
            out[a:a + chunk] = inside(pts).reshape(len(block), s).mean(axis=1)
        return out


def _segment_distance(p: np.ndarray, a: np.ndarray, u: np.ndarray, length: float) -> tuple[np.ndarray, np.ndarray]:
    """(distance to the axis segment, axial coordinate clipped to [0, length]) of points ``p``."""
    t = (p - a) @ u
    tc = np.clip(t, 0.0, length)
    d = np.linalg.norm(p - a - tc[:, None] * u, axis=1)
    return d, t


def _capsule_inside(centre: np.ndarray, axis: np.ndarray, length: float, radius: float):
    """A cylinder of ``length`` (overall, hemispherical ends) and ``radius`` about ``centre`` along ``axis``."""
    half = max(length / 2 - radius, 0.0)
    a = centre - half * axis

    def inside(p: np.ndarray) -> np.ndarray:
        d, _ = _segment_distance(p, a, axis, 2 * half)
        return d <= radius

    return inside


def _cylinder_inside(a: np.ndarray, b: np.ndarray, radius: float):
    u = b - a
    length = float(np.linalg.norm(u))
    u = u / length

    def inside(p: np.ndarray) -> np.ndarray:
        d, t = _segment_distance(p, a, u, length)
        return (d <= radius) & (t >= 0) & (t <= length)

    return inside


def _ellipsoid_inside(centre: np.ndarray, axes: np.ndarray, semi: np.ndarray):
    """Ellipsoid: columns of ``axes`` are its unit axes, ``semi`` its semi-axes."""

    def inside(p: np.ndarray) -> np.ndarray:
        q = (p - centre) @ axes / semi
        return np.sum(q * q, axis=1) <= 1.0

    return inside


def _perpendicular(u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector perpendicular to ``u``."""
    while True:
        w = np.cross(u, rng.normal(size=3))
        n = np.linalg.norm(w)
        if n > 1e-6:
            return w / n


def _rotate_about(vec: np.ndarray, axis: np.ndarray, angle_rad: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    return (vec * math.cos(angle_rad) + np.cross(axis, vec) * math.sin(angle_rad)
            + axis * (axis @ vec) * (1 - math.cos(angle_rad)))


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``a`` to unit vector ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    w = np.cross(a, b)
    s, c = float(np.linalg.norm(w)), float(a @ b)
    if s < 1e-12:
        return np.eye(3) if c > 0 else -np.eye(3) + 2 * np.outer(_any_perpendicular(a), _any_perpendicular(a))
    k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / s
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def _any_perpendicular(a: np.ndarray) -> np.ndarray:
    w = np.cross(a, np.eye(3)[int(np.argmin(np.abs(a)))])
    return w / np.linalg.norm(w)


def _magnitude(rng: np.random.Generator, mean: float, sd: float) -> float:
    """A non-negative error magnitude with this mean and SD: gamma distributed (shape (mean/sd)^2, scale
    sd^2/mean); exactly ``mean`` when ``sd`` is 0."""
    if mean <= 0:
        return 0.0
    if sd <= 0:
        return float(mean)
    return float(rng.gamma((mean / sd) ** 2, sd * sd / mean))


def _perturb_needle(n: Needle, model: NeedleErrorModel,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Actual (entry, tip) of a planned needle and the drawn errors."""
    d = n.direction
    e_off = _magnitude(rng, model.entry_mm, model.entry_sd_mm)
    entry = n.entry + e_off * _perpendicular(d, rng)
    ang = _magnitude(rng, model.angle_deg, model.angle_sd_deg)
    d2 = _rotate_about(d, _perpendicular(d, rng), math.radians(ang)) if ang else d
    dz = _magnitude(rng, model.depth_mm, model.depth_sd_mm) * (1 if rng.random() < 0.5 else -1)
    depth = max(n.depth_mm + dz, 5.0)
    tip = entry + depth * d2
    return entry, tip, {"entry_mm": e_off, "angle_deg": ang, "depth_mm": depth - n.depth_mm}


def _skin_entry(entry: np.ndarray, tip: np.ndarray, body_hu: np.ndarray, grid: Grid) -> np.ndarray:
    """Where the needle line, followed back from the tip, leaves the body: the first crossing of -500 HU of the
    planning CT (trilinear, as the resampled later CT shows it) more than 5 mm from the tip."""
    from scipy import ndimage

    u = entry - tip
    length = float(np.linalg.norm(u))
    u /= length
    ts = np.arange(0.0, length + 40.0, 0.1)
    ijk = grid.world_to_index(tip + ts[:, None] * u)
    hu = ndimage.map_coordinates(np.asarray(body_hu, np.float32), ijk[:, ::-1].T, order=1, mode="constant",
                                 cval=-1024.0)
    out = np.nonzero((hu <= -500.0) & (ts > 5.0))[0]
    if not len(out):
        return entry
    k = int(out[0])
    fa, fb = float(hu[k - 1]), float(hu[k])
    frac = (fa + 500.0) / (fa - fb) if fa != fb else 0.5
    return tip + (ts[k - 1] + frac * (ts[k] - ts[k - 1])) * u


# ============================================================================ leaks
def _leak_shape(kind: str, volume_mm3: float, structures: StructureSet, plan: Plan, grid: Grid):
    """(inside(points) in the planning frame, bounding box lo, hi, centre) of a planted leak."""
    vb_name = plan.cement.vertebral_body if plan.cement is not None else None
    vb = structures.get(vb_name, None) if vb_name else None
    if vb is None:
        found = structures.by_role(Role.VERTEBRAL_BODY) + tuple(s for s in plan.structures
                                                                  if s.role == Role.VERTEBRAL_BODY)
        if not found:
            raise InputError("leak= needs the treated vertebral body among the structures (role vertebral_body)")
        vb = found[0]
    vbm = vb.mask_on(grid)
    idx = np.argwhere(vbm)
    pts = fr.world_of_indices(grid, idx)
    c = pts.mean(axis=0)
    if kind == "canal":
        canals = structures.by_role(Role.CANAL) + tuple(s for s in plan.structures if s.role == Role.CANAL)
        if not canals:
            raise InputError("leak='canal' needs a spinal canal among the structures (role canal)")
        canal = np.zeros(grid.shape, bool)
        for s in canals:
            canal |= s.mask_on(grid)
        cp = fr.world_of_indices(grid, np.argwhere(canal))
        near = cp[(np.abs(cp[:, 2] - c[2]) <= 4.0) & (np.abs(cp[:, 0] - c[0]) <= 4.0)]
        if not len(near):
            raise InputError("leak='canal': the canal does not reach the treated vertebral body's mid-height")
        front = float(near[:, 1].min()) - grid.spacing_mm[1] / 2  # anterior boundary of the canal (y min)
        ratio = np.array([2.0, 1.0, 2.4])
        ay = (volume_mm3 / (4.0 / 3.0 * math.pi * ratio.prod())) ** (1 / 3)
        semi = ratio * ay
        centre = np.array([c[0], front + semi[1] + 0.5, c[2]])
        inside = _ellipsoid_inside(centre, np.eye(3), semi)
        probe = centre + (np.random.default_rng(0).uniform(-1, 1, (4000, 3)) * semi)
        probe = probe[inside(probe)]
        pidx = np.rint(grid.world_to_index(probe)).astype(int)
        okp = np.all((pidx >= 0) & (pidx < np.asarray(grid.size)), axis=1)
        frac = canal[pidx[okp, 2], pidx[okp, 1], pidx[okp, 0]].mean() if okp.any() else 0.0
        if frac < 0.8:
            raise InputError(f"a {volume_mm3 / 1000:.2f} mL canal leak does not fit in the spinal canal behind the "
                             "vertebral body; plant a smaller leak")
        return inside, centre - semi - 1, centre + semi + 1, centre
    # vein: a tube from the antero-lateral wall outwards
    radius = 2.0  # a segmental vein filled with cement, 4 mm across
    length = volume_mm3 / (math.pi * radius ** 2)
    u = np.array([0.6, -0.8, 0.0])
    ts = np.arange(0.0, 80.0, 0.5)
    ray = c + ts[:, None] * u
    ridx = np.rint(grid.world_to_index(ray)).astype(int)
    okr = np.all((ridx >= 0) & (ridx < np.asarray(grid.size)), axis=1)
    inb = np.zeros(len(ts), bool)
    inb[okr] = vbm[ridx[okr, 2], ridx[okr, 1], ridx[okr, 0]]
    last = np.nonzero(inb)[0]
    if not len(last):
        raise InputError("leak='vein': cannot find the vertebral body's antero-lateral wall")
    a = c + (ts[last[-1]] + 1.0) * u
    b = a + length * u
    inside = _cylinder_inside(a, b, radius)
    return inside, np.minimum(a, b) - radius - 1, np.maximum(a, b) + radius + 1, (a + b) / 2


# ============================================================================ generator
def synthetic_ct(
    plan: Plan,
    planning_ct: CTImage,
    *,
    kind: str = "postop",
    motion: Any = None,
    grid: Grid | None = None,
    structures: StructureSet | None = None,
    errors: NeedleErrorModel = JI_2021,
    missing_seeds: int = 0,
    migrated_seeds: int = 0,
    migration_mm: float = 30.0,
    cement: bool | None = None,
    leak: str | None = None,
    leak_volume_mL: float = 0.3,
    include_pvp: bool = True,
    noise_hu: float = 15.0,
    streaks: int = 4,
    streak_hu: float = 300.0,
    psf_sigma_mm: float = 0.5,
    hu_max: float = 3071.0,
    capsule_hu: float = 1000.0,
    marker_hu: float = 200000.0,
    marker_diameter_mm: float = 0.5,
    needle_hu: float = 15000.0,
    needle_diameter_mm: float = 1.2,
    pvp_diameter_mm: float = 3.0,
    needle_outside_mm: float = 20.0,
    cement_hu: float = 1800.0,
    seed: int = 0,
) -> SyntheticCT:
    """A synthetic intra-operative or post-operative CT of ``plan`` with known truth (see the module docstring).

    Parameters
    ----------
    plan : Plan
    planning_ct : CTImage
        The CT the plan was made on (its patient is what the later CT shows).
    kind : {"postop", "intraop"}
        Post-op: seeds and cement, no needles.  Intra-op: needles (and cement only when ``cement=True``).
    motion : (4, 4) array_like, optional
        Rigid patient motion, planning -> later LPS (:func:`rigid_motion`); identity by default.
    grid : Grid, optional
        Geometry of the later CT (its own LPS frame); default the planning CT's.
    structures : StructureSet, optional
        The case's structures (planning frame); needed to place a leak (vertebral body, canal).
    errors : NeedleErrorModel
        Needle placement and seed errors (:data:`JI_2021` by default, :data:`NO_ERRORS` for none).
    missing_seeds, migrated_seeds : int
        Planned seeds left out, and planned seeds moved ``migration_mm`` away (post-op).
    cement : bool, optional
        Draw the plan's cement (default: post-op yes, intra-op no).
    leak : {"canal", "vein"}, optional
        Plant a cement leak of ``leak_volume_mL``.
    include_pvp : bool
        Draw the vertebroplasty needles too (intra-op).
    noise_hu, streaks, streak_hu, psf_sigma_mm, hu_max : float, int
        Gaussian noise SD; streak lines per seed and their amplitude; point-spread SD; the scanner's largest HU.
    capsule_hu, marker_hu, marker_diameter_mm, needle_hu, needle_diameter_mm, pvp_diameter_mm, needle_outside_mm,
    cement_hu : float
        Effective materials and sizes (assumptions of the model, see the module docstring).
    seed : int
        Random seed: the same arguments give the same CT and truth.

    Returns
    -------
    SyntheticCT

    Raises
    ------
    InputError
        A plan without seeds (post-op) or needles (intra-op), more missing/migrated seeds than the plan has,
        a leak without cement or structures, bad numbers.
    GeometryError
        The later grid does not contain the plan's seeds or needle tips after the motion.
    """
    if not isinstance(plan, Plan):
        raise InputTypeError(f"plan must be a seedplan Plan, got {type(plan).__name__}")
    fr.check_ct(planning_ct, "planning_ct")
    v.choice(kind, "kind", ("postop", "intraop"))
    if not isinstance(errors, NeedleErrorModel):
        raise InputTypeError(f"errors must be a NeedleErrorModel, got {type(errors).__name__}")
    motion_m = np.eye(4) if motion is None else fr.rigid_matrix(motion, "motion")
    out_grid = planning_ct.grid if grid is None else grid
    if not isinstance(out_grid, Grid):
        raise InputTypeError(f"grid must be a seedplan Grid, got {type(grid).__name__}")
    missing_seeds = v.integer(missing_seeds, "missing_seeds", lo=0)
    migrated_seeds = v.integer(migrated_seeds, "migrated_seeds", lo=0)
    migration_mm = v.number(migration_mm, "migration_mm", lo=0.0)
    leak_volume_mL = v.number(leak_volume_mL, "leak_volume_mL", lo=0.0, lo_open=True, hi=20.0)
    noise_hu = v.number(noise_hu, "noise_hu", lo=0.0)
    streaks = v.integer(streaks, "streaks", lo=0, hi=64)
    streak_hu = v.number(streak_hu, "streak_hu", lo=0.0)
    psf_sigma_mm = v.number(psf_sigma_mm, "psf_sigma_mm", lo=0.0)
    hu_max = v.number(hu_max, "hu_max", lo=1000.0, hi=32767.0)
    for name, val in (("capsule_hu", capsule_hu), ("marker_hu", marker_hu), ("needle_hu", needle_hu),
                      ("cement_hu", cement_hu)):
        v.number(val, name, lo=-1000.0)
    for name, val in (("marker_diameter_mm", marker_diameter_mm), ("needle_diameter_mm", needle_diameter_mm),
                      ("pvp_diameter_mm", pvp_diameter_mm)):
        v.number(val, name, lo=0.0, lo_open=True, hi=10.0)
    needle_outside_mm = v.number(needle_outside_mm, "needle_outside_mm", lo=0.0)
    draw_cement = (kind == "postop") if cement is None else v.flag(cement, "cement")
    if leak is not None:
        v.choice(leak, "leak", tuple(LEAK_SITES))
        if structures is None or not isinstance(structures, StructureSet):
            raise InputError("leak= needs structures (the case's StructureSet: vertebral body and canal)")
        if plan.cement is None:
            raise InputError("leak= needs a plan with cement (plan.cement)")
        draw_cement = True
    if draw_cement and plan.cement is None and cement:
        raise InputError("cement=True but the plan has no cement (plan.cement is None)")
    if kind == "postop" and not plan.seeds:
        raise InputError("the plan has no seeds: a post-operative CT needs seeds to draw")
    if kind == "intraop" and not plan.needles and not (include_pvp and plan.pvp_needles):
        raise InputError("the plan has no needles: an intra-operative CT needs needles to draw")
    if missing_seeds + migrated_seeds > len(plan.seeds):
        raise InputError(f"missing_seeds + migrated_seeds = {missing_seeds + migrated_seeds} exceeds the plan's "
                         f"{len(plan.seeds)} seeds")
    rng = np.random.default_rng(seed)
    later_to_plan = fr.inverse(motion_m)

    # ------------------------------------------------------------------ background (the moved patient)
    hu = fr.resample_hu(planning_ct, out_grid, later_to_plan, default_hu=-1024.0).astype(np.float64)
    canvas = _Canvas(out_grid)
    notes: list[str] = []

    def mix(ijk: np.ndarray, frac: np.ndarray, value: float) -> None:
        keep = frac > 0
        ijk, frac = ijk[keep], frac[keep]
        cur = hu[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
        hu[ijk[:, 2], ijk[:, 1], ijk[:, 0]] = cur + frac * (value - cur)

    def draw(inside_later: Any, lo: np.ndarray, hi: np.ndarray, value: float, near: Any = None) -> float:
        ijk = canvas.voxels_near(lo, hi)
        if ijk is None:
            return 0.0
        if near is not None:  # only voxels whose centre is close enough to touch the object
            ijk = ijk[near(out_grid.index_to_world(ijk.astype(float)))]
            if not len(ijk):
                return 0.0
        frac = canvas.fractions(ijk, inside_later)
        mix(ijk, frac, value)
        return float(frac.sum() * out_grid.voxel_volume_mm3)

    # ------------------------------------------------------------------ actual needles (planning frame)
    all_needles = list(plan.needles) + list(plan.pvp_needles)
    actual: list[tuple[np.ndarray, np.ndarray]] = []
    errs: list[dict] = []
    for n in all_needles:
        e, t, info = _perturb_needle(n, errors, rng)
        e = _skin_entry(e, t, planning_ct.hu, planning_ct.grid)
        actual.append((e, t))
        errs.append(info)
    truth_needles = tuple(
        Needle(tuple(e), tuple(t), n.kind, n.label or (Plan.needle_name(i + 1) if n.kind == "seed" else ""), n.target)
        for i, (n, (e, t)) in enumerate(zip(all_needles, actual)))

    # ------------------------------------------------------------------ cement (+ leak)
    cement_mL = 0.0
    leak_site, leak_mL, leak_centre = None, 0.0, None
    if draw_cement and plan.cement is not None:
        frac = fr.resample_fraction(plan.cement.mask, plan.cement.grid, out_grid, later_to_plan).astype(np.float64)
        cement_mL = float(frac.sum() * out_grid.voxel_volume_mm3 / 1000.0)
        hu += frac * (cement_hu - hu)
        if leak is not None:
            inside_p, lo_p, hi_p, c_p = _leak_shape(leak, leak_volume_mL * 1000.0, structures, plan, planning_ct.grid)
            box = fr.apply(motion_m, np.array([[x, y, z] for x in (lo_p[0], hi_p[0]) for y in (lo_p[1], hi_p[1])
                                               for z in (lo_p[2], hi_p[2])]))
            vol = draw(lambda p: inside_p(fr.apply(later_to_plan, p)), box.min(axis=0), box.max(axis=0), cement_hu)
            leak_site, leak_mL, leak_centre = LEAK_SITES[leak], vol / 1000.0, tuple(float(x) for x in c_p)

    # ------------------------------------------------------------------ needles (intra-op)
    if kind == "intraop":
        for n, (e, t) in zip(all_needles, actual):
            if n.kind == "pvp" and not include_pvp:
                continue
            d = (t - e) / np.linalg.norm(t - e)
            a_p, b_p = e - needle_outside_mm * d, t
            a, b = fr.apply(motion_m, a_p), fr.apply(motion_m, b_p)
            r = (pvp_diameter_mm if n.kind == "pvp" else needle_diameter_mm) / 2
            reach = r + 0.5 * float(np.linalg.norm(out_grid.spacing_mm)) + 1e-6
            draw(_cylinder_inside(a, b, r), np.minimum(a, b) - r - 1, np.maximum(a, b) + r + 1, needle_hu,
                 near=_cylinder_inside(a - reach * (b - a) / np.linalg.norm(b - a),
                                       b + reach * (b - a) / np.linalg.norm(b - a), reach))

    # ------------------------------------------------------------------ seeds (post-op)
    seed_pos: list[np.ndarray] = []
    seed_ax: list[np.ndarray] = []
    seed_idx: list[int] = []
    missing: tuple[int, ...] = ()
    migrated: tuple[int, ...] = ()
    if kind == "postop":
        order = rng.permutation(len(plan.seeds))
        missing = tuple(sorted(int(i) for i in order[:missing_seeds]))
        migrated = tuple(sorted(int(i) for i in order[missing_seeds:missing_seeds + migrated_seeds]))
        for i, s in enumerate(plan.seeds):
            if i in missing:
                continue
            # the seed keeps its place relative to its needle: it moves with the point of the needle at its
            # retraction, and turns with the needle
            e, t = actual[s.needle - 1]
            n_plan = plan.needles[s.needle - 1]
            d = (t - e) / np.linalg.norm(t - e)
            rot = _rotation_between(n_plan.direction, d)
            p = (np.asarray(s.position_mm) + (t - s.retraction_mm * d)
                 - (n_plan.tip - s.retraction_mm * n_plan.direction))
            if errors.seed_jitter_mm:
                p = p + rng.normal(0.0, errors.seed_jitter_mm, 3)
            ax = rot @ np.asarray(s.axis)
            ang = abs(rng.normal(0.0, errors.seed_axis_jitter_deg)) if errors.seed_axis_jitter_deg else 0.0
            ax = _rotate_about(ax, _perpendicular(ax, rng), math.radians(ang)) if ang else ax
            if i in migrated:
                p = _migrate(p, migration_mm, seed_pos + [plan.positions_mm[j] for j in range(len(plan.seeds))
                                                           if j != i], planning_ct, out_grid, motion_m, rng)
                notes.append(f"seed {i + 1} migrated {migration_mm:g} mm")
            seed_pos.append(p)
            seed_ax.append(ax / np.linalg.norm(ax))
            seed_idx.append(i)
    # ------------------------------------------------------------------ scanner: PSF, streaks, noise, clipping
    if psf_sigma_mm > 0:
        from scipy import ndimage

        hu = ndimage.gaussian_filter(hu, sigma=psf_sigma_mm / np.asarray(out_grid.spacing_mm)[::-1], mode="nearest")
    if seed_pos:
        model = plan.seed_model
        length, diam = float(model.capsule_length_mm), float(model.capsule_diameter_mm)
        mlen = min(float(model.active_length_mm), length)
        for p_plan, a_plan in zip(seed_pos, seed_ax):
            p = fr.apply(motion_m, p_plan)
            a = fr.rotate(motion_m, a_plan)
            _add_seed(hu, canvas, p, a, ((length, diam / 2, capsule_hu), (mlen, marker_diameter_mm / 2, marker_hu)),
                      psf_sigma_mm)
    if streaks and streak_hu > 0 and seed_pos:
        _add_streaks(hu, out_grid, [fr.apply(motion_m, p) for p in seed_pos],
                     [fr.rotate(motion_m, a) for a in seed_ax], float(plan.seed_model.capsule_length_mm),
                     streaks, streak_hu, rng)
    if noise_hu > 0:
        hu += rng.normal(0.0, noise_hu, hu.shape)
    hu_i16 = np.clip(np.rint(hu), -1024, hu_max).astype(np.int16)

    for (e, t), n in zip(actual, all_needles):
        if kind == "intraop" and not out_grid.contains(fr.apply(motion_m, t)[None])[0]:
            raise GeometryError(f"needle {n.label or n.kind} tip falls outside the later CT's grid; enlarge the grid")
    if kind == "postop" and not np.all(out_grid.contains(fr.apply(motion_m, np.array(seed_pos)))):
        raise GeometryError("some seeds fall outside the later CT's grid; enlarge the grid")

    key = (f"seedplan-synthetic/{planning_ct.series_uid}/{kind}/{seed}/{np.round(motion_m, 6).tolist()}/"
           f"{out_grid.origin_mm}/{out_grid.size}/{leak}/{missing_seeds}/{migrated_seeds}")
    ct = CTImage(
        grid=out_grid, hu=hu_i16, series_uid=deterministic_uid(key, "series"),
        description=f"seedplan synthetic {'post-operative' if kind == 'postop' else 'intra-operative'} CT",
        frame_of_reference_uid=deterministic_uid(key, "for"), study_uid=deterministic_uid(key, "study"),
        sop_instance_uids=tuple(deterministic_uid(key, "sop", k) for k in range(out_grid.size[2])),
        patient_id=planning_ct.patient_id, patient_position=planning_ct.patient_position,
    )
    truth = SyntheticTruth(
        kind=kind, later_to_planning=later_to_plan, needles=truth_needles, needle_errors=tuple(errs),
        seed_positions_mm=np.array(seed_pos, float).reshape(-1, 3), seed_axes=np.array(seed_ax, float).reshape(-1, 3),
        seed_plan_index=tuple(seed_idx), missing_seeds=missing, migrated_seeds=migrated, leak_site=leak_site,
        leak_volume_mL=leak_mL, leak_center_mm=leak_centre, cement_volume_mL=cement_mL, notes=tuple(notes),
    )
    return SyntheticCT(ct, truth)


def _migrate(p: np.ndarray, distance: float, others: list[np.ndarray], planning_ct: CTImage, out_grid: Grid,
             motion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``p`` moved ``distance`` mm in a random direction that stays in soft tissue or bone, inside the later CT,
    and at least 10 mm from every other seed."""
    g = planning_ct.grid
    for _ in range(500):
        u = rng.normal(size=3)
        q = p + distance * u / np.linalg.norm(u)
        ijk = np.rint(g.world_to_index(q)).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.asarray(g.size)):
            continue
        if planning_ct.hu[ijk[2], ijk[1], ijk[0]] < -200:
            continue
        if not out_grid.contains(fr.apply(motion, q)[None], margin_voxels=-8)[0]:
            continue
        if others and np.min(np.linalg.norm(np.asarray(others) - q, axis=1)) < 10.0:
            continue
        return q
    raise InputError(f"cannot migrate a seed {distance:g} mm inside the patient and the later CT; use a smaller "
                     "migration_mm or a larger grid")


def _add_seed(hu: np.ndarray, canvas: _Canvas, centre: np.ndarray, axis: np.ndarray,
              parts: tuple[tuple[float, float, float], ...], psf_sigma_mm: float) -> None:
    """Add a seed's excess HU: its parts (length, radius, HU), each a cylinder with hemispherical ends, drawn on
    a fine grid around it (the canvas's sub-voxel lattice), blurred there by the continuous point-spread
    function, then averaged into the voxels.  Distances are computed axis by axis in the grid's own
    (index * spacing) coordinates, where they separate."""
    from scipy import ndimage

    grid = canvas.grid
    sp = canvas.sp
    sub = canvas.sub
    reach = max(p[0] for p in parts) / 2 + 3.0 * psf_sigma_mm + 1.0
    idx = grid.world_to_index(np.array([centre + np.array([x, y, z]) * reach for x in (-1, 1) for y in (-1, 1)
                                        for z in (-1, 1)]))
    a = np.maximum(np.floor(idx.min(axis=0) - 1).astype(int), 0)
    b = np.minimum(np.ceil(idx.max(axis=0) + 1).astype(int) + 1, np.asarray(grid.size))
    if np.any(b <= a):
        return
    n = b - a  # voxels per axis (i, j, k)
    # fine sample positions along each grid axis, in mm of the grid's own frame (index * spacing)
    fine = [(a[d] - 0.5 + (np.arange(n[d] * sub[d]) + 0.5) / sub[d]) * sp[d] for d in range(3)]
    dmat = grid.direction_matrix
    c_q = dmat.T @ (np.asarray(centre) - grid.origin)
    u_q = dmat.T @ np.asarray(axis)
    shape = (n[2] * sub[2], n[1] * sub[1], n[0] * sub[0])
    img = np.zeros(shape)
    for length, radius, value in parts:
        half = max(length / 2 - radius, 0.0)
        s0 = c_q - half * u_q  # segment start
        dq = [fine[d] - s0[d] for d in range(3)]
        t = (dq[2] * u_q[2])[:, None, None] + (dq[1] * u_q[1])[None, :, None] + (dq[0] * u_q[0])[None, None, :]
        r2 = (dq[2] ** 2)[:, None, None] + (dq[1] ** 2)[None, :, None] + (dq[0] ** 2)[None, None, :]
        tc = np.clip(t, 0.0, 2 * half)
        img += value * ((r2 - 2 * tc * t + tc * tc) <= radius * radius)
    if psf_sigma_mm > 0:
        img = ndimage.gaussian_filter(img, sigma=psf_sigma_mm / (sp / sub)[::-1], mode="constant")
    vox = img.reshape(n[2], sub[2], n[1], sub[1], n[0], sub[0]).mean(axis=(1, 3, 5))
    hu[a[2]:b[2], a[1]:b[1], a[0]:b[0]] += vox


def _add_streaks(hu: np.ndarray, grid: Grid, centres: list[np.ndarray], axes: list[np.ndarray], length: float,
                 n_lines: int, amplitude: float, rng: np.random.Generator) -> None:
    """Bright and dark lines through each seed in the axial slices the seed occupies (the grid's k slices)."""
    reach_mm = 60.0
    width_mm = 0.7
    decay_mm = 12.0
    sp = np.asarray(grid.spacing_mm, float)
    dmat = grid.direction_matrix
    for c, a in zip(centres, axes):
        half_z = abs(a[2]) * length / 2 + 0.5
        kc = grid.world_to_index(c)
        k_lo = int(np.floor(grid.world_to_index(c - np.array([0, 0, half_z + sp[2]]))[2]))
        k_hi = int(np.ceil(grid.world_to_index(c + np.array([0, 0, half_z + sp[2]]))[2]))
        angles = rng.uniform(0, np.pi, n_lines)
        signs = np.where(np.arange(n_lines) % 2 == 0, 1.0, -1.0)
        ri = int(np.ceil(reach_mm / sp[0]))
        rj = int(np.ceil(reach_mm / sp[1]))
        i0, i1 = max(int(kc[0]) - ri, 0), min(int(kc[0]) + ri + 1, grid.size[0])
        j0, j1 = max(int(kc[1]) - rj, 0), min(int(kc[1]) + rj + 1, grid.size[1])
        if i1 <= i0 or j1 <= j0:
            continue
        # world x, y of the slice's voxels: separable in the grid's axes
        wi = np.arange(i0, i1)[:, None] * sp[0] * dmat[:, 0][None, :]
        wj = np.arange(j0, j1)[:, None] * sp[1] * dmat[:, 1][None, :]
        for k in range(max(k_lo, 0), min(k_hi + 1, grid.size[2])):
            wk = grid.origin + k * sp[2] * dmat[:, 2]
            zk = wk[2] + wi[0, 2] + wj[0, 2]
            w = float(np.clip((half_z + sp[2] / 2 - abs(zk - c[2])) / sp[2], 0.0, 1.0))
            if w <= 0:
                continue
            dx = (wk[0] - c[0]) + wj[:, 0][:, None] + wi[:, 0][None, :]
            dy = (wk[1] - c[1]) + wj[:, 1][:, None] + wi[:, 1][None, :]
            r = np.hypot(dx, dy)
            add = np.zeros_like(r)
            for ang, sgn in zip(angles, signs):
                perp = np.abs(-np.sin(ang) * dx + np.cos(ang) * dy)
                add += sgn * np.exp(-0.5 * (perp / width_mm) ** 2)
            add *= amplitude * w * np.exp(-r / decay_mm) * (r <= reach_mm)
            hu[k, j0:j1, i0:i1] += add
