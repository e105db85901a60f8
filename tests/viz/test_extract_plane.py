"""extract_plane interpolates only the voxels a plane can reach (and, in a mask, only near the mask): the values
are those of interpolating the whole volume, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from seedplan.geometry import Grid
from seedplan.viz.slices import extract_plane, render_slice_views, slice_figure


def _whole_volume(volume, grid, origin_mm, u_dir, v_dir, u_mm, v_mm, *, order=1, fill=np.nan):
    """The definition: the whole volume, converted to float, interpolated at every sample."""
    u = np.asarray(u_dir, dtype=float) / np.linalg.norm(u_dir)
    v = np.asarray(v_dir, dtype=float) / np.linalg.norm(v_dir)
    us, vs = np.asarray(u_mm, dtype=float), np.asarray(v_mm, dtype=float)
    pts = np.asarray(origin_mm, dtype=float)[None, None] + us[None, :, None] * u + vs[:, None, None] * v
    ijk = grid.world_to_index(pts)
    coords = np.stack([ijk[..., 2], ijk[..., 1], ijk[..., 0]])
    vol = np.asarray(volume)
    data = vol if vol.dtype.kind == "f" else vol.astype(np.float32)
    out = ndimage.map_coordinates(data, coords.reshape(3, -1), order=order, mode="nearest")
    out = out.reshape(ijk.shape[:2]).astype(float)
    inside = np.all((ijk >= -0.5) & (ijk <= np.array(grid.size, dtype=float) - 0.5), axis=-1)
    out[~inside] = fill
    return out


def _volume(rng, shape, kind):
    if kind == "mask":
        return rng.random(shape) < 0.5
    if kind == "hu":
        return rng.integers(-1000, 2000, shape).astype(np.int16)
    if kind == "dose":
        return rng.random(shape) * 100.0
    # a few small blobs in zeros (a structure mask; or a float volume with NaN and inf in it)
    vol = np.zeros(shape, dtype=bool if kind == "sparse mask" else float)
    for _ in range(int(rng.integers(0, 3))):
        c = [int(rng.integers(0, n)) for n in shape]
        r = int(rng.integers(0, 3))
        box = tuple(slice(max(0, ci - r), ci + r + 1) for ci in c)
        vol[box] = True if kind == "sparse mask" else rng.choice([1.0, np.nan, np.inf, -2.5])
    return vol


_KINDS = ["mask", "hu", "dose", "sparse mask", "sparse float"]


@pytest.mark.parametrize("kind", _KINDS)
def test_planes_are_the_whole_volumes_interpolation(kind):
    rng = np.random.default_rng(_KINDS.index(kind))
    done = 0
    for _ in range(160):
        shape = tuple(int(n) for n in rng.integers(1, 22, 3))  # [z, y, x]
        direction = (Rotation.random(random_state=int(rng.integers(2**31))).as_matrix() if rng.random() < 0.4
                     else np.diag(rng.choice([-1.0, 1.0], 3)))
        grid = Grid(tuple(rng.uniform(-50, 50, 3)), tuple(rng.uniform(0.3, 3.0, 3)), shape[::-1], direction)
        vol = _volume(rng, shape, kind)
        corners = grid.corners_mm()
        origin = rng.uniform(corners.min(axis=0) - 10, corners.max(axis=0) + 10)  # also planes beside the volume
        u = rng.normal(size=3) if rng.random() < 0.3 else np.eye(3)[rng.integers(3)]
        v = rng.normal(size=3) if rng.random() < 0.3 else np.eye(3)[rng.integers(3)]
        if np.linalg.norm(np.cross(u, v)) < 1e-3:
            continue
        us, vs = np.arange(-40, 40, rng.uniform(0.3, 2.0)), np.arange(-30, 35, rng.uniform(0.3, 2.0))
        for order, fill in ((1, np.nan), (0, -5.0), (3, 0.0)):
            got = extract_plane(vol, grid, origin, u, v, us, vs, order=order, fill=fill)
            want = _whole_volume(vol, grid, origin, u, v, us, vs, order=order, fill=fill)
            assert got.shape == want.shape and got.dtype == want.dtype
            assert np.array_equal(got, want, equal_nan=True) and np.array_equal(np.signbit(got), np.signbit(want))
        done += 1
    assert done > 100


def test_the_views_drawn_together_are_the_views_drawn_one_by_one(tmp_path):
    """render_slice_views finds the target's centre and field of view once for its three views."""
    from seedplan.imaging import make_spine_phantom

    ph = make_spine_phantom(spacing_mm=3.0)
    paths = render_slice_views(ph.ct, ph.structures, None, None, None, tmp_path)
    for view, path in paths.items():
        fig = slice_figure(view, ph.ct, ph.structures)
        one = tmp_path / f"one_{view}.png"
        fig.savefig(one, format="png", dpi=fig.dpi, pil_kwargs={"compress_level": 3})
        assert one.read_bytes() == path.read_bytes(), view
