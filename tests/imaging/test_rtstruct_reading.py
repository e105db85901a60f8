"""Reading RTSTRUCT contours: ContourData parsed from the stored bytes gives pydicom's numbers, and the
polygon filling follows the even-odd rule of voxel centres exactly."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from seedplan.errors import FileFormatError
from seedplan.imaging import Structure, load_ct, load_rtstruct, rasterize_polygons
from seedplan.imaging.structures import _contour_points_mm
from seedplan.io.dicom import write_ct_dicom_series, write_rtstruct

CONTOUR_DATA = 0x30060050


def _pydicom_points(item: Dataset) -> np.ndarray:
    return np.asarray([float(v) for v in item.ContourData], dtype=float).reshape(-1, 3)


@pytest.fixture(scope="module")
def written(phantom2, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rtstruct_reading")
    ct = write_ct_dicom_series(phantom2.ct, tmp / "ct")
    return ct, write_rtstruct(phantom2.structures, ct, tmp / "rs.dcm", uid_seed="reading")


def test_the_stored_values_parse_to_pydicoms_numbers(written):
    _, path = written
    ds = pydicom.dcmread(path)
    n = 0
    for rc in ds.ROIContourSequence:
        for c in rc.ContourSequence:
            assert isinstance(c.get_item(CONTOUR_DATA), RawDataElement)  # the fast path is taken
            fast = _contour_points_mm(c)
            slow = _pydicom_points(c)  # converts the element
            assert fast.dtype == np.float64 and fast.shape == slow.shape
            assert np.array_equal(fast, slow)
            assert np.array_equal(_contour_points_mm(c), slow)  # an element pydicom has converted
            n += 1
    assert n > 50


def _item(raw: bytes) -> Dataset:
    c = Dataset()
    c[CONTOUR_DATA] = RawDataElement(Tag(CONTOUR_DATA), "DS", len(raw), raw, 0, False, True)
    return c


@pytest.mark.parametrize("raw", [
    b"1.5\\-2\\3 ",                      # padded to an even length
    b" 1.5\\ -2.0 \\3e0\\+4.\\.5\\-0",   # spaces around values, exponent, sign, no digits before/after the point
    b"1\\2\\3\x00",                      # NUL padding
    b"-12.25\\0.125\\100000000000\\1E-3\\-1e+2\\7 ",
    b"  ", b"\x00\x00",                  # no value at all: no point (the contour is then skipped)
])
def test_values_written_by_other_systems(raw):
    fast = _contour_points_mm(_item(raw))
    assert np.array_equal(fast, _pydicom_points(_item(raw)))


@pytest.mark.parametrize("raw", [b"1\\2\\abc\\4\\5\\6", b"1\\2\\3\\4", b"", b"1\\\\2\\3\\4\\5", b"7 ", b"1\\ \\2"])
def test_invalid_values_are_refused_like_pydicoms_conversion(raw):
    with pytest.raises((TypeError, ValueError)):
        _contour_points_mm(_item(raw))
    with pytest.raises((TypeError, ValueError)):
        _pydicom_points(_item(raw))


def test_an_invalid_or_missing_contour_data_is_a_file_format_error(tmp_path, small_ct):
    ct = small_ct()
    mask = np.zeros(ct.grid.shape, dtype=bool)
    mask[3, 2:9, 2:9] = True
    path = write_rtstruct([Structure("box", "oar", mask, ct.grid)], ct, tmp_path / "rs.dcm")
    assert load_rtstruct(path, ct)["box"].mask.sum() > 0
    ds = pydicom.dcmread(path)
    item = ds.ROIContourSequence[0].ContourSequence[0]
    for bad in (b"1\\2\\x3\\4\\5\\6\\7\\8\\9 ", None):
        if bad is None:
            del item[CONTOUR_DATA]
        else:
            item[CONTOUR_DATA] = RawDataElement(Tag(CONTOUR_DATA), "DS", len(bad), bad, 0, False, True)
        ds.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
        with pytest.raises(FileFormatError, match="ROI 'box' has a contour with invalid ContourData"):
            load_rtstruct(tmp_path / "bad.dcm", ct)


def test_an_implicit_vr_file_gives_the_same_structures(written, tmp_path):
    from pydicom.uid import ImplicitVRLittleEndian

    _, path = written
    ct = load_ct(path.parent / "ct")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(tmp_path / "implicit.dcm", implicit_vr=True, little_endian=True)
    a, b = load_rtstruct(path, ct), load_rtstruct(tmp_path / "implicit.dcm", ct)
    assert list(a) == list(b)
    for name in a:
        assert np.array_equal(a[name].mask, b[name].mask), name


def test_contours_read_back_give_the_written_masks(phantom2, written):
    """RTSTRUCT contours are iso-lines of the masks: filling them gives every mask back, voxel for voxel."""
    _, path = written
    back = load_rtstruct(path, load_ct(path.parent / "ct"))
    for name, s in phantom2.structures.items():
        assert np.array_equal(back[name].mask, s.mask), name


def _even_odd_reference(polygons, shape_yx):
    """Voxel centre (i, j) inside when an odd number of edges cross row j (ylo <= j < yhi) at x <= i."""
    ny, nx = shape_yx
    out = np.zeros((ny, nx), dtype=bool)
    edges = [(p[k], p[(k + 1) % len(p)]) for p in polygons if len(p) >= 3 for k in range(len(p))]
    for j in range(ny):
        xs = []
        for (x0, y0), (x1, y1) in edges:
            if min(y0, y1) <= j < max(y0, y1):
                t = (j - y0) / (y1 - y0)
                xs.append(x0 + t * (x1 - x0))
        xs = np.array(xs)
        for i in range(nx):
            out[j, i] = np.count_nonzero(xs <= i) % 2 == 1
    return out


def test_rasterize_polygons_matches_the_even_odd_rule():
    rng = np.random.default_rng(7)
    for _ in range(150):
        ny, nx = (int(v) for v in rng.integers(1, 24, 2))
        polys = []
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(3, 9))
            centre, radius = rng.uniform(-6, 30, 2), rng.uniform(0.2, 14)
            angles = rng.uniform(0, 2 * np.pi, n)
            if rng.random() < 0.7:  # simple polygons; the others may cross themselves
                angles = np.sort(angles)
            pts = centre + radius * np.c_[np.cos(angles), np.sin(angles)]
            if rng.random() < 0.5:  # vertices and edges on pixel centres and half-voxels
                pts = np.round(pts * 2) / 2
            polys.append(pts)
        assert np.array_equal(rasterize_polygons(polys, (ny, nx)), _even_odd_reference(polys, (ny, nx)))
