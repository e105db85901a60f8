"""The synthetic spine phantom: anatomy, determinism, validation, export and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seedplan.cli import main
from seedplan.errors import InputError
from seedplan.imaging import (
    Role,
    load_ct,
    load_label_map,
    load_rtstruct,
    make_spine_phantom,
    vertebra_dimensions,
)


def _hu_at(ct, p):
    i, j, k = np.rint(ct.grid.world_to_index(p)).astype(int)
    return float(ct.hu[k, j, i])


def test_structures_and_roles(phantom2):
    s = phantom2.structures
    for name in ("target", "vertebral_body_L3", "pedicle_left_L3", "pedicle_right_L3", "spinal_canal",
                 "aorta", "ivc", "kidney_left", "kidney_right", "bone", "body"):
        assert name in s, name
    assert any("cord" in n or "cauda" in n for n in s)
    assert s.first(Role.TARGET).name == "target"
    assert s.first(Role.VERTEBRAL_BODY).name == "vertebral_body_L3"
    assert s.first(Role.BODY).name == "body"
    for n, st in s.items():
        assert not st.is_empty, n
        assert np.all(s["body"].mask[st.mask]), f"{n} outside the body"


def test_patient_lps_anatomy(phantom2):
    s = phantom2.structures
    vb = s["vertebral_body_L3"].centroid_mm
    aorta, ivc = s["aorta"].centroid_mm, s["ivc"].centroid_mm
    assert aorta[0] > 0 and aorta[1] < vb[1]  # left-anterior
    assert ivc[0] < 0 and ivc[1] < vb[1]  # right-anterior
    assert s["kidney_left"].centroid_mm[0] > 40 and s["kidney_right"].centroid_mm[0] < -40
    assert s["kidney_left"].centroid_mm[1] > vb[1]  # posterolateral
    canal = s["spinal_canal"].centroid_mm
    assert canal[1] > vb[1] + 15  # posterior to the body
    assert s["body"].centroid_mm[1] < vb[1]  # the spine is posterior in the torso
    assert s["pedicle_left_L3"].centroid_mm[0] > 0 > s["pedicle_right_L3"].centroid_mm[0]
    lo, hi = s["vertebral_body_L3"].bounds_mm
    d = vertebra_dimensions("L3")
    assert hi[0] - lo[0] == pytest.approx(d["width"], abs=4.1)
    assert hi[1] - lo[1] == pytest.approx(d["depth"], abs=4.1)


def test_hu_values(phantom1):
    ct = phantom1.ct
    c = np.array(phantom1.lesion_center_mm)
    assert 20 <= _hu_at(ct, c) <= 40  # lytic lesion
    d = vertebra_dimensions("L3")
    assert 150 <= _hu_at(ct, (d["width"] / 2 - 3, d["center_y_mm"], 8.0)) <= 250  # cancellous
    assert _hu_at(ct, (d["width"] / 2 - 0.4, d["center_y_mm"], 0.0)) >= 700  # cortex
    z_disc = d["center_z_mm"] + d["height"] / 2 + d["disc_below"] / 2 + 0.5
    assert 60 <= _hu_at(ct, (0.0, d["center_y_mm"], z_disc)) <= 100
    assert _hu_at(ct, (0.0, phantom1.structures["spinal_canal"].centroid_mm[1], 0.0)) < 40
    assert _hu_at(ct, np.array(ct.grid.origin_mm)) == -1000
    assert _hu_at(ct, (0.0, 110.0, 0.0)) < -50  # subcutaneous fat at the back


def test_target_volume_and_blastic():
    ph = make_spine_phantom(spacing_mm=2.0, lesion_type="blastic", lesion_diameter_mm=20)
    t = ph.structures["target"]
    assert t.volume_cm3 == pytest.approx(4 / 3 * np.pi * 10**3 / 1000, rel=0.15)
    assert ph.ct.hu[t.mask].min() >= 800
    assert np.all(ph.structures["vertebral_body_L3"].mask[t.mask])


def test_posterior_breach():
    ph = make_spine_phantom(spacing_mm=2.0, posterior_breach=True)
    t, vb, canal = (ph.structures[n] for n in ("target", "vertebral_body_L3", "spinal_canal"))
    outside = t.mask & ~vb.mask
    assert outside.any() and t.points_mm()[:, 1].max() > vb.bounds_mm[1][1]
    assert not np.any(canal.mask & t.mask)


def test_deterministic_and_thoracic():
    a = make_spine_phantom(spacing_mm=3.0, noise_hu=10, seed=4)
    b = make_spine_phantom(spacing_mm=3.0, noise_hu=10, seed=4)
    assert np.array_equal(a.ct.hu, b.ct.hu) and a.ct.series_uid == b.ct.series_uid
    th = make_spine_phantom(level="T12", spacing_mm=3.0, include_thoracic=True)
    assert th.ct.grid.corners_mm()[:, 2].max() > vertebra_dimensions("T11")["center_z_mm"]
    assert "spinal_cord" in th.structures


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(level="L7"), "unknown level"),
        (dict(level="T12"), "include_thoracic"),
        (dict(lesion_diameter_mm=0), "lesion_diameter_mm"),
        (dict(lesion_diameter_mm=80), "body width"),
        (dict(lesion_type="mixed"), "lesion_type"),
        (dict(spacing_mm=-1), "spacing_mm"),
        (dict(lesion_center_offset_mm=(40, 0, 0)), "outside"),
        (dict(noise_hu=-3), "noise_hu"),
    ],
)
def test_argument_validation(kw, match):
    with pytest.raises(InputError, match=match):
        make_spine_phantom(**{"spacing_mm": 3.0, **kw})


def test_cli_phantom(tmp_path, capsys):
    out = tmp_path / "case"
    assert main(["phantom", str(out), "--spacing-mm", "2"]) == 0
    printed = capsys.readouterr().out
    assert "rtstruct" in printed
    for rel in ("ct", "rtstruct.dcm", "labels.nii.gz", "labels.json"):
        assert (out / rel).exists(), rel
    ct = load_ct(out / "ct")
    rs = load_rtstruct(out / "rtstruct.dcm", ct)
    labels = load_label_map(out / "labels.nii.gz", out / "labels.json", reference=ct)
    ref = make_spine_phantom(spacing_mm=2.0)
    assert ct.grid.same_geometry(ref.ct.grid) and np.array_equal(ct.hu, ref.ct.hu)
    for name, s in ref.structures.items():
        assert np.array_equal(labels[name].mask, s.mask), name
        assert rs[name].volume_cm3 == pytest.approx(s.volume_cm3, rel=0.03), name
    legend = json.loads((out / "labels.json").read_text())
    assert {v["role"] for v in legend["labels"].values()} >= {"target", "vertebral_body", "body"}
    assert main(["phantom", str(tmp_path / "bad"), "--level", "L9"]) == 2
