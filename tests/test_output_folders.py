"""An output folder is always one plan: a run that fails, is interrupted or collides with another leaves an earlier
good folder byte-identical, and leaves no temporary file behind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seedplan.cli import main
from seedplan.imaging import make_spine_phantom
from seedplan.io import write_phantom_case


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def strays(parent: Path) -> list[str]:
    return sorted(str(p.relative_to(parent)) for p in parent.rglob("*") if ".seedplan-" in p.name or ".tmp" in p.name)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small (3 mm) phantom case and a first good plan folder made from it."""
    root = tmp_path_factory.mktemp("outfolders")
    written = write_phantom_case(make_spine_phantom(spacing_mm=3.0, lesion_diameter_mm=26.0), root / "case")
    assert main(["plan", str(written["case"]), "--out", str(root / "good")]) == 0
    return root, written["case"]


def _earlier(setup, tmp_path) -> tuple[Path, dict[str, str]]:
    root, _ = setup
    out = tmp_path / "out"
    shutil.copytree(root / "good", out)
    shutil.copytree(root / "case", tmp_path / "case")  # the plan refers to ../case/case.json
    return out, snapshot(out)


def test_a_failure_after_planning_keeps_the_earlier_folder(setup, tmp_path, monkeypatch, capsys):
    import seedplan.io.dicom.export as export

    out, before = _earlier(setup, tmp_path)

    def broken(*a, **k):
        raise OSError(errno.EIO, "the DICOM writer failed")

    monkeypatch.setattr(export, "export_rtdose", broken)
    assert main(["plan", str(setup[1]), "--out", str(out)]) == 2
    assert snapshot(out) == before and strays(tmp_path) == []
    assert "the DICOM writer failed" in capsys.readouterr().err


def test_a_full_disk_keeps_the_earlier_folder(setup, tmp_path, monkeypatch):
    import seedplan.io.volumes as volumes

    out, before = _earlier(setup, tmp_path)
    real = volumes.write_volume

    def full(grid, array, path, *a, **k):
        if Path(path).name == "cement.nrrd":  # half-way through the outputs
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(grid, array, path, *a, **k)

    monkeypatch.setattr("seedplan.outputs.write_volume", full)
    assert main(["plan", str(setup[1]), "--out", str(out)]) == 2
    assert snapshot(out) == before and strays(tmp_path) == []


def test_a_folder_seedplan_did_not_write_is_never_replaced(setup, tmp_path, capsys):
    mine = tmp_path / "my_documents"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert main(["plan", str(setup[1]), "--out", str(mine)]) == 2
    assert (mine / "thesis.tex").read_text() == "years of work" and sorted(os.listdir(mine)) == ["thesis.tex"]
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("[seedplan]")]
    assert len(err) == 1 and "holds files seedplan did not write" in err[0]
    # nor a folder that holds the case being planned
    root, case = setup
    assert main(["plan", str(case), "--out", str(root)]) == 2
    assert "which this run reads" in capsys.readouterr().err


def _run(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "seedplan.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(cond, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the moment to interrupt it: {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout_s:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def _staging(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".seedplan-new-" in p.name]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("moment", ["planning", "writing"])
def test_an_interrupted_run_keeps_the_earlier_folder(setup, tmp_path, sig, moment):
    out, before = _earlier(setup, tmp_path)
    proc = _run(["plan", str(setup[1]), "--out", str(out)])
    if moment == "planning":  # the staging folder exists, nothing written yet
        _wait_for(lambda: bool(_staging(tmp_path)), proc)
        time.sleep(0.5)
    else:  # the outputs are being written
        _wait_for(lambda: any((s / "plan.json").exists() for s in _staging(tmp_path)), proc)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    assert snapshot(out) == before
    assert strays(tmp_path) == [] and strays(out) == []
    err = proc.stderr.read()
    assert "Traceback" not in err


def test_two_runs_into_one_folder_do_not_interleave(setup, tmp_path):
    out, before = _earlier(setup, tmp_path)
    first = _run(["plan", str(setup[1]), "--out", str(out)])
    _wait_for(lambda: bool(_staging(tmp_path)), first)
    second = _run(["plan", str(setup[1]), "--out", str(out)])
    second.wait(timeout=120)
    err = [line for line in second.stderr.read().splitlines() if not line.startswith("[seedplan]")]
    assert second.returncode == 2 and len(err) == 1 and "another seedplan run" in err[0]
    assert first.wait(timeout=300) == 0
    after = snapshot(out)
    # the folder is the first run's complete output: its plan names its own case and every file is there
    assert json.loads((out / "plan.json").read_text())["case"]["case_file"].endswith("case/case.json")
    assert set(after) == set(before) and strays(tmp_path) == []


def test_dose_never_touches_the_planning_run_unless_asked(setup, tmp_path):
    out, before = _earlier(setup, tmp_path)
    assert main(["dose", str(out / "plan.json")]) == 0
    after = snapshot(out)
    assert {k: v for k, v in after.items() if not k.startswith("recomputed/")} == before
    assert {"recomputed/dose.nrrd", "recomputed/metrics.json"} <= set(after)
    # metrics recomputed from the same plan are the same bytes
    assert after["recomputed/metrics.json"] == before["metrics.json"]
    # --update replaces the dose, the metrics and the plan in the plan's own folder, as a whole
    assert main(["dose", str(out / "plan.json"), "--update"]) == 0
    assert set(snapshot(out)) == set(after)
    assert main(["dose", str(out / "plan.json"), "--update", "--out", str(tmp_path / "x")]) == 2
