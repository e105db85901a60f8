"""Analytic truths: symmetry, superposition, inverse square, capsule, decay."""

import math

import numpy as np
import pytest
from scipy import integrate

import seedplan
from seedplan.dose import decay
from seedplan.dose._exact import geometry_line

rng = np.random.default_rng(7)


@pytest.mark.parametrize("formalism", ["2D", "1D", "1D-point"])
def test_symmetry_theta_mirror(formalism):
    axis = np.array([0.3, -0.5, 0.8])
    axis /= np.linalg.norm(axis)
    seed = np.array([3.0, -2.0, 5.0])
    p = rng.normal(size=(200, 3)) * 20
    along = (p @ axis)[:, None] * axis
    mirrored = p - 2 * along
    a = seedplan.dose_rate(seed + p, [seed], 0.7, axes=[axis], formalism=formalism)
    b = seedplan.dose_rate(seed + mirrored, [seed], 0.7, axes=[-axis], formalism=formalism)
    c = seedplan.dose_rate(seed + mirrored, [seed], 0.7, axes=[axis], formalism=formalism)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(a, c, rtol=1e-12)


def test_superposition_points_and_grid():
    seeds = rng.uniform(-15, 15, (6, 3))
    s = rng.uniform(0.4, 1.2, 6)
    axes = rng.normal(size=(6, 3))
    pts = rng.uniform(-40, 40, (500, 3))
    total = seedplan.dose_rate(pts, seeds, s, axes=axes)
    parts = sum(seedplan.dose_rate(pts, seeds[i : i + 1], s[i : i + 1], axes=axes[i : i + 1]) for i in range(6))
    np.testing.assert_allclose(total, parts, rtol=1e-12)
    grid = seedplan.Grid([-20, -20, -20], [2, 2, 2], [21, 21, 21])
    g_total = seedplan.dose_rate_grid(grid, seeds, s, axes=axes)
    g_parts = sum(seedplan.dose_rate_grid(grid, seeds[i : i + 1], s[i : i + 1], axes=axes[i : i + 1]) for i in range(6))
    np.testing.assert_allclose(g_total, g_parts, rtol=1e-6)
    # linear in strength
    np.testing.assert_allclose(seedplan.dose_rate(pts, seeds, 2 * s, axes=axes), 2 * total, rtol=1e-12)


def test_geometry_function_limits():
    L = 0.3
    # far from the source the line-source geometry tends to the inverse square law
    for r in (10.0, 30.0):
        for th in (0.0, 30.0, 90.0):
            t = math.radians(th)
            assert geometry_line(r * math.cos(t), r * math.sin(t), L) * r * r == pytest.approx(1.0, abs=L * L / (2 * r * r))
    # on-axis limit is continuous: 1 / (r^2 - L^2/4)
    for r in (0.5, 1.0, 3.0):
        on = geometry_line(r, 0.0, L)
        near = geometry_line(r, 1e-7, L)
        assert on == pytest.approx(1.0 / (r * r - L * L / 4), rel=1e-12)
        assert near == pytest.approx(on, rel=1e-9)
    # transverse value G_L(1 cm, 90 deg) = 2 atan(L/2) / L = 0.99260 (tg43_physics.md 1.2)
    assert geometry_line(0.0, 1.0, L) == pytest.approx(0.99260, abs=1e-5)


def test_inverse_square_far_from_seed_1d_point():
    m = seedplan.load_seed_model("6711")
    # between 4 and 5 cm g_P and phi_an are smooth; D(r) r^2 / (g_P(r) phi_an(r)) is constant = Lambda
    for r in (2.0, 4.0, 8.0):
        d = seedplan.dose_rate([[0, 10 * r, 0]], [[0, 0, 0]], 1.0, formalism="1D-point")[0]
        gp = np.exp(np.interp(r, m.gP_r_cm, np.log(m.g_P)))
        phi = np.interp(r, m.phi_r_cm, m.phi_an)
        assert d * r * r / (gp * phi) == pytest.approx(m.dose_rate_constant_cGy_h_U, rel=1e-9)


def test_2d_tends_to_1d_point_form_far_away():
    # at 9 cm the line source looks like a point: 2D transverse dose ~ Lambda g_L / (r^2 G_L(1 cm, 90 deg))
    d = seedplan.dose_rate([[90.0, 0, 0]], [[0, 0, 0]], 1.0)[0]
    assert d * 81 * 0.99260 / (0.965 * 0.109) == pytest.approx(1.0, rel=1e-4)


def test_capsule_interior_is_finite_and_continuous():
    pts = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0, 1.5], [0, 0, -2.0], [0, 0.2, 2.2], [0.39, 0, 0], [0.41, 0, 0]])
    for f in ("2D", "1D", "1D-point"):
        d = seedplan.dose_rate(pts, [[0, 0, 0]], 1.0, formalism=f)
        assert np.all(np.isfinite(d)) and np.all(d > 0)
    # the surface value is continuous: just inside equals the surface value
    inside = seedplan.dose_rate([[0.39, 0, 0]], [[0, 0, 0]], 1.0)[0]
    surface = seedplan.dose_rate([[0.40, 0, 0]], [[0, 0, 0]], 1.0)[0]
    assert inside == pytest.approx(surface, rel=1e-12)
    grid = seedplan.Grid([-2, -2, -3], [0.5, 0.5, 0.5], [9, 9, 13])
    assert np.all(np.isfinite(seedplan.dose_rate_grid(grid, [[0, 0, 0]], 1.0)))


def test_decay_integral_is_mean_life():
    t_half_h = 59.40 * 24
    lam = math.log(2) / t_half_h
    val, _ = integrate.quad(lambda t: math.exp(-lam * t), 0, math.inf)
    assert decay.mean_life_h() == pytest.approx(val, rel=1e-9)
    assert decay.mean_life_h() == pytest.approx(2056.71, abs=0.01)
    # dose up to T: D(T) = Ddot0 tau (1 - exp(-T/tau)); one half-life delivers half
    assert decay.delivered_fraction(t_half_h) == pytest.approx(0.5, rel=1e-12)
    part, _ = integrate.quad(lambda t: 5.0 * math.exp(-lam * t), 0, 1000.0)
    assert decay.dose_delivered_Gy(5.0, 1000.0) == pytest.approx(part / 100, rel=1e-9)
    assert decay.dose_delivered_Gy(5.0) == pytest.approx(5.0 * 2056.71 / 100, rel=1e-5)


def test_decay_from_calibration_date():
    s = decay.strength_at(1.0, "2026-01-01", "2026-03-01")  # 59 days
    assert s == pytest.approx(math.exp(-math.log(2) * 59 / 59.40), rel=1e-12)
    assert decay.strength_at(1.0, "2026-01-01T00:00", "2026-01-01T12:00") == pytest.approx(
        math.exp(-math.log(2) * 0.5 / 59.40)
    )


def test_total_dose_is_rate_times_tau():
    pts = rng.uniform(-30, 30, (50, 3))
    r = seedplan.dose_rate(pts, [[0, 0, 0]], 0.8)
    np.testing.assert_allclose(seedplan.total_dose(pts, [[0, 0, 0]], 0.8), r * seedplan.dose.mean_life_h() / 100, rtol=1e-6)


def test_cutoff():
    pts = np.array([[0, 0, 30.0], [0, 0, 80.0]])
    d = seedplan.dose_rate(pts, [[0, 0, 0]], 1.0, cutoff_mm=50)
    assert d[0] > 0 and d[1] == 0
    grid = seedplan.Grid([-60, 0, 0], [5, 1, 1], [25, 1, 1])
    g = seedplan.dose_rate_grid(grid, [[0, 0, 0]], 1.0, cutoff_mm=50)[0, 0]
    x = -60 + 5 * np.arange(25)
    assert np.all(g[np.abs(x) > 50] == 0) and np.all(g[np.abs(x) <= 50] > 0)
