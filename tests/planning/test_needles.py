"""Tests of the needle trajectory planner on a synthetic prone spine phantom.

Phantom (LPS mm, +x left, +y posterior, +z superior), 1 mm grid:
body = elliptic cylinder; vertebral body (VB) = 40 mm tall elliptic cylinder
with a 2 mm cortical shell (end plates included); target = 30 mm sphere inside the VB; spinal canal = cylinder
posterior to the VB; aorta = cylinder anterior-left; pedicles = two 10 mm
cylinders running posteriorly from the VB; lamina = bone slab behind the canal.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from seedplan.errors import GeometryError, InputError, PlanningError
from seedplan.geometry import Grid
from seedplan.plan import FORAMEN_MARGIN_MM
from seedplan.planning.needles import (
    Needle,
    NeedleConstraints,
    NeedlePlan,
    candidate_slots,
    plan_needles,
    pvp_needle_paths,
)


def _phantom(grid: Grid) -> dict:
    c = grid.voxel_centers_mm()
    x, y, z = c[..., 0], c[..., 1], c[..., 2]
    vb = ((x / 25) ** 2 + ((y + 12) / 20) ** 2 <= 1) & (np.abs(z) <= 20)
    shell = vb & ~ndimage.binary_erosion(vb, iterations=2)
    ped = ((np.abs(x) - 18) ** 2 + z**2 <= 5**2) & (y >= 2) & (y <= 34)
    lamina = (np.abs(x) < 11) & (y >= 30) & (y <= 36)
    return dict(
        grid=grid,
        body=(x / 80) ** 2 + ((y - 5) / 70) ** 2 <= 1,
        vb=vb,
        target=x**2 + (y + 12) ** 2 + z**2 <= 15**2,
        canal=x**2 + (y - 20) ** 2 <= 8**2,
        aorta=(x - 22) ** 2 + (y + 48) ** 2 <= 10**2,
        ped=ped,
        bone=shell | ped | lamina,
        centers=c,
    )


@pytest.fixture(scope="module")
def ph() -> dict:
    return _phantom(Grid.from_bounds((-85, -70, -40), (85, 80, 40), 1.0))


@pytest.fixture(scope="module")
def forb(ph) -> dict:
    return {"spinal_canal": ph["canal"], "aorta": ph["aorta"]}


@pytest.fixture(scope="module")
def free_plan(ph, forb) -> NeedlePlan:
    return plan_needles(ph["grid"], ph["target"], ph["body"], forb, mode="free")


@pytest.fixture(scope="module")
def coplanar_plan(ph, forb) -> NeedlePlan:
    return plan_needles(ph["grid"], ph["target"], ph["body"], forb, mode="coplanar")


# ----------------------------------------------------------- independent checks
def _samples(n: Needle, step: float = 0.1) -> np.ndarray:
    t = np.arange(0.0, n.depth_mm + 1e-9, step)
    return n.entry[None, :] + t[:, None] * n.direction[None, :]


def _lookup(grid: Grid, mask: np.ndarray, p: np.ndarray) -> np.ndarray:
    idx = np.floor(grid.world_to_index(p) + 0.5).astype(int)
    ok = np.all((idx >= 0) & (idx < np.array(grid.size)), axis=1)
    out = np.zeros(len(p), bool)
    out[ok] = mask[idx[ok, 2], idx[ok, 1], idx[ok, 0]]
    return out


def _min_dist(ph: dict, mask: np.ndarray, pts: np.ndarray) -> float:
    tree = cKDTree(ph["centers"][mask])
    return float(tree.query(pts)[0].min())


def _in_target_points(ph: dict, n: Needle) -> np.ndarray:
    p = _samples(n, 0.2)
    return p[_lookup(ph["grid"], ph["target"], p)]


# ------------------------------------------------------------------ Needle
def test_needle_angles_for_known_directions():
    n = Needle((0.0, 50.0, 0.0), (0.0, 0.0, 0.0))  # straight down, prone, along -y
    assert np.allclose(n.direction, [0, -1, 0])
    assert n.depth_mm == pytest.approx(50.0)
    assert n.angle_to_axial_deg == pytest.approx(0.0)
    assert n.angle_to_sagittal_deg == pytest.approx(0.0)
    assert n.angle_from_vertical_deg == pytest.approx(0.0)

    a = math.radians(15.0)  # 15 deg cranio-caudal tilt (tip superior of entry)
    n = Needle((0.0, 50.0, 0.0), (0.0, 50.0 - 60 * math.cos(a), 60 * math.sin(a)))
    assert n.angle_to_axial_deg == pytest.approx(15.0)
    assert n.angle_to_sagittal_deg == pytest.approx(0.0, abs=1e-9)
    assert n.angle_from_vertical_deg == pytest.approx(0.0, abs=1e-9)
    assert n.depth_mm == pytest.approx(60.0)

    b = math.radians(30.0)  # 30 deg in the axial plane, entering from the patient's left
    n = Needle((40 * math.sin(b), 40 * math.cos(b), 5.0), (0.0, 0.0, 5.0))
    assert n.angle_to_axial_deg == pytest.approx(0.0, abs=1e-9)
    assert n.angle_to_sagittal_deg == pytest.approx(30.0)
    assert n.angle_from_vertical_deg == pytest.approx(30.0)

    d = np.array([math.sin(b) * math.cos(a), -math.cos(b) * math.cos(a), math.sin(a)])  # both
    n = Needle((1.0, 2.0, 3.0), tuple(np.array([1.0, 2.0, 3.0]) + 70 * d))
    assert n.angle_to_axial_deg == pytest.approx(15.0)
    assert n.angle_to_sagittal_deg == pytest.approx(math.degrees(math.asin(math.sin(b) * math.cos(a))))
    assert n.angle_from_vertical_deg == pytest.approx(30.0)
    assert np.allclose(n.point_at_depth(70.0), n.tip)
    assert np.allclose(n.point_at_depth(0.0), n.entry)


def test_needle_dict_round_trip_exact_and_validation():
    n = Needle((0.1 + 0.2, -1e-17, 123.456789012345), (1 / 3, 2 / 7, -5.5), kind="pvp", label="left")
    d = n.to_dict()
    assert all(type(v) is float for v in d["entry_mm"] + d["tip_mm"])
    m = Needle.from_dict(json.loads(json.dumps(d)))
    assert m == n and m.entry_mm == n.entry_mm and m.tip_mm == n.tip_mm
    with pytest.raises(Exception):
        n.entry_mm = (0, 0, 0)  # frozen
    with pytest.raises(InputError):
        Needle((0, 0, 0), (0, 0, 0))
    with pytest.raises(InputError):
        Needle((0, 0, float("nan")), (0, 0, 1))
    with pytest.raises(InputError):
        Needle((0, 0, 0), (0, 0, 1), kind="drill")
    with pytest.raises(InputError):
        Needle.from_dict({"entry_mm": [0, 0, 0]})


def test_constraints_validation():
    with pytest.raises(InputError):
        NeedleConstraints(max_depth_mm=0)
    with pytest.raises(InputError):
        NeedleConstraints(margins_mm={"aorta": -1.0})
    with pytest.raises(InputError):
        NeedleConstraints(max_axial_tilt_deg=95)
    c = NeedleConstraints(margins_mm={"aorta": 7})
    assert c.margin_for("aorta") == 7.0 and c.margin_for("spinal_canal") == 5.0
    assert c.margin_for("unknown_organ") == c.default_margin_mm
    # a neural foramen: 3 mm unless named (the low end of canal/dura 3-5 mm)
    assert c.margin_for("sacral_foramen_canal_S2_left") == FORAMEN_MARGIN_MM == 3.0
    assert NeedleConstraints(margins_mm={"Neural_Foramen_L4": 4.5}).margin_for("Neural_Foramen_L4") == 4.5
    assert NeedleConstraints(default_margin_mm=8.0).margin_for("neural_foramen_L4_left") == 3.0
    hash(c)


# ------------------------------------------------------------------ free mode
def test_free_plan_is_clear_of_every_structure_by_its_margin(ph, forb, free_plan):
    c = NeedleConstraints()
    assert len(free_plan) >= 3
    for n, diag in zip(free_plan.needles, free_plan.diagnostics):
        p = _samples(n)
        for name, mask in forb.items():
            true = _min_dist(ph, mask, p)
            assert true >= c.margin_for(name) - 1e-6, (name, true)
            # the reported clearance is a lower bound, not far below the truth
            assert diag.clearance_mm[name] <= true + 1e-6
            if true < 25.0:  # distances are capped at max margin + 25 mm
                assert diag.clearance_mm[name] >= true - 1.5
        assert _lookup(ph["grid"], ph["target"], n.tip[None])[0]  # tip in target
        assert _lookup(ph["grid"], ph["body"], n.entry[None])[0]  # entry on the skin
        assert not _lookup(ph["grid"], ph["body"], (n.entry - 1.0 * n.direction)[None])[0]
        assert n.entry[1] > n.tip[1]  # posterior entry
        assert np.all(_lookup(ph["grid"], ph["body"], p))


def test_free_plan_limits_spacing_and_coverage(ph, free_plan):
    c = NeedleConstraints()
    for n in free_plan.needles:
        assert n.depth_mm <= c.max_depth_mm + 1e-9
        assert n.angle_to_axial_deg <= c.max_axial_tilt_deg + 1e-6
        assert n.angle_from_vertical_deg <= c.max_angle_from_vertical_deg + 1e-6
        assert n.kind == "seed"
    parts = [_in_target_points(ph, n) for n in free_plan.needles]
    for i in range(len(parts)):
        for j in range(i):
            d = cKDTree(parts[i]).query(parts[j])[0].min()
            assert d >= c.min_needle_distance_mm - 0.6
        for j in range(i):
            ni, nj = free_plan.needles[i], free_plan.needles[j]
            assert np.linalg.norm(ni.entry - nj.entry) >= c.min_entry_distance_mm
            whole = cKDTree(_samples(ni, 0.2)).query(_samples(nj, 0.2))[0].min()
            assert whole >= c.min_track_distance_mm - 0.2  # needles never touch, even outside the target
    # every target voxel close to a needle track (independent check of the reported coverage)
    tpts = ph["centers"][ph["target"]]
    dmin = cKDTree(np.concatenate(parts)).query(tpts)[0]
    cov = float(np.mean(dmin <= c.coverage_radius_mm + 0.5))
    assert cov >= 0.85
    assert free_plan.coverage_fraction >= 0.85
    assert free_plan.n_feasible <= free_plan.n_candidates


def test_custom_limits_are_honoured(ph, forb):
    c = NeedleConstraints(max_depth_mm=95.0, max_axial_tilt_deg=0.0, max_angle_from_vertical_deg=35.0, margins_mm={"aorta": 8.0})
    plan = plan_needles(ph["grid"], ph["target"], ph["body"], forb, constraints=c, n_needles=3)
    assert len(plan) == 3
    for n in plan.needles:
        assert n.depth_mm <= 95.0 + 1e-9
        assert n.angle_to_axial_deg <= 1e-6
        assert n.angle_from_vertical_deg <= 35.0 + 1e-6
        assert _min_dist(ph, ph["aorta"], _samples(n)) >= 8.0


def test_determinism(ph, forb, free_plan):
    a = plan_needles(ph["grid"], ph["target"], ph["body"], forb, rng=np.random.default_rng(7))
    b = plan_needles(ph["grid"], ph["target"], ph["body"], forb, rng=np.random.default_rng(7))
    assert [n.to_dict() for n in a.needles] == [n.to_dict() for n in b.needles]
    c = plan_needles(ph["grid"], ph["target"], ph["body"], forb)
    assert [n.to_dict() for n in c.needles] == [n.to_dict() for n in free_plan.needles]
    d = json.loads(json.dumps(free_plan.to_dict(), allow_nan=False))
    assert [Needle.from_dict(x) for x in d["needles"]] == list(free_plan.needles)
    assert set(d["diagnostics"][0]["clearance_mm"]) == {"spinal_canal", "aorta"}
    # an empty forbidden mask is harmless and JSON-safe
    e = plan_needles(ph["grid"], ph["target"], ph["body"], {**forb, "ivc": np.zeros(ph["grid"].shape, bool)}, n_needles=2)
    assert e.diagnostics[0].clearance_mm["ivc"] == math.inf
    assert json.loads(json.dumps(e.to_dict(), allow_nan=False))["diagnostics"][0]["clearance_mm"]["ivc"] is None


# --------------------------------------------------------------- coplanar
def test_coplanar_needles_are_parallel_on_the_pitch_grid(ph, forb, coplanar_plan):
    plan = coplanar_plan
    assert plan.mode == "coplanar" and len(plan) >= 2
    d0 = plan.needles[0].direction
    for n in plan.needles:
        assert np.allclose(n.direction, d0, atol=1e-9)
    u, v, o = (np.array(plan.info[k]) for k in ("template_u", "template_v", "template_origin_mm"))
    assert abs(u @ d0) < 1e-9 and abs(v @ d0) < 1e-9
    pitch = plan.info["pitch_mm"]
    assert pitch == 10.0
    for n in plan.needles:
        a, b = (n.tip - o) @ u / pitch, (n.tip - o) @ v / pitch
        assert abs(a - round(a)) < 1e-6 and abs(b - round(b)) < 1e-6
        assert n.angle_to_axial_deg <= 20 + 1e-6 and n.angle_from_vertical_deg <= 60 + 1e-6
        for name, mask in forb.items():
            assert _min_dist(ph, mask, _samples(n)) >= 5.0 - 1e-6
    # template holes 5 mm apart: a 5 mm needle pitch is honoured too, with exactly 4 needles
    p5 = plan_needles(ph["grid"], ph["target"], ph["body"], forb, mode="coplanar", spacing_mm=5.0, n_needles=4)
    assert p5.info["pitch_mm"] == 5.0 and len(p5) == 4
    offs = [np.array([(n.tip - p5.needles[0].tip) @ np.array(p5.info[k]) for k in ("template_u", "template_v")]) / 5.0 for n in p5.needles]
    assert np.allclose(offs, np.round(offs), atol=1e-6)


# ----------------------------------------------------------------- blocked
def test_blocked_target_names_the_structure(ph, forb):
    c = ph["centers"]
    r = np.sqrt(c[..., 0] ** 2 + (c[..., 1] + 12) ** 2 + c[..., 2] ** 2)
    shell = (r >= 19) & (r <= 22)
    with pytest.raises(PlanningError) as ei:
        plan_needles(ph["grid"], ph["target"], ph["body"], {**forb, "tumour_capsule": shell})
    msg = str(ei.value)
    assert "'tumour_capsule'" in msg and "'target'" in msg
    assert "every candidate crosses 'tumour_capsule' (+5 mm margin)" in msg
    assert f"crosses 'tumour_capsule' (+5 mm margin): {msg.split(' candidate paths')[0].split()[-1]}" in msg
    assert "candidate paths tested" in msg
    with pytest.raises(PlanningError) as ei:
        plan_needles(ph["grid"], ph["target"], ph["body"], {"wall": shell}, mode="coplanar")
    assert "'wall'" in str(ei.value)


def test_input_errors(ph, forb):
    g = ph["grid"]
    with pytest.raises(GeometryError):
        plan_needles(g, ph["target"][:-1], ph["body"], forb)
    with pytest.raises(InputError):
        plan_needles(g, ph["target"].astype(np.uint8), ph["body"], forb)
    with pytest.raises(InputError):
        plan_needles(g, ph["target"], ph["body"], forb, mode="random")
    with pytest.raises(PlanningError, match="empty"):
        plan_needles(g, np.zeros(g.shape, bool), ph["body"], forb)
    with pytest.raises(PlanningError, match="requested 50"):
        plan_needles(g, ph["target"], ph["body"], forb, n_needles=50)


# ------------------------------------------------------------------- slots
def test_candidate_slots(ph, free_plan):
    g = ph["grid"]
    dist_canal = ndimage.distance_transform_edt(~ph["canal"], sampling=g.spacing[::-1])
    region = ndimage.binary_dilation(ph["target"], iterations=5) & (dist_canal > 5.0)
    slots = free_plan.seed_slots(g, region, 10.0)
    assert len(slots) > 0
    assert np.all(_lookup(g, region, slots.positions_mm))
    assert _min_dist(ph, ph["canal"], slots.positions_mm) > 5.0
    for k, n in enumerate(free_plan.needles):
        sel = slots.needle_index == k
        r = slots.retraction_mm[sel]
        assert np.all(np.diff(r) > 0)  # deepest first
        assert np.allclose(r / 10.0, np.round(r / 10.0))  # on the 10 mm retraction grid
        assert np.allclose(slots.positions_mm[sel], n.tip - r[:, None] * n.direction)
        assert np.all(r <= n.depth_mm + 1e-9)
    assert np.all(np.diff(slots.needle_index) >= 0)
    # exclude= removes slots from the region; 5 mm spacing gives more slots
    ex = candidate_slots(free_plan, g, ph["target"], 5.0, exclude=dist_canal <= 12.0)
    assert _min_dist(ph, ph["canal"], ex.positions_mm) > 12.0 - 1e-6
    assert len(candidate_slots(free_plan, g, ph["target"], 5.0)) > len(candidate_slots(free_plan, g, ph["target"], 10.0))


# -------------------------------------------------------------------- bone
def test_bone_not_crossed_without_drill(ph, forb):
    c = NeedleConstraints(allow_bone_drill=False)
    plan = plan_needles(ph["grid"], ph["target"], ph["body"], forb, bone=ph["bone"], bone_allowed=ph["ped"], constraints=c)
    bad = ph["bone"] & ~ph["ped"]
    assert len(plan) >= 1
    for n, diag in zip(plan.needles, plan.diagnostics):
        p = _samples(n, 0.05)
        assert not _lookup(ph["grid"], bad, p).any()
        assert _min_dist(ph, bad, p) >= c.bone_margin_mm - 1e-6
        assert _lookup(ph["grid"], ph["ped"], p).any()  # it must come through the pedicle
        assert diag.forbidden_bone_mm == 0.0


def test_bone_may_be_crossed_with_drill(ph, forb):
    c = NeedleConstraints(allow_bone_drill=True)
    plan = plan_needles(ph["grid"], ph["target"], ph["body"], forb, bone=ph["bone"], bone_allowed=ph["ped"], constraints=c)
    bad = ph["bone"] & ~ph["ped"]
    crossed = [_lookup(ph["grid"], bad, _samples(n, 0.05)).any() for n in plan.needles]
    assert any(crossed)
    assert any(d.forbidden_bone_mm > 0 for d in plan.diagnostics)
    nodrill = plan_needles(ph["grid"], ph["target"], ph["body"], forb, bone=ph["bone"], bone_allowed=ph["ped"])
    assert plan.coverage_fraction > nodrill.coverage_fraction


# --------------------------------------------------------------------- PVP
def _anterior_third(ph):
    y = ph["centers"][..., 1]
    yv = y[ph["vb"]]
    return ph["vb"] & (y <= yv.min() + (yv.max() - yv.min()) / 3)


def test_pvp_transpedicular_bilateral(ph, forb):
    plan = pvp_needle_paths(ph["grid"], ph["vb"], ph["body"], forb, pedicles=ph["ped"], bone=ph["bone"])
    assert plan.mode == "pvp-transpedicular"
    assert sorted(n.label for n in plan.needles) == ["left", "right"]
    ant = _anterior_third(ph)
    for n in plan.needles:
        assert n.kind == "pvp"
        assert (n.entry[0] > 0) == (n.label == "left")  # +x is the patient's left
        assert _lookup(ph["grid"], ant, n.tip[None])[0]
        p = _samples(n, 0.1)
        assert _lookup(ph["grid"], ph["ped"], p).sum() * 0.1 >= 10.0 - 0.5
        assert _min_dist(ph, ph["canal"], p) >= 5.0
        assert n.angle_from_vertical_deg <= 45.0 + 1e-6
    uni = pvp_needle_paths(ph["grid"], ph["vb"], ph["body"], forb, pedicles=ph["ped"], bilateral=False)
    assert len(uni) == 1 and abs(uni.needles[0].tip[0]) < 8.0  # reaches towards the midline


def test_pvp_parapedicular_avoids_pedicle(ph, forb):
    plan = pvp_needle_paths(
        ph["grid"], ph["vb"], ph["body"], forb, pedicles=ph["ped"], bone=ph["bone"], approach="parapedicular"
    )
    ant = _anterior_third(ph)
    assert len(plan) == 2
    for n in plan.needles:
        p = _samples(n, 0.1)
        assert _min_dist(ph, ph["ped"], p) >= 1.0
        assert _lookup(ph["grid"], ant, n.tip[None])[0]
    with pytest.raises(InputError):
        pvp_needle_paths(ph["grid"], ph["vb"], ph["body"], forb, approach="transpedicular")


def test_pvp_blocked_side_is_named(ph, forb):
    x, y = ph["centers"][..., 0], ph["centers"][..., 1]
    wall = ph["body"] & (x > 2) & (y > 12)  # covers every posterior entry on the patient's left
    with pytest.raises(PlanningError) as ei:
        pvp_needle_paths(ph["grid"], ph["vb"], ph["body"], {**forb, "left_wall": wall}, pedicles=ph["ped"])
    msg = str(ei.value)
    assert "from the left" in msg and "crosses 'left_wall' (+5 mm margin)" in msg.split("tested")[0]
    uni = pvp_needle_paths(
        ph["grid"], ph["vb"], ph["body"], {**forb, "left_wall": wall}, pedicles=ph["ped"], bilateral=False
    )
    assert uni.needles[0].entry[0] < 0 and uni.needles[0].label == "unilateral-right"


def test_oblique_grid_flipped_axes():
    # x axis running right-to-left and z head-to-feet: same anatomy, different index order
    g = Grid((85, -70, 40), (1.5, 1.5, 1.5), (114, 101, 54), direction=np.diag([-1.0, 1.0, -1.0]))
    ph = _phantom(g)
    forb = {"spinal_canal": ph["canal"], "aorta": ph["aorta"]}
    plan = plan_needles(g, ph["target"], ph["body"], forb, n_needles=3)
    assert len(plan) == 3
    for n in plan.needles:
        for name, mask in forb.items():
            assert _min_dist(ph, mask, _samples(n)) >= 5.0 - 1e-6
        assert _lookup(g, ph["target"], n.tip[None])[0]
