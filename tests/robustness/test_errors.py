"""The error model: its defaults are Ji 2021's figures, every parameter is settable and validated, and the
scenarios it draws have the standard deviations it says."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from seedplan.errors import InputError
from seedplan.plan import Needle, Plan, PlannedSeed, Prescription
from seedplan.robustness import (
    CITATIONS,
    ErrorModel,
    RobustnessOptions,
    draw_scenario,
    per_axis_sd,
    plan_geometry,
    scenario_rng,
    tip_rms_mm,
)


def test_defaults_are_ji_2021_as_per_axis_normals():
    e = ErrorModel()
    # second moment of the magnitude: mean^2 + sd^2 = k s^2 (Ji et al., J Radiat Res 2021;62:910-917)
    assert e.lateral_sd_mm == pytest.approx(math.sqrt((3.4**2 + 1.7**2) / 2))
    assert e.angle_sd_deg == pytest.approx(math.sqrt((2.8**2 + 1.7**2) / 2))
    assert e.depth_sd_mm == pytest.approx(math.sqrt(52.0**2 + 48.0**2) / 10.0)
    assert round(e.lateral_sd_mm, 2) == 2.69 and round(e.angle_sd_deg, 2) == 2.32 and round(e.depth_sd_mm, 2) == 7.08
    assert e.seed_jitter_sd_mm == 0.0 and e.seed_loss_probability == 0.0
    assert "Ji" in CITATIONS["lateral_sd_mm"] and "16515813" in CITATIONS["seed_jitter_sd_mm"]
    # the tip is not a parameter: lateral + angle x depth; for a 60 mm track it matches Ji's tip figure
    ji_tip_rms = math.hypot(4.4, 2.9)
    assert tip_rms_mm(e, 60.0) == pytest.approx(ji_tip_rms, rel=0.05)


def test_per_axis_sd_matches_the_second_moment_of_a_normal():
    rng = np.random.default_rng(3)
    s = per_axis_sd(3.4, 1.7, 2)
    r = np.linalg.norm(rng.normal(0.0, s, (400_000, 2)), axis=1)
    assert np.mean(r**2) == pytest.approx(3.4**2 + 1.7**2, rel=0.01)
    with pytest.raises(InputError, match="sd"):
        per_axis_sd(3.4, -1.0, 2)


def test_round_trip_and_validation():
    e = ErrorModel(lateral_sd_mm=1.5, angle_sd_deg=0.5, depth_sd_mm=2.0, seed_jitter_sd_mm=1.0,
                   seed_loss_probability=0.05)
    assert ErrorModel.from_dict(json.loads(json.dumps(e.to_dict()))) == e
    opts = RobustnessOptions(errors=e, scenarios=250, seed=7)
    assert RobustnessOptions.from_dict(json.loads(json.dumps(opts.to_dict()))) == opts
    assert RobustnessOptions.from_dict({"seed": 3}) == RobustnessOptions(seed=3)   # missing keys: defaults
    assert ErrorModel.from_dict({"depth_sd_mm": 1.0}).lateral_sd_mm == ErrorModel().lateral_sd_mm
    assert ErrorModel.none().is_zero and not ErrorModel().is_zero
    assert ErrorModel().scaled(2.0).depth_sd_mm == pytest.approx(2 * ErrorModel().depth_sd_mm)
    with pytest.raises(InputError, match="lateral_sd_mm must be >= 0"):
        ErrorModel(lateral_sd_mm=-1.0)
    with pytest.raises(InputError, match="seed_loss_probability"):
        ErrorModel(seed_loss_probability=1.0)
    with pytest.raises(InputError, match="angle_sd_deg"):
        ErrorModel(angle_sd_deg=45.0)
    with pytest.raises(InputError, match="unknown key.*'tip_sd_mm'.*valid keys"):
        ErrorModel.from_dict({"tip_sd_mm": 1.0})
    with pytest.raises(InputError, match=r"robustness\.errors: .*depth_sd_mm"):
        RobustnessOptions.from_dict({"errors": {"depth_sd_mm": -2}})
    with pytest.raises(InputError, match="scenarios must be >= 1"):
        RobustnessOptions(scenarios=0)
    with pytest.raises(InputError, match="seed must be >= 0"):
        RobustnessOptions(seed=-1)


def _line_plan(depth_mm: float = 80.0, n_seeds: int = 4) -> Plan:
    """One needle along -y from (0, 100, 0) to (0, 100 - depth, 0), seeds 10 mm apart from the tip back."""
    entry = np.array([0.0, 100.0, 0.0])
    d = np.array([0.0, -1.0, 0.0])
    tip = entry + depth_mm * d
    seeds = [PlannedSeed(tuple(tip - 10.0 * i * d), tuple(d), 1, 10.0 * i, 0.5, 0.635) for i in range(n_seeds)]
    return Plan(case={}, prescription=Prescription(), seed_model="6711", formalism="2D",
                needles=(Needle(tuple(entry), tuple(tip)),), seeds=tuple(seeds), calibration_date="2026-01-01",
                implant_date="2026-01-01")


def test_scenarios_have_the_model_spread_and_move_needles_rigidly():
    geo = plan_geometry(_line_plan(depth_mm=80.0))
    e = ErrorModel(lateral_sd_mm=2.0, angle_sd_deg=3.0, depth_sd_mm=5.0)
    tip = geo.positions_mm[0]
    moves = np.array([draw_scenario(geo, e, 11, k).positions_mm for k in range(1, 6001)])  # (K, 4, 3)
    # rigid: the seeds keep their spacing and stay on one straight track
    gaps = np.linalg.norm(np.diff(moves, axis=1), axis=2)
    assert np.allclose(gaps, 10.0, atol=1e-9)
    track = moves[:, 1] - moves[:, 0]
    assert np.allclose(np.cross(track, moves[:, 3] - moves[:, 0]), 0.0, atol=1e-9)
    # along the planned track (y) the tip moves by the depth error (cos of a few degrees ~ 1)
    assert np.std(moves[:, 0, 1] - tip[1]) == pytest.approx(5.0, rel=0.05)
    # across it, lateral + angle x depth: per axis sqrt(2^2 + (80 mm x 3 deg)^2), the RMS of tip_rms_mm
    lateral = np.stack([moves[:, 0, 0] - tip[0], moves[:, 0, 2] - tip[2]], axis=1)
    expected = math.hypot(2.0, 80.0 * math.radians(3.0))
    assert np.std(lateral, axis=0) == pytest.approx([expected, expected], rel=0.05)
    assert math.sqrt(np.mean(np.sum(lateral**2, axis=1))) == pytest.approx(tip_rms_mm(e, 80.0), rel=0.05)
    # the track's angle to the plan has the angle SD per axis
    direction = track / np.linalg.norm(track, axis=1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip(direction[:, 1], -1, 1)))  # seed 0 -> 1 points back to the entry (+y)
    assert math.sqrt(np.mean(angle**2) / 2) == pytest.approx(3.0, rel=0.05)


def test_jitter_and_loss():
    geo = plan_geometry(_line_plan(n_seeds=4))
    e = ErrorModel(0.0, 0.0, 0.0, seed_jitter_sd_mm=1.5, seed_loss_probability=0.2)
    draws = [draw_scenario(geo, e, 5, k) for k in range(1, 4001)]
    shift_y = np.array([d.positions_mm[:, 1] - geo.positions_mm[:, 1] for d in draws])
    assert np.std(shift_y) == pytest.approx(1.5, rel=0.05)                  # only along the track
    assert np.all(np.array([d.positions_mm[:, [0, 2]] for d in draws]) == geo.positions_mm[:, [0, 2]])
    assert np.mean([d.lost.mean() for d in draws]) == pytest.approx(0.2, abs=0.01)


def test_scenario_zero_and_zero_errors_leave_the_plan_exactly():
    geo = plan_geometry(_line_plan())
    s0 = draw_scenario(geo, ErrorModel(), 1, 0)
    assert np.array_equal(s0.positions_mm, geo.positions_mm) and not s0.lost.any()
    for k in (1, 2, 3):
        s = draw_scenario(geo, ErrorModel.none(), 1, k)
        assert np.array_equal(s.positions_mm, geo.positions_mm) and np.array_equal(s.axes, geo.axes)


def test_scenario_k_has_its_own_stream_whatever_the_number_of_scenarios():
    for n in (4, 50):
        children = np.random.SeedSequence(123).spawn(n)
        for k in (0, 3):
            a = np.random.default_rng(children[k]).standard_normal(8)
            assert np.array_equal(a, scenario_rng(123, k).standard_normal(8))
    geo = plan_geometry(_line_plan())
    assert np.array_equal(draw_scenario(geo, ErrorModel(), 9, 3).positions_mm,
                          draw_scenario(geo, ErrorModel(), 9, 3).positions_mm)
    assert not np.array_equal(draw_scenario(geo, ErrorModel(), 9, 3).positions_mm,
                              draw_scenario(geo, ErrorModel(), 10, 3).positions_mm)
