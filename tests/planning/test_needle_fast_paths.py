"""Needle planning's fast paths against the exact ones they replace.

* the march reads the distance maps from their boxes (:func:`distance_boxes`) instead of full-grid arrays:
  the same four outputs as the march on :func:`distance_maps`;
* the march may stop a ray at the first margin it certainly violates: the feasible rays, the chosen
  needles and every failure message are those of the full march;
* bounding-box searches, the cross product and the cached needle compatibilities give the same values;
* the cement's nearest organ (surfaces and a k-d tree) equals the distance-transform answer.
"""

import numpy as np
import pytest
from scipy import ndimage

from seedplan.errors import PlanningError
from seedplan.geometry import Grid, mask_bbox
from seedplan.planning import _raycast as rc
from seedplan.planning import needles as N


def _masks(shape, rng):
    z, y, x = np.indices(shape)
    c = np.array(shape) / 2.0
    a = (z - c[0]) ** 2 + (y - c[1] - 6) ** 2 + (x - c[2] + 5) ** 2 < 40
    b = (np.abs(x - c[2] - 8) < 3) & (y < c[1])  # a slab reaching the grid's edge
    e = np.zeros(shape, bool)  # empty
    d = rng.random(shape) < 0.002  # scattered voxels
    return [a, b, e, d]


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.7)])
def test_distance_boxes_equal_full_transform(spacing):
    rng = np.random.default_rng(0)
    masks = _masks((30, 40, 36), rng)
    cap = 6.0
    dense = rc.distance_maps(masks, spacing, cap)
    for s, m in enumerate(masks):
        ref = np.full(m.shape, cap) if not m.any() else np.minimum(ndimage.distance_transform_edt(~m, sampling=spacing),
                                                                     cap)
        np.testing.assert_array_equal(dense[s], ref.astype(np.float32))


def _rays(shape, rng, n=600):
    tips = rng.uniform([0, 0, 0], np.array(shape[::-1]) - 1, (n, 3))
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1)[:, None]
    return tips, d * 0.5


def test_box_march_equals_dense_march():
    rng = np.random.default_rng(1)
    shape = (30, 40, 36)
    masks = _masks(shape, rng)
    body = np.zeros(shape, np.uint8)
    body[2:-2, 3:-3, 2:-2] = 1
    labels = (rng.random(shape) < 0.3).astype(np.uint8) | (masks[0].view(np.uint8) << 1)
    sp = np.array([0.9, 1.1, 2.0])
    boxes = rc.distance_boxes(masks, tuple(sp[::-1]), 8.0)
    dense = boxes.dense()
    tips, steps = _rays(shape, rng)
    for n in (300, rc._PARALLEL_MIN + 10):  # the serial and the parallel kernels
        t, st = np.resize(tips, (n, 3)), np.resize(steps, (n, 3))
        a = rc.march_from_tips(t, st, 0.5, 120, body, labels, dense, sp)
        b = rc.march_from_tips(t, st, 0.5, 120, body, labels, boxes, sp)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        # stopping at a violated margin: the rays that do not stop are unchanged, those that stop violate it
        margins = np.array([3.0, 2.0, 1.0, 1.5])
        c = rc.march_from_tips(t, st, 0.5, 120, body, labels, boxes, sp, stop_below_mm=margins)
        stopped = c[1] == 4
        assert stopped.any() and (~stopped).any()
        for x, y in zip(a, c):
            np.testing.assert_array_equal(x[~stopped], y[~stopped])
        assert np.all((a[2][stopped] < margins).any(axis=1))
        assert np.all((c[2][stopped] < margins).any(axis=1))


def _full_trace(monkeypatch):
    orig = N._Scene.trace

    def full(self, tips, dirs, *, early=False):
        return orig(self, tips, dirs, early=False)

    monkeypatch.setattr(N._Scene, "trace", full)


def _needle_case():
    from seedplan.imaging.phantom import make_spine_phantom
    from seedplan.imaging.structures import Role

    ph = make_spine_phantom(level="L3", spacing_mm=2.0)
    s, g = ph.structures, ph.ct.grid
    forb = {x.name: x.mask_on(g) for x in s.values() if x.role in (Role.OAR, Role.CANAL)}
    corridor = np.zeros(g.shape, bool)
    for x in s.values():
        if x.role in (Role.VERTEBRAL_BODY, Role.PEDICLE):
            corridor |= x.mask_on(g)
    ped = np.zeros(g.shape, bool)
    for x in s.by_role(Role.PEDICLE):
        ped |= x.mask_on(g)
    return dict(g=g, target=s.by_role(Role.TARGET)[0].mask_on(g), body=s.by_role(Role.BODY)[0].mask_on(g),
                vb=s.by_role(Role.VERTEBRAL_BODY)[0].mask_on(g), ped=ped, forb=forb, bone=ph.ct.hu >= 150,
                corridor=corridor)


@pytest.fixture(scope="module")
def needle_case():
    return _needle_case()


def test_early_stop_gives_the_same_needle_plans(needle_case, monkeypatch):
    c = needle_case
    runs = {
        "free": lambda: N.plan_needles(c["g"], c["target"], c["body"], c["forb"], bone=c["bone"],
                                       bone_allowed=c["corridor"]),
        "coplanar": lambda: N.plan_needles(c["g"], c["target"], c["body"], c["forb"], bone=c["bone"],
                                           bone_allowed=c["corridor"], mode="coplanar"),
        "pvp": lambda: N.pvp_needle_paths(c["g"], c["vb"], c["body"], c["forb"], pedicles=c["ped"], bone=c["bone"],
                                          bone_allowed=c["corridor"]),
        "pvp-para": lambda: N.pvp_needle_paths(c["g"], c["vb"], c["body"], c["forb"], pedicles=c["ped"],
                                               bone=c["bone"], bone_allowed=c["corridor"], approach="parapedicular",
                                               bilateral=False),
    }
    fast = {k: f().to_dict() for k, f in runs.items()}
    with monkeypatch.context() as m:
        _full_trace(m)
        full = {k: f().to_dict() for k, f in runs.items()}
    assert fast == full


def test_early_stop_gives_the_same_failure_messages(needle_case, monkeypatch):
    """Where nothing is feasible the reasons are counted on the full march (every structure of every path)."""
    c = needle_case
    wide = {k: v for k, v in c["forb"].items()}
    wide["wall"] = np.zeros(c["g"].shape, bool)
    wide["wall"][:, int(c["g"].shape[1] * 0.62):int(c["g"].shape[1] * 0.66), :] = True  # a plate behind the spine
    calls = {
        "free": lambda: N.plan_needles(c["g"], c["target"], c["body"], wide, bone=c["bone"],
                                       bone_allowed=c["corridor"]),
        "coplanar": lambda: N.plan_needles(c["g"], c["target"], c["body"], wide, bone=c["bone"],
                                           bone_allowed=c["corridor"], mode="coplanar"),
        "pvp": lambda: N.pvp_needle_paths(c["g"], c["vb"], c["body"], wide, pedicles=c["ped"], bone=c["bone"],
                                          bone_allowed=c["corridor"]),
        "pvp-one": lambda: N.pvp_needle_paths(c["g"], c["vb"], c["body"], wide, pedicles=c["ped"], bone=c["bone"],
                                              bone_allowed=c["corridor"], bilateral=False),
    }

    def messages():
        out = {}
        for k, f in calls.items():
            with pytest.raises(PlanningError) as e:
                f()
            out[k] = str(e.value)
        return out

    fast = messages()
    with monkeypatch.context() as m:
        _full_trace(m)
        full = messages()
    assert fast == full
    assert all("wall" in v for v in fast.values())


def test_bbox_argwhere_and_cross():
    rng = np.random.default_rng(4)
    for _ in range(30):
        m = rng.random((9, 11, 13)) < rng.uniform(0, 0.05)
        np.testing.assert_array_equal(N._argwhere(m), np.argwhere(m))
        bb = mask_bbox(m)
        if m.any():
            idx = np.argwhere(m)
            assert bb == (tuple(idx.min(0)), tuple(idx.max(0)))
        else:
            assert bb is None
    for d in list(N._sample_directions(45.0, 45.0, 1.0)) + list(rng.normal(size=(500, 3))):
        for b in ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), tuple(rng.normal(size=3))):
            assert N._cross(d, b).tobytes() == np.cross(d, b).tobytes()


def test_compatibility_cache_equals_direct():
    rng = np.random.default_rng(5)
    prox, tips, entries = (rng.uniform(-30, 30, (200, 3)) for _ in range(3))
    from seedplan.plan import NeedleConstraints

    c = NeedleConstraints()
    comp = N._Compatible(prox, tips, entries, c)
    for o in (0, 7, 7, 199):
        ref = rc.segments_distance(prox[o], tips[o], prox, tips) >= c.min_needle_distance_mm - 1e-9
        ref &= np.linalg.norm(entries - entries[o], axis=1) >= c.min_entry_distance_mm - 1e-9
        ref &= rc.segments_distance(entries[o], tips[o], entries, tips) >= c.min_track_distance_mm - 1e-9
        np.testing.assert_array_equal(comp(o), ref)


def _outside_reference(cement, vb, grid, organs, lesion=None):
    """The previous ``_outside``: whole-grid counts, and a distance transform on the cement's box + 60 mm."""
    out = {"outside_vertebral_body_mL": round(float((cement & ~vb).sum()) * grid.voxel_volume_mm3 / 1000.0, 3),
           "nearest_organ": None}
    if lesion is not None and (lesion & vb).any():
        out["lesion_filled_pct"] = round(100.0 * float((cement & lesion & vb).sum()) / float((lesion & vb).sum()), 2)
    if not cement.any() or not organs:
        return out
    sp = np.asarray(grid.spacing_mm, dtype=float)[::-1]
    idx = np.argwhere(cement)
    pad = np.ceil(60.0 / sp).astype(int)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, cement.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    dist = ndimage.distance_transform_edt(~cement[box], sampling=sp)
    best = None
    for s in organs:
        m = s.mask_on(grid)[box]
        if m.any():
            d = float(dist[m].min())
            if best is None or d < best["distance_mm"]:
                best = {"name": s.name, "distance_mm": round(d, 1)}
    out["nearest_organ"] = best
    return out


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.0)])
def test_nearest_organ_equals_distance_transform(spacing):
    from seedplan.imaging.structures import Role, Structure
    from seedplan.planning.cement import _outside

    rng = np.random.default_rng(6)
    g = Grid((0.0, 0.0, 0.0), spacing, (60, 70, 40))
    c = g.voxel_centers_mm()
    cement = np.linalg.norm(c - [25.0, 30.0, 30.0], axis=-1) < 6.0
    vb = np.linalg.norm(c - [25.0, 30.0, 30.0], axis=-1) < 12.0
    organs = []
    for k, (centre, r) in enumerate([([45.0, 30.0, 30.0], 5.0), ([25.0, 50.0, 20.0], 3.0), ([28.0, 33.0, 32.0], 2.0),
                                     ([5.0, 5.0, 5.0], 2.0)]):
        m = np.linalg.norm(c - centre, axis=-1) < r
        m |= rng.random(g.shape) < 0.0005 * (k == 0)
        organs.append(Structure(f"organ{k}", Role.OAR, m, g))
    lesion = np.linalg.norm(c - [20.0, 26.0, 28.0], axis=-1) < 9.0
    leaky = cement | (np.linalg.norm(c - [25.0, 43.0, 30.0], axis=-1) < 2.5)  # some cement outside the body
    for subset in (organs, organs[:2], organs[3:], organs[1:2], []):
        for cem, les in ((cement, None), (leaky, lesion), (cement, lesion)):
            assert _outside(cem, vb, g, subset, les) == _outside_reference(cem, vb, g, subset, les)


def test_packed_cover_counts_equal_numpy():
    """The greedy needle choice counts uncovered target points by popcounts: the same int64 counts."""
    rng = np.random.default_rng(8)
    for _ in range(200):
        n, m = int(rng.integers(1, 200)), int(rng.integers(0, 2000))
        cover = rng.random((n, m)) < rng.uniform(0, 1)
        packed = rc.PackedCover(cover)
        for _ in range(3):
            covered = rng.random(m) < rng.uniform(0, 1)
            got, ref = packed.uncovered(covered), cover[:, ~covered].sum(axis=1)
            assert got.dtype == ref.dtype
            np.testing.assert_array_equal(got, ref)


def _lines_reference(d, pts, centre, pitch, offset=(0.0, 0.0)):
    """The previous lattice of lines: cells from np.unique of combined keys."""
    u, v = N._perp_basis(d)
    rel = pts - centre
    a = rel @ u - offset[0]
    b = rel @ v - offset[1]
    ia = np.floor(a / pitch + 0.5).astype(int)
    ib = np.floor(b / pitch + 0.5).astype(int)
    big = 1 << 20
    key = np.unique((ia + big // 2) * big + (ib + big // 2))
    cells = np.stack([key // big - big // 2, key % big - big // 2], axis=1)
    centres = centre + (cells[:, 0:1] * pitch + offset[0]) * u[None, :] + (cells[:, 1:2] * pitch + offset[1]) * v[None, :]
    return centres, cells


def test_lines_for_direction_equal_previous():
    rng = np.random.default_rng(9)
    for _ in range(100):
        pts = rng.normal(size=(int(rng.integers(1, 3000)), 3)) * rng.uniform(1, 30) + rng.uniform(-50, 50, 3)
        centre = pts.mean(axis=0)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        pitch = float(rng.uniform(1.0, 8.0)) if rng.random() < 0.8 else float(rng.uniform(0.01, 0.1))  # both paths
        off = tuple(rng.uniform(0, pitch, 2)) if rng.random() < 0.5 else (0.0, 0.0)
        got = N._lines_for_direction(None, d, pts, centre, pitch, off)
        ref = _lines_reference(d, pts, centre, pitch, off)
        for x, y in zip(got, ref):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


def test_label_field_equals_previous():
    """One pass for the label bits and the bone outside the corridor: the arrays of the previous masked ORs."""
    rng = np.random.default_rng(10)
    shape = (7, 9, 11)
    t, b, a, x = (rng.random(shape) < p for p in (0.2, 0.4, 0.5, 0.3))
    none = np.zeros(1, bool)
    for has_b, has_a, has_x in [(True, True, True), (True, False, False), (False, False, True), (False, False, False)]:
        labels = np.zeros(shape, np.uint8)
        labels[t] |= 1
        bad = np.zeros(shape, bool)
        if has_b:
            bad = b.copy()
            if has_a:
                bad &= ~a
            labels[b] |= 2
            labels[bad] |= 4
        if has_x:
            labels[x] |= 8
        got_l, got_b = rc.label_field(t, b if has_b else none, a if has_a else none, x if has_x else none,
                                      has_b, has_a, has_x)
        np.testing.assert_array_equal(got_l, labels)
        np.testing.assert_array_equal(got_b, bad)
