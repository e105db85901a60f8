"""A saved plan is the plan: its seed model, cement and derived structures travel with it, its paths are relative,
and reading, re-evaluating, exporting or viewing it never needs the planner."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from seedplan.cli import main
from seedplan.errors import FileFormatError
from seedplan.imaging import make_spine_phantom
from seedplan.io import load_plan_case, write_phantom_case
from seedplan.plan import load_plan, plan_dose_grid, seed_model_sha256
from seedplan.sources import load_seed_model

SRC = Path(__file__).resolve().parents[2] / "src" / "seedplan"


@pytest.fixture(scope="module")
def user_model_run(tmp_path_factory):
    """`seedplan plan` of a 3 mm phantom case whose prescription names a user seed-model file."""
    root = tmp_path_factory.mktemp("self_contained")
    written = write_phantom_case(make_spine_phantom(spacing_mm=3.0, lesion_diameter_mm=26.0), root / "case")
    model = load_seed_model("6711").to_dict()
    model.update(name="MySeed", description="a user seed, 6711 data with another dose-rate constant",
                 dose_rate_constant_cGy_h_U=0.98)
    (root / "case" / "my_seed.json").write_text(json.dumps(model))
    case = json.loads(written["case"].read_text())
    case["prescription"] = {"seed_model": "my_seed.json"}
    case["planning"] = {"calibration_date": "2026-11-20", "implant_date": "2026-11-22"}
    written["case"].write_text(json.dumps(case))
    assert main(["plan", str(written["case"]), "--out", str(root / "out")]) == 0
    return root


def test_the_plan_embeds_the_user_seed_model(user_model_run):
    data = json.loads((user_model_run / "out" / "plan.json").read_text())
    assert data["version"] == 2
    sm = data["seed_model"]
    assert sm["name"] == "MySeed" and sm["dataset"]["dose_rate_constant_cGy_h_U"] == 0.98
    assert sm["sha256"] == seed_model_sha256(sm["dataset"])
    # the case file and the CT are referred to relative to the plan file, with the CT's hash
    case = data["case"]
    assert case["case_file"] == "../case/case.json" and case["ct"] == "../case/ct"
    assert len(case["ct_sha256"]) == 64 and case["ct_series_uid"]
    # the run record is the only part that depends on when the plan was made
    assert set(data["run"]) >= {"created", "timings_s"} and "created" not in data


def test_a_moved_folder_without_the_model_file_gives_the_same_dose(user_model_run, tmp_path, monkeypatch):
    plan_before = load_plan(user_model_run / "out" / "plan.json")
    case_before = load_plan_case(plan_before)
    grid_a, dose_a = plan_dose_grid(plan_before, case_before.ct.grid)
    # move the output folder and its case folder elsewhere, delete the seed model file, work from another folder
    moved = tmp_path / "elsewhere"
    shutil.copytree(user_model_run, moved)
    (moved / "case" / "my_seed.json").unlink()
    monkeypatch.chdir(tmp_path)
    plan = load_plan(moved / "out" / "plan.json")
    assert plan.seed_model.name == "MySeed" and plan.case["case_file"] == str(moved / "case" / "case.json")
    grid_b, dose_b = plan_dose_grid(plan, load_plan_case(plan).ct.grid)
    assert grid_b.same_geometry(grid_a)
    np.testing.assert_allclose(dose_b, dose_a, rtol=1e-12, atol=0)
    # dose, export and view run unchanged on the moved folder
    assert main(["dose", str(moved / "out" / "plan.json"), "--out", str(tmp_path / "dose")]) == 0
    assert (tmp_path / "dose" / "metrics.json").read_bytes() == (moved / "out" / "metrics.json").read_bytes()
    assert main(["export", str(moved / "out" / "plan.json"), "--out", str(tmp_path / "rt")]) == 0
    assert main(["view", str(moved / "out" / "plan.json"), "--screenshots", "--views", "anterior",
                 "--out", str(tmp_path / "view")]) == 0
    assert (tmp_path / "view" / "view3d_anterior.png").stat().st_size > 10_000
    report = (moved / "out" / "report.html").read_text()
    assert "<strong>MySeed</strong>" in report


def test_a_changed_ct_is_refused(user_model_run, tmp_path):
    moved = tmp_path / "m"
    shutil.copytree(user_model_run, moved)
    import pydicom

    first = sorted((moved / "case" / "ct").glob("*.dcm"))[10]
    ds = pydicom.dcmread(first)
    px = ds.pixel_array.copy()
    px[0, 0] += 100
    ds.PixelData = px.tobytes()
    ds.save_as(first)
    plan = load_plan(moved / "out" / "plan.json")
    with pytest.raises(FileFormatError, match="no longer matches the plan"):
        load_plan_case(plan)
    assert main(["export", str(moved / "out" / "plan.json"), "--out", str(tmp_path / "rt")]) == 2


def test_a_builtin_model_of_the_same_name_with_other_data_is_named_in_one_warning(user_model_run, tmp_path, caplog):
    data = json.loads((user_model_run / "out" / "plan.json").read_text())
    d = data["seed_model"]["dataset"]
    d["name"] = data["seed_model"]["name"] = "6711"  # the user's data under a built-in name
    data["seed_model"]["sha256"] = seed_model_sha256(d)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger="seedplan"):
        plan = load_plan(path)
    assert plan.seed_model.dose_rate_constant_cGy_h_U == 0.98  # the plan's own data wins
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 1 and "differs from the built-in model" in lines[0]
    # an edited dataset that no longer matches its hash is refused
    d["dose_rate_constant_cGy_h_U"] = 0.9
    path.write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match="sha256"):
        load_plan(path)


def test_needles_have_one_name_everywhere(user_model_run):
    import csv

    import pydicom

    out = user_model_run / "out"
    plan = load_plan(out / "plan.json")
    names = [f"N{k}" for k in range(1, len(plan.needles) + 1)]
    assert [n.label for n in plan.needles] == names
    rows = list(csv.DictReader((out / "plan_table.csv").read_text().splitlines()))
    assert sorted({r["needle"] for r in rows}, key=lambda x: int(x[1:])) == names
    rtplan = pydicom.dcmread(out / "dicom" / "RTPLAN.dcm")
    channels = rtplan.ApplicationSetupSequence[0].ChannelSequence
    assert [str(c.SourceApplicatorID) for c in channels] == names
    rs = pydicom.dcmread(out / "dicom" / "RTSTRUCT.dcm")
    rois = {int(r.ROINumber): str(r.ROIName) for r in rs.StructureSetROISequence}
    assert [rois[int(c.ReferencedROINumber)] for c in channels] == [f"needle_{n}" for n in names]


def test_version_1_plan_files_still_load():
    plan = load_plan(Path(__file__).parent / "data" / "plan_v1.json")
    assert plan.seed_model.name == "6711" and plan.n_seeds == 14 and len(plan.needles) == 9
    assert plan.cement is None and any("version-1 plan" in n for n in plan.notes)
    assert plan.run.get("created")
    from seedplan.plan import plan_dose_at

    # the dose of the reloaded plan at a seed-free point is the TG-43 sum of its seeds
    p = plan.positions_mm.mean(axis=0, keepdims=True) + 40.0
    from seedplan import total_dose

    assert plan_dose_at(plan)(p)[0] == total_dose(p, plan.positions_mm, plan.strengths_at_implant_U,
                                                  axes=plan.axes)[0]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("layer", ["plan", "io", "viz"])
def test_layers_that_use_a_plan_never_import_the_planner(layer):
    bad = {str(f.relative_to(SRC)): sorted(m for m in _imports(f) if "planning" in m)
           for f in (SRC / layer).rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}
