"""Needles on the intra-operative CT: each needle found where it is and matched to its planned needle, with the
deviations the CT room reports; bad input refused in one line."""

from dataclasses import replace

import numpy as np
import pytest
from verify_helpers import one_line

from seedplan.errors import InputError
from seedplan.plan import Needle
from seedplan.verification import Registration, RegistrationError
from seedplan.verification.needles import detect_needles, verify_needles


@pytest.fixture(scope="module")
def needles(intraop, v_plan, intraop_registration):
    return verify_needles(intraop.ct, v_plan, intraop_registration)


def test_every_needle_is_found_and_matched_to_its_planned_needle(needles, intraop, v_plan):
    truth = intraop.truth
    n_planned = len(v_plan.needles) + len(v_plan.pvp_needles)
    assert len(truth.needles) == n_planned == len(needles.deviations)
    assert not needles.unmatched_planned and not needles.unmatched_detected
    for dev in needles.deviations:
        true = truth.needles[dev.planned]
        assert dev.name == (true.label if dev.kind == "seed" else f"PVP {true.label}")
        assert np.linalg.norm(dev.actual.tip - true.tip) < 1.5, dev.name
        angle = np.degrees(np.arccos(np.clip(dev.actual.direction @ true.direction, -1, 1)))
        assert angle < 2.0, dev.name


def test_the_deviations_are_the_planted_errors(needles, intraop, v_plan):
    truth = intraop.truth
    planned = list(v_plan.needles) + list(v_plan.pvp_needles)
    for dev in needles.deviations:
        true, plan_n = truth.needles[dev.planned], planned[dev.planned]
        assert dev.angle_deg == pytest.approx(truth.needle_errors[dev.planned]["angle_deg"], abs=1.0)
        assert dev.tip_error_mm == pytest.approx(np.linalg.norm(true.tip - plan_n.tip), abs=1.5)
        along = (true.tip - plan_n.tip) @ plan_n.direction
        assert dev.tip_along_mm == pytest.approx(along, abs=1.5)
        assert dev.entry_error_mm is not None and dev.depth_error_mm is not None
        assert dev.depth_error_mm == pytest.approx(true.depth_mm - plan_n.depth_mm, abs=3.0)
    s = needles.summary()
    assert len(s["needles"]) == len(needles.deviations) and s["mean_tip_error_mm"] > 0


def test_the_needles_actually_placed_for_a_re_plan(needles, v_plan):
    actual = needles.actual_needles()
    assert len(actual) == len(v_plan.needles) and all(isinstance(n, Needle) for n in actual)
    assert [n.label for n in actual] == [f"N{i + 1}" for i in range(len(v_plan.needles))]
    assert all(n.kind == "seed" for n in actual)
    pvp = needles.actual_needles("pvp")
    assert len(pvp) == len(v_plan.pvp_needles) and all(n.kind == "pvp" for n in pvp)
    assert needles.deviation("N1").name == "N1"
    with pytest.raises(InputError) as exc:
        needles.deviation("N99")
    assert "N99" in one_line(exc)


def test_thin_seed_needles_and_thick_vertebroplasty_needles(needles):
    diam = {d.kind: [] for d in needles.deviations}
    for d in needles.deviations:
        diam[d.kind].append(needles.detection.needles[d.detected].diameter_mm)
    assert max(diam["seed"]) < min(diam["pvp"])  # 18G (1.2 mm) vs 11G (3 mm), both blooming


def test_a_failed_registration_is_not_used(intraop, v_plan):
    failed = Registration(np.eye(4), ok=False, quality="failed", reason="the bone of the two CTs does not line up")
    with pytest.raises(RegistrationError) as exc:
        verify_needles(intraop.ct, v_plan, failed)
    assert "failed its check" in one_line(exc)


def test_a_plan_without_needles_is_refused(intraop, v_plan):
    with pytest.raises(InputError) as exc:
        verify_needles(intraop.ct, replace(v_plan, needles=(), seeds=(), pvp_needles=()), np.eye(4))
    assert "no needles" in one_line(exc)


def test_a_ct_without_needles_is_refused(v_phantom, v_plan):
    with pytest.raises(InputError) as exc:
        verify_needles(v_phantom.ct, v_plan, np.eye(4))
    assert "no needle visible" in one_line(exc)


def test_detection_alone_finds_the_tracks(intraop):
    det = detect_needles(intraop.ct)
    assert det.n_needles == len(intraop.truth.needles)
    assert all(n.entry_at_skin for n in det.needles)
    assert all(n.rms_mm < 1.5 and n.depth_mm > 20 for n in det.needles)
