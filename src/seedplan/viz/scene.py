"""3D scene of a plan (pyvista): bone, structures, cement, needles, seeds and isodose surfaces.

All geometry is built in patient LPS millimetres (+x = patient left,
+y = posterior, +z = superior).  Volumes (masks, CT, dose) are contoured in
their own *index* space and the vertices are mapped to the world with
:meth:`~seedplan.geometry.Grid.index_to_world`, so oblique and flipped grids
land where they belong.  Camera presets are defined explicitly in LPS (see
:data:`CAMERAS`); e.g. the ``"anterior"`` view looks at the patient's front,
so the patient's left appears on the image right.

pyvista is imported lazily inside the functions: importing this module is
cheap and needs no display.  :func:`render_views` renders off-screen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .._atomic import atomic_path
from ..errors import InputError, InputTypeError
from ..geometry import Grid
from .slices import _NEEDLE_COLOR, _PVP_COLOR, PNG_COMPRESS_LEVEL, isodose_color, structure_color

if TYPE_CHECKING:  # pragma: no cover
    import pyvista

    from ..imaging.ct import CTImage
    from ..imaging.structures import Structure, StructureSet
    from ..plan import Plan

__all__ = [
    "VIEWS",
    "DEFAULT_VIEWS",
    "CAMERAS",
    "mask_surface",
    "iso_surface",
    "seed_capsules",
    "camera_for_view",
    "set_view",
    "build_scene",
    "render_views",
    "show",
]

#: Names of the camera presets.
VIEWS: tuple[str, ...] = ("anterior", "left", "posterior", "right", "superior", "oblique")
#: Views written by :func:`render_views` unless told otherwise.
DEFAULT_VIEWS: tuple[str, ...] = ("anterior", "left", "posterior", "oblique")

#: view -> (unit vector from the focal point to the camera, view-up), both in LPS.
CAMERAS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "anterior": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),  # from the front; patient left on image right
    "posterior": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),  # from the back; patient left on image left
    "left": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),  # from the patient's left; anterior on image left
    "right": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),  # from the patient's right; anterior on image right
    "superior": ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),  # from the head; anterior up, patient left on image left
    "oblique": ((0.62, -0.62, 0.48), (0.0, 0.0, 1.0)),  # from anterior-left-superior
}
_VIEW_TEXT = {
    "anterior": "anterior view (patient left on image right)",
    "posterior": "posterior view (patient left on image left)",
    "left": "left lateral view (anterior on image left)",
    "right": "right lateral view (anterior on image right)",
    "superior": "superior view (anterior up, patient left on image left)",
    "oblique": "oblique view from anterior-left-superior",
}

_BONE_COLOR = "#fffff0"  # ivory
_CEMENT_COLOR = structure_color("cement")  # near-white, as radiopaque cement looks on CT
_SEED_COLOR = "#e8e8e8"
_BACKGROUND = "#15171c"
_TEXT_COLOR = "#f0f0f0"
_NEEDLE_RADIUS_MM = 0.6  # 18G
_DEFAULT_SKIP_ROLES = ("body", "bone", "vertebral_body")
_NEURAL = ("canal", "cord", "cauda", "dura", "thecal")


# --------------------------------------------------------------------------- validation
def _require_grid(grid: Any, name: str) -> Grid:
    if not isinstance(grid, Grid):
        raise InputTypeError(f"{name} must be a seedplan.geometry.Grid, got {type(grid).__name__}")
    return grid


def _require_volume(values: Any, grid: Grid, name: str) -> np.ndarray:
    if not isinstance(values, np.ndarray):
        raise InputTypeError(f"{name} must be a numpy array of shape {grid.shape} (z, y, x), got {type(values).__name__}")
    if values.shape != grid.shape:
        raise InputError(f"{name} has shape {values.shape}; its grid expects {grid.shape} (z, y, x)")
    return values


def _box(box_mm: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if box_mm is None:
        return None
    try:
        lo, hi = (np.asarray(b, dtype=float).reshape(3) for b in box_mm)
    except (TypeError, ValueError):
        raise InputError("box_mm must be (lower, upper), two sets of 3 world coordinates in mm") from None
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(hi < lo):
        raise InputError(f"box_mm must be finite with upper >= lower, got {lo.tolist()}, {hi.tolist()}")
    return lo, hi


def _index_box(grid: Grid, box: tuple[np.ndarray, np.ndarray] | None, pad: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Index range ``[lo, hi)`` (i, j, k) of the voxels of ``grid`` that can touch a world box."""
    size = np.array(grid.size)
    if box is None:
        return np.zeros(3, int), size
    lo, hi = box
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    idx = grid.world_to_index(corners)
    i0 = np.clip(np.floor(idx.min(axis=0)).astype(int) - pad, 0, size)
    i1 = np.clip(np.ceil(idx.max(axis=0)).astype(int) + pad + 1, 0, size)
    return i0, i1


# ------------------------------------------------------------------------------ meshes
def _to_world(mesh: "pyvista.PolyData", grid: Grid, offset_ijk: np.ndarray) -> "pyvista.PolyData":
    """Map a mesh built in (cropped) index space to world mm, keeping faces outward."""
    if mesh.n_points == 0:
        return mesh
    mesh.points = grid.index_to_world(np.asarray(mesh.points, dtype=float) + offset_ijk)
    if np.linalg.det(grid.affine[:3, :3]) < 0:  # a mirrored grid turns the faces inside out
        mesh.flip_faces(inplace=True)
    return mesh.compute_normals(cell_normals=False, split_vertices=False, consistent_normals=False,
                                auto_orient_normals=False)


def iso_surface(
    values: np.ndarray,
    grid: Grid,
    level: float,
    *,
    box_mm: Any = None,
    smooth_voxels: float = 0.0,
) -> "pyvista.PolyData":
    """Iso-surface ``values == level`` of a volume on any grid, in world mm.

    Parameters
    ----------
    values : ndarray
        Volume ``[z, y, x]`` on ``grid``.
    grid : Grid
        Geometry (any spacing, origin and orientation, axis flips included).
    level : float
        Iso-value.
    box_mm : (lower, upper), optional
        World box (LPS mm); only voxels that can touch it are contoured.
    smooth_voxels : float
        Gaussian sigma in voxels applied before contouring (0 = none).

    Returns
    -------
    pyvista.PolyData
        Triangles in world mm with point normals; faces point toward values
        below ``level``.  Open where the level reaches the edge of the
        volume (or of ``box_mm``).  Empty when the level is not crossed.
    """
    import pyvista as pv

    grid = _require_grid(grid, "grid")
    vol = _require_volume(values, grid, "values")
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise InputError(f"level must be a number, got {level!r}") from None
    if not math.isfinite(level):
        raise InputError(f"level must be finite, got {level!r}")
    i0, i1 = _index_box(grid, _box(box_mm), pad=2)
    if np.any(i1 <= i0):
        return pv.PolyData()
    crop = np.asarray(vol[i0[2]:i1[2], i0[1]:i1[1], i0[0]:i1[0]], dtype=np.float32)
    if smooth_voxels > 0:
        from scipy import ndimage

        crop = ndimage.gaussian_filter(crop, float(smooth_voxels), mode="nearest")
    offset = i0.astype(float)
    if min(crop.shape) < 2 or not (crop.min() < level <= crop.max()):
        return pv.PolyData()
    img = pv.ImageData(dimensions=crop.shape[::-1], spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    # [z, y, x] in C order runs x fastest: VTK's point order (i fastest, then j, then k)
    img.point_data["v"] = crop.ravel(order="C")
    surf = img.contour([float(level)], scalars="v", method="flying_edges", compute_normals=False)
    if surf.n_points == 0:
        return pv.PolyData()
    # flying edges winds the triangles to face decreasing values (outward for masks)
    return _to_world(surf.triangulate(), grid, offset)


def mask_surface(
    mask: np.ndarray, grid: Grid, *, box_mm: Any = None, smooth_voxels: float = 0.6
) -> "pyvista.PolyData":
    """Closed, lightly smoothed surface of a boolean mask, in world mm.

    Parameters
    ----------
    mask : ndarray of bool
        ``[z, y, x]`` on ``grid``.
    grid : Grid
        Geometry of the mask (oblique and flipped grids are handled).
    box_mm : (lower, upper), optional
        Crop to this world box first (the surface is closed at the cut).
    smooth_voxels : float
        Gaussian sigma (voxels) of the smoothing before the 0.5 contour.

    Returns
    -------
    pyvista.PolyData
        Outward-facing triangles; empty for an empty mask.
    """
    import pyvista as pv

    grid = _require_grid(grid, "grid")
    m = _require_volume(mask, grid, "mask")
    if not m.any():
        return pv.PolyData()
    # crop to the mask itself first (cheap contouring of small structures in a large grid)
    nz = np.nonzero(m.any(axis=(1, 2)))[0], np.nonzero(m.any(axis=(0, 2)))[0], np.nonzero(m.any(axis=(0, 1)))[0]
    lo = np.array([nz[2][0], nz[1][0], nz[0][0]])
    hi = np.array([nz[2][-1], nz[1][-1], nz[0][-1]]) + 1
    b = _box(box_mm)
    if b is not None:
        bi0, bi1 = _index_box(grid, b, pad=0)
        lo, hi = np.maximum(lo, bi0), np.minimum(hi, bi1)
        if np.any(hi <= lo):
            return pv.PolyData()
    sub = m[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    if b is not None:  # exact world crop: drop voxels outside the box
        k, j, i = np.meshgrid(*(np.arange(a, c) for a, c in zip(lo[::-1], hi[::-1])), indexing="ij")
        w = grid.index_to_world(np.stack([i, j, k], axis=-1).astype(float))
        sub = sub & np.all((w >= b[0]) & (w <= b[1]), axis=-1)
        if not sub.any():
            return pv.PolyData()
    pad = 3
    vol = np.pad(sub.astype(np.float32), pad)
    if smooth_voxels > 0:
        from scipy import ndimage

        vol = ndimage.gaussian_filter(vol, float(smooth_voxels), mode="constant")
    level = min(0.5, 0.5 * float(vol.max()))  # keep one-voxel-thin structures visible
    sub_grid = Grid(grid.index_to_world(lo - pad), grid.spacing_mm, vol.shape[::-1], grid.direction)
    return iso_surface(vol, sub_grid, level)


def _capsule_template(radius: float, length: float, n_theta: int = 12, n_phi: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Points (P, 3) and triangles (T, 3) of a capsule along +z centred at 0 (total ``length``)."""
    h = max(length - 2.0 * radius, 0.0) / 2.0
    th = np.linspace(0.0, 2.0 * np.pi, n_theta, endpoint=False)
    alphas = np.arange(1, n_phi + 1) * (0.5 * np.pi / n_phi)
    rings = []
    for a in alphas:  # top hemisphere, pole to equator
        rings.append((radius * np.sin(a), h + radius * np.cos(a)))
    for a in alphas[::-1]:  # bottom hemisphere, equator to pole
        rings.append((radius * np.sin(a), -h - radius * np.cos(a)))
    pts = [[0.0, 0.0, h + radius]]
    for r, z in rings:
        pts.extend(np.stack([r * np.cos(th), r * np.sin(th), np.full_like(th, z)], axis=1))
    pts.append([0.0, 0.0, -h - radius])
    pts = np.asarray(pts, dtype=float)
    n = n_theta
    nxt = (np.arange(n) + 1) % n
    tris = [np.stack([np.zeros(n, int), 1 + np.arange(n), 1 + nxt], axis=1)]  # top fan
    for r in range(len(rings) - 1):
        a, b = 1 + r * n, 1 + (r + 1) * n
        tris.append(np.stack([a + np.arange(n), b + np.arange(n), b + nxt], axis=1))
        tris.append(np.stack([a + np.arange(n), b + nxt, a + nxt], axis=1))
    last, bottom = 1 + (len(rings) - 1) * n, len(pts) - 1
    tris.append(np.stack([np.full(n, bottom), last + nxt, last + np.arange(n)], axis=1))  # bottom fan
    return pts, np.concatenate(tris)


def _rotations_from_z(axes: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) taking +z onto each unit vector of ``axes``."""
    a = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    c = a[:, 2]  # z . a
    v = np.stack([-a[:, 1], a[:, 0], np.zeros(len(a))], axis=1)  # z x a
    k = np.zeros((len(a), 3, 3))
    k[:, 0, 1], k[:, 0, 2] = -v[:, 2], v[:, 1]
    k[:, 1, 0], k[:, 1, 2] = v[:, 2], -v[:, 0]
    k[:, 2, 0], k[:, 2, 1] = -v[:, 1], v[:, 0]
    anti = c < -1.0 + 1e-9
    scale = np.where(anti, 0.0, 1.0 / np.where(anti, 1.0, 1.0 + c))
    rot = np.eye(3)[None] + k + (k @ k) * scale[:, None, None]
    rot[anti] = np.diag([1.0, -1.0, -1.0])  # 180 deg about x
    return rot


def seed_capsules(
    positions_mm: Any, axes: Any, *, length_mm: float = 4.5, diameter_mm: float = 0.8, resolution: int = 12
) -> "pyvista.PolyData":
    """One merged mesh of seed capsules, each centred on its seed and aligned with its axis.

    Parameters
    ----------
    positions_mm : (N, 3) array_like
        Seed centres, LPS mm.
    axes : (N, 3) array_like
        Seed axis directions (normalised here).
    length_mm, diameter_mm : float
        Capsule outer length (tip to tip) and diameter.
    resolution : int
        Points around the circumference.

    Returns
    -------
    pyvista.PolyData
        ``N`` closed capsules (the cell data ``"seed"`` holds the 0-based
        seed index of each triangle).
    """
    import pyvista as pv

    try:
        pos = np.asarray(positions_mm, dtype=float).reshape(-1, 3)
        ax = np.asarray(axes, dtype=float).reshape(-1, 3)
    except (TypeError, ValueError):
        raise InputError("positions_mm and axes must be (N, 3) arrays of numbers") from None
    if pos.shape != ax.shape:
        raise InputError(f"positions_mm {pos.shape} and axes {ax.shape} must have the same shape (N, 3)")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(ax))):
        raise InputError("positions_mm and axes must be finite")
    if len(ax) and np.any(np.linalg.norm(ax, axis=1) < 1e-9):
        raise InputError("axes must be non-zero vectors")
    try:
        length_mm, diameter_mm = float(length_mm), float(diameter_mm)
    except (TypeError, ValueError):
        raise InputError(f"length_mm and diameter_mm must be numbers, got {length_mm!r}, {diameter_mm!r}") from None
    if not (diameter_mm > 0 and length_mm >= diameter_mm and math.isfinite(length_mm)):
        raise InputError(f"need diameter_mm > 0 and length_mm >= diameter_mm, got {diameter_mm}, {length_mm}")
    if len(pos) == 0:
        return pv.PolyData()
    tpl_pts, tpl_tris = _capsule_template(0.5 * diameter_mm, length_mm, n_theta=max(int(resolution), 6))
    rot = _rotations_from_z(ax)
    pts = np.einsum("nij,pj->npi", rot, tpl_pts) + pos[:, None, :]
    tris = tpl_tris[None, :, :] + (np.arange(len(pos)) * len(tpl_pts))[:, None, None]
    faces = np.concatenate([np.full((tris.shape[0] * tris.shape[1], 1), 3), tris.reshape(-1, 3)], axis=1)
    mesh = pv.PolyData(pts.reshape(-1, 3), faces.ravel())
    mesh.cell_data["seed"] = np.repeat(np.arange(len(pos)), len(tpl_tris))
    return mesh.compute_normals(cell_normals=False, split_vertices=False, consistent_normals=False,
                                auto_orient_normals=False)


def _needle_meshes(needles: Sequence[Any], radius: float) -> tuple["pyvista.PolyData", "pyvista.PolyData"]:
    """Tubes entry -> tip and spheres at the entries of a group of needles."""
    import pyvista as pv

    if not needles:
        return pv.PolyData(), pv.PolyData()
    pts = np.array([[n.entry, n.tip] for n in needles], dtype=float).reshape(-1, 3)
    lines = np.array([[2, 2 * i, 2 * i + 1] for i in range(len(needles))]).ravel()
    tubes = pv.PolyData(pts, lines=lines).tube(radius=radius, n_sides=14, capping=True)
    balls = pv.merge([pv.Sphere(radius=2.2 * radius + 0.6, center=n.entry, theta_resolution=16, phi_resolution=12)
                      for n in needles])
    return tubes, balls


# ----------------------------------------------------------------------------- camera
def camera_for_view(view: str, centre_mm: Any, radius_mm: float, view_angle_deg: float = 30.0) -> dict[str, Any]:
    """Camera of a named preset: ``{"position", "focal_point", "view_up"}`` in LPS mm.

    Parameters
    ----------
    view : str
        One of :data:`VIEWS`.
    centre_mm : 3 floats
        Focal point (the image centre).
    radius_mm : float
        Half-size of the region that must fill the frame.
    view_angle_deg : float
        Vertical view angle of the (perspective) camera.
    """
    if not isinstance(view, str) or view not in CAMERAS:
        raise InputError(f"unknown view {view!r}; valid views are {', '.join(VIEWS)}")
    c = np.asarray(centre_mm, dtype=float).reshape(3)
    d, up = (np.asarray(v, dtype=float) for v in CAMERAS[view])
    d /= np.linalg.norm(d)
    up = up - d * float(up @ d)
    up /= np.linalg.norm(up)
    dist = float(radius_mm) / math.tan(math.radians(view_angle_deg) / 2.0)
    return {"position": tuple(c + dist * d), "focal_point": tuple(c), "view_up": tuple(up)}


def _apply_camera(pl: "pyvista.Plotter", view: str, centre: np.ndarray, radius: float) -> None:
    cam = camera_for_view(view, centre, radius, float(pl.camera.view_angle))
    pl.camera.position = cam["position"]
    pl.camera.focal_point = cam["focal_point"]
    pl.camera.up = cam["view_up"]
    pl.reset_camera_clipping_range()


# ------------------------------------------------------------------------------ scene
def _check_inputs(plan: Any, ct: Any, structures: Any, dose_grid: Any, dose_Gy: Any, cement: Any,
                  levels_pct: Any, window_size: Any, bone_hu: Any) -> tuple[list[Any], list[float], tuple[int, int]]:
    from ..imaging.ct import CTImage
    from ..imaging.structures import Structure
    from ..plan import Plan

    if plan is not None and not isinstance(plan, Plan):
        raise InputTypeError(f"plan must be a seedplan Plan or None, got {type(plan).__name__}")
    if ct is not None and not isinstance(ct, CTImage):
        raise InputTypeError(f"ct must be a seedplan CTImage or None, got {type(ct).__name__}")
    if structures is None:
        structs: list[Any] = []
    elif isinstance(structures, Mapping):
        structs = list(structures.values())
    else:
        raise InputTypeError(f"structures must be a StructureSet (or a mapping name -> Structure) or None, "
                             f"got {type(structures).__name__}")
    for s in structs:
        if not isinstance(s, Structure):
            raise InputTypeError(f"structures must hold Structure objects, got {type(s).__name__}")
    if cement is not None and not isinstance(cement, Structure):
        raise InputTypeError(f"cement must be a Structure (e.g. Structure('cement', 'oar', result.mask, grid)) "
                             f"or None, got {type(cement).__name__}")
    if (dose_grid is None) != (dose_Gy is None):
        raise InputError("dose_grid and dose_Gy must be given together (or both left out)")
    if dose_grid is not None:
        _require_grid(dose_grid, "dose_grid")
        _require_volume(dose_Gy, dose_grid, "dose_Gy")
    try:
        levels = [float(v) for v in levels_pct]
    except (TypeError, ValueError):
        raise InputError(f"levels_pct must be a sequence of positive numbers (% of the prescription), "
                         f"got {levels_pct!r}") from None
    if any(not math.isfinite(v) or v <= 0 for v in levels):
        raise InputError(f"levels_pct must be positive finite numbers (% of the prescription), got {levels}")
    try:
        w, h = (int(v) for v in window_size)
    except (TypeError, ValueError):
        raise InputError(f"window_size must be (width, height) in pixels, got {window_size!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise InputError(f"window_size must be between 16 and 8192 pixels per side, got {(w, h)}")
    if isinstance(bone_hu, bool) or not isinstance(bone_hu, (int, float)) or not math.isfinite(bone_hu):
        raise InputError(f"bone_hu must be a finite number (HU), got {bone_hu!r}")
    return structs, levels, (w, h)


def _focus(plan: Any, ct: Any, structs: list[Any], margin_mm: float) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Scene centre (target centroid, else seeds, else CT centre) and the world box of interest."""
    targets = [s for s in structs if s.role.value == "target" and not s.is_empty]
    if targets:
        centre = np.asarray(targets[0].centroid_mm, dtype=float)
        lo, hi = (np.asarray(b, dtype=float) for b in targets[0].bounds_mm)
    elif plan is not None and plan.n_seeds:
        p = plan.positions_mm
        centre, lo, hi = p.mean(axis=0), p.min(axis=0), p.max(axis=0)
    elif ct is not None:
        c = ct.grid.corners_mm()
        lo, hi = c.min(axis=0), c.max(axis=0)
        centre = 0.5 * (lo + hi)
        return centre, (lo, hi)
    else:
        nonempty = [s for s in structs if not s.is_empty]
        if not nonempty:
            return np.zeros(3), (np.full(3, -margin_mm), np.full(3, margin_mm))
        pts = np.array([b for s in nonempty for b in s.bounds_mm])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        centre = 0.5 * (lo + hi)
    return centre, (lo - margin_mm, hi + margin_mm)


def _seed_length(plan: Any) -> tuple[float, float]:
    m = plan.seed_model
    return float(m.capsule_length_mm), float(m.capsule_diameter_mm)


def _prefer_egl_without_display() -> None:
    """Off-screen on Linux without a display: ask VTK for its EGL window (no failed X connection and warning).

    A ``VTK_DEFAULT_OPENGL_WINDOW`` set by the user wins.
    """
    import os
    import sys

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def build_scene(
    plan: "Plan | None",
    ct: "CTImage | None",
    structures: "StructureSet | None",
    dose_grid: Grid | None = None,
    dose_Gy: np.ndarray | None = None,
    *,
    cement: "Structure | None" = None,
    levels_pct: Sequence[float] = (50, 100, 150, 200),
    off_screen: bool = False,
    window_size: tuple[int, int] = (900, 750),
    bone_hu: float = 250.0,
    margin_mm: float = 40.0,
    skip_roles: Sequence[str] = _DEFAULT_SKIP_ROLES,
    view: str = "oblique",
    prescription_Gy: float | None = None,
) -> "pyvista.Plotter":
    """Build the 3D scene of a plan in a pyvista Plotter (not shown).

    Parameters
    ----------
    plan : Plan or None
        Seeds (capsules), seed needles (grey) and vertebroplasty needles (pink).
    ct : CTImage or None
        Bone surface at ``bone_hu`` within ``margin_mm`` of the target box.
    structures : StructureSet or None
        Surfaces in :func:`~seedplan.viz.slices.structure_color` colours;
        roles in ``skip_roles`` and empty masks are left out.
    dose_grid, dose_Gy : Grid and ndarray, optional
        Total dose; isodose surfaces at ``levels_pct`` % of the plan's
        prescription, with a dose scalar bar (Gy).
    cement : Structure, optional
        Vertebroplasty cement, drawn near-white and nearly opaque.
    levels_pct : sequence of float
        Isodose levels in % of the prescription dose.
    off_screen : bool
        Render off-screen (no display needed).
    window_size : (int, int)
        Image size in pixels (width, height).
    bone_hu : float
        HU threshold of the bone surface.
    margin_mm : float
        Region of interest: the target's box grown by this margin (bone and
        organs are cropped to it; the camera frames it).
    skip_roles : sequence of str
        Structure roles not drawn (default: body, bone and vertebral body,
        which the CT bone surface already shows).
    view : str
        Initial camera preset (one of :data:`VIEWS`).
    prescription_Gy : float, optional
        Dose of the 100 % isodose (default: the plan's prescription).

    Returns
    -------
    pyvista.Plotter
        ``plotter._seedplan_focus`` holds ``(centre_mm, radius_mm, title)``
        used by :func:`set_view`.
    """
    structs, levels, size = _check_inputs(plan, ct, structures, dose_grid, dose_Gy, cement, levels_pct,
                                          window_size, bone_hu)
    if not isinstance(view, str) or view not in CAMERAS:
        raise InputError(f"unknown view {view!r}; valid views are {', '.join(VIEWS)}")
    if prescription_Gy is not None and (isinstance(prescription_Gy, bool) or not isinstance(prescription_Gy, (int, float))
                                        or not math.isfinite(prescription_Gy) or prescription_Gy <= 0):
        raise InputError(f"prescription_Gy must be a positive number (Gy) or None, got {prescription_Gy!r}")
    if not (isinstance(margin_mm, (int, float)) and math.isfinite(margin_mm) and margin_mm >= 0):
        raise InputError(f"margin_mm must be a number >= 0, got {margin_mm!r}")
    skip = {str(getattr(r, "value", r)).lower() for r in skip_roles}
    import pyvista as pv

    centre, box = _focus(plan, ct, structs, float(margin_mm))
    radius = 0.5 * float(np.max(box[1] - box[0]))
    if off_screen:
        _prefer_egl_without_display()
    pl = pv.Plotter(off_screen=bool(off_screen), window_size=list(size))
    pl.set_background(_BACKGROUND)
    legend: list[list[str]] = []

    # bone from the CT
    if ct is not None:
        bone = iso_surface(ct.hu, ct.grid, float(bone_hu), box_mm=box, smooth_voxels=0.7)
        if bone.n_cells > 250_000:  # fine CTs: keep the rendering light
            bone = bone.decimate(1.0 - 250_000.0 / bone.n_cells)
        if bone.n_points:
            pl.add_mesh(bone, color=_BONE_COLOR, opacity=0.25, smooth_shading=True, specular=0.2, name="bone")
            legend.append([f"bone (CT > {bone_hu:g} HU)", _BONE_COLOR])

    # structures
    for s in structs:
        if s.role.value in skip or s.is_empty:
            continue
        is_target = s.role.value == "target"
        mesh = mask_surface(s.mask, s.grid, box_mm=None if is_target else box)
        if mesh.n_points == 0:
            continue
        col = structure_color(s.name, s.role)
        neural = any(k in s.name.lower() for k in _NEURAL)
        opacity = 0.6 if is_target else 0.35 if neural else 0.22
        pl.add_mesh(mesh, color=col, opacity=opacity, smooth_shading=True,
                    name=f"structure:{s.name}")
        legend.append([s.name, col])
    if cement is not None and not cement.is_empty:
        mesh = mask_surface(cement.mask, cement.grid)
        if mesh.n_points:
            pl.add_mesh(mesh, color=_CEMENT_COLOR, opacity=0.9, smooth_shading=True, name="cement")
            legend.append([f"cement ({cement.volume_cm3:.1f} mL)", _CEMENT_COLOR])

    # plan: needles and seeds
    if plan is not None:
        for group, colour, what in ((plan.needles, _NEEDLE_COLOR, "seed needles"),
                                    (plan.pvp_needles, _PVP_COLOR, "PVP needles")):
            tubes, balls = _needle_meshes(group, _NEEDLE_RADIUS_MM)
            if tubes.n_points == 0:
                continue
            pl.add_mesh(tubes, color=colour, smooth_shading=True, name=f"{what}:tubes")
            pl.add_mesh(balls, color=colour, smooth_shading=True, name=f"{what}:entries")
            labels = [plan.needle_name(k) if n.kind == "seed" else plan.pvp_needle_name(n, k)
                      for k, n in enumerate(group, start=1)]
            pl.add_point_labels(np.array([n.entry for n in group]), labels, font_size=13, text_color=colour,
                                shape_color="#000000", shape_opacity=0.55, show_points=False, always_visible=True,
                                bold=True, name=f"{what}")  # pyvista names it "<what>-labels"
            legend.append([f"{what} ({len(group)})", colour])
        if plan.n_seeds:
            length, diameter = _seed_length(plan)
            caps = seed_capsules(plan.positions_mm, plan.axes, length_mm=length, diameter_mm=diameter)
            pl.add_mesh(caps, color=_SEED_COLOR, smooth_shading=True, specular=0.6, name="seeds")
            legend.append([f"seeds ({plan.n_seeds})", _SEED_COLOR])

    # isodoses
    pd = prescription_Gy if prescription_Gy is not None else (
        float(plan.prescription.dose_Gy) if plan is not None else None)
    if dose_grid is not None and pd:
        _add_isodoses(pl, dose_Gy, dose_grid, levels, pd, box, legend)

    if legend:
        # placed by hand: pyvista's loc="upper right" mixes up width and height
        w, h = 0.21, min(0.028 * len(legend) + 0.01, 0.6)
        leg = pl.add_legend(legend, bcolor="#000000", background_opacity=0.5, border=False, size=(w, h),
                            face="rectangle", name="legend")
        leg.SetPosition(1.0 - w - 0.01, 1.0 - h - 0.01)
        leg.SetPosition2(w, h)
    pl.add_axes(xlabel="L", ylabel="P", zlabel="S", viewport=(0.0, 0.0, 0.17, 0.17), line_width=3,
                color=_TEXT_COLOR)
    parts = []
    if plan is not None:
        parts.append(f"{plan.n_seeds} seeds ({plan.seed_model.name})")
        acts = sorted({round(s.activity_mCi, 3) for s in plan.seeds})
        if acts:
            parts.append(f"{acts[0]:g} mCi/seed" if len(acts) == 1 else f"{acts[0]:g}-{acts[-1]:g} mCi/seed")
            parts.append(f"total {plan.total_activity_mCi:.2f} mCi")
    if pd:
        parts.append(f"PD {pd:g} Gy")
    title = ", ".join(parts) or "seedplan 3D view"
    _translucency(pl)
    pl._seedplan_focus = (centre, radius, title)  # type: ignore[attr-defined]
    set_view(pl, view)
    return pl


def _translucency(pl: "pyvista.Plotter") -> None:
    """Order-independent translucency plus 4x multisampling.

    Translucent isodoses and organs are blended without sorting artefacts and
    never hide the opaque seeds and needles.  Depth peeling is exact but ~5x
    slower with software OpenGL (no GPU), and pyvista's SSAA pass bypasses
    both depth peeling and OIT (stripes on nested translucent surfaces).
    """
    ren = pl.renderer
    try:
        ren.SetUseDepthPeeling(False)
        ren.SetUseOIT(True)
    except AttributeError:  # pragma: no cover - very old VTK: fall back to depth peeling
        pl.enable_depth_peeling(number_of_peels=6, occlusion_ratio=0.0)
    try:
        pl.enable_anti_aliasing("msaa", multi_samples=4)
    except Exception:  # noqa: BLE001 - anti-aliasing is cosmetic
        pass


def _add_isodoses(pl: "pyvista.Plotter", dose: np.ndarray, grid: Grid, levels: list[float], pd: float,
                  box: tuple[np.ndarray, np.ndarray], legend: list[list[str]]) -> None:
    """Isodose surfaces sharing an indexed lookup table, with a categorical dose scalar bar."""
    import pyvista as pv
    from matplotlib.colors import to_rgba

    if not np.all(np.isfinite(dose)):
        dose = np.nan_to_num(dose, nan=0.0, posinf=0.0, neginf=0.0)
    dmax = float(dose.max())
    values = [lvl * pd / 100.0 for lvl in levels]
    colours = [isodose_color(lvl, k) for k, lvl in enumerate(levels)]
    lut = pv.LookupTable()
    lut.values = np.array([[round(255 * c) for c in to_rgba(col)] for col in colours], dtype=np.uint8)
    lut.SetIndexedLookup(True)
    lut.annotations = {v: f"{v:.4g}" for v in values}
    # grow the box: low isodoses may reach further than the margin around the target
    grown = (box[0] - 20.0, box[1] + 20.0)
    actor = None
    for lvl, v, col in zip(levels, values, colours):
        legend.append([f"{lvl:g} % isodose ({v:.4g} Gy)", col])
        if not v <= dmax:
            continue
        surf = iso_surface(dose, grid, v, box_mm=grown)
        if surf.n_points == 0:
            continue
        surf.point_data["Dose (Gy)"] = np.full(surf.n_points, v)
        is_pd = abs(lvl - 100.0) < 1e-9
        actor = pl.add_mesh(surf, scalars="Dose (Gy)", cmap=lut, opacity=0.45 if is_pd else 0.2,
                            smooth_shading=True, show_scalar_bar=False, name=f"isodose:{lvl:g}")
    if actor is not None:
        pl.add_scalar_bar(title="Isodoses (Gy)", mapper=actor.mapper, vertical=False, position_x=0.45,
                          position_y=0.06, width=0.52, height=0.1, color=_TEXT_COLOR, label_font_size=12,
                          title_font_size=13, n_labels=0, fill=False)


def set_view(plotter: "pyvista.Plotter", view: str) -> None:
    """Point the camera of a scene from :func:`build_scene` at a named preset (see :data:`CAMERAS`)."""
    if not isinstance(view, str) or view not in CAMERAS:
        raise InputError(f"unknown view {view!r}; valid views are {', '.join(VIEWS)}")
    centre, radius, title = getattr(plotter, "_seedplan_focus", (np.zeros(3), 60.0, ""))
    _apply_camera(plotter, view, centre, radius)
    text = f"{title}\n{_VIEW_TEXT[view]}" if title else _VIEW_TEXT[view]
    plotter.add_text(text, position="upper_left", font_size=10, color=_TEXT_COLOR, name="title")


def render_views(
    plan: "Plan | None",
    ct: "CTImage | None",
    structures: "StructureSet | None",
    out_dir: str | Path,
    dose_grid: Grid | None = None,
    dose_Gy: np.ndarray | None = None,
    *,
    cement: "Structure | None" = None,
    views: Sequence[str] = DEFAULT_VIEWS,
    prefix: str = "view3d",
    **kwargs: Any,
) -> dict[str, Path]:
    """Render the scene off-screen from several camera presets and write ``{prefix}_{view}.png``.

    Parameters
    ----------
    plan, ct, structures, dose_grid, dose_Gy, cement
        See :func:`build_scene`.
    out_dir : path-like
        Folder (created if needed); each PNG is written atomically.
    views : sequence of str
        Camera presets from :data:`VIEWS`.
    prefix : str
        File name prefix.
    **kwargs
        Passed to :func:`build_scene` (``levels_pct``, ``window_size``, ``bone_hu`` ...).

    Returns
    -------
    dict
        View name -> PNG path, in the order of ``views``.
    """
    if isinstance(views, str):
        views = (views,)
    try:
        views = tuple(views)
    except TypeError:
        raise InputError(f"views must be a sequence of view names from {', '.join(VIEWS)}") from None
    bad = [v for v in views if not isinstance(v, str) or v not in CAMERAS]
    if bad or not views:
        raise InputError(f"views: unknown view name(s) {bad}; valid views are {', '.join(VIEWS)}")
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "/\\"):
        raise InputError(f"prefix must be a non-empty file name prefix without a path separator, got {prefix!r}")
    if not isinstance(out_dir, (str, Path)):
        raise InputTypeError(f"out_dir must be a path, got {type(out_dir).__name__}")
    kwargs.pop("off_screen", None)
    kwargs.pop("view", None)
    from PIL import Image

    pl = build_scene(plan, ct, structures, dose_grid, dose_Gy, cement=cement, off_screen=True,
                     view=views[0], **kwargs)
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    try:
        for v in views:
            set_view(pl, v)
            img = pl.screenshot(return_img=True)
            path = out / f"{prefix}_{v}.png"
            with atomic_path(path) as tmp:
                Image.fromarray(np.ascontiguousarray(img)).save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
            paths[v] = path
    finally:
        pl.close()
    return paths


def show(
    plan: "Plan | None",
    ct: "CTImage | None",
    structures: "StructureSet | None",
    dose_grid: Grid | None = None,
    dose_Gy: np.ndarray | None = None,
    *,
    cement: "Structure | None" = None,
    **kwargs: Any,
) -> None:
    """Open the scene in an interactive window (needs a display); see :func:`build_scene`."""
    kwargs.pop("off_screen", None)
    pl = build_scene(plan, ct, structures, dose_grid, dose_Gy, cement=cement, off_screen=False, **kwargs)
    pl.show()
