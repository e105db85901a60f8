"""Benchmark: the plan's evaluation and its cement/bone-corrected dose, fast vs reference, in one run.

* ``evaluate_plan``: adaptive sampling (default) against the exact evaluation (every sub-point of every
  voxel, ``SamplingOptions(adaptive=False)``); throughput in structure sub-points covered per second
  (the exact path's sample count divided by the time), the ratio, and the largest relative difference
  of D90, V100 and the OAR D0.1cc.
* ``corrected_dose_metrics``: the default path (one pass over every structure, block-skipping rays, each
  organ traced exactly only where it may reach its hottest 1 cm^3) against the first one (every point of
  every structure, voxel-by-voxel rays: ``exact=True`` with the reference traversal); throughput in
  seed-point pairs per second and the ratio, and the largest relative difference of the corrected metrics.

Run: pytest benchmarks/bench_evaluation.py --benchmark-only
"""

from __future__ import annotations

import pytest

import seedplan.dose.heterogeneity as het
from seedplan.evaluation import metrics as metrics_mod
from seedplan.evaluation.metrics import SamplingOptions
from seedplan.imaging.phantom import make_spine_phantom
from seedplan.plan import corrected_dose_metrics, evaluate_plan
from seedplan.planning import plan_case



@pytest.fixture(scope="module")
def case():
    ph = make_spine_phantom(level="L3", lesion_diameter_mm=30.0, lesion_type="lytic")
    plan = plan_case(ph.ct, ph.structures).plan
    return ph, plan


def _flat(d, pre=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{pre}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[pre + k] = float(v)
    return out


def _best(benchmark):
    try:
        return float(benchmark.stats.stats.min)
    except AttributeError:  # --benchmark-disable
        return None


@pytest.fixture
def exact_sampling(monkeypatch):
    """``evaluate`` with the exact sampling whatever the caller passes."""
    real = metrics_mod.evaluate

    def exact(*a, sampling=None, **k):
        return real(*a, sampling=SamplingOptions(adaptive=False), **k)

    import seedplan.plan._use as use

    monkeypatch.setattr(use, "evaluate", exact)


@pytest.fixture
def reference_rays(monkeypatch):
    """The corrected dose as it was first computed: every point of every structure traced
    (``exact=True``) with the voxel-by-voxel traversal instead of the block-skipping one."""
    import numpy as np

    def ref(pts_idx, seeds_idx, pts_mm, seeds_mm, mu, mu_w, _bcode):
        lengths_cm = np.linalg.norm(pts_mm[:, None, :] - seeds_mm[None, :, :], axis=2) / 10.0
        return het._factors_kernel(pts_idx, seeds_idx, np.ascontiguousarray(lengths_cm), mu, mu_w, 0.0)

    monkeypatch.setattr(het, "_factors_skip", ref)


def _key_metrics(m):
    f = _flat(m)
    return {k: v for k, v in f.items() if k.endswith(("D90_Gy", "V100_pct", "D0.1cc_Gy"))}


def test_evaluate_plan_adaptive(benchmark, case, eval_results):
    ph, plan = case
    evaluate_plan(plan, ph.structures)  # warm-up
    ev = benchmark.pedantic(evaluate_plan, args=(plan, ph.structures), rounds=3, iterations=1)
    eval_results.setdefault("evaluate", {})["fast"] = (_best(benchmark), _key_metrics(ev.metrics))


def test_evaluate_plan_exact(benchmark, case, eval_results, exact_sampling):
    ph, plan = case
    ev = benchmark.pedantic(evaluate_plan, args=(plan, ph.structures), rounds=2, iterations=1)
    n_sub = sum(d.n_samples for d in ev.dvhs.values())
    r = eval_results.setdefault("evaluate", {})
    r["reference"] = (_best(benchmark), _key_metrics(ev.metrics))
    r["units"] = n_sub
    benchmark.extra_info["sub_points"] = n_sub


def test_corrected_dose_fast(benchmark, case, eval_results):
    ph, plan = case
    corrected_dose_metrics(plan, ph.ct, ph.structures)  # warm-up
    m = benchmark.pedantic(corrected_dose_metrics, args=(plan, ph.ct, ph.structures), rounds=3, iterations=1)
    eval_results.setdefault("corrected", {})["fast"] = (_best(benchmark), _flat(m))


def test_corrected_dose_reference(benchmark, case, eval_results, reference_rays):
    ph, plan = case
    corrected_dose_metrics(plan, ph.ct, ph.structures, exact=True)  # warm-up of the reference kernel
    m = benchmark.pedantic(corrected_dose_metrics, args=(plan, ph.ct, ph.structures), kwargs={"exact": True},
                           rounds=2, iterations=1)
    r = eval_results.setdefault("corrected", {})
    r["reference"] = (_best(benchmark), _flat(m))
    # seed-point pairs: structure points at 1 /mm^3 times seeds
    from seedplan.evaluation.sampling import sample_mask_points
    from seedplan.imaging.structures import Role
    from seedplan.plan._use import plan_structures

    st = plan_structures(plan, ph.structures)
    n = 0
    for s in st.values():
        if s.role in (Role.TARGET, Role.OAR, Role.CANAL) and not s.is_empty:
            n += len(sample_mask_points(s.mask_on(ph.ct.grid), ph.ct.grid, points_per_mm3=1.0)[0])
    r["units"] = n * plan.n_seeds
    fast = r.get("fast")
    if fast:
        a, b = fast[1], r["reference"][1]
        err = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in b)
        assert err < 1e-9  # the same voxel sums
