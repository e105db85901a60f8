"""RTSTRUCT export internals: slices traced in stacks give the per-slice contours, the coordinates are formatted
as one value at a time would be, traced contours are reused only for the same mask, and volumes are written
compressed or not by their type."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from seedplan.geometry import Grid
from seedplan.imaging import CTImage, Structure, make_spine_phantom
from seedplan.io.dicom import rtstruct
from seedplan.io.dicom.rtstruct import (
    _fmt3,
    _fmt3_joined,
    _index_contours,
    _mask_contours,
    _slice_contours,
    _stack_contours,
    write_rtstruct,
)
from seedplan.io.volumes import read_volume, write_volume


def _per_slice(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The definition: every non-empty slice traced on its own."""
    ks = np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]
    return [(int(k), poly) for k in ks for poly in _slice_contours(mask[k])]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(ka == kb and pa.shape == pb.shape and np.array_equal(pa, pb)
                                    for (ka, pa), (kb, pb) in zip(a, b))


def test_stacked_slices_give_the_per_slice_contours_in_the_same_order():
    rng = np.random.default_rng(11)
    for trial in range(200):
        shape = tuple(int(v) for v in rng.integers(1, 16, 3))
        mask = rng.random(shape) < rng.uniform(0.02, 0.8)
        if trial % 2:
            mask = ndimage.binary_opening(mask)  # blobs with holes and several parts per slice
        if trial % 5 == 0:
            mask[:, 0, :] = True  # touching the edges of the slices
        expected = _per_slice(mask)
        for max_quads in (1, 30, 200, 10**7):  # one slice per call ... every slice in one call
            assert _same(_stack_contours(mask, max_quads), expected), (trial, max_quads)
    assert _stack_contours(np.zeros((3, 4, 5), dtype=bool)) == []


def test_the_phantoms_structures_trace_as_slice_by_slice():
    ph = make_spine_phantom(spacing_mm=3.0)
    for name, s in ph.structures.items():
        assert _same(_stack_contours(s.mask, 2_000), _per_slice(s.mask)), name
        assert _same(_stack_contours(s.mask), _per_slice(s.mask)), name


def test_formatting_all_values_at_once_is_formatting_each():
    rng = np.random.default_rng(3)
    arrays = [rng.normal(0, 200, (n, 3)).round(int(rng.integers(0, 5))) for n in rng.integers(1, 60, 30)]
    arrays += [np.array([[-0.0, 0.0, -0.0004], [0.0004, -0.0005, 1e-12]]), np.array([[1e6, -123456.7891, 2.5]])]
    got = _fmt3_joined(arrays)
    assert got == ["\\".join(_fmt3(v) for v in a.reshape(-1)) for a in arrays]
    assert _fmt3_joined([]) == []


def _ct(origin=(-20.0, -15.0, 5.0), spacing=(1.0, 1.5, 2.0), size=(30, 24, 10)) -> CTImage:
    g = Grid(origin, spacing, size)
    return CTImage(g, np.zeros(g.shape, dtype=np.int16), series_uid="1.2.3.1", frame_of_reference_uid="1.2.3.2",
                   study_uid="1.2.3.3")


def test_traced_contours_are_reused_only_for_the_same_mask_and_placed_on_each_grid():
    ct = _ct()
    mask = np.zeros(ct.grid.shape, dtype=bool)
    mask[2:6, 5:15, 8:20] = True
    first = _index_contours(mask)
    assert _index_contours(mask.copy()) is first  # the same content: traced once
    other = mask.copy()
    other[3, 10, 8] = False  # one voxel less
    changed = _index_contours(other)
    assert changed is not first and _same(changed, _per_slice(other)) and not _same(changed, first)
    # the cache holds index-space polygons: each CT grid places them where its voxels are
    shifted = _ct(origin=(100.0, 50.0, -40.0), spacing=(0.5, 0.5, 3.0))
    a = list(_mask_contours(Structure("box", "oar", mask, ct.grid), ct))
    b = list(_mask_contours(Structure("box", "oar", mask, shifted.grid), shifted))
    assert len(a) == len(b) == len(first)
    for (_, pa, _), (_, pb, _), (k, poly) in zip(a, b, first):
        ijk = np.column_stack([poly, np.full(len(poly), float(k))])
        assert np.array_equal(pa, ct.grid.index_to_world(ijk))
        assert np.array_equal(pb, shifted.grid.index_to_world(ijk))


def test_an_rtstruct_written_from_cached_contours_is_the_same_file(tmp_path, monkeypatch):
    ct = _ct()
    rng = np.random.default_rng(5)
    structures = [Structure(f"s{n}", "oar", ndimage.binary_opening(rng.random(ct.grid.shape) < 0.6), ct.grid)
                  for n in range(3)]
    monkeypatch.setattr(rtstruct, "_CONTOURS", {})
    a = write_rtstruct(structures, ct, tmp_path / "a.dcm", uid_seed="x")
    assert len(rtstruct._CONTOURS) == 3
    b = write_rtstruct(structures, ct, tmp_path / "b.dcm", uid_seed="x")  # from the cache
    assert a.read_bytes() == b.read_bytes()
    ds = pydicom.dcmread(a)
    n = sum(len(rc.ContourSequence) for rc in ds.ROIContourSequence)
    assert n == sum(len(_per_slice(s.mask)) for s in structures)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii", ".nii.gz"])
def test_volumes_round_trip_floats_raw_and_masks_compressed(tmp_path, suffix):
    g = Grid((1.0, -2.0, 3.0), (0.7, 0.8, 1.5), (40, 30, 20))
    rng = np.random.default_rng(1)
    dose = rng.gamma(2.0, 30.0, g.shape)
    mask = np.zeros(g.shape, dtype=np.uint8)
    mask[5:15, 10:20, 12:30] = 1
    for name, arr in (("dose", dose), ("mask", mask)):
        p = write_volume(g, arr, tmp_path / f"{name}{suffix}")
        grid, back = read_volume(p)
        assert grid.same_geometry(g)
        assert np.array_equal(back, arr.astype(np.float32) if arr.dtype == np.float64 else arr)
        data = p.read_bytes()
        if suffix == ".nii.gz":
            assert data[:2] == b"\x1f\x8b"  # always gzip
        elif suffix == ".nrrd":
            encoding = next(line for line in data.split(b"\n\n")[0].split(b"\n") if line.startswith(b"encoding:"))
            assert encoding == (b"encoding: raw" if name == "dose" else b"encoding: gzip")
        if name == "mask" and suffix != ".nii":  # (a .nii is never compressed)
            assert len(data) < arr.nbytes / 20
        elif name == "dose" and suffix != ".nii.gz":
            assert len(data) >= dose.astype(np.float32).nbytes
