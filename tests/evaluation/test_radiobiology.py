import numpy as np
import pytest
from scipy import integrate

from seedplan.errors import InputError
from seedplan.evaluation.radiobiology import bed_permanent_Gy, eqd2_Gy, eqd2_permanent_Gy


@pytest.mark.parametrize(
    "dose, ab, t_rep, eqd2_expected",
    [(50, 2, 1.5, 26), (90, 2, 1.5, 47), (90, 2, 4.0, 51), (120, 10, 1.5, 101)],
)
def test_worked_numbers_clinical_planning_1_3(dose, ab, t_rep, eqd2_expected):
    """clinical_planning.md 1.3: rounded to the integer quoted there."""
    bed = bed_permanent_Gy(dose, ab, repair_half_time_h=t_rep)
    assert round(eqd2_Gy(bed, ab)) == eqd2_expected
    assert eqd2_permanent_Gy(dose, ab, repair_half_time_h=t_rep) == pytest.approx(eqd2_Gy(bed, ab))


def test_tumour_bed_121_5():
    assert bed_permanent_Gy(120, 10) == pytest.approx(121.5, abs=0.05)
    assert bed_permanent_Gy(120, 10) == pytest.approx(121.51, abs=0.01)


def test_matches_lea_catcheside_integral():
    """Independent check: BED = D (1 + G D / (a/b)), G from the decaying dose-rate double integral."""
    lam = np.log(2) / (59.40 * 24)
    mu = np.log(2) / 1.5
    dose, ab = 90.0, 2.0
    r0 = dose * lam
    tmax = 40 / lam
    # inner integral in closed form, outer numerically (log-spaced quadrature)
    f = lambda t: r0 * np.exp(-lam * t) * r0 * (np.exp(-lam * t) - np.exp(-mu * t)) / (mu - lam)
    outer, _ = integrate.quad(f, 0, tmax, limit=500, points=[1 / mu, 10 / mu, 1 / lam])
    g = 2 * outer / dose**2
    assert bed_permanent_Gy(dose, ab) == pytest.approx(dose * (1 + g * dose / ab), rel=1e-6)


def test_vectorised_and_limits():
    d = np.array([0.0, 50.0, 90.0])
    b = bed_permanent_Gy(d, 2.0)
    assert b.shape == (3,) and b[0] == 0
    assert np.allclose(b, [bed_permanent_Gy(x, 2.0) for x in d])
    assert isinstance(bed_permanent_Gy(50, 2), float)
    # instantaneous repair (mu -> infinity) removes the quadratic term: BED -> D
    assert bed_permanent_Gy(10, 2, repair_half_time_h=1e-6) == pytest.approx(10, rel=1e-6)
    # higher alpha/beta -> BED closer to D
    assert bed_permanent_Gy(90, 10) < bed_permanent_Gy(90, 2)
    # broadcasting alpha/beta
    assert bed_permanent_Gy(90, np.array([2.0, 10.0])).shape == (2,)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bed_permanent_Gy(-1, 2), "dose_Gy"),
        (lambda: bed_permanent_Gy(10, 0), "alpha_beta_Gy"),
        (lambda: bed_permanent_Gy(10, 2, half_life_d=0), "half_life_d"),
        (lambda: bed_permanent_Gy(10, 2, repair_half_time_h=np.nan), "repair_half_time_h"),
        (lambda: eqd2_Gy("x", 2), "bed_Gy"),
    ],
)
def test_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()
