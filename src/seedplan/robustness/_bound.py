"""An upper bound of the dose anywhere in a box, for the search of an organ's hottest samples.

``bound_table(model, formalism)`` tabulates ``T[i, b]``: the largest total
dose per U (Gy/U) of one seed at a distance of at least ``i * STEP_MM`` and
at an angle to the seed's axis line within bin ``b`` (``ANGLE_BIN_DEG`` wide,
0-90 deg, the dose being symmetric about 90 deg), from the exact kernel on a
``STEP_MM`` x ``ANGLE_STEP_DEG`` lattice up to ``MAX_MM`` (the running maximum
from the far end, then over each bin with its edges), times ``SAFETY``.

``box_bounds`` bounds the dose of a set of seeds in each box: per seed, the
box's distance to it (the gap, 0 inside), the range of angles its points make
with the seed's axis line (from the range of the axial coordinate over the box
and of the distance), and the table's largest value over those bins.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..dose import total_dose

__all__ = ["ANGLE_BIN_DEG", "ANGLE_STEP_DEG", "MAX_MM", "SAFETY", "STEP_MM", "bound_table", "box_bounds", "cos_edges"]

#: Radial step and reach of the lattice (mm); farther pairs use the last row (the dose keeps falling).
STEP_MM = 0.2
MAX_MM = 300.0
#: Angular step of the lattice and width of the table's angle bins (deg).
ANGLE_STEP_DEG = 0.5
ANGLE_BIN_DEG = 5.0
#: Between the lattice nodes the dose exceeds the lattice maximum by at most 0.09 % (largest dose / bound
#: over 8 M random points for every shipped seed model and formalism); the tabulated kernel differs from the
#: exact one by < 5e-5.
SAFETY = 1.01


def bound_table(model, formalism: str) -> np.ndarray:
    """``T[i, b]`` (Gy per U): an upper bound of one seed's total dose at >= ``i * STEP_MM``, angle in bin ``b``."""
    r = np.arange(0.0, MAX_MM + STEP_MM / 2, STEP_MM)
    theta_deg = np.arange(0.0, 180.0 + ANGLE_STEP_DEG / 2, ANGLE_STEP_DEG)
    th = np.radians(theta_deg)
    rr, tt = np.meshgrid(r, th, indexing="ij")
    pts = np.stack([rr * np.sin(tt), np.zeros_like(rr), rr * np.cos(tt)], axis=-1).reshape(-1, 3)
    dose = total_dose(pts, np.zeros((1, 3)), np.ones(1), source=model, axes=np.array([[0.0, 0.0, 1.0]]),
                      formalism=formalism, exact=True).reshape(len(r), len(th))
    beyond = np.maximum.accumulate(dose[::-1], axis=0)[::-1]      # max over r' >= r, per angle
    folded = np.minimum(theta_deg, 180.0 - theta_deg)               # angle to the axis line, 0-90
    n_bins = round(90.0 / ANGLE_BIN_DEG)
    table = np.empty((len(r), n_bins))
    for b in range(n_bins):
        lo, hi = b * ANGLE_BIN_DEG, (b + 1) * ANGLE_BIN_DEG
        cols = (folded >= lo - 1e-9) & (folded <= hi + 1e-9)
        table[:, b] = beyond[:, cols].max(axis=1)
    return np.ascontiguousarray(table * SAFETY)


@nb.njit(cache=True, boundscheck=False, fastmath=True)
def box_bounds(lo, hi, seeds, axes, strengths, table, inv_step, cos_edges):  # pragma: no cover - numba
    """Per box ``(lo[c], hi[c])`` (mm), an upper bound of the summed dose of the seeds anywhere in it.

    ``seeds``, ``axes`` (M, 3), ``strengths`` (M,) U; ``table`` from :func:`bound_table`;
    ``cos_edges[i]`` = cos(i * ANGLE_BIN_DEG) for i = 1 .. bins - 1 (decreasing): an angle psi is in
    bin ``#{i: cos_edges[i] >= cos(psi)}``.  Rounding is far inside :data:`SAFETY`.
    """
    n_box = lo.shape[0]
    n_seed = seeds.shape[0]
    n_row = table.shape[0]
    n_edge = cos_edges.shape[0]
    out = np.zeros(n_box)
    for c in range(n_box):
        total = 0.0
        for j in range(n_seed):
            gap2 = 0.0
            far2 = 0.0
            u_lo = 0.0
            u_hi = 0.0
            for k in range(3):
                a = lo[c, k] - seeds[j, k]
                b = hi[c, k] - seeds[j, k]
                g = max(a, 0.0) + max(-b, 0.0)
                gap2 += g * g
                f = max(abs(a), abs(b))
                far2 += f * f
                ua = axes[j, k] * a
                ub = axes[j, k] * b
                u_lo += min(ua, ub)
                u_hi += max(ua, ub)
            r_min = math.sqrt(gap2)
            abs_lo = 0.0 if u_lo <= 0.0 <= u_hi else min(abs(u_lo), abs(u_hi))
            abs_hi = max(abs(u_lo), abs(u_hi))
            cos_hi = 1.0 if abs_hi >= r_min else abs_hi / r_min   # largest |cos| -> smallest angle
            cos_lo = abs_lo / math.sqrt(far2) if far2 > 0.0 else 0.0
            b0 = 0
            b1 = 0
            for i in range(n_edge):
                b0 += cos_edges[i] >= cos_hi
                b1 += cos_edges[i] >= cos_lo
            row = min(int(r_min * inv_step), n_row - 1)
            best = 0.0
            for b in range(b0, b1 + 1):
                best = max(best, table[row, b])
            total += strengths[j] * best
        out[c] = total
    return out


def cos_edges(n_bins: int) -> np.ndarray:
    """``cos(i * ANGLE_BIN_DEG)`` for the inner bin edges i = 1 .. n_bins - 1."""
    return np.cos(np.radians(np.arange(1, n_bins) * ANGLE_BIN_DEG))
