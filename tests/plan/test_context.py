"""The clinical context beside a plan: the study's prognostic index with its assumed coding, the cement figures."""

import pytest

from seedplan.errors import InputError
from seedplan.plan._context import CROSS_SECTION_THRESHOLD, clinical_context, patient_from_dict


def test_prognostic_index_and_its_assumed_coding():
    p = patient_from_dict({"age_y": 64, "primary": "lung", "primary_growth": "rapid", "metastatic_segments": 3,
                           "kps": 70})
    pi = clinical_context(None, p)["prognostic_index"]
    assert pi["computed"] and pi["PI"] == pytest.approx(1.154 + 0.832 + 0.647)  # every factor coded 1
    assert pi["codes"] == {"age": 1, "primary": 1, "segment": 1} and "assumption" in pi["coding_note"]
    assert "0.656" in pi["kaplan_meier"]["kps"] and "12 months" in pi["kaplan_meier"]["primary_growth"]
    young = clinical_context(None, patient_from_dict({"age_y": 59, "primary_growth": "slow",
                                                      "metastatic_segments": 1}))["prognostic_index"]
    assert young["PI"] == 0.0
    partial = clinical_context(None, {"age_y": 70})["prognostic_index"]
    assert not partial["computed"] and partial["missing"] == ["primary_growth", "metastatic_segments"]


def test_cement_figures_beside_the_published_threshold():
    cement = {"max_cross_section_ratio": 0.5, "leak_flags": {"cortical_defect": 1.2}, "volume_mL": 3.0,
              "endplate_contact": "both", "fill_pct": 12.0, "lesion_filled_pct": 40.0}
    ctx = clinical_context(cement, None, n_levels=2)
    assert ctx["cross_section"]["above"] and ctx["cross_section"]["threshold"] == CROSS_SECTION_THRESHOLD
    assert "1.2 mL" in ctx["leak_risk_factors"]["factors"]["cortical defect"]
    assert ctx["residual_pain_factors"]["two_or_more_treated_vertebrae"]
    assert "not a prediction" in ctx["label"]


@pytest.mark.parametrize("bad, word", [({"kps": 75}, "steps of 10"), ({"age_y": 200}, "age_y"),
                                       ({"primary_growth": "fast"}, "primary_growth"), ({"weight": 70}, "weight"),
                                       ({"metastatic_segments": 0}, "metastatic_segments")])
def test_bad_patient_blocks(bad, word):
    with pytest.raises(InputError, match=word):
        patient_from_dict(bad)
