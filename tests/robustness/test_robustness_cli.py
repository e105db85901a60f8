"""``seedplan robustness PLAN --out DIR``: the analysis files and the report, one-line errors with exit code 2."""

from __future__ import annotations

import json
from dataclasses import replace

from seedplan.cli import main
from seedplan.plan import save_plan


def test_the_command_writes_the_three_files(planned, threads_client, tmp_path, capsys):
    """On an existing cluster (--scheduler, the tests' thread cluster), settings from a file, flags win."""
    plan_file, _, _ = planned
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"robustness": {"scenarios": 3, "seed": 8, "errors": {"depth_sd_mm": 1.0}}}))
    out = tmp_path / "robust"
    assert main(["robustness", str(plan_file), "--errors", str(settings), "--scenarios", "6",
                 "--scheduler", threads_client.scheduler.address, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".seedplan", "report.html", "robustness.json", "robustness.png",
                                                     "robustness_scenarios.csv"]
    report = (out / "report.html").read_text()
    assert "Robustness to placement errors" in report and "Treatment plan" in report
    data = json.loads((out / "robustness.json").read_text())
    assert data["robustness"]["scenarios"] == 6 and data["robustness"]["seed"] == 8
    assert data["robustness"]["errors"]["depth_sd_mm"] == 1.0
    assert data["nominal_matches_plan_results"] is True
    assert len((out / "robustness_scenarios.csv").read_text().splitlines()) == 1 + 7
    printed = capsys.readouterr().out
    assert "target D90_Gy: nominal" in printed and f"summary: {out / 'robustness.json'}" in printed


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("seedplan robustness: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_bad_input_exits_2_with_one_line(planned, tmp_path, capsys):
    plan_file, plan, _ = planned
    out = tmp_path / "never"
    assert main(["robustness", str(plan_file), "--scenarios", "0", "--out", str(out)]) == 2
    assert "--scenarios must be >= 1" in _one_error_line(capsys)

    bad = tmp_path / "errors.json"
    bad.write_text(json.dumps({"lateral_sd_mm": -2.0}))
    assert main(["robustness", str(plan_file), "--errors", str(bad), "--out", str(out)]) == 2
    assert "lateral_sd_mm must be >= 0" in _one_error_line(capsys)

    empty = plan_file.parent / "empty_plan.json"
    save_plan(replace(plan, seeds=()), empty)
    assert main(["robustness", str(empty), "--out", str(out)]) == 2
    assert "the plan has no seeds" in _one_error_line(capsys)

    assert main(["robustness", str(plan_file), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1",
                 "--out", str(out)]) == 2
    assert "not both" in _one_error_line(capsys)
    assert not out.exists()                         # nothing written on a failed run
