"""The whole chain on a real CT (TotalSegmentator's example, 3 mm, supine) with what a clinic has: a target and an
auto-segmentation, or a target alone.  Nothing here is tuned to one vertebra: L1 with the segmentation, T12 (ribs and
lung beside it) with the CT alone."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from seedplan.cli import main
from seedplan.geometry import Grid
from seedplan.imaging import (
    Structure,
    StructureSet,
    derive_anatomy,
    load_ct,
    load_totalsegmentator,
)
from seedplan.io import load_plan_case
from seedplan.plan import load_plan, plan_structures
from seedplan.planning import plan_case

DATA = Path(__file__).resolve().parents[1] / "data" / "real_ct"
CT, SEG = DATA / "ct_T12-L2_3mm.nii.gz", DATA / "totalseg_T12-L2_3mm.nii.gz"
DCIODVFY = shutil.which("dciodvfy")


def lesion_in(level: str, radius_mm: float) -> tuple[object, np.ndarray]:
    """A spherical lesion in the vertebral body of ``level`` (from the segmentation), on the CT grid."""
    ct = load_ct(CT)
    anatomy, _ = derive_anatomy(ct, load_totalsegmentator(SEG, ct), level=level)
    vb = anatomy[f"vertebral_body_{level}"]
    xyz = ct.grid.voxel_centers_mm()
    return ct, (np.linalg.norm(xyz - vb.centroid_mm, axis=-1) <= radius_mm) & vb.mask


def needle_samples(n, step_mm: float = 0.5) -> np.ndarray:
    k = np.arange(0.0, n.depth_mm + 1e-9, step_mm)
    return n.entry[None] + k[:, None] * n.direction[None]


def check_needles(plan, structures: StructureSet, ct) -> None:
    """Every needle enters at the skin and crosses no canal, lung or air, vessel or organ at risk."""
    s = plan_structures(plan, structures)
    body = s.by_role("body")[0]
    forbidden = [x for x in s.values() if x.role.value in ("canal", "oar", "avoidance") and x.name != "cement"]
    assert any(x.role.value == "canal" for x in forbidden) and "air_inside_body" in s
    for n in (*plan.needles, *plan.pvp_needles):
        pts = needle_samples(n)
        for x in forbidden:
            hit = x.contains_mm(pts)
            assert not hit.any(), f"needle {n.label} crosses {x.name} at {pts[hit][0]}"
        # the entry is the skin: just outside it is outside the body, just inside is inside
        out3, in3 = n.entry - 3.0 * n.direction, n.entry + 3.0 * n.direction
        assert not body.contains_mm(out3[None])[0] and body.contains_mm(in3[None])[0], n.label
        assert abs(n.depth_mm - np.linalg.norm(n.tip - n.entry)) < 1e-9


@pytest.fixture(scope="module")
def l1_run(tmp_path_factory):
    """`seedplan plan` on the real CT, a 22 mm L1 lesion drawn on the original NIfTI grid, and the segmentation."""
    root = tmp_path_factory.mktemp("real_ct")
    ct, target = lesion_in("L1", 11.0)
    img = sitk.ReadImage(str(CT))  # the user's mask is on the file's own grid (another axis direction)
    on_file = Structure("target", "target", target, ct.grid).resampled(Grid.from_sitk(img))
    out = sitk.GetImageFromArray(on_file.mask.astype(np.uint8))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(root / "target_L1.nii.gz"), useCompression=True)
    case = {"format": "seedplan-case/1", "name": "real CT, L1 lesion", "ct": str(CT), "patient_position": "HFS",
            "structures": {"masks": [{"path": "target_L1.nii.gz", "name": "target", "role": "target"}],
                           "totalsegmentator": str(SEG)}}
    (root / "case.json").write_text(json.dumps(case))
    assert main(["plan", str(root / "case.json"), "--out", str(root / "out")]) == 0
    return root / "out"


def test_real_ct_with_segmentation_plans_safely(l1_run):
    plan = load_plan(l1_run / "plan.json")
    case = load_plan_case(plan)
    m = json.loads((l1_run / "metrics.json").read_text())
    # the planner derived what the segmentation lacks, and says so
    derived = {s.name for s in plan.structures}
    assert {"body", "air_inside_body", "vertebral_body_L1", "pedicle_left_L1", "pedicle_right_L1",
            "spinal_canal"} <= derived
    assert all(s.derived for s in plan.structures)
    assert sum("anatomy: " in w for w in m["warnings"]) >= 5
    # a supine CT: the plan says plainly that the patient must be turned prone and re-scanned
    assert any("supine" in w and "prone" in w for w in m["warnings"])
    report = (l1_run / "report.html").read_text()
    assert "turn the patient prone" in report and "derived" in report
    check_needles(plan, case.structures, case.ct)
    # goals met, or each failure named
    assert m["failed_goals"] == [] or all(isinstance(g, str) for g in m["failed_goals"])
    assert m["oars"]["spinal_cord"]["D0.1cc_Gy"] <= 50.0
    assert m["target"]["D90_Gy"] >= 120.0 and m["target"]["V100_pct"] >= 95.0
    # the cement stays in the vertebral body: capped where the front would leave it, what leaves is reported
    c = m["cement"]
    assert c["outside_vertebral_body_mL"] <= 0.05 and c["nearest_organ"]["name"]
    assert c["capped_at_leak"] is None or c["volume_mL"] < c["capped_at_leak"]["trips_at_mL"]


def test_real_ct_gives_every_output_and_valid_dicom(l1_run):
    for name in ("plan.json", "plan_table.csv", "plan_summary.txt", "dose.nrrd", "metrics.json", "dvh.csv",
                 "report.html", "slice_axial.png", "dvh.png", "view3d_anterior.png", "dicom/RTPLAN.dcm",
                 "dicom/RTDOSE.dcm", "dicom/RTSTRUCT.dcm"):
        assert (l1_run / name).is_file(), name
    slices = sorted((l1_run / "dicom" / "ct").glob("*.dcm"))
    assert len(slices) == 30
    ct0 = pydicom.dcmread(slices[0])
    rs = pydicom.dcmread(l1_run / "dicom" / "RTSTRUCT.dcm")
    rd = pydicom.dcmread(l1_run / "dicom" / "RTDOSE.dcm")
    # the CT written from the NIfTI keeps the patient's orientation: standard axial HFS, as the case says
    assert ct0.PatientPosition == "HFS" and [float(v) for v in ct0.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID == ct0.SeriesInstanceUID == load_ct(CT).series_uid  # stable UIDs from the content
    assert rd.FrameOfReferenceUID == ct0.FrameOfReferenceUID
    # derived structures are marked in the RTSTRUCT
    desc = {str(r.ROIName): str(getattr(r, "ROIDescription", "")) for r in rs.StructureSetROISequence}
    assert desc["spinal_canal"].startswith("derived:") and desc["spinal_cord"] == ""
    # the RTDOSE grid covers every organ at risk within reach of the seeds
    g = Grid.from_sitk(sitk.ReadImage(str(l1_run / "dicom" / "RTDOSE.dcm")))
    plan = load_plan(l1_run / "plan.json")
    cord = load_plan_case(plan).structures["spinal_cord"]
    near = cord.points_mm()[np.min(np.linalg.norm(cord.points_mm()[:, None] - plan.positions_mm[None], axis=2),
                                   axis=1) < 50.0]
    assert len(near) and g.contains(near, margin_voxels=1.0).all()
    if DCIODVFY:
        for f in (l1_run / "dicom" / "RTDOSE.dcm", l1_run / "dicom" / "RTSTRUCT.dcm", slices[0]):
            out = subprocess.run([DCIODVFY, str(f)], capture_output=True, text=True).stdout
            out += subprocess.run([DCIODVFY, str(f)], capture_output=True, text=True).stderr
            assert "Error" not in out, (f.name, out)


def test_real_ct_target_alone_at_another_level():
    """T12 with nothing but the CT and the target: the anatomy comes from the CT; safe needles or a named failure."""
    ct, target = lesion_in("T12", 10.0)
    result = plan_case(ct, StructureSet([Structure("target", "target", target, ct.grid)]))
    plan = result.plan
    assert ct.patient_position is None
    assert any("no patient position" in n for n in plan.notes)
    assert {"body", "air_inside_body", "spinal_canal"} <= {s.name for s in plan.structures}
    check_needles(plan, StructureSet([Structure("target", "target", target, ct.grid)]), ct)
    m = plan.results
    for g in m["failed_goals"]:  # a missed goal is reported, never hidden
        assert any(x["goal"] == g and not x["passed"] for x in m["goals"])
    assert all(o["D0.1cc_Gy"] <= 50.0 for n, o in m["oars"].items() if n in ("spinal_canal", "thecal_sac"))
