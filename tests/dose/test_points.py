"""The tabulated point kernel (default of dose_rate / total_dose / influence_matrix) against the exact kernel.

Stated tolerance: 5e-5 relative for every seed-point pair (the near-field
radius is widened per model until the table's estimated error beyond it is
below 4e-5; the worst pair found by dense sampling is 4.0e-5).  Pairs inside
the near-field radius or beyond the table are the exact kernel's values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import seedplan
from seedplan.dose import _exact, _grid
from seedplan.dose import _points as tabulated
from seedplan.dose.heterogeneity import heterogeneity_dose
from seedplan.errors import InputTypeError, SeedplanError
from seedplan.geometry import Grid
from seedplan.sources import available_seed_models, load_seed_model

FORMALISMS = ["2D", "1D", "1D-point"]
CODES = {"2D": 0, "1D": 1, "1D-point": 2}
TOL = 5e-5


def random_axes(rng, m):
    a = rng.normal(size=(m, 3))
    return a / np.linalg.norm(a, axis=1)[:, None]


def around(rng, seed, axis, r_mm, theta_rad):
    """Points at distance r and polar angle theta from a seed with the given axis, random azimuth."""
    e1 = np.cross(axis, [1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    ph = rng.uniform(0.0, 2.0 * np.pi, np.shape(r_mm))
    st, ct = np.sin(theta_rad), np.cos(theta_rad)
    d = (st * np.cos(ph))[:, None] * e1 + (st * np.sin(ph))[:, None] * e2 + ct[:, None] * axis
    return seed + np.asarray(r_mm)[:, None] * d


def pair_rates(pts, seed, axis, formalism, source="6711", exact=False):
    """Dose rate per U of one seed at each point (cGy/h per U)."""
    return seedplan.influence_matrix(pts, [seed], axes=[axis], formalism=formalism, source=source, total=False,
                                     exact=exact)[:, 0]


def near_radius(source, formalism):
    m = load_seed_model(source)
    return tabulated.point_table(m, _exact.model_arrays(m), CODES[formalism], 100.0).r_near_mm


# ------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("source", available_seed_models())
@pytest.mark.parametrize("formalism", FORMALISMS)
def test_pairs_agree_with_exact(source, formalism):
    """Random seeds, axes and points 0.5-100 mm away (denser just beyond the near-field radius)."""
    rng = np.random.default_rng([available_seed_models().index(source), CODES[formalism]])
    rn = near_radius(source, formalism)
    for _ in range(3):
        seed = rng.uniform(-30, 30, 3)
        axis = random_axes(rng, 1)[0]
        r = np.concatenate([rng.uniform(0.5, 100.0, 20000), rng.uniform(rn, rn + 2.0, 20000)])
        th = np.arccos(rng.uniform(-1, 1, r.size))
        pts = around(rng, seed, axis, r, th)
        tab = pair_rates(pts, seed, axis, formalism, source)
        ref = pair_rates(pts, seed, axis, formalism, source, exact=True)
        rel = np.abs(tab / ref - 1.0)
        assert rel.max() <= TOL, (rel.max(), r[np.argmax(rel)])
        near = r < rn
        assert near.any()
        np.testing.assert_allclose(tab[near], ref[near], rtol=1e-13)


@pytest.mark.parametrize("formalism", FORMALISMS)
def test_on_seed_axis_and_transverse(formalism):
    """theta = 0, 180 (on the axis, where the 2D table's steepest column is) and 90 (the last column)."""
    rng = np.random.default_rng(1)
    seed = np.array([5.0, -3.0, 12.0])
    axis = random_axes(rng, 1)[0]
    r = np.concatenate([np.linspace(0.5, 12.0, 400), rng.uniform(0.5, 250.0, 400)])
    cases = {
        "theta=0": seed + np.outer(r, axis),
        "theta=180": seed - np.outer(r, axis),
        "theta=90": around(rng, seed, axis, r, np.full(r.size, 0.5 * math.pi)),
    }
    for name, pts in cases.items():
        tab = pair_rates(pts, seed, axis, formalism)
        ref = pair_rates(pts, seed, axis, formalism, exact=True)
        assert np.max(np.abs(tab / ref - 1.0)) <= TOL, name


@pytest.mark.parametrize("formalism", FORMALISMS)
def test_near_capsule_is_exact(formalism):
    """Points on, inside and just outside the capsule are evaluated by the exact kernel."""
    rng = np.random.default_rng(2)
    seed = np.array([1.0, 2.0, 3.0])
    axis = random_axes(rng, 1)[0]
    r = np.concatenate([rng.uniform(0.0, 3.0, 3000), [0.0, 0.4, 2.275, 2.3]])
    th = np.concatenate([rng.uniform(0.0, math.pi, 3000), [0.0, 0.5 * math.pi, 0.0, math.pi]])
    pts = around(rng, seed, axis, r, th)
    tab = pair_rates(pts, seed, axis, formalism)
    ref = pair_rates(pts, seed, axis, formalism, exact=True)
    assert np.all(np.isfinite(tab)) and np.all(tab > 0)
    np.testing.assert_allclose(tab, ref, rtol=1e-13)


@pytest.mark.parametrize("source", ["6711", "2301"])
def test_published_nodes_on_lattice_nodes_are_exact(source):
    """The consensus-table nodes are lattice nodes: there the table reproduces the exact kernel to rounding."""
    m = load_seed_model(source)
    rng = np.random.default_rng(3)
    axis = np.array([0.0, 0.0, 1.0])
    for formalism in FORMALISMS:
        rn = near_radius(source, formalism)
        r_cm = [r for r in m.g_r_cm if 10 * r >= rn]
        th = m.F_theta_deg if formalism == "2D" else [90.0]
        rr, tt = (a.ravel() for a in np.meshgrid(10 * np.array(r_cm), np.radians(th)))
        pts = around(rng, np.zeros(3), axis, rr, tt)
        tab = pair_rates(pts, np.zeros(3), axis, formalism, source)
        ref = pair_rates(pts, np.zeros(3), axis, formalism, source, exact=True)
        np.testing.assert_allclose(tab, ref, rtol=1e-11, err_msg=formalism)


@pytest.mark.parametrize("formalism", FORMALISMS)
def test_table_edges(formalism):
    """Around the near-field radius, the end of the table (exact beyond) and the lattice cells' corners."""
    rng = np.random.default_rng(4)
    m = load_seed_model("6711")
    seed = np.array([-4.0, 7.0, 1.0])
    axis = random_axes(rng, 1)[0]
    rn = near_radius("6711", formalism)
    step = _grid.DR_MM if formalism == "2D" else _grid.DR1_MM
    # the far end of the table that a pair at 200 mm needs
    r_far = tabulated.point_table(m, _exact.model_arrays(m), CODES[formalism], 200.0).r_far_mm
    eps = np.array([-1e-9, 0.0, 1e-9, 1e-6, 0.5 * step, step - 1e-9])
    r = np.concatenate([rn + eps, r_far - eps, r_far + eps, [r_far + 50.0, 900.0]])
    for th_deg in (0.0, 1.0, 45.0, 89.0, 90.0, 90.5, 179.0, 180.0):
        pts = around(rng, seed, axis, r, np.full(r.size, math.radians(th_deg)))
        tab = pair_rates(pts, seed, axis, formalism)
        ref = pair_rates(pts, seed, axis, formalism, exact=True)
        assert np.all(np.abs(tab / ref - 1.0) <= TOL), th_deg
        # beyond the table the exact kernel is used
        np.testing.assert_allclose(tab[-2:], ref[-2:], rtol=1e-13)
    # dose_rate (a different kernel from influence_matrix) at the same points and a far cut-off
    pts = around(rng, seed, axis, r, rng.uniform(0.0, math.pi, r.size))
    for cut in (None, 2.0 * r_far):
        d = seedplan.dose_rate(pts, [seed], 0.7, axes=[axis], formalism=formalism, cutoff_mm=cut)
        e = seedplan.dose_rate(pts, [seed], 0.7, axes=[axis], formalism=formalism, cutoff_mm=cut, exact=True)
        assert np.array_equal(d > 0, e > 0)
        assert np.all(np.abs(d[e > 0] / e[e > 0] - 1.0) <= TOL)


@pytest.mark.parametrize("formalism", FORMALISMS)
def test_many_seeds_sum(formalism):
    """A plan-like case: 40 seeds with random axes and strengths, points everywhere around them."""
    rng = np.random.default_rng(5)
    seeds = rng.uniform(-20, 20, (40, 3))
    axes = rng.normal(size=(40, 3))  # not normalised: the API normalises
    s = rng.uniform(0.3, 1.0, 40)
    pts = np.concatenate([rng.uniform(-60, 60, (30000, 3)), seeds + rng.normal(scale=1.0, size=(40, 3))])
    tab = seedplan.dose_rate(pts, seeds, s, axes=axes, formalism=formalism)
    ref = seedplan.dose_rate(pts, seeds, s, axes=axes, formalism=formalism, exact=True)
    assert np.max(np.abs(tab / ref - 1.0)) <= TOL
    tot = seedplan.total_dose(pts, seeds, s, axes=axes, formalism=formalism)
    np.testing.assert_allclose(tot, tab * load_seed_model("6711").mean_life_h / 100.0, rtol=1e-15)


# ---------------------------------------------------------- linear structure
@pytest.mark.parametrize("formalism", FORMALISMS)
def test_superposition_and_influence_columns(formalism):
    rng = np.random.default_rng(6)
    seeds = rng.uniform(-15, 15, (7, 3))
    axes = random_axes(rng, 7)
    s = rng.uniform(0.4, 1.2, 7)
    pts = np.concatenate([rng.uniform(-40, 40, (3000, 3)), seeds + rng.normal(scale=2.0, size=(7, 3))])
    total = seedplan.dose_rate(pts, seeds, s, axes=axes, formalism=formalism)
    singles = [seedplan.dose_rate(pts, seeds[i:i + 1], s[i:i + 1], axes=axes[i:i + 1], formalism=formalism)
               for i in range(7)]
    np.testing.assert_allclose(total, sum(singles), rtol=1e-12)
    a = seedplan.influence_matrix(pts, seeds, axes=axes, formalism=formalism, total=False)
    for i in range(7):
        np.testing.assert_allclose(a[:, i] * s[i], singles[i], rtol=1e-13)
    np.testing.assert_allclose(a @ s, total, rtol=1e-12)
    a_tot = seedplan.influence_matrix(pts, seeds, axes=axes, formalism=formalism)
    np.testing.assert_allclose(a_tot, a * seedplan.dose.mean_life_h() / 100.0, rtol=1e-15)
    # linear in strength, and the cut-off leaves out exactly the far seeds, as the exact kernel does
    np.testing.assert_allclose(seedplan.dose_rate(pts, seeds, 3 * s, axes=axes, formalism=formalism), 3 * total,
                               rtol=1e-14)
    d = np.linalg.norm(pts[:, None] - seeds[None], axis=2)
    cut = seedplan.dose_rate(pts, seeds, s, axes=axes, formalism=formalism, cutoff_mm=25.0)
    np.testing.assert_allclose(cut, np.sum(a * s * (d <= 25.0), axis=1), rtol=1e-12)


def test_mirror_symmetry():
    rng = np.random.default_rng(7)
    axis = random_axes(rng, 1)[0]
    seed = np.array([3.0, -2.0, 5.0])
    p = rng.normal(size=(2000, 3)) * 20
    mirrored = p - 2 * (p @ axis)[:, None] * axis
    for formalism in FORMALISMS:
        a = seedplan.dose_rate(seed + p, [seed], 0.7, axes=[axis], formalism=formalism)
        b = seedplan.dose_rate(seed + mirrored, [seed], 0.7, axes=[-axis], formalism=formalism)
        c = seedplan.dose_rate(seed + mirrored, [seed], 0.7, axes=[axis], formalism=formalism)
        np.testing.assert_allclose(a, b, rtol=1e-12)
        np.testing.assert_allclose(a, c, rtol=1e-12)


# ---------------------------------------------------------------- the switch
@pytest.mark.parametrize("formalism", FORMALISMS)
def test_exact_keyword_is_the_exact_kernel_bit_for_bit(formalism):
    rng = np.random.default_rng(8)
    seeds = rng.uniform(-15, 15, (9, 3))
    axes = random_axes(rng, 9)
    s = rng.uniform(0.4, 1.2, 9)
    pts = rng.uniform(-40, 40, (2000, 3))
    m = load_seed_model("6711")
    arrays = _exact.model_arrays(m)
    code = CODES[formalism]
    axes = axes / np.linalg.norm(axes, axis=1)[:, None]  # as the API normalises them
    for cut in (None, 20.0):
        ref = _exact.dose_rate_points(pts / 10.0, seeds / 10.0, s, axes, code,
                                      (math.inf if cut is None else cut) / 10.0, *arrays)
        got = seedplan.dose_rate(pts, seeds, s, axes=axes, formalism=formalism, cutoff_mm=cut, exact=True)
        assert np.array_equal(got, ref)
        assert np.array_equal(seedplan.total_dose(pts, seeds, s, axes=axes, formalism=formalism, cutoff_mm=cut,
                                                  exact=True), ref * m.mean_life_h / 100.0)
    a_ref = _exact.influence_points(pts / 10.0, seeds / 10.0, axes, code, *arrays)
    assert np.array_equal(seedplan.influence_matrix(pts, seeds, axes=axes, formalism=formalism, total=False,
                                                    exact=True), a_ref)
    assert np.array_equal(seedplan.influence_matrix(pts, seeds, axes=axes, formalism=formalism, exact=True),
                          a_ref * (m.mean_life_h / 100.0))
    # and the default is not the exact kernel (it is the table)
    assert not np.array_equal(seedplan.dose_rate(pts, seeds, s, axes=axes, formalism=formalism), ref)


@pytest.mark.parametrize("fn", ["dose_rate", "total_dose", "influence_matrix"])
@pytest.mark.parametrize("bad", ["yes", 1, None, 0.0])
def test_exact_keyword_rejects_non_bool(fn, bad):
    f = getattr(seedplan, fn)
    args = ([[10.0, 0, 0]], [[0.0, 0, 0]]) if fn == "influence_matrix" else ([[10.0, 0, 0]], [[0.0, 0, 0]], 1.0)
    with pytest.raises(InputTypeError, match="exact") as info:
        f(*args, exact=bad)
    assert isinstance(info.value, SeedplanError)
    assert np.array_equal(f(*args, exact=np.bool_(True)), f(*args, exact=True))


def test_heterogeneity_tg43_term_uses_the_switch():
    grid = Grid((-19.75, -19.75, -19.75), (0.5, 0.5, 0.5), (80, 80, 80))
    mu = np.full(grid.shape, 0.412)
    mu[:, :, 50:60] = 3.5
    rng = np.random.default_rng(9)
    pts = rng.uniform(-18, 18, (300, 3))
    seeds = rng.uniform(-5, 5, (4, 3))
    axes = random_axes(rng, 4)
    d = heterogeneity_dose(pts, seeds, 0.5, mu, grid, axes=axes)
    e = heterogeneity_dose(pts, seeds, 0.5, mu, grid, axes=axes, exact=True)
    assert np.max(np.abs(d / e - 1.0)) <= TOL
    assert not np.array_equal(d, e)
    water = np.full(grid.shape, 0.412)
    np.testing.assert_allclose(heterogeneity_dose(pts, seeds, 0.5, water, grid, axes=axes, exact=True),
                               seedplan.total_dose(pts, seeds, 0.5, axes=axes, exact=True), rtol=1e-12)


# --------------------------------------------------------- near-field radius
def test_near_radius_is_at_least_the_grid_radius_and_meets_the_tolerance():
    for source in available_seed_models():
        m = load_seed_model(source)
        arrays = _exact.model_arrays(m)
        for formalism, code in CODES.items():
            tab = tabulated.point_table(m, arrays, code, 50.0)
            base = _grid.R_NEAR_MM if code == 0 else _grid.R_NEAR_1D_MM
            assert tab.r_near_mm >= base and tab.r_near_mm >= m.capsule_length_mm / 2
            assert tab.r_far_mm >= 50.0
            err = tabulated._estimated_error_rows(m, arrays, code, tab.table)
            step = _grid.DR_MM if code == 0 else _grid.DR1_MM
            assert np.all(err[int(round(tab.r_near_mm / step)):] <= tabulated.TABLE_TOLERANCE)
    # the Best 2301 2D table is less accurate near the seed: its radius is wider than the grid path's
    assert near_radius("2301", "2D") > _grid.R_NEAR_MM


def test_table_grows_with_distance_and_is_capped():
    m = load_seed_model("6711")
    arrays = _exact.model_arrays(m)
    assert tabulated.point_table(m, arrays, 0, 300.0).r_far_mm >= tabulated.R_TABLE_MAX_MM
    # farther pairs do not grow the table: they are evaluated exactly (test_table_edges)
    assert tabulated.point_table(m, arrays, 0, 1e6).table is tabulated.point_table(m, arrays, 0, 255.0).table
    pts = np.array([[0.0, 0.0, 0.0], [2000.0, 0.0, 0.0]])
    bound = tabulated.max_distance_mm(pts, np.array([[5.0, 5.0, 5.0]]))
    assert bound >= np.max(np.linalg.norm(pts - 5.0, axis=1))
