"""seedplan batch: a cohort of phantom cases (or a sweep of one) planned as Dask tasks, one folder per case and
a summary row per case; a bad case fails alone, a second run skips what is done, a killed worker loses nothing."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from seedplan.batch import COLUMNS, SUMMARY, run_batch
from seedplan.cli import main
from seedplan.errors import InputError
from seedplan.imaging import make_spine_phantom
from seedplan.io import write_phantom_case
from seedplan.plan import Prescription, load_plan

#: The cohort: (level, lesion diameter mm) of six 2 mm phantoms (L1-L3: their field of view is the smallest).
COHORT = [("L2", 20.0), ("L3", 24.0), ("L1", 22.0), ("L3", 18.0), ("L1", 18.0), ("L2", 26.0)]


def names_of(files):
    return [Path(f).parent.name for f in files]


def summary_rows(out: Path) -> list[dict[str, str]]:
    with open(out / SUMMARY, newline="") as f:
        return list(csv.DictReader(f))


def leftovers(out: Path) -> list[str]:
    """Hidden staging / set-aside folders and lock files of atomic writes."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def check_row_matches_folder(row: dict[str, str], folder: Path) -> None:
    """A summary CSV row holds exactly the values of the case folder's metrics.json."""
    m = json.loads((folder / "metrics.json").read_text())
    assert float(row["D90_Gy"]) == m["target"]["D90_Gy"]
    assert float(row["V100_pct"]) == m["target"]["V100_pct"]
    assert float(row["prescription_Gy"]) == m["prescription_Gy"]
    assert int(row["seeds"]) == m["seeds"]["count"] > 0
    assert float(row["activity_mCi"]) == m["seeds"]["activity_mCi"]
    assert int(row["needles"]) == m["needles"]["count"]
    assert row["goals_met"] == str(not m["failed_goals"])
    # the OAR column: the highest D0.1cc among the organs the prescription limits by D0.1cc
    presc = Prescription()
    limited = {n: o["D0.1cc_Gy"] for n, o in m["oars"].items() if "D0.1cc_Gy" in presc.limits_for(n)}
    assert limited and row["oar"] == max(limited, key=limited.get)
    assert float(row["oar_D0.1cc_Gy"]) == limited[row["oar"]]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Six phantom case files and one whose CT is missing."""
    root = tmp_path_factory.mktemp("batch_cases")
    files = []
    for level, diameter in COHORT:
        folder = root / f"{level}_{diameter:g}mm"
        case = write_phantom_case(make_spine_phantom(level=level, spacing_mm=2.0, lesion_diameter_mm=diameter),
                                  folder)["case"]
        data = json.loads(case.read_text())
        data["planning"] = {"heterogeneity": False}  # the cement-corrected dose is not needed here
        case.write_text(json.dumps(data))
        files.append(case)
    bad = root / "broken" / "missing_ct.json"
    bad.parent.mkdir()
    data = json.loads(files[0].read_text())
    data.update(ct=str(root / "nowhere" / "ct"), structures={"rtstruct": str(files[0].parent / "rtstruct.dcm")})
    bad.write_text(json.dumps(data))
    return files, bad


@pytest.fixture(scope="module")
def first_run(cases, tmp_path_factory):
    """The cohort and the bad case through run_batch on a local cluster of two worker processes it starts."""
    files, bad = cases
    out = tmp_path_factory.mktemp("batch_out") / "cohort"
    t0 = time.perf_counter()
    result = run_batch(files + [bad], out, workers=2, review=False)
    return result, out, time.perf_counter() - t0


@pytest.fixture(scope="module")
def client():
    """A local cluster of two worker processes, as an existing cluster a batch connects to."""
    from distributed import Client, LocalCluster

    from seedplan._dask import WORKER_ENV

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                           silence_logs=logging.ERROR, env=dict(WORKER_ENV))
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


# ------------------------------------------------------------------------------------------ the cohort
def test_every_case_has_its_folder_and_its_row_in_input_order(cases, first_run):
    files, bad = cases
    result, out, _ = first_run
    expected = names_of(files) + ["missing_ct"]
    assert [r["case"] for r in result.rows] == expected
    rows = summary_rows(out)
    assert list(rows[0]) == list(COLUMNS)
    assert [r["case"] for r in rows] == expected
    for row, case_file in zip(rows[:len(files)], files):
        folder = out / row["case"]
        assert row["status"] == "planned" and row["error"] == "" and float(row["time_s"]) > 0
        for name in ("plan.json", "metrics.json", "dose.nrrd", "plan_table.csv", "batch.json"):
            assert (folder / name).is_file(), f"{folder}/{name}"
        check_row_matches_folder(row, folder)
        plan = load_plan(folder / "plan.json")  # the plan refers to its own case
        assert Path(plan.case["case_file"]).resolve() == case_file.resolve()
        assert plan.n_seeds == int(row["seeds"])
    # the rows returned are the CSV's
    assert [str(r["D90_Gy"]) for r in result.rows[:len(files)]] == [r["D90_Gy"] for r in rows[:len(files)]]
    assert leftovers(out) == []


def test_a_bad_case_fails_alone_with_its_one_line_error(cases, first_run):
    result, out, _ = first_run
    assert [r["case"] for r in result.failed] == ["missing_ct"]
    row = summary_rows(out)[-1]
    assert row["status"] == "failed"
    assert "does not exist" in row["error"] and "missing_ct.json" in row["error"] and "\n" not in row["error"]
    assert row["D90_Gy"] == "" and row["seeds"] == ""
    assert not (out / "missing_ct").exists()
    assert result.run["planned"] == len(COHORT) and result.run["failed"] == 1


# ------------------------------------------------------------------------------------------- resume
def test_a_second_run_skips_the_done_cases_and_replans_a_changed_one(cases, first_run, client, tmp_path, caplog):
    files, bad = cases
    result, out, _ = first_run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    stamps = {n: (again / n / "plan.json").stat().st_mtime_ns for n in names_of(files)}
    with caplog.at_level(logging.INFO, logger="seedplan"):
        second = run_batch(files + [bad], again, client=client, review=False)
    assert [r["status"] for r in second.rows] == ["skipped"] * len(files) + ["failed"]
    assert all((again / n / "plan.json").stat().st_mtime_ns == t for n, t in stamps.items())  # not re-planned
    assert sum("planned earlier with the same inputs, skipped" in r.getMessage() for r in caplog.records) == len(files)
    for first, skipped in zip(result.rows[:len(files)], second.rows):  # the row read back is the row written
        same = [k for k in first if k not in ("status", "folder")]  # the copy is in another folder
        assert {k: first[k] for k in same} == {k: skipped[k] for k in same}
    rows = summary_rows(again)
    for row in rows[:len(files)]:
        check_row_matches_folder(row, again / row["case"])

    # the case file changes (another prescription): that case alone is planned again
    original = files[0].read_text()
    try:
        data = json.loads(original)
        data["prescription"] = {**data.get("prescription", {}), "dose_Gy": 110}
        files[0].write_text(json.dumps(data))
        third = run_batch(files, again, client=client, review=False)
    finally:
        files[0].write_text(original)
    assert [r["status"] for r in third.rows] == ["planned"] + ["skipped"] * (len(files) - 1)
    assert third.rows[0]["prescription_Gy"] == 110.0
    assert json.loads((again / third.rows[0]["case"] / "metrics.json").read_text())["prescription_Gy"] == 110.0
    assert all((again / n / "plan.json").stat().st_mtime_ns == stamps[n] for n in names_of(files)[1:])

    # force: planned again with the same inputs
    forced = run_batch(files[1], again, client=client, review=False, force=True)
    assert forced.rows[0]["status"] == "planned"
    assert (again / forced.rows[0]["case"] / "plan.json").stat().st_mtime_ns != stamps[forced.rows[0]["case"]]


# --------------------------------------------------------------------------------------- killed worker
def test_a_killed_worker_loses_nothing(cases, client, tmp_path):
    files = cases[0][:3]
    out = tmp_path / "killed"
    pids = client.run(os.getpid)
    box: dict = {}

    def batch():
        try:
            box["result"] = run_batch(files, out, client=client, review=False)
        except BaseException as exc:  # pragma: no cover - reported below
            box["error"] = exc

    thread = threading.Thread(target=batch)
    thread.start()
    # both workers are writing a case (two staging folders): kill one of them, mid-plan
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob(".*.seedplan-new-*"))) < 2 and thread.is_alive():
        time.sleep(0.02)
    staged = [p.name for p in out.glob(".*.seedplan-new-*")]
    assert len(staged) == 2, f"not two cases in progress: {staged}"
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in box, box.get("error")
    result = box["result"]
    assert [r["status"] for r in result.rows] == ["planned"] * len(files)
    assert [r["case"] for r in summary_rows(out)] == names_of(files)
    for row in summary_rows(out):
        check_row_matches_folder(row, out / row["case"])
    assert leftovers(out) == []  # the dead worker's staging folder and lock were cleaned up by the retry
    assert pids[victim] not in client.run(os.getpid).values()  # the worker really died (its nanny started another)


# ----------------------------------------------------------------------------------------------- sweep
@pytest.mark.parametrize("table, words", [
    ("name,dose_Gy,prescription\na,100,1\n", ["unknown column 'prescription'", "valid columns", "dose_Gy"]),
    ("name,dose_Gy\na,100\nb,lots\n", ["row 2 (line 3)", "column 'dose_Gy'", "must be a number", "'lots'"]),
    ("name,activity_mCi\na,0.5\nb,0.6\na,0.7\n", ["row 3 (line 4)", "column 'name'", "'a' is already the name of row 1"]),
    ("name,dose_Gy\na,200\n", ["row 1 (line 2)", "column 'dose_Gy'", "80-160 Gy"]),
    ("name,activity_mCi\nb c,0.5\n", ["row 1 (line 2)", "column 'name'", "not a folder name"]),
    ("name\na\n", ["no parameter column"]),
])
def test_a_bad_sweep_table_names_file_row_and_column(cases, tmp_path, table, words):
    table_file = tmp_path / "sweep.csv"
    table_file.write_text(table)
    with pytest.raises(InputError) as exc:
        run_batch(cases[0][0], tmp_path / "out", sweep=table_file)
    assert str(table_file) in str(exc.value)
    for w in words:
        assert w in str(exc.value)
    assert not (tmp_path / "out").exists()  # checked before anything started


def test_a_lesion_sweep_needs_a_phantom_case(cases, tmp_path):
    case = tmp_path / "not_a_phantom" / "patient.json"  # the same CT and structures, no phantom.json beside it
    case.parent.mkdir()
    data = json.loads(cases[0][0].read_text())
    data.update(ct=str(cases[0][0].parent / "ct"), structures={"rtstruct": str(cases[0][0].parent / "rtstruct.dcm")})
    case.write_text(json.dumps(data))
    (tmp_path / "sweep.csv").write_text("name,lesion_diameter_mm\nsmall,16\n")
    with pytest.raises(InputError, match=r"sweep column 'lesion_diameter_mm': .*patient.json is not a phantom case"):
        run_batch(case, tmp_path / "out", sweep=tmp_path / "sweep.csv")
    with pytest.raises(InputError, match="a sweep table varies one case; got 2 case files"):
        run_batch(cases[0][:2], tmp_path / "out", sweep=tmp_path / "sweep.csv")


def test_a_sweep_plans_one_folder_per_row_with_its_value(cases, client, tmp_path):
    case_file = cases[0][1]  # L3, lesion 24 mm
    table = tmp_path / "sweep.csv"
    table.write_text("name,dose_Gy,activity_mCi,lesion_diameter_mm\npd100_a06,100,0.6,\nlesion16,,,16\n")
    out = tmp_path / "sweep"
    result = run_batch(case_file, out, sweep=table, client=client, review=False)
    assert [r["case"] for r in result.rows] == ["pd100_a06", "lesion16"]
    assert [r["status"] for r in result.rows] == ["planned"] * 2, [r["error"] for r in result.rows]
    rows = summary_rows(out)
    assert list(rows[0])[-3:] == ["sweep_dose_Gy", "sweep_activity_mCi", "sweep_lesion_diameter_mm"]
    assert [r["sweep_dose_Gy"] for r in rows] == ["100.0", ""] and rows[1]["sweep_lesion_diameter_mm"] == "16.0"
    for row in rows:
        check_row_matches_folder(row, out / row["case"])
    swept = json.loads((out / "pd100_a06" / "metrics.json").read_text())
    assert swept["prescription_Gy"] == 100.0 and swept["seeds"]["activity_mCi"] == 0.6
    assert {s.activity_mCi for s in load_plan(out / "pd100_a06" / "plan.json").seeds} == {0.6}
    # the lesion variant: the phantom built again with a 16 mm lesion, beside its plan, which refers to it
    lesion = json.loads((out / "lesion16" / "metrics.json").read_text())
    assert lesion["prescription_Gy"] == 120.0
    info = json.loads((out / "lesion16" / "case" / "phantom.json").read_text())
    assert info["lesion_diameter_mm"] == 16.0 and info["level"] == "L3"
    plan = load_plan(out / "lesion16" / "plan.json")
    assert Path(plan.case["case_file"]).resolve() == (out / "lesion16" / "case" / "case.json").resolve()
    assert lesion["target"]["volume_cm3"] < 0.5 * swept["target"]["volume_cm3"]  # (16/24)^3 = 0.3


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_batch_end_to_end(cases, client, tmp_path, capsys):
    good = cases[0][2]
    bad = tmp_path / "too_much.json"  # a prescription outside 80-160 Gy
    data = json.loads(good.read_text())
    data.update(ct=str(good.parent / "ct"), structures={"rtstruct": str(good.parent / "rtstruct.dcm")},
                prescription={"dose_Gy": 300})
    bad.write_text(json.dumps(data))
    out = tmp_path / "cli"
    address = client.scheduler.address
    assert main(["batch", str(good), str(bad), "--out", str(out), "--scheduler", address, "--no-review"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:3] == ["case", "status", "goals"]
    assert lines[1].startswith(good.parent.name) and " planned " in lines[1]
    assert lines[2].startswith("too_much") and "failed" in lines[2] and "80-160 Gy" in lines[2]
    assert lines[3] == f"summary: {out / SUMMARY}"
    assert "1 of 2 case(s) failed (too_much)" in captured.err and "Traceback" not in captured.err
    assert (out / good.parent.name / "plan.json").is_file() and not (out / good.parent.name / "report.html").exists()
    assert [r["status"] for r in summary_rows(out)] == ["planned", "failed"]

    # all planned: exit 0, the done case skipped
    assert main(["batch", str(good), "--out", str(out), "--scheduler", address, "--no-review"]) == 0
    assert " skipped " in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--sweep", "missing.csv"], "sweep table missing.csv: cannot read it"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "either --workers"),
])
def test_cli_batch_bad_input_is_one_line_and_exit_2(cases, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    assert main(["batch", str(cases[0][0]), "--out", str(tmp_path / "out")] + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("seedplan batch: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_batch_missing_case_file(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out")]) == 2
    assert f"case file {tmp_path / 'nope.json'} does not exist" in capsys.readouterr().err
