"""The seedplan command from a user's point of view: files written, one-line errors, exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from seedplan.cli import main
from seedplan.io.volumes import read_volume
from seedplan.plan import load_plan


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out)]) == 0
    return out


def test_demo_writes_the_outputs(demo_dir):
    for name in ("plan.json", "plan_table.csv", "plan_summary.txt", "dose.nrrd", "metrics.json", "dvh.csv", "case/case.json",
                 "case/rtstruct.dcm", "report.html", "slice_axial.png", "dvh.png", "dicom/RTPLAN.dcm",
                 "dicom/RTDOSE.dcm", "dicom/RTSTRUCT.dcm"):
        assert (demo_dir / name).exists(), name
    html = (demo_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "<script" not in html
    m = json.loads((demo_dir / "metrics.json").read_text())
    assert m["prescription_Gy"] == 120.0
    for key in ("volume_cm3", "D90_Gy", "D100_Gy", "V100_pct", "V150_pct", "V200_pct", "CI", "EI", "HI"):
        assert key in m["target"]
    assert any("cord" in n or "cauda" in n for n in m["oars"])
    # BED / EQD2 of the target D90 (alpha/beta 10 Gy): BED = D (1 + D lambda / ((mu + lambda) alpha/beta))
    import math

    d = m["target"]["D90_Gy"]
    lam, mu = math.log(2) / (59.4 * 24), math.log(2) / 1.5
    bed = d * (1 + d * lam / ((mu + lam) * 10.0))
    assert m["target"]["BED_D90_Gy"] == pytest.approx(bed, rel=1e-9)
    assert m["target"]["EQD2_D90_Gy"] == pytest.approx(bed / 1.2, rel=1e-9)
    for oar in m["oars"].values():
        assert {"Dmax_Gy", "D0.1cc_Gy", "D1cc_Gy", "D2cc_Gy"} <= set(oar)
    assert m["seeds"]["count"] == len(load_plan(demo_dir / "plan.json").seeds)
    assert m["seeds"]["total_activity_mCi"] == pytest.approx(m["seeds"]["count"] * m["seeds"]["activity_mCi"])
    assert m["needles"]["count"] >= 1
    assert m["failed_goals"] == []
    grid, dose = read_volume(demo_dir / "dose.nrrd")
    assert dose.max() > 120 and np.isfinite(dose).all()
    dvh = (demo_dir / "dvh.csv").read_text().splitlines()
    assert dvh[0] == "structure,dose_Gy,volume_cm3,volume_pct"
    first_target = next(line for line in dvh if line.startswith("target,"))
    assert first_target.endswith(",100.0000")  # every structure receives >= 0 Gy
    table = (demo_dir / "plan_table.csv").read_text().splitlines()
    # a plain CSV: the header and one row per seed, needles named as everywhere else
    assert table[0].startswith("needle,entry_x_mm") and len(table) == m["seeds"]["count"] + 1
    import csv

    rows = list(csv.DictReader(table))
    assert {r["needle"] for r in rows} == {f"N{k}" for k in range(1, m["needles"]["count"] + 1)}


def test_demo_plans_the_cement(demo_dir):
    import pydicom

    m = json.loads((demo_dir / "metrics.json").read_text())
    c = m["cement"]
    assert {"volume_mL", "fill_pct", "max_cross_section_ratio", "endplate_contact", "leak_flags"} <= set(c)
    assert 1.0 <= c["volume_mL"] <= 5.0  # the PVP + 125I series range (combined model)
    grid, cement = read_volume(demo_dir / "cement.nrrd")
    assert cement.sum() * grid.voxel_volume_mm3 / 1000 == pytest.approx(c["volume_mL"], abs=1e-3)
    # the TG-43 dose and the cement/bone-corrected dose are both reported, each labelled
    assert m["dose_model"]["formalism"].startswith("AAPM TG-43U1") and "water" in m["dose_model"]["formalism"]
    assert "not a TG-186" in m["heterogeneity"]["label"]
    assert m["heterogeneity"]["target"]["D90_Gy"] < m["target"]["D90_Gy"]
    summary = (demo_dir / "plan_summary.txt").read_text()
    assert "cement: " in summary and "leak flags" in summary and "PVP left needle" in summary
    html = (demo_dir / "report.html").read_text()
    assert "Vertebroplasty cement" in html and "Corrected (approximate)" in html
    assert html.count("3D ") >= 4  # the 3D views are embedded
    for view in ("anterior", "left", "posterior", "oblique"):
        assert (demo_dir / f"view3d_{view}.png").stat().st_size > 20_000
    rs = pydicom.dcmread(demo_dir / "dicom" / "RTSTRUCT.dcm")
    assert "cement" in [str(r.ROIName) for r in rs.StructureSetROISequence]
    plan = load_plan(demo_dir / "plan.json")
    assert plan.cement.inputs["planned_mL"] == pytest.approx(c["recommended_mL"], abs=1e-3)


def test_dose_recomputes_a_saved_plan(demo_dir, tmp_path):
    assert main(["dose", str(demo_dir / "plan.json"), "--out", str(tmp_path)]) == 0
    _, new = read_volume(tmp_path / "dose.nrrd")
    m_old = json.loads((demo_dir / "metrics.json").read_text())
    m_new = json.loads((tmp_path / "metrics.json").read_text())
    assert m_new["target"]["D90_Gy"] == pytest.approx(m_old["target"]["D90_Gy"], rel=1e-9)
    # the cement comes from the plan file: same figures, same corrected dose, the same metrics byte for byte
    assert m_new["cement"]["volume_mL"] == m_old["cement"]["volume_mL"]
    assert m_new["heterogeneity"]["target"]["D90_Gy"] == pytest.approx(m_old["heterogeneity"]["target"]["D90_Gy"],
                                                                       rel=1e-9)
    assert (tmp_path / "metrics.json").read_bytes() == (demo_dir / "metrics.json").read_bytes()


def test_plan_from_case_file(demo_dir, tmp_path):
    assert main(["plan", str(demo_dir / "case" / "case.json"), "--out", str(tmp_path)]) == 0
    a = load_plan(tmp_path / "plan.json")
    b = load_plan(demo_dir / "plan.json")
    assert a.seeds == b.seeds


def test_view_writes_screenshots_without_a_display(demo_dir, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["view", str(demo_dir / "plan.json"), "--out", str(tmp_path), "--views", "superior,right"]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [".seedplan", "view3d_right.png", "view3d_superior.png"]  # the views and seedplan's marker
    im = np.asarray(Image.open(tmp_path / "view3d_superior.png").convert("RGB")).astype(int)
    assert im.shape == (750, 900, 3)
    # the 100 % isodose (red) is in the picture
    assert ((im[..., 0] > 180) & (im[..., 1] < 90) & (im[..., 2] < 90)).sum() > 200
    assert main(["view", str(demo_dir / "plan.json"), "--screenshots", "--views", "front"]) == 2


def _run(*args):
    return subprocess.run([sys.executable, "-m", "seedplan.cli", *args], capture_output=True, text=True, timeout=600)


def test_bad_inputs_give_one_line_and_nonzero_exit(demo_dir, tmp_path):
    corrupt = tmp_path / "plan.json"
    corrupt.write_text((demo_dir / "plan.json").read_text()[:200])
    case = json.loads((demo_dir / "case" / "case.json").read_text())
    absurd = tmp_path / "case_absurd.json"
    case_abs = dict(case, ct=str((demo_dir / "case" / case["ct"]).resolve()),
                    structures={"rtstruct": str((demo_dir / "case" / case["structures"]["rtstruct"]).resolve())},
                    prescription={"dose_Gy": 900})
    absurd.write_text(json.dumps(case_abs))
    activity = tmp_path / "case_activity.json"
    activity.write_text(json.dumps(dict(case_abs, prescription={"activity_mCi_range": [0.3, 50]})))
    cases = [
        (("dose", str(corrupt)), "not valid JSON"),
        (("plan", str(tmp_path / "missing.json")), "missing.json"),
        (("plan", str(absurd)), "dose"),
        (("plan", str(activity)), "activity"),
        (("dose", str(demo_dir / "metrics.json")), "not a seedplan plan"),
        (("demo", "--level", "L3,S1", "--out", str(tmp_path / "gap")), "not adjacent"),
        (("demo", "--level", "S4", "--out", str(tmp_path / "s4")), "outside the phantom"),
        (("demo", "--level", "L9", "--out", str(tmp_path / "l9")), "unknown level"),
        (("demo", "--level", "S2", "--lesion-diameter-mm", "80", "--out", str(tmp_path / "big")), "larger than"),
    ]
    for name, planning, word in (("cement_big", {"cement_volume_mL": 60}, "volume_mL=60 exceeds what the vertebral body"),
                                 ("cement_gold", {"cement_material": "gold"}, "cement material 'gold' is unknown"),
                                 ("dates", {"calibration_date": "2026-11-20", "implant_date": "2024-11-20"},
                                  "730 days before calibration_date"),
                                 ("typo", {"implant_date": "2026-13-01"}, "implant_date must be an ISO date")):
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(dict(case_abs, prescription={}, planning=planning)))
        cases.append((("plan", str(f), "--out", str(tmp_path / name)), word))
    for args, word in cases:
        r = _run(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = [line for line in r.stderr.splitlines() if not line.startswith("[seedplan]")]
        assert len(lines) == 1, r.stderr
        assert word in lines[0] and "Traceback" not in r.stderr


def test_failed_run_keeps_previous_plan(demo_dir, tmp_path):
    import shutil

    shutil.copy(demo_dir / "plan.json", tmp_path / "plan.json")
    before = (tmp_path / "plan.json").read_bytes()
    bad = tmp_path / "case_bad.json"
    bad.write_text(json.dumps({"format": "seedplan-case/1", "ct": "nowhere/"}))
    assert main(["plan", str(bad), "--out", str(tmp_path)]) == 2
    assert (tmp_path / "plan.json").read_bytes() == before


def test_two_identical_demos_give_identical_plan_and_metrics(demo_dir, tmp_path):
    assert main(["demo", "--out", str(tmp_path / "again")]) == 0
    a = json.loads((demo_dir / "plan.json").read_text())
    b = json.loads((tmp_path / "again" / "plan.json").read_text())
    assert a.pop("run") != {} and b.pop("run") != {}  # the run record: when, and how fast
    assert a == b
    assert (demo_dir / "metrics.json").read_bytes() == (tmp_path / "again" / "metrics.json").read_bytes()
    # the exported DICOM RT objects of the same plan carry the same UIDs
    import pydicom

    for name in ("RTPLAN.dcm", "RTSTRUCT.dcm", "RTDOSE.dcm"):
        u1 = pydicom.dcmread(demo_dir / "dicom" / name).SOPInstanceUID
        u2 = pydicom.dcmread(tmp_path / "again" / "dicom" / name).SOPInstanceUID
        assert u1 == u2, name


def test_the_demo_reuses_an_identical_phantom_case(tmp_path):
    from seedplan.demo import _reuse_case
    from seedplan.imaging import make_spine_phantom
    from seedplan.io import write_phantom_case

    ph = make_spine_phantom(spacing_mm=3.0)
    write_phantom_case(ph, tmp_path / "a" / "case")
    assert _reuse_case(ph, tmp_path / "a" / "case", tmp_path / "b" / "case")
    a, b = tmp_path / "a" / "case" / "rtstruct.dcm", tmp_path / "b" / "case" / "rtstruct.dcm"
    assert a.stat().st_ino == b.stat().st_ino  # linked, not written again
    other = make_spine_phantom(spacing_mm=3.0, lesion_diameter_mm=20.0)
    assert not _reuse_case(other, tmp_path / "a" / "case", tmp_path / "c" / "case")
    assert not (tmp_path / "c").exists()
