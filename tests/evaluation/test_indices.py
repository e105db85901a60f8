import pytest

from seedplan.errors import InputError
from seedplan.evaluation.dvh import DVH
from seedplan.evaluation.indices import oar_indices, target_indices

PD = 100.0


def _target():
    # 10 cm^3 target: 1 cm^3 at 250 Gy, 2 at 160, 5 at 120, 1 at 100, 1 at 60
    return DVH.from_samples([250, 160, 120, 100, 60], [1, 2, 5, 1, 1], name="PTV")


def test_target_indices_known_answers():
    t = _target()
    out = target_indices(t, PD, v_ref_cm3=12.0, v_ref150_cm3=4.0)
    vt, vt_ref, vt150, vt200 = 10.0, 9.0, 3.0, 1.0
    assert out["volume_cm3"] == vt
    assert out["V100_pct"] == pytest.approx(90.0)
    assert out["V150_pct"] == pytest.approx(30.0)
    assert out["V200_pct"] == pytest.approx(10.0)
    assert out["D90_Gy"] == 100 and out["D100_Gy"] == 60
    assert out["CI"] == pytest.approx((vt_ref / vt) * (vt_ref / 12.0))  # 0.675
    assert out["EI"] == pytest.approx((12.0 - vt_ref) / vt)  # 0.3
    assert out["HI"] == pytest.approx((vt_ref - vt150) / vt_ref)  # 0.667
    assert out["ODI"] == pytest.approx(vt200 / vt)
    assert out["DHI"] == pytest.approx((12 - 4) / 12) and out["DNR"] == pytest.approx(4 / 12)
    for key in ("D90_Gy", "D100_Gy", "V100_pct", "V150_pct", "V200_pct", "CI", "EI", "HI", "volume_cm3"):
        assert key in out


def test_perfect_plan_ci_one_ei_zero():
    t = DVH.from_samples([110.0] * 4, 0.5)
    out = target_indices(t, PD, v_ref_cm3=2.0)
    assert out["CI"] == 1.0 and out["EI"] == 0.0 and out["HI"] == 1.0 and "DHI" not in out


def test_vref_validation():
    t = _target()
    with pytest.raises(InputError, match="TOTAL"):
        target_indices(t, PD, v_ref_cm3=5.0)
    # within sampling tolerance: raised to V_T,ref
    assert target_indices(t, PD, v_ref_cm3=9.0 * 0.999)["EI"] == 0.0
    with pytest.raises(InputError, match="v_ref150_cm3"):
        target_indices(t, PD, v_ref_cm3=12.0, v_ref150_cm3=20.0)
    with pytest.raises(InputError, match="prescription_Gy"):
        target_indices(t, 0.0, v_ref_cm3=12.0)
    with pytest.raises(InputError, match="DVH"):
        target_indices([1, 2], PD, 12.0)


def test_oar_indices():
    # 3 cm^3 OAR: 0.05 cm^3 at 80, 0.5 at 50, 1.45 at 30, 1 at 10
    o = DVH.from_samples([80, 50, 30, 10], [0.05, 0.5, 1.45, 1.0], name="Cord")
    out = oar_indices(o)
    assert out == pytest.approx(
        {"volume_cm3": 3.0, "Dmax_Gy": 80, "D0.1cc_Gy": 50, "D1cc_Gy": 30, "D2cc_Gy": 30,
         "Dmean_Gy": (80 * 0.05 + 50 * 0.5 + 30 * 1.45 + 10) / 3}
    )
    small = oar_indices(DVH.from_samples([40, 20], [0.3, 0.3]))
    assert small["D1cc_Gy"] == 20 and small["D2cc_Gy"] == 20  # smaller than 1 cc: its minimum
