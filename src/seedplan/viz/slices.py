"""2D review images: CT slices through the target with isodoses, structures, seeds and needles.

Views are planes of the patient coordinate system (LPS mm: +x = patient
left, +y = posterior, +z = superior), whatever the orientation of the CT or
dose grid; every volume is interpolated in world coordinates onto the plane
(:func:`extract_plane`).  Display conventions:

* axial: radiological, patient right on the image left, anterior up;
* sagittal: anterior on the image left, superior up;
* coronal: patient right on the image left, superior up.

Orientation letters on the image sides are derived from the drawn axis
limits, so they always match the display.  matplotlib is imported lazily and
only its Agg canvas is used (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .._atomic import atomic_path
from ..errors import InputError
from ..geometry import Grid

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..imaging.ct import CTImage
    from ..imaging.structures import StructureSet
    from ..plan import Plan

__all__ = [
    "VIEWS",
    "ISODOSE_COLORS",
    "extract_plane",
    "view_plane",
    "structure_color",
    "isodose_color",
    "slice_figure",
    "render_slice_views",
]

#: zlib level of the PNGs seedplan writes (review images, report figures): the same pixels as PIL's default
#: (6) in about half the time, the files ~10 % larger.
PNG_COMPRESS_LEVEL = 3

_AXIS_NAMES = ("x", "y", "z")
#: Patient direction of the negative / positive end of each LPS axis.
_AXIS_ENDS = (("R", "L"), ("A", "P"), ("I", "S"))
_AXIS_TEXT = ("x (mm), +x = patient left", "y (mm), +y = posterior", "z (mm), +z = superior")

#: view -> (horizontal world axis, vertical world axis, normal axis, vertical axis increases downwards)
VIEWS: dict[str, tuple[int, int, int, bool]] = {
    "axial": (0, 1, 2, True),
    "sagittal": (1, 2, 0, False),
    "coronal": (0, 2, 1, False),
}

#: Isodose colours by level (% of the prescription dose).
ISODOSE_COLORS: dict[float, str] = {
    50.0: "#3399ff",
    80.0: "#00e5e5",
    100.0: "#ff0000",
    150.0: "#ff9900",
    200.0: "#ff55ff",
    300.0: "#ffffff",
}
_EXTRA_ISODOSE = ("#9966ff", "#66ff99", "#ffcc66", "#cc6699")

# Structure colours: first matching name pattern wins, then the role, then a palette.
_NAME_COLORS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("cord", "cauda"), "#ffff00"),
    (("canal", "dura", "thecal"), "#40e0d0"),
    (("aorta",), "#b266ff"),
    (("ivc", "vena", "cava"), "#6f6fff"),
    (("vertebral_body", "vertebral body"), "#f5deb3"),
    (("pedicle",), "#d2a05a"),
    (("kidney",), "#8fbc8f"),
    (("cement", "pmma"), "#e8f4ff"),
    (("oesophag", "esophag"), "#ff9999"),
    (("body", "external", "skin"), "#a0a0a0"),
)
_ROLE_COLORS = {"target": "#00ff00", "vertebral_body": "#f5deb3", "avoidance": "#40e0d0", "body": "#a0a0a0",
                "bone": "#d2b48c"}
_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#008080")
_SEED_COLOR = "#ffffff"
_NEEDLE_COLOR = "#c8c8c8"
_PVP_COLOR = "#ffb6c1"


def structure_color(name: str, role: Any = None) -> str:
    """Fixed display colour of a structure (by name pattern, then role, then a stable palette)."""
    r = str(getattr(role, "value", role) or "").lower()
    if r == "target":
        return _ROLE_COLORS["target"]
    n = name.lower()
    for keys, colour in _NAME_COLORS:
        if any(k in n for k in keys):
            return colour
    if r in _ROLE_COLORS:
        return _ROLE_COLORS[r]
    if any(k in n for k in ("gtv", "ctv", "ptv", "target", "lesion", "tumor", "tumour")):
        return _ROLE_COLORS["target"]
    return _PALETTE[sum(map(ord, name)) % len(_PALETTE)]


def isodose_color(level_pct: float, index: int = 0) -> str:
    """Colour of the isodose line at ``level_pct`` % of the prescription dose."""
    return ISODOSE_COLORS.get(float(level_pct), _EXTRA_ISODOSE[index % len(_EXTRA_ISODOSE)])


# ---------------------------------------------------------------------------- planes
def extract_plane(
    volume: np.ndarray,
    grid: Grid,
    origin_mm: Sequence[float],
    u_dir: Sequence[float],
    v_dir: Sequence[float],
    u_mm: Sequence[float],
    v_mm: Sequence[float],
    *,
    order: int = 1,
    fill: float = np.nan,
) -> np.ndarray:
    """Sample a ``[z, y, x]`` volume on a plane given in world coordinates.

    Parameters
    ----------
    volume : ndarray
        Values on ``grid`` (shape ``grid.shape``).
    grid : Grid
        Geometry of ``volume`` (any origin, spacing and orientation).
    origin_mm : sequence of 3 floats
        World point of the plane at ``u = v = 0``.
    u_dir, v_dir : sequence of 3 floats
        Directions of the plane's horizontal and vertical axes (normalised here).
    u_mm, v_mm : sequence of floats
        Sample positions along ``u_dir`` and ``v_dir`` (mm from ``origin_mm``).
    order : int
        Spline order of the interpolation (0 nearest, 1 trilinear).
    fill : float
        Value outside the volume's voxel extent.

    Returns
    -------
    ndarray, shape ``(len(v_mm), len(u_mm))``
        ``out[r, c]`` is the volume at ``origin + u_mm[c] * u_dir + v_mm[r] * v_dir``.
    """
    from scipy import ndimage

    vol = np.asarray(volume)
    if vol.shape != grid.shape:
        raise InputError(f"volume shape {vol.shape} does not match its grid {grid.shape} (z, y, x)")
    u = np.asarray(u_dir, dtype=float).reshape(3)
    v = np.asarray(v_dir, dtype=float).reshape(3)
    if np.linalg.norm(u) < 1e-12 or np.linalg.norm(v) < 1e-12:
        raise InputError("u_dir and v_dir must be non-zero vectors")
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    us = np.asarray(u_mm, dtype=float).reshape(-1)
    vs = np.asarray(v_mm, dtype=float).reshape(-1)
    pts = (np.asarray(origin_mm, dtype=float).reshape(1, 1, 3)
           + us[None, :, None] * u[None, None, :] + vs[:, None, None] * v[None, None, :])
    ijk = grid.world_to_index(pts)
    coords = np.stack([ijk[..., 2], ijk[..., 1], ijk[..., 0]]).reshape(3, -1)  # array axes (k, j, i)
    # Nearest and linear interpolation: only the voxels the samples can reach (a plane through a volume: a slab
    # of a few voxels) are converted and interpolated.  The box starts at a whole voxel and reaches the volume's
    # edge wherever a sample lies beyond it, so the shifted coordinates, their interpolation weights and the
    # "nearest" edge values are exactly those of the whole volume.  (Splines filter the whole volume first.)
    if order <= 1 and coords.size and np.all(np.isfinite(coords)):
        first = np.clip(np.floor(coords.min(axis=1)).astype(np.int64) - 1, 0, np.array(vol.shape) - 1)
        stop = np.clip(np.ceil(coords.max(axis=1)).astype(np.int64) + 2, np.minimum(first + 2, vol.shape),
                       np.array(vol.shape))
        vol = vol[first[0]:stop[0], first[1]:stop[1], first[2]:stop[2]]
        coords = coords - first[:, None].astype(float)
    data = vol if vol.dtype.kind == "f" else vol.astype(np.float32)  # int16 HU / bool masks: no truncation
    near = _near_nonzero(data, coords) if order <= 1 else None
    if near is None:
        out = ndimage.map_coordinates(data, coords, order=order, mode="nearest")
    else:  # a structure mask: only the samples near it are interpolated, the others read only zeros
        out = np.zeros(coords.shape[1], dtype=data.dtype)
        if near.any():
            out[near] = ndimage.map_coordinates(data, coords[:, near], order=order, mode="nearest")
    out = out.reshape(ijk.shape[:2]).astype(float)
    hi = np.array(grid.size, dtype=float) - 0.5
    inside = np.all((ijk >= -0.5) & (ijk <= hi), axis=-1)
    out[~inside] = fill
    return out


def _near_nonzero(data: np.ndarray, coords: np.ndarray, margin_voxels: float = 2.0) -> np.ndarray | None:
    """Which samples (``coords``: (3, n) array indices into ``data``) lie within ``margin_voxels`` of the box of
    ``data``'s non-zero values (NaN counts as non-zero), once clamped into ``data`` as ``mode="nearest"`` does.

    Nearest and linear interpolation read the two voxels around a sample on each axis, so a sample outside that
    box reads only zeros and interpolates to exactly 0.  None when the box covers all of ``data`` (a CT or a dose
    slab: nothing to skip).
    """
    nonzero = data != 0
    boxes = []
    for ax in range(3):
        hit = np.nonzero(nonzero.any(axis=tuple(a for a in range(3) if a != ax)))[0]
        if hit.size == 0:
            return np.zeros(coords.shape[1], dtype=bool)
        boxes.append((hit[0] - margin_voxels, hit[-1] + margin_voxels))
    if all(lo <= 0 and hi >= n - 1 for (lo, hi), n in zip(boxes, data.shape)):
        return None
    near = np.ones(coords.shape[1], dtype=bool)
    for ax, (lo, hi) in enumerate(boxes):
        c = np.clip(coords[ax], 0, data.shape[ax] - 1)
        near &= (c >= lo) & (c <= hi)
    return near


def view_plane(view: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors ``(u_dir, v_dir, normal)`` of a named view in LPS coordinates."""
    if view not in VIEWS:
        raise InputError(f"unknown view {view!r}; use one of {sorted(VIEWS)}")
    iu, iv, inorm, _ = VIEWS[view]
    e = np.eye(3)
    return e[iu], e[iv], e[inorm]


def _world_box(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    c = grid.corners_mm()
    half = 0.5 * np.abs(grid.direction_matrix * grid.spacing[None, :]).sum(axis=1)
    return c.min(axis=0) - half, c.max(axis=0) + half


def _target(structures: "StructureSet | None") -> Any:
    if structures is None:
        return None
    for s in structures.values():
        if str(s.role.value) == "target" and not s.is_empty:
            return s
    return None


def _centre_and_fov(ct: "CTImage", structures: "StructureSet | None", plan: "Plan | None",
                    fov_margin_mm: float, include_needles: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ct_lo, ct_hi = _world_box(ct.grid)
    tgt = _target(structures)
    pts: list[np.ndarray] = []
    if tgt is not None:
        centre = np.asarray(tgt.centroid_mm, dtype=float)
        lo, hi = tgt.bounds_mm
        pts += [np.asarray(lo), np.asarray(hi)]
    elif plan is not None and plan.n_seeds:
        centre = plan.positions_mm.mean(axis=0)
        pts += list(plan.positions_mm)
    else:
        centre = 0.5 * (ct_lo + ct_hi)
        pts += [ct_lo, ct_hi]
    pts.append(centre)
    arr = np.array(pts, dtype=float)
    lo, hi = arr.min(axis=0) - fov_margin_mm, arr.max(axis=0) + fov_margin_mm
    if include_needles and plan is not None:
        ends = [n.entry for n in (*plan.needles, *plan.pvp_needles)] + [n.tip for n in (*plan.needles, *plan.pvp_needles)]
        if ends:
            e = np.array(ends)
            lo, hi = np.minimum(lo, e.min(axis=0) - 5.0), np.maximum(hi, e.max(axis=0) + 5.0)
    lo, hi = np.maximum(lo, ct_lo), np.minimum(hi, ct_hi)
    if np.any(hi <= lo):
        lo, hi = ct_lo, ct_hi
    return centre, lo, hi


def _orientation_letters(ax: Any, iu: int, iv: int) -> None:
    """Write the patient direction on each side of the image, from the axis limits actually drawn."""
    box = dict(facecolor="black", alpha=0.55, edgecolor="none", pad=1.5)
    kw = dict(transform=ax.transAxes, color="white", fontsize=13, fontweight="bold", bbox=box, zorder=10)
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    neg, pos = _AXIS_ENDS[iu]
    left, right = (neg, pos) if x0 < x1 else (pos, neg)
    ax.text(0.015, 0.5, left, ha="left", va="center", **kw)
    ax.text(0.985, 0.5, right, ha="right", va="center", **kw)
    neg, pos = _AXIS_ENDS[iv]
    bottom, top = (neg, pos) if y0 < y1 else (pos, neg)
    ax.text(0.5, 0.985, top, ha="center", va="top", **kw)
    ax.text(0.5, 0.015, bottom, ha="center", va="bottom", **kw)


def slice_figure(
    view: str,
    ct: "CTImage",
    structures: "StructureSet | None" = None,
    plan: "Plan | None" = None,
    dose_grid: Grid | None = None,
    dose_Gy: np.ndarray | None = None,
    *,
    prescription_Gy: float | None = None,
    levels_pct: Sequence[float] = (50, 100, 150, 200),
    centre_mm: Sequence[float] | None = None,
    fov_margin_mm: float = 40.0,
    include_needles: bool = True,
    pixel_mm: float = 0.5,
    window: tuple[float, float] = (300.0, 1600.0),
    seed_slab_mm: float = 2.5,
    seed_length_mm: float | None = None,
    skip_roles: Sequence[str] = ("body", "bone"),
    title: str | None = None,
    _fov: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> "Figure":
    """Draw one view through ``centre_mm`` (default: the target centroid) as a matplotlib Figure.

    Parameters
    ----------
    view : {"axial", "sagittal", "coronal"}
    ct : CTImage
    structures : StructureSet, optional
        Outlined in fixed colours; roles in ``skip_roles`` are not drawn.
    plan : Plan, optional
        Seeds within ``seed_slab_mm`` of the plane are drawn as capsules
        (``seed_length_mm``, default the seed model's capsule length), needles
        projected onto the plane.
    dose_grid, dose_Gy : Grid and ndarray, optional
        Total dose; isodose lines at ``levels_pct`` % of ``prescription_Gy``
        (default: the plan's prescription).
    window : (level, width)
        CT grey window in HU.

    Returns
    -------
    matplotlib.figure.Figure
        A figure on an Agg canvas; the image axes is ``fig.axes[0]``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    import matplotlib.patheffects as pe

    u_dir, v_dir, normal = view_plane(view)  # validates the name
    iu, iv, inorm, v_down = VIEWS[view]
    # _fov: (centre, lower, upper) of _centre_and_fov when the caller has it (one per set of views)
    centre, lo, hi = _fov if _fov is not None else _centre_and_fov(ct, structures, plan, fov_margin_mm,
                                                                  include_needles)
    if centre_mm is not None:
        centre = np.asarray(centre_mm, dtype=float).reshape(3)
    if pixel_mm <= 0:
        raise InputError(f"pixel_mm must be > 0, got {pixel_mm}")
    us = np.arange(lo[iu], hi[iu] + 1e-9, pixel_mm)
    vs = np.arange(lo[iv], hi[iv] + 1e-9, pixel_mm)
    origin = normal * centre[inorm]  # display coordinates are world mm along u and v
    pd = prescription_Gy
    if pd is None and plan is not None:
        pd = float(plan.prescription.dose_Gy)

    # figure sized to the field of view: image 6 in wide (height clamped), legend panel on the right
    img_w = 6.0
    img_h = float(np.clip(img_w * (vs[-1] - vs[0]) / max(us[-1] - us[0], 1e-6), 3.0, 8.0))
    fig_w, fig_h = img_w + 3.9, img_h + 1.3
    fig = Figure(figsize=(fig_w, fig_h), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.9 / fig_w, 0.75 / fig_h, img_w / fig_w, img_h / fig_h))
    ax.set_facecolor("black")
    ct_plane = extract_plane(ct.hu, ct.grid, origin, u_dir, v_dir, us, vs, order=1, fill=-1000.0)
    level, width = window
    ext = (us[0] - pixel_mm / 2, us[-1] + pixel_mm / 2, vs[0] - pixel_mm / 2, vs[-1] + pixel_mm / 2)
    ax.imshow(ct_plane, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, origin="lower",
              extent=ext, interpolation="bilinear", zorder=0)
    handles: list[Any] = []

    if dose_grid is not None and dose_Gy is not None and pd:
        d = extract_plane(dose_Gy, dose_grid, origin, u_dir, v_dir, us, vs, order=1, fill=np.nan)
        dm = np.ma.masked_invalid(d)
        for k, lvl in enumerate(levels_pct):
            col = isodose_color(lvl, k)
            val = float(lvl) * pd / 100.0
            if dm.count() and np.nanmax(d) >= val >= np.nanmin(d):
                ax.contour(us, vs, dm, levels=[val], colors=[col], linewidths=2.0, zorder=3)
            handles.append(Line2D([], [], color=col, lw=2.0, label=f"{lvl:g} % = {val:.4g} Gy"))

    if structures is not None:
        skip = {str(r) for r in skip_roles}
        for s in structures.values():
            if s.role.value in skip or s.is_empty:
                continue
            m = extract_plane(s.mask, s.grid, origin, u_dir, v_dir, us, vs, order=1, fill=0.0)
            if m.max() <= 0.5:  # not in this plane (0.5 exactly: touches it without an outline)
                continue
            col = structure_color(s.name, s.role)
            lw = 1.6 if s.role.value == "target" else 1.2
            if "cement" in s.name.lower():  # a filled region, as radiopaque cement appears on CT
                ax.contourf(us, vs, m, levels=[0.5, 1.01], colors=[col], alpha=0.45, zorder=2)
            ax.contour(us, vs, m, levels=[0.5], colors=[col], linewidths=lw, zorder=2)
            handles.append(Line2D([], [], color=col, lw=lw, label=s.name))

    if plan is not None:
        stroke = [pe.Stroke(linewidth=4.5, foreground="black"), pe.Normal()]
        for needles, colour, name in ((plan.needles, _NEEDLE_COLOR, "needle"), (plan.pvp_needles, _PVP_COLOR, "PVP needle")):
            for k, n in enumerate(needles, start=1):
                e, t = n.entry, n.tip
                ax.plot([e[iu], t[iu]], [e[iv], t[iv]], color=colour, lw=1.0, ls="--", alpha=0.9, zorder=4)
                if lo[iu] <= e[iu] <= hi[iu] and lo[iv] <= e[iv] <= hi[iv]:
                    # the names of the plan table (N1, N2...; PVP left/right)
                    lab = plan.needle_name(k) if n.kind == "seed" else plan.pvp_needle_name(n, k)
                    ax.text(e[iu], e[iv], lab, color=colour, fontsize=7, zorder=5, ha="center", va="center")
            if len(needles):
                handles.append(Line2D([], [], color=colour, lw=1.0, ls="--", label=f"{name} (projected)"))
        if plan.n_seeds:
            length = seed_length_mm if seed_length_mm is not None else float(plan.seed_model.capsule_length_mm)
            pos, axes = plan.positions_mm, plan.axes
            near = np.abs(pos[:, inorm] - centre[inorm]) <= seed_slab_mm
            for p, a in zip(pos[near], axes[near]):
                a0, a1 = p - 0.5 * length * a, p + 0.5 * length * a
                ax.plot([a0[iu], a1[iu]], [a0[iv], a1[iv]], color=_SEED_COLOR, lw=3.0, solid_capstyle="round",
                        zorder=6, path_effects=stroke)
            handles.append(Line2D([], [], color=_SEED_COLOR, lw=3.0, path_effects=stroke,
                                  label=f"seeds within ±{seed_slab_mm:g} mm ({int(near.sum())})"))

    ax.set_xlim(us[0], us[-1])
    ax.set_ylim((vs[-1], vs[0]) if v_down else (vs[0], vs[-1]))
    ax.set_aspect("equal")
    ax.set_xlabel(_AXIS_TEXT[iu])
    ax.set_ylabel(_AXIS_TEXT[iv])
    _orientation_letters(ax, iu, iv)
    where = f"{_AXIS_NAMES[inorm]} = {centre[inorm]:.1f} mm"
    ax.set_title(title or f"{view.capitalize()} slice, {where} (through the target centroid)", fontsize=11)
    if handles:
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=((1.1 + img_w) / fig_w, 1.0 - 0.55 / fig_h),
                   fontsize=8, frameon=True,
                   title="Isodoses (% of PD) / structures", title_fontsize=8)
    return fig


def render_slice_views(
    ct: "CTImage",
    structures: "StructureSet | None",
    plan: "Plan | None",
    dose_grid: Grid | None,
    dose_Gy: np.ndarray | None,
    out_dir: str | Path,
    *,
    levels_pct: Sequence[float] = (50, 100, 150, 200),
    prefix: str = "slice",
    views: Sequence[str] = ("axial", "sagittal", "coronal"),
    **kwargs: Any,
) -> dict[str, Path]:
    """Write ``{prefix}_axial.png``, ``_sagittal.png`` and ``_coronal.png`` through the target centroid.

    Parameters
    ----------
    ct, structures, plan, dose_grid, dose_Gy
        See :func:`slice_figure`; the dose grid may differ from the CT grid.
    out_dir : path-like
        Folder (created if needed); files are written atomically.
    levels_pct : sequence of float
        Isodose levels in % of the prescription dose.
    prefix : str
        File name prefix.
    **kwargs
        Passed to :func:`slice_figure`.

    Returns
    -------
    dict
        View name -> PNG path.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    default = slice_figure.__kwdefaults__
    # the target's centroid and box (a pass over its mask each) once for all the views
    fov = None if "_fov" in kwargs else _centre_and_fov(
        ct, structures, plan, kwargs.get("fov_margin_mm", default["fov_margin_mm"]),
        kwargs.get("include_needles", default["include_needles"]))
    for view in views:
        fig = slice_figure(view, ct, structures, plan, dose_grid, dose_Gy, levels_pct=levels_pct,
                           **{"_fov": fov, **kwargs})
        path = out / f"{prefix}_{view}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
        paths[view] = path
    return paths

