"""Plan-quality indices from DVHs (definitions: ``clinical_planning.md`` section 2).

Notation: V_T target volume, PD prescription dose, V_T,ref target volume with
D >= PD, V_ref the TOTAL volume (any tissue, target included) with D >= PD,
V_T,1.5ref / V_T,2ref target volumes with D >= 1.5 / 2 PD.

* CI  = (V_T,ref / V_T) * (V_T,ref / V_ref)  (Paddick / van't Riet form; 1 ideal)
* EI  = (V_ref - V_T,ref) / V_T              (external volume index; 0 ideal)
* HI  = (V_T,ref - V_T,1.5ref) / V_T,ref     (homogeneity index; higher = more homogeneous)
* ODI = V_T,2ref / V_T                       (overdose volume index)
* DHI = (V_ref - V_1.5ref) / V_ref, DNR = V_1.5ref / V_ref (only when the total
  V_1.5ref is supplied; Wu et al. Med Phys 1988;15:104, Saw et al. IJROBP 1993;26:519)

All indices are fractions, V* values are in % of the structure volume.
"""

from __future__ import annotations


from .. import _validate as v
from ..errors import InputError
from .dvh import DVH

__all__ = ["target_indices", "oar_indices", "VREF_RTOL"]

#: A supplied V_ref smaller than the target's own V_T,ref by less than this
#: relative amount (sampling noise between two samplings) is raised to V_T,ref;
#: a larger shortfall is an error.
VREF_RTOL = 0.005


def target_indices(
    target: DVH,
    prescription_Gy: float,
    v_ref_cm3: float,
    v_ref150_cm3: float | None = None,
) -> dict[str, float]:
    """Coverage, conformity and homogeneity indices of a target.

    Parameters
    ----------
    target : DVH
        Target DVH.
    prescription_Gy : float
        Prescription (reference) dose PD.
    v_ref_cm3 : float
        TOTAL volume of tissue receiving >= PD (target included), e.g. from a
        body or region DVH.  Must not be smaller than the target's own
        V_T,ref (tolerance :data:`VREF_RTOL`).
    v_ref150_cm3 : float, optional
        Total volume receiving >= 1.5 PD; adds ``DHI`` and ``DNR``.

    Returns
    -------
    dict
        ``volume_cm3, D90_Gy, D100_Gy, V90_pct, V100_pct, V150_pct, V200_pct,
        CI, EI, HI, ODI, V_ref_cm3, VT_ref_cm3`` (+ ``V_ref150_cm3, DHI, DNR``).
    """
    if not isinstance(target, DVH):
        raise InputError(f"target must be a DVH, got {type(target).__name__}")
    pd = v.number(prescription_Gy, "prescription_Gy", lo=0.0, lo_open=True)
    v_ref = v.number(v_ref_cm3, "v_ref_cm3", lo=0.0)
    vt = target.volume_cm3
    vt_ref = target.V_cc(pd)
    if v_ref < vt_ref:
        if v_ref < vt_ref * (1.0 - VREF_RTOL):
            raise InputError(
                f"v_ref_cm3 = {v_ref:.4g} cm^3 is smaller than the volume of target {target.name!r} "
                f"receiving the prescription ({vt_ref:.4g} cm^3); v_ref_cm3 must be the TOTAL tissue "
                "volume receiving >= PD, target included"
            )
        v_ref = vt_ref
    vt_150 = target.V_cc(1.5 * pd)
    vt_200 = target.V_cc(2.0 * pd)
    out = {
        "volume_cm3": vt,
        "D90_Gy": target.D(90.0),
        "D100_Gy": target.D(100.0),
        "V90_pct": target.V(0.9 * pd),
        "V100_pct": 100.0 * vt_ref / vt,
        "V150_pct": 100.0 * vt_150 / vt,
        "V200_pct": 100.0 * vt_200 / vt,
        "CI": (vt_ref / vt) * (vt_ref / v_ref) if v_ref > 0 else 0.0,
        "EI": (v_ref - vt_ref) / vt,
        "HI": (vt_ref - vt_150) / vt_ref if vt_ref > 0 else 0.0,
        "ODI": vt_200 / vt,
        "V_ref_cm3": v_ref,
        "VT_ref_cm3": vt_ref,
    }
    if v_ref150_cm3 is not None:
        v150 = v.number(v_ref150_cm3, "v_ref150_cm3", lo=0.0)
        if v150 > v_ref * (1.0 + VREF_RTOL):
            raise InputError(
                f"v_ref150_cm3 = {v150:.4g} cm^3 exceeds v_ref_cm3 = {v_ref:.4g} cm^3; "
                "the 150 % isodose volume cannot be larger than the 100 % one"
            )
        v150 = min(v150, v_ref)
        out["V_ref150_cm3"] = v150
        out["DHI"] = (v_ref - v150) / v_ref if v_ref > 0 else 0.0
        out["DNR"] = v150 / v_ref if v_ref > 0 else 0.0
    return out


def oar_indices(oar: DVH) -> dict[str, float]:
    """Near-maximum and mean doses of an organ at risk.

    Returns
    -------
    dict
        ``volume_cm3, Dmax_Gy, D0.1cc_Gy, D1cc_Gy, D2cc_Gy, Dmean_Gy``.  For a
        structure smaller than v cm^3, ``Dvcc`` is its minimum dose (see
        :meth:`DVH.D_cc`); compare with ``volume_cm3``.
    """
    if not isinstance(oar, DVH):
        raise InputError(f"oar must be a DVH, got {type(oar).__name__}")
    return {
        "volume_cm3": oar.volume_cm3,
        "Dmax_Gy": oar.max_Gy,
        "D0.1cc_Gy": oar.D_cc(0.1),
        "D1cc_Gy": oar.D_cc(1.0),
        "D2cc_Gy": oar.D_cc(2.0),
        "Dmean_Gy": oar.mean_Gy,
    }
