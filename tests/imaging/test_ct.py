"""CT loading and writing: round trips, orientation, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from seedplan.errors import FileFormatError, GeometryError, InputError
from seedplan.geometry import Grid
from seedplan.imaging import CTImage, load_ct, write_ct_image
from seedplan.io.dicom import write_ct_dicom_series


def test_phantom_dicom_round_trip(phantom2, tmp_path):
    written = write_ct_dicom_series(phantom2.ct, tmp_path / "ct", uid_seed="rt")
    ct = load_ct(tmp_path / "ct")
    assert ct.grid.same_geometry(phantom2.ct.grid, tol_mm=1e-4)
    assert np.array_equal(ct.grid.direction_matrix, phantom2.ct.grid.direction_matrix)
    assert np.max(np.abs(ct.hu.astype(float) - phantom2.ct.hu)) <= 0.5
    assert ct.series_uid == written.series_uid
    assert ct.frame_of_reference_uid == written.frame_of_reference_uid
    assert ct.sop_instance_uids == written.sop_instance_uids
    # SimpleITK reads the same series identically
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    img = r.Execute()
    assert Grid.from_sitk(img).same_geometry(phantom2.ct.grid, tol_mm=1e-3)
    assert np.array_equal(sitk.GetArrayFromImage(img), phantom2.ct.hu)
    ds = pydicom.dcmread(sorted((tmp_path / "ct").glob("*.dcm"))[0])
    assert ds.Modality == "CT" and ds.RescaleType == "HU" and ds.FrameOfReferenceUID == written.frame_of_reference_uid


def test_float_hu_rounding_and_large_range(tmp_path):
    g = Grid((0, 0, 0), (1, 1, 1), (4, 3, 3))
    hu = np.linspace(-1000.3, 40000.7, g.n_voxels).reshape(g.shape).astype(np.float32)
    write_ct_dicom_series(CTImage(g, hu), tmp_path / "s")
    back = load_ct(tmp_path / "s")
    slope = (hu.max() - hu.min()) / 65000
    assert np.max(np.abs(back.hu - hu)) <= slope  # within one rescale step


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_image_file_round_trip(phantom2, tmp_path, suffix):
    ct = phantom2.ct
    path = write_ct_image(ct, tmp_path / f"ct{suffix}")
    back = load_ct(path)
    assert back.grid.same_geometry(ct.grid, tol_mm=1e-3)
    assert np.array_equal(back.hu, ct.hu)


def _rot(axis, deg):
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


DIRECTIONS = {
    "identity": np.eye(3),
    "flip_x": np.diag([-1.0, 1.0, 1.0]),
    "flip_yz": np.diag([1.0, -1.0, -1.0]),
    "flip_z_lefthanded": np.diag([1.0, 1.0, -1.0]),
    "oblique": _rot("z", 25) @ _rot("x", 15),
    "sagittal_like": np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]]),
}


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
@pytest.mark.parametrize("fmt", ["dicom", ".nii.gz", ".nrrd", ".mha"])
def test_orientation_marker_world_position(tmp_path, name, fmt):
    """An asymmetric marker at a known world point is found there after write + load."""
    d = DIRECTIONS[name]
    spacing = (0.9, 1.3, 2.2)  # anisotropic
    size = (30, 26, 16)
    target = np.array([12.0, -34.0, 57.0])
    # put the grid so that the target sits at index (7, 18, 4)
    origin = target - d @ (np.array([7, 18, 4]) * spacing)
    g = Grid(origin, spacing, size, d)
    hu = np.full(g.shape, -1000.0, dtype=np.float32)
    hu[4, 18, 7] = 1000.0  # marker voxel
    hu[4, 18, 8] = 500.0  # asymmetric neighbour along +i
    ct = CTImage(g, hu)
    if fmt == "dicom":
        write_ct_dicom_series(ct, tmp_path / "s")
        back = load_ct(tmp_path / "s")
    else:
        back = load_ct(write_ct_image(ct, tmp_path / f"m{fmt}"))
    k, j, i = np.argwhere(back.hu == 1000)[0]
    assert np.allclose(back.grid.index_to_world((i, j, k)), target, atol=1e-3)
    k2, j2, i2 = np.argwhere(back.hu == 500)[0]
    assert np.allclose(back.grid.index_to_world((i2, j2, k2)), g.index_to_world((8, 18, 4)), atol=1e-3)


# ------------------------------------------------------------------ bad input
def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileFormatError, match=str(tmp_path)):
        load_ct(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(FileFormatError, match="nope"):
        load_ct(tmp_path / "nope")


def test_mixed_series(tmp_path, small_ct):
    a = small_ct(size=(8, 8, 6))
    b = small_ct(size=(8, 8, 4), origin=(0, 0, 0))
    write_ct_dicom_series(a, tmp_path / "a", uid_seed="A")
    write_ct_dicom_series(b, tmp_path / "b", uid_seed="B")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in (tmp_path / "a").glob("*.dcm"):
        shutil.copy(f, mixed / ("a_" + f.name))
    for f in (tmp_path / "b").glob("*.dcm"):
        shutil.copy(f, mixed / ("b_" + f.name))
    with pytest.warns(UserWarning, match="largest"):
        ct = load_ct(mixed)
    assert ct.grid.size[2] == 6
    uid_b = load_ct(tmp_path / "b").series_uid
    assert load_ct(mixed, series_uid=uid_b).grid.size[2] == 4
    with pytest.raises(InputError, match="not found"):
        load_ct(mixed, series_uid="1.2.3")
    # equal sizes: ambiguous
    eq = tmp_path / "eq"
    write_ct_dicom_series(small_ct(size=(8, 8, 4)), tmp_path / "c", uid_seed="C")
    eq.mkdir()
    for src, tag in ((tmp_path / "b", "b"), (tmp_path / "c", "c")):
        for f in src.glob("*.dcm"):
            shutil.copy(f, eq / f"{tag}_{f.name}")
    with pytest.raises(InputError, match="same size"):
        load_ct(eq)


def test_missing_slice(tmp_path, small_ct):
    write_ct_dicom_series(small_ct(), tmp_path / "s", uid_seed=1)
    (tmp_path / "s" / "CT_0005.dcm").unlink()
    with pytest.raises(GeometryError, match="non-uniform slice spacing") as exc:
        load_ct(tmp_path / "s")
    assert str(tmp_path / "s") in str(exc.value) and "CT_0004.dcm" in str(exc.value)


def test_corrupt_file(tmp_path, small_ct):
    write_ct_dicom_series(small_ct(), tmp_path / "s", uid_seed=1)
    bad = tmp_path / "s" / "CT_0003.dcm"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(FileFormatError, match="CT_0003.dcm"):
        load_ct(tmp_path / "s")
    bad.write_bytes(data[: len(data) - 200])  # pixel data cut short
    with pytest.raises(FileFormatError, match="CT_0003.dcm"):
        load_ct(tmp_path / "s")
    bad.write_bytes(b"this is not dicom at all")
    with pytest.raises(FileFormatError, match="CT_0003.dcm"):
        load_ct(tmp_path / "s")


def test_corrupt_image_file(tmp_path):
    p = tmp_path / "ct.nii.gz"
    p.write_bytes(b"garbage")
    with pytest.raises(FileFormatError, match="ct.nii.gz"):
        load_ct(p)


def test_ctimage_validation():
    g = Grid((0, 0, 0), (1, 1, 1), (4, 3, 2))
    with pytest.raises(GeometryError):
        CTImage(g, np.zeros((4, 3, 2)))
    with pytest.raises(InputError):
        CTImage(g, np.full(g.shape, np.nan))
