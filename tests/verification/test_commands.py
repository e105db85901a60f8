"""`seedplan replan` and `seedplan postplan` end to end, on synthetic intra- and post-operative CTs of a plan
(known truth: needles, seeds, a patient shift)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seedplan.cli import main
from seedplan.imaging import make_spine_phantom, write_ct_image
from seedplan.io import load_plan_case, write_phantom_case
from seedplan.plan import load_plan
from seedplan.verification import NeedleErrorModel, rigid_motion, synthetic_ct


def later_grid(case):
    """A 1 mm CT around the target, as a CT-room scan would be (thin needles need thin voxels)."""
    from seedplan.geometry import Grid

    c = case.structures["target"].centroid_mm
    return Grid.from_bounds(c - (125.0, 60.0, 40.0), c + (125.0, 118.0, 40.0), 1.0)  # up to the skin of the back


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("room")
    written = write_phantom_case(make_spine_phantom(spacing_mm=2.0), root / "case")
    assert main(["plan", str(written["case"]), "--out", str(root / "plan")]) == 0
    plan = load_plan(root / "plan" / "plan.json")
    return root, plan, load_plan_case(plan)


def test_replan_on_the_needles_placed(planned):
    root, plan, case = planned
    # needles placed with errors a third of the template series' (Ji 2021), the patient moved by 2 deg / 5 mm
    small = NeedleErrorModel(1.1, 0.6, 0.9, 0.6, 1.7, 1.6, 0.3, 2.0)
    syn = synthetic_ct(plan, case.ct, kind="intraop", errors=small, structures=case.structures, seed=5,
                       grid=later_grid(case),
                       motion=rigid_motion(rotation_deg=(2.0, 0.0, 1.0), translation_mm=(5.0, -3.0, 2.0)))
    write_ct_image(syn.ct, root / "intraop.nii.gz")
    assert main(["replan", str(root / "plan" / "plan.json"), "--ct", str(root / "intraop.nii.gz"),
                 "--out", str(root / "replan")]) == 0
    new = load_plan(root / "replan" / "plan.json")
    needles = json.loads((root / "replan" / "needles.json").read_text())
    assert not needles["unmatched_planned"] and needles["mean_tip_error_mm"] > 0.5
    # the seeds lie on the needles as placed (truth), not on the planned ones
    truth = {n.label: n for n in syn.truth.needles}
    for s in new.seeds:
        n = new.needles[s.needle - 1]
        d = np.linalg.norm(np.cross(np.asarray(s.position_mm) - n.entry, n.direction))
        assert d < 0.5  # on its needle's line
    placed = [np.array(t.tip_mm) for t in truth.values() if t.kind == "seed"]
    for n in new.needles:
        assert min(np.linalg.norm(n.tip - p) for p in placed) < 12.0  # tips on (or along) the placed needles
    t = new.results["target"]
    assert t["D90_Gy"] >= 120.0 and t["V100_pct"] >= 95.0 or new.results["failed_goals"]
    report = (root / "replan" / "report.html").read_text()
    assert "Needles as placed" in report and (root / "replan" / "registration_check.png").stat().st_size > 5000
    assert new.seeds[0].activity_mCi == plan.seeds[0].activity_mCi  # the seeds ordered are the seeds used


def test_postplan_finds_the_seeds_and_compares_the_dose(planned):
    root, plan, case = planned
    syn = synthetic_ct(plan, case.ct, kind="postop", errors=NeedleErrorModel(1.0, 0.5, 1.0, 0.5, 1.0, 1.0, 0.5, 3.0),
                       structures=case.structures, seed=2, missing_seeds=1, grid=later_grid(case),
                       motion=rigid_motion(rotation_deg=(3.0, 0.0, 0.0), translation_mm=(8.0, 0.0, 0.0)))
    write_ct_image(syn.ct, root / "postop.nii.gz")
    # two of these seeds ended up 2.6 mm apart, one blob on the CT: the count implanted (from the procedure
    # record) lets the blob volumes be split into that many seeds
    n_implanted = len(syn.truth.seed_positions_mm)
    assert main(["postplan", str(root / "postop.nii.gz"), "--plan", str(root / "plan" / "plan.json"),
                 "--expected-seeds", str(n_implanted), "--out", str(root / "post")]) == 0
    rec = json.loads((root / "post" / "postplan.json").read_text())
    found = np.array(rec["seeds"]["positions_mm"])
    true = syn.truth.seed_positions_mm
    assert len(found) == len(true)  # every implanted seed, no extra
    d = np.linalg.norm(found[:, None] - true[None], axis=2).min(axis=1)
    assert d.max() < 1.0  # in planning coordinates, after the registration
    assert len(rec["seeds"]["missing"]) == 1
    m = json.loads((root / "post" / "metrics.json").read_text())
    comp = m["comparison"]
    assert comp["seed count"] == {"planned": plan.n_seeds, "delivered": plan.n_seeds - 1, "difference": -1}
    assert comp["target D90_Gy"]["planned"] == plan.results["target"]["D90_Gy"]
    # the delivered D90 is what the true seed positions give (within 2 %)
    from dataclasses import replace

    from seedplan.plan import PlannedSeed, evaluate_plan

    ref = plan.seeds[0]
    truth_plan = replace(plan, seeds=tuple(PlannedSeed(tuple(p), tuple(a), 1, 0.0, ref.activity_mCi, ref.strength_U)
                                           for p, a in zip(true, syn.truth.seed_axes)))
    d90_true = evaluate_plan(truth_plan, case.structures).metrics["target"]["D90_Gy"]
    assert m["target"]["D90_Gy"] == pytest.approx(d90_true, rel=0.02)
    report = (root / "post" / "report.html").read_text()
    assert "Post-implant check" in report and "Delivered" in report
    for name in ("RTDOSE.dcm", "RTSTRUCT.dcm"):
        assert (root / "post" / "dicom" / name).is_file()


def test_bad_inputs(planned, tmp_path, capsys):
    root, plan, case = planned
    # a CT that does not overlap the plan: one line, nothing written
    far = make_spine_phantom(spacing_mm=4.0).ct
    from dataclasses import replace

    from seedplan.geometry import Grid

    g = far.grid
    moved = replace(far, grid=Grid(np.array(g.origin_mm) + (0, 0, 900.0), g.spacing_mm, g.size, g.direction))
    write_ct_image(moved, tmp_path / "elsewhere.nii.gz")
    assert main(["postplan", str(tmp_path / "elsewhere.nii.gz"), "--plan", str(root / "plan" / "plan.json"),
                 "--out", str(tmp_path / "x")]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("seedplan postplan: error")]
    assert len(err) == 1 and not (tmp_path / "x").exists()
    # the planning CT itself holds no seed: "no seeds" is said plainly
    write_ct_image(case.ct, tmp_path / "no_seeds.nii.gz")
    assert main(["postplan", str(tmp_path / "no_seeds.nii.gz"), "--plan", str(root / "plan" / "plan.json"),
                 "--out", str(tmp_path / "y")]) == 2
    assert "seed" in capsys.readouterr().err
