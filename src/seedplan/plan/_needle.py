"""A straight needle from a skin entry point to its tip (patient LPS, mm): a value of the plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .. import _validate as v
from ..errors import InputError

__all__ = ["Needle"]


@dataclass(frozen=True)
class Needle:
    """A straight needle from a skin entry point to its tip (LPS, mm).

    Parameters
    ----------
    entry_mm, tip_mm : sequence of 3 floats
        Skin entry point and tip (deepest point) in patient LPS mm.
    kind : {"seed", "pvp"}
        Seed-implant needle or vertebroplasty needle.
    label : str
        Free text (e.g. ``"N1"``, ``"left"``).
    target : str
        The target structure the needle serves (a multi-level plan has one per level); ``""`` when the
        plan has one target.
    """

    entry_mm: tuple[float, float, float]
    tip_mm: tuple[float, float, float]
    kind: str = "seed"
    label: str = ""
    target: str = ""

    def __post_init__(self) -> None:
        e = np.array(v.vector(self.entry_mm, "needle entry_mm", max_abs=1e5))
        t = np.array(v.vector(self.tip_mm, "needle tip_mm", max_abs=1e5))
        if np.linalg.norm(t - e) < 1e-9:
            raise InputError("Needle entry_mm and tip_mm must differ")
        if self.kind not in ("seed", "pvp"):
            raise InputError(f"Needle kind must be 'seed' or 'pvp', got {self.kind!r}")
        if not isinstance(self.label, str):
            raise InputError(f"Needle label must be a string, got {self.label!r}")
        if not isinstance(self.target, str):
            raise InputError(f"Needle target must be a structure name (a string), got {self.target!r}")
        object.__setattr__(self, "entry_mm", tuple(float(x) for x in e))
        object.__setattr__(self, "tip_mm", tuple(float(x) for x in t))

    @property
    def entry(self) -> np.ndarray:
        """Entry point as an array (mm)."""
        return np.array(self.entry_mm)

    @property
    def tip(self) -> np.ndarray:
        """Tip as an array (mm)."""
        return np.array(self.tip_mm)

    @property
    def depth_mm(self) -> float:
        """Insertion depth, skin entry to tip (mm)."""
        return float(np.linalg.norm(self.tip - self.entry))

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from entry to tip."""
        d = self.tip - self.entry
        return d / np.linalg.norm(d)

    @property
    def angle_to_axial_deg(self) -> float:
        """Angle (0-90 deg) between the needle and the axial plane: the cranio-caudal tilt."""
        return float(np.degrees(np.arcsin(min(1.0, abs(self.direction[2])))))

    @property
    def angle_to_sagittal_deg(self) -> float:
        """Angle (0-90 deg) between the needle and the sagittal plane."""
        return float(np.degrees(np.arcsin(min(1.0, abs(self.direction[0])))))

    @property
    def angle_from_vertical_deg(self) -> float:
        """In-plane angle (deg) of the needle's axial projection from the posterior->anterior axis.

        0 for a needle along -y (prone, straight down); 90 for a lateral
        needle; > 90 for an anterior entry.  0 when the needle is purely
        cranio-caudal.
        """
        d = self.direction
        return float(np.degrees(np.arctan2(abs(d[0]), -d[1]))) if abs(d[0]) + abs(d[1]) > 1e-12 else 0.0

    def point_at_depth(self, depth_mm: float) -> np.ndarray:
        """Point at ``depth_mm`` from the entry along the needle (mm)."""
        if not np.isfinite(depth_mm):
            raise InputError(f"depth_mm must be finite, got {depth_mm!r}")
        return self.entry + float(depth_mm) * self.direction

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python representation (lists of floats); exact round trip with :meth:`from_dict`."""
        out = {"entry_mm": list(self.entry_mm), "tip_mm": list(self.tip_mm), "kind": self.kind, "label": self.label}
        if self.target:
            out["target"] = self.target
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Needle":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, Mapping):
            raise InputError(f"a Needle dict must be a mapping, got {type(d).__name__}")
        try:
            return cls(d["entry_mm"], d["tip_mm"], d.get("kind", "seed"), d.get("label", ""), d.get("target", ""))
        except KeyError as exc:
            raise InputError(f"Needle dict is missing key {exc.args[0]!r}") from None
