"""TotalSegmentator v2 "total" import: class table, multi-label file, per-class folder, other grids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seedplan.errors import FileFormatError, GeometryError, InputError
from seedplan.geometry import Grid
from seedplan.imaging import Role, load_ct, load_totalsegmentator, totalseg_classes

DATA = Path(__file__).resolve().parents[1] / "data" / "real_ct"
SEG = DATA / "totalseg_T12-L2_3mm.nii.gz"


@pytest.fixture(scope="module")
def ct():
    return load_ct(DATA / "ct_T12-L2_3mm.nii.gz")


@pytest.fixture(scope="module")
def labels():
    """The label file in the standard axial orientation, as load_ct gives the CT (SimpleITK's own reorientation)."""
    img = sitk.DICOMOrient(sitk.ReadImage(str(SEG)), "LPS")
    return Grid.from_sitk(img), sitk.GetArrayFromImage(img)


def _write(grid: Grid, arr: np.ndarray, path: Path) -> Path:
    sitk.WriteImage(grid.to_sitk(arr.astype(np.uint8)), str(path), useCompression=True)
    return path


def test_class_table():
    table = totalseg_classes()
    assert [c.label for c in table] == list(range(1, 118))
    assert len({c.name for c in table}) == 117 and len({c.totalsegmentator for c in table}) == 117
    by = {c.label: c for c in table}
    # numbers of TotalSegmentator v2 class_map["total"] (the classes present in the test file)
    for label, ts_name, name, role in [
        (2, "kidney_right", "kidney_right", Role.OAR),
        (3, "kidney_left", "kidney_left", Role.OAR),
        (10, "lung_upper_lobe_left", "lung_upper_lobe_left", Role.AVOIDANCE),
        (14, "lung_lower_lobe_right", "lung_lower_lobe_right", Role.AVOIDANCE),
        (16, "trachea", "trachea", Role.AVOIDANCE),
        (18, "small_bowel", "small_bowel", Role.OAR),
        (19, "duodenum", "duodenum", Role.OAR),
        (20, "colon", "colon", Role.OAR),
        (25, "sacrum", "sacrum", Role.BONE),
        (26, "vertebrae_S1", "vertebra_S1", Role.BONE),
        (30, "vertebrae_L2", "vertebra_L2", Role.BONE),
        (31, "vertebrae_L1", "vertebra_L1", Role.BONE),
        (32, "vertebrae_T12", "vertebra_T12", Role.BONE),
        (33, "vertebrae_T11", "vertebra_T11", Role.BONE),
        (50, "vertebrae_C1", "vertebra_C1", Role.BONE),
        (52, "aorta", "aorta", Role.OAR),
        (63, "inferior_vena_cava", "inferior_vena_cava", Role.OAR),
        (64, "portal_vein_and_splenic_vein", "portal_vein_and_splenic_vein", Role.OAR),
        (67, "iliac_vena_left", "iliac_vein_left", Role.OAR),
        (79, "spinal_cord", "spinal_cord", Role.CANAL),
        (117, "costal_cartilages", "costal_cartilages", Role.BONE),
    ]:
        c = by[label]
        assert (c.totalsegmentator, c.name, c.role) == (ts_name, name, role), label
    assert by[86].role is None and by[88].totalsegmentator == "iliopsoas_left"  # muscles: not imported
    doc = json.loads((Path(__file__).resolve().parents[2] / "src" / "seedplan" / "imaging" / "data"
                      / "totalsegmentator_total_v2.json").read_text())
    assert "Apache-2.0" in doc["source"]["licence"] and "Wasserthal" in doc["citation"]
    assert len(doc["source"]["commit"]) == 40


def test_multilabel_file(ct, labels):
    _, arr = labels
    ss = load_totalsegmentator(SEG, ct)
    present = sorted(set(np.unique(arr).tolist()) - {0})
    by = {c.label: c for c in totalseg_classes()}
    assert set(present) <= set(by)  # every class in the file is in the table
    expected = [by[v].name for v in present if by[v].role is not None]
    assert list(ss.names) == expected
    for v in present:
        c = by[v]
        if c.role is None:
            assert c.name not in ss  # the autochthon/iliopsoas muscles are in the file but not imported
        else:
            assert ss[c.name].role is c.role
            assert np.array_equal(ss[c.name].mask, arr == v)
            assert ss[c.name].grid.same_geometry(ct.grid)
    assert {"vertebra_L1", "vertebra_T12", "spinal_cord", "aorta", "inferior_vena_cava", "colon"} <= set(ss.names)
    assert "sacrum" not in ss  # absent classes are skipped
    assert ss["spinal_cord"].role is Role.CANAL and ss["lung_lower_lobe_left"].role is Role.AVOIDANCE


def test_per_class_folder_equals_multilabel(ct, labels, tmp_path):
    grid, arr = labels
    by = {c.label: c for c in totalseg_classes()}
    for v in sorted(set(np.unique(arr).tolist()) - {0}):
        _write(grid, arr == v, tmp_path / f"{by[v].totalsegmentator}.nii.gz")
    _write(grid, np.zeros(arr.shape, bool), tmp_path / "sacrum.nii.gz")  # an empty class: skipped
    (tmp_path / "notes.txt").write_text("not a mask")
    folder = load_totalsegmentator(tmp_path, ct)
    multi = load_totalsegmentator(SEG, ct)
    assert list(folder.names) == list(multi.names)
    for n in multi.names:
        assert folder[n].role is multi[n].role
        assert np.array_equal(folder[n].mask, multi[n].mask), n


def test_selected_classes_and_roles(ct):
    ss = load_totalsegmentator(SEG, ct, classes=["vertebrae_L1", 79, "aorta", "sacrum"])
    assert list(ss.names) == ["vertebra_L1", "aorta", "spinal_cord"]  # label order, sacrum absent
    ss = load_totalsegmentator(SEG, ct, classes=["iliopsoas_left"], roles={"iliopsoas_left": "avoidance"})
    assert ss["iliopsoas_left"].role is Role.AVOIDANCE
    with pytest.raises(InputError, match="no planning role"):
        load_totalsegmentator(SEG, ct, classes=["autochthon_left"])
    with pytest.raises(InputError, match="unknown class 'vertebra_L9'"):
        load_totalsegmentator(SEG, ct, classes=["vertebra_L9"])


def test_other_grid_is_resampled_by_nearest_neighbour(ct, labels, tmp_path):
    grid, arr = labels
    # the same labels at 1.5 mm: every 3 mm voxel split into 2 x 2 x 2, origin moved by a quarter voxel
    fine = np.repeat(np.repeat(np.repeat(arr, 2, axis=0), 2, axis=1), 2, axis=2)
    origin = grid.index_to_world([-0.25, -0.25, -0.25])
    g_fine = Grid(origin, np.array(grid.spacing) / 2, np.array(grid.size) * 2, grid.direction_matrix)
    p = _write(g_fine, fine, tmp_path / "fine.nii.gz")
    ss = load_totalsegmentator(p, ct)
    ref = load_totalsegmentator(SEG, ct)
    assert list(ss.names) == list(ref.names)
    for n in ref.names:
        assert ss[n].grid.same_geometry(ct.grid)
        assert np.array_equal(ss[n].mask, ref[n].mask), n
    # shifted by 5 voxels and cropped: the labels land 5 voxels over, the rest is empty
    g_shift = Grid(grid.index_to_world([5, 0, 0]), grid.spacing, (grid.size[0] - 5, grid.size[1], grid.size[2]),
                   grid.direction_matrix)
    p2 = _write(g_shift, arr[:, :, 5:], tmp_path / "shifted.nii.gz")
    sh = load_totalsegmentator(p2, ct, classes=["vertebrae_L1"])
    expect = np.zeros(arr.shape, bool)
    expect[:, :, 5:] = arr[:, :, 5:] == 31
    assert np.array_equal(sh["vertebra_L1"].mask, expect)


def test_disjoint_segmentation_is_refused(ct, labels, tmp_path):
    grid, arr = labels
    far = Grid(np.array(grid.origin_mm) + (0.0, 0.0, 900.0), grid.spacing, grid.size, grid.direction_matrix)
    p = _write(far, arr, tmp_path / "other_scan_seg.nii.gz")
    with pytest.raises(GeometryError, match="other_scan_seg.nii.gz.*does not overlap the CT"):
        load_totalsegmentator(p, ct)
    folder = tmp_path / "other_scan"
    folder.mkdir()
    _write(far, arr == 31, folder / "vertebrae_L1.nii.gz")
    with pytest.raises(GeometryError, match="vertebrae_L1.nii.gz"):
        load_totalsegmentator(folder, ct)


def test_bad_inputs(ct, tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        load_totalsegmentator(tmp_path / "missing.nii.gz", ct)
    with pytest.raises(FileFormatError, match="no TotalSegmentator class file"):
        load_totalsegmentator(tmp_path, ct)
    with pytest.raises(InputError, match="reference must be a CTImage or a Grid"):
        load_totalsegmentator(SEG, "ct.nii.gz")
