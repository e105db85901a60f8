"""Shared helpers for evaluation tests: analytic masks and structures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from seedplan.geometry import Grid


@dataclass
class Structure:
    name: str
    role: Any
    mask: np.ndarray
    grid: Grid


def sphere_mask(grid: Grid, centre, radius_mm: float) -> np.ndarray:
    c = grid.voxel_centers_mm()
    return ((c - np.asarray(centre, float)) ** 2).sum(-1) <= radius_mm**2


def z_cylinder_mask(grid: Grid, radius_mm: float, axis_xy=(0.0, 0.0)) -> np.ndarray:
    c = grid.voxel_centers_mm()
    return (c[..., 0] - axis_xy[0]) ** 2 + (c[..., 1] - axis_xy[1]) ** 2 <= radius_mm**2


def point_source(src, k: float = 1000.0, r_min_mm: float = 0.05):
    src = np.asarray(src, float)

    def dose_at(p):
        r2 = ((np.asarray(p, float) - src) ** 2).sum(-1)
        return k / np.maximum(r2, r_min_mm**2)

    return dose_at
