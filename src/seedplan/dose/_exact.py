"""Exact TG-43 evaluation, compiled with numba.

Plain functions on arrays.  Lengths inside this module are in **cm** (the
TG-43 tables' unit); the public wrappers convert from mm once.

Formalism codes: 0 = "2D" (line source, F(r, theta)), 1 = "1D" (line-source
geometry, phi_an(r)), 2 = "1D-point" (point-source geometry, g_P, phi_an).

Interpolation rules (TG-43U1 App. C and TG-43U1S1 Sec. III.C, as summarised
in the project's reference notes):

* g_L and g_P: log-linear between nodes, nearest neighbour below r_min, a
  single exponential through the two outermost nodes beyond r_max;
* F(r, theta): bilinear in (r, theta in degrees), nearest neighbour in r
  outside the table, mirrored for theta > 90 deg;
* phi_an(r): linear, nearest neighbour outside the table.

Inside the capsule TG-43 is undefined.  A point inside the capsule (a
cylinder of the capsule's radius with hemispherical ends) is moved radially
to the capsule surface and evaluated there, so the dose is finite and
continuous everywhere.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba as nb
import numpy as np

FORMALISMS = {"2D": 0, "1D": 1, "1D-POINT": 2}


class ModelArrays(NamedTuple):
    """The numeric content of a :class:`~seedplan.sources.SeedModel` for the kernels.

    ``scalars`` holds ``[Lambda, L_cm, capsule_half_length_cm,
    capsule_radius_cm, G_L(1 cm, 90 deg)]``.
    """

    g_r: np.ndarray
    log_g: np.ndarray
    gp_r: np.ndarray
    log_gp: np.ndarray
    f_r: np.ndarray
    f_t: np.ndarray
    f: np.ndarray
    phi_r: np.ndarray
    phi: np.ndarray
    scalars: np.ndarray


def model_arrays(model) -> ModelArrays:
    """Pack a seed model's tables as contiguous float64 arrays."""
    L = model.active_length_cm
    g0 = 2.0 * math.atan(L / 2.0) / L
    return ModelArrays(
        np.ascontiguousarray(model.g_r_cm, dtype=np.float64),
        np.log(np.asarray(model.g_L, dtype=np.float64)),
        np.ascontiguousarray(model.gP_r_cm, dtype=np.float64),
        np.log(np.asarray(model.g_P, dtype=np.float64)),
        np.ascontiguousarray(model.F_r_cm, dtype=np.float64),
        np.ascontiguousarray(model.F_theta_deg, dtype=np.float64),
        np.ascontiguousarray(model.F, dtype=np.float64),
        np.ascontiguousarray(model.phi_r_cm, dtype=np.float64),
        np.ascontiguousarray(model.phi_an, dtype=np.float64),
        np.array([model.dose_rate_constant_cGy_h_U, L, model.capsule_length_mm / 20.0, model.capsule_diameter_mm / 20.0, g0]),
    )


@nb.njit(cache=True, inline="always")
def _segment(x, nodes):
    """Index i with nodes[i] <= x < nodes[i+1]; x is inside the table."""
    lo = 0
    hi = nodes.shape[0] - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if nodes[mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo


@nb.njit(cache=True)
def radial_log_interp(r, r_nodes, log_g):
    """g(r): log-linear inside, nearest neighbour below, exponential tail above."""
    n = r_nodes.shape[0]
    if r <= r_nodes[0]:
        return math.exp(log_g[0])
    if r >= r_nodes[n - 1]:
        slope = (log_g[n - 1] - log_g[n - 2]) / (r_nodes[n - 1] - r_nodes[n - 2])
        return math.exp(log_g[n - 1] + slope * (r - r_nodes[n - 1]))
    i = _segment(r, r_nodes)
    t = (r - r_nodes[i]) / (r_nodes[i + 1] - r_nodes[i])
    return math.exp(log_g[i] + t * (log_g[i + 1] - log_g[i]))


@nb.njit(cache=True)
def linear_clamped(x, nodes, values):
    """Linear interpolation, nearest neighbour outside the table."""
    n = nodes.shape[0]
    if x <= nodes[0]:
        return values[0]
    if x >= nodes[n - 1]:
        return values[n - 1]
    i = _segment(x, nodes)
    t = (x - nodes[i]) / (nodes[i + 1] - nodes[i])
    return values[i] + t * (values[i + 1] - values[i])


@nb.njit(cache=True)
def anisotropy_2d(r, theta_deg, f_r, f_t, f):
    """F(r, theta): bilinear, nearest neighbour in r outside, theta folded into [0, 90]."""
    if theta_deg > 90.0:
        theta_deg = 180.0 - theta_deg
    nr = f_r.shape[0]
    nt = f_t.shape[0]
    if theta_deg >= f_t[nt - 1]:
        j = nt - 2
        u = 1.0
    else:
        j = _segment(theta_deg, f_t)
        u = (theta_deg - f_t[j]) / (f_t[j + 1] - f_t[j])
    if nr == 1 or r <= f_r[0]:
        return f[0, j] + u * (f[0, j + 1] - f[0, j])
    if r >= f_r[nr - 1]:
        return f[nr - 1, j] + u * (f[nr - 1, j + 1] - f[nr - 1, j])
    i = _segment(r, f_r)
    t = (r - f_r[i]) / (f_r[i + 1] - f_r[i])
    a = f[i, j] + u * (f[i, j + 1] - f[i, j])
    b = f[i + 1, j] + u * (f[i + 1, j + 1] - f[i + 1, j])
    return a + t * (b - a)


@nb.njit(cache=True)
def geometry_line(z, y, L):
    """Line-source geometry function G_L at axial z >= ... and radial y >= 0 (cm).

    beta = atan2(y, z - L/2) - atan2(y, z + L/2) written as the single
    atan2(y L, r^2 - L^2/4), which is exact, free of cancellation and tends
    to the on-axis limit 1 / (r^2 - L^2/4) as y -> 0.
    """
    r2 = z * z + y * y
    d = r2 - 0.25 * L * L
    if y * L <= 1e-12 * r2:
        return 1.0 / d
    beta = math.atan2(y * L, d)
    return beta / (L * y)


@nb.njit(cache=True)
def project_out_of_capsule(z, y, half_length, radius):
    """Move a point (z along the axis, y >= 0 away) inside the capsule onto its surface."""
    h = half_length - radius
    if h < 0.0:
        h = 0.0
    zc = z
    if zc > h:
        zc = h
    elif zc < -h:
        zc = -h
    dz = z - zc
    d2 = dz * dz + y * y
    if d2 >= radius * radius:
        return z, y
    if d2 > 0.0:
        f = radius / math.sqrt(d2)
        return zc + dz * f, y * f
    return z, radius


@nb.njit(cache=True)
def rate_per_U(z, y, formalism, g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars):
    """Dose rate (cGy/h) per unit air-kerma strength at axial z, radial y >= 0 (cm)."""
    lam = scalars[0]
    L = scalars[1]
    z, y = project_out_of_capsule(z, y, scalars[2], scalars[3])
    r = math.sqrt(z * z + y * y)
    if formalism == 0:
        theta = math.degrees(math.atan2(y, abs(z)))
        return lam * geometry_line(z, y, L) / scalars[4] * radial_log_interp(r, g_r, log_g) * anisotropy_2d(
            r, theta, f_r, f_t, f
        )
    if formalism == 1:
        return lam * geometry_line(0.0, r, L) / scalars[4] * radial_log_interp(r, g_r, log_g) * linear_clamped(
            r, phi_r, phi
        )
    return lam / (r * r) * radial_log_interp(r, gp_r, log_gp) * linear_clamped(r, phi_r, phi)


@nb.njit(cache=True, inline="always")
def _local(px, py, pz, sx, sy, sz, ax, ay, az):
    dx = px - sx
    dy = py - sy
    dz = pz - sz
    z = dx * ax + dy * ay + dz * az
    qx = dx - z * ax
    qy = dy - z * ay
    qz = dz - z * az
    return z, math.sqrt(qx * qx + qy * qy + qz * qz)


@nb.njit(parallel=True, cache=True)
def dose_rate_points(points_cm, seeds_cm, strength_U, axes, formalism, cutoff_cm,
                     g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars):
    """Exact summed dose rate (cGy/h) at each point; parallel over points."""
    n = points_cm.shape[0]
    m = seeds_cm.shape[0]
    out = np.zeros(n)
    cut2 = cutoff_cm * cutoff_cm
    for i in nb.prange(n):
        acc = 0.0
        for j in range(m):
            dx = points_cm[i, 0] - seeds_cm[j, 0]
            dy = points_cm[i, 1] - seeds_cm[j, 1]
            dz = points_cm[i, 2] - seeds_cm[j, 2]
            if dx * dx + dy * dy + dz * dz > cut2:
                continue
            z, y = _local(points_cm[i, 0], points_cm[i, 1], points_cm[i, 2], seeds_cm[j, 0], seeds_cm[j, 1],
                          seeds_cm[j, 2], axes[j, 0], axes[j, 1], axes[j, 2])
            acc += strength_U[j] * rate_per_U(z, y, formalism, g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars)
        out[i] = acc
    return out


@nb.njit(parallel=True, cache=True)
def influence_points(points_cm, seeds_cm, axes, formalism, g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars):
    """Dose-rate influence matrix A[i, j] (cGy/h per U) of seed j at point i."""
    n = points_cm.shape[0]
    m = seeds_cm.shape[0]
    out = np.empty((n, m))
    for i in nb.prange(n):
        for j in range(m):
            z, y = _local(points_cm[i, 0], points_cm[i, 1], points_cm[i, 2], seeds_cm[j, 0], seeds_cm[j, 1],
                          seeds_cm[j, 2], axes[j, 0], axes[j, 1], axes[j, 2])
            out[i, j] = rate_per_U(z, y, formalism, g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars)
    return out


@nb.njit(parallel=True, cache=True)
def rate_table_polar(r_cm, theta_deg, formalism, g_r, log_g, gp_r, log_gp, f_r, f_t, f, phi_r, phi, scalars):
    """Dose rate per U on a polar (r, theta) lattice, shape (len(r), len(theta))."""
    nr = r_cm.shape[0]
    nt = theta_deg.shape[0]
    out = np.empty((nr, nt))
    for i in nb.prange(nr):
        for j in range(nt):
            t = math.radians(theta_deg[j])
            out[i, j] = rate_per_U(r_cm[i] * math.cos(t), r_cm[i] * math.sin(t), formalism, g_r, log_g, gp_r,
                                   log_gp, f_r, f_t, f, phi_r, phi, scalars)
    return out
