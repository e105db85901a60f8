"""The engine reproduces the TG-43U1 consensus tables node by node."""

import math

import numpy as np
import pytest

import seedplan
from seedplan.dose._exact import radial_log_interp
from seedplan.sources import load_seed_model


def geometry_line_ref(r_cm, theta_deg, L):
    """G_L from TG-43U1 Eq. 4 written with the subtended angle beta (independent of the engine)."""
    t = np.radians(theta_deg)
    z, y = r_cm * np.cos(t), r_cm * np.sin(t)
    beta = np.arctan2(y, z - L / 2) - np.arctan2(y, z + L / 2)
    return beta / (L * y)


def rate_at(model, r_cm, theta_deg, formalism="2D"):
    """Dose rate per U at (r, theta) from a seed at the origin with its axis along +z."""
    t = math.radians(theta_deg)
    p = np.array([[10 * r_cm * math.sin(t), 0.0, 10 * r_cm * math.cos(t)]])
    return seedplan.dose_rate(p, [[0, 0, 0]], [1.0], source=model, formalism=formalism)[0]


@pytest.mark.parametrize("name", ["6711", "2301"])
def test_radial_dose_function_nodes(name):
    m = load_seed_model(name)
    L = m.active_length_cm
    g0 = geometry_line_ref(1.0, 90.0, L)
    for r, g in zip(m.g_r_cm, m.g_L):
        d = rate_at(m, r, 90.0)
        recovered = d / (m.dose_rate_constant_cGy_h_U * geometry_line_ref(r, 90.0, L) / g0)
        assert recovered == pytest.approx(g, rel=1e-3), (name, r)


@pytest.mark.parametrize("name", ["6711", "2301"])
def test_anisotropy_function_nodes(name):
    m = load_seed_model(name)
    L = m.active_length_cm
    g0 = geometry_line_ref(1.0, 90.0, L)
    for i, r in enumerate(m.F_r_cm):
        g = m.g_L[list(m.g_r_cm).index(r)]
        for j, th in enumerate(m.F_theta_deg):
            if th == 0.0:
                G = 1.0 / (r * r - L * L / 4)  # on-axis limit, TG-43U1 Eq. 4
            else:
                G = geometry_line_ref(r, th, L)
            d = rate_at(m, r, th)
            F = d / (m.dose_rate_constant_cGy_h_U * G / g0 * g)
            assert F == pytest.approx(m.F[i][j], rel=1e-3), (name, r, th)


def test_reference_point_is_lambda():
    for name in ["6711", "2301", "6733", "IAI-125A"]:
        m = load_seed_model(name)
        assert rate_at(m, 1.0, 90.0) == pytest.approx(m.dose_rate_constant_cGy_h_U, rel=1e-12)
        assert rate_at(m, 1.0, 90.0, "1D") == pytest.approx(m.dose_rate_constant_cGy_h_U * m.phi_an[m.phi_r_cm.index(1.0)], rel=1e-9)


def test_phi_an_nodes_6711_1d():
    m = load_seed_model("6711")
    L = m.active_length_cm
    g0 = geometry_line_ref(1.0, 90.0, L)
    for r, phi in zip(m.phi_r_cm, m.phi_an):
        g = m.g_L[list(m.g_r_cm).index(r)]
        d = rate_at(m, r, 37.0, "1D")  # 1D: the angle does not matter
        assert d / (m.dose_rate_constant_cGy_h_U * geometry_line_ref(r, 90.0, L) / g0 * g) == pytest.approx(phi, rel=1e-3)


def test_1d_point_uses_gP_and_inverse_square():
    m = load_seed_model("2301")  # published g_P column
    for r, gp in zip(m.gP_r_cm, m.g_P):
        phi = np.interp(r, m.phi_r_cm, m.phi_an)
        d = rate_at(m, r, 90.0, "1D-point")
        assert d == pytest.approx(m.dose_rate_constant_cGy_h_U * gp * phi / r**2, rel=1e-9)


def test_tg43u1s1_worked_interpolation_examples():
    # TG-43U1S1 Sec. III.C: g(1.5) from nodes 1.000 (1 cm) and 0.800 (2 cm) is 0.894 (log-linear),
    # and g(6) from the outermost nodes 0.510 (4 cm) and 0.391 (5 cm) is 0.300 (exponential tail).
    r = np.array([1.0, 2.0])
    assert radial_log_interp(1.5, r, np.log([1.0, 0.8])) == pytest.approx(0.894, abs=5e-4)
    r = np.array([3.0, 4.0, 5.0])
    assert radial_log_interp(6.0, r, np.log([0.7, 0.510, 0.391])) == pytest.approx(0.300, abs=5e-4)
    # nearest neighbour below the table
    assert radial_log_interp(0.05, r, np.log([0.7, 0.510, 0.391])) == pytest.approx(0.7)


def test_g_tail_beyond_table_is_exponential_not_constant():
    m = load_seed_model("6711")
    # g_L(12 cm) from the 9 and 10 cm nodes: 0.0803 * (0.0803/0.109)^2
    expected = 0.0803 * (0.0803 / 0.109) ** 2
    L = m.active_length_cm
    d = rate_at(m, 12.0, 90.0)
    g = d / (m.dose_rate_constant_cGy_h_U * geometry_line_ref(12.0, 90.0, L) / geometry_line_ref(1.0, 90.0, L))
    assert g == pytest.approx(expected, rel=1e-9)


def test_F_nearest_neighbour_in_r_outside_table():
    m = load_seed_model("6711")  # F tabulated 0.5..5 cm
    L = m.active_length_cm
    for r, row in ((7.0, -1), (0.3, 0)):
        g = radial_log_interp(r, np.array(m.g_r_cm), np.log(m.g_L))
        d = rate_at(m, r, 20.0)
        F = d / (m.dose_rate_constant_cGy_h_U * geometry_line_ref(r, 20.0, L) / geometry_line_ref(1.0, 90.0, L) * g)
        assert F == pytest.approx(m.F[row][m.F_theta_deg.index(20.0)], rel=1e-9)


def test_worked_total_dose_numbers():
    # S_K = 1 U, 6711, total dose at (1 cm, 90 deg) = 0.965 * 2056.71 h = 1984.72 cGy
    # (also asserted by aprobinson/TPOR tstAmersham6711Seed.cpp: 1984.721338531).
    d = seedplan.total_dose([[10.0, 0, 0]], [[0, 0, 0]], [1.0])[0]
    assert d * 100 == pytest.approx(1984.721338531, rel=1e-9)
    # 0.5 mCi seed: S_K = 0.635 U, initial rate 0.6128 cGy/h at 1 cm, total 12.60 Gy (tg43_physics.md 1.5)
    s = seedplan.mCi_to_U(0.5)
    assert s == pytest.approx(0.635)
    assert seedplan.dose_rate([[10.0, 0, 0]], [[0, 0, 0]], s)[0] == pytest.approx(0.6128, abs=5e-5)
    assert seedplan.total_dose([[10.0, 0, 0]], [[0, 0, 0]], s)[0] == pytest.approx(12.60, abs=5e-3)
