"""Derived anatomy (body, air, vertebra parts, canal) against the phantom's ground truth and a real CT.

The real CT and its TotalSegmentator segmentation are copies in ``tests/data/real_ct``
(provenance and licence in its README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from seedplan.errors import GeometryError, InputError
from seedplan.geometry import Grid
from seedplan.imaging import (
    CTImage,
    Role,
    Structure,
    StructureSet,
    adjacent_levels,
    air_regions,
    body_outline,
    derive_anatomy,
    dice,
    load_ct,
    load_totalsegmentator,
    make_spine_phantom,
    normalize_level,
    spinal_canal_levels,
    thecal_sac,
    vertebra_parts,
    vertebra_parts_near,
)
from seedplan.imaging.phantom import _segment

DATA = Path(__file__).resolve().parents[1] / "data" / "real_ct"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def phantoms():
    """Phantoms at 1.5 mm for two levels (ground truth for the spine parts)."""
    return {lv: make_spine_phantom(level=lv, spacing_mm=1.5) for lv in ("L1", "L4")}


@pytest.fixture(scope="module")
def real():
    ct = load_ct(DATA / "ct_T12-L2_3mm.nii.gz")
    ts = load_totalsegmentator(DATA / "totalseg_T12-L2_3mm.nii.gz", ct)
    return ct, ts


@pytest.fixture(scope="module")
def real_target(real):
    """A 20 mm lesion in the anterior half of the L1 body (inside the TotalSegmentator L1 label)."""
    ct, ts = real
    v = ts["vertebra_L1"]
    # anterior part of the vertebra's body: 12 mm in front of the vertebra centroid (LPS: -y)
    c = v.centroid_mm + np.array([0.0, -12.0, 0.0])
    pts = ct.grid.voxel_centers_mm()
    m = (np.linalg.norm(pts - c, axis=-1) <= 10.0) & v.mask
    return Structure("GTV", Role.TARGET, m, ct.grid)


@pytest.fixture(scope="module")
def real_derived(real, real_target):
    ct, ts = real
    return derive_anatomy(ct, ts.with_structures(real_target))


def _lungs(ts: StructureSet) -> np.ndarray:
    return np.logical_or.reduce([s.mask for n, s in ts.items() if n.startswith("lung_")])


def _flip_y(ct: CTImage, structures: StructureSet) -> tuple[CTImage, StructureSet]:
    """The same patient stored with the rows reversed (direction y column negated)."""
    g = ct.grid
    d = g.direction_matrix.copy()
    d[:, 1] *= -1
    g2 = Grid(g.index_to_world([0, g.size[1] - 1, 0]), g.spacing, g.size, d)
    ct2 = CTImage(g2, np.ascontiguousarray(ct.hu[:, ::-1, :]))
    return ct2, StructureSet(Structure(s.name, s.role, s.mask[:, ::-1, :], g2) for s in structures.values())


def _slices(mask: np.ndarray) -> np.ndarray:
    return np.nonzero(mask.any(axis=(1, 2)))[0]


def _on_slices(mask: np.ndarray, ks: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    out[ks] = mask[ks]
    return out


# ------------------------------------------------------------------------------- levels
def test_levels():
    assert normalize_level(" l1 ") == "L1" and normalize_level("sacrum") == "S1"
    assert adjacent_levels("L1") == ("T12", "L2")
    assert adjacent_levels("C1") == (None, "C2") and adjacent_levels("S1") == ("L5", None)
    with pytest.raises(InputError, match="valid levels"):
        normalize_level("L6")


# ------------------------------------------------------------------------- body and air
def test_body_outline_phantom_1mm(phantom1):
    body = body_outline(phantom1.ct)
    assert body.role is Role.BODY and body.derived
    assert dice(body, phantom1.structures["body"]) > 0.98


def test_body_outline_detaches_a_table_on_a_flipped_grid():
    ph = make_spine_phantom(level="L4", spacing_mm=2.0)
    ct, truth = _flip_y(ph.ct, ph.structures)
    pts = ct.grid.voxel_centers_mm()
    # a 6 mm table plate pressed against the anterior skin (y = -115 mm), wider than the patient
    plate = (pts[..., 1] > -119.0) & (pts[..., 1] < -113.0)
    hu = ct.hu.astype(np.float32)
    hu[plate] = 300.0
    body = body_outline(CTImage(ct.grid, hu))
    assert dice(body, truth["body"]) > 0.99
    extra = body.mask & ~truth["body"].mask
    dist = ndimage.distance_transform_edt(~truth["body"].mask, sampling=ct.grid.spacing[::-1])
    assert extra.sum() == 0 or dist[extra].max() <= 5.0  # only where the plate touches the skin
    # the plate away from the patient is not body
    far = plate & (np.abs(pts[..., 0]) > 140.0)
    assert far.any() and not np.any(body.mask & far)


def test_real_ct_body_holds_the_lungs_and_air_covers_them(real):
    ct, ts = real
    lungs = _lungs(ts)
    body = body_outline(ct)
    assert np.all(body.mask[lungs])  # air inside the patient is inside the body
    assert np.all(body.mask[ts["aorta"].mask])
    # the CT table (thin curved line behind the patient, LPS +y) is not body
    pts = ct.grid.voxel_centers_mm()
    back = pts[..., 1][body.mask].max()
    table = (ct.hu > -500) & (pts[..., 1] > back)
    assert table.any()
    air = air_regions(ct, body)
    assert air.role is Role.AVOIDANCE and air.derived
    assert np.count_nonzero(air.mask & lungs) > 0.9 * lungs.sum()
    assert not np.any(air.mask & ~body.mask)
    # bowel gas is air too: colon has gas in this CT
    assert np.count_nonzero(air.mask & ts["colon"].mask) > 0
    # no skin shell: air stays away from the body surface
    surface = body.mask & ~ndimage.binary_erosion(body.mask, structure=np.ones((1, 3, 3), bool), border_value=1)
    assert not np.any(air.mask & surface)


@pytest.mark.parametrize("cut", [(0, 108), (16, 106)])
def test_real_ct_cut_at_the_border_keeps_the_lungs_inside(real, cut):
    ct, ts = real
    g = ct.grid
    i0, i1 = cut
    g2 = Grid(g.index_to_world([i0, 0, 0]), g.spacing, (i1 - i0, g.size[1], g.size[2]), g.direction_matrix)
    ct2 = CTImage(g2, ct.hu[:, :, i0:i1])
    lungs = _lungs(ts)[:, :, i0:i1]
    assert lungs[:, :, [0, -1]].any()  # the lungs reach the cut
    body = body_outline(ct2)
    assert np.all(body.mask[lungs])
    air = air_regions(ct2, body)
    assert np.count_nonzero(air.mask & lungs) > 0.9 * lungs.sum()


# --------------------------------------------------------------------- vertebra parts
# Dice measured (1.5 mm phantoms): CT alone L1 body 0.99, pedicles 0.92, canal 1.00;
# L4 body 0.99, pedicles 0.91, canal 1.00; whole-vertebra mask L1 body 0.99, pedicles 0.86, canal 0.98.
@pytest.mark.parametrize("level", ["L1", "L4"])
def test_vertebra_parts_near_phantom(phantoms, level):
    ph = phantoms[level]
    truth = ph.structures
    parts = vertebra_parts_near(ph.ct, ph.lesion_center_mm, level)
    assert set(parts) >= {"vertebral_body", "pedicle_left", "pedicle_right", "posterior_elements", "spinal_canal"}
    assert all(s.derived for s in parts.values())
    assert parts["vertebral_body"].name == f"vertebral_body_{level}"
    assert parts["pedicle_left"].role is Role.PEDICLE and parts["spinal_canal"].role is Role.CANAL
    assert dice(parts["vertebral_body"], truth[f"vertebral_body_{level}"]) > 0.95
    assert dice(parts["pedicle_left"], truth[f"pedicle_left_{level}"]) > 0.8
    assert dice(parts["pedicle_right"], truth[f"pedicle_right_{level}"]) > 0.8
    ks = _slices(parts["vertebral_body"].mask)
    assert dice(parts["spinal_canal"].mask[ks], truth["spinal_canal"].mask[ks]) > 0.9
    # left is +x (LPS), on both sides of the canal
    xc = parts["spinal_canal"].centroid_mm[0]
    assert parts["pedicle_left"].centroid_mm[0] > xc > parts["pedicle_right"].centroid_mm[0]
    # the parts do not overlap
    names = ["vertebral_body", "pedicle_left", "pedicle_right", "posterior_elements", "spinal_canal"]
    total = sum(parts[n].mask.astype(int) for n in names)
    assert total.max() == 1


def test_vertebra_parts_from_a_whole_vertebra_mask(phantoms):
    """The TotalSegmentator route: the phantom's bone of one level as the whole vertebra."""
    ph = phantoms["L1"]
    g = ph.ct.grid
    lo, hi = _segment("L1")
    z = g.index_to_world(np.stack([np.zeros(g.shape[0]), np.zeros(g.shape[0]), np.arange(g.shape[0])], 1))[:, 2]
    vert = ph.structures["bone"].mask & ((z >= lo) & (z < hi))[:, None, None]
    parts = vertebra_parts(ph.ct, Structure("vertebra_L1", Role.BONE, vert, g), "L1")
    truth = ph.structures
    assert dice(parts["vertebral_body"], truth["vertebral_body_L1"]) > 0.95
    assert dice(parts["pedicle_left"], truth["pedicle_left_L1"]) > 0.75
    assert dice(parts["pedicle_right"], truth["pedicle_right_L1"]) > 0.75
    ks = _slices(vert)
    assert dice(parts["spinal_canal"].mask[ks], truth["spinal_canal"].mask[ks]) > 0.9
    # the parts tile the vertebra (the canal is the hole in it)
    union = parts["vertebral_body"].mask | parts["pedicle_left"].mask | parts["pedicle_right"].mask
    union |= parts["posterior_elements"].mask
    assert np.array_equal(union, vert)


def test_vertebral_body_by_rings_on_the_phantom(phantoms):
    """The fallback for osteoporotic/coarse CT, checked where the truth is known."""
    ph = phantoms["L4"]
    parts = vertebra_parts_near(ph.ct, ph.lesion_center_mm, "L4", body_method="rings")
    assert "filled cortical ring" in parts["vertebral_body"].derived
    assert dice(parts["vertebral_body"], ph.structures["vertebral_body_L4"]) > 0.9
    target = ph.structures["target"].mask
    assert np.count_nonzero(parts["vertebral_body"].mask & target) > 0.95 * target.sum()


def test_spinal_canal_levels_reach_the_neighbours(phantoms):
    ph = phantoms["L4"]
    parts = vertebra_parts_near(ph.ct, ph.lesion_center_mm, "L4")
    canal = spinal_canal_levels(ph.ct, parts["spinal_canal"], levels="L3-L5")
    truth = ph.structures["spinal_canal"].mask
    ks = _slices(canal.mask)
    vb = ph.structures["vertebral_body_L4"].mask
    height_k = _slices(vb).size
    # one vertebra + disc further each way (or the end of the CT)
    assert ks.min() <= max(_slices(vb).min() - height_k, 0) + 1
    assert ks.max() >= min(_slices(vb).max() + height_k, truth.shape[0] - 1) - 1
    assert canal.role is Role.CANAL and "L3-L5" in canal.derived
    assert dice(canal.mask, _on_slices(truth, ks)) > 0.9
    assert np.count_nonzero(canal.mask & truth) > 0.9 * canal.n_voxels


def test_thecal_sac_inside_the_canal(phantoms):
    ph = phantoms["L1"]
    canal = ph.structures["spinal_canal"]
    sac = thecal_sac(canal, margin_mm=2.0)
    assert sac.role is Role.CANAL and sac.derived
    assert not np.any(sac.mask & ~canal.mask)
    assert 0.3 * canal.n_voxels < sac.n_voxels < 0.9 * canal.n_voxels
    assert np.array_equal(_slices(sac.mask), _slices(canal.mask))


# ----------------------------------------------------------------------- derive_anatomy
def test_derive_anatomy_phantom_from_the_target_alone():
    ph = make_spine_phantom(level="L2", spacing_mm=2.0)
    given = StructureSet([ph.structures["target"]])
    out, notes = derive_anatomy(ph.ct, given, level="L2")
    truth = ph.structures
    assert out["target"] is given["target"]
    for name in ("body", "vertebral_body_L2", "pedicle_left_L2", "pedicle_right_L2", "spinal_canal", "thecal_sac"):
        assert name in out and out[name].derived, name
        assert any(line.startswith(f"{name}: ") for line in notes), name
    assert out["body"].role is Role.BODY and out["spinal_canal"].role is Role.CANAL
    assert dice(out["body"], truth["body"]) > 0.98
    assert dice(out["vertebral_body_L2"], truth["vertebral_body_L2"]) > 0.95
    assert dice(out["pedicle_left_L2"], truth["pedicle_left_L2"]) > 0.75
    assert dice(out["spinal_canal"], truth["spinal_canal"]) > 0.9
    assert not np.any(out["spinal_canal"].mask & out["vertebral_body_L2"].mask)
    # every derived structure says how it was derived; the given one does not
    assert all(s.derived for n, s in out.items() if n != "target") and not out["target"].derived


def test_derive_anatomy_given_structures_win():
    ph = make_spine_phantom(level="L3", spacing_mm=2.0)
    truth = ph.structures
    keep = ["target", "body", "vertebral_body_L3", "pedicle_left_L3", "pedicle_right_L3", "spinal_canal", "cauda_equina"]
    given = StructureSet(truth[n] for n in keep)
    out, _ = derive_anatomy(ph.ct, given)
    for n in keep:
        assert out[n] is given[n]
    added = [n for n in out.names if n not in keep]
    assert set(added) <= {"air_inside_body", "posterior_elements"}, added
    # a given cord: the canal is derived beside it, no thecal sac
    given2 = StructureSet([truth["target"], truth["cauda_equina"]])
    out2, _ = derive_anatomy(ph.ct, given2)
    assert "spinal_canal" in out2 and "thecal_sac" not in out2 and out2["cauda_equina"] is given2["cauda_equina"]
    # a given canal: the thecal sac is derived inside it, the canal is not derived again
    given3 = StructureSet([truth["target"], truth["spinal_canal"]])
    out3, _ = derive_anatomy(ph.ct, given3)
    assert out3["spinal_canal"] is given3["spinal_canal"]
    assert not np.any(out3["thecal_sac"].mask & ~truth["spinal_canal"].mask)


def test_derive_anatomy_without_a_target_derives_body_and_air_only(real):
    ct, _ = real
    out, notes = derive_anatomy(ct)
    assert set(out.names) == {"body", "air_inside_body"}
    assert any("not derived" in line for line in notes)


def test_derive_anatomy_errors(phantoms):
    ph = phantoms["L1"]
    air_point = np.array(ph.ct.grid.origin_mm) + 5.0
    with pytest.raises(InputError, match="cannot find the treated vertebra"):
        derive_anatomy(ph.ct, target=air_point)
    other = Grid((0, 0, 0), (1, 1, 1), (4, 4, 4))
    with pytest.raises(GeometryError, match="not on the CT grid"):
        derive_anatomy(ph.ct, StructureSet([Structure("x", Role.OAR, np.ones((4, 4, 4), bool), other)]))
    g = ph.ct.grid
    tilted = Grid(g.origin_mm, g.spacing_mm, g.size, [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    with pytest.raises(GeometryError, match="not axial"):
        body_outline(CTImage(tilted, ph.ct.hu))
    blob = np.zeros(g.shape, bool)
    blob[10:20, 60:80, 60:80] = True
    with pytest.raises(InputError, match="no enclosed vertebral foramen.*'blob'"):
        vertebra_parts(ph.ct, Structure("blob", Role.BONE, blob, g))


# -------------------------------------------------------------------------- real CT
def test_real_ct_with_totalsegmentator(real, real_derived):
    ct, ts = real
    out, notes = real_derived
    g = ct.grid
    for name in ("body", "air_inside_body", "vertebral_body_L1", "pedicle_left_L1", "pedicle_right_L1",
                 "spinal_canal"):
        assert name in out and out[name].derived, name
    assert "thecal_sac" not in out  # TotalSegmentator's spinal_cord is given
    for n in ts.names:
        assert out[n] is ts[n]
    assert all(out[n].derived for n in out.names if n not in ts.names and n != "GTV")
    assert len(notes) == len(out) - len(ts) - 1
    vb, canal, cord = out["vertebral_body_L1"], out["spinal_canal"], ts["spinal_cord"]
    # the canal at L1 holds the cord label and does not overlap the vertebral body
    ks = _slices(ts["vertebra_L1"].mask)
    cord_l1 = _on_slices(cord.mask, ks)
    assert np.count_nonzero(canal.mask & cord_l1) > 0.9 * cord_l1.sum()
    assert not np.any(canal.mask & vb.mask)
    # over T12-L2 too (the whole CT here)
    assert np.count_nonzero(canal.mask & cord.mask) > 0.9 * cord.n_voxels
    assert _slices(canal.mask).size == g.shape[0]
    # the body is inside the vertebra (holes of the label at 3 mm filled) and holds the lesion
    assert np.count_nonzero(vb.mask & ts["vertebra_L1"].mask) > 0.99 * vb.n_voxels
    assert np.all(vb.mask[out["GTV"].mask])
    assert 25.0 < vb.volume_cm3 < 50.0  # adult L1 body about 35 cm3
    # pedicles: between the canal and the body (AP), lateral to the canal on their side
    c_vb = vb.centroid_mm
    canal_l1 = Structure("c", Role.CANAL, _on_slices(canal.mask, ks), g)
    for side, sign in (("left", 1), ("right", -1)):
        ped = out[f"pedicle_{side}_L1"]
        assert not np.any(ped.mask & (vb.mask | canal.mask))
        p = ped.centroid_mm
        assert c_vb[1] < p[1] < canal_l1.bounds_mm[1][1]
        assert sign * (p[0] - canal_l1.centroid_mm[0]) > 0.5 * np.ptp(canal_l1.points_mm()[:, 0])
        assert abs(p[0] - c_vb[0]) < 30.0
        assert 0.5 < ped.volume_cm3 < 5.0


def test_real_ct_from_the_ct_alone(real, real_target, real_derived):
    """No structure but the target: the 3 mm osteoporotic L1 still gives body, pedicles, canal."""
    ct, ts = real
    out, _ = derive_anatomy(ct, StructureSet([real_target]))
    ref, _ = real_derived
    vb = out["vertebral_body"]
    vert = ts["vertebra_L1"].mask
    near_vert = ndimage.binary_dilation(vert, structure=np.ones((1, 3, 3), bool))
    assert np.count_nonzero(vb.mask & near_vert) > 0.95 * vb.n_voxels
    assert dice(vb, ref["vertebral_body_L1"]) > 0.85  # measured 0.92
    cord = ts["spinal_cord"].mask
    ks = _slices(vert)
    assert np.count_nonzero(out["spinal_canal"].mask & _on_slices(cord, ks)) > 0.9 * _on_slices(cord, ks).sum()
    assert not np.any(out["spinal_canal"].mask & vb.mask)
    for side in ("left", "right"):
        assert out[f"pedicle_{side}"].n_voxels > 0
        assert np.count_nonzero(out[f"pedicle_{side}"].mask & near_vert) > 0.8 * out[f"pedicle_{side}"].n_voxels
