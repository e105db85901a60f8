"""Vertebroplasty (PVP) cement: materials, volume recommendation and a fill simulation.

Everything here cites ``/work/shared/reference/clinical_planning.md``:

* section 5 (cement-volume planning): Molloy, Mathis & Belkoff, Spine 2003;28:1549
  (16.2 % fill restored strength, 29.8 % stiffness, 120 VBs T6-L5) [V];
  Belkoff et al., Spine 2001;26:1537 (~2 mL thoracic / ~4 mL lumbar for strength) [R];
  Nieuwenhuijse et al., Spine 2012 (fill >= ~24 % with better pain relief) [R/?];
  reference study 2-9 mL, mean 4.5 mL thoracic / 6.0 mL lumbar [brief];
  metastases with PVP + 125I 1-5 mL per level, mean 2.8 / 3.1 mL (PMC3545348) [V];
  Baroud et al. 2004 cancellous permeability SI 4.45e-8 vs AP 3.44e-8 m^2 [V];
  max cement cross-section ratio and endplate contact metrics [V method].
* section 6 (125I attenuation, spectrum-weighted mu in cm^-1, xraylib/NIST [C]).

All numbers are configurable defaults; tagged [R]/[?] values are not verified.
"""

from __future__ import annotations

import heapq
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numba as nb
import numpy as np

from ..dose.materials import (
    CEMENT_MATERIALS,
    DEFAULT_CEMENT,
    PMMA,
    PMMA_BASO4_10,
    PMMA_BASO4_30,
    PMMA_ZRO2_15,
    CementMaterial,
    cement_material,
)
from ..errors import GeometryError, InputError, InputTypeError
from ..geometry import Grid
from ..imaging.ct import CTImage
from ..imaging.structures import Structure
from ..plan import CEMENT_MODEL_NAMES, PlanCement

__all__ = [
    "CementMaterial",
    "CEMENT_MATERIALS",
    "cement_material",
    "PMMA",
    "PMMA_BASO4_10",
    "PMMA_BASO4_30",
    "PMMA_ZRO2_15",
    "DEFAULT_CEMENT",
    "CementModel",
    "CementRecommendation",
    "COMBINED_WITH_SEEDS",
    "CEMENT_MODELS",
    "recommend_cement_volume",
    "CementResult",
    "simulate_cement",
    "cement_excludes_slots",
    "cross_section_ratios",
    "LEAK_FLAGS",
    "CementPlan",
    "plan_cement",
    "lesion_type_from_hu",
    "level_from_name",
    "BAROUD_SI_AP_RATIO",
]


# ======================================================================= recommendation
@dataclass(frozen=True)
class CementModel:
    """Fill-fraction model of the planned cement volume (section 5 defaults).

    ``V = target_fill_fraction * (V_VB - V_cavity) + lesion_fill_fraction * V_cavity``,
    clamped to ``[min_mL, max_mL]``; ``V_cavity`` is the lytic lesion inside the VB.

    Parameters
    ----------
    target_fill_fraction : float
        Fraction of the (non-cavity) VB to fill.  0.25: between Molloy 2003's 16.2 %
        (strength) and 29.8 % (stiffness), at Nieuwenhuijse 2012's >= 24 % [R/?].
    lesion_fill_fraction : float
        Fraction of a lytic cavity that cement fills (1.0: the cavity is filled).
    min_mL, max_mL : float
        Clamp range: the reference study's 2-9 mL.
    typical_thoracic_mL, typical_lumbar_mL : float
        Reference-study means (4.5 / 6.0 mL), reported for comparison.
    metastasis_range_mL : (float, float)
        PVP + 125I series range 1-5 mL per level (PMC3545348), reported.
    """

    target_fill_fraction: float = 0.25
    lesion_fill_fraction: float = 1.0
    min_mL: float = 2.0
    max_mL: float = 9.0
    typical_thoracic_mL: float = 4.5
    typical_lumbar_mL: float = 6.0
    metastasis_range_mL: tuple[float, float] = (1.0, 5.0)

    def __post_init__(self) -> None:
        for k in ("target_fill_fraction", "lesion_fill_fraction"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not (0 <= v <= 1):
                raise InputError(f"CementModel.{k} must be a fraction in [0, 1], got {v!r}")
        for k in ("min_mL", "max_mL", "typical_thoracic_mL", "typical_lumbar_mL"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InputError(f"CementModel.{k} must be a positive volume in mL, got {v!r}")
        if self.min_mL > self.max_mL:
            raise InputError(f"CementModel.min_mL ({self.min_mL}) must be <= max_mL ({self.max_mL})")


#: The combined procedure (PVP + 125I seeds in the same body): the seeds treat the lesion and the
#: cement restores strength.  Fill Molloy 2003's 16.2 % (strength) of the bone outside the lytic
#: cavity, not the cavity, clamped to the 1-5 mL per level of the PVP + 125I metastasis series
#: (mean 2.8 thoracic / 3.1 lumbar, PMC3545348) [V] (clinical_planning.md s.5).
COMBINED_WITH_SEEDS = CementModel(target_fill_fraction=0.162, lesion_fill_fraction=0.0, min_mL=1.0, max_mL=5.0)
#: Cement models by name (``PlanningOptions.cement_model``): ``"pvp"`` vertebroplasty alone
#: (:class:`CementModel` defaults), ``"combined"`` with seeds in the lesion.
CEMENT_MODELS: Mapping[str, CementModel] = MappingProxyType({"pvp": CementModel(), "combined": COMBINED_WITH_SEEDS})
assert set(CEMENT_MODELS) == set(CEMENT_MODEL_NAMES), "PlanningOptions validates cement_model against these names"


@dataclass(frozen=True)
class CementRecommendation:
    """Planned cement volume and how it was obtained (``reasoning`` is printable)."""

    volume_mL: float
    vb_volume_cm3: float
    lesion_volume_cm3: float
    fill_fraction: float
    clamped: bool
    reasoning: tuple[str, ...]

    def __str__(self) -> str:
        return "\n".join(self.reasoning)


def _mask_of(obj: Any, name: str, grid: Grid | None = None) -> tuple[np.ndarray, Grid]:
    if isinstance(obj, Structure):
        m, g = obj.mask, obj.grid
    else:
        if grid is None:
            raise InputTypeError(f"{name} must be a seedplan Structure, got {type(obj).__name__}")
        if obj is None:
            raise InputError(f"{name} is missing; give a boolean mask [z, y, x] on the grid")
        m, g = np.asarray(obj), grid
        if m.shape != grid.shape:
            raise GeometryError(f"{name} has shape {m.shape} but the grid expects {grid.shape} (z, y, x)")
        m = m.astype(bool)
    if grid is not None and isinstance(obj, Structure) and not g.same_geometry(grid):
        raise GeometryError(f"{name} ({getattr(obj, 'name', '')!r}) is not on the given grid")
    return m, g


def _region(level: str | None) -> str | None:
    if level is None:
        return None
    if not isinstance(level, str) or not level.strip():
        raise InputError(f"level must be a vertebral level like 'T8' or 'L3', or None; got {level!r}")
    c = level.strip().upper()[0]
    if c == "T":
        return "thoracic"
    if c == "L":
        return "lumbar"
    if c in ("C", "S"):
        return "cervical" if c == "C" else "sacral"
    raise InputError(f"level must start with C, T, L or S (e.g. 'T8', 'L3'), got {level!r}")


def recommend_cement_volume(
    vertebral_body: Structure,
    lesion: Structure | None = None,
    *,
    level: str | None = None,
    lesion_type: str = "lytic",
    model: CementModel = CementModel(),
) -> CementRecommendation:
    """Recommend a PVP cement volume from the VB and lesion volumes (section 5).

    Parameters
    ----------
    vertebral_body : Structure
        The treated vertebral body (cortex included).
    lesion : Structure, optional
        The metastasis; only its part inside the VB counts as a cavity.
    level : str, optional
        ``"T8"``, ``"L3"``...: selects the reference-study mean reported for comparison.
    lesion_type : {"lytic", "blastic"}
        A blastic (sclerotic) lesion is not a cavity: it counts as bone to fill.
    model : CementModel

    Returns
    -------
    CementRecommendation
    """
    if not isinstance(vertebral_body, Structure):
        raise InputTypeError(f"vertebral_body must be a seedplan Structure, got {type(vertebral_body).__name__}")
    if not isinstance(model, CementModel):
        raise InputTypeError(f"model must be a CementModel, got {type(model).__name__}")
    if lesion_type not in ("lytic", "blastic"):
        raise InputError(f"lesion_type must be 'lytic' or 'blastic', got {lesion_type!r}")
    region = _region(level)
    vb = vertebral_body.mask
    if not vb.any():
        raise InputError(f"vertebral body structure {vertebral_body.name!r} is empty; it must contain voxels")
    vv_cm3 = vertebral_body.grid.voxel_volume_mm3 / 1000.0
    v_vb = float(vb.sum()) * vv_cm3
    v_les = 0.0
    if lesion is not None:
        if not isinstance(lesion, Structure):
            raise InputTypeError(f"lesion must be a seedplan Structure or None, got {type(lesion).__name__}")
        if not lesion.grid.same_geometry(vertebral_body.grid):
            raise GeometryError(
                f"lesion {lesion.name!r} and vertebral body {vertebral_body.name!r} are on different grids"
            )
        v_les = float((lesion.mask & vb).sum()) * vv_cm3
    cavity = v_les if lesion_type == "lytic" else 0.0
    f, fl = model.target_fill_fraction, model.lesion_fill_fraction
    lines = [
        f"Vertebral body {vertebral_body.name!r}: {v_vb:.1f} cm3 "
        "(approx. ranges: mid-thoracic 12-20, lumbar 25-40 cm3 [R], clinical_planning.md s.5).",
    ]
    if lesion is not None:
        lines.append(f"Lesion {lesion.name!r} inside the VB: {v_les:.1f} cm3 ({lesion_type}; "
                     f"{'a cavity' if cavity else 'sclerotic, filled like bone'}).")
    base = f * (v_vb - cavity)
    raw = base + fl * cavity
    lines.append(
        f"Fill {100 * f:.1f} % of the non-cavity VB ({v_vb - cavity:.1f} cm3) = {base:.2f} mL (Molloy et al., Spine "
        "2003: 16.2 % fill restored strength, 29.8 % stiffness; Nieuwenhuijse et al., Spine 2012: >= 24 % with better "
        "pain relief)."
    )
    if cavity and fl > 0:
        lines.append(f"Plus {fl:.0%} of the lytic cavity ({cavity:.1f} cm3) = {fl * cavity:.2f} mL; total {raw:.2f} mL.")
    elif cavity:
        lines.append(f"The lytic cavity ({cavity:.1f} cm3) is not counted: its seeds treat it (combined procedure).")
    vol = min(max(raw, model.min_mL), model.max_mL)
    clamped = vol != raw
    if clamped:
        lines.append(
            f"Clamped {raw:.2f} -> {vol:.2f} mL to the model's {model.min_mL:g}-{model.max_mL:g} mL range "
            + ("(the PVP + 125I metastasis series, PMC3545348)." if model == COMBINED_WITH_SEEDS else
               "(reference study; leakage rises with volume, Nieuwenhuijse 2012 [R]).")
        )
    lines.append(f"Recommended cement volume: {vol:.1f} mL = {vol / v_vb:.0%} of the VB.")
    if region == "thoracic":
        lines.append(f"Reference: reference-study mean {model.typical_thoracic_mL:g} mL thoracic (2-9 mL).")
    elif region == "lumbar":
        lines.append(f"Reference: reference-study mean {model.typical_lumbar_mL:g} mL lumbar (2-9 mL).")
    else:
        lines.append(
            f"Reference: reference-study means {model.typical_thoracic_mL:g} mL thoracic / "
            f"{model.typical_lumbar_mL:g} mL lumbar (2-9 mL)."
        )
    lo, hi = model.metastasis_range_mL
    note = " (above that range: check leakage risk)" if vol > hi else ""
    lines.append(
        f"Metastasis series with PVP + 125I used {lo:g}-{hi:g} mL per level (mean 2.8 thoracic / 3.1 lumbar, "
        f"PMC3545348){note}. Biomechanical data are from osteoporotic bodies; volume did not predict pain "
        "relief (Kaufmann 2006, Al-Ali 2009)."
    )
    return CementRecommendation(
        volume_mL=float(vol),
        vb_volume_cm3=v_vb,
        lesion_volume_cm3=v_les,
        fill_fraction=float(vol / v_vb),
        clamped=bool(clamped),
        reasoning=tuple(lines),
    )


# ========================================================================== simulation
#: Baroud et al. 2004 permeability SI 4.45e-8 / AP 3.44e-8 m^2 (section 5): SI ~1.29x AP.
BAROUD_SI_AP_RATIO = 4.45 / 3.44
#: Default relative speed vs HU (piecewise linear, clamped): lytic/marrow fast,
#: normal cancellous medium, sclerotic slow; HU >= cortical_hu is a barrier.
DEFAULT_HU_SPEED: tuple[tuple[float, float], ...] = ((100.0, 1.0), (300.0, 0.5), (600.0, 0.15))
#: HU at and above which bone is cortical: a barrier to the cement front.
CORTICAL_HU = 700.0
#: Leak-risk flags reported by :func:`simulate_cement` (bit order of the kernel).
LEAK_FLAGS = ("outside_body", "cortical_defect", "posterior_wall", "basivertebral_foramen")
#: Flags at which a recommended volume is capped: the simulated front has left the vertebral body.  The
#: others mark where a leak could start (a weak cortex voxel, the posterior wall, the basivertebral
#: foramen); on thick-slice CT the cortical shell is partial-volumed and "cortical_defect" trips early.
LEAK_CAP_FLAGS = ("outside_body",)


@dataclass(frozen=True, eq=False)
class CementResult:
    """Outcome of :func:`simulate_cement` (compared by identity; compare ``mask`` with numpy).

    Attributes
    ----------
    mask : bool array on the given grid
    volume_mL, requested_mL : float
        Simulated (whole voxels) and requested volume.
    fill_pct : float
        Cement inside the VB as % of the VB volume.
    max_cross_section_ratio : float
        S_cement / S_VB on the axial slice with the largest cement area (section 5).
    max_slice_ratio : float
        Maximum over axial slices of the per-slice ratio.
    max_cross_section_slice : int
        Grid k of the slice with the largest cement area.
    endplate_contact : {"both", "superior", "inferior", "none"}
    leak_flags : mapping flag -> cumulative volume (mL) when first tripped, or None
    exhausted : bool
        The front filled everything it could reach before the requested volume.
    elapsed_s : float
        Wall time of the simulation.
    """

    mask: np.ndarray
    volume_mL: float
    requested_mL: float
    fill_pct: float
    max_cross_section_ratio: float
    max_slice_ratio: float
    max_cross_section_slice: int
    endplate_contact: str
    leak_flags: Mapping[str, float | None]
    exhausted: bool = False
    elapsed_s: float = field(default=0.0, compare=False)

    @property
    def leaked(self) -> bool:
        """True when the front left the VB (``outside_body`` tripped)."""
        return self.leak_flags.get("outside_body") is not None


@nb.njit(cache=True)
def _grow(speed, starts, n_target, offs, costs, flags):
    """Multi-source Dijkstra on a 26-connected voxel graph, accept in arrival order.

    Edge time = metric length / harmonic-mean speed; speed <= 0 is a barrier and
    diagonal steps may not cut the corner of a barrier voxel (a 1-voxel shell stays closed).
    Returns the accepted flat indices and, per flag bit, the count at first trip.
    """
    nz, ny, nx = speed.shape
    n = nz * ny * nx
    sp = speed.ravel()
    fl = flags.ravel()
    dist = np.full(n, np.inf)
    done = np.zeros(n, np.bool_)
    order = np.empty(n_target, np.int64)
    trip = np.full(8, -1, np.int64)
    heap = [(0.0, starts[0])]
    heap.pop()
    for s in starts:
        dist[s] = 0.0
        heapq.heappush(heap, (0.0, s))
    cnt = 0
    plane = ny * nx
    while len(heap) > 0 and cnt < n_target:
        d, u = heapq.heappop(heap)
        if done[u]:
            continue
        done[u] = True
        order[cnt] = u
        cnt += 1
        f = fl[u]
        if f:
            for b in range(8):
                if (f >> b) & 1 and trip[b] < 0:
                    trip[b] = cnt
        k = u // plane
        r = u - k * plane
        j = r // nx
        i = r - j * nx
        inv_u = 1.0 / sp[u]
        for e in range(offs.shape[0]):
            kk = k + offs[e, 0]
            jj = j + offs[e, 1]
            ii = i + offs[e, 2]
            if kk < 0 or jj < 0 or ii < 0 or kk >= nz or jj >= ny or ii >= nx:
                continue
            v = kk * plane + jj * nx + ii
            if done[v] or sp[v] <= 0.0:
                continue
            # no corner cutting: every voxel of the box spanned by a diagonal step must be open
            blocked = False
            a0, a1, a2 = offs[e, 0], offs[e, 1], offs[e, 2]
            if int(a0 != 0) + int(a1 != 0) + int(a2 != 0) > 1:  # int(): numpy bools would OR
                for q0 in range(2):
                    for q1 in range(2):
                        for q2 in range(2):
                            w = (k + q0 * a0) * plane + (j + q1 * a1) * nx + (i + q2 * a2)
                            if sp[w] <= 0.0 and w != u:
                                blocked = True
                if blocked:
                    continue
            nd = d + costs[e] * 0.5 * (inv_u + 1.0 / sp[v])
            if nd < dist[v]:
                dist[v] = nd
                heapq.heappush(heap, (nd, v))
    return order[:cnt], trip


def _neighbours(spacing_zyx: np.ndarray, axis_speed_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    offs = np.array(
        [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)],
        dtype=np.int64,
    )
    # anisotropic metric: travel time over displacement delta is |delta / v_axis|
    costs = np.sqrt((((offs * spacing_zyx) / axis_speed_zyx) ** 2).sum(axis=1))
    return offs, costs


def _speed_table(hu_speed: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        tab = np.asarray(hu_speed, dtype=float)
    except (TypeError, ValueError):
        raise InputError("hu_speed must be a sequence of (HU, relative speed) pairs") from None
    if tab.ndim != 2 or tab.shape[1] != 2 or len(tab) < 1:
        raise InputError(f"hu_speed must be (HU, relative speed) pairs, shape (n, 2); got shape {tab.shape}")
    if not np.all(np.isfinite(tab)) or np.any(tab[:, 1] <= 0) or np.any(np.diff(tab[:, 0]) <= 0):
        raise InputError("hu_speed needs increasing finite HU values and speeds > 0")
    return tab[:, 0], tab[:, 1]


def simulate_cement(
    ct: CTImage,
    vertebral_body_mask: Any,
    grid: Grid,
    needle_tips_mm: Any,
    volume_mL: float,
    *,
    hu_speed: Sequence[tuple[float, float]] = DEFAULT_HU_SPEED,
    si_ap_ratio: float = BAROUD_SI_AP_RATIO,
    cortical_hu: float = CORTICAL_HU,
    outside_speed_factor: float = 0.5,
    posterior_zone_mm: float = 4.0,
    foramen_half_size_mm: float = 6.0,
    endplate_tol_mm: float | None = None,
    margin_mm: float = 8.0,
    tip_snap_mm: float = 3.0,
    rng: np.random.Generator | int | None = None,
    jitter_sigma: float = 0.15,
    compartment_mask: Any = None,
) -> CementResult:
    """Volume-constrained cement front growth from PVP needle tips (section 5 model).

    Region growing in arrival-time order (Dijkstra on the 26-connected voxel
    graph, an approximation of fast marching) with local speed from HU:
    ``hu_speed`` interpolated (lytic/marrow fast, sclerotic slow), HU >=
    ``cortical_hu`` a barrier; the metric is anisotropic with SI (z) speed
    ``si_ap_ratio`` x the AP (y) speed (Baroud 2004: 4.45e-8 vs 3.44e-8 m^2);
    left-right uses the AP speed (no data).  Outside the VB the speed is
    multiplied by ``outside_speed_factor``: cement only gets there through a
    gap of the cortical shell (VB boundary voxel below ``cortical_hu``), which
    is how leaks appear.  Growth stops when the planned volume is reached.

    Parameters
    ----------
    ct : CTImage
        CT on ``grid``.
    vertebral_body_mask : bool array or Structure
        Treated VB (cortex included), ``grid.shape``.
    grid : Grid
        Axis-aligned grid of the CT; axial slices are grid k slices.
    needle_tips_mm : (T, 3) array
        One or two (at most 4) tips, LPS mm, inside the VB.
    volume_mL : float
        Planned volume; must not exceed the fillable (non-cortical) VB volume
        (``InputError`` otherwise - no silent clamping).  If the reachable
        region is smaller, a warning is issued and ``exhausted`` is True.
    hu_speed : sequence of (HU, speed)
        Relative speed vs HU, clamped at the ends (default: <=100 HU 1.0,
        300 HU 0.5, >=600 HU 0.15).
    si_ap_ratio : float
        SI / AP speed ratio (default 4.45/3.44 = 1.29).
    cortical_hu : float
        Barrier threshold (HU).
    posterior_zone_mm : float
        Depth of the posterior-wall zone in front of the posterior VB extent
        (per axial slice, posterior = +y LPS).
    foramen_half_size_mm : float
        Half width (x) and half height (z) of the basivertebral-foramen zone,
        centred on the VB centroid in the posterior-wall zone.
    endplate_tol_mm : float, optional
        Endplate contact tolerance from the VB top/bottom voxel of each
        column; default 1 mm cortex + one slice.
    margin_mm : float
        Crop margin around the VB (room for leaks).
    tip_snap_mm : float
        A tip in cortical bone is moved (with a warning) to the nearest
        non-cortical VB voxel within this distance; farther is an InputError.
    rng : numpy.random.Generator or int, optional
        None: deterministic homogeneous speeds.  Otherwise multiplicative
        log-normal jitter (``jitter_sigma``) of the speed, reproducible per seed.
    compartment_mask : bool array or Structure, optional
        Bone beyond the body the cement may fill without a leak (a sacral body's ala): the front grows in
        the body and the compartment, ``outside_body`` and ``cortical_defect`` are the compartment's, the
        fill, cross-section, endplate, posterior-wall and basivertebral-foramen figures the body's.

    Returns
    -------
    CementResult
    """
    t_start = time.perf_counter()
    if not isinstance(ct, CTImage):
        raise InputTypeError(f"ct must be a seedplan CTImage, got {type(ct).__name__}")
    if not isinstance(grid, Grid):
        raise InputTypeError(f"grid must be a seedplan.geometry.Grid, got {type(grid).__name__}")
    if not ct.grid.same_geometry(grid):
        raise GeometryError("ct is not on the given grid; resample the CT or pass ct.grid")
    if not np.allclose(np.abs(grid.direction_matrix), np.eye(3), atol=1e-3):
        raise GeometryError("simulate_cement needs an axis-aligned grid (identity or axis-flip direction)")
    vb, _ = _mask_of(vertebral_body_mask, "vertebral_body_mask", grid)
    if not vb.any():
        raise InputError("vertebral_body_mask is empty; it must contain the treated vertebral body")
    body = vb
    if compartment_mask is not None:
        vb = vb | _mask_of(compartment_mask, "compartment_mask", grid)[0]  # where the front may grow
    try:
        vol_req = float(volume_mL)
    except (TypeError, ValueError):
        raise InputTypeError(f"volume_mL must be a number (mL), got {volume_mL!r}") from None
    if not math.isfinite(vol_req) or vol_req <= 0:
        raise InputError(f"volume_mL must be > 0 mL, got {volume_mL!r}")
    for k, v in (("si_ap_ratio", si_ap_ratio), ("outside_speed_factor", outside_speed_factor),
                 ("margin_mm", margin_mm), ("cortical_hu", cortical_hu)):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{k} must be a finite number, got {v!r}")
    if si_ap_ratio <= 0 or outside_speed_factor < 0 or margin_mm < 0:
        raise InputError("si_ap_ratio must be > 0, outside_speed_factor and margin_mm >= 0")
    hu_pts, hu_sp = _speed_table(hu_speed)
    try:
        tips = np.asarray(needle_tips_mm, dtype=float)
    except (TypeError, ValueError):
        raise InputTypeError("needle_tips_mm must be a (T, 3) array of tip positions in mm") from None
    if tips.ndim == 1 and tips.shape == (3,):
        tips = tips[None]
    if tips.ndim != 2 or tips.shape[1] != 3 or not (1 <= len(tips) <= 4) or not np.all(np.isfinite(tips)):
        raise InputError(f"needle_tips_mm must be 1-4 finite (x, y, z) mm positions, shape (T, 3); got {tips.shape}")

    vv_mm3 = grid.voxel_volume_mm3
    idx = np.rint(grid.world_to_index(tips)).astype(np.int64)  # (i, j, k)
    for t, (p, ijk) in enumerate(zip(tips, idx)):
        inside = np.all(ijk >= 0) and np.all(ijk < np.array(grid.size))
        if not inside or not vb[ijk[2], ijk[1], ijk[0]]:
            raise InputError(
                f"needle_tips_mm[{t}] = ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm lies outside the vertebral body mask; "
                "PVP needle tips must be inside the vertebral body"
            )
    from ..geometry import mask_bbox

    hu_all = ct.hu
    vb_lo, vb_hi = mask_bbox(vb)  # vb is not empty (checked above)
    vb_box = tuple(slice(a, b + 1) for a, b in zip(vb_lo, vb_hi))
    fillable = int((vb[vb_box] & (hu_all[vb_box] < cortical_hu)).sum())
    n_target = max(1, int(round(vol_req * 1000.0 / vv_mm3)))
    if n_target > fillable:
        raise InputError(
            f"volume_mL={vol_req:g} exceeds what the vertebral body can hold: {fillable * vv_mm3 / 1000:.2f} mL of "
            f"non-cortical (HU < {cortical_hu:g}) bone; request at most that volume"
        )

    # ---------------------------------------------------------------- crop
    sp_zyx = grid.spacing[::-1].copy()
    nzyx = np.array(grid.shape)
    pad = np.ceil(margin_mm / sp_zyx).astype(int) + 1
    lo = np.maximum(np.array(vb_lo) - pad, 0)
    hi = np.minimum(np.array(vb_hi) + pad + 1, nzyx)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    vbc = vb[sl]
    hu = np.asarray(hu_all[sl], dtype=np.float64)
    speed = np.interp(hu, hu_pts, hu_sp)
    if rng is not None:
        g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        speed = speed * np.exp(jitter_sigma * g.standard_normal(speed.shape))
    speed[~vbc] *= outside_speed_factor
    speed[hu >= cortical_hu] = 0.0

    # ---------------------------------------------------------------- zones
    from scipy import ndimage

    kk, jj, ii = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
    world = grid.index_to_world(np.stack([ii, jj, kk], axis=-1).astype(float))
    Y, X, Z = world[..., 1], world[..., 0], world[..., 2]
    boundary = vbc & ~ndimage.binary_erosion(vbc, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
    defect = boundary & (hu < cortical_hu)
    bodyc = body[sl]
    ymax = np.where(bodyc, Y, -np.inf).max(axis=(1, 2), keepdims=True)  # per axial slice
    post = bodyc & (Y >= ymax - posterior_zone_mm) & (hu < cortical_hu)
    cz, cx = Z[bodyc].mean(), X[bodyc].mean()
    foramen = post & (np.abs(X - cx) <= foramen_half_size_mm) & (np.abs(Z - cz) <= foramen_half_size_mm)
    flags = (
        (~vbc).astype(np.uint8)
        | (defect.astype(np.uint8) << 1)
        | (post.astype(np.uint8) << 2)
        | (foramen.astype(np.uint8) << 3)
    )

    # ---------------------------------------------------------------- grow
    d = grid.direction_matrix
    ap_speed = 1.0 / si_ap_ratio
    world_axis_speed = np.array([ap_speed, ap_speed, 1.0])  # LR (=AP, no data), AP, SI
    axis_speed_ijk = np.abs(d.T) @ world_axis_speed  # axis-aligned: a permutation
    axis_speed_zyx = axis_speed_ijk[::-1]
    offs, costs = _neighbours(sp_zyx, axis_speed_zyx)
    starts = []
    shp = vbc.shape
    open_vb = vbc & (speed > 0)
    for t, ijk in enumerate(idx):
        loc = (ijk[2] - lo[0], ijk[1] - lo[1], ijk[0] - lo[2])
        if speed[loc] <= 0:
            # tip in cortical bone: inject from the nearest non-cortical VB voxel
            cand = np.argwhere(open_vb)
            dmm = np.linalg.norm((cand - np.array(loc)) * sp_zyx, axis=1)
            best = int(np.argmin(dmm)) if len(dmm) else -1
            if best < 0 or dmm[best] > tip_snap_mm:
                raise InputError(
                    f"needle_tips_mm[{t}] = ({tips[t, 0]:.1f}, {tips[t, 1]:.1f}, {tips[t, 2]:.1f}) mm lies in cortical "
                    f"bone (HU >= {cortical_hu:g}) with no cancellous voxel within tip_snap_mm={tip_snap_mm:g} mm; "
                    "place the tip inside the cancellous vertebral body"
                )
            warnings.warn(
                f"simulate_cement: needle_tips_mm[{t}] lies in cortical bone (HU >= {cortical_hu:g}); cement is "
                f"injected from the nearest cancellous voxel, {dmm[best]:.1f} mm away",
                stacklevel=2,
            )
            loc = tuple(int(c) for c in cand[best])
        starts.append(np.ravel_multi_index(loc, shp))
    starts = np.unique(np.array(starts, dtype=np.int64))
    order, trip = _grow(np.ascontiguousarray(speed), starts, n_target, offs, costs, np.ascontiguousarray(flags))
    n = len(order)
    exhausted = n < n_target
    if exhausted:
        warnings.warn(
            f"simulate_cement: the cement front filled all {n * vv_mm3 / 1000:.2f} mL it can reach from the needle "
            f"tip(s) before the requested {vol_req:g} mL (enclosed by bone >= {cortical_hu:g} HU); result is smaller",
            stacklevel=2,
        )
    crop_mask = np.zeros(vbc.size, bool)
    crop_mask[order] = True
    crop_mask = crop_mask.reshape(shp)
    mask = np.zeros(grid.shape, bool)
    mask[sl] = crop_mask

    # ---------------------------------------------------------------- metrics
    inside = crop_mask & bodyc
    vb_n = int(bodyc.sum())
    fill_pct = 100.0 * inside.sum() / vb_n
    area_c = inside.sum(axis=(1, 2))
    area_vb = bodyc.sum(axis=(1, 2))
    kmax = int(np.argmax(area_c))
    ratio = float(area_c[kmax] / area_vb[kmax]) if area_vb[kmax] else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(area_vb > 0, area_c / np.maximum(area_vb, 1), 0.0)
    tol = (1.0 + sp_zyx[0]) if endplate_tol_mm is None else float(endplate_tol_mm)
    kidx = np.arange(shp[0])[:, None, None]
    sup_is_high = d[2, 2] > 0
    top = np.where(bodyc, kidx, -1).max(axis=0)
    bot = np.where(bodyc, kidx, shp[0]).min(axis=0)
    if not sup_is_high:
        top, bot = bot, top
    dk_top = np.abs(top[None] - kidx) * sp_zyx[0]
    dk_bot = np.abs(kidx - bot[None]) * sp_zyx[0]
    sup = bool(np.any(inside & (dk_top <= tol + 1e-9)))
    inf = bool(np.any(inside & (dk_bot <= tol + 1e-9)))
    contact = "both" if sup and inf else "superior" if sup else "inferior" if inf else "none"
    leak = {name: (None if trip[b] < 0 else float(trip[b] * vv_mm3 / 1000.0)) for b, name in enumerate(LEAK_FLAGS)}
    return CementResult(
        mask=mask,
        volume_mL=n * vv_mm3 / 1000.0,
        requested_mL=vol_req,
        fill_pct=float(fill_pct),
        max_cross_section_ratio=ratio,
        max_slice_ratio=float(per.max()),
        max_cross_section_slice=int(kmax + lo[0]),
        endplate_contact=contact,
        leak_flags=MappingProxyType(leak),
        exhausted=bool(exhausted),
        elapsed_s=time.perf_counter() - t_start,
    )


def cross_section_ratios(cement_mask: np.ndarray, vertebral_body_mask: np.ndarray) -> tuple[float, float, int]:
    """``(ratio on the largest-cement slice, max per-slice ratio, slice k)`` (section 5).

    Cement outside the VB is ignored; slices are axis-0 (``k``) planes.
    """
    c = np.asarray(cement_mask, bool)
    v = np.asarray(vertebral_body_mask, bool)
    if c.shape != v.shape or c.ndim != 3:
        raise GeometryError(f"cement_mask {c.shape} and vertebral_body_mask {v.shape} must be equal 3D shapes")
    if not v.any():
        raise InputError("vertebral_body_mask is empty")
    inside = c & v
    ac, av = inside.sum(axis=(1, 2)), v.sum(axis=(1, 2))
    k = int(np.argmax(ac))
    per = np.where(av > 0, ac / np.maximum(av, 1), 0.0)
    return (float(ac[k] / av[k]) if av[k] else 0.0, float(per.max()), k)


def cement_excludes_slots(
    slot_positions_mm: Any, cement_mask: Any, grid: Grid, margin_mm: float = 1.0
) -> np.ndarray:
    """True for seed slots inside radiopaque cement or within ``margin_mm`` of it.

    A seed encapsulated in BaSO4/ZrO2-loaded cement loses most of its dose
    (section 6: 5 mm of 30 wt% BaSO4 cement leaves ~21 % of primary; phantom
    study of seeds encased in OSTEOPAL V), so such slots are forbidden.

    Parameters
    ----------
    slot_positions_mm : (S, 3) array
        Candidate seed positions (LPS mm).
    cement_mask : bool array ``grid.shape``
    grid : Grid
    margin_mm : float
        Extra clearance from cement voxel centres (mm, >= 0).

    Returns
    -------
    (S,) bool ndarray
        True where the slot is excluded.
    """
    if not isinstance(grid, Grid):
        raise InputTypeError(f"grid must be a seedplan.geometry.Grid, got {type(grid).__name__}")
    cm, _ = _mask_of(cement_mask, "cement_mask", grid)
    if not isinstance(margin_mm, (int, float)) or not math.isfinite(margin_mm) or margin_mm < 0:
        raise InputError(f"margin_mm must be a finite distance >= 0 mm, got {margin_mm!r}")
    try:
        pts = np.asarray(slot_positions_mm, dtype=float)
    except (TypeError, ValueError):
        raise InputTypeError("slot_positions_mm must be an (S, 3) array of positions in mm") from None
    if pts.ndim == 1 and pts.shape == (3,):
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise InputError(f"slot_positions_mm must be finite (S, 3) positions in mm, got shape {pts.shape}")
    out = np.zeros(len(pts), bool)
    if not cm.any() or not len(pts):
        return out
    ijk = np.rint(grid.world_to_index(pts)).astype(np.int64)
    ok = np.all((ijk >= 0) & (ijk < np.array(grid.size)), axis=1)
    out[ok] = cm[ijk[ok, 2], ijk[ok, 1], ijk[ok, 0]]
    if margin_mm > 0:
        from scipy.spatial import cKDTree

        centres = grid.index_to_world(np.argwhere(cm)[:, ::-1].astype(float))
        dist, _ = cKDTree(centres).query(pts, k=1, distance_upper_bound=margin_mm + 1e-9)
        out |= np.isfinite(dist)
    return out


# ======================================================================= cement plan
#: Mean HU of the lesion inside the vertebral body below which it counts as lytic (a
#: cavity): between soft tissue (~20-80 HU) and normal cancellous bone (~150-300 HU)
#: [assumption, configurable through ``lesion_type``].
LYTIC_MAX_HU = 120.0


def lesion_type_from_hu(ct: CTImage, lesion: Structure, vertebral_body: Structure) -> str:
    """``"lytic"`` when the lesion's mean HU inside the VB is below :data:`LYTIC_MAX_HU`, else ``"blastic"``."""
    m = lesion.mask_on(ct.grid) & vertebral_body.mask_on(ct.grid)
    if not m.any():
        return "lytic"
    return "lytic" if float(np.mean(ct.hu[m])) < LYTIC_MAX_HU else "blastic"


def level_from_name(name: str) -> str | None:
    """The vertebral level in a structure name (``"vertebral_body_L3"`` -> ``"L3"``), or None."""
    import re

    hit = re.search(r"(?:^|[^A-Za-z])([CTLS])(\d{1,2})(?:$|[^0-9])", str(name), flags=re.IGNORECASE)
    return f"{hit.group(1).upper()}{int(hit.group(2))}" if hit else None


@dataclass(frozen=True, eq=False)
class CementPlan:
    """The planned vertebroplasty of one vertebral body: volume, material and simulated fill.

    Attributes
    ----------
    vertebral_body : str
        Name of the treated vertebral-body structure.
    level : str or None
        Vertebral level (``"L3"``), from the structure name when not given.
    lesion_type : {"lytic", "blastic"}
    material : CementMaterial
    tips_mm : tuple of (x, y, z)
        The vertebroplasty needle tips the cement is injected from (LPS mm).
    recommendation : CementRecommendation
        The fill-fraction recommendation and its reasoning.
    volume_source : {"recommended", "requested"}
        Whether the simulated volume is the recommendation or the user's.
    result : CementResult
        The simulated fill (mask on the CT grid and its metrics).
    capped, outside : mapping
        The cap at a leak flag; the cement outside the body (or compartment) and the nearest organ.
    compartment : str or None
        The bone the cement could fill when more than the body (at a sacral level: the sacrum less the
        neural canals and the other levels' bodies).
    """

    vertebral_body: str
    level: str | None
    lesion_type: str
    material: CementMaterial
    tips_mm: tuple[tuple[float, float, float], ...]
    recommendation: CementRecommendation
    volume_source: str
    result: CementResult
    capped: Mapping[str, Any] | None = None
    outside: Mapping[str, Any] = field(default_factory=dict)
    compartment: str | None = None

    @property
    def radiopaque(self) -> bool:
        """True for a BaSO4 or ZrO2 loaded cement (seeds must stay out of it)."""
        return self.material.radiopacifier != "none"

    @property
    def warnings(self) -> list[str]:
        """One line per tripped leak-risk flag, the cap at a leak, cement outside the body, an unreachable volume."""
        r = self.result
        out = [
            f"cement leak risk: '{flag}' reached at {v:.1f} mL of the planned {r.requested_mL:.1f} mL"
            for flag, v in r.leak_flags.items() if v is not None
        ]
        if self.capped:
            c = self.capped
            out.append(f"cement capped at {r.volume_mL:.1f} mL: the leak-risk flag '{c['flag']}' trips at "
                       f"{c['trips_at_mL']:.1f} mL of the recommended {c['planned_mL']:.1f} mL")
        o = self.outside
        if o.get("outside_vertebral_body_mL", 0.0) > 0:
            near = o.get("nearest_organ")
            out.append(f"{o['outside_vertebral_body_mL']:.2f} mL of cement lies outside the "
                       + ("vertebral body" if self.compartment is None else self.compartment)
                       + (f", {near['distance_mm']:.1f} mm from {near['name']}" if near else ""))
        if r.exhausted:
            out.append(f"cement: only {r.volume_mL:.1f} mL of the planned {r.requested_mL:.1f} mL can be reached "
                       "from the needle tips")
        return out

    def metrics(self) -> dict[str, Any]:
        """The ``metrics.json`` ``"cement"`` block."""
        r = self.result
        return {
            "volume_mL": round(r.volume_mL, 3),
            "fill_pct": round(r.fill_pct, 2),
            "max_cross_section_ratio": round(r.max_cross_section_ratio, 4),
            "endplate_contact": r.endplate_contact,
            "leak_flags": {k: (None if v is None else round(v, 3)) for k, v in r.leak_flags.items()},
            "recommended_mL": round(self.recommendation.volume_mL, 3),
            "volume_source": self.volume_source,
            "vertebral_body": self.vertebral_body,
            **({} if self.compartment is None else {"compartment": self.compartment}),
            "material": self.material.name,
            "max_slice_ratio": round(r.max_slice_ratio, 4),
            "capped_at_leak": None if self.capped is None else dict(self.capped),
            **{k: v for k, v in self.outside.items()},
            "simulation_time_s": round(r.elapsed_s, 3),
        }

    def as_plan_cement(self, grid: Grid) -> PlanCement:
        """The cement as the plan stores it: the filled voxels on ``grid`` (the CT's), the figures and the inputs."""
        if tuple(grid.shape) != self.result.mask.shape:
            raise GeometryError(f"the cement mask {self.result.mask.shape} is not on this grid {grid.shape}; "
                                "pass the CT grid")
        metrics = self.metrics()
        metrics.pop("simulation_time_s")  # a timing, not a property of the plan
        rec = self.recommendation
        inputs = {
            "tips_mm": [list(t) for t in self.tips_mm],
            "planned_mL": round(self.result.requested_mL, 4),
            "level": self.level,
            "lesion_type": self.lesion_type,
            "recommendation": {
                "volume_mL": round(rec.volume_mL, 4),
                "vb_volume_cm3": round(rec.vb_volume_cm3, 4),
                "lesion_volume_cm3": round(rec.lesion_volume_cm3, 4),
                "fill_fraction": round(rec.fill_fraction, 5),
                "clamped": rec.clamped,
                "reasoning": list(rec.reasoning),
            },
            "model": "HU-driven front growth from the needle tips (Dijkstra, 26-neighbour), "
                     f"SI/AP speed {BAROUD_SI_AP_RATIO:.2f} (Baroud 2004), cortex >= {CORTICAL_HU:g} HU a barrier",
        }
        return PlanCement(self.vertebral_body, self.material, self.result.mask, grid, metrics, tuple(self.warnings),
                          inputs)


def plan_cement(
    ct: CTImage,
    vertebral_body: Structure,
    needle_tips_mm: Any,
    *,
    lesion: Structure | None = None,
    level: str | None = None,
    lesion_type: str = "auto",
    volume_mL: float | None = None,
    material: "str | CementMaterial" = DEFAULT_CEMENT,
    model: CementModel = CementModel(),
    organs: Sequence[Structure] = (),
    cap_at_leak: bool = True,
    compartment: Structure | None = None,
) -> CementPlan:
    """Recommend the cement volume of a vertebral body and simulate its fill from the PVP needle tips.

    Parameters
    ----------
    ct : CTImage
    vertebral_body : Structure
        The treated vertebral body (resampled to the CT grid if needed).
    needle_tips_mm : (T, 3) array
        Vertebroplasty needle tips (one or two), inside the vertebral body.
    lesion : Structure, optional
        The metastasis; its part inside the body is the lytic cavity.
    level : str, optional
        Vertebral level; default from the structure name (``vertebral_body_L3``).
    lesion_type : {"auto", "lytic", "blastic"}
        ``"auto"``: from the lesion's mean HU (:func:`lesion_type_from_hu`).
    volume_mL : float, optional
        Inject this volume instead of the recommendation (must fit in the body).
    material : str or CementMaterial
        A :data:`CEMENT_MATERIALS` key or a material.
    model : CementModel
    organs : sequence of Structure
        Organs at risk: the one nearest to the cement (and to any cement outside the
        vertebral body) is reported.
    cap_at_leak : bool
        With the recommended volume, stop the fill just before a flag of
        :data:`LEAK_CAP_FLAGS` trips (the front leaves the vertebral body), and say so.  A requested volume is never changed: its tripped flags
        are reported as warnings.
    compartment : Structure, optional
        The bone the cement may fill without a leak, if more than the body: at a sacral level the
        planner passes the sacrum less the neural canals and the other levels' bodies (the body's
        cancellous bone continues into the ala without a cortex).  The leak flags and the cement outside
        are then the compartment's; the fill, cross-section and endplate figures and the recommended
        volume stay the body's.

    Returns
    -------
    CementPlan
    """
    mat = cement_material(material)
    if not isinstance(ct, CTImage):
        raise InputTypeError(f"ct must be a seedplan CTImage, got {type(ct).__name__}")
    for name, s in (("vertebral_body", vertebral_body), ("lesion", lesion)):
        if not isinstance(s, Structure) and not (name == "lesion" and s is None):
            raise InputTypeError(f"{name} must be a seedplan Structure, got {type(s).__name__}")
    vb = vertebral_body.mask_on(ct.grid)
    if not vb.any():
        raise InputError(f"vertebral body structure {vertebral_body.name!r} is empty; it must contain voxels")
    vb_s = Structure(vertebral_body.name, vertebral_body.role, vb, ct.grid)
    les_s = None
    if lesion is not None:
        les_s = Structure(lesion.name, lesion.role, lesion.mask_on(ct.grid), ct.grid)
    if lesion_type == "auto":
        lesion_type = lesion_type_from_hu(ct, les_s, vb_s) if les_s is not None else "lytic"
    lvl = level if level is not None else level_from_name(vertebral_body.name)
    rec = recommend_cement_volume(vb_s, les_s, level=lvl, lesion_type=lesion_type, model=model)
    if volume_mL is None:
        fillable_mL = float((vb & (ct.hu < CORTICAL_HU)).sum()) * ct.grid.voxel_volume_mm3 / 1000.0
        vol, source = rec.volume_mL, "recommended"
        if compartment is not None:
            fillable_mL = float(((vb | compartment.mask_on(ct.grid)) & (ct.hu < CORTICAL_HU)).sum()
                                ) * ct.grid.voxel_volume_mm3 / 1000.0
        if vol > fillable_mL:
            vol = fillable_mL
            rec = replace(rec, volume_mL=vol, reasoning=rec.reasoning + (
                f"Reduced to {vol:.1f} mL: all the non-cortical bone of {vertebral_body.name!r}.",))
    else:
        vol, source = volume_mL, "requested"
    comp = None if compartment is None else compartment.mask_on(ct.grid)
    res = simulate_cement(ct, vb, ct.grid, needle_tips_mm, vol, compartment_mask=comp)
    capped = None
    tripped = {f: v for f, v in res.leak_flags.items() if v is not None and f in LEAK_CAP_FLAGS}
    if tripped and cap_at_leak and source == "recommended":
        flag, trips_at = min(tripped.items(), key=lambda kv: kv[1])
        cap = trips_at - ct.grid.voxel_volume_mm3 / 1000.0  # the fill just before the flagged voxel
        if cap > 0:
            first = res
            with warnings.catch_warnings():  # the same tips: their warnings were given by the first run
                warnings.simplefilter("ignore")
                res = simulate_cement(ct, vb, ct.grid, needle_tips_mm, cap, compartment_mask=comp)
            res = replace(res, requested_mL=first.requested_mL)
            capped = {"flag": flag, "trips_at_mL": round(trips_at, 3), "planned_mL": round(first.requested_mL, 3)}
            rec = replace(rec, reasoning=rec.reasoning + (
                f"Capped at {res.volume_mL:.2f} mL: the leak-risk flag '{flag}' trips at {trips_at:.2f} mL.",))
    tips = np.atleast_2d(np.asarray(needle_tips_mm, dtype=float))
    return CementPlan(
        vertebral_body=vertebral_body.name,
        level=lvl,
        lesion_type=lesion_type,
        material=mat,
        tips_mm=tuple(tuple(float(v) for v in t) for t in tips),
        recommendation=rec,
        volume_source=source,
        result=res,
        capped=capped,
        outside=_outside(res.mask, vb if comp is None else vb | comp, ct.grid, organs,
                         None if les_s is None else les_s.mask),
        compartment=None if compartment is None else compartment.name,
    )


def _outside(cement: np.ndarray, vb: np.ndarray, grid: Grid, organs: Sequence[Structure],
             lesion: np.ndarray | None = None) -> dict[str, Any]:
    """Cement outside the vertebral body (mL), the organ at risk nearest to the cement, and the % of the lesion
    (inside the body) the cement fills."""
    from scipy import ndimage

    from scipy.spatial import cKDTree

    from ..geometry import mask_bbox

    def crop(bb):  # the voxels of a bounding box
        return tuple(slice(a, b + 1) for a, b in zip(*bb))

    c_bb, v_bb = mask_bbox(cement), mask_bbox(vb)
    # counted in the boxes of the cement and of the vertebral body (nothing outside them can count)
    outside = int((cement[crop(c_bb)] & ~vb[crop(c_bb)]).sum()) if c_bb is not None else 0
    out: dict[str, Any] = {"outside_vertebral_body_mL": round(float(outside) * grid.voxel_volume_mm3 / 1000.0, 3),
                           "nearest_organ": None}
    if lesion is not None and v_bb is not None:
        lv = lesion[crop(v_bb)] & vb[crop(v_bb)]
        if lv.any():
            out["lesion_filled_pct"] = round(100.0 * float((cement[crop(v_bb)] & lv).sum()) / float(lv.sum()), 2)
    if c_bb is None or not organs:
        return out
    sp = np.asarray(grid.spacing_mm, dtype=float)[::-1]
    c_lo, c_hi = (np.array(x) for x in c_bb)
    pad = np.ceil(60.0 / sp).astype(int)
    lo = np.maximum(c_lo - pad, 0)
    hi = np.minimum(c_hi + pad + 1, cement.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    # The organs with voxels in the box around the cement, and the distance (mm) from the cement to their
    # nearest voxel in it: the distance of an organ voxel to the cement is that to the cement's surface, and the
    # organ's nearest voxel is on its surface (inside the box), so only surface voxels are compared.
    cross = ndimage.generate_binary_structure(3, 1)

    def surface(m: np.ndarray, bb=None) -> np.ndarray:
        """Indices (z, y, x) in ``m`` of its voxels with a 6-neighbour outside it (or outside ``m``)."""
        bb = mask_bbox(m) if bb is None else bb
        if bb is None:
            return np.zeros((0, 3), np.int64)
        sl = tuple(slice(a, b + 1) for a, b in zip(*bb))
        sub = m[sl]
        edge = sub & ~ndimage.binary_erosion(sub, structure=cross, border_value=0)
        return np.argwhere(edge) + np.array(bb[0], np.int64)

    cem = cement[box]
    tree = cKDTree(surface(cem) * sp)
    cem_lo, cem_hi = np.array(c_bb[0]) - lo, np.array(c_bb[1]) - lo  # the cement's own box, in the box
    best = None
    for s in organs:
        m = s.mask_on(grid)[box]
        bb = mask_bbox(m)
        if bb is None:
            continue
        o_lo, o_hi = np.maximum(bb[0], cem_lo), np.minimum(bb[1], cem_hi)  # where both can be
        both = tuple(slice(a, b + 1) for a, b in zip(o_lo, o_hi)) if np.all(o_lo <= o_hi) else None
        if both is not None and (m[both] & cem[both]).any():
            d = 0.0
        else:
            d = float(tree.query(surface(m, bb) * sp, k=1)[0].min())
        if best is None or d < best["distance_mm"]:
            best = {"name": s.name, "distance_mm": round(d, 1)}
    out["nearest_organ"] = best
    return out
