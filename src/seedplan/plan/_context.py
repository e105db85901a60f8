"""The clinical context a plan sits in: figures from published retrospective series, set beside the plan's own.

Nothing here predicts anything for the patient: each item says which study it comes from, what the plan
knows of each factor, and, where a study's coding of a factor is unknown, which coding is assumed.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import _validate as v
from ..errors import InputError

__all__ = ["clinical_context", "patient_from_dict", "PATIENT_KEYS", "CROSS_SECTION_THRESHOLD"]

#: Max cement cross-section ratio above which one PVP series associated local progression (with age >= 60).
CROSS_SECTION_THRESHOLD = 0.43

_REFERENCE = ("the reference PVP + 125I study (lumbosacral osteoblastic metastases, 62 patients, 31 with "
              "PVP + 125I; retrospective)")
PATIENT_KEYS = ("age_y", "primary", "primary_growth", "metastatic_segments", "kps")


def patient_from_dict(data: Any, where: str = "patient") -> dict[str, Any]:
    """Validate a case file's optional ``patient`` block (every key optional)."""
    v.mapping(data, where)
    unknown = sorted(set(data) - set(PATIENT_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; valid keys: {list(PATIENT_KEYS)}")
    out: dict[str, Any] = {}
    if "age_y" in data:
        out["age_y"] = v.number(data["age_y"], f"{where}.age_y", lo=0.0, hi=120.0)
    if "primary" in data:
        out["primary"] = v.text(data["primary"], f"{where}.primary")
    if "primary_growth" in data:
        out["primary_growth"] = v.choice(data["primary_growth"], f"{where}.primary_growth",
                                         ("slow", "moderate", "rapid"))
    if "metastatic_segments" in data:
        out["metastatic_segments"] = v.integer(data["metastatic_segments"], f"{where}.metastatic_segments", lo=1)
    if "kps" in data:
        kps = v.integer(data["kps"], f"{where}.kps", lo=0, hi=100)
        if kps % 10:
            raise InputError(f"{where}.kps must be a Karnofsky score in steps of 10 (0-100), got {kps}")
        out["kps"] = kps
    return out


def _cement_items(cement: Mapping[str, Any], n_levels: int) -> dict[str, Any]:
    ratio = cement.get("max_cross_section_ratio")
    flags = cement.get("leak_flags") or {}
    return {
        "cross_section": {
            "value": ratio,
            "threshold": CROSS_SECTION_THRESHOLD,
            "above": None if ratio is None else bool(ratio > CROSS_SECTION_THRESHOLD),
            "source": (f"{_REFERENCE}: a maximum cement cross-section ratio above 43 % was associated with local "
                       "progression (age >= 60 was the other factor). Not confirmed elsewhere: Liu Z et al., Pain "
                       "Physician 2021;24:E101-E109 found more complete filling in the late-progression group."),
        },
        "leak_risk_factors": {
            "factors": {
                "CT value of the vertebral body": "see the cement simulation (HU-driven speed)",
                "cortical defect": ("tripped at {:.1f} mL".format(flags["cortical_defect"])
                                    if flags.get("cortical_defect") is not None else "not reached by the simulated fill"),
                "injected volume": f"{cement.get('volume_mL', float('nan')):.1f} mL planned",
                "cement viscosity": "not modelled: record the product and its viscosity",
                "fracture severity": "not known to the plan",
            },
            "source": ("Factors of published cement-leak nomograms (Shi X et al., Clin Interv Aging 2021, doi "
                       "10.2147/CIA.S330783, AUROC 0.64-0.75; the PUFHS score, BMC Cancer 2021, doi "
                       "10.1186/s12885-021-08503-2): context only, not a risk for this patient."),
        },
        "residual_pain_factors": {
            "treated_vertebrae": n_levels,
            "two_or_more_treated_vertebrae": n_levels >= 2,
            "endplate_contact": cement.get("endplate_contact"),
            "lesion_filled_by_cement_pct": cement.get("lesion_filled_pct"),
            "fill_pct": cement.get("fill_pct"),
            "source": (f"{_REFERENCE}: two or more treated vertebrae and a suboptimal cement distribution were "
                       "associated with residual pain; cement touching both endplates went with lower pain "
                       "scores (PubMed Central PMC7427078)."),
        },
    }


def _prognostic_index(patient: Mapping[str, Any], n_levels: int) -> dict[str, Any] | None:
    needed = ("age_y", "primary_growth", "metastatic_segments")
    if not all(k in patient for k in needed):
        missing = [k for k in needed if k not in patient]
        return {"computed": False, "missing": missing,
                "note": "give the patient's age_y, primary_growth and metastatic_segments in the case file"}
    age = 1 if patient["age_y"] >= 60 else 0
    primary = 1 if patient["primary_growth"] == "rapid" else 0
    segment = 1 if patient["metastatic_segments"] >= 2 else 0
    pi = 1.154 * age + 0.832 * primary + 0.647 * segment
    out: dict[str, Any] = {
        "computed": True,
        "PI": round(pi, 3),
        "formula": "PI = 1.154 x age + 0.832 x primary tumour + 0.647 x spinal segment",
        "coding_assumed": {"age": "1 if age >= 60 y else 0", "primary tumour": "1 if rapid growth else 0",
                           "spinal segment": "1 if >= 2 metastatic segments else 0"},
        "coding_note": ("the study codes each factor by level and its coding could not be found: this coding is an "
                        "assumption of seedplan, and the index is only comparable within that coding"),
        "codes": {"age": age, "primary": primary, "segment": segment},
        "source": f"{_REFERENCE}, Cox model (hazard ratios 3.17, 2.30, 1.91)",
        "kaplan_meier": {},
    }
    km = out["kaplan_meier"]
    if "kps" in patient:
        km["kps"] = ("1-year survival 0.656 for KPS 60-70 vs 0.733 for KPS 80-100"
                     + (f" (this patient: KPS {patient['kps']})"))
    if patient["primary_growth"] == "rapid":
        km["primary_growth"] = "median survival 12 months for rapidly growing primaries"
    segs = patient["metastatic_segments"]
    km["segments"] = ("1-year survival 0.882 with 1 metastatic segment vs 0.445 with >= 3"
                      + f" (this patient: {segs})")
    return out


def clinical_context(cement: Mapping[str, Any] | None, patient: Mapping[str, Any] | None,
                     n_levels: int = 1) -> dict[str, Any]:
    """The ``metrics.json`` ``"clinical_context"`` block.

    Parameters
    ----------
    cement : mapping, optional
        The plan's cement metrics.
    patient : mapping, optional
        The case's ``patient`` block (:func:`patient_from_dict`).
    n_levels : int
        Number of treated vertebrae.
    """
    out: dict[str, Any] = {
        "label": ("figures from published retrospective series, set beside this plan; not a prediction for this "
                  "patient"),
    }
    if cement:
        out.update(_cement_items(cement, n_levels))
    out["prognostic_index"] = _prognostic_index(patient or {}, n_levels)
    return out
