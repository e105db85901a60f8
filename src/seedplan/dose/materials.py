"""Bone-cement materials and their 125I attenuation (``clinical_planning.md`` section 6).

Spectrum-weighted linear attenuation coefficients for the 125I spectrum and
mu_en/rho ratios to water at 28.4 keV, computed with xraylib from NIST
compositions [C]; the densities of radiopacified cements are assumptions.
Used by :mod:`seedplan.dose.heterogeneity` and by the cement planning in
:mod:`seedplan.planning.cement`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from ..errors import InputError

__all__ = [
    "CementMaterial",
    "PMMA",
    "PMMA_BASO4_10",
    "PMMA_BASO4_30",
    "PMMA_ZRO2_15",
    "DEFAULT_CEMENT",
    "CEMENT_MATERIALS",
    "cement_material",
]


@dataclass(frozen=True)
class CementMaterial:
    """A bone cement and its 125I attenuation (clinical_planning.md section 6).

    Parameters
    ----------
    name : str
    radiopacifier : {"none", "BaSO4", "ZrO2"}
    fraction_wt : float
        Radiopacifier mass fraction, 0-1.
    density_g_cm3 : float
        Density (for loaded cements an assumption, section 6).
    mu_cm : float
        Spectrum-weighted linear attenuation coefficient for 125I (cm^-1).
    muen_ratio_water : float
        (mu_en/rho)_cement / (mu_en/rho)_water at 28.4 keV (dose-to-medium factor).
    """

    name: str
    radiopacifier: str
    fraction_wt: float
    density_g_cm3: float
    mu_cm: float
    muen_ratio_water: float = 1.0

    def __post_init__(self) -> None:
        if self.radiopacifier not in ("none", "BaSO4", "ZrO2"):
            raise InputError(
                f"CementMaterial {self.name!r}: radiopacifier must be 'none', 'BaSO4' or 'ZrO2', got {self.radiopacifier!r}"
            )
        for k in ("fraction_wt", "density_g_cm3", "mu_cm", "muen_ratio_water"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"CementMaterial {self.name!r}: {k} must be a finite number >= 0, got {v!r}")
        if self.fraction_wt > 1:
            raise InputError(f"CementMaterial {self.name!r}: fraction_wt is a mass fraction in [0, 1], got {self.fraction_wt}")
        if self.density_g_cm3 <= 0:
            raise InputError(f"CementMaterial {self.name!r}: density_g_cm3 must be > 0")


#: Pure PMMA: nearly water-equivalent for 125I (section 6 row "pure PMMA", T(5 mm) 1.01).
PMMA = CementMaterial("PMMA", "none", 0.0, 1.19, 0.388, 0.61)
#: PMMA + 10 wt% BaSO4 (section 6; density ~1.25 assumed), T(5 mm) 0.65.
PMMA_BASO4_10 = CementMaterial("PMMA + 10 wt% BaSO4", "BaSO4", 0.10, 1.25, 1.28, 4.1)
#: PMMA + 30 wt% BaSO4 (section 6; density ~1.45 assumed), T(5 mm) 0.21.  The engine default
#: (typical vertebroplasty cements carry ~30 wt% radiopacifier [R]); the actual product
#: composition must be confirmed and entered - the default is a stand-in, not a fact.
PMMA_BASO4_30 = CementMaterial("PMMA + 30 wt% BaSO4", "BaSO4", 0.30, 1.45, 3.50, 11.1)
#: PMMA + 15 wt% ZrO2 (section 6; density ~1.30 assumed; e.g. OSTEOPAL V type), T(5 mm) 0.12.
PMMA_ZRO2_15 = CementMaterial("PMMA + 15 wt% ZrO2", "ZrO2", 0.15, 1.30, 4.59, 11.5)
#: Default cement (see the warning on :data:`PMMA_BASO4_30`).
DEFAULT_CEMENT = PMMA_BASO4_30
#: The presets by short key (the names case files and ``PlanningOptions.cement_material`` use).
CEMENT_MATERIALS: Mapping[str, CementMaterial] = MappingProxyType({
    "pmma": PMMA,
    "pmma-baso4-10": PMMA_BASO4_10,
    "pmma-baso4-30": PMMA_BASO4_30,
    "pmma-zro2-15": PMMA_ZRO2_15,
})


def cement_material(material: "str | CementMaterial") -> CementMaterial:
    """A :class:`CementMaterial` from a preset key (``"pmma-baso4-30"``...), its name, or itself."""
    if isinstance(material, CementMaterial):
        return material
    if isinstance(material, str):
        key = material.strip().lower()
        if key in CEMENT_MATERIALS:
            return CEMENT_MATERIALS[key]
        for m in CEMENT_MATERIALS.values():
            if m.name.lower() == key:
                return m
    raise InputError(
        f"cement material {material!r} is unknown; use one of {sorted(CEMENT_MATERIALS)} or a CementMaterial"
    )
