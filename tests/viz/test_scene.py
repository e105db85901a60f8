"""3D scene: surfaces in world coordinates, seed capsules, camera presets and the rendered PNGs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from seedplan.errors import InputError, InputTypeError, SeedplanError
from seedplan.geometry import Grid
from seedplan.imaging.ct import CTImage
from seedplan.imaging.structures import Structure, StructureSet
from seedplan.plan import Plan, PlannedSeed
from seedplan.plan import Needle
from seedplan.plan import Prescription
from seedplan.viz.scene import (
    CAMERAS,
    DEFAULT_VIEWS,
    VIEWS,
    build_scene,
    camera_for_view,
    iso_surface,
    mask_surface,
    render_views,
    seed_capsules,
    set_view,
)
from seedplan.viz.slices import isodose_color, structure_color

pv = pytest.importorskip("pyvista")

WINDOW = (480, 400)
MARK = 28.0  # marker distance from the target centre (mm)


def _rot(axis, deg: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _signed_volume(mesh) -> float:
    """Volume by the divergence theorem: positive when the faces point outward."""
    f = mesh.faces.reshape(-1, 4)[:, 1:]
    p = np.asarray(mesh.points, float)
    return float(np.einsum("ij,ij->i", p[f[:, 0]], np.cross(p[f[:, 1]], p[f[:, 2]])).sum() / 6.0)


def _hsv(img: np.ndarray) -> np.ndarray:
    from matplotlib.colors import rgb_to_hsv

    return rgb_to_hsv(img[..., :3].astype(float) / 255.0)


def _hue_of(colour: str) -> float:
    from matplotlib.colors import rgb_to_hsv, to_rgb

    return float(rgb_to_hsv(np.array(to_rgb(colour)))[0])


def _near_hue(hsv: np.ndarray, colour: str, tol: float = 0.035, min_sat: float = 0.35) -> np.ndarray:
    d = np.abs(hsv[..., 0] - _hue_of(colour))
    d = np.minimum(d, 1.0 - d)
    return (d < tol) & (hsv[..., 1] > min_sat) & (hsv[..., 2] > 0.15)


def _overlay_mask(pl, shape) -> np.ndarray:
    """True on pixels covered by the legend, scalar bar, title and axes widget (their swatches hold exact colours)."""
    h, w = shape[:2]
    out = np.zeros((h, w), bool)
    leg = pl.legend
    if leg is not None:
        x0, y0 = leg.GetPosition()
        dx, dy = leg.GetPosition2()
        r0, r1 = max(int((1 - y0 - dy) * h) - 2, 0), int((1 - y0) * h) + 2
        out[r0:r1, max(int(x0 * w) - 2, 0):] = True
    out[: int(0.08 * h), :] = True  # title
    out[int(0.8 * h):, :] = True  # scalar bar and orientation axes along the bottom
    return out


# ------------------------------------------------------------------ synthetic case
def _plan(needles, seeds, pvp=()) -> Plan:
    return Plan(case={"name": "synthetic"}, prescription=Prescription(), seed_model="6711",
                formalism="2D", needles=tuple(needles), seeds=tuple(seeds),
                calibration_date="2026-01-01", implant_date="2026-01-01", pvp_needles=tuple(pvp))


@pytest.fixture(scope="module")
def case():
    """Target at the origin; markers: aorta (purple) on the patient's left, cord (yellow) anterior,
    canal (turquoise) superior; a bone block inferior; a radial dose with the 100 % isodose at r = 12 mm."""
    grid = Grid.from_bounds((-45, -45, -45), (45, 45, 45), 2.0)
    c = grid.voxel_centers_mm()
    hu = np.zeros(grid.shape, np.float32)
    hu[(np.abs(c[..., 0]) < 10) & (np.abs(c[..., 1]) < 10) & (c[..., 2] < -30)] = 800.0
    ct = CTImage(grid, hu)

    def ball(centre, r):
        return np.linalg.norm(c - np.asarray(centre, float), axis=-1) <= r

    ss = StructureSet([
        Structure("target", "target", ball((0, 0, 0), 7.0), grid),
        Structure("aorta", "oar", ball((MARK, 0, 0), 5.0), grid),
        Structure("cord", "oar", ball((0, -MARK, 0), 5.0), grid),
        Structure("canal", "avoidance", ball((0, 0, MARK), 5.0), grid),
        Structure("body", "body", np.ones(grid.shape, bool), grid),
    ])
    needles = [Needle((5.0, 60.0, 3.0), (2.0, -4.0, 1.0), "seed", "N1")]
    pvp = [Needle((-12.0, 60.0, 0.0), (-4.0, -4.0, 0.0), "pvp", "right")]
    d = needles[0].direction
    seeds = [PlannedSeed(tuple(needles[0].tip - d * (2.0 + 6.0 * k)), tuple(d), 1, 6.0 * k, 0.5, 0.635)
             for k in range(3)]
    dgrid = Grid((-30.0, 30.0, -30.0), (1.5, 1.5, 1.5), (41, 41, 41), np.diag([1.0, -1.0, 1.0]))  # y flipped
    dose = 200.0 - (80.0 / 12.0) * np.linalg.norm(dgrid.voxel_centers_mm(), axis=-1)  # 120 Gy at r = 12 mm
    return ct, ss, _plan(needles, seeds, pvp), dgrid, dose


@pytest.fixture(scope="module")
def shots(case):
    ct, ss, plan, dgrid, dose = case
    pl = build_scene(plan, ct, ss, dgrid, dose, off_screen=True, window_size=WINDOW)
    try:
        imgs = {}
        for v in VIEWS:
            set_view(pl, v)
            imgs[v] = np.asarray(pl.screenshot(return_img=True))
        overlay = _overlay_mask(pl, imgs["anterior"].shape)
        cam = pl.camera
        # size of a pixel in the focal plane (through the target centre)
        mm_per_px = 2.0 * cam.distance * np.tan(np.radians(cam.view_angle / 2.0)) / WINDOW[1]
    finally:
        pl.close()
    return imgs, overlay, mm_per_px


# ------------------------------------------------------------------------- import
def test_import_does_not_load_pyvista():
    code = "import sys, seedplan.viz.scene; print('pyvista' in sys.modules or 'vtk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------ surfaces
@pytest.mark.parametrize("direction", [
    None,
    _rot([0.3, -0.5, 1.0], 25.0) @ np.diag([1.0, -1.0, 1.0]),  # oblique, one axis flipped (det -1)
    _rot([1.0, 0.2, -0.4], 60.0) @ np.diag([-1.0, 1.0, -1.0]),  # oblique, two axes flipped
])
def test_mask_surface_lands_at_world_position(direction):
    grid = Grid((30.0, -25.0, 20.0), (1.0, 1.2, 1.5), (50, 48, 40), direction)
    centre = grid.index_to_world([27.0, 21.0, 17.0])
    r = 10.0
    mask = np.linalg.norm(grid.voxel_centers_mm() - centre, axis=-1) <= r
    mesh = mask_surface(mask, grid)
    vox = float(np.max(grid.spacing))
    assert mesh.n_cells > 500
    np.testing.assert_allclose(np.asarray(mesh.center), centre, atol=0.5 * vox)
    lo, hi = np.asarray(mesh.bounds).reshape(3, 2).T
    np.testing.assert_allclose(lo, centre - r, atol=vox)
    np.testing.assert_allclose(hi, centre + r, atol=vox)
    dist = np.linalg.norm(np.asarray(mesh.points) - centre, axis=1)
    assert abs(np.median(dist) - r) < 0.5 and dist.min() > r - vox and dist.max() < r + vox
    sphere = 4.0 / 3.0 * np.pi * r**3
    v = _signed_volume(mesh)
    assert v > 0, "faces must point outward"
    assert abs(v - sphere) / sphere < 0.04
    assert mesh.is_manifold
    # cropping to a world box: a box around the whole sphere changes nothing, a cut keeps one half
    same = mask_surface(mask, grid, box_mm=(centre - 15.0, centre + 15.0))
    assert same.n_cells == mesh.n_cells
    half = mask_surface(mask, grid, box_mm=(centre - 15.0, centre + [0.0, 15.0, 15.0]))
    hlo, hhi = np.asarray(half.bounds).reshape(3, 2).T
    assert hlo[0] == pytest.approx(lo[0], abs=0.01) and abs(hhi[0] - centre[0]) < vox
    assert _signed_volume(half) == pytest.approx(0.5 * v, rel=0.12)


def test_mask_surface_off_centre_blob_and_box_crop():
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (40, 30, 20), np.diag([-1.0, 1.0, 1.0]))  # x flipped
    mask = np.zeros(grid.shape, bool)
    mask[5:9, 20:26, 30:36] = True  # k 5..8, j 20..25, i 30..35 -> x = -30..-35
    mesh = mask_surface(mask, grid, smooth_voxels=0.0)
    lo, hi = np.asarray(mesh.bounds).reshape(3, 2).T
    np.testing.assert_allclose(lo, [-35.5, 19.5, 4.5], atol=0.01)  # 0.5 contour: half-way to the outside voxel
    np.testing.assert_allclose(hi, [-29.5, 25.5, 8.5], atol=0.01)
    assert _signed_volume(mesh) > 0
    # a world box cutting the block in half keeps the half inside (closed at the cut)
    cut = mask_surface(mask, grid, box_mm=((-40, 0, 0), (-33, 40, 40)), smooth_voxels=0.0)
    clo, chi = np.asarray(cut.bounds).reshape(3, 2).T
    assert clo[0] == pytest.approx(-35.5, abs=0.01) and chi[0] == pytest.approx(-32.5, abs=0.01)
    assert mask_surface(np.zeros(grid.shape, bool), grid).n_points == 0


def test_iso_surface_of_dose_on_rotated_grid():
    d = _rot([0.2, 0.4, 1.0], 30.0) @ np.diag([1.0, -1.0, 1.0])
    size, sp = np.array([40, 36, 30]), np.array([1.0, 1.5, 1.25])
    origin = np.array([3.0, -2.0, 1.0]) - d @ ((size - 1) / 2 * sp)
    grid = Grid(origin, sp, size, d)
    dose = 200.0 - 4.0 * np.linalg.norm(grid.voxel_centers_mm() - [3.0, -2.0, 1.0], axis=-1)
    s = iso_surface(dose, grid, 160.0)  # r = 10 mm
    r = np.linalg.norm(np.asarray(s.points) - [3.0, -2.0, 1.0], axis=1)
    assert s.n_points > 200 and abs(r.mean() - 10.0) < 0.2 and r.max() - r.min() < 0.6
    assert iso_surface(dose, grid, 500.0).n_points == 0


# --------------------------------------------------------------------------- seeds
def test_single_seed_capsule_extent_along_and_across_a_tilted_axis():
    axis = np.array([1.0, 2.0, -3.0]) / np.sqrt(14.0)
    p = np.array([4.0, -7.0, 11.0])
    cap = seed_capsules([p], [axis * 3.0], length_mm=4.5, diameter_mm=0.8)
    rel = np.asarray(cap.points) - p
    along = rel @ axis
    across = np.linalg.norm(rel - along[:, None] * axis, axis=1)
    assert along.max() - along.min() == pytest.approx(4.5, abs=1e-9)
    assert along.max() == pytest.approx(2.25, abs=1e-9)  # centred on the seed
    assert across.max() == pytest.approx(0.4, abs=1e-9)  # 0.8 mm diameter
    assert _signed_volume(cap) > 0.9 * (np.pi * 0.16 * 3.7 + 4.0 / 3.0 * np.pi * 0.064)
    assert cap.is_manifold


def test_seed_capsules_many_seeds_each_aligned():
    rng = np.random.default_rng(3)
    n = 60
    pos = rng.uniform(-30, 30, (n, 3))
    axes = rng.normal(size=(n, 3))
    axes[0] = (0.0, 0.0, -1.0)  # anti-parallel to the template axis
    axes[1] = (0.0, 0.0, 1.0)
    cap = seed_capsules(pos, axes)
    per = cap.n_cells // n
    assert cap.n_cells == per * n and np.bincount(cap.cell_data["seed"]).tolist() == [per] * n
    pts = np.asarray(cap.points).reshape(n, -1, 3)
    unit = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    along = np.einsum("npk,nk->np", pts - pos[:, None], unit)
    np.testing.assert_allclose(along.max(axis=1), 2.25, atol=1e-9)
    np.testing.assert_allclose(along.min(axis=1), -2.25, atol=1e-9)
    np.testing.assert_allclose(pts.mean(axis=1), pos, atol=1e-9)


# -------------------------------------------------------------------------- camera
def test_camera_presets_in_lps():
    c = np.array([1.0, 2.0, 3.0])
    for view, (towards, up) in CAMERAS.items():
        cam = camera_for_view(view, c, 50.0)
        d = np.asarray(cam["position"]) - c
        np.testing.assert_allclose(d / np.linalg.norm(d), np.asarray(towards) / np.linalg.norm(towards), atol=1e-12)
        assert abs(np.dot(cam["view_up"], d)) < 1e-9
    assert np.allclose(camera_for_view("anterior", c, 50)["position"][:2], [1.0, 2.0 - 50 / np.tan(np.radians(15))])
    assert tuple(camera_for_view("superior", c, 50)["view_up"]) == (0.0, -1.0, 0.0)  # anterior up
    assert set(VIEWS) == set(CAMERAS) and set(DEFAULT_VIEWS) <= set(VIEWS)


def _centroid(img, overlay, colour):
    hit = _near_hue(_hsv(img), colour) & ~overlay
    rows, cols = np.nonzero(hit)
    assert rows.size > 40, f"{colour} not found ({rows.size} pixels)"
    h, w = img.shape[:2]
    return (cols.mean() - w / 2) / w, (rows.mean() - h / 2) / h  # > 0: image right / image down


@pytest.mark.parametrize("view, marker, expect", [
    ("anterior", "aorta", "right"),  # patient left on image right when facing the patient
    ("anterior", "canal", "up"),  # superior up
    ("posterior", "aorta", "left"),
    ("left", "cord", "left"),  # from the patient's left: anterior on image left
    ("left", "canal", "up"),
    ("right", "cord", "right"),
    ("superior", "cord", "up"),  # from the head: anterior up
    ("superior", "aorta", "left"),  # ... and patient left on image left
    ("oblique", "canal", "up"),
])
def test_camera_view_puts_markers_on_the_right_side(shots, view, marker, expect):
    imgs, overlay, _ = shots
    colour = structure_color(marker, "oar")
    x, y = _centroid(imgs[view], overlay, colour)
    side = {"right": x > 0.12, "left": x < -0.12, "up": y < -0.12, "down": y > 0.12}[expect]
    assert side, f"{view}: {marker} at image offset ({x:.2f}, {y:.2f}), expected {expect}"
    # the other axis: the marker is centred (the camera looks straight at the target)
    other = y if expect in ("right", "left") else x
    assert abs(other) < 0.06, (view, marker, x, y)


def test_render_shows_the_100pct_isodose_and_is_not_trivial(shots):
    imgs, overlay, mm_per_px = shots
    img = imgs["anterior"]
    assert img.shape == (WINDOW[1], WINDOW[0], 3)
    # translucent red seen through the 50 % (blue) shell drifts a little toward magenta
    red = _near_hue(_hsv(img), isodose_color(100), tol=0.07, min_sat=0.45) & ~overlay
    rows, cols = np.nonzero(red)
    assert rows.size > 300, rows.size
    # the 100 % isodose is a 12 mm sphere around the target, i.e. the image centre
    h, w = img.shape[:2]
    assert abs(cols.mean() - w / 2) < 0.03 * w and abs(rows.mean() - h / 2) < 0.03 * h
    r_mm = np.hypot(cols + 0.5 - w / 2, rows + 0.5 - h / 2) * mm_per_px
    assert 11.0 < np.percentile(r_mm, 98) < 13.5, np.percentile(r_mm, 98)
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 1000


def test_without_dose_there_is_no_isodose(case):
    ct, ss, plan, _, _ = case
    pl = build_scene(plan, ct, ss, off_screen=True, window_size=WINDOW, view="anterior")
    try:
        img = np.asarray(pl.screenshot(return_img=True))
        overlay = _overlay_mask(pl, img.shape)
    finally:
        pl.close()
    assert (_near_hue(_hsv(img), isodose_color(100), tol=0.07, min_sat=0.45) & ~overlay).sum() < 20
    assert (_near_hue(_hsv(img), structure_color("aorta", "oar")) & ~overlay).sum() > 40


def test_scene_content(case):
    ct, ss, plan, dgrid, dose = case
    cement = Structure("cement", "oar", ss["cord"].mask, ss["cord"].grid)
    pl = build_scene(plan, ct, ss, dgrid, dose, cement=cement, off_screen=True, window_size=(64, 64))
    try:
        names = set(pl.actors)
        legend = [pl.legend.GetEntryString(i) for i in range(pl.legend.GetNumberOfEntries())]
        seeds = pl.actors["seeds"].mapper.dataset
        pvp_tubes = pl.actors["PVP needles:tubes"].mapper.dataset
    finally:
        pl.close()
    expected = {"bone", "structure:target", "structure:aorta", "structure:cord", "structure:canal", "cement",
                "seeds", "seed needles:tubes", "seed needles:entries", "seed needles-labels", "PVP needles:tubes",
                "PVP needles:entries", "PVP needles-labels", "isodose:50", "isodose:100", "isodose:150"}
    assert expected <= names
    assert "structure:body" not in names  # role BODY is not drawn
    assert "isodose:200" not in names  # 240 Gy is above the maximum dose (200 Gy)
    assert legend[:5] == ["bone (CT > 250 HU)", "target", "aorta", "cord", "canal"]
    assert any(t.startswith("cement") for t in legend) and "seeds (3)" in legend and "PVP needles (1)" in legend
    assert [t for t in legend if "isodose" in t] == [f"{p} % isodose ({p * 1.2:g} Gy)" for p in (50, 100, 150, 200)]
    np.testing.assert_allclose(np.asarray(seeds.center), plan.positions_mm.mean(axis=0), atol=0.5)
    assert np.bincount(seeds.cell_data["seed"]).size == 3
    # the PVP tube runs from its entry to its tip
    lo, hi = np.asarray(pvp_tubes.bounds).reshape(3, 2).T
    assert lo[1] == pytest.approx(-4.0, abs=0.15) and hi[1] == pytest.approx(60.0, abs=0.15)
    assert lo[0] == pytest.approx(-12.0 - 0.6, abs=0.1) and hi[0] == pytest.approx(-4.0 + 0.6, abs=0.1)


def test_show_builds_an_on_screen_scene(case, monkeypatch):
    from seedplan.viz.scene import show

    ct, ss, plan, _, _ = case
    seen = []

    def fake_show(self, *a, **k):
        seen.append((self.off_screen, sorted(n for n in self.actors if n.startswith("structure:"))))
        self.close()

    monkeypatch.setattr(pv.Plotter, "show", fake_show)
    show(plan, ct, ss, window_size=(64, 64), off_screen=True)
    assert seen == [(False, ["structure:aorta", "structure:canal", "structure:cord", "structure:target"])]


# --------------------------------------------------------------------- render_views
def test_render_views_writes_pngs_atomically(case, tmp_path, monkeypatch):
    from PIL import Image

    ct, ss, plan, dgrid, dose = case
    cement = Structure("cement", "oar", ss["target"].mask, ss["target"].grid)
    out = tmp_path / "png"
    paths = render_views(plan, ct, ss, out, dgrid, dose, cement=cement, views=("left", "superior"),
                         prefix="case", window_size=(320, 240))
    assert list(paths) == ["left", "superior"]
    assert [p.name for p in paths.values()] == ["case_left.png", "case_superior.png"]
    assert sorted(p.name for p in out.iterdir()) == ["case_left.png", "case_superior.png"]
    for p in paths.values():
        with Image.open(p) as im:
            assert im.size == (320, 240) and im.format == "PNG"

    # a failure while writing leaves the previous file untouched and no temporary file behind
    (out / "case_left.png").write_bytes(b"previous")
    real_save = Image.Image.save

    def failing_save(self, fp, *a, **k):
        real_save(self, fp, *a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError):
        render_views(plan, ct, ss, out, views=("left",), prefix="case", window_size=(64, 64))
    assert (out / "case_left.png").read_bytes() == b"previous"
    assert sorted(p.name for p in out.iterdir()) == ["case_left.png", "case_superior.png"]


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(plan="plan.json"), InputTypeError, "plan"),
    (dict(ct=np.zeros((3, 3, 3))), InputTypeError, "ct"),
    (dict(structures=[1, 2]), InputTypeError, "structures"),
    (dict(cement=np.zeros((3, 3, 3), bool)), InputTypeError, "cement"),
    (dict(dose_Gy=None), InputError, "dose_grid and dose_Gy"),
    (dict(dose_Gy=np.zeros((2, 2, 2))), InputError, "dose_Gy"),
    (dict(dose_grid="grid"), InputTypeError, "dose_grid"),
    (dict(levels_pct=(100, -5)), InputError, "levels_pct"),
    (dict(window_size=(0, 100)), InputError, "window_size"),
    (dict(bone_hu="bone"), InputError, "bone_hu"),
    (dict(view="front"), InputError, "front"),
])
def test_build_scene_rejects_bad_arguments(case, kwargs, exc, words):
    ct, ss, plan, dgrid, dose = case
    args = dict(plan=plan, ct=ct, structures=ss, dose_grid=dgrid, dose_Gy=dose)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        build_scene(args.pop("plan"), args.pop("ct"), args.pop("structures"), args.pop("dose_grid"),
                    args.pop("dose_Gy"), off_screen=True, **args)
    assert isinstance(info.value, SeedplanError)
    assert words in str(info.value)


def test_unknown_view_names_are_rejected(case, tmp_path):
    ct, ss, plan, _, _ = case
    with pytest.raises(InputError, match="views.*'front'.*anterior"):
        render_views(plan, ct, ss, tmp_path, views=("anterior", "front"))
    with pytest.raises(InputError, match="prefix"):
        render_views(plan, ct, ss, tmp_path, prefix="a/b")
    with pytest.raises(InputError, match="unknown view 'top'"):
        camera_for_view("top", (0, 0, 0), 10.0)
    with pytest.raises(InputError, match="axes"):
        seed_capsules([[0, 0, 0]], [[0, 0, 0]])
    with pytest.raises(InputError, match="shape"):
        seed_capsules([[0, 0, 0]], [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(InputError, match="mask has shape"):
        mask_surface(np.zeros((2, 2, 2), bool), Grid((0, 0, 0), (1, 1, 1), (3, 3, 3)))
    with pytest.raises(InputTypeError, match="grid"):
        mask_surface(np.zeros((2, 2, 2), bool), "grid")
    assert list(tmp_path.iterdir()) == []
