"""2D slice views: plane extraction, orientation and the rendered PNGs."""

from __future__ import annotations

import numpy as np
import pytest

from seedplan.geometry import Grid
from seedplan.imaging.ct import CTImage
from seedplan.imaging.structures import Structure, StructureSet
from seedplan.viz.slices import ISODOSE_COLORS, extract_plane, render_slice_views, slice_figure


def _linear(p: np.ndarray) -> np.ndarray:
    return 7.0 + 2.0 * p[..., 0] - 3.0 * p[..., 1] + 0.5 * p[..., 2]


def _volume_on(grid: Grid, f) -> np.ndarray:
    return f(grid.voxel_centers_mm())


def _rot(axis: np.ndarray, deg: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


# ----------------------------------------------------------------- extract_plane
def test_extract_plane_matches_analytic_values_axis_aligned():
    grid = Grid((-20.0, -15.0, -10.0), (1.5, 2.0, 2.5), (30, 20, 12))
    vol = _volume_on(grid, _linear)
    us, vs = np.linspace(-12, 15, 7), np.linspace(-9, 11, 5)
    out = extract_plane(vol, grid, (0.0, 0.0, 3.3), (1, 0, 0), (0, 1, 0), us, vs)
    U, V = np.meshgrid(us, vs)
    expect = _linear(np.stack([U, V, np.full_like(U, 3.3)], axis=-1))
    assert out.shape == (5, 7)
    np.testing.assert_allclose(out, expect, atol=1e-9)


def test_extract_plane_oblique_flipped_grid_and_oblique_plane():
    # grid axes rotated 25 deg about an oblique axis with x and z flipped (as a feet-first, rotated series)
    direction = _rot([0.3, -0.5, 1.0], 25.0) @ np.diag([-1.0, 1.0, -1.0])
    grid = Grid((30.0, -25.0, 20.0), (1.2, 1.0, 2.0), (50, 50, 25), direction)
    vol = _volume_on(grid, _linear)
    centre = grid.index_to_world(np.array([24.5, 24.5, 12.0]))
    u = _rot([1.0, 1.0, 0.0], 40.0) @ np.array([1.0, 0.0, 0.0])
    v = np.cross([0.2, 0.3, 1.0], u)
    v /= np.linalg.norm(v)
    us, vs = np.linspace(-10, 10, 9), np.linspace(-8, 8, 6)
    out = extract_plane(vol, grid, centre, u, v, us, vs)
    pts = centre + us[None, :, None] * u + vs[:, None, None] * v
    assert grid.contains(pts, margin_voxels=-1.0).all(), "test points must be well inside the grid"
    np.testing.assert_allclose(out, _linear(pts), atol=1e-6)
    # outside the grid: the fill value
    far = extract_plane(vol, grid, centre + 500.0, u, v, [0.0], [0.0], fill=-5.0)
    assert far[0, 0] == -5.0


def test_extract_plane_nearest_for_masks():
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (10, 10, 10))
    m = np.zeros(grid.shape, bool)
    m[5, 2:4, 6:9] = True  # z = 5, y = 2..3, x = 6..8
    out = extract_plane(m, grid, (0, 0, 5), (1, 0, 0), (0, 1, 0), np.arange(10.0), np.arange(10.0), order=0, fill=0)
    assert out.sum() == 6 and out[2, 6] == 1 and out[3, 8] == 1 and out[4, 8] == 0


# ------------------------------------------------------------- synthetic scenes
def _scene(blob_mm, *, dose=False, dose_direction=None):
    """CT with a bright blob at ``blob_mm``, a small target at the origin, optional radial dose."""
    grid = Grid.from_bounds((-60, -60, -40), (60, 60, 40), 2.0)
    c = grid.voxel_centers_mm()
    hu = np.full(grid.shape, 0.0, np.float32)
    hu[np.linalg.norm(c - np.asarray(blob_mm, float), axis=-1) <= 7.0] = 1500.0
    ct = CTImage(grid, hu)
    tgt = Structure("target", "target", np.linalg.norm(c, axis=-1) <= 8.0, grid)
    ss = StructureSet([tgt])
    if not dose:
        return ct, ss, None, None
    d = np.eye(3) if dose_direction is None else np.asarray(dose_direction, float)
    size, spacing = np.array([70, 45, 50]), np.array([1.0, 1.5, 1.25])
    origin = np.array([3.0, -2.0, 1.0]) - d @ ((size - 1) / 2 * spacing)  # centred near the origin
    dgrid = Grid(origin, spacing, size, d)
    r = np.linalg.norm(dgrid.voxel_centers_mm(), axis=-1)
    return ct, ss, dgrid, 200.0 - 4.0 * r  # 120 Gy (100 % of PD) at r = 20 mm


def _png(fig, tmp_path, name):
    import matplotlib.image as mpimg

    path = tmp_path / name
    fig.savefig(path, format="png", dpi=fig.dpi)
    return mpimg.imread(path)[..., :3]


def _axes_box(fig, img):
    """Pixel box (row0, row1, col0, col1) of the image axes in the saved PNG."""
    bb = fig.axes[0].get_window_extent()
    h = img.shape[0]
    return int(round(h - bb.y1)), int(round(h - bb.y0)), int(round(bb.x0)), int(round(bb.x1))


@pytest.mark.parametrize(
    "view, blob, expect",
    [
        ("axial", (30.0, 18.0, 0.0), "right"),  # patient left (+x) -> image right (radiological)
        ("axial", (-30.0, 18.0, 0.0), "left"),
        ("axial", (18.0, -30.0, 0.0), "top"),  # anterior (-y) -> up
        ("axial", (18.0, 30.0, 0.0), "bottom"),
        ("coronal", (30.0, 0.0, 18.0), "right"),
        ("coronal", (18.0, 0.0, 30.0), "top"),  # superior up
        ("sagittal", (0.0, -30.0, 18.0), "left"),  # anterior on the left
        ("sagittal", (0.0, 18.0, 30.0), "top"),
    ],
)
def test_view_orientation(tmp_path, view, blob, expect):
    ct, ss, _, _ = _scene(blob)
    mirror = np.array(blob)
    axis = {"left": 0, "right": 0, "top": 1, "bottom": 1}[expect]
    # the mirrored blob flips the coordinate that decides the expected side
    k = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[view][axis]
    mirror[k] = -mirror[k]
    ct2, _, _, _ = _scene(mirror)
    fig = slice_figure(view, ct, ss)
    a = _png(fig, tmp_path, "a.png")
    b = _png(slice_figure(view, ct2, ss), tmp_path, "b.png")
    r0, r1, c0, c1 = _axes_box(fig, a)
    diff = a.mean(axis=-1) - b.mean(axis=-1)  # > 0 where only the first blob is
    rows, cols = np.nonzero(diff > 0.5)
    assert rows.size > 30
    assert np.all((rows >= r0 - 1) & (rows <= r1 + 1) & (cols >= c0 - 1) & (cols <= c1 + 1))
    mid_c, mid_r = 0.5 * (c0 + c1), 0.5 * (r0 + r1)
    side = {"right": cols.mean() > mid_c, "left": cols.mean() < mid_c,
            "top": rows.mean() < mid_r, "bottom": rows.mean() > mid_r}[expect]
    assert side, f"{view}: blob at {blob} not on the image {expect}"


def test_orientation_letters_match_display():
    ct, ss, _, _ = _scene((30.0, 18.0, 0.0))
    texts = {}
    for view in ("axial", "sagittal", "coronal"):
        ax = slice_figure(view, ct, ss).axes[0]
        texts[view] = {(round(t.get_position()[0], 2), round(t.get_position()[1], 2)): t.get_text()
                       for t in ax.texts if t.get_text() in "RLAPSI"}

    def side(view, letter):
        (x, y), = [p for p, t in texts[view].items() if t == letter]
        return "left" if x < 0.2 else "right" if x > 0.8 else "top" if y > 0.8 else "bottom"
    assert [side("axial", c) for c in "RLAP"] == ["left", "right", "top", "bottom"]
    assert [side("coronal", c) for c in "RLSI"] == ["left", "right", "top", "bottom"]
    assert [side("sagittal", c) for c in "APSI"] == ["left", "right", "top", "bottom"]


@pytest.mark.parametrize("rotated", [False, True])
def test_isodose_resampled_in_world_coordinates(tmp_path, rotated):
    """The 100 % line of a radial dose on another (possibly oblique) grid is a 20 mm circle around the origin."""
    direction = _rot([0.2, 0.4, 1.0], 30.0) @ np.diag([1.0, -1.0, 1.0]) if rotated else None
    ct, ss, dgrid, dose = _scene((40.0, 40.0, 30.0), dose=True, dose_direction=direction)
    for view in ("axial", "coronal"):
        fig = slice_figure(view, ct, ss, None, dgrid, dose, prescription_Gy=120.0, levels_pct=(100,))
        img = _png(fig, tmp_path, f"{view}.png")
        r0, r1, c0, c1 = _axes_box(fig, img)
        red = np.all(np.abs(img - np.array([1.0, 0.0, 0.0])) < 0.02, axis=-1)
        red[:, c1 + 2:] = False  # ignore the legend
        rows, cols = np.nonzero(red)
        assert rows.size > 100
        disp = np.stack([cols + 0.5, img.shape[0] - rows - 0.5], axis=-1)
        data = fig.axes[0].transData.inverted().transform(disp)
        radius = np.hypot(data[:, 0], data[:, 1])
        assert abs(np.median(radius) - 20.0) < 1.0, (view, np.median(radius))
        assert radius.min() > 17.0 and radius.max() < 23.0


# --------------------------------------------------------------------- real plan
@pytest.fixture(scope="module")
def planned():
    from seedplan.imaging.phantom import make_spine_phantom
    from seedplan.planning import plan_case

    ph = make_spine_phantom(spacing_mm=2.0)
    return ph, plan_case(ph.ct, ph.structures)


def test_render_slice_views_real_plan(planned, tmp_path):
    import matplotlib.image as mpimg

    ph, res = planned
    assert not res.dose_grid.same_geometry(ph.ct.grid)  # dose really is resampled
    paths = render_slice_views(ph.ct, ph.structures, res.plan, res.dose_grid, res.dose_Gy, tmp_path / "png",
                               prefix="case")
    assert set(paths) == {"axial", "sagittal", "coronal"}
    assert [p.name for p in paths.values()] == ["case_axial.png", "case_sagittal.png", "case_coronal.png"]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(p.name for p in paths.values())
    red = np.array([int(c, 16) / 255 for c in (ISODOSE_COLORS[100.0][1:3], ISODOSE_COLORS[100.0][3:5],
                                                   ISODOSE_COLORS[100.0][5:7])])
    for view, p in paths.items():
        img = mpimg.imread(p)[..., :3]
        assert img.shape[0] > 300 and img.shape[1] > 600
        colours = np.unique((img * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
        assert len(colours) > 200, f"{view}: only {len(colours)} colours"
        on_image = np.all(np.abs(img - red) < 0.02, axis=-1)[:, : int(0.68 * img.shape[1])]
        assert on_image.sum() > 100, f"{view}: the 100 % isodose is missing"


def test_seeds_near_the_plane_are_drawn(planned, tmp_path):
    ph, res = planned
    plan = res.plan
    z0 = float(plan.positions_mm[0, 2])
    fig = slice_figure("axial", ph.ct, ph.structures, plan, res.dose_grid, res.dose_Gy,
                       centre_mm=(0.0, 0.0, z0))
    n_near = int(np.sum(np.abs(plan.positions_mm[:, 2] - z0) <= 2.5))
    seed_lines = [ln for ln in fig.axes[0].lines if ln.get_linewidth() == 3.0]
    assert len(seed_lines) == n_near >= 1
    # each capsule is centred on its seed
    centres = np.array([np.mean(ln.get_xydata(), axis=0) for ln in seed_lines])
    near = plan.positions_mm[np.abs(plan.positions_mm[:, 2] - z0) <= 2.5][:, :2]
    np.testing.assert_allclose(np.sort(centres, axis=0), np.sort(near, axis=0), atol=1e-6)


def test_extract_plane_interpolates_integer_volumes_without_truncation():
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (4, 4, 4))
    hu = np.broadcast_to(np.arange(4, dtype=np.int16) * 100, grid.shape).copy()  # HU = 100 * x
    out = extract_plane(hu, grid, (0, 0, 1), (1, 0, 0), (0, 1, 0), [0.5, 1.25, 2.9], [1.0])
    np.testing.assert_allclose(out, [[50.0, 125.0, 290.0]])
