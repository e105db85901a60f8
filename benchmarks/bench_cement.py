"""Benchmark: the cement fill simulation on the phantom (L3, 30 mm lytic lesion).

``simulate_cement`` with its numba kernel against the same algorithm run by the
Python interpreter on NumPy arrays (the kernel's ``py_func``: the same
multi-source Dijkstra with heapq), in the same run.  Both must give the same
mask.  Throughput is in accepted voxels per second.
Run: pytest benchmarks/bench_cement.py --benchmark-only
"""

import time

import numpy as np
import pytest

from seedplan.imaging.phantom import make_spine_phantom
from seedplan.planning import cement as cement_mod
from seedplan.planning.needles import pvp_needle_paths

VOLUMES_mL = (3.7, 9.0)  # the combined-procedure recommendation of the demo, the PVP-alone maximum


@pytest.fixture(scope="module")
def case():
    ph = make_spine_phantom(level="L3", lesion_diameter_mm=30.0, lesion_type="lytic")
    s = ph.structures
    vb = s["vertebral_body_L3"]
    plan = pvp_needle_paths(ph.ct.grid, vb.mask, s["body"].mask,
                            {"spinal_canal": s["spinal_canal"].mask, "aorta": s["aorta"].mask},
                            pedicles=s["pedicle_left_L3"].mask | s["pedicle_right_L3"].mask)
    tips = np.array([n.tip_mm for n in plan.needles])
    cement_mod.simulate_cement(ph.ct, vb, ph.ct.grid, tips, 1.0)  # JIT warm-up
    return ph, vb, tips


@pytest.mark.parametrize("volume_mL", VOLUMES_mL)
def test_simulate_cement(benchmark, case, report_line, volume_mL):
    ph, vb, tips = case
    res = benchmark.pedantic(cement_mod.simulate_cement, args=(ph.ct, vb, ph.ct.grid, tips, volume_mL),
                             rounds=5, iterations=1)
    n_vox = int(res.mask.sum())
    fast = min(benchmark.stats.stats.data)
    grow = cement_mod._grow
    args = []

    def interpreted(*a):
        args.append(a)
        return grow.py_func(*a)

    cement_mod._grow = interpreted  # the same algorithm, run by the interpreter
    try:
        t0 = time.perf_counter()
        ref = cement_mod.simulate_cement(ph.ct, vb, ph.ct.grid, tips, volume_mL)
        slow = time.perf_counter() - t0
    finally:
        cement_mod._grow = grow
    assert np.array_equal(ref.mask, res.mask)
    assert dict(ref.leak_flags) == dict(res.leak_flags)
    # the front-growth kernel alone, on the same inputs
    t0 = time.perf_counter()
    grow(*args[0])
    k_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    grow.py_func(*args[0])
    k_slow = time.perf_counter() - t0
    report_line(
        f"cement {volume_mL:g} mL ({n_vox} voxels, fill {res.fill_pct:.1f} %): simulate_cement {fast * 1e3:.0f} ms "
        f"({n_vox / fast:.2e} voxels/s) vs interpreted kernel {slow:.2f} s, {slow / fast:.0f}x; front-growth kernel "
        f"{k_fast * 1e3:.1f} ms ({n_vox / k_fast:.2e} voxels/s) vs interpreted {k_slow:.2f} s, {k_slow / k_fast:.0f}x; "
        "same mask and leak flags"
    )
