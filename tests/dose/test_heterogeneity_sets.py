"""The corrected dose of several point sets in one pass (:func:`heterogeneity_dose_sets`) against the exact ray trace.

Targets are traced exactly at every point; organs exactly wherever their dose may reach their hottest
1 cm^3, from lattice estimates elsewhere.  Every check compares with the exact path
(:func:`heterogeneity_dose`, the voxel-by-voxel reference, ``exact=True``), never with stored numbers.
"""

import numpy as np
import pytest

from seedplan.dose.heterogeneity import (
    MU_WATER_CM,
    _hottest_dose,
    _reference_attenuation_factors,
    _unique_rows,
    heterogeneity_dose,
    heterogeneity_dose_sets,
)
from seedplan.dose.materials import PMMA_BASO4_30
from seedplan.errors import InputError
from seedplan.evaluation.dvh import DVH, dose_covering
from seedplan.geometry import Grid


def _hot(d, w):
    h = DVH.from_samples(d, w)
    return h.max_Gy, h.D_cc(0.1), h.D_cc(1.0)


@pytest.fixture(scope="module")
def scene():
    """A 1 mm grid with a cortical shell, cancellous bone, a cement ball, an air pocket; seeds inside the 'bone'."""
    rng = np.random.default_rng(7)
    g = Grid((-40.0, -40.0, -30.0), (1.0, 1.0, 1.0), (81, 81, 61))
    c = g.voxel_centers_mm()
    r = np.linalg.norm(c[..., :2], axis=-1)
    mu = np.full(g.shape, MU_WATER_CM)
    body = r < 18.0
    mu[body] = MU_WATER_CM + rng.uniform(0.1, 0.6, body.sum())  # cancellous bone, voxel by voxel
    mu[(r >= 15.0) & (r < 18.0)] = 2.77  # cortical shell
    mu[np.abs(c[..., 2]) < 2.0] = MU_WATER_CM  # a disc: a gap of water through the bone
    mu[np.linalg.norm(c - [4.0, -3.0, 6.0], axis=-1) < 5.0] = PMMA_BASO4_30.mu_cm
    mu[np.linalg.norm(c - [-25.0, 20.0, 0.0], axis=-1) < 4.0] = 0.0  # air
    seeds = np.array([[-6.0, 4.0, 8.0], [6.0, 6.0, -8.0], [-2.0, -8.0, 12.0], [9.0, -2.0, -12.0], [0.0, 0.0, 3.0]])
    # an 'organ' beside the bone and a 'target' around the seeds, as voxel centres with their volumes
    organ = (np.linalg.norm(c - [0.0, 28.0, 0.0], axis=-1) < 9.0) | (np.linalg.norm(c - [-26.0, 0.0, 5.0], axis=-1) < 7.0)
    target = np.linalg.norm(c - [0.0, 0.0, 2.0], axis=-1) < 12.0
    po, pt = c[organ], c[target]
    return g, mu, seeds, pt, np.full(len(pt), 1e-3), po, np.full(len(po), 1e-3)


def test_exact_sets_equal_heterogeneity_dose(scene):
    """A set without a hottest volume: every point traced, the doses of heterogeneity_dose bit for bit."""
    g, mu, seeds, pt, wt, po, _wo = scene
    s = np.array([0.5, 0.6, 0.7, 0.5, 0.4])
    out = heterogeneity_dose_sets([pt, po, pt[::3]], seeds, s, mu, g)
    for p, r in zip((pt, po, pt[::3]), out):
        assert r.exact.all() and r.estimate_Gy is None
        np.testing.assert_array_equal(r.dose_Gy, heterogeneity_dose(p, seeds, s, mu, g))


def test_organ_hottest_volume_equals_exact_trace(scene):
    """An organ read only at its hottest 1 cm^3: Dmax, D0.1cc and D1cc of the exact trace, with fewer traced points."""
    g, mu, seeds, pt, wt, po, wo = scene
    s = 0.6
    exact = heterogeneity_dose(po, seeds, s, mu, g)
    ref = heterogeneity_dose(po, seeds, s, mu, g)
    np.testing.assert_array_equal(exact, ref)
    for lattice in (2.0, 3.0, 4.0):
        (r,) = heterogeneity_dose_sets([po], seeds, s, mu, g, weights_cm3=[wo], hottest_cm3=[1.0], lattice_mm=lattice)
        assert _hot(r.dose_Gy, wo) == _hot(exact, wo)
        np.testing.assert_array_equal(r.dose_Gy[r.exact], exact[r.exact])  # traced points: the exact doses
        t = dose_covering(exact, wo, 1.0)
        assert np.all(r.exact[exact >= t])  # every point of the true hottest 1 cm^3 was traced
        assert np.all(r.dose_Gy[~r.exact] < t)  # the estimates left in stay below it
        assert r.n_traced < 0.8 * len(po)
        # the estimate itself: a bounded interpolation error (measured here, printed in the benchmark)
        rel = np.abs(r.estimate_Gy - exact) / exact
        assert np.median(rel) < 0.05


def test_exact_flag_traces_everything(scene):
    g, mu, seeds, pt, wt, po, wo = scene
    (r,) = heterogeneity_dose_sets([po], seeds, 0.6, mu, g, weights_cm3=[wo], hottest_cm3=[1.0], exact=True)
    assert r.exact.all() and r.estimate_Gy is None
    np.testing.assert_array_equal(r.dose_Gy, heterogeneity_dose(po, seeds, 0.6, mu, g))


def test_shared_points_traced_once(scene, monkeypatch):
    """A target and its part (the same coordinates): one trace per distinct point, the same doses."""
    import seedplan.dose.heterogeneity as H

    g, mu, seeds, pt, wt, po, wo = scene
    traced = []
    orig = H._factors_skip

    def counting(pi, *a):
        traced.append(len(pi))
        return orig(pi, *a)

    monkeypatch.setattr(H, "_factors_skip", counting)
    part = pt[pt[:, 0] > 0]
    a, b = heterogeneity_dose_sets([pt, part], seeds, 0.5, mu, g)
    assert sum(traced) == len(pt)
    lookup = {tuple(p): d for p, d in zip(pt, a.dose_Gy)}
    assert all(lookup[tuple(p)] == d for p, d in zip(part, b.dose_Gy))


def test_exact_path_is_the_voxel_by_voxel_reference(scene):
    """The traced doses are the reference voxel-by-voxel traversal's (to rounding, < 1e-12 relative)."""
    g, mu, seeds, pt, wt, po, wo = scene
    (r,) = heterogeneity_dose_sets([po[::7]], seeds, 1.0, mu, g)
    from seedplan.dose.api import influence_matrix

    ref = (influence_matrix(po[::7], seeds) * _reference_attenuation_factors(po[::7], seeds, mu, g)).sum(axis=1)
    assert np.max(np.abs(r.dose_Gy / ref - 1.0)) < 1e-12


def test_small_and_empty_sets(scene):
    g, mu, seeds, pt, wt, po, wo = scene
    small, ws = po[:50], wo[:50]
    a, b = heterogeneity_dose_sets([small, np.zeros((0, 3))], seeds, 0.6, mu, g, weights_cm3=[ws, np.zeros(0)],
                                   hottest_cm3=[1.0, 1.0])
    assert a.exact.all()  # too few points for the lattice to save anything: traced exactly
    np.testing.assert_array_equal(a.dose_Gy, heterogeneity_dose(small, seeds, 0.6, mu, g))
    assert b.dose_Gy.shape == (0,)


def test_bad_input(scene):
    g, mu, seeds, pt, wt, po, wo = scene
    with pytest.raises(InputError, match="weights"):
        heterogeneity_dose_sets([po], seeds, 0.6, mu, g, hottest_cm3=[1.0])
    with pytest.raises(InputError, match="one entry per point set"):
        heterogeneity_dose_sets([po], seeds, 0.6, mu, g, hottest_cm3=[1.0, None])
    with pytest.raises(InputError, match="lattice_mm"):
        heterogeneity_dose_sets([po], seeds, 0.6, mu, g, weights_cm3=[wo], hottest_cm3=[1.0], lattice_mm=0)
    with pytest.raises(InputError, match="safety"):
        heterogeneity_dose_sets([po], seeds, 0.6, mu, g, weights_cm3=[wo], hottest_cm3=[1.0], safety=0.5)


def test_hottest_dose_equals_dose_covering():
    """The partial sort gives dose_covering's value bit for bit: ties, equal and unequal weights, any volume."""
    rng = np.random.default_rng(3)
    for trial in range(300):
        n = int(rng.integers(1, 5000))
        d = np.round(rng.gamma(2.0, 3.0, n), int(rng.integers(0, 4)))  # rounding makes ties
        w = np.full(n, 1e-3) if trial % 2 else rng.uniform(1e-4, 2e-3, n)
        for v in (0.0, 0.1, 1.0, 0.5 * w.sum(), w.sum(), 2.0 * w.sum()):
            assert _hottest_dose(d, w, v) == dose_covering(d, w, v)


def test_unique_rows():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(500, 3))
    q = np.vstack([p, p[::3], p[5:9]])[rng.permutation(500 + 167 + 4)]
    first, inv = _unique_rows(q)
    assert len(first) == 500
    np.testing.assert_array_equal(q[first][inv], q)


@pytest.mark.parametrize("level,kw", [("L3", {"lesion_diameter_mm": 30.0, "lesion_type": "lytic"}),
                                      ("S1", {"lesion_type": "blastic"})])
def test_corrected_dose_metrics_equal_the_exact_trace(level, kw):
    """On phantom plans (the demo, and a sacral blastic case with strong bone shadows) the fast corrected-dose
    metrics equal those of the full exact ray trace: D90/V100 of the targets and Dmax/D0.1cc/D1cc of every organ."""
    from seedplan.imaging.phantom import make_spine_phantom
    from seedplan.plan import corrected_dose_metrics
    from seedplan.planning import plan_case

    import json

    ph = make_spine_phantom(level=level, spacing_mm=1.5, **kw)
    plan = plan_case(ph.ct, ph.structures).plan
    fast = corrected_dose_metrics(plan, ph.ct, ph.structures)
    exact = corrected_dose_metrics(plan, ph.ct, ph.structures, exact=True)
    assert fast == exact
    assert fast["oars"] and fast["target"]["D90_Gy"] > 0
    # and the previous implementation (every structure through heterogeneity_dose, full DVHs): the same JSON
    assert json.dumps(fast) == json.dumps(_previous_corrected_dose_metrics(plan, ph.ct, ph.structures))


def _previous_corrected_dose_metrics(plan, ct, structures, points_per_mm3=1.0):
    """corrected_dose_metrics as it was: one heterogeneity_dose call and one DVH per structure."""
    from seedplan.dose.heterogeneity import mu_map
    from seedplan.evaluation.sampling import sample_mask_points
    from seedplan.imaging.structures import Role
    from seedplan.plan._use import HETEROGENEITY_LABEL, OAR_REACH_MM, dose_region, plan_structures

    structures = plan_structures(plan, structures)
    grid = ct.grid
    cmask = plan.cement.mask_on(grid)
    mu = mu_map(ct, cmask, plan.cement.material)
    pos, s, ax, pd = plan.positions_mm, plan.strengths_at_implant_U, plan.axes, plan.prescription.dose_Gy

    def dvh_of(mask, name):
        p, w = sample_mask_points(mask, grid, points_per_mm3=points_per_mm3)
        d = heterogeneity_dose(p, pos, s, mu, grid, source=plan.seed_model, axes=ax, formalism=plan.formalism)
        return DVH.from_samples(d, w, name=name)

    def target_block(h, name):
        return {"name": name, "volume_cm3": h.volume_cm3, "D90_Gy": h.D(90), "D100_Gy": h.D(100),
                "V100_pct": h.V(pd), "V150_pct": h.V(1.5 * pd), "V200_pct": h.V(2.0 * pd)}

    out = {"label": HETEROGENEITY_LABEL, "cement_material": plan.cement.material.name,
           "sampling_points_per_mm3": points_per_mm3}
    targets = structures.targets
    if targets:
        tm = targets[0].mask_on(grid)
        out["target"] = target_block(dvh_of(tm, targets[0].name), targets[0].name)
        rest = tm & ~cmask
        if rest.any() and rest.sum() < tm.sum():
            out["target_outside_cement"] = target_block(dvh_of(rest, f"{targets[0].name} outside cement"),
                                                        f"{targets[0].name} outside cement")
    out["oars"] = {}
    near = dose_region(plan, structures, grid, target=False)
    out["organs_beyond_mm"] = OAR_REACH_MM
    for x in structures.values():
        if x.role in (Role.OAR, Role.CANAL) and not x.is_empty and (x.mask_on(grid) & near).any():
            h = dvh_of(x.mask_on(grid), x.name)
            out["oars"][x.name] = {"Dmax_Gy": h.max_Gy, "D0.1cc_Gy": h.D_cc(0.1), "D1cc_Gy": h.D_cc(1.0)}
    return out
