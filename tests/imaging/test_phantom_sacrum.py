"""The phantom's sacrum and pelvis: morphometry against the cited literature, lesions at S1-S3 and at
several levels, validation, derived anatomy, the CLI, and the lumbar phantom left unchanged.

Published values (see the ``seedplan.imaging.phantom`` docstring for the full citations):

* sacral slope 24-55 deg (mean +- 2 SD) in 709 adults, mean about 40 deg (Mac-Thiong 2011);
* S1 anterior height 28.2 +- 2.1 mm, superior AP diameter 31.9 +- 2.3 mm (male MRI, 2015);
* sacral width 103.6 +- 6.8 mm (dry sacra); auricular height 56.2 +- 4.6 mm;
* S1 posterior foramen 24.1 +- 2.9 mm from the midline, 8.3 +- 1.6 mm wide (Kim 2023);
* S1-S2 / S2-S3 posterior foramina 14.2 +- 2.7 / 12.8 +- 1.5 mm apart edge to edge (Surg Radiol Anat);
* anterior S1 foramen 13.0 x 12.2 mm (Saluja 2018), lateral of the posterior one (Ebraheim 1996);
* dural sac tip: upper third of S2 (Binokay 2006);
* presacral space 13.0 mm at S3 in men (Oto 2004);
* common iliac artery 13.4 +- 2.0 mm (Paivansalo 2000), upper reference 11.8 mm (Lorbeer 2018);
  common iliac vein 13.1 +- 2.2 mm (Wang 2025);
* iliac crest vertex 38 +- 8 mm above the sacral base centre (Okamoto 2020);
* S1 body 280 HU, S2 body 192 HU, ala about 100 / 60 HU (Nakamura 2020);
* untreated blastic metastases 654 +- 176 HU mean attenuation (Ulano 2016).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from scipy import ndimage

from seedplan.cli import main
from seedplan.errors import InputError
from seedplan.imaging import (
    Role,
    StructureSet,
    derive_anatomy,
    dice,
    guess_role,
    load_ct,
    load_label_map,
    load_rtstruct,
    make_spine_phantom,
    vertebra_dimensions,
)
from seedplan.imaging.phantom import (
    _P0,
    HU,
    SACRAL_SLOPE_DEG,
    Z_PELVIS_MM,
    _lat_back,
    _lat_front,
    _profiles,
    _sac_sw,
    sacral_point_mm,
)
from seedplan.io import load_case

SIDES = ("left", "right")
VESSELS = [f"{k}_iliac_{v}_{s}" for v in ("artery", "vein") for k in ("common", "external", "internal") for s in SIDES]


@pytest.fixture(scope="module")
def s1():
    """S1 lesion (30 mm, lytic) at 1 mm: foramen sizes need the fine grid."""
    return make_spine_phantom(level="S1", spacing_mm=1.0)


@pytest.fixture(scope="module")
def s2():
    return make_spine_phantom(level="S2", spacing_mm=2.0, lesion_diameter_mm=20.0)


def _sac(st):
    """Sacral coordinates (x, s, w) of a structure's voxels."""
    p = st.points_mm()
    s, w = _sac_sw(p[:, 1], p[:, 2])
    return p[:, 0], s, w


def _hu(ct, p):
    i, j, k = np.rint(ct.grid.world_to_index(np.asarray(p, float))).astype(int)
    return float(ct.hu[k, j, i])


# ------------------------------------------------------------------------------------ unchanged lumbar
def _digest(ph) -> str:
    h = hashlib.sha256()
    g = ph.ct.grid
    h.update(np.asarray(g.origin, float).tobytes())
    h.update(np.asarray(g.spacing, float).tobytes())
    h.update(np.asarray(g.size, np.int64).tobytes())
    h.update(np.ascontiguousarray(ph.ct.hu).tobytes())
    for n, s in ph.structures.items():
        h.update(n.encode())
        h.update(str(s.role).encode())
        h.update(np.packbits(s.mask).tobytes())
    return h.hexdigest()[:16]


#: Digests of the phantoms built before the sacrum existed (CT voxels, grid, every structure and role).
BEFORE_SACRUM = {
    (("level", "L1"),): ("1d2538438c9ac68c", "5f74611ce99d85a5"),
    (("level", "L2"),): ("7a5cb7573acbb682", "8c82841a8380b82f"),
    (("level", "L3"),): ("150a6278b07b236a", "26203693a0e86e44"),
    (("lesion_type", "blastic"), ("level", "L3"), ("noise_hu", 20), ("seed", 3)): ("41ac25e70522b1ed",
                                                                                   "e6c621b4264ed4b0"),
    (("include_thoracic", True), ("level", "T12")): ("e698e693ec93a614", "6fb23b1a7490bf87"),
    (("level", "L2"), ("posterior_breach", True)): ("cc1adddadf198e8d", "44a330c393312c8c"),
}


@pytest.mark.parametrize("kw", list(BEFORE_SACRUM))
def test_lumbar_phantoms_unchanged(kw):
    """L1-L3 (and T12) phantoms are identical, voxel for voxel, to those built before the sacrum."""
    for sp, expected in zip((2.0, 3.0), BEFORE_SACRUM[kw]):
        assert _digest(make_spine_phantom(spacing_mm=sp, **dict(kw))) == expected, (kw, sp)


#: Digests of the pre-sacrum L4/L5 phantoms above the pelvis (z >= -57 mm: CT voxels and every structure).
ABOVE_PELVIS = {("L4", 2.0): "f95483adb20be04c", ("L4", 3.0): "87d73fa707155599",
                ("L5", 2.0): "9ee8958f8badcaec", ("L5", 3.0): "af53de390efdc4fc"}
#: Digests of the pre-sacrum L5 phantom's own structures (target, body, pedicles) and of the body's voxels.
L5_OWN = {2.0: "ca87eb774c5c22f4", 3.0: "88837165a984c216"}


@pytest.mark.parametrize("level, sp", list(ABOVE_PELVIS))
def test_l4_l5_unchanged_above_the_pelvis(level, sp):
    """L4 and L5 phantoms: same grid; above z = -57 mm voxels and structures as before; L5 itself unchanged."""
    ph = make_spine_phantom(level=level, spacing_mm=sp)
    g = ph.ct.grid
    z = g.origin[2] + g.spacing[2] * np.arange(g.size[2])
    keep = z >= Z_PELVIS_MM - 1e-6
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ph.ct.hu[keep]).tobytes())
    old = ["target", f"vertebral_body_{level}", f"pedicle_left_{level}", f"pedicle_right_{level}", "spinal_canal",
           "cauda_equina", "aorta", "ivc", *(["kidney_left", "kidney_right"] if level == "L4" else []), "bone", "body"]
    for n in old:
        h.update(n.encode())
        h.update(np.packbits(ph.structures[n].mask[keep]).tobytes())
    assert h.hexdigest()[:16] == ABOVE_PELVIS[(level, sp)]
    assert Z_PELVIS_MM == -57.0 and z[0] < Z_PELVIS_MM  # the pelvis is in these fields of view
    if level == "L5":
        assert g.origin[2] == pytest.approx(-131.0)  # the earlier L5 grid
        h = hashlib.sha256()
        for n in ("target", "vertebral_body_L5", "pedicle_left_L5", "pedicle_right_L5"):
            h.update(n.encode())
            h.update(np.packbits(ph.structures[n].mask).tobytes())
        h.update(np.ascontiguousarray(ph.ct.hu[ph.structures["vertebral_body_L5"].mask]).tobytes())
        assert h.hexdigest()[:16] == L5_OWN[sp]
        assert {"sacral_bone", "sacral_foramen_canal_S1_left", "common_iliac_artery_left"} <= set(ph.structures.names)
        # the sacrum is below L5: its top is under the L5 inferior endplate (L5 centre -75.5 mm, height 26 mm)
        assert ph.structures["sacral_bone"].bounds_mm[1][2] < -75.5 - 13.0 + 8.0


# ------------------------------------------------------------------------------------ sacrum morphometry
def test_structures_roles_and_sides(s1):
    s = s1.structures
    expected = {"target": Role.TARGET, "vertebral_body_S1": Role.VERTEBRAL_BODY, "pedicle_left_S1": Role.PEDICLE,
                "pedicle_right_S1": Role.PEDICLE, "spinal_canal": Role.CANAL, "cauda_equina": Role.CANAL,
                "sacral_bone": Role.BONE, "iliac_bone_left": Role.BONE, "iliac_bone_right": Role.BONE,
                "bone": Role.BONE, "sigmoid_colon": Role.OAR, "body": Role.BODY}
    expected.update({f"sacral_foramen_canal_{lv}_{side}": Role.CANAL for lv in ("S1", "S2") for side in SIDES})
    expected.update({v: Role.OAR for v in VESSELS})
    for name, role in expected.items():
        assert name in s and s[name].role == role, name
        assert not s[name].is_empty and np.all(s["body"].mask[s[name].mask]), name
    for name, st in s.items():  # an RTSTRUCT stores no roles: the names give them back
        assert guess_role(name) == st.role, name
    for name in s.names:
        if name.endswith("_left"):
            assert s[name].centroid_mm[0] > 0 > s[name.replace("_left", "_right")].centroid_mm[0], name
    assert np.all(s["bone"].mask[s["sacral_bone"].mask])  # the sacrum is vertebral bone, the ilia are not
    assert not np.any(s["bone"].mask & s["iliac_bone_left"].mask)
    # no organ, canal or foramen holds bone; foramina and vessels do not overlap the canal or the bones
    hard = s["sacral_bone"].mask | s["iliac_bone_left"].mask | s["iliac_bone_right"].mask
    for name in ["spinal_canal", "cauda_equina", "sigmoid_colon", *VESSELS,
                 *[f"sacral_foramen_canal_S{k}_{side}" for k in (1, 2) for side in SIDES]]:
        assert not np.any(s[name].mask & hard), name
        if "foramen" in name:
            assert not np.any(s[name].mask & s["spinal_canal"].mask), name


def test_sacral_slope_and_s1_body(s1):
    """The S1 upper endplate faces anteriorly-superiorly at the sacral slope; S1 body size as published."""
    vb = s1.structures["vertebral_body_S1"]
    p = vb.points_mm()
    mid = p[np.abs(p[:, 0]) <= 0.5]
    ys = np.unique(mid[:, 1])
    top = np.array([[y, mid[mid[:, 1] == y, 2].max()] for y in ys])
    # the endplate rises from the promontory (most anterior) to the posterior-superior corner (highest point)
    front, back = top[0], top[np.argmax(top[:, 1])]
    endplate = top[top[:, 0] <= back[0]]
    core = endplate[(endplate[:, 0] > front[0] + 3) & (endplate[:, 0] < back[0] - 3)]
    slope = np.degrees(np.arctan(np.polyfit(core[:, 0], core[:, 1], 1)[0]))
    assert slope == pytest.approx(SACRAL_SLOPE_DEG, abs=2.0)  # z rises posteriorly: faces forward and up
    assert 24.0 <= slope <= 55.0  # Mac-Thiong 2011, mean +- 2 SD
    assert front[0] < back[0] - 20 and front[1] < back[1] - 15  # the promontory: in front and below
    depth = float(np.hypot(*(back - front)))
    assert depth == pytest.approx(31.9, abs=2 * 2.3)  # superior AP diameter, male
    upper = p[np.abs((p[:, 1] - back[0]) * np.sin(np.radians(slope)) - (p[:, 2] - back[1]) * np.cos(np.radians(slope)))
              < 4.0]
    assert np.ptp(upper[:, 0]) + 1.0 == pytest.approx(vertebra_dimensions("L5")["width"], abs=3.0)  # = L5 endplate
    n = np.array([-np.sin(np.radians(slope)), np.cos(np.radians(slope))])  # endplate normal (y, z)
    c = p.mean(axis=0)
    axis_pts = p[np.linalg.norm((p[:, 1:] - c[1:]) - np.outer((p[:, 1:] - c[1:]) @ n, n), axis=1) < 2.0]
    height = np.ptp(axis_pts[:, 1:] @ n) + 1.0
    assert height == pytest.approx(28.2, abs=2 * 2.1)
    d = vertebra_dimensions("S1")
    assert d["height"] == 28.0 and d["sacral_slope_deg"] == SACRAL_SLOPE_DEG
    assert np.allclose([d["center_x_mm"], d["center_y_mm"], d["center_z_mm"]], c, atol=2.5)


def test_sacral_width_alae_and_sacroiliac_joints(s1):
    s, ct = s1.structures, s1.ct
    sac = s["sacral_bone"].points_mm()
    assert np.ptp(sac[:, 0]) + 1.0 == pytest.approx(103.6, abs=6.8)  # dry sacra, 1 SD
    # sacroiliac joint: ilium lateral to the sacrum on both sides with a narrow joint space between
    for side, sgn in (("left", 1), ("right", -1)):
        il = s[f"iliac_bone_{side}"]
        assert sgn * il.centroid_mm[0] > 50
        x_s, s_s, _ = _sac(s[f"iliac_bone_{side}"])
        auricular = (s_s > 5) & (s_s < 58) & (sgn * x_s < 80)
        assert np.ptp(s_s[auricular]) == pytest.approx(56.2, abs=2 * 4.6)  # auricular height
    # the joint space: soft tissue (+40 HU) between the sacrum and the ilium at the level of S1
    x, ss, w = _sac(s["sacral_bone"])
    sel = (np.abs(ss - 15) < 1) & (np.abs(w - 15) < 1) & (x > 0)
    edge = x[sel].max()
    assert HU["joint"] in [_hu(ct, sacral_point_mm(edge + d, 15.0, 15.0)) for d in (1.0, 2.0)]
    assert s["iliac_bone_left"].contains_mm(sacral_point_mm(edge + 4.5, 15.0, 15.0)[None])[0]
    # the iliac crest's highest point: 38 +- 8 mm above the centre of the sacral base (Okamoto 2020)
    crest = max(s["iliac_bone_left"].bounds_mm[1][2], s["iliac_bone_right"].bounds_mm[1][2])
    assert crest - _P0[1] == pytest.approx(38.0, abs=8.0)


def test_foramina_positions_and_sizes(s1, s2):
    """S1-S3 foramina: left and right, lateral to the canal, posterior/anterior openings where published."""
    dorsal: dict[tuple[str, str], np.ndarray] = {}
    for ph, levels in ((s1, ("S1",)), (s2, ("S1", "S2", "S3"))):
        canal_x = np.abs(ph.structures["spinal_canal"].points_mm()[:, 0]).max()
        for lv in levels:
            for side, sgn in (("left", 1), ("right", -1)):
                st = ph.structures[f"sacral_foramen_canal_{lv}_{side}"]
                x, s, w = _sac(st)
                assert np.all(sgn * x > 0)
                prof = _profiles(s)
                back = _lat_back(np.abs(x), prof)
                opening = np.abs(w - back) <= 2.0
                assert opening.any()
                cx = float(np.mean(np.abs(x[opening])))
                assert cx > canal_x - 2.0, (lv, side)  # lateral to the canal
                pts = st.points_mm()[opening]
                dorsal[(lv, side)] = pts.mean(axis=0)
                if lv == "S1" and ph is s1:
                    assert cx == pytest.approx(24.1, abs=2.9)  # Kim 2023, male, 1 SD
                    thin = np.abs(w - back) <= 1.0
                    assert np.ptp(np.abs(x[thin])) + 1.0 == pytest.approx(8.3, abs=2 * 1.6)
                    front = _lat_front(np.abs(x), prof)
                    ant = np.abs(w - front) <= 2.0
                    ax_ = float(np.mean(np.abs(x[ant])))
                    assert 0.0 < ax_ - cx <= 10.0  # anterior foramen lateral to the posterior (Ebraheim 1996)
                    assert ax_ > vertebra_dimensions("S1")["width"] / 2 - 5.0  # beside the body
                    assert np.ptp(np.abs(x[ant])) + 1.0 == pytest.approx(12.6, abs=3.0)  # Saluja 2018
    for side in SIDES:  # centre spacing = published edge distance + the two radii (8.3 and 7.5 mm wide)
        assert np.linalg.norm(dorsal[("S1", side)] - dorsal[("S2", side)]) == pytest.approx(14.2 + 7.9, abs=2.7)
        assert np.linalg.norm(dorsal[("S2", side)] - dorsal[("S3", side)]) == pytest.approx(12.8 + 7.0, abs=2.0)
    # the S2 inner edges are about 30 mm apart (29.8 +- 2.7 mm)
    assert abs(dorsal[("S2", "left")][0] - dorsal[("S2", "right")][0]) - 7.5 == pytest.approx(29.8, abs=2.7)


def test_foramina_hold_roots_and_no_bone(s1):
    ct = s1.ct
    for side in SIDES:
        st = s1.structures[f"sacral_foramen_canal_S1_{side}"]
        vals = ct.hu[st.mask]
        assert set(np.unique(vals)) <= {HU["epidural_fat"], HU["cauda"]}
        assert np.count_nonzero(vals == HU["cauda"]) > 0.1 * vals.size  # the root


def test_canal_continuous_from_l5_into_the_sacrum(s2):
    l5 = make_spine_phantom(level="L5", spacing_mm=2.0)
    for ph, (s_lo, s_hi) in ((l5, (-5.0, 20.0)), (s2, (30.0, 70.0))):
        canal = ph.structures["spinal_canal"]
        _, n = ndimage.label(canal.mask, structure=np.ones((3, 3, 3)))
        assert n == 1  # one tube
        x, s, w = _sac(canal)
        assert s.min() < s_lo and s.max() > s_hi
    lo, hi = l5.structures["spinal_canal"].bounds_mm
    assert lo[2] < -75.5 - 13 - 10 and hi[2] > -75.5 + 13  # through L5 and below its endplate into S1
    # the dural sac (CSF) ends in the upper third of S2 (Binokay 2006); the sacral roots run on
    ct = s2.ct
    _, s, _ = _sac(s2.structures["spinal_canal"])
    p = s2.structures["spinal_canal"].points_mm()
    hu = np.array([_hu(ct, q) for q in p])
    assert np.any((hu == HU["csf"]) & (s > 30)) and not np.any((hu == HU["csf"]) & (s > 30 + 25 / 3))
    assert np.any((hu == HU["epidural_fat"]) & (s > 45))
    _, sc, _ = _sac(s2.structures["cauda_equina"])
    assert sc.max() > 55


def _crop(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo, hi = np.maximum(idx.min(axis=0) - pad, 0), idx.max(axis=0) + pad + 1
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def test_iliac_vessels_rectum_and_hu(s1, s2):
    s, ct = s1.structures, s1.ct
    sac = s["sacral_bone"].mask
    body_y = s["vertebral_body_S1"].centroid_mm[1]
    for v in VESSELS:  # 1 mm voxels
        st = s[v]
        assert set(np.unique(ct.hu[st.mask])) == {HU["vessel"]}, v
        assert st.centroid_mm[1] < body_y, v  # anterior to the sacrum
        box = _crop(st.mask, 7)
        assert ndimage.distance_transform_edt(~sac[box])[st.mask[box]].min() >= 5.0, v  # clear of the bone
        if not v.startswith("common_iliac_vein"):
            assert abs(st.centroid_mm[0]) > 20, v  # lateral to the midline
        diameter = 2 * ndimage.distance_transform_edt(st.mask[_crop(st.mask, 2)]).max() - 1.0
        if v.startswith("common_iliac_artery"):
            assert diameter == pytest.approx(13.4, abs=2 * 2.0)
        elif v.startswith("common_iliac_vein"):
            assert diameter == pytest.approx(13.1, abs=2 * 2.2)
        elif v.startswith("internal_iliac_artery"):
            assert diameter <= 7.5 + 1.0  # upper reference (Lorbeer 2018)
    # the left common iliac vein crosses in front of L5 to the confluence on the right
    assert s["common_iliac_vein_left"].points_mm()[:, 0].min() < 0
    # rectum at S3: behind it the presacral space (13.0 mm in men, Oto 2004)
    r, sac2 = s2.structures["rectum"], s2.structures["sacral_bone"]
    d2 = ndimage.distance_transform_edt(~sac2.mask, sampling=np.asarray(s2.ct.grid.spacing)[::-1])
    assert d2[r.mask].min() == pytest.approx(13.0, abs=3.0)
    gas = s2.ct.hu[r.mask | s2.structures["sigmoid_colon"].mask] == -1000
    assert gas.any()
    # prone: the gas floats to the posterior (non-dependent) side of the lumen
    lum = (s2.ct.hu == -1000) & (r.mask | s2.structures["sigmoid_colon"].mask)
    p_gas = s2.ct.grid.index_to_world(np.argwhere(lum)[:, ::-1])
    assert p_gas[:, 1].mean() > (s2.structures["sigmoid_colon"].centroid_mm[1] + r.centroid_mm[1]) / 2
    # bone HU (Nakamura 2020): S1 body, ala; cortex; canal fat
    assert _hu(ct, sacral_point_mm(17.0, 14.0, 3.0)) == pytest.approx(280, abs=20)  # S1 body beside the lesion
    assert _hu(ct, sacral_point_mm(40.0, 14.0, 18.0)) == pytest.approx(100, abs=5)  # S1 ala
    assert _hu(s2.ct, sacral_point_mm(12.0, 50.0, 6.0)) == pytest.approx(192, abs=20)  # S2 body beside the lesion
    assert _hu(ct, sacral_point_mm(0.0, 14.0, 24.0)) in (HU["epidural_fat"], HU["csf"], HU["cauda"])


# ------------------------------------------------------------------------------------ lesions
@pytest.mark.parametrize("level, diam", [("S1", 30.0), ("S2", 20.0), ("S3", 16.0)])
def test_lesion_inside_the_sacral_body(level, diam):
    ph = make_spine_phantom(level=level, spacing_mm=2.0, lesion_diameter_mm=diam)
    t, vb = ph.structures["target"], ph.structures[f"vertebral_body_{level}"]
    assert np.all(vb.mask[t.mask])
    assert 0.5 * 4 / 3 * np.pi * (diam / 2) ** 3 / 1000 < t.volume_cm3 <= 4 / 3 * np.pi * (diam / 2 + 1) ** 3 / 1000
    assert np.all(ph.ct.hu[t.mask] == HU["lytic"])
    x, s, w = _sac(t)
    d = vertebra_dimensions(level)
    assert d["s_top_mm"] <= s.min() and s.max() <= d["s_bottom_mm"]
    assert ph.level == level and ph.levels == (level,) and ph.lesions[0].target == "target"
    for side in SIDES:
        assert f"pedicle_{side}_{level}" in ph.structures
        assert not np.any(ph.structures[f"pedicle_{side}_{level}"].mask & vb.mask)


def test_blastic_sacral_lesion():
    ph = make_spine_phantom(level="S1", spacing_mm=2.0, lesion_type="blastic", lesion_diameter_mm=24.0)
    vals = ph.ct.hu[ph.structures["target"].mask]
    assert np.all(vals == HU["blastic"])
    assert 654 - 2 * 176 <= vals.mean() <= 654 + 2 * 176  # Ulano 2016, mean attenuation +- 2 SD
    assert np.all(ph.structures["bone"].mask[ph.structures["target"].mask])


def test_posterior_breach_into_the_sacral_canal():
    ph = make_spine_phantom(level="S1", spacing_mm=2.0, lesion_diameter_mm=20.0, posterior_breach=True)
    t, vb, canal = (ph.structures[n] for n in ("target", "vertebral_body_S1", "spinal_canal"))
    assert np.any(t.mask & ~vb.mask) and not np.any(canal.mask & t.mask)


def test_several_levels():
    ph = make_spine_phantom(level="L5,S1", spacing_mm=2.0, lesion_diameter_mm=(30.0, 24.0),
                            lesion_type=("lytic", "blastic"))
    assert ph.levels == ("L5", "S1") and ph.level == "L5,S1" and "target" not in ph.structures
    for le, ltype in zip(ph.lesions, ("lytic", "blastic")):
        t = ph.structures[f"target_{le.level}"]
        assert t.role == Role.TARGET and le.target == t.name and le.lesion_type == ltype
        assert np.all(ph.structures[f"vertebral_body_{le.level}"].mask[t.mask])
        assert np.all(ph.ct.hu[t.mask] == HU[ltype])
    assert ph.structures.first(Role.TARGET).name == "target_L5"
    same = make_spine_phantom(level=("L5", "S1"), spacing_mm=2.0, lesion_diameter_mm=(30.0, 24.0),
                              lesion_type=("lytic", "blastic"))
    assert np.array_equal(same.ct.hu, ph.ct.hu) and same.ct.series_uid == ph.ct.series_uid
    assert make_spine_phantom(level="S1", spacing_mm=2.0).ct.series_uid != ph.ct.series_uid
    three = make_spine_phantom(level="S1,S2,S3", spacing_mm=3.0, lesion_diameter_mm=(24.0, 18.0, 12.0))
    assert len(three.structures.by_role(Role.TARGET)) == 3


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(level="S7"), "unknown level 'S7'"),
        (dict(level="X1"), "unknown level 'X1'"),
        (dict(level="S4"), "outside the phantom"),
        (dict(level="T5"), "outside the phantom"),
        (dict(level="L5,L5"), "twice"),
        (dict(level="L3,S1"), "not adjacent"),
        (dict(level="L4,S1,L5,S3"), "not adjacent"),
        (dict(level=" , "), "empty"),
        (dict(level=5), "level must be a string"),
        (dict(level="S2", lesion_diameter_mm=45), "larger than the S2 body width"),
        (dict(level="S1", lesion_diameter_mm=60), "larger than the S1 body width"),
        (dict(level="S1", lesion_center_offset_mm=(0, 0, 40)), "outside the S1 body"),
        (dict(level="L5,S1", lesion_diameter_mm=(20.0,)), "1 value for 2 levels"),
        (dict(level="L5,S1", lesion_center_offset_mm=[(0, 0, 0)] * 3), "3 rows for 2 levels"),
        (dict(level="S1", lesion_type="mixed"), "lesion_type"),
    ],
)
def test_bad_input_is_one_clear_line(kw, match):
    with pytest.raises(InputError, match=match) as info:
        make_spine_phantom(**{"spacing_mm": 3.0, **kw})
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ derived anatomy, CLI
def test_derive_anatomy_from_ct_and_target_alone():
    """Given only the CT and the target, derive_anatomy finds the sacral body and a canal behind it."""
    ph = make_spine_phantom(level="S1", spacing_mm=2.0, lesion_diameter_mm=20.0)
    out, notes = derive_anatomy(ph.ct, StructureSet([ph.structures["target"]]))
    assert {"body", "vertebral_body", "pedicle_left", "pedicle_right", "spinal_canal"} <= set(out.names)
    assert dice(out["vertebral_body"], ph.structures["vertebral_body_S1"]) > 0.8  # measured 0.90
    canal = out["spinal_canal"]
    assert np.count_nonzero(canal.mask & ph.structures["spinal_canal"].mask) > 0.6 * np.count_nonzero(canal.mask)
    assert len(notes) >= 5


def test_cli_phantom_sacral_case(tmp_path, capsys):
    out = tmp_path / "case"
    assert main(["phantom", str(out), "--level", "S1", "--spacing-mm", "3"]) == 0
    assert "rtstruct" in capsys.readouterr().out
    ref = make_spine_phantom(level="S1", spacing_mm=3.0)
    ct = load_ct(out / "ct")
    assert ct.grid.same_geometry(ref.ct.grid) and np.array_equal(ct.hu, ref.ct.hu)
    rs = load_rtstruct(out / "rtstruct.dcm", ct)
    labels = load_label_map(out / "labels.nii.gz", out / "labels.json", reference=ct)
    assert set(rs.names) == set(ref.structures.names)
    for name, s in ref.structures.items():
        assert np.array_equal(labels[name].mask, s.mask), name
        assert rs[name].role == s.role, name
        tol = 0.03 if s.volume_cm3 > 20 else 0.35  # thin tubes rasterise coarsely from 3 mm contours
        assert rs[name].volume_cm3 == pytest.approx(s.volume_cm3, rel=tol), name
    info = json.loads((out / "phantom.json").read_text())
    assert info["level"] == "S1" and "sacral_foramen_canal_S1_left" in info["volumes_cm3"]
    case = load_case(out / "case.json")
    assert set(case.structures.names) >= set(ref.structures.names)
    assert main(["phantom", str(tmp_path / "two"), "--level", "L5,S1", "--spacing-mm", "3"]) == 0
    assert main(["phantom", str(tmp_path / "bad"), "--level", "S7"]) == 2
