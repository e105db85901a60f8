"""Segmentation helpers against the phantom's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from seedplan.errors import InputError
from seedplan.imaging import (
    Role,
    bone_masks,
    connected_components,
    dice,
    make_spine_phantom,
    spinal_canal,
    vertebral_body_near,
)


def test_vertebral_body_dice_1mm(phantom1):
    truth = phantom1.structures["vertebral_body_L3"]
    vb = vertebral_body_near(phantom1.ct, phantom1.lesion_center_mm)
    assert vb.role is Role.VERTEBRAL_BODY
    assert dice(vb, truth) >= 0.95
    # the lytic lesion is inside the segmented body
    target = phantom1.structures["target"]
    assert np.count_nonzero(vb.mask & target.mask) >= 0.98 * target.n_voxels


@pytest.mark.parametrize("kw", [dict(lesion_type="blastic"), dict(level="L1"), dict(level="L5"), dict(noise_hu=15.0)])
def test_vertebral_body_variants_2mm(kw):
    ph = make_spine_phantom(spacing_mm=2.0, **kw)
    truth = ph.structures[f"vertebral_body_{ph.level}"]
    # seed point off-centre, in the body
    p = np.asarray(ph.lesion_center_mm) + (6.0, -4.0, 3.0)
    assert dice(vertebral_body_near(ph.ct, p), truth) >= 0.95


def test_spinal_canal_overlaps_truth(phantom2):
    vb = phantom2.structures["vertebral_body_L3"]
    canal = spinal_canal(phantom2.ct, vb)
    truth = phantom2.structures["spinal_canal"]
    inter = np.count_nonzero(canal.mask & truth.mask)
    assert inter >= 0.85 * canal.n_voxels  # mostly inside the true canal
    # covers most of the true canal over the body's height
    ks = np.nonzero(vb.mask.any(axis=(1, 2)))[0]
    truth_here = truth.mask[ks].sum()
    assert inter >= 0.8 * truth_here
    assert canal.centroid_mm[1] > vb.centroid_mm[1]  # posterior to the body


def test_segmentation_errors(phantom2):
    air_point = np.array(phantom2.ct.grid.origin_mm) + 5.0
    with pytest.raises(InputError, match="no vertebral body"):
        vertebral_body_near(phantom2.ct, air_point)
    with pytest.raises(InputError, match="outside the CT"):
        vertebral_body_near(phantom2.ct, (0.0, 0.0, 1e4))


def test_bone_masks_and_components(phantom2):
    cort, canc = bone_masks(phantom2.ct)
    assert not np.any(cort.mask & canc.mask)
    vb = phantom2.structures["vertebral_body_L3"]
    assert np.count_nonzero(cort.mask & vb.mask) > 0 and np.count_nonzero(canc.mask & vb.mask) > 0
    with pytest.raises(InputError):
        bone_masks(phantom2.ct, cortical_min_hu=100, cancellous_min_hu=200)
    m = np.zeros((5, 5, 12), bool)
    m[1:3, 1:3, 0:2] = True  # 8 voxels
    m[1:4, 1:4, 5:9] = True  # 36 voxels
    lab, sizes = connected_components(m)
    assert sizes.tolist() == [36, 8] and lab[2, 2, 6] == 1 and lab[1, 1, 0] == 2
    lab, sizes = connected_components(m, min_size_voxels=10)
    assert sizes.tolist() == [36] and lab[1, 1, 0] == 0
