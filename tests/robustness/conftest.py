"""One small planned case for every robustness test: the 2 mm L3 phantom, written as a case folder,
planned once, its plan saved beside it (the CLI's input)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from seedplan.imaging import make_spine_phantom
from seedplan.io import load_case, write_phantom_case
from seedplan.plan import load_plan, save_plan
from seedplan.planning import plan_case


@pytest.fixture(scope="session")
def planned(tmp_path_factory):
    """``(plan_file, plan, case)``: the saved plan, the plan loaded from it and the case it was made on."""
    root = tmp_path_factory.mktemp("robustness_case")
    written = write_phantom_case(make_spine_phantom(spacing_mm=2.0), root / "case")
    case = load_case(written["case"])
    options = replace(case.planning, heterogeneity=False)     # the corrected dose is not needed here
    result = plan_case(case.ct, case.structures, case.prescription, options=options, case_reference=case.reference)
    plan_file = save_plan(result.plan, root / "plan" / "plan.json")
    return plan_file, load_plan(plan_file), case


@pytest.fixture(scope="session")
def threads_client():
    """A Dask client of two thread workers in this process, shared by the tests that only need a cluster."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0",
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()
