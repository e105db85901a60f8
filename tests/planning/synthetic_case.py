"""A small synthetic vertebra case for planner tests (no phantom needed)."""

import numpy as np

from seedplan import Grid
from seedplan.imaging.ct import CTImage
from seedplan.imaging.structures import Role, Structure, StructureSet


def make_case(spacing_mm: float = 1.5, lesion_diameter_mm: float = 30.0):
    """Prone torso cross-section: body ellipse, vertebral body (bone shell), lesion, canal, aorta, pedicles.

    LPS: +y posterior.  The vertebral body is centred at the origin, the canal behind it (+y).
    """
    lo = np.array([-120.0, -90.0, -45.0])
    hi = np.array([120.0, 110.0, 45.0])
    grid = Grid.from_bounds(lo, hi, spacing_mm)
    P = grid.voxel_centers_mm()
    x, y, z = P[..., 0], P[..., 1], P[..., 2]
    body = (x / 115) ** 2 + ((y - 10) / 95) ** 2 <= 1
    vb = ((x / 24) ** 2 + (y / 18) ** 2 <= 1) & (np.abs(z) <= 14)
    vb_core = ((x / 23) ** 2 + (y / 17) ** 2 <= 1) & (np.abs(z) <= 13)
    canal = (x**2 + (y - 30) ** 2 <= 8**2)
    cord = (x**2 + (y - 30) ** 2 <= 4**2)
    ped_l = (np.abs(x - 15) <= 5) & (y >= 12) & (y <= 32) & (np.abs(z) <= 7)
    ped_r = (np.abs(x + 15) <= 5) & (y >= 12) & (y <= 32) & (np.abs(z) <= 7)
    ring = (((x / 16) ** 2 + ((y - 32) / 14) ** 2) <= 1) & ~canal & (y > 22)
    aorta = ((x - 15) ** 2 + (y + 30) ** 2 <= 11**2)
    r = lesion_diameter_mm / 2
    lesion = (x**2 + (y + 2) ** 2 + z**2 <= r**2) & vb
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    hu[body] = 40
    hu[vb] = 800
    hu[vb_core] = 200
    hu[ped_l | ped_r] = 700
    hu[ring & body] = 700
    hu[canal] = 10
    hu[cord] = 35
    hu[aorta] = 45
    hu[lesion] = 30
    ct = CTImage(grid=grid, hu=hu, series_uid="1.2.3.4", description="synthetic vertebra")
    structures = StructureSet(
        [
            Structure("target", Role.TARGET, lesion, grid),
            Structure("vertebral_body_L3", Role.VERTEBRAL_BODY, vb, grid),
            Structure("pedicle_left_L3", Role.BONE if hasattr(Role, "BONE") else Role.AVOIDANCE, ped_l, grid),
            Structure("pedicle_right_L3", Role.BONE if hasattr(Role, "BONE") else Role.AVOIDANCE, ped_r, grid),
            Structure("spinal_canal", Role.AVOIDANCE, canal, grid),
            Structure("cord", Role.OAR, cord, grid),
            Structure("aorta", Role.OAR, aorta, grid),
            Structure("body", Role.BODY, body, grid),
        ]
    )
    return ct, structures
