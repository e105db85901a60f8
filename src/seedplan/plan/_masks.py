"""Masks stored inside the plan file: bit-packed, zlib-compressed, base64 text, with their grid and a hash.

A planned cement or a structure seedplan derived from the CT is a *result*:
the plan keeps the voxels themselves, not the recipe that made them, so that
a later release with another algorithm reproduces an old plan exactly.  The
mask is cropped to its bounding box; ``sha256`` is taken over the full mask's
packed bits, so a hand-edited or truncated entry is refused.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any, Mapping

import numpy as np

from ..errors import FileFormatError
from ..geometry import Grid

__all__ = ["encode_mask", "decode_mask", "grid_to_dict", "grid_from_dict"]

ENCODING = "packbits-zlib-base64"


def grid_to_dict(grid: Grid) -> dict[str, Any]:
    return {"origin_mm": list(grid.origin_mm), "spacing_mm": list(grid.spacing_mm), "size": list(grid.size),
            "direction": list(grid.direction)}


def grid_from_dict(d: Any, where: str) -> Grid:
    try:
        return Grid(d["origin_mm"], d["spacing_mm"], d["size"], d["direction"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{where}.grid is malformed ({exc})") from None


def _digest(mask: np.ndarray) -> str:
    h = hashlib.sha256(np.asarray(mask.shape, dtype="<i8").tobytes())
    h.update(np.packbits(mask.reshape(-1)).tobytes())
    return h.hexdigest()


def encode_mask(mask: np.ndarray, grid: Grid) -> dict[str, Any]:
    """A JSON-ready record of a boolean ``[z, y, x]`` mask on ``grid``."""
    m = np.asarray(mask, dtype=bool)
    if m.shape != grid.shape:
        raise ValueError(f"mask shape {m.shape} is not the grid shape {grid.shape}")
    idx = np.argwhere(m)
    lo = idx.min(axis=0) if len(idx) else np.zeros(3, int)
    hi = idx.max(axis=0) + 1 if len(idx) else np.zeros(3, int)
    box = m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    data = base64.b64encode(zlib.compress(np.packbits(box.reshape(-1)).tobytes(), 9)).decode("ascii")
    return {"grid": grid_to_dict(grid), "encoding": ENCODING, "box_lower_zyx": [int(x) for x in lo],
            "box_upper_zyx": [int(x) for x in hi], "voxels": int(len(idx)), "sha256": _digest(m), "data": data}


def decode_mask(record: Mapping[str, Any], where: str) -> tuple[np.ndarray, Grid]:
    """Inverse of :func:`encode_mask`; ``where`` names the entry in messages (``"plan cement.mask"``)."""
    if not isinstance(record, Mapping) or record.get("encoding") != ENCODING:
        raise FileFormatError(f"{where} must be a mask record with encoding {ENCODING!r}")
    grid = grid_from_dict(record.get("grid"), where)
    try:
        lo = np.asarray(record["box_lower_zyx"], dtype=int)
        hi = np.asarray(record["box_upper_zyx"], dtype=int)
        bits = np.frombuffer(zlib.decompress(base64.b64decode(record["data"], validate=True)), dtype=np.uint8)
        shape = tuple(int(x) for x in hi - lo)
        if lo.shape != (3,) or np.any(lo < 0) or np.any(hi > np.asarray(grid.shape)) or min(shape) < 0:
            raise ValueError("bounding box outside the grid")
        box = np.unpackbits(bits, count=int(np.prod(shape))).astype(bool).reshape(shape)
    except (KeyError, TypeError, ValueError, zlib.error) as exc:
        raise FileFormatError(f"{where} is corrupt ({exc}); re-plan or restore the plan file") from None
    mask = np.zeros(grid.shape, dtype=bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = box
    if _digest(mask) != record.get("sha256"):
        raise FileFormatError(f"{where} does not match its sha256: the plan file was altered; restore it or re-plan")
    mask.setflags(write=False)
    return mask, grid
