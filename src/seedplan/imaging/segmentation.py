"""Threshold-and-morphology segmentation helpers for spine CT.

Every threshold is a parameter with a documented default tuned for adult
spine CT at 120 kVp (and for the built-in phantom).  Processing happens in
voxel space of the CT grid; "posterior" is taken in world coordinates
(+y in LPS), so rotated or flipped grids work as long as the slices are
roughly axial.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .ct import CTImage
from .structures import Role, Structure

__all__ = ["bone_masks", "connected_components", "vertebral_body_near", "spinal_canal", "dice"]

#: Default HU thresholds.
CORTICAL_MIN_HU = 500.0
CANCELLOUS_MIN_HU = 110.0


def _check_ct(ct: Any, where: str) -> CTImage:
    if not isinstance(ct, CTImage):
        raise InputError(f"{where}: ct must be a CTImage, got {type(ct).__name__}")
    return ct


def dice(a: Any, b: Any) -> float:
    """Dice similarity coefficient of two masks (or Structures) on the same grid."""
    ma = a.mask if isinstance(a, Structure) else np.asarray(a, bool)
    mb = b.mask if isinstance(b, Structure) else np.asarray(b, bool)
    if ma.shape != mb.shape:
        raise InputError(f"dice(): mask shapes differ, {ma.shape} vs {mb.shape}")
    s = int(ma.sum()) + int(mb.sum())
    return 1.0 if s == 0 else 2.0 * int(np.count_nonzero(ma & mb)) / s


def bone_masks(
    ct: CTImage, cortical_min_hu: float = CORTICAL_MIN_HU, cancellous_min_hu: float = CANCELLOUS_MIN_HU
) -> tuple[Structure, Structure]:
    """Cortical and cancellous bone by HU thresholds.

    Parameters
    ----------
    ct : CTImage
    cortical_min_hu : float
        HU at and above which a voxel is cortical bone (default 500).
    cancellous_min_hu : float
        HU at and above which (and below ``cortical_min_hu``) a voxel is
        cancellous bone (default 110, above disc ~80 and muscle ~50 HU).

    Returns
    -------
    (cortical, cancellous) : tuple of Structure
        Named ``bone_cortical`` and ``bone_cancellous``, role ``bone``.
    """
    _check_ct(ct, "bone_masks")
    if not cancellous_min_hu < cortical_min_hu:
        raise InputError(
            f"bone_masks: cancellous_min_hu ({cancellous_min_hu}) must be below cortical_min_hu ({cortical_min_hu})"
        )
    hu = ct.hu
    cort = hu >= cortical_min_hu
    canc = (hu >= cancellous_min_hu) & ~cort
    return (
        Structure("bone_cortical", Role.BONE, cort, ct.grid),
        Structure("bone_cancellous", Role.BONE, canc, ct.grid),
    )


def connected_components(
    mask: Any, *, connectivity: int = 1, min_size_voxels: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Label the connected components of a 2D/3D mask, largest first.

    Parameters
    ----------
    mask : array_like of bool or Structure
    connectivity : int
        1 = faces (6-neighbourhood in 3D), 2 = faces+edges, 3 = all 26.
    min_size_voxels : int
        Components smaller than this are dropped (label 0).

    Returns
    -------
    labels : numpy.ndarray of int32
        0 outside, 1 for the largest component, 2 for the next...
    sizes : numpy.ndarray of int64
        Voxel count of each label ``1..n`` (``sizes[0]`` is label 1).
    """
    m = mask.mask if isinstance(mask, Structure) else np.asarray(mask, dtype=bool)
    if not 1 <= int(connectivity) <= m.ndim:
        raise InputError(f"connectivity must be between 1 and {m.ndim}, got {connectivity}")
    structure = ndimage.generate_binary_structure(m.ndim, int(connectivity))
    lab, n = ndimage.label(m, structure=structure)
    if n == 0:
        return lab.astype(np.int32), np.zeros(0, dtype=np.int64)
    sizes = np.bincount(lab.reshape(-1), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    keep = sizes[order] >= max(int(min_size_voxels), 1)
    order = order[keep]
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[order + 1] = np.arange(1, order.size + 1, dtype=np.int32)
    return remap[lab], sizes[order].astype(np.int64)


def _disk(radius_mm: float, spacing_yx: np.ndarray) -> np.ndarray:
    ry, rx = (int(np.floor(radius_mm / s)) for s in spacing_yx)
    yy, xx = np.mgrid[-ry : ry + 1, -rx : rx + 1]
    return (yy * spacing_yx[0]) ** 2 + (xx * spacing_yx[1]) ** 2 <= radius_mm**2 + 1e-9


def _roi(ct: CTImage, center_mm: np.ndarray, half_mm: tuple[float, float, float]) -> tuple[slice, slice, slice]:
    g = ct.grid
    corners = np.array(
        [[center_mm[0] + sx * half_mm[0], center_mm[1] + sy * half_mm[1], center_mm[2] + sz * half_mm[2]]
         for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    )
    idx = g.world_to_index(corners)
    lo = np.clip(np.floor(idx.min(axis=0)).astype(int), 0, np.array(g.size) - 1)
    hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 1, 1, np.array(g.size))
    return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))


def _world_y(ct: CTImage, sl: tuple[slice, slice, slice]) -> np.ndarray:
    """World y (posterior) of the voxel centres of an ROI, shape of the ROI."""
    g = ct.grid
    k = np.arange(sl[0].start, sl[0].stop)[:, None, None]
    j = np.arange(sl[1].start, sl[1].stop)[None, :, None]
    i = np.arange(sl[2].start, sl[2].stop)[None, None, :]
    d = g.direction_matrix[1] * g.spacing  # y row of the affine
    return g.origin[1] + d[0] * i + d[1] * j + d[2] * k


def vertebral_body_near(
    ct: CTImage,
    point_mm: Any,
    *,
    bone_min_hu: float = CANCELLOUS_MIN_HU,
    opening_radius_mm: float = 6.0,
    smoothing_mm: float = 0.0,
    median_size: int = 1,
    search_radius_mm: float = 25.0,
    posterior_band_mm: float = 12.0,
    pedicle_trim_tolerance_mm: float = 1.5,
    roi_half_size_mm: tuple[float, float, float] = (60.0, 60.0, 45.0),
    name: str = "vertebral_body",
) -> Structure:
    """Segment the vertebral body nearest to ``point_mm``.

    Steps: bone = smoothed HU >= ``bone_min_hu`` (discs, ~80 HU, separate
    the levels); 3D hole filling (restores an intact-shelled lytic lesion);
    per-slice opening with a disc of ``opening_radius_mm`` (removes laminae,
    transverse and spinous processes, thin pedicles); the component nearest
    the point; a cut at the posterior body wall found from the spinal canal
    behind the body on the midline; trimming of the pedicle roots next to
    the posterior wall; and a per-slice convex hull (fills lytic
    cavities, the body cross-section being convex).

    Parameters
    ----------
    ct : CTImage
    point_mm : 3 floats
        A point in (or near) the body, LPS mm (e.g. the lesion centre).
    bone_min_hu : float
        Bone threshold (default 110 HU).
    opening_radius_mm : float
        Radius of the in-plane opening separating the body from the
        posterior elements (default 6 mm).
    smoothing_mm : float
        Gaussian sigma applied before thresholding (default 0 = off; a blur
        spreads cortical HU into the discs and joins the levels).
    median_size : int
        Edge-preserving median filter width in voxels before thresholding
        (default 1 = off; a median erases a 1-voxel cortical shell).
    search_radius_mm : float
        How far from the point the body may be (default 25 mm).
    posterior_band_mm, pedicle_trim_tolerance_mm : float
        Within ``posterior_band_mm`` (default 12) of the posterior wall,
        voxels farther than ``pedicle_trim_tolerance_mm`` (default 1.5) from
        the outline of the slimmest central slice are pedicle roots and are
        removed.
    roi_half_size_mm : 3 floats
        Half-size of the working box around the point (default 60, 60, 45).
    name : str
        Name of the returned structure.

    Returns
    -------
    Structure
        Role ``vertebral_body`` on the CT grid.

    Notes
    -----
    A lesion that has destroyed the posterior wall is only included where
    it stays inside the convex outline of the remaining body.
    """
    _check_ct(ct, "vertebral_body_near")
    p = np.asarray(point_mm, dtype=float).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"vertebral_body_near: point_mm must be 3 finite numbers, got {point_mm!r}")
    g = ct.grid
    if not g.contains(p):
        raise InputError(f"vertebral_body_near: point {p.tolist()} mm is outside the CT")
    sl = _roi(ct, p, roi_half_size_mm)
    hu = ct.hu[sl].astype(np.float32)
    sp_zyx = g.spacing[::-1]
    if median_size > 1:
        hu = ndimage.median_filter(hu, size=int(median_size), mode="nearest")
    if smoothing_mm > 0:
        hu = ndimage.gaussian_filter(hu, sigma=smoothing_mm / sp_zyx, mode="nearest")
    bone = hu >= bone_min_hu
    filled = ndimage.binary_fill_holes(bone)
    disk = _disk(opening_radius_mm, sp_zyx[1:])
    opened = np.zeros_like(filled)
    for k in range(filled.shape[0]):
        if filled[k].any():
            opened[k] = ndimage.binary_opening(filled[k], structure=disk)
    lab, sizes = connected_components(opened, connectivity=1)
    if sizes.size == 0:
        raise InputError(
            f"vertebral_body_near: no vertebral body (no bone thicker than {2 * opening_radius_mm:g} mm, HU >= {bone_min_hu:g}) "
            f"near {p.tolist()} mm"
        )
    # component nearest to the point
    pi = g.world_to_index(p)[::-1] - np.array([s.start for s in sl])
    dist, (iz, iy, ix) = ndimage.distance_transform_edt(lab == 0, sampling=sp_zyx, return_indices=True)
    q = np.clip(np.rint(pi).astype(int), 0, np.array(lab.shape) - 1)
    if dist[tuple(q)] > search_radius_mm:
        raise InputError(
            f"vertebral_body_near: no vertebral body within {search_radius_mm:g} mm of {p.tolist()} mm "
            f"(nearest bone is {dist[tuple(q)]:.1f} mm away)"
        )
    comp = lab == lab[iz[tuple(q)], iy[tuple(q)], ix[tuple(q)]]
    # posterior wall: walk from the component centroid towards +y on the
    # midline until leaving filled bone (the canal is not filled: open tube)
    wy = _world_y(ct, sl)
    ks = np.nonzero(comp.any(axis=(1, 2)))[0]
    k_mid = ks[len(ks) // 4 : max(len(ks) * 3 // 4, len(ks) // 4 + 1)]
    walls = []
    for k in k_mid:
        cj, ci = ndimage.center_of_mass(comp[k])
        ci = int(round(ci))
        col = filled[k, :, ci] & (np.arange(filled.shape[1]) >= 0)
        ycol = wy[k, :, ci]
        jc = int(round(cj))
        step = 1 if ycol[-1] > ycol[0] else -1
        j = jc
        while 0 <= j + step < col.size and col[j + step]:
            j += step
        if 0 <= j + step < col.size:
            walls.append((ycol[j] + ycol[j + step]) / 2)
    body = comp.copy()
    if walls:
        y_wall = float(np.median(walls))
        body &= wy <= y_wall
        # pedicle roots between the curved posterior wall and the cut: the
        # pedicles span only part of the body height, so the slimmest central
        # slice gives the body outline near the posterior wall
        areas = body.sum(axis=(1, 2))
        kb = np.nonzero(areas)[0]
        if kb.size >= 5:
            central = kb[kb.size // 10 : kb.size - kb.size // 10]
            ref = int(central[np.argmin(areas[central])])
            template = ndimage.binary_dilation(_convex_fill(body[ref]), structure=_disk(pedicle_trim_tolerance_mm, sp_zyx[1:]))
            for k in kb:
                body[k] &= template | (wy[k] < y_wall - posterior_band_mm)
    # per-slice convex hull (fill lytic cavities), limited by the cut
    out = np.zeros_like(body)
    for k in np.nonzero(body.any(axis=(1, 2)))[0]:
        lab2, sizes2 = connected_components(body[k], connectivity=1)
        out[k] = _convex_fill(lab2 == 1)
    if walls:
        out &= wy <= y_wall
    full = np.zeros(g.shape, dtype=bool)
    full[sl] = out
    return Structure(name, Role.VERTEBRAL_BODY, full, g)


def _convex_fill(mask2d: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies in the convex hull of a 2D mask's pixels."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.argwhere(mask2d)
    if pts.shape[0] < 4:
        return mask2d
    try:
        hull = ConvexHull(pts)
    except QhullError:
        return mask2d
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    yy, xx = np.mgrid[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1]
    cand = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(float)
    eq = hull.equations
    inside = np.all(cand @ eq[:, :2].T + eq[:, 2] <= 1e-9, axis=1)
    out = mask2d.copy()
    out[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1] |= inside.reshape(yy.shape)
    return out


def spinal_canal(
    ct: CTImage,
    vertebral_body: Structure,
    *,
    bone_min_hu: float = CANCELLOUS_MIN_HU,
    z_margin_mm: float = 0.0,
    max_lateral_mm: float = 20.0,
    smoothing_mm: float = 0.0,
    name: str = "spinal_canal",
) -> Structure:
    """The spinal canal behind a vertebral body.

    In each slice over the body's height, the canal is the low-HU region
    enclosed by the bony ring (body, pedicles, laminae) posterior to the
    body.  Slices where the ring is open (between pedicles) take the canal
    cross-section of the nearest closed slice, restricted to non-bone voxels.

    Parameters
    ----------
    ct : CTImage
    vertebral_body : Structure
        The body in front of the canal (e.g. from :func:`vertebral_body_near`).
    bone_min_hu : float
        Bone threshold (default 110 HU).
    z_margin_mm : float
        Extend the slice range beyond the body by this much (default 0).
    max_lateral_mm : float
        An enclosed region counts as canal if its centroid is within this
        distance of the body's centroid laterally (default 20 mm).
    smoothing_mm : float
        Gaussian sigma before thresholding (default 0 = off).
    name : str

    Returns
    -------
    Structure
        Role ``avoidance``.

    Raises
    ------
    InputError
        No enclosed canal behind the body.
    """
    _check_ct(ct, "spinal_canal")
    if not isinstance(vertebral_body, Structure) or vertebral_body.is_empty:
        raise InputError("spinal_canal: vertebral_body must be a non-empty Structure")
    g = ct.grid
    if not vertebral_body.grid.same_geometry(g):
        raise InputError("spinal_canal: vertebral_body is not on the CT grid; resample it first")
    c = vertebral_body.centroid_mm
    lo, hi = vertebral_body.bounds_mm
    half_z = (hi[2] - lo[2]) / 2 + z_margin_mm + g.spacing[2]
    sl = _roi(ct, c, (60.0, 70.0, half_z))
    hu = ct.hu[sl].astype(np.float32)
    sp_zyx = g.spacing[::-1]
    if smoothing_mm > 0:
        hu = ndimage.gaussian_filter(hu, sigma=smoothing_mm / sp_zyx, mode="nearest")
    bone = hu >= bone_min_hu
    vb = vertebral_body.mask[sl]
    wy = _world_y(ct, sl)
    g_idx = g.world_to_index(c)
    wall_y = float(wy[vb].max()) if vb.any() else c[1]
    nk = bone.shape[0]
    found: dict[int, np.ndarray] = {}
    ci_local = g_idx[0] - sl[2].start
    for k in range(nk):
        holes = ndimage.binary_fill_holes(bone[k]) & ~bone[k]
        lab, n = ndimage.label(holes)
        if n == 0:
            continue
        best, best_size = 0, 0
        for lbl in range(1, n + 1):
            m = lab == lbl
            jj, ii = np.nonzero(m)
            ymean = float(wy[k][m].mean())
            lateral = abs(float(ii.mean()) - ci_local) * g.spacing[0]
            if ymean > wall_y - 2.0 and lateral <= max_lateral_mm and m.sum() > best_size and float(wy[k][m].min()) >= c[1]:
                best, best_size = lbl, int(m.sum())
        if best:
            found[k] = lab == best
    if not found:
        raise InputError(
            f"spinal_canal: no enclosed low-HU region (HU < {bone_min_hu:g}) found behind the vertebral body "
            f"{vertebral_body.name!r}; is the posterior arch in the CT?"
        )
    out = np.zeros(bone.shape, dtype=bool)
    kf = np.array(sorted(found))
    z_ok = np.zeros(nk, dtype=bool)
    kk = np.nonzero(vb.any(axis=(1, 2)))[0]
    marg = int(round(z_margin_mm / g.spacing[2]))
    z_ok[max(kk.min() - marg, 0) : min(kk.max() + marg + 1, nk)] = True
    for k in range(nk):
        if not z_ok[k]:
            continue
        if k in found:
            out[k] = found[k]
        else:
            near = int(kf[np.argmin(np.abs(kf - k))])
            out[k] = found[near] & ~bone[k]
    full = np.zeros(g.shape, dtype=bool)
    full[sl] = out
    return Structure(name, Role.AVOIDANCE, full, g)
