"""BED and EQD2 of a permanent low-dose-rate implant (linear-quadratic model).

For a permanent implant whose dose rate decays as ``R(t) = R0 exp(-lambda t)``
with mono-exponential sublethal-damage repair (rate ``mu``), the
Lea-Catcheside factor is ``G = lambda / (mu + lambda)`` and (Dale, Br J Radiol
1985;58:515; ``clinical_planning.md`` section 1.3)::

    BED  = D * (1 + R0 / ((mu + lambda) * alpha/beta)),   R0 = D * lambda
    EQD2 = BED / (1 + 2 Gy / (alpha/beta))

with ``lambda = ln 2 / T1/2`` and ``mu = ln 2 / T1/2,rep``.  No repopulation
term and no RBE are applied.

Default parameters (configurable engineering defaults, printed with results):

* 125I half-life 59.40 d (AAPM TG-43U1, Rivard et al. Med Phys 2004;31:633);
* spinal cord alpha/beta = 2 Gy, repair half-time 1.5 h
  (``clinical_planning.md`` section 1.3 [R]);
* tumour alpha/beta = 10 Gy with the same 1.5 h repair half-time (the
  combination that reproduces the section 1.3 [C] numbers, 120 Gy ->
  BED 121.5 Gy10, EQD2 101 Gy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validate as v

__all__ = [
    "I125_HALF_LIFE_D",
    "DEFAULT_REPAIR_HALF_TIME_H",
    "ALPHA_BETA_DEFAULTS_GY",
    "bed_permanent_Gy",
    "eqd2_Gy",
    "eqd2_permanent_Gy",
]

#: 125I half-life in days (TG-43U1).
I125_HALF_LIFE_D = 59.40
#: Mono-exponential repair half-time used by default (h), clinical_planning.md 1.3.
DEFAULT_REPAIR_HALF_TIME_H = 1.5
#: Default alpha/beta ratios (Gy), clinical_planning.md 1.3.
ALPHA_BETA_DEFAULTS_GY = {"tumour": 10.0, "cord": 2.0}


def _out(x: np.ndarray) -> Any:
    return float(x) if x.ndim == 0 else x


def bed_permanent_Gy(
    dose_Gy: Any,
    alpha_beta_Gy: Any,
    half_life_d: float = I125_HALF_LIFE_D,
    repair_half_time_h: float = DEFAULT_REPAIR_HALF_TIME_H,
) -> Any:
    """Biologically effective dose of a permanent implant (Dale 1985).

    Parameters
    ----------
    dose_Gy : float or array_like
        Total physical dose delivered to complete decay (>= 0).
    alpha_beta_Gy : float or array_like
        alpha/beta ratio (> 0), broadcast against ``dose_Gy``.
    half_life_d : float
        Source half-life in days (125I: 59.40).
    repair_half_time_h : float
        Sublethal-damage repair half-time in hours.

    Returns
    -------
    float or ndarray
        BED in Gy (Gy_{alpha/beta}); a float for scalar input.
    """
    d = v.array(dose_Gy, "dose_Gy", lo=0.0, unit='Gy')
    ab = v.array(alpha_beta_Gy, "alpha_beta_Gy", lo=0.0, lo_open=True)
    lam = np.log(2.0) / (float(v.array(half_life_d, "half_life_d", lo=0.0, lo_open=True)) * 24.0)  # 1/h
    mu = np.log(2.0) / float(v.array(repair_half_time_h, "repair_half_time_h", lo=0.0, lo_open=True))  # 1/h
    r0 = d * lam  # initial dose rate, Gy/h
    return _out(d * (1.0 + r0 / ((mu + lam) * ab)))


def eqd2_Gy(bed_Gy: Any, alpha_beta_Gy: Any) -> Any:
    """Equivalent dose in 2 Gy fractions: ``EQD2 = BED / (1 + 2 / (alpha/beta))``."""
    b = v.array(bed_Gy, "bed_Gy", lo=0.0, unit='Gy')
    ab = v.array(alpha_beta_Gy, "alpha_beta_Gy", lo=0.0, lo_open=True)
    return _out(b / (1.0 + 2.0 / ab))


def eqd2_permanent_Gy(
    dose_Gy: Any,
    alpha_beta_Gy: Any,
    half_life_d: float = I125_HALF_LIFE_D,
    repair_half_time_h: float = DEFAULT_REPAIR_HALF_TIME_H,
) -> Any:
    """EQD2 of a permanent-implant physical dose (``eqd2_Gy(bed_permanent_Gy(...))``)."""
    bed = bed_permanent_Gy(dose_Gy, alpha_beta_Gy, half_life_d, repair_half_time_h)
    return eqd2_Gy(bed, alpha_beta_Gy)
