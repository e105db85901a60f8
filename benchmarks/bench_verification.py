"""Benchmark: seed detection and registration of the verification layer (seedplan.verification).

Both on a synthetic post-operative CT of the coarse-phantom plan (1 mm, 121 x 121 x 91 voxels; 9 seeds, one
missing and one migrated; radiopaque cement with a 0.3 mL canal leak; 3 deg / 8 mm patient motion; noise and
metal streaks), with known truth, and each against a plain NumPy/SciPy baseline in the same run:

* seed detection: :func:`~seedplan.verification.seeds.verify_seeds` (opening background, metal cores, model
  fit) against the script one would write first - threshold at 2500 HU, ``scipy.ndimage.label``, per blob the
  HU-weighted centroid and the principal axis (``numpy.linalg.eigh``), one seed per blob.  Throughput in CT
  voxels per second, the ratio, and the accuracy of both (centre and axis errors, count);
* registration: :func:`~seedplan.verification.register_ct` against a NumPy translation-only alignment of the
  bone centroids around the implant.  Time and the remaining error at the seeds.

Run: pytest benchmarks/bench_verification.py --benchmark-only
"""

import time

import numpy as np
import pytest
from scipy import ndimage

from seedplan.geometry import Grid
from seedplan.imaging import make_spine_phantom
from seedplan.plan import PlanningOptions
from seedplan.planning import plan_case
from seedplan.verification import register_ct, rigid_motion, synthetic_ct
from seedplan.verification._frames import apply, rotation_angle_deg, world_of_indices
from seedplan.verification.seeds import verify_seeds


@pytest.fixture(scope="module")
def case():
    ph = make_spine_phantom(level="L3", spacing_mm=3.0, lesion_diameter_mm=24.0)
    plan = plan_case(ph.ct, ph.structures, options=PlanningOptions(heterogeneity=False,
                                                                    calibration_date="2024-01-01")).plan
    c = plan.positions_mm.mean(axis=0)
    motion = rigid_motion((1.7, -1.75, 1.75), (4.9, -4.0, 4.9), c)
    grid = Grid.from_bounds(c + [-60, -60, -45], c + [60, 60, 45], 1.0)
    later = synthetic_ct(plan, ph.ct, kind="postop", motion=motion, grid=grid, structures=ph.structures,
                         missing_seeds=1, migrated_seeds=1, leak="canal", seed=1)
    return ph, plan, later


def _errors(found_mm, found_axes, true_mm, true_axes):
    d = np.linalg.norm(true_mm[:, None, :] - found_mm[None, :, :], axis=-1)
    j = d.argmin(axis=1)
    ang = np.degrees(np.arccos(np.clip(np.abs(np.sum(true_axes * found_axes[j], axis=1)), 0, 1)))
    return float(d[np.arange(len(true_mm)), j].max()), float(ang.max()), float(np.median(ang))


def numpy_seeds(ct, metal_hu=2500.0):
    """The baseline: threshold, label, HU-weighted centroid and principal axis per blob."""
    hu = np.asarray(ct.hu, np.float32)
    lab, n = ndimage.label(hu >= metal_hu, structure=np.ones((3, 3, 3), bool))
    centres, axes = [], []
    for sl, k in zip(ndimage.find_objects(lab), range(1, n + 1)):
        m = lab[sl] == k
        pts = world_of_indices(ct.grid, np.argwhere(m) + np.array([s.start for s in sl]))
        w = hu[sl][m].astype(float)
        c = (w / w.sum()) @ pts
        q = pts - c
        _, vec = np.linalg.eigh((q * (w / w.sum())[:, None]).T @ q)
        centres.append(c)
        axes.append(vec[:, -1])
    return np.array(centres), np.array(axes)


def test_seed_detection(benchmark, case, report_line):
    ph, plan, later = case
    truth = later.truth
    reg = truth.later_to_planning
    res = benchmark.pedantic(verify_seeds, args=(later.ct, plan, reg), kwargs={"planning_ct": ph.ct}, rounds=3,
                             iterations=1)
    fast = min(benchmark.stats.stats.data)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        c_np, a_np = numpy_seeds(later.ct)
        times.append(time.perf_counter() - t0)
    slow = min(times)
    n_vox = later.ct.grid.n_voxels
    d, a, a_med = _errors(res.positions_mm, res.axes, truth.seed_positions_mm, truth.seed_axes)
    c_np_plan = apply(reg, c_np)
    a_np_plan = a_np @ reg[:3, :3].T
    d0, a0, a0_med = _errors(c_np_plan, a_np_plan, truth.seed_positions_mm, truth.seed_axes)
    assert len(res.positions_mm) == truth.n_seeds and d < 1.0 and a < 10.0
    report_line(
        f"seed detection, {n_vox:,} voxels, {truth.n_seeds} seeds: verify_seeds {fast:.2f} s "
        f"({n_vox / fast:.2e} voxels/s; {len(res.positions_mm)} seeds, max centre error {d:.2f} mm, axis max "
        f"{a:.1f} deg / median {a_med:.1f} deg) vs NumPy/SciPy threshold+label+PCA {slow:.3f} s "
        f"({n_vox / slow:.2e} voxels/s; {len(c_np)} blobs, max centre error {d0:.2f} mm, axis max {a0:.1f} deg / "
        f"median {a0_med:.1f} deg): {fast / slow:.0f}x the baseline's time, for the axes and the touching, embedded "
        "and cortex-adjacent seeds the baseline does not handle")


def test_registration(benchmark, case, report_line):
    ph, plan, later = case
    truth = later.truth.later_to_planning
    reg = benchmark.pedantic(register_ct, args=(later.ct, ph.ct), kwargs={"plan": plan}, rounds=3, iterations=1)
    fast = min(benchmark.stats.stats.data)
    seeds = plan.positions_mm
    later_seeds = apply(np.linalg.inv(truth), seeds)
    err = float(np.max(np.linalg.norm(reg.to_planning(later_seeds) - seeds, axis=1)))
    rot = rotation_angle_deg(reg.matrix @ np.linalg.inv(truth))

    def centroid_shift():
        c = seeds.mean(axis=0)

        def bone_centre(ct, centre):
            hu = np.asarray(ct.hu)
            pts = world_of_indices(ct.grid, np.argwhere((hu >= 250) & (hu < 1500)))
            return pts[np.linalg.norm(pts - centre, axis=1) <= 60.0].mean(axis=0)

        return bone_centre(ph.ct, c) - bone_centre(later.ct, c)  # later -> planning translation

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        shift = centroid_shift()
        times.append(time.perf_counter() - t0)
    slow = min(times)
    err0 = float(np.max(np.linalg.norm(later_seeds + shift - seeds, axis=1)))
    assert reg.ok and err < 1.0 and rot < 0.5
    report_line(
        f"registration ({later.ct.grid.n_voxels:,} -> {ph.ct.grid.n_voxels:,} voxels): register_ct {fast:.2f} s, "
        f"{reg.iterations} iterations, error at the seeds {err:.2f} mm, rotation {rot:.2f} deg; NumPy bone-centroid "
        f"translation {slow:.3f} s, error at the seeds {err0:.2f} mm ({fast / slow:.0f}x its time)")
