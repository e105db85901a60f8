"""pytest configuration for the dose benchmarks (``pytest benchmarks/``).

* collects ``bench_*.py`` files unless ``python_files`` already does;
* keeps the per-case results the benchmarks record in :data:`RESULTS` and
  prints a summary at the end of the session: throughput in seed-voxel
  evaluations per second, the ratio to the plain NumPy implementation, the
  accuracy against the exact point evaluation and whether the targets are met.
"""

from __future__ import annotations

import fnmatch

import pytest

#: Throughput targets (seed-voxel evaluations per second) and the minimum speed-up over NumPy.
TARGETS = {"1D": 1.0e9, "2D": 4.0e8}
MIN_SPEEDUP = 30.0

#: (formalism, n_seeds, n) -> {"seedplan": sv/s, "numpy": sv/s, "err": max rel err, "numpy_err": ...}
RESULTS: dict = {}
#: (formalism, n_seeds, n_points) -> {"tabulated": pairs/s, "exact": ..., "numpy": ..., "err": max rel err}
POINT_RESULTS: dict = {}
#: Summary lines of the other benchmarks (planning, cement), printed after the dose table.
NOTES: list[str] = []
#: "evaluate" / "corrected" -> {"fast": (s, metrics), "reference": (s, metrics), "units": work per run}
EVAL_RESULTS: dict = {}


def pytest_collect_file(parent, file_path):
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    # pyproject's python_files may already take bench_*.py: do not collect twice
    if any(fnmatch.fnmatch(file_path.name, pat) for pat in parent.config.getini("python_files")):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


def _record(case, **values):
    RESULTS.setdefault(case, {}).update(values)


@pytest.fixture
def eval_results():
    """The dict the evaluation benchmarks fill (:data:`EVAL_RESULTS`) for the session summary."""
    return EVAL_RESULTS


@pytest.fixture
def report_line():
    """``report_line(text)`` adds one line to the session summary."""
    return NOTES.append


@pytest.fixture
def record_point_result():
    """``record_point_result(case, **values)`` stores results of one point-dose case for the session summary."""

    def record(case, **values):
        POINT_RESULTS.setdefault(case, {}).update(values)

    return record


@pytest.fixture
def record_result():
    """``record_result(case, **values)`` stores results of one benchmark case for the session summary."""
    return _record


def _eval_summary(tr):
    tr.section("seedplan evaluation and corrected dose: fast vs reference (best of the timed rounds)")
    what = {"evaluate": ("evaluate_plan, adaptive vs exact sampling", "sub-points"),
            "corrected": ("corrected_dose_metrics, block-skipping vs voxel-by-voxel rays", "seed-point pairs")}
    for key, r in EVAL_RESULTS.items():
        label, unit = what[key]
        fast, ref, n = r.get("fast"), r.get("reference"), r.get("units")
        parts = [f"{label}:"]
        if fast and fast[0]:
            parts.append(f"fast {fast[0]:.2f} s" + (f" ({n / fast[0]:.2e} {unit}/s)" if n else "") + ",")
        if ref and ref[0]:
            parts.append(f"reference {ref[0]:.2f} s" + (f" ({n / ref[0]:.2e} {unit}/s)" if n else "") + ";")
        if fast and ref and fast[0] and ref[0]:
            parts.append(f"{ref[0] / fast[0]:.1f}x;")
        if fast and ref:
            a, b = fast[1], ref[1]
            keys = [k for k in b if k in a and k.endswith(("D90_Gy", "V100_pct", "D0.1cc_Gy"))]
            if keys:
                err = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in keys)
                parts.append(f"max rel diff of D90/V100/D0.1cc {err:.1e}")
        tr.write_line(" ".join(parts))


def pytest_terminal_summary(terminalreporter):
    if EVAL_RESULTS:
        _eval_summary(terminalreporter)
    if NOTES:
        terminalreporter.section("seedplan planning and cement benchmarks")
        for line in NOTES:
            terminalreporter.write_line(line)
    if POINT_RESULTS:
        _point_summary(terminalreporter)
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("seedplan dose_rate_grid vs NumPy (best of the timed rounds; 2 threads unless NUMBA_NUM_THREADS)")
    for (form, nseeds, n) in sorted(RESULTS, key=lambda c: (c[0], c[2], c[1])):
        r = RESULTS[(form, nseeds, n)]
        parts = [f"{form} {nseeds} seeds {n}^3:"]
        fast = r.get("seedplan")
        ref = r.get("numpy")
        parts.append(f"{fast:.2e} seed-voxel/s," if fast else "(seedplan not timed),")
        if fast and ref:
            parts.append(f"{fast / ref:.0f}x NumPy ({ref:.2e}),")
        else:
            parts.append("NumPy not timed,")
        if "err" in r:
            parts.append(f"max rel err vs exact (r >= 1 mm) {r['err']:.1e}")
        verdict = []
        if fast:
            verdict.append("throughput target met" if fast >= TARGETS[form] else
                           f"throughput target {TARGETS[form]:.0e} MISSED")
        if fast and ref:
            verdict.append("speed-up target met" if fast / ref >= MIN_SPEEDUP else
                           f"speed-up target {MIN_SPEEDUP:.0f}x MISSED")
        if verdict:
            parts.append("-- " + ", ".join(verdict))
        tr.write_line(" ".join(parts))


def _point_summary(tr):
    tr.section("seedplan dose_rate at points: tabulated (default) vs exact kernel vs NumPy "
               "(seed-point pairs/s, best of the timed rounds; 2 threads unless NUMBA_NUM_THREADS)")
    for (form, nseeds, n) in sorted(POINT_RESULTS, key=lambda c: (c[0], c[2], c[1])):
        r = POINT_RESULTS[(form, nseeds, n)]
        tab, exact, ref = r.get("tabulated"), r.get("exact"), r.get("numpy")
        parts = [f"{form} {nseeds} seeds x {n:.0e} points:"]
        parts.append(f"tabulated {tab:.2e}," if tab else "tabulated not timed,")
        parts.append(f"exact {exact:.2e}," if exact else "exact not timed,")
        parts.append(f"NumPy {ref:.2e};" if ref else "NumPy not timed;")
        if tab and exact:
            parts.append(f"{tab / exact:.1f}x exact,")
        if tab and ref:
            parts.append(f"{tab / ref:.0f}x NumPy,")
        if "err" in r:
            parts.append(f"max rel diff vs exact {r['err']:.1e}")
        tr.write_line(" ".join(parts))
