"""The planned cement as the plan stores it: a result (the filled voxels and their figures), not a recipe.

:func:`seedplan.planning.plan_cement` simulates the fill; the plan keeps its
outcome as a :class:`PlanCement`.  Reading a plan never simulates again, so an
old plan's cement, its corrected dose, its RTSTRUCT and its 3D view stay what
they were when it was planned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from ..dose.materials import CementMaterial
from ..errors import FileFormatError, GeometryError, InputError
from ..geometry import Grid
from ..imaging.structures import Role, Structure
from ._masks import decode_mask, encode_mask

__all__ = ["PlanCement"]

#: Joins the vertebral bodies' names of a multi-level cement (``"vertebral_body_L5+vertebral_body_S1"``).
LEVEL_SEPARATOR = "+"

#: Keys of :attr:`PlanCement.metrics` (the ``metrics.json`` ``"cement"`` block).
METRIC_KEYS = ("volume_mL", "fill_pct", "max_cross_section_ratio", "endplate_contact", "leak_flags",
               "recommended_mL", "volume_source", "vertebral_body", "material", "max_slice_ratio")


@dataclass(frozen=True, eq=False)
class PlanCement:
    """The planned vertebroplasty cement of one vertebral body.

    Attributes
    ----------
    vertebral_body : str
        Name of the treated vertebral-body structure.
    material : CementMaterial
    mask : bool array ``[z, y, x]``
        The simulated cement on ``grid`` (the planning CT's grid).
    grid : Grid
    metrics : mapping
        The ``metrics.json`` ``"cement"`` block (volume, fill %, cross-section ratio,
        endplate contact, leak flags, recommendation...).
    warnings : tuple of str
        Leak-risk and reachability warnings of the simulation.
    inputs : mapping
        What made it, for the record: needle tips, planned volume, level, lesion
        type, volume model and its reasoning.
    """

    vertebral_body: str
    material: CementMaterial
    mask: np.ndarray
    grid: Grid
    metrics: Mapping[str, Any]
    warnings: tuple[str, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = np.asarray(self.mask, dtype=bool)
        if m.shape != self.grid.shape:
            raise GeometryError(f"cement mask shape {m.shape} does not match its grid {self.grid.shape}")
        m = m.copy()
        m.setflags(write=False)
        object.__setattr__(self, "mask", m)
        missing = [k for k in METRIC_KEYS if k not in self.metrics]
        if missing:
            raise InputError(f"cement metrics miss {missing}")
        object.__setattr__(self, "metrics", dict(self.metrics))
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))
        object.__setattr__(self, "inputs", dict(self.inputs))

    @property
    def radiopaque(self) -> bool:
        """True for a BaSO4 or ZrO2 loaded cement (seeds must stay out of it)."""
        return self.material.radiopacifier != "none"

    @property
    def volume_mL(self) -> float:
        return float(self.metrics["volume_mL"])

    def structure(self, name: str = "cement") -> Structure:
        """The cement as a structure on its grid; role ``avoidance`` (seeds and needles keep out)."""
        return Structure(name, Role.AVOIDANCE, self.mask, self.grid,
                         derived=f"simulated {self.volume_mL:.1f} mL {self.material.name} fill")

    def mask_on(self, grid: Grid) -> np.ndarray:
        """The mask on ``grid`` (resampled when the geometry differs)."""
        return self.structure().mask_on(grid)

    @property
    def vertebral_bodies(self) -> tuple[str, ...]:
        """The treated vertebral bodies' structure names (several for a multi-level plan)."""
        return tuple(x for x in self.vertebral_body.split(LEVEL_SEPARATOR) if x)

    @classmethod
    def combine(cls, parts: "list[PlanCement] | tuple[PlanCement, ...]") -> "PlanCement":
        """The cement of several vertebral bodies planned as one implant (one per level).

        The mask is the union; the volumes add up; the cross-section ratios, the slice ratio and each
        leak flag are the worst level's; every level's own block is kept under ``metrics["levels"]``
        (keyed by vertebral body) and its inputs under ``inputs["levels"]``.
        """
        parts = list(parts)
        if not parts:
            raise InputError("PlanCement.combine needs at least one cement")
        if len(parts) == 1:
            return parts[0]
        grid, material = parts[0].grid, parts[0].material
        for q in parts[1:]:
            if not q.grid.same_geometry(grid):
                raise GeometryError("the cements of the levels are on different grids; plan them on the CT grid")
            if q.material != material:
                raise InputError(f"one cement material per plan: {material.name!r} and {q.material.name!r}")
        mask = np.logical_or.reduce([q.mask for q in parts])
        m = [q.metrics for q in parts]
        flags: dict[str, Any] = {}
        for block in m:
            for k, val in (block.get("leak_flags") or {}).items():
                if val is not None:
                    flags[k] = round(float(val) + float(flags.get(k) or 0.0), 3)
                else:
                    flags.setdefault(k, None)
        contacts = {str(b["endplate_contact"]) for b in m} - {"none"}
        names = LEVEL_SEPARATOR.join(q.vertebral_body for q in parts)
        metrics = {
            "volume_mL": round(sum(float(b["volume_mL"]) for b in m), 3),
            "fill_pct": round(float(np.mean([float(b["fill_pct"]) for b in m])), 2),
            "max_cross_section_ratio": max(float(b["max_cross_section_ratio"]) for b in m),
            "endplate_contact": "none" if not contacts else ",".join(sorted(contacts)),
            "leak_flags": flags,
            "recommended_mL": round(sum(float(b["recommended_mL"]) for b in m), 3),
            "volume_source": ", ".join(dict.fromkeys(str(b["volume_source"]) for b in m)),
            "vertebral_body": names,
            "material": material.name,
            "max_slice_ratio": max(float(b["max_slice_ratio"]) for b in m),
            "fill_pct_is": "the mean of the levels' fill percentages",
            "levels": {q.vertebral_body: dict(q.metrics) for q in parts},
        }
        warnings = tuple(f"{q.vertebral_body}: {w}" for q in parts for w in q.warnings)
        inputs = {"levels": {q.vertebral_body: dict(q.inputs) for q in parts}}
        return cls(names, material, mask, grid, metrics, warnings, inputs)

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        return {
            "vertebral_body": self.vertebral_body,
            "material": asdict(self.material),
            "metrics": dict(self.metrics),
            "warnings": list(self.warnings),
            "inputs": dict(self.inputs),
            "mask": encode_mask(self.mask, self.grid),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "plan cement") -> "PlanCement":
        if not isinstance(data, Mapping):
            raise FileFormatError(f"{where} must be an object")
        try:
            mat = CementMaterial(**data["material"])
            mask, grid = decode_mask(data["mask"], f"{where}.mask")
            return cls(str(data["vertebral_body"]), mat, mask, grid, dict(data["metrics"]),
                       tuple(data.get("warnings") or ()), dict(data.get("inputs") or {}))
        except KeyError as exc:
            raise FileFormatError(f"{where} is missing {exc}") from None
        except (TypeError, InputError) as exc:
            raise FileFormatError(f"{where} is malformed ({exc})") from None
