"""Scenarios on Dask: the same results on any number of workers, the summary and the files.

Most tests share one cluster of two thread workers in this process (``threads_client``) and the structures
sampled once (``prepared``); the worker-count test compares a local cluster of one thread worker with one of
two process workers, as ``seedplan robustness`` starts them.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from seedplan.errors import InputError
from seedplan.robustness import (
    ErrorModel,
    MetricColumn,
    RobustnessOptions,
    prepare_problem,
    robustness_csv,
    robustness_html,
    robustness_json,
    run_robustness,
    write_robustness,
)


@pytest.fixture(scope="module")
def prepared(planned):
    _, plan, case = planned
    return prepare_problem(plan, case.structures, ErrorModel(), 0)


def test_same_seed_same_files_on_one_and_two_workers(planned, prepared):
    _, plan, case = planned
    one = run_robustness(plan, case.structures, scenarios=10, seed=5, workers=1, processes=False)
    two = run_robustness(plan, case.structures, scenarios=10, seed=5, workers=2)          # processes
    assert one.run["workers"] == 1 and two.run["workers"] == 2
    assert robustness_json(one) == robustness_json(two)
    assert robustness_csv(one) == robustness_csv(two)
    # and the values are the scenarios as evaluated here, in this process
    problem = replace(prepared, seed=5)
    for k in (0, 4, 10):
        assert list(problem.evaluate(k)["values"].values()) == two.values[k].tolist()


def test_summary_and_scenario_zero(planned, prepared, threads_client):
    _, plan, case = planned
    r = run_robustness(plan, case.structures, RobustnessOptions(scenarios=16, seed=1), client=threads_client,
                       problem=prepared)
    assert r.n_scenarios == 16 and r.values.shape == (17, len(r.columns))
    assert r.nominal_differences == ()                     # scenario 0 is the stored plan (to rounding)
    d = r.to_dict()
    assert d["nominal_matches_plan_results"] is True and d["robustness"]["scenarios"] == 16
    d90 = next(m for m in d["metrics"] if m["metric"] == "D90_Gy")
    x = r.column(d90["structure"], "D90_Gy")[1:]
    assert d90["nominal"] == pytest.approx(plan.results["target"]["D90_Gy"], rel=1e-6)
    assert d90["mean"] == pytest.approx(np.mean(x)) and d90["p50"] == pytest.approx(np.median(x))
    assert d90["p5"] <= d90["p50"] <= d90["p95"]
    labels = [g["goal"] for g in d["goals"]]
    assert labels == [g["goal"] for g in plan.results["goals"]]       # the plan's own goals
    for g, stored in zip(d["goals"], plan.results["goals"]):
        assert g["nominal_passed"] == stored["passed"]
        assert g["nominal_value"] == pytest.approx(stored["value"], rel=1e-4)
        col = r.column(g["structure"], g["metric"])[1:]
        met = col >= g["limit"] if g["comparison"] == ">=" else col <= g["limit"]
        assert g["probability"] == pytest.approx(met.mean())


def test_zero_error_model_gives_zero_spread(planned, prepared, threads_client):
    _, plan, case = planned
    r = run_robustness(plan, case.structures, errors=ErrorModel.none(), scenarios=6, client=threads_client,
                       problem=prepared)
    for m in r.to_dict()["metrics"]:
        assert m["sd"] == 0.0 and m["p5"] == m["p50"] == m["p95"] == m["nominal"], m["label"]
    for g in r.to_dict()["goals"]:
        assert g["probability"] == (1.0 if g["nominal_passed"] else 0.0)


def test_the_spread_grows_with_the_error_scale(planned, prepared, threads_client):
    _, plan, case = planned
    sds = []
    for scale in (0.25, 0.5, 1.0):
        r = run_robustness(plan, case.structures, errors=ErrorModel().scaled(scale), scenarios=16, seed=3,
                           client=threads_client, problem=prepared)
        d90 = r.values[1:, [c.metric for c in r.columns].index("D90_Gy")]
        sds.append(float(np.std(d90, ddof=1)))
    assert sds[0] < sds[1] < sds[2]
    assert sds[0] > 0.0


def test_scenario_k_does_not_depend_on_the_number_of_scenarios(planned, prepared, threads_client):
    _, plan, case = planned
    short = run_robustness(plan, case.structures, scenarios=4, seed=9, client=threads_client, problem=prepared)
    long = run_robustness(plan, case.structures, scenarios=11, seed=9, client=threads_client, chunk_size=3,
                          problem=prepared)
    assert np.array_equal(short.values, long.values[:5])
    assert np.array_equal(short.dvh_pct, long.dvh_pct[:5])


def test_an_existing_cluster_by_its_address(planned, prepared, threads_client):
    _, plan, case = planned
    address = threads_client.scheduler.address
    by_address = run_robustness(plan, case.structures, scenarios=4, seed=9, scheduler=address, problem=prepared)
    here = run_robustness(plan, case.structures, scenarios=4, seed=9, client=threads_client, problem=prepared)
    assert robustness_json(by_address) == robustness_json(here)
    assert by_address.run["scheduler"] == address
    assert threads_client.status == "running"      # a cluster it did not start is left running


def test_bad_input_is_one_clear_error(planned, prepared):
    _, plan, case = planned
    with pytest.raises(InputError, match="robustness scenarios must be >= 1"):
        run_robustness(plan, case.structures, scenarios=0)
    with pytest.raises(InputError, match="depth_sd_mm must be >= 0"):
        run_robustness(plan, case.structures, errors=ErrorModel(depth_sd_mm=-1.0))
    with pytest.raises(InputError, match="the plan has no seeds"):
        run_robustness(replace(plan, seeds=()), case.structures, scenarios=5)
    with pytest.raises(InputError, match="workers must be >= 1"):
        run_robustness(plan, case.structures, scenarios=5, workers=0)
    with pytest.raises(InputError, match="at most one of workers"):
        run_robustness(plan, case.structures, scenarios=5, workers=2, scheduler="tcp://127.0.0.1:8786")
    other = replace(plan, seeds=plan.seeds[1:])
    with pytest.raises(InputError, match="prepared for another plan"):
        run_robustness(other, case.structures, scenarios=5, problem=prepared)


def test_the_files(planned, prepared, threads_client, tmp_path):
    _, plan, case = planned
    r = run_robustness(plan, case.structures, scenarios=8, seed=2, client=threads_client, problem=prepared)
    files = write_robustness(r, tmp_path)
    assert sorted(p.name for p in files.values()) == ["robustness.json", "robustness.png",
                                                      "robustness_scenarios.csv"]
    data = json.loads((tmp_path / "robustness.json").read_text())
    assert data["format"] == "seedplan-robustness" and data["robustness"]["seed"] == 2
    assert data["robustness"]["errors"] == ErrorModel().to_dict()
    assert len(data["target_dvh_band"]["dose_Gy"]) == len(data["target_dvh_band"]["p95_pct"]) == 301
    rows = (tmp_path / "robustness_scenarios.csv").read_text().splitlines()
    assert len(rows) == 1 + 9 and rows[0].startswith("scenario,seeds_lost,max_seed_shift_mm,")
    assert [float(x) for x in rows[1].split(",")[3:]] == r.values[0].tolist()      # full precision
    assert (tmp_path / "robustness.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    html = robustness_html(r, image=tmp_path / "robustness.png")
    assert html.startswith('<section class="robustness">') and "data:image/png;base64," in html
    assert "<script" not in html.lower() and "P95" in html
    odd = replace(r, columns=tuple(MetricColumn(c.group, "<b>&x", c.metric) if c.group == "oars" else c
                                   for c in r.columns), goals=())
    fragment = robustness_html(odd)
    assert "&lt;b&gt;&amp;x" in fragment and "<b>&x" not in fragment


def test_a_failing_worker_is_one_clear_error(planned, prepared, threads_client, monkeypatch):
    from seedplan.errors import SeedplanError
    from seedplan.robustness import RobustnessProblem

    def broken(self, start, stop):
        raise MemoryError("no room")

    _, plan, case = planned
    monkeypatch.setattr(RobustnessProblem, "evaluate_range", broken)   # the thread workers share this process
    with pytest.raises(SeedplanError, match=r"a Dask worker failed on scenarios? [0-9-]+: MemoryError: no room"):
        run_robustness(plan, case.structures, scenarios=3, client=threads_client, problem=prepared)
