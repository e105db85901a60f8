"""Helpers shared by the verification modules: rigid 4x4 matrices, grids seen from another frame, resampling.

A rigid 4x4 matrix ``M`` maps homogeneous LPS points of one frame to another:
``p_b = M[:3, :3] @ p_a + M[:3, 3]``.  The later CT's voxels seen from the
planning frame form a grid of their own (origin and direction moved by the
rigid map), so a planning-frame structure is sampled on the later CT's voxels
with :meth:`seedplan.imaging.Structure.mask_on` on that grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GeometryError, InputError, InputTypeError
from ..geometry import Grid, distance_near
from ..imaging.ct import CTImage

#: Largest deviation of ``R^T R`` from the identity (and of ``det R`` from 1) accepted as a rotation.
RIGID_TOL = 1e-3


def check_ct(ct: Any, name: str) -> CTImage:
    """``ct`` when it is a :class:`CTImage`, else an :class:`InputTypeError` naming the argument."""
    if not isinstance(ct, CTImage):
        raise InputTypeError(f"{name} must be a seedplan CTImage (seedplan.imaging.load_ct), got {type(ct).__name__}")
    return ct


def rigid_matrix(value: Any, name: str) -> np.ndarray:
    """A 4x4 rigid matrix (rotation, det +1, and translation; last row 0 0 0 1) as float64, or a clear error."""
    if isinstance(value, (str, bytes)) or value is None:
        raise InputTypeError(f"{name} must be a 4x4 matrix of numbers, got {type(value).__name__}")
    try:
        m = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError(f"{name} must be a 4x4 matrix of numbers") from None
    if m.shape != (4, 4):
        raise InputError(f"{name} must be a 4x4 matrix (rotation and translation, last row 0 0 0 1), "
                         f"got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError(f"{name} must be finite")
    if not np.allclose(m[3], (0, 0, 0, 1), atol=1e-9):
        raise InputError(f"{name}: the last row must be 0 0 0 1, got {m[3].tolist()}")
    r = m[:3, :3]
    if not np.allclose(r.T @ r, np.eye(3), atol=RIGID_TOL) or abs(np.linalg.det(r) - 1.0) > RIGID_TOL:
        raise InputError(f"{name} must be rigid: its 3x3 part must be a rotation (orthonormal, determinant +1); "
                         "scaling, shear and mirroring are not accepted")
    return m


def apply(matrix: np.ndarray, points_mm: Any) -> np.ndarray:
    """``matrix`` applied to ``(..., 3)`` points."""
    p = np.asarray(points_mm, dtype=float)
    return p @ matrix[:3, :3].T + matrix[:3, 3]


def rotate(matrix: np.ndarray, vectors: Any) -> np.ndarray:
    """The rotation part of ``matrix`` applied to ``(..., 3)`` vectors."""
    return np.asarray(vectors, dtype=float) @ matrix[:3, :3].T


def inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 matrix."""
    out = np.eye(4)
    out[:3, :3] = matrix[:3, :3].T
    out[:3, 3] = -matrix[:3, :3].T @ matrix[:3, 3]
    return out


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Angle (deg) of the rotation part of a rigid matrix."""
    c = (np.trace(matrix[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def grid_in(grid: Grid, matrix: np.ndarray) -> Grid:
    """``grid``'s voxels seen from the frame ``matrix`` maps to (same voxels, moved origin and direction)."""
    origin = apply(matrix, np.asarray(grid.origin_mm))
    direction = matrix[:3, :3] @ grid.direction_matrix
    # re-orthonormalise (a rotation from a file has ~1e-7 noise; Grid wants orthonormal columns)
    u, _, vt = np.linalg.svd(direction)
    return Grid(origin, grid.spacing_mm, grid.size, u @ vt)


def sitk_affine(matrix: np.ndarray) -> Any:
    """A SimpleITK ``AffineTransform`` for a 4x4 matrix (points map as ``M @ p``)."""
    import SimpleITK as sitk

    tx = sitk.AffineTransform(3)
    tx.SetMatrix(tuple(float(v) for v in matrix[:3, :3].reshape(-1)))
    tx.SetTranslation(tuple(float(v) for v in matrix[:3, 3]))
    return tx


def matrix_of_sitk(transform: Any) -> np.ndarray:
    """The 4x4 matrix of a (linear) SimpleITK transform, from the images of four points."""
    base = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 100.0]])
    img = np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in base])
    m = np.eye(4)
    m[:3, 3] = img[0]
    m[:3, :3] = (img[1:] - img[0]).T / 100.0
    # a non-linear transform would not reproduce a fifth point
    probe = np.array([37.0, -61.0, 23.0])
    if not np.allclose(transform.TransformPoint(tuple(probe)), apply(m, probe), atol=1e-4):
        raise InputError("the transform is not linear (rigid); only rigid transforms are accepted")
    return m


def resample_hu(ct: CTImage, grid: Grid, grid_to_ct: np.ndarray, *, default_hu: float = -1024.0,
                interpolation: str = "linear") -> np.ndarray:
    """HU of ``ct`` at the voxels of ``grid`` (float32 ``[z, y, x]``); ``grid_to_ct`` maps grid-frame points to
    the CT's frame.  Outside the CT: ``default_hu``."""
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in grid.size], sitk.sitkUInt8)
    ref.SetOrigin(grid.origin_mm)
    ref.SetSpacing(grid.spacing_mm)
    ref.SetDirection(grid.direction)
    src = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)
    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}[interpolation]
    out = sitk.Resample(src, ref, sitk_affine(grid_to_ct), interp, float(default_hu), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def resample_fraction(mask: np.ndarray, src: Grid, grid: Grid, grid_to_src: np.ndarray) -> np.ndarray:
    """A boolean mask on ``src`` linearly interpolated at the voxels of ``grid`` (a fraction 0-1)."""
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in grid.size], sitk.sitkUInt8)
    ref.SetOrigin(grid.origin_mm)
    ref.SetSpacing(grid.spacing_mm)
    ref.SetDirection(grid.direction)
    img = src.to_sitk(np.asarray(mask, dtype=np.float32))
    out = sitk.Resample(img, ref, sitk_affine(grid_to_src), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def crop_grid(grid: Grid, lower_mm: Any, upper_mm: Any,
              frame_to_grid: np.ndarray | None = None) -> tuple[Grid, tuple[slice, ...]]:
    """The sub-grid of ``grid`` covering the axis-aligned box ``[lower_mm, upper_mm]`` (given in the frame that
    ``frame_to_grid`` maps to ``grid``'s, default the same) and its ``[z, y, x]`` slices.

    Raises
    ------
    GeometryError
        The box and the grid do not overlap.
    """
    lo, hi = np.asarray(lower_mm, float), np.asarray(upper_mm, float)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    if frame_to_grid is not None:
        corners = apply(frame_to_grid, corners)
    idx = grid.world_to_index(corners)
    a = np.maximum(np.floor(idx.min(axis=0)).astype(int), 0)
    b = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + 1, np.asarray(grid.size))
    if np.any(b <= a):
        raise GeometryError("the region of interest lies outside the image")
    sub = Grid(grid.index_to_world(a.astype(float)), grid.spacing_mm, b - a, grid.direction_matrix)
    return sub, (slice(a[2], b[2]), slice(a[1], b[1]), slice(a[0], b[0]))


def world_of_indices(grid: Grid, idx_zyx: np.ndarray) -> np.ndarray:
    """World mm of ``(N, 3)`` integer ``[z, y, x]`` indices."""
    return grid.index_to_world(np.asarray(idx_zyx, dtype=float)[:, ::-1])


def ball(radius_mm: float, spacing_zyx: np.ndarray) -> np.ndarray:
    """A boolean ball structuring element of ``radius_mm`` for voxels of ``spacing_zyx``."""
    r = np.maximum(np.floor(radius_mm / np.asarray(spacing_zyx, float)).astype(int), 0)
    zz, yy, xx = np.meshgrid(*(np.arange(-k, k + 1) * s for k, s in zip(r, spacing_zyx)), indexing="ij")
    return (zz ** 2 + yy ** 2 + xx ** 2) <= radius_mm ** 2 + 1e-9


def dilate(mask: np.ndarray, radius_mm: float, spacing_zyx: np.ndarray) -> np.ndarray:
    """``mask`` dilated by a ball of ``radius_mm`` (the same voxels as a binary dilation with :func:`ball`),
    by a distance transform in the mask's bounding box (:func:`seedplan.geometry.distance_near`)."""
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, bool)
    found = distance_near(mask, spacing_zyx, radius_mm)
    if found is not None:
        box, d = found
        out[box] = d <= radius_mm + 1e-9
    return out


def box_size(size_mm: float, spacing_zyx: np.ndarray) -> tuple[int, int, int]:
    """Odd voxel counts per axis spanning about ``size_mm``."""
    n = np.maximum(np.round(size_mm / np.asarray(spacing_zyx, float)).astype(int), 1)
    return tuple(int(k + 1 - k % 2) for k in n)  # type: ignore[return-value]


def grey_opening(hu: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Grey opening with a box (separable minimum then maximum filters): the image without bright details
    narrower than the box."""
    from scipy import ndimage

    return ndimage.maximum_filter(ndimage.minimum_filter(hu, size=size, mode="nearest"), size=size, mode="nearest")
