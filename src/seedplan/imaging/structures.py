"""Structures (binary masks with a clinical role) and their file formats.

A :class:`Structure` is a boolean mask on a :class:`~seedplan.geometry.Grid`
(``[z, y, x]``); a :class:`StructureSet` is an immutable name -> structure
mapping whose members share one grid.  Loaders read label maps and single
masks (NIfTI/NRRD/MHA) and DICOM RTSTRUCT files; writers produce an
RTSTRUCT referencing a CT series and an exact label map with a JSON legend.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, write_text_atomic
from ..errors import FileFormatError, GeometryError, InputError
from ..geometry import Grid
from .ct import CTImage

__all__ = [
    "COMBINED_TARGET",
    "Role",
    "Structure",
    "StructureSet",
    "StructureNotFoundError",
    "guess_role",
    "load_label_map",
    "load_mask",
    "load_rtstruct",
    "write_label_map",
    "rasterize_polygons",
]

#: Name of the union of the targets of a multi-level plan (several lesions planned as one implant): the
#: plan's ``metrics["target"]``; each level's target keeps its own block under ``metrics["targets"]``.
COMBINED_TARGET = "all_targets"

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


class Role(str, Enum):
    """What a structure is for in planning.

    * ``target``: the lesion to cover;
    * ``oar``: an organ at risk: no needle within its margin, evaluated (DVH, D0.1cc);
    * ``canal``: the spinal canal or what it holds (cord, cauda equina, dura, thecal sac): an organ
      at risk that no needle crosses and no seed comes within ``min_seed_canal_distance_mm`` of;
    * ``vertebral_body``: the treated vertebral body (needle corridor, cement);
    * ``pedicle``: a pedicle (the transpedicular needle corridor);
    * ``avoidance``: a region no needle crosses (not evaluated);
    * ``body``: the patient outline (skin); ``bone``: bone, for display and segmentation.
    """

    TARGET = "target"
    OAR = "oar"
    CANAL = "canal"
    VERTEBRAL_BODY = "vertebral_body"
    PEDICLE = "pedicle"
    AVOIDANCE = "avoidance"
    BODY = "body"
    BONE = "bone"

    def __str__(self) -> str:  # "target", not "Role.TARGET"
        return self.value


def _coerce_role(role: Any, where: str) -> Role:
    if isinstance(role, Role):
        return role
    try:
        return Role(str(role).strip().lower())
    except ValueError:
        raise InputError(
            f"{where}: unknown role {role!r}; valid roles are {', '.join(r.value for r in Role)}"
        ) from None


def guess_role(name: str) -> Role:
    """Guess a :class:`Role` from a structure name (``GTV``/``lesion`` -> target, ...)."""
    n = name.lower()
    if re.search(r"(^|[^a-z])(gtv|ctv|ptv|target|lesion|tumou?r|met(astasis)?)([^a-z]|$)", n):
        return Role.TARGET
    if "vertebral_body" in n or "vertebral body" in n or re.fullmatch(r"vb[_ ]?[tls]?\d*", n):
        return Role.VERTEBRAL_BODY
    if n in ("body", "external", "skin", "outline", "patient") or n.startswith("body"):
        return Role.BODY
    if "pedicle" in n:
        return Role.PEDICLE
    if any(w in n for w in ("canal", "cord", "cauda", "dura", "thecal")):
        return Role.CANAL
    if any(w in n for w in ("bone", "cortical", "cancellous", "lamina", "vertebra")):
        return Role.BONE
    if "avoid" in n or n.startswith("prv"):
        return Role.AVOIDANCE
    return Role.OAR


class StructureNotFoundError(InputError, KeyError):
    """A structure name is not in a :class:`StructureSet`."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# ============================================================================ Structure
@dataclass(frozen=True)
class Structure:
    """A named binary mask on a grid.

    Parameters
    ----------
    name : str
        Unique, non-empty name (e.g. ``"target"``, ``"vertebral_body_L3"``).
    role : Role or str
        Planning role.
    mask : numpy.ndarray
        Boolean mask ``[z, y, x]`` with shape ``grid.shape`` (copied, read-only).
    grid : Grid
        Geometry of the mask.
    derived : str
        Empty for a structure the user gave; for one seedplan derived from the CT (or from
        another structure), how it was derived, in one line.  Reports, the plan and the
        RTSTRUCT ROI description carry it.
    """

    name: str
    role: Role
    mask: np.ndarray
    grid: Grid
    derived: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"structure name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "role", _coerce_role(self.role, f"structure {self.name!r}"))
        if not isinstance(self.grid, Grid):
            raise InputError(f"structure {self.name!r}: grid must be a seedplan.geometry.Grid")
        if not isinstance(self.derived, str):
            raise InputError(f"structure {self.name!r}: derived must be a string (how it was derived, or '')")
        m = np.asarray(self.mask)
        if m.shape != self.grid.shape:
            raise GeometryError(
                f"structure {self.name!r}: mask shape {m.shape} does not match its grid shape "
                f"{self.grid.shape} (z, y, x)"
            )
        if m.dtype != bool:
            if not (np.issubdtype(m.dtype, np.number) or m.dtype == bool):
                raise InputError(f"structure {self.name!r}: mask must be boolean, got dtype {m.dtype}")
            m = m != 0
        m = np.array(m, dtype=bool, copy=True)
        m.setflags(write=False)
        object.__setattr__(self, "mask", m)

    def __repr__(self) -> str:
        return f"Structure(name={self.name!r}, role={self.role.value!r}, voxels={self.n_voxels}, grid={self.grid.size})"

    # ---------------------------------------------------------------- measures
    @property
    def n_voxels(self) -> int:
        """Number of voxels inside."""
        return int(np.count_nonzero(self.mask))

    @property
    def is_empty(self) -> bool:
        """True when no voxel is inside."""
        return not bool(self.mask.any())

    @property
    def volume_cm3(self) -> float:
        """Volume in cm^3 (voxel count times voxel volume)."""
        return self.n_voxels * self.grid.voxel_volume_mm3 / 1000.0

    def _require_voxels(self, what: str) -> np.ndarray:
        idx = np.argwhere(self.mask)
        if idx.size == 0:
            raise InputError(f"structure {self.name!r} is empty; it has no {what}")
        return idx[:, ::-1].astype(float)  # (i, j, k)

    @property
    def centroid_mm(self) -> np.ndarray:
        """Centre of mass of the voxel centres, world mm ``(x, y, z)``."""
        ijk = self._require_voxels("centroid")
        return self.grid.index_to_world(ijk.mean(axis=0))

    @property
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` world corners of the box around the voxel centres."""
        ijk = self._require_voxels("bounds")
        lo, hi = ijk.min(axis=0), ijk.max(axis=0)
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        w = self.grid.index_to_world(corners)
        return w.min(axis=0), w.max(axis=0)

    def points_mm(self) -> np.ndarray:
        """World positions of the voxel centres inside, shape ``(n, 3)``."""
        return self.grid.index_to_world(np.argwhere(self.mask)[:, ::-1].astype(float))

    def contains_mm(self, points_mm: Any) -> np.ndarray:
        """True where world points fall in a voxel that is inside (nearest voxel)."""
        idx = np.rint(self.grid.world_to_index(points_mm)).astype(int)
        size = np.array(self.grid.size)
        ok = np.all((idx >= 0) & (idx < size), axis=-1)
        out = np.zeros(ok.shape, dtype=bool)
        sel = idx[ok]
        out[ok] = self.mask[sel[:, 2], sel[:, 1], sel[:, 0]]
        return out

    # --------------------------------------------------------------- variants
    def renamed(self, name: str | None = None, role: Role | str | None = None) -> "Structure":
        """A copy with another name and/or role."""
        return Structure(name or self.name, role if role is not None else self.role, self.mask, self.grid,
                         self.derived)

    def mask_on(self, grid: Grid) -> np.ndarray:
        """The mask on ``grid`` (bool, ``[z, y, x]``): this mask when the geometry is the same, else resampled."""
        if self.grid.same_geometry(grid):
            return np.asarray(self.mask, dtype=bool)
        return np.asarray(self.resampled(grid).mask, dtype=bool)

    def resampled(self, grid: Grid, *, method: str = "volume") -> "Structure":
        """The structure on another grid (any spacing, origin, orientation).

        The mask is turned into a signed distance map (boundary half-way
        between inside and outside voxel centres), interpolated linearly onto
        a supersampled copy of ``grid`` and averaged into a coverage fraction
        per target voxel.

        Parameters
        ----------
        grid : Grid
            Target geometry.
        method : {"volume", "fraction"}
            ``"fraction"`` keeps voxels covered at >= 50 %.  ``"volume"``
            (default) keeps the most-covered voxels, as many as needed to
            match the source volume (inside ``grid``) to within one target
            voxel.

        Returns
        -------
        Structure
        """
        if method not in ("volume", "fraction"):
            raise InputError(f"resampled(method={method!r}): use 'volume' or 'fraction'")
        if not isinstance(grid, Grid):
            raise InputError(f"resampled(): grid must be a seedplan.geometry.Grid, got {type(grid).__name__}")
        if grid.same_geometry(self.grid, tol_mm=1e-4) and grid.direction == self.grid.direction:
            return Structure(self.name, self.role, self.mask, grid, self.derived)
        same_voxels = _reindexed(self.mask, self.grid, grid)
        if same_voxels is not None:  # the same voxel centres in another axis order or direction: exact
            return Structure(self.name, self.role, same_voxels, grid, self.derived)
        frac = _coverage_fraction(self.mask, self.grid, grid)
        if method == "fraction":
            out = frac >= 0.5
        else:
            # the source voxel count is the best volume estimate (the smooth
            # interpolated surface cuts the corners of the voxel staircase)
            inside = grid.contains(self.points_mm(), margin_voxels=0.5)
            n_target = int(round(np.count_nonzero(inside) * self.grid.voxel_volume_mm3 / grid.voxel_volume_mm3))
            out = _volume_preserving_threshold(frac, n_target)
        return Structure(self.name, self.role, out, grid, self.derived)


def _reindexed(mask: np.ndarray, src: Grid, dst: Grid) -> np.ndarray | None:
    """``mask`` on ``dst`` when the voxel centres of ``dst`` lie on those of ``src`` with unit steps
    (the same lattice with axes flipped or permuted, possibly shifted): an exact re-indexing; else None."""
    o = src.world_to_index(dst.index_to_world(np.zeros((1, 3))))[0]
    steps = src.world_to_index(dst.index_to_world(np.eye(3))) - o  # row t: dst axis t in src (i, j, k)
    if not (np.allclose(o, np.round(o), atol=1e-3) and np.allclose(steps, np.round(steps), atol=1e-3)):
        return None
    steps = np.round(steps).astype(int)
    if not (np.all(np.abs(steps).sum(axis=1) == 1) and np.all(np.abs(steps).sum(axis=0) == 1)):
        return None
    o = np.round(o).astype(int)
    n_dst, n_src = dst.size, src.size
    vec, ok = [None] * 3, [None] * 3  # per src axis (i, j, k): source indices along it, and which are inside
    dst_of_src = [0] * 3
    for t in range(3):
        s = int(np.flatnonzero(steps[t])[0])
        v = o[s] + steps[t, s] * np.arange(n_dst[t])
        ok[s] = (v >= 0) & (v < n_src[s])
        vec[s] = np.clip(v, 0, n_src[s] - 1)
        dst_of_src[s] = t
    # gather in src order [k, j, i], then arrange the axes in dst order [k, j, i]
    out = mask[np.ix_(vec[2], vec[1], vec[0])] & ok[2][:, None, None] & ok[1][None, :, None] & ok[0][None, None, :]
    axes_src_order = [dst_of_src[2], dst_of_src[1], dst_of_src[0]]  # dst axis (i=0, j=1, k=2) of each out axis
    perm = [axes_src_order.index(t) for t in (2, 1, 0)]
    return np.ascontiguousarray(np.transpose(out, perm))


def _coverage_fraction(mask: np.ndarray, src: Grid, dst: Grid, *, max_samples: float = 4e7) -> np.ndarray:
    """Fraction of each ``dst`` voxel covered by ``mask`` (defined on ``src``)."""
    import SimpleITK as sitk
    from scipy import ndimage

    frac = np.zeros(dst.shape, dtype=np.float32)
    idx = np.argwhere(mask)
    if idx.size == 0:
        return frac
    pad = 3
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, np.array(src.shape))
    crop = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    sp_zyx = src.spacing[::-1]
    inside = ndimage.distance_transform_edt(crop, sampling=sp_zyx)
    outside = ndimage.distance_transform_edt(~crop, sampling=sp_zyx)
    # signed distance: -d to the nearest outside centre inside, +d outside;
    # symmetric, so its linear interpolation crosses 0 half-way between them
    phi = outside - inside
    phi = phi.astype(np.float32)
    crop_origin = src.index_to_world(lo[::-1].astype(float))
    phi_img = sitk.GetImageFromArray(phi)
    phi_img.SetOrigin(tuple(crop_origin))
    phi_img.SetSpacing(src.spacing_mm)
    phi_img.SetDirection(src.direction)

    # target sub-box: dst voxels whose centre is within one dst voxel of the mask's world box
    corners = np.array(
        [[a, b, c] for a in (lo[2] - 1, hi[2]) for b in (lo[1] - 1, hi[1]) for c in (lo[0] - 1, hi[0])], float
    )
    dst_idx = dst.world_to_index(src.index_to_world(corners))
    tlo = np.maximum(np.floor(dst_idx.min(axis=0)).astype(int) - 1, 0)  # (i, j, k)
    thi = np.minimum(np.ceil(dst_idx.max(axis=0)).astype(int) + 2, np.array(dst.size))
    if np.any(thi <= tlo):
        return frac  # no overlap
    n_box = np.prod(thi - tlo)
    ratio = float(np.max(dst.spacing) / np.min(src.spacing))
    n = int(np.clip(np.ceil(2 * ratio), 2, 5))
    while n > 1 and n_box * n**3 > max_samples:
        n -= 1
    sub_sp = dst.spacing / n
    sub_origin = dst.index_to_world(tlo + (-0.5 + 0.5 / n))
    ref = sitk.Image([int(v) for v in (thi - tlo) * n], sitk.sitkFloat32)
    ref.SetOrigin(tuple(sub_origin))
    ref.SetSpacing(tuple(float(v) for v in sub_sp))
    ref.SetDirection(dst.direction)
    far = float(np.max(phi)) + 10.0 * float(np.max(src.spacing))
    res = sitk.Resample(phi_img, ref, sitk.Transform(), sitk.sitkLinear, far, sitk.sitkFloat32)
    sub = sitk.GetArrayViewFromImage(res) < 0
    bz, by, bx = (thi - tlo)[::-1]
    f = sub.reshape(bz, n, by, n, bx, n).mean(axis=(1, 3, 5), dtype=np.float32)
    frac[tlo[2] : thi[2], tlo[1] : thi[1], tlo[0] : thi[0]] = f
    return frac


def _volume_preserving_threshold(frac: np.ndarray, target: int) -> np.ndarray:
    """The ``target`` voxels with the highest coverage (ties in index order)."""
    out = np.zeros(frac.shape, dtype=bool)
    if target <= 0:
        return out
    flat = frac.reshape(-1)
    cand = np.flatnonzero(flat > 0)
    if target >= cand.size:
        out.reshape(-1)[cand] = True
        return out
    order = np.argsort(-flat[cand], kind="stable")
    out.reshape(-1)[cand[order[:target]]] = True
    return out


# ========================================================================= StructureSet
class StructureSet(Mapping[str, Structure]):
    """Immutable name -> :class:`Structure` mapping; all members share one grid.

    Parameters
    ----------
    structures : iterable of Structure
        Members (names must be unique, geometries identical).
    """

    def __init__(self, structures: Iterable[Structure] = ()) -> None:
        items: dict[str, Structure] = {}
        grid: Grid | None = None
        for s in structures:
            if not isinstance(s, Structure):
                raise InputError(f"StructureSet members must be Structure objects, got {type(s).__name__}")
            if s.name in items:
                raise InputError(f"duplicate structure name {s.name!r} in StructureSet")
            if grid is None:
                grid = s.grid
            elif not s.grid.same_geometry(grid):
                raise GeometryError(
                    f"structure {s.name!r} is on a different grid ({s.grid.size}, origin {s.grid.origin_mm}) "
                    f"from the others ({grid.size}, origin {grid.origin_mm}); resample it first"
                )
            items[s.name] = s
        self._items = items
        self._grid = grid

    # Mapping protocol
    def __getitem__(self, name: str) -> Structure:
        try:
            return self._items[name]
        except KeyError:
            raise StructureNotFoundError(self._missing_message(name)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return "StructureSet(" + ", ".join(f"{n}:{s.role.value}" for n, s in self._items.items()) + ")"

    def _missing_message(self, name: str) -> str:
        avail = ", ".join(self._items) or "(none)"
        return f"no structure named {name!r}; available structures: {avail}"

    _MISSING = object()

    def get(self, name: str, default: Any = _MISSING) -> Any:  # type: ignore[override]
        """The structure called ``name``.

        An exact match wins, then a unique case-insensitive match.  Without
        ``default`` a missing name raises :class:`StructureNotFoundError`
        listing the available names.
        """
        if name in self._items:
            return self._items[name]
        folded = [n for n in self._items if n.lower() == str(name).lower()]
        if len(folded) == 1:
            return self._items[folded[0]]
        if default is not StructureSet._MISSING:
            return default
        raise StructureNotFoundError(self._missing_message(name))

    @property
    def grid(self) -> Grid | None:
        """The shared grid (None for an empty set)."""
        return self._grid

    @property
    def names(self) -> tuple[str, ...]:
        """Structure names in insertion order."""
        return tuple(self._items)

    def by_role(self, role: Role | str) -> tuple[Structure, ...]:
        """All structures with ``role`` (in insertion order)."""
        r = _coerce_role(role, "StructureSet.by_role")
        return tuple(s for s in self._items.values() if s.role is r)

    @property
    def targets(self) -> tuple[Structure, ...]:
        """The targets: the combined target of a multi-level plan (:data:`COMBINED_TARGET`) first, then each
        level's, in insertion order."""
        found = self.by_role(Role.TARGET)
        return tuple(sorted(found, key=lambda x: x.name != COMBINED_TARGET))

    def first(self, role: Role | str) -> Structure:
        """The first structure with ``role``; raises when there is none."""
        found = self.by_role(role)
        if not found:
            r = _coerce_role(role, "StructureSet.first")
            roles = ", ".join(f"{n} ({s.role.value})" for n, s in self._items.items()) or "(none)"
            raise StructureNotFoundError(f"no structure with role {r.value!r}; structures: {roles}")
        return found[0]

    def with_structures(self, *structures: Structure, replace: bool = False) -> "StructureSet":
        """A new set with ``structures`` added (or replacing same names when ``replace``)."""
        items = dict(self._items)
        for s in structures:
            if s.name in items and not replace:
                raise InputError(f"structure {s.name!r} already exists; pass replace=True to replace it")
            items[s.name] = s
        return StructureSet(items.values())

    def without(self, *names: str) -> "StructureSet":
        """A new set without the named structures."""
        for n in names:
            self[n]  # raises with the available names
        return StructureSet(s for n, s in self._items.items() if n not in names)

    def resampled(self, grid: Grid, *, method: str = "volume") -> "StructureSet":
        """Every structure resampled onto ``grid`` (see :meth:`Structure.resampled`)."""
        return StructureSet(s.resampled(grid, method=method) for s in self._items.values())


# ============================================================================== loaders
def _reference_grid(reference: Any) -> Grid | None:
    if reference is None:
        return None
    if isinstance(reference, CTImage):
        return reference.grid
    if isinstance(reference, Grid):
        return reference
    if isinstance(reference, Structure):
        return reference.grid
    raise InputError(f"reference must be a CTImage or a Grid, got {type(reference).__name__}")


def _describe(grid: Grid) -> str:
    return (
        f"size {grid.size}, spacing {tuple(round(v, 4) for v in grid.spacing_mm)} mm, "
        f"origin {tuple(round(v, 3) for v in grid.origin_mm)} mm"
    )


def _read_mask_image(path: Path) -> tuple[Grid, np.ndarray]:
    import SimpleITK as sitk

    if not path.exists():
        raise FileFormatError(f"mask/label file {path} does not exist")
    if path.is_dir():
        raise FileFormatError(f"{path} is a folder; expected a NIfTI/NRRD/MHA mask or label file")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise FileFormatError(
            f"cannot read mask/label file {path} (expected NIfTI/NRRD/MHA): {lines[-1][:200] if lines else ''}"
        ) from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise FileFormatError(f"{path} must be a 3D single-component image to be used as a mask/label map")
    return Grid.from_sitk(img), sitk.GetArrayFromImage(img)


def _check_geometry(path: Path, grid: Grid, ref: Grid | None, resample: bool) -> bool:
    """True when resampling is needed; raises when it is needed but not allowed."""
    if ref is None or grid.same_geometry(ref, tol_mm=1e-2):
        return False
    if not resample:
        raise GeometryError(
            f"{path} does not match the reference CT geometry: file has {_describe(grid)}, CT has "
            f"{_describe(ref)}; pass resample=True to resample it onto the CT grid"
        )
    return True


def _read_legend(path: Path) -> tuple[dict[int, str], dict[str, Role], dict[str, list[int]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileFormatError(f"label legend {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"label legend {path} is not valid JSON: {exc}") from None
    labels: dict[int, str] = {}
    roles: dict[str, Role] = {}
    members: dict[str, list[int]] = {}
    try:
        table = data["labels"] if isinstance(data, dict) and "labels" in data else data
        if not isinstance(table, dict):
            raise TypeError("labels must be an object")
        for key, val in table.items():
            value = int(key)
            if isinstance(val, str):
                labels[value] = val
            else:
                labels[value] = str(val["name"])
                if "role" in val and val["role"] is not None:
                    roles.setdefault(labels[value], _coerce_role(val["role"], f"{path} label {key}"))
        for name, info in (data.get("structures", {}) if isinstance(data, dict) else {}).items():
            members[str(name)] = [int(v) for v in info["labels"]]
            if "role" in info:
                roles[str(name)] = _coerce_role(info["role"], f"{path} structure {name}")
    except InputError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise FileFormatError(
            f"label legend {path} is malformed ({exc}); expected {{\"labels\": {{\"1\": {{\"name\": ..., "
            "\"role\": ...}}}}}} or {\"1\": \"name\", ...}"
        ) from None
    return labels, roles, members


def load_label_map(
    path: str | os.PathLike[str],
    labels: Mapping[int, str] | str | os.PathLike[str],
    roles: Mapping[str, Role | str] | None = None,
    reference: CTImage | Grid | None = None,
    *,
    resample: bool = False,
) -> StructureSet:
    """Read an integer label map as a :class:`StructureSet`.

    Parameters
    ----------
    path : path-like
        NIfTI/NRRD/MHA label image.
    labels : mapping int -> name, or path of a JSON legend
        Label values and names.  A legend written by :func:`write_label_map`
        also restores roles and overlapping structures exactly.
    roles : mapping name -> Role, optional
        Roles; names not given get :func:`guess_role` (or the legend's role).
    reference : CTImage or Grid, optional
        Geometry the structures must be on.
    resample : bool
        Resample onto ``reference`` instead of raising when geometries differ.

    Raises
    ------
    GeometryError
        Geometry differs from ``reference`` and ``resample`` is False.
    FileFormatError
        Missing or unreadable files, non-integer labels.
    """
    p = Path(path)
    legend_roles: dict[str, Role] = {}
    members: dict[str, list[int]] = {}
    if isinstance(labels, (str, os.PathLike)):
        table, legend_roles, members = _read_legend(Path(labels))
    elif isinstance(labels, Mapping):
        try:
            table = {int(k): str(v) for k, v in labels.items()}
        except (TypeError, ValueError):
            raise InputError("labels must map integer label values to names") from None
    else:
        raise InputError(f"labels must be a dict {{value: name}} or a JSON legend path, got {type(labels).__name__}")
    grid, arr = _read_mask_image(p)
    if not (np.issubdtype(arr.dtype, np.integer) or np.all(arr == np.round(arr))):
        raise FileFormatError(f"{p} holds non-integer values; a label map must hold integer labels")
    arr = arr.astype(np.int64, copy=False)
    ref = _reference_grid(reference)
    need_resample = _check_geometry(p, grid, ref, resample)
    role_map = {str(k): _coerce_role(v, f"roles[{k!r}]") for k, v in (roles or {}).items()}
    if not members:
        members = {}
        for value, name in table.items():
            members.setdefault(name, []).append(value)
    present = set(np.unique(arr).tolist()) - {0}
    unknown = sorted(present - set(table))
    if unknown:
        warnings.warn(f"{p}: label values {unknown[:20]} are not in the legend and were ignored", stacklevel=2)
    out: list[Structure] = []
    for name, values in members.items():
        mask = np.isin(arr, values)
        if not mask.any():
            warnings.warn(f"{p}: structure {name!r} (labels {values}) is empty and was skipped", stacklevel=2)
            continue
        role = role_map.get(name) or legend_roles.get(name) or guess_role(name)
        s = Structure(name, role, mask, grid)
        out.append(s.resampled(ref) if need_resample and ref is not None else s)
    return StructureSet(out)


def load_mask(
    path: str | os.PathLike[str],
    name: str,
    role: Role | str,
    reference: CTImage | Grid | None = None,
    *,
    resample: bool = False,
) -> Structure:
    """Read a binary mask file (non-zero = inside) as a :class:`Structure`.

    Raises :class:`~seedplan.errors.GeometryError` naming the file when its
    geometry differs from ``reference`` (unless ``resample=True``).
    """
    p = Path(path)
    grid, arr = _read_mask_image(p)
    need_resample = _check_geometry(p, grid, _reference_grid(reference), resample)
    s = Structure(name, role, arr != 0, grid)
    if s.is_empty:
        warnings.warn(f"mask {p} ({name!r}) is empty", stacklevel=2)
    ref = _reference_grid(reference)
    return s.resampled(ref) if need_resample and ref is not None else s


# ======================================================================== rasterising
def rasterize_polygons(polygons_ij: Iterable[np.ndarray], shape_yx: tuple[int, int]) -> np.ndarray:
    """Fill polygons given in continuous pixel indices with the even-odd rule.

    Parameters
    ----------
    polygons_ij : iterable of (n, 2) arrays
        Closed polygons (last point need not repeat the first) as ``(i, j)``
        = (column, row) continuous indices.  All polygons are combined with
        the even-odd rule, so a contour inside another makes a hole.
    shape_yx : (ny, nx)
        Output shape.

    Returns
    -------
    numpy.ndarray
        Boolean ``[y, x]`` mask of pixels whose centre is inside.
    """
    ny, nx = shape_yx
    x0s, y0s, x1s, y1s = [], [], [], []
    for poly in polygons_ij:
        pts = np.asarray(poly, dtype=float)
        if pts.ndim != 2 or pts.shape[0] < 3:
            continue
        nxt = np.roll(pts, -1, axis=0)
        x0s.append(pts[:, 0]), y0s.append(pts[:, 1]), x1s.append(nxt[:, 0]), y1s.append(nxt[:, 1])
    out = np.zeros((ny, nx), dtype=bool)
    if not x0s:
        return out
    x0, y0, x1, y1 = (np.concatenate(v) for v in (x0s, y0s, x1s, y1s))
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    # rows j with ylo <= j < yhi (half-open: vertices are counted once)
    jstart = np.clip(np.ceil(ylo), 0, ny).astype(np.int64)
    jstop = np.clip(np.ceil(yhi), 0, ny).astype(np.int64)
    counts = np.maximum(jstop - jstart, 0)
    total = int(counts.sum())
    if total == 0:
        return out
    edge = np.repeat(np.arange(x0.size), counts)
    offs = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    j = jstart[edge] + offs
    t = (j - y0[edge]) / (y1[edge] - y0[edge])
    x = x0[edge] + t * (x1[edge] - x0[edge])
    order = np.lexsort((x, j))
    j, x = j[order], x[order]
    # each row has an even number of crossings (rows outside [0, ny) were clipped
    # as whole rows, so parity per row is intact)
    if j.size % 2:
        raise InputError("polygon rasterisation failed: odd number of edge crossings (open polygon?)")
    ja, xa, xb = j[0::2], x[0::2], x[1::2]
    ia = np.clip(np.ceil(xa), 0, nx).astype(np.int64)
    ib = np.clip(np.ceil(xb), 0, nx).astype(np.int64)
    keep = ib > ia
    if not keep.any():
        return out
    ja, ia, ib = ja[keep], ia[keep], ib[keep]
    # only the box of the runs is filled (the rest stays outside): rows r0..r1, columns c0..c1
    r0, r1 = int(ja.min()), int(ja.max()) + 1
    c0, c1 = int(ia.min()), int(ib.max())
    diff = np.zeros((r1 - r0, c1 - c0 + 1), dtype=np.int32)
    np.add.at(diff, (ja - r0, ia - c0), 1)
    np.add.at(diff, (ja - r0, ib - c0), -1)
    out[r0:r1, c0:c1] = np.cumsum(diff[:, :-1], axis=1) % 2 == 1
    return out


_INTERPRETED_ROLES = {
    "GTV": Role.TARGET,
    "CTV": Role.TARGET,
    "PTV": Role.TARGET,
    "EXTERNAL": Role.BODY,
    "AVOIDANCE": Role.AVOIDANCE,
    "ORGAN": Role.OAR,
    "OAR": Role.OAR,
}


#: (3006,0050) ContourData: the (x, y, z) triplets of a contour, DS values.
_CONTOUR_DATA_TAG = 0x30060050


def _contour_points_mm(contour: Any) -> np.ndarray:
    """The ContourData of one ContourSequence item as an ``(n, 3)`` array of LPS mm.

    The element is read as it was stored in the file when pydicom has not converted it yet: its text is
    stripped and split as pydicom's DS conversion does and each value parsed by :class:`float`, which gives
    the very numbers of pydicom's conversion without its per-value validation and objects (most of the time
    of reading a large RTSTRUCT).  An element pydicom has already converted (a dataset built in memory) is
    read through its values.

    Parameters
    ----------
    contour : pydicom.dataset.Dataset
        An item of an ROIContourSequence's ContourSequence.

    Returns
    -------
    numpy.ndarray
        ``(n, 3)`` float64 points (x, y, z) in mm.

    Raises
    ------
    AttributeError
        The item has no ContourData.
    TypeError, ValueError
        The value is empty, holds a value that is not a number, or its number of values is not a
        multiple of 3.
    """
    elem = contour.get_item(_CONTOUR_DATA_TAG)
    if elem is None:
        raise AttributeError("no ContourData")
    value = elem.value
    if isinstance(value, (bytes, bytearray, memoryview)):  # as stored: DS values separated by "\\"
        if not len(value):
            raise TypeError("empty ContourData")  # pydicom: None
        text = bytes(value).decode("latin-1").strip().rstrip(" \x00")  # the text pydicom splits
        if not text:
            return np.zeros((0, 3))  # pydicom: one empty value, no number
        values = [float(v) for v in text.split("\\")]
    else:  # already converted (MultiValue of DSfloat; None when empty; a single value is not a contour)
        values = [float(v) for v in value]
    return np.asarray(values, dtype=float).reshape(-1, 3)


def load_rtstruct(
    path: str | os.PathLike[str],
    ct: CTImage,
    *,
    roles: Mapping[str, Role | str] | None = None,
    check_references: bool = True,
) -> StructureSet:
    """Rasterise the CLOSED_PLANAR contours of an RTSTRUCT onto the CT grid.

    Each contour is mapped into CT index space and assigned to the nearest
    slice; all contours of one ROI on one slice are filled together with the
    even-odd rule (holes work).  Oblique CTs are handled since the polygon is
    projected into the slice plane in index space.

    Parameters
    ----------
    path : path-like
        RTSTRUCT file.
    ct : CTImage
        The CT the structures are rasterised onto.
    roles : mapping name -> Role, optional
        Roles by ROI name; otherwise from RTROIInterpretedType / the name
        (a ``vertebral_body``-type name wins over ORGAN).
    check_references : bool
        Refuse an RTSTRUCT whose FrameOfReferenceUID / referenced
        SeriesInstanceUID differ from the CT's (default True).

    Raises
    ------
    FileFormatError
        Not a readable RTSTRUCT.
    GeometryError
        References a different frame of reference or series, or a contour is
        not parallel to the CT slices.
    """
    import pydicom

    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"RTSTRUCT file {p} does not exist")
    try:
        ds = pydicom.dcmread(p)
    except Exception as exc:  # noqa: BLE001
        raise FileFormatError(f"cannot read RTSTRUCT {p}: {type(exc).__name__}: {exc}") from None
    if str(getattr(ds, "Modality", "")) != "RTSTRUCT" and str(getattr(ds, "SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE:
        raise FileFormatError(
            f"{p} is not an RTSTRUCT (Modality {getattr(ds, 'Modality', '?')!r}); expected an RT Structure Set"
        )
    grid = ct.grid
    try:
        ref_fors: set[str] = set()
        ref_series: set[str] = set()
        for fr in getattr(ds, "ReferencedFrameOfReferenceSequence", []):
            if "FrameOfReferenceUID" in fr:
                ref_fors.add(str(fr.FrameOfReferenceUID))
            for st in getattr(fr, "RTReferencedStudySequence", []):
                for se in getattr(st, "RTReferencedSeriesSequence", []):
                    if "SeriesInstanceUID" in se:
                        ref_series.add(str(se.SeriesInstanceUID))
        roi_info: dict[int, tuple[str, str | None]] = {}
        for roi in getattr(ds, "StructureSetROISequence", []):
            roi_info[int(roi.ROINumber)] = (
                str(getattr(roi, "ROIName", f"ROI_{roi.ROINumber}")),
                str(roi.ReferencedFrameOfReferenceUID) if "ReferencedFrameOfReferenceUID" in roi else None,
            )
        interp: dict[int, str] = {}
        for obs in getattr(ds, "RTROIObservationsSequence", []):
            if "ReferencedROINumber" in obs:
                interp[int(obs.ReferencedROINumber)] = str(getattr(obs, "RTROIInterpretedType", "") or "").upper()
        roi_contours = list(getattr(ds, "ROIContourSequence", []))
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise FileFormatError(f"RTSTRUCT {p} is malformed: {exc}") from None

    if check_references:
        for_ct = ct.frame_of_reference_uid
        if for_ct is None or ct.series_uid is None:
            warnings.warn(
                f"the CT has no DICOM UIDs (FrameOfReference/Series), so {p.name} cannot be checked "
                "against it; make sure they belong together",
                stacklevel=2,
            )
        if for_ct is not None:
            roi_fors = {f for _, f in roi_info.values() if f}
            bad = (ref_fors | roi_fors) - {for_ct}
            if bad:
                raise GeometryError(
                    f"RTSTRUCT {p} references FrameOfReferenceUID {sorted(bad)[0]} but the CT's is {for_ct}; "
                    "it was drawn on another CT (load the matching CT series or register the structures first)"
                )
        if ct.series_uid is not None and ref_series and ct.series_uid not in ref_series:
            raise GeometryError(
                f"RTSTRUCT {p} references CT series {sorted(ref_series)[0]} but the loaded CT is series "
                f"{ct.series_uid}; load the referenced series"
            )

    role_map = {str(k): _coerce_role(v, f"roles[{k!r}]") for k, v in (roles or {}).items()}
    nz = grid.size[2]
    out: list[Structure] = []
    used: set[str] = set()
    for rc in roi_contours:
        try:
            number = int(rc.ReferencedROINumber)
        except (AttributeError, TypeError, ValueError):
            raise FileFormatError(f"RTSTRUCT {p}: an ROIContourSequence item lacks ReferencedROINumber") from None
        name = roi_info.get(number, (f"ROI_{number}", None))[0]
        per_slice: dict[int, list[np.ndarray]] = {}
        skipped = 0
        for c in getattr(rc, "ContourSequence", []):
            ctype = str(getattr(c, "ContourGeometricType", "CLOSED_PLANAR")).upper()
            if ctype != "CLOSED_PLANAR":
                skipped += 1
                continue
            try:
                pts = _contour_points_mm(c)
            except (AttributeError, TypeError, ValueError):
                raise FileFormatError(f"RTSTRUCT {p}: ROI {name!r} has a contour with invalid ContourData") from None
            if pts.shape[0] < 3:
                continue
            ijk = grid.world_to_index(pts)
            kmean = float(ijk[:, 2].mean())
            if np.ptp(ijk[:, 2]) > 0.5:
                raise GeometryError(
                    f"RTSTRUCT {p}: a contour of ROI {name!r} spans {np.ptp(ijk[:, 2]):.2f} slices; it is not "
                    "in the plane of the CT slices (oblique structure set on another CT?)"
                )
            k = int(np.floor(kmean + 0.5))
            if k < 0 or k >= nz:
                skipped += 1
                continue
            per_slice.setdefault(k, []).append(ijk[:, :2])
        if skipped:
            warnings.warn(
                f"{p.name}: ROI {name!r}: {skipped} contour(s) outside the CT or not CLOSED_PLANAR were skipped",
                stacklevel=2,
            )
        mask = np.zeros(grid.shape, dtype=bool)
        for k, polys in per_slice.items():
            mask[k] = rasterize_polygons(polys, (grid.size[1], grid.size[0]))
        if not mask.any():
            warnings.warn(f"{p.name}: ROI {name!r} has no voxel on the CT grid and was skipped", stacklevel=2)
            continue
        unique = name
        n = 2
        while unique in used:
            unique = f"{name}_{n}"
            n += 1
        used.add(unique)
        role = role_map.get(name)
        if role is None:
            guessed = guess_role(name)
            by_type = _INTERPRETED_ROLES.get(interp.get(number, ""))
            specific = (Role.VERTEBRAL_BODY, Role.PEDICLE, Role.CANAL, Role.BONE, Role.TARGET)
            role = guessed if (by_type is None or guessed in specific) else by_type
            if by_type is Role.TARGET:
                role = Role.TARGET
        out.append(Structure(unique, role, mask, grid))
    return StructureSet(out)


# ============================================================================= writers
def _combinations(structs: Sequence[Structure], shape: tuple[int, int, int]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which structures hold each voxel, as ``(combos, inverse, voxels)``.

    ``combos``: the distinct bit codes (bit ``b`` = ``structs[b]``) of the voxels of at least one structure,
    ascending; ``voxels``: those voxels' flat indices, ascending; ``inverse``: each one's index in ``combos``
    -- what ``np.unique(code[voxels], return_inverse=True)`` gives, without sorting millions of codes.  Each
    voxel carries a small combination id that every structure, in turn, moves on to ``id | bit`` over its
    own voxels only.
    """
    ids = np.zeros(int(np.prod(shape)), dtype=np.int32)  # 0: no structure
    codes = [0]
    index = {0: 0}
    for b, st in enumerate(structs):
        where = np.flatnonzero(st.mask.reshape(-1))
        if not where.size:
            continue
        cur = ids[where]
        present = np.flatnonzero(np.bincount(cur, minlength=len(codes)))
        moved = {}
        for i in present:
            c = codes[i] | (1 << b)
            if c not in index:
                index[c] = len(codes)
                codes.append(c)
            moved[int(i)] = index[c]
        remap = np.zeros(len(codes), dtype=np.int32)
        for i, j in moved.items():
            remap[i] = j
        ids[where] = remap[cur]
    voxels = np.flatnonzero(ids)
    order = np.argsort(np.array(codes[1:], dtype=np.uint64), kind="stable")
    rank = np.zeros(len(codes), dtype=np.int64)
    rank[order + 1] = np.arange(len(order))
    combos = np.array(codes[1:], dtype=np.uint64)[order]
    inverse = rank[ids[voxels]]
    present = np.bincount(inverse, minlength=len(combos)) > 0  # combinations a later structure took over
    if not present.all():
        keep = np.flatnonzero(present)
        shift = np.cumsum(present) - 1
        combos, inverse = combos[keep], shift[inverse]
    return combos, inverse, voxels


def write_label_map(
    structures: StructureSet | Iterable[Structure],
    path_nii_gz: str | os.PathLike[str],
    *,
    legend_path: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path]:
    """Write structures as one integer label image plus a JSON legend.

    Overlapping structures (a target inside a vertebral body inside the body
    outline) are stored exactly: every voxel gets the label of its smallest
    structure; where a combination of structures cannot be told apart that
    way an extra label value is used.  The legend's ``"labels"`` maps each
    value to ``{"name", "role"}`` (name of the smallest structure present)
    and ``"structures"`` lists, for each structure, the label values that
    make it up.  :func:`load_label_map` with the legend restores every
    structure voxel for voxel.

    Parameters
    ----------
    structures : StructureSet or iterable of Structure
        Structures sharing one grid (at most 63).
    path_nii_gz : path-like
        Label image (``.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha``).
    legend_path : path-like, optional
        Legend file; defaults to the image path with ``.json`` instead.

    Returns
    -------
    (image_path, legend_path)
    """
    import SimpleITK as sitk

    structs = list(structures.values()) if isinstance(structures, StructureSet) else list(structures)
    if not structs:
        raise InputError("write_label_map: no structures to write")
    if len(structs) > 63:
        raise InputError(f"write_label_map: at most 63 structures, got {len(structs)}")
    grid = structs[0].grid
    for s in structs[1:]:
        if not s.grid.same_geometry(grid):
            raise GeometryError(f"write_label_map: structure {s.name!r} is on another grid than {structs[0].name!r}")
    img_path = Path(path_nii_gz)
    if legend_path is None:
        name = img_path.name
        for suf in (".nii.gz", ".nii", ".nrrd", ".mha"):
            if name.lower().endswith(suf):
                name = name[: -len(suf)]
                break
        legend = img_path.with_name(name + ".json")
    else:
        legend = Path(legend_path)
    volumes = np.array([s.n_voxels for s in structs])
    combos, inverse, nz_idx = _combinations(structs, grid.shape)
    # label value for each combination: the index (1-based) of its smallest
    # structure for that structure's most common combination, extra values after.
    counts = np.bincount(inverse, minlength=combos.size)
    smallest = []
    for c in combos:
        members = [b for b in range(len(structs)) if int(c) >> b & 1]
        smallest.append(min(members, key=lambda b: (volumes[b], b)))
    value_of = np.zeros(combos.size, dtype=np.int64)
    taken: set[int] = set()
    for ci in np.argsort(-counts, kind="stable"):
        v = smallest[ci] + 1
        if v not in taken:
            value_of[ci] = v
            taken.add(v)
    extra = len(structs) + 1
    for ci in range(combos.size):
        if value_of[ci] == 0:
            value_of[ci] = extra
            extra += 1
    dtype = np.uint8 if extra <= 255 else np.uint16
    lab = np.zeros(int(np.prod(grid.shape)), dtype=dtype)
    lab[nz_idx] = value_of[inverse].astype(dtype)
    lab = lab.reshape(grid.shape)

    labels_json: dict[str, Any] = {}
    for ci in np.argsort(value_of):
        s = structs[smallest[ci]]
        labels_json[str(int(value_of[ci]))] = {"name": s.name, "role": s.role.value}
    for b, s in enumerate(structs):  # structures with no voxel of their own still get listed
        labels_json.setdefault(str(b + 1), {"name": s.name, "role": s.role.value})
    structures_json = {}
    for b, s in enumerate(structs):
        vals = sorted(int(value_of[ci]) for ci, c in enumerate(combos) if int(c) >> b & 1)
        structures_json[s.name] = {"role": s.role.value, "labels": vals, "volume_cm3": round(s.volume_cm3, 4)}
    doc = {
        "format": "seedplan-labelmap/1",
        "image": img_path.name,
        "labels": dict(sorted(labels_json.items(), key=lambda kv: int(kv[0]))),
        "structures": structures_json,
    }
    with atomic_path(img_path) as tmp:
        try:
            sitk.WriteImage(grid.to_sitk(lab), str(tmp), useCompression=True)
        except RuntimeError as exc:
            raise FileFormatError(f"cannot write label map {img_path}: {str(exc).strip().splitlines()[-1]}") from None
    write_text_atomic(legend, json.dumps(doc, indent=2) + "\n")
    return img_path, legend
