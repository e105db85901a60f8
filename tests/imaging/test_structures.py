"""Structures, StructureSet, RTSTRUCT and label-map I/O, resampling."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from seedplan.errors import FileFormatError, GeometryError, InputError
from seedplan.geometry import Grid
from seedplan.imaging import (
    CTImage,
    Role,
    Structure,
    StructureNotFoundError,
    StructureSet,
    load_label_map,
    load_mask,
    load_rtstruct,
    rasterize_polygons,
    write_label_map,
)
from seedplan.io.dicom import write_ct_dicom_series, write_rtstruct


def _rtstruct(path, for_uid, series_uid, rois):
    """Minimal RTSTRUCT with ``rois``: name -> list of (n, 3) world contours."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = "1.2.3.99"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    se = Dataset()
    se.SeriesInstanceUID = series_uid
    st = Dataset()
    st.RTReferencedSeriesSequence = Sequence([se])
    fr = Dataset()
    fr.FrameOfReferenceUID = for_uid
    fr.RTReferencedStudySequence = Sequence([st])
    ds.ReferencedFrameOfReferenceSequence = Sequence([fr])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for n, (name, contours) in enumerate(rois.items(), start=1):
        r = Dataset()
        r.ROINumber = n
        r.ROIName = name
        r.ReferencedFrameOfReferenceUID = for_uid
        ds.StructureSetROISequence.append(r)
        rc = Dataset()
        rc.ReferencedROINumber = n
        rc.ContourSequence = Sequence()
        for pts in contours:
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.4f}" for v in np.asarray(pts).reshape(-1)]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    ds.save_as(path, enforce_file_format=True)
    return path


def _circle(cx, cy, r, n=360):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[cx + r * np.cos(t), cy + r * np.sin(t)]


@pytest.mark.parametrize("oblique", [False, True])
def test_rtstruct_known_polygons(tmp_path, small_ct, oblique):
    a = np.deg2rad(30)
    d = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]) if oblique else None
    ct = small_ct(direction=d, spacing=(0.5, 0.5, 2.0), size=(120, 120, 10), origin=(-30, -30, 0))
    g = ct.grid
    nslices = [2, 3, 4, 5]

    def world(poly_mm_inplane, k):
        # in-plane mm (along i and j axes, from the origin) on slice k -> world
        ij = np.asarray(poly_mm_inplane) / np.array(g.spacing_mm[:2])
        return g.index_to_world(np.c_[ij, np.full(len(ij), float(k))])

    square = np.array([[10.1, 10.1], [30.1, 10.1], [30.1, 30.1], [10.1, 30.1]])
    rois = {
        "square": [world(square, k) for k in nslices],
        "circle": [world(_circle(30, 30, 15), k) for k in nslices],
        "ring": [c for k in nslices for c in (world(_circle(30, 30, 15), k), world(_circle(30, 30, 8)[::-1], k))],
    }
    path = _rtstruct(tmp_path / "rs.dcm", ct.frame_of_reference_uid, ct.series_uid, rois)
    ss = load_rtstruct(path, ct)
    assert set(ss) == {"square", "circle", "ring"}
    area_px = g.spacing_mm[0] * g.spacing_mm[1]
    expected = {"square": 400.0, "circle": np.pi * 15**2, "ring": np.pi * (15**2 - 8**2)}
    for name, area in expected.items():
        per_slice = ss[name].mask.sum(axis=(1, 2)) * area_px
        assert list(np.nonzero(per_slice)[0]) == nslices
        assert per_slice[nslices].mean() == pytest.approx(area, rel=0.02), name
        vol = ss[name].volume_cm3 * 1000
        assert vol == pytest.approx(area * len(nslices) * g.spacing_mm[2], rel=0.02)
    # the hole is empty
    centre_ijk = np.array([30 / 0.5, 30 / 0.5, 3])
    i, j, k = np.rint(centre_ijk).astype(int)
    assert ss["circle"].mask[k, j, i] and not ss["ring"].mask[k, j, i]


def test_rasterize_even_odd():
    outer = np.array([[1.5, 1.5], [8.5, 1.5], [8.5, 8.5], [1.5, 8.5]])
    inner = np.array([[3.5, 3.5], [6.5, 3.5], [6.5, 6.5], [3.5, 6.5]])
    m = rasterize_polygons([outer, inner], (10, 10))
    assert m.sum() == 49 - 9


def test_write_rtstruct_round_trip(phantom2, tmp_path):
    ct = write_ct_dicom_series(phantom2.ct, tmp_path / "ct")
    path = write_rtstruct(phantom2.structures, ct, tmp_path / "rs.dcm")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTSTRUCT"
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == ct.frame_of_reference_uid
    assert ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID == ct.series_uid
    back = load_rtstruct(path, load_ct_from(tmp_path / "ct"))
    assert set(back) == set(phantom2.structures)
    for name, s in phantom2.structures.items():
        assert back[name].volume_cm3 == pytest.approx(s.volume_cm3, rel=0.03), name
        assert back[name].role == s.role


def load_ct_from(path):
    from seedplan.imaging import load_ct

    return load_ct(path)


def test_rtstruct_other_ct_refused(phantom2, tmp_path, small_ct):
    ct = write_ct_dicom_series(phantom2.ct, tmp_path / "ct")
    path = write_rtstruct(phantom2.structures.without("body", "bone"), ct, tmp_path / "rs.dcm")
    other = CTImage(ct.grid, ct.hu, series_uid="1.2.3.9", frame_of_reference_uid="1.2.3.8")
    with pytest.raises(GeometryError, match="rs.dcm"):
        load_rtstruct(path, other)
    same_for = CTImage(ct.grid, ct.hu, series_uid="1.2.3.9", frame_of_reference_uid=ct.frame_of_reference_uid)
    with pytest.raises(GeometryError, match="series"):
        load_rtstruct(path, same_for)
    not_rt = sorted((tmp_path / "ct").glob("*.dcm"))[0]
    with pytest.raises(FileFormatError, match=not_rt.name):
        load_rtstruct(not_rt, ct)


def _sphere(grid, center, volume_mm3):
    r = (3 * volume_mm3 / (4 * np.pi)) ** (1 / 3)
    return np.linalg.norm(grid.voxel_centers_mm() - np.asarray(center), axis=-1) <= r


@pytest.mark.parametrize("spacing", [1.0, 2.5])
def test_resample_sphere_volume(spacing):
    src = Grid((-20, -20, -20), (0.5, 0.5, 0.5), (81, 81, 81))
    s = Structure("sphere", Role.TARGET, _sphere(src, (0.3, -0.2, 0.1), 2000.0), src)
    assert s.volume_cm3 == pytest.approx(2.0, rel=0.005)
    for shift in (0.0, 0.37):
        dst = Grid((-24 + shift, -24 + 2 * shift, -24), (spacing,) * 3, (int(48 / spacing) + 1,) * 3)
        r = s.resampled(dst)
        assert r.volume_cm3 == pytest.approx(2.0, rel=0.02)
        assert np.allclose(r.centroid_mm, s.centroid_mm, atol=0.3 * spacing)


def test_resample_oblique_and_anisotropic():
    src = Grid((-20, -20, -20), (1.0, 1.0, 2.0), (41, 41, 21))
    s = Structure("sphere", "oar", _sphere(src, (0, 0, 0), 2000.0), src)
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    dst = Grid((-5, -25, -18), (1.2, 0.8, 1.5), (40, 50, 25), rot)
    r = s.resampled(dst)
    assert r.volume_cm3 == pytest.approx(s.volume_cm3, rel=0.02)
    assert np.allclose(r.centroid_mm, s.centroid_mm, atol=0.5)


def test_structure_validation_and_set(small_ct):
    g = Grid((0, 0, 0), (1, 1, 1), (4, 3, 2))
    with pytest.raises(GeometryError, match="tumour"):
        Structure("tumour", Role.TARGET, np.zeros((3, 3, 3), bool), g)
    with pytest.raises(InputError, match="valid roles"):
        Structure("x", "banana", np.zeros(g.shape, bool), g)
    m = np.zeros(g.shape, bool)
    m[1, 1, 1:3] = True
    a = Structure("a", "target", m, g)
    assert a.volume_cm3 == pytest.approx(0.002)
    assert np.allclose(a.centroid_mm, (1.5, 1, 1))
    lo, hi = a.bounds_mm
    assert np.allclose(lo, (1, 1, 1)) and np.allclose(hi, (2, 1, 1))
    assert not a.mask.flags.writeable
    ss = StructureSet([a, Structure("b", Role.OAR, m, g)])
    assert ss.first(Role.TARGET) is ss["a"] and [s.name for s in ss.by_role("oar")] == ["b"]
    assert ss.get("A") is ss["a"]
    with pytest.raises(StructureNotFoundError, match="available structures: a, b"):
        ss.get("cord")
    with pytest.raises(InputError, match="role 'body'"):
        ss.first("body")
    assert "a" in ss and "zz" not in ss
    with pytest.raises(InputError, match="duplicate"):
        StructureSet([a, a])
    g2 = Grid((5, 0, 0), (1, 1, 1), (4, 3, 2))
    with pytest.raises(GeometryError, match="'c'"):
        StructureSet([a, Structure("c", "oar", m, g2)])


def test_label_map_round_trip_exact(phantom2, tmp_path):
    img, legend = write_label_map(phantom2.structures, tmp_path / "labels.nii.gz")
    assert legend.name == "labels.json"
    doc = json.loads(legend.read_text())
    assert doc["labels"]["1"]["name"] == phantom2.structures.names[0]
    back = load_label_map(img, legend, reference=phantom2.ct)
    for name, s in phantom2.structures.items():
        assert np.array_equal(back[name].mask, s.mask), name
        assert back[name].role == s.role
    # a plain dict legend: one structure per label value
    with pytest.warns(UserWarning, match="not in the legend"):
        simple = load_label_map(img, {1: "target"}, reference=phantom2.ct)
    assert simple["target"].role == Role.TARGET


def test_mask_geometry_mismatch(phantom2, tmp_path):
    s = phantom2.structures["target"]
    coarse = s.resampled(phantom2.ct.grid.with_spacing(4.0))
    img, _ = write_label_map([coarse], tmp_path / "target4mm.nii.gz")
    with pytest.raises(GeometryError, match="target4mm.nii.gz"):
        load_mask(img, "target", "target", reference=phantom2.ct)
    with pytest.raises(GeometryError, match="target4mm.nii.gz"):
        load_label_map(img, {1: "target"}, reference=phantom2.ct)
    res = load_mask(img, "target", "target", reference=phantom2.ct, resample=True)
    assert res.grid.same_geometry(phantom2.ct.grid)
    assert res.volume_cm3 == pytest.approx(coarse.volume_cm3, rel=0.05)
    with pytest.raises(FileFormatError, match="missing.nii"):
        load_mask(tmp_path / "missing.nii", "x", "oar")


def test_label_map_combinations_are_those_of_unique_on_the_bit_codes():
    """The incremental combination ids give np.unique's sorted codes, inverse and voxels exactly."""
    from seedplan.imaging.structures import _combinations

    rng = np.random.default_rng(1)
    g = Grid((0, 0, 0), (1, 1, 1), (20, 18, 16))
    for _ in range(30):
        n = int(rng.integers(1, 9))
        structs = [Structure(f"s{b}", Role.OAR, rng.random(g.shape) < rng.uniform(0.0, 0.6), g) for b in range(n)]
        code = np.zeros(g.shape, np.uint64)
        for b, s in enumerate(structs):
            code[s.mask] |= np.uint64(1) << np.uint64(b)
        flat = code.reshape(-1)
        voxels = np.flatnonzero(flat)
        combos, inverse = np.unique(flat[voxels], return_inverse=True)
        got = _combinations(structs, g.shape)
        assert np.array_equal(got[0], combos) and np.array_equal(got[1], inverse) and np.array_equal(got[2], voxels)
