import enum
import json

import numpy as np
import pytest

from eval_helpers import Structure, point_source, sphere_mask, z_cylinder_mask
from seedplan.errors import GeometryError, InputError, InputTypeError
from seedplan.evaluation.metrics import Evaluation, SamplingOptions, dvh_of_structure, evaluate
from seedplan.evaluation.radiobiology import eqd2_permanent_Gy
from seedplan.geometry import Grid

PD = 120.0


class Role(str, enum.Enum):
    TARGET = "target"
    OAR = "oar"
    VB = "vertebral_body"
    BODY = "body"
    BONE = "bone"


def ball_vol(r):
    return 4 / 3 * np.pi * r**3 / 1000


@pytest.fixture(scope="module")
def grid():
    return Grid.from_bounds((-45, -30, -30), (45, 30, 30), 1.0)


def step_dose(levels, centre=(0, 0, 0)):
    """Piecewise-constant dose: levels = [(radius, dose), ...] from the inside out."""
    c = np.asarray(centre, float)

    def f(p):
        r = np.linalg.norm(np.asarray(p) - c, axis=1)
        out = np.zeros(len(r))
        for radius, dose in reversed(levels):
            out[r <= radius] = dose
        return out

    return f


def test_sphere_step_dose_known_ci_ei_hi(grid):
    """Target sphere R 10; 200 Gy within 6 mm, 150 Gy within 12 mm, 0 beyond."""
    target = Structure("PTV", "target", sphere_mask(grid, (0, 0, 0), 10.0), grid)
    ev = evaluate([target], step_dose([(6, 200.0), (12, 150.0)]), PD)
    t = ev.metrics["target"]
    vt, v_ref, vt150 = ball_vol(10), ball_vol(12), ball_vol(6)
    assert t["name"] == "PTV"
    assert t["volume_cm3"] == pytest.approx(vt, rel=0.01)
    assert t["V100_pct"] == 100 and t["V200_pct"] == 0
    assert t["V_ref_cm3"] == pytest.approx(v_ref, rel=0.01)
    assert t["CI"] == pytest.approx(vt / v_ref, rel=0.01)
    assert t["EI"] == pytest.approx((v_ref - vt) / vt, rel=0.02)
    assert t["HI"] == pytest.approx((vt - vt150) / vt, rel=0.01)
    assert t["V150_pct"] == pytest.approx(100 * vt150 / vt, rel=0.02)
    assert t["D90_Gy"] == 150 and t["D100_Gy"] == 150
    assert ev.metrics["warnings"] == []
    assert isinstance(ev, Evaluation) and ev.dvhs["PTV"].volume_cm3 == pytest.approx(t["volume_cm3"])


def test_partial_coverage_vref_counts_outside_target(grid):
    """PD region = ball of 12 mm centred 8 mm off the target centre."""
    target = Structure("PTV", "target", sphere_mask(grid, (0, 0, 0), 10.0), grid)
    ev = evaluate([target], step_dose([(12, 130.0)], centre=(8, 0, 0)), PD)
    t = ev.metrics["target"]
    # lens volume of two balls (R1 10, R2 12, d 8)
    r1, r2, d = 10.0, 12.0, 8.0
    lens = np.pi * (r1 + r2 - d) ** 2 * (d**2 + 2 * d * (r1 + r2) - 3 * (r1 - r2) ** 2) / (12 * d) / 1000
    assert t["V100_pct"] == pytest.approx(100 * lens / ball_vol(10), rel=0.02)
    assert t["V_ref_cm3"] == pytest.approx(ball_vol(12), rel=0.01)
    assert t["CI"] == pytest.approx(lens**2 / (ball_vol(10) * ball_vol(12)), rel=0.03)
    assert t["EI"] == pytest.approx((ball_vol(12) - lens) / ball_vol(10), rel=0.02)


def test_vref_box_grows_until_faces_below_pd(grid):
    target = Structure("PTV", "target", sphere_mask(grid, (0, 0, 0), 8.0), grid)
    opts = SamplingOptions(points_per_mm3=1.0, vref_scan_spacing_mm=0)  # no scan: growth alone
    ev = evaluate([target], step_dose([(24, 150.0)]), PD, sampling=opts)
    assert ev.metrics["target"]["V_ref_cm3"] == pytest.approx(ball_vol(24), rel=0.01)
    assert ev.metrics["warnings"] == []


def test_vref_finds_distant_hot_spots(grid):
    """A hot ball 30 mm away: found by the coarse scan or by include_points_mm."""
    target = Structure("PTV", "target", sphere_mask(grid, (0, 0, 0), 8.0), grid)
    base = step_dose([(8.5, 150.0)])
    far_centre = np.array([32.0, 0.0, 0.0])

    def dose(p):
        return np.maximum(base(p), step_dose([(6, 150.0)], far_centre)(p))

    expected = ball_vol(8.5) + ball_vol(6)
    ev = evaluate([target], dose, PD)
    assert ev.metrics["target"]["V_ref_cm3"] == pytest.approx(expected, rel=0.01)
    no_scan = SamplingOptions(vref_scan_spacing_mm=0)
    ev_miss = evaluate([target], dose, PD, sampling=no_scan)
    assert ev_miss.metrics["target"]["V_ref_cm3"] == pytest.approx(ball_vol(8.5), rel=0.01)
    ev_hint = evaluate([target], dose, PD, sampling=no_scan, include_points_mm=[far_centre])
    assert ev_hint.metrics["target"]["V_ref_cm3"] == pytest.approx(expected, rel=0.01)


def test_body_restricts_vref_and_grid_edge_warning(grid):
    target = Structure("PTV", "target", sphere_mask(grid, (0, 0, 0), 8.0), grid)
    c = grid.voxel_centers_mm()
    body = Structure("BODY", Role.BODY, c[..., 1] <= 10.0, grid)  # tissue only at y <= 10 mm
    dose = step_dose([(14, 150.0)])
    ev = evaluate([target, body], dose, PD)
    h = 14 - 10.5  # cap of the ball beyond the body (voxels y <= 10 -> surface at y = 10.5)
    cap = np.pi * h**2 * (3 * 14 - h) / 3 / 1000
    assert ev.metrics["target"]["V_ref_cm3"] == pytest.approx(ball_vol(14) - cap, rel=0.01)
    assert "BODY" not in ev.dvhs and ev.metrics["not_evaluated"] == ["BODY"]
    # the PD region overflowing the grid is reported
    ev2 = evaluate([target], step_dose([(40, 150.0)]), PD, sampling=SamplingOptions(points_per_mm3=1.0))
    assert any("edge of its grid" in w for w in ev2.metrics["warnings"])


def test_oars_vertebral_body_and_layout():
    g = Grid((-15.25, -15.25, -20), (0.5, 0.5, 2.5), (62, 62, 17))
    src = (10.0, 0.0, 0.0)
    dose_at = point_source(src, 2000.0)
    structures = [
        Structure("GTV", Role.TARGET, sphere_mask(g, src, 6.0), g),
        Structure("SpinalCord", Role.OAR, z_cylinder_mask(g, 4.0), g),
        Structure("VB", Role.VB, sphere_mask(g, (6, 0, 0), 10.0), g),
        Structure("canal_PRV", "avoidance", z_cylinder_mask(g, 6.0), g),
    ]
    ev = evaluate(structures, dose_at, PD)
    m = ev.metrics
    assert set(m["oars"]) == {"SpinalCord"} and set(m["avoidance"]) == {"canal_PRV"}
    cord = m["oars"]["SpinalCord"]
    for key in ("Dmax_Gy", "D0.1cc_Gy", "D1cc_Gy", "D2cc_Gy", "Dmean_Gy", "EQD2max_Gy", "EQD2_D0.1cc_Gy"):
        assert key in cord
    assert cord["Dmax_Gy"] >= cord["D0.1cc_Gy"] >= cord["D1cc_Gy"] >= cord["D2cc_Gy"]
    # Dmax is a sample maximum: the outermost sub-points lie half a sub-step (0.25 mm) inside the surface
    assert 2000 / (6.25**2 + 0.25**2) * (1 - 1e-9) <= cord["Dmax_Gy"] <= 2000 / 6.0**2
    assert cord["EQD2_D0.1cc_Gy"] == pytest.approx(eqd2_permanent_Gy(cord["D0.1cc_Gy"], 2.0))
    assert m["vertebral_bodies"]["VB"]["volume_cm3"] == pytest.approx(ball_vol(10), rel=0.03)
    assert m["sampling"]["subdivisions_ijk"]["SpinalCord"] == [1, 1, 5]
    # DVH helper gives the same numbers
    d = dvh_of_structure(structures[1].mask, g, dose_at, name="SpinalCord")
    assert d.D_cc(0.1) == pytest.approx(cord["D0.1cc_Gy"])
    # JSON round trip of the whole evaluation
    blob = json.loads(json.dumps(ev.to_dict()))
    assert blob["metrics"]["target"]["D90_Gy"] == pytest.approx(m["target"]["D90_Gy"])
    assert blob["dvhs"]["SpinalCord"]["volume_pct_ge"][0] == 100


def test_no_target_and_errors(grid):
    cord = Structure("Cord", "oar", z_cylinder_mask(grid, 4.0), grid)
    bone = Structure("Cortex", Role.BONE, cord.mask, grid)
    ev = evaluate([cord, bone], point_source((20, 0, 0)), PD)
    assert ev.metrics["not_evaluated"] == ["Cortex"]
    assert ev.metrics["target"] is None and "Cord" in ev.metrics["oars"]
    with pytest.raises(InputError, match="twice"):
        evaluate([cord, cord], point_source((20, 0, 0)), PD)
    with pytest.raises(InputError, match="valid roles"):
        evaluate([Structure("X", "organ", cord.mask, grid)], point_source((20, 0, 0)), PD)
    with pytest.raises(GeometryError, match="Cord"):
        evaluate([Structure("Cord", "oar", cord.mask[:-1], grid)], point_source((20, 0, 0)), PD)
    with pytest.raises(InputError, match="one dose per point"):
        evaluate([cord], lambda p: np.zeros(3), PD)
    with pytest.raises(InputError, match="negative"):
        evaluate([cord], lambda p: -np.ones(len(p)), PD)
    with pytest.raises(InputError, match="prescription_Gy"):
        evaluate([cord], point_source((20, 0, 0)), -1)
    with pytest.raises(InputTypeError, match="callable"):
        evaluate([cord], None, PD)
    with pytest.raises(InputError, match="boundary"):
        SamplingOptions(boundary="x")
