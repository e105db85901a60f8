"""The regular 3D grid shared by CT volumes, masks and dose arrays.

Coordinates are DICOM patient coordinates (LPS) in millimetres.  A grid maps
a voxel index ``(i, j, k)`` (x fastest) to the world point::

    world_mm = origin_mm + direction @ (spacing_mm * (i, j, k))

``direction`` is a 3x3 matrix whose *columns* are the unit vectors of the
grid's i, j and k axes in patient space; flattened row-major it is exactly
SimpleITK's ``GetDirection()``.  Arrays on a grid are indexed ``[k, j, i]``,
i.e. ``[z, y, x]``, like ``SimpleITK.GetArrayFromImage``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import _validate as v
from .errors import GeometryError, InputError

__all__ = ["Grid", "distance_near", "mask_bbox"]


def _vector3(value: Any, name: str, *, positive: bool = False) -> tuple[float, float, float]:
    out = v.vector(value, name)
    if positive and min(out) <= 0:
        raise InputError(f"{name} must be > 0 in every component, got {list(out)}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True, init=False)
class Grid:
    """Geometry of a regular 3D voxel grid in patient LPS coordinates.

    Parameters
    ----------
    origin_mm : sequence of 3 floats
        World position of the centre of voxel (0, 0, 0).
    spacing_mm : sequence of 3 floats
        Voxel size along the grid's i, j, k axes.
    size : sequence of 3 ints
        Number of voxels ``(nx, ny, nz)``.
    direction : array_like, optional
        3x3 direction cosine matrix (columns are the axis directions), or its
        9 values row-major as SimpleITK gives them.  Identity by default.

    Notes
    -----
    Arrays on the grid have shape :attr:`shape` ``== (nz, ny, nx)``.
    """

    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    size: tuple[int, int, int]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __init__(
        self,
        origin_mm: Sequence[float],
        spacing_mm: Sequence[float],
        size: Sequence[int],
        direction: Any = None,
    ) -> None:
        origin = _vector3(origin_mm, "origin_mm")
        spacing = _vector3(spacing_mm, "spacing_mm", positive=True)
        try:
            size_arr = np.asarray(size).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(f"size must be 3 integers (nx, ny, nz), got {size!r}") from None
        if size_arr.shape != (3,) or not np.all(np.equal(np.mod(size_arr, 1), 0)) or np.any(size_arr < 1):
            raise InputError(f"size must be 3 integers >= 1 (nx, ny, nz), got {size!r}")
        if direction is None:
            dmat = np.eye(3)
        else:
            try:
                dmat = np.asarray(direction, dtype=float).reshape(3, 3)
            except (TypeError, ValueError):
                raise InputError("direction must be a 3x3 matrix or 9 numbers (row-major)") from None
        if not np.all(np.isfinite(dmat)):
            raise InputError("direction must be finite")
        if not np.allclose(dmat.T @ dmat, np.eye(3), atol=1e-4):
            raise GeometryError(
                "direction must be orthonormal (columns are unit axis vectors), "
                f"got {np.round(dmat, 6).tolist()}"
            )
        object.__setattr__(self, "origin_mm", origin)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "size", tuple(int(s) for s in size_arr))
        object.__setattr__(self, "direction", tuple(float(v) for v in dmat.reshape(-1)))

    # ------------------------------------------------------------------ views
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(nz, ny, nx)`` of data on this grid."""
        nx, ny, nz = self.size
        return (nz, ny, nx)

    @property
    def n_voxels(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.size))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(np.prod(self.spacing_mm))

    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3 direction matrix; column ``c`` is the unit vector of axis ``c``."""
        return np.array(self.direction, dtype=float).reshape(3, 3)

    @property
    def origin(self) -> np.ndarray:
        """Origin as an array (mm)."""
        return np.array(self.origin_mm, dtype=float)

    @property
    def spacing(self) -> np.ndarray:
        """Spacing as an array (mm)."""
        return np.array(self.spacing_mm, dtype=float)

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(i, j, k, 1)`` to world mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix * self.spacing[None, :]
        a[:3, 3] = self.origin
        return a

    # ------------------------------------------------------------- transforms
    def index_to_world(self, index_ijk: Any) -> np.ndarray:
        """Map continuous indices ``(..., 3)`` in (i, j, k) order to world mm."""
        ijk = np.asarray(index_ijk, dtype=float)
        return self.origin + (ijk * self.spacing) @ self.direction_matrix.T

    def world_to_index(self, points_mm: Any) -> np.ndarray:
        """Map world points ``(..., 3)`` to continuous indices (i, j, k)."""
        p = np.asarray(points_mm, dtype=float)
        return ((p - self.origin) @ self.direction_matrix) / self.spacing

    def axis_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer index vectors ``(i, j, k)``."""
        return tuple(np.arange(n) for n in self.size)  # type: ignore[return-value]

    def voxel_centers_mm(self) -> np.ndarray:
        """World positions of all voxel centres, shape ``(nz, ny, nx, 3)``."""
        k, j, i = np.meshgrid(*(np.arange(n) for n in self.shape), indexing="ij")
        ijk = np.stack([i, j, k], axis=-1).astype(float)
        return self.index_to_world(ijk)

    def ball_mask(self, center_mm: Any, radius_mm: float) -> np.ndarray:
        """Voxels whose centres lie within ``radius_mm`` of ``center_mm``, shape ``(nz, ny, nx)``.

        Separable (the direction is orthonormal, so distances are those of the index axes scaled by the
        spacing): no ``(nz, ny, nx, 3)`` array of voxel centres is made.
        """
        c = (np.asarray(center_mm, dtype=float) - self.origin) @ self.direction_matrix  # mm along the index axes
        di, dj, dk = ((np.arange(n) * s - cc) ** 2 for n, s, cc in zip(self.size, self.spacing, c))
        return (dk[:, None, None] + dj[None, :, None] + di[None, None, :]) <= float(radius_mm) ** 2

    def contains(self, points_mm: Any, *, margin_voxels: float = 0.5) -> np.ndarray:
        """True where world points lie inside the grid's voxel extent."""
        idx = self.world_to_index(points_mm)
        hi = np.array(self.size, dtype=float) - 1 + margin_voxels
        return np.all((idx >= -margin_voxels) & (idx <= hi), axis=-1)

    def corners_mm(self) -> np.ndarray:
        """The 8 corner voxel centres in world mm, shape (8, 3)."""
        hi = np.array(self.size) - 1
        c = np.array([[x, y, z] for x in (0, hi[0]) for y in (0, hi[1]) for z in (0, hi[2])], float)
        return self.index_to_world(c)

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_bounds(
        cls, lower_mm: Sequence[float], upper_mm: Sequence[float], spacing_mm: float | Sequence[float]
    ) -> "Grid":
        """Axis-aligned grid whose voxel centres cover ``[lower_mm, upper_mm]``."""
        lo = np.asarray(_vector3(lower_mm, "lower_mm"))
        hi = np.asarray(_vector3(upper_mm, "upper_mm"))
        sp = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,))
        sp = np.asarray(_vector3(sp, "spacing_mm", positive=True))
        if np.any(hi < lo):
            raise InputError("upper_mm must be >= lower_mm in every component")
        n = np.floor((hi - lo) / sp + 1e-9).astype(int) + 1
        return cls(lo, sp, n)

    @classmethod
    def from_sitk(cls, image: Any) -> "Grid":
        """Geometry of a SimpleITK image."""
        return cls(image.GetOrigin(), image.GetSpacing(), image.GetSize(), image.GetDirection())

    def to_sitk(self, array: np.ndarray) -> Any:
        """Wrap a ``[z, y, x]`` array as a SimpleITK image with this geometry."""
        import SimpleITK as sitk

        arr = np.asarray(array)
        if arr.shape != self.shape:
            raise GeometryError(f"array shape {arr.shape} does not match grid shape {self.shape} (z, y, x)")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        img = sitk.GetImageFromArray(arr)
        img.SetOrigin(self.origin_mm)
        img.SetSpacing(self.spacing_mm)
        img.SetDirection(self.direction)
        return img

    def same_geometry(self, other: "Grid", *, tol_mm: float = 1e-3) -> bool:
        """True when both grids have the same size and voxel positions within ``tol_mm``."""
        if self.size != other.size:
            return False
        return bool(np.allclose(self.corners_mm(), other.corners_mm(), atol=tol_mm, rtol=0))

    def with_spacing(self, spacing_mm: float | Sequence[float]) -> "Grid":
        """A grid with the same orientation and extent sampled at another spacing."""
        sp = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,)).copy()
        extent = (np.array(self.size) - 1) * self.spacing
        n = np.floor(extent / sp + 1e-9).astype(int) + 1
        return Grid(self.origin, sp, n, self.direction_matrix)


def mask_bbox(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """``(lo, hi)`` voxel indices (z, y, x, inclusive) of the bounding box of a 3D mask; None when it is empty.

    From the mask's projections (``any`` over two axes, the last two in the first one's range only), not an
    index list of its voxels: a large structure costs a few passes over its slab, not an ``argwhere``.
    """
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    sub = mask[zs[0]:zs[-1] + 1]
    ys = np.flatnonzero(sub.any(axis=(0, 2)))
    xs = np.flatnonzero(sub[:, ys[0]:ys[-1] + 1].any(axis=(0, 1)))
    return (int(zs[0]), int(ys[0]), int(xs[0])), (int(zs[-1]), int(ys[-1]), int(xs[-1]))


def distance_near(mask: np.ndarray, spacing_zyx: Sequence[float], max_mm: float
                  ) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """The distance (mm) of every voxel to ``mask`` within its bounding box grown by ``max_mm``.

    Returns ``(box, distance_mm)`` with ``distance_mm`` of the shape of ``mask[box]`` (0 on the mask), or
    None for an empty mask.  Every voxel closer than ``max_mm`` lies in the box, and a Euclidean distance
    transform of the box costs in proportion to it, not to the whole grid: the planner's margins and the
    verification's dilations both threshold it.
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    bb = mask_bbox(mask)
    if bb is None:
        return None
    sp = np.asarray(spacing_zyx, dtype=float)
    pad = np.ceil(float(max_mm) / sp).astype(int) + 1
    lo = np.maximum(np.array(bb[0]) - pad, 0)
    hi = np.minimum(np.array(bb[1]) + pad + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return box, ndimage.distance_transform_edt(~mask[box], sampling=sp)  # type: ignore[return-value]
