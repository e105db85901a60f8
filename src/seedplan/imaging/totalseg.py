"""Import TotalSegmentator v2 "total" segmentations (without TotalSegmentator).

TotalSegmentator (Wasserthal J. et al., "TotalSegmentator: robust segmentation of 104
anatomic structures in CT images", Radiology: Artificial Intelligence 2023;5(5):e230024;
https://github.com/wasserth/TotalSegmentator, Apache-2.0) writes either one multi-label
image (``--ml``) or a folder with one binary ``<class>.nii.gz`` per class.  The class
numbers and names of its v2 task ``total`` (117 classes, ``class_map["total"]`` in
``totalsegmentator/map_to_binary.py``) are shipped as package data
(``data/totalsegmentator_total_v2.json``, with provenance) together with the seedplan name
and planning role of each class:

* vertebrae (``vertebrae_L1`` -> ``vertebra_L1``), sacrum, ribs and other bones: role
  ``bone`` (for display and for :func:`seedplan.imaging.anatomy.vertebra_parts`, which
  splits a whole vertebra into body, pedicles, posterior elements and canal);
* ``spinal_cord``: role ``canal``;
* organs, vessels (aorta, inferior vena cava, iliac arteries and veins, portal/splenic
  vein...) and the bowel: role ``oar``;
* lung lobes and trachea: role ``avoidance`` (no needle: pneumothorax);
* muscles (gluteal, autochthonous back muscles, iliopsoas): not imported (role null),
  because needles pass through them; pass ``roles={"iliopsoas_left": "avoidance"}`` to
  import one anyway.

Why the bowel is an organ at risk: small bowel, duodenum and colon are both a structure no
needle should enter (perforation, peritonitis) and one of the most radiosensitive organs
near a lumbar vertebral body, whose dose must therefore be reported (``oar`` = no needle
within its margin *and* dose evaluated).  ``avoidance`` would keep the needles out but
drop the dose report.  Gas inside the bowel is in addition found by
:func:`seedplan.imaging.anatomy.air_regions`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, GeometryError, InputError
from ..geometry import Grid
from .ct import CTImage
from .structures import Role, Structure, StructureSet, _coerce_role, _describe, _read_mask_image

__all__ = ["TotalSegClass", "totalseg_classes", "load_totalsegmentator"]

_LOG = logging.getLogger("seedplan")
_TABLE_FILE = "totalsegmentator_total_v2.json"
_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass(frozen=True)
class TotalSegClass:
    """One TotalSegmentator v2 "total" class.

    Attributes
    ----------
    label : int
        Value in the multi-label image.
    totalsegmentator : str
        TotalSegmentator's class name (also the per-class file name without ``.nii.gz``).
    name : str
        seedplan structure name.
    role : Role or None
        Planning role; None: not imported unless a role is given.
    """

    label: int
    totalsegmentator: str
    name: str
    role: Role | None


@functools.lru_cache(maxsize=1)
def _table() -> tuple[TotalSegClass, ...]:
    try:
        text = resources.files("seedplan.imaging").joinpath("data", _TABLE_FILE).read_text(encoding="utf-8")
        doc = json.loads(text)
        out = tuple(
            TotalSegClass(int(c["label"]), str(c["totalsegmentator"]), str(c["name"]),
                          None if c["role"] is None else Role(c["role"]))
            for c in doc["classes"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FileFormatError(f"the shipped TotalSegmentator class table {_TABLE_FILE} is unreadable: {exc}") from None
    return out


def totalseg_classes() -> tuple[TotalSegClass, ...]:
    """The shipped TotalSegmentator v2 "total" class table (117 classes, by label)."""
    return _table()


def _select(
    classes: Iterable[int | str] | None, roles: Mapping[str, Role | str] | None
) -> list[tuple[TotalSegClass, Role]]:
    """The classes to import with their roles."""
    table = _table()
    by_key: dict[Any, TotalSegClass] = {}
    for c in table:
        by_key[c.label] = c
        by_key[c.totalsegmentator.lower()] = c
        by_key[c.name.lower()] = c
    role_over: dict[int, Role] = {}
    for key, r in (roles or {}).items():
        c = by_key.get(key if isinstance(key, int) else str(key).strip().lower())
        if c is None:
            raise InputError(f"load_totalsegmentator: roles names an unknown class {key!r}; use a TotalSegmentator "
                             "'total' class name (e.g. 'iliopsoas_left') or its label value")
        role_over[c.label] = _coerce_role(r, f"load_totalsegmentator roles[{key!r}]")
    if classes is None:
        chosen = [c for c in table if c.role is not None or c.label in role_over]
        return [(c, role_over.get(c.label, c.role)) for c in chosen]  # type: ignore[misc]
    if isinstance(classes, (str, int)):
        classes = [classes]
    out: list[tuple[TotalSegClass, Role]] = []
    seen: set[int] = set()
    for key in classes:
        k = int(key) if isinstance(key, (int, np.integer)) else str(key).strip().lower()
        c = by_key.get(k)
        if c is None:
            raise InputError(
                f"load_totalsegmentator: unknown class {key!r}; valid are TotalSegmentator v2 'total' class names "
                "(e.g. 'vertebrae_L1', 'spinal_cord'), seedplan names ('vertebra_L1') or label values 1-117"
            )
        role = role_over.get(c.label, c.role)
        if role is None:
            raise InputError(
                f"load_totalsegmentator: class {c.totalsegmentator!r} has no planning role in seedplan (needles pass "
                f"through muscle); give one with roles={{{c.totalsegmentator!r}: 'avoidance'}}"
            )
        if c.label not in seen:
            seen.add(c.label)
            out.append((c, role))
    return sorted(out, key=lambda t: t[0].label)


def _ref_grid(reference: Any) -> Grid:
    if isinstance(reference, CTImage):
        return reference.grid
    if isinstance(reference, Grid):
        return reference
    raise InputError(f"load_totalsegmentator: reference must be a CTImage or a Grid, got {type(reference).__name__}")


def _onto(path: Path, grid: Grid, arr: np.ndarray, ref: Grid) -> np.ndarray:
    """The label array on ``ref``: as is when the geometry matches, else nearest neighbour.

    Raises GeometryError (naming ``path``) when no labelled voxel falls inside ``ref``.
    """
    if grid.same_geometry(ref, tol_mm=1e-2):
        return arr
    import SimpleITK as sitk

    idx = np.argwhere(arr != 0)
    inside = 0
    if idx.size:
        pts = grid.index_to_world(idx[:, ::-1].astype(float))
        inside = int(np.count_nonzero(ref.contains(pts, margin_voxels=0.5)))
    if inside == 0:
        raise GeometryError(
            f"{path}: the segmentation does not overlap the CT (segmentation {_describe(grid)}; CT {_describe(ref)}); "
            "it belongs to another scan or frame of reference"
        )
    if inside < 0.5 * idx.shape[0]:
        _LOG.warning("%s: only %.0f %% of the labelled voxels fall inside the CT", path, 100.0 * inside / idx.shape[0])
    img = grid.to_sitk(arr)
    out = sitk.Resample(img, ref.to_sitk(np.zeros(ref.shape, dtype=arr.dtype)), sitk.Transform(),
                        sitk.sitkNearestNeighbor, 0, img.GetPixelID())
    _LOG.info("%s: resampled onto the CT grid by nearest neighbour", path)
    return sitk.GetArrayFromImage(out)


def _as_labels(path: Path, arr: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(arr.dtype, np.integer) or np.all(arr == np.round(arr))):
        raise FileFormatError(f"{path} holds non-integer values; a TotalSegmentator label map holds class numbers")
    return arr.astype(np.uint8 if arr.size and arr.max() <= 255 and arr.min() >= 0 else np.int32, copy=False)


def load_totalsegmentator(
    path: str | os.PathLike[str],
    reference: CTImage | Grid,
    *,
    classes: Iterable[int | str] | None = None,
    roles: Mapping[str, Role | str] | None = None,
) -> StructureSet:
    """Read a TotalSegmentator v2 "total" segmentation as a :class:`StructureSet`.

    Parameters
    ----------
    path : path-like
        The multi-label image (NIfTI/NRRD/MHA; TotalSegmentator ``--ml``) or the output
        folder with one ``<class>.nii.gz`` per class.
    reference : CTImage or Grid
        The CT the structures go on.  A segmentation on another grid is resampled by nearest
        neighbour (it is a label map); one that does not overlap the CT is refused.
    classes : iterable of int or str, optional
        Classes to import: TotalSegmentator names (``"vertebrae_L1"``), seedplan names
        (``"vertebra_L1"``) or label values.  Default: every class with a planning role
        (see the module docstring); a class absent or empty in the segmentation is skipped.
    roles : mapping class -> Role, optional
        Override the shipped role of a class (or give one to a muscle).

    Returns
    -------
    StructureSet
        On the reference grid, in label order, named as in the shipped table
        (``vertebra_L1``, ``spinal_cord``, ``aorta``...).

    Raises
    ------
    FileFormatError
        Missing/unreadable file, non-integer labels, or a folder without any class file.
    GeometryError
        The segmentation does not overlap the CT (message names the file).
    InputError
        Unknown class names, bad reference.
    """
    p = Path(path)
    ref = _ref_grid(reference)
    wanted = _select(classes, roles)
    out: list[Structure] = []
    if p.is_dir():
        files: dict[str, Path] = {}
        for f in sorted(p.iterdir()):
            low = f.name.lower()
            for suf in _SUFFIXES:
                if low.endswith(suf):
                    files.setdefault(f.name[: -len(suf)].lower(), f)
                    break
        known = {c.totalsegmentator.lower() for c in _table()}
        if not files or not (set(files) & known):
            raise FileFormatError(
                f"{p} holds no TotalSegmentator class file (<class>.nii.gz, e.g. vertebrae_L1.nii.gz, spinal_cord.nii.gz)"
            )
        for c, role in wanted:
            f = files.get(c.totalsegmentator.lower())
            if f is None:
                continue
            grid, arr = _read_mask_image(f)
            mask = _onto(f, grid, _as_labels(f, arr), ref) != 0
            if not mask.any():
                _LOG.debug("%s: class %s is empty, skipped", f, c.totalsegmentator)
                continue
            out.append(Structure(c.name, role, mask, ref))
    else:
        grid, arr = _read_mask_image(p)
        lab = _onto(p, grid, _as_labels(p, arr), ref)
        present = set(np.unique(lab).tolist()) - {0}
        unknown = sorted(present - {c.label for c in _table()})
        if unknown:
            _LOG.warning("%s: label values %s are not TotalSegmentator v2 'total' classes; ignored", p, unknown[:20])
        for c, role in wanted:
            if c.label not in present:
                continue
            out.append(Structure(c.name, role, lab == c.label, ref))
    _LOG.info("TotalSegmentator %s: %d structures imported", p, len(out))
    return StructureSet(out)
