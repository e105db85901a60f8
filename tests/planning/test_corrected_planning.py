"""Planning on the cement/bone-corrected dose (PlanningOptions(dose_model="corrected")): the seeds make up for
the radiopaque cement's shadow, the goals are checked on that dose, and the TG-43 plan is kept for comparison."""

import pytest

from seedplan.errors import InputError
from seedplan.imaging import make_spine_phantom
from seedplan.io.report import report_html
from seedplan.plan import HETEROGENEITY_LABEL, PlanningOptions
from seedplan.planning import plan_case


@pytest.fixture(scope="module")
def both():
    ph = make_spine_phantom(level="L3", lesion_diameter_mm=30.0, spacing_mm=2.0)
    tg43 = plan_case(ph.ct, ph.structures).plan
    corrected = plan_case(ph.ct, ph.structures, options=PlanningOptions(dose_model="corrected")).plan
    return tg43, corrected


def test_the_corrected_plan_covers_what_the_cement_shadows(both):
    tg43, corrected = both
    out_t = tg43.results["heterogeneity"]["target_outside_cement"]
    out_c = corrected.results["heterogeneity"]["target_outside_cement"]
    # the corrected plan gives the lesion outside the cement more of the corrected dose than the TG-43 plan does
    assert out_c["D90_Gy"] > out_t["D90_Gy"]
    assert out_c["V100_pct"] > out_t["V100_pct"]
    # and its goals are those of that dose, on the lesion outside the cement
    assert corrected.results["dose_model"]["goals_checked_on"] == HETEROGENEITY_LABEL
    goals = {g["goal"]: g for g in corrected.results["goals"]}
    d90 = goals["target outside cement D90_Gy >= 120"]
    assert d90["value"] == pytest.approx(out_c["D90_Gy"])
    assert tg43.results["dose_model"]["goals_checked_on"] == "the TG-43 dose to water"
    assert "target D90_Gy >= 120" in {g["goal"] for g in tg43.results["goals"]}


def test_the_tg43_plan_is_kept_beside_it(both):
    tg43, corrected = both
    alt = corrected.optimiser["tg43_alternative"]
    # the TG-43 plan of the same options is the plan a TG-43 run makes
    assert alt["seeds"] == tg43.n_seeds and alt["activity_mCi"] == pytest.approx(tg43.seeds[0].activity_mCi)
    assert alt["tg43"]["target D90_Gy"] == pytest.approx(tg43.results["target"]["D90_Gy"], rel=0.03)
    html = report_html(corrected)
    assert "Planned on TG-43 vs on the corrected dose" in html
    assert "tg43_alternative" not in tg43.optimiser


def test_a_tg43_plan_names_its_shortfall(both):
    tg43, _ = both
    h = tg43.results["heterogeneity"]["target"]
    assert h["D90_Gy"] < tg43.prescription.dose_Gy  # the demo's cement shadows the seeds
    assert any("dose_model='corrected'" in w for w in tg43.results["warnings"])


@pytest.mark.parametrize("kw, match", [
    (dict(dose_model="monte-carlo"), "dose_model must be one of"),
    (dict(dose_model="corrected", heterogeneity=False), "needs heterogeneity=True"),
])
def test_bad_dose_model(kw, match):
    with pytest.raises(InputError, match=match):
        PlanningOptions(**kw)
