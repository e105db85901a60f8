"""The placement-error model of a robustness analysis, and the ``robustness`` settings block.

A needle is placed with a rigid error and each seed is released with a small
extra error along the track:

* **lateral displacement** of the whole needle, perpendicular to its planned
  track (the same at the entry and the tip): an isotropic 2D normal with
  standard deviation ``lateral_sd_mm`` per axis;
* **angular error** about the entry point: the track tilts by an isotropic 2D
  normal angle with ``angle_sd_deg`` per axis (so the tip moves by about the
  angle times the depth);
* **depth error** along the track (the needle is inserted too deep or too
  shallow): a normal shift of every seed of the needle, ``depth_sd_mm``;
* per seed, a **jitter along the track** when it is released, ``seed_jitter_sd_mm``;
* optionally, each seed is **lost** (not implanted, or migrated away) with
  probability ``seed_loss_probability``.

Every error is zero-mean.  The defaults are the placement accuracy measured
with 3D-printed templates in CT-guided 125I implants (Ji Z et al., J Radiat Res
2021;62:910-917, doi 10.1093/jrr/rrab068; 318 needles): depth error
0.52 +/- 0.48 cm, entry point 3.4 +/- 1.7 mm, tip 4.4 +/- 2.9 mm, angle
2.8 +/- 1.7 deg.  These are means and standard deviations of the error's
magnitude; a zero-mean isotropic normal in ``k`` dimensions with standard
deviation ``s`` per axis has ``E|x|^2 = k s^2``, so ``s`` is taken from the
second moment: ``s = sqrt((mean^2 + sd^2) / k)`` (:func:`per_axis_sd`):

* lateral (entry point, k = 2): sqrt((3.4^2 + 1.7^2) / 2) = 2.69 mm;
* angle (k = 2): sqrt((2.8^2 + 1.7^2) / 2) = 2.32 deg;
* depth (k = 1): sqrt(5.2^2 + 4.8^2) = 7.08 mm.

The tip figure is not a parameter of its own: a rotation about the entry does
not move the entry, so the entry figure measures the lateral displacement, and
the tip's error is the lateral displacement plus the angle times the depth.
For a 60 mm track the model's tip error has an RMS of
sqrt(2 (2.69^2 + (60 mm x 2.32 deg in rad)^2)) = 5.1 mm, Ji's tip figure an RMS of
sqrt(4.4^2 + 2.9^2) = 5.3 mm (:func:`tip_rms_mm`).

No measured spread of seed release along the track was found for CT-guided
spinal implants; the jitter and the loss default to 0 (needle errors only).
For comparison, a planning study simulated 4 mm SD random seed displacement and
found that plans of 0.55-0.75 mCi seeds failed V100 >= 90 % more often than
plans of 0.35 mCi seeds (PMID 16515813).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from .. import _validate as v
from ..errors import InputError

__all__ = ["CITATIONS", "DEFAULT_SCENARIOS", "ErrorModel", "RobustnessOptions", "Geometry", "ScenarioSeeds", "draw_scenario",
           "per_axis_sd", "scenario_rng", "tip_rms_mm"]


def per_axis_sd(mean: float, sd: float, dimensions: int) -> float:
    """Per-axis SD of a zero-mean isotropic normal whose magnitude has this mean and SD.

    Matches the second moment: ``E|x|^2 = mean^2 + sd^2 = dimensions * s^2``.

    Parameters
    ----------
    mean, sd : float
        Reported mean and standard deviation of the error's magnitude (>= 0).
    dimensions : int
        1 for an error along a line (depth), 2 for a lateral or angular error.
    """
    m = v.number(mean, "mean", lo=0.0)
    s = v.number(sd, "sd", lo=0.0)
    k = v.integer(dimensions, "dimensions", lo=1, hi=3)
    return math.sqrt((m * m + s * s) / k)


#: Ji Z et al., J Radiat Res 2021;62:910-917 (doi 10.1093/jrr/rrab068): placement accuracy of 318 needles with
#: 3D-printed templates, as (mean, SD) of the error's magnitude.
JI_2021 = {"depth_mm": (5.2, 4.8), "entry_mm": (3.4, 1.7), "tip_mm": (4.4, 2.9), "angle_deg": (2.8, 1.7)}

LATERAL_SD_MM = per_axis_sd(*JI_2021["entry_mm"], 2)
ANGLE_SD_DEG = per_axis_sd(*JI_2021["angle_deg"], 2)
DEPTH_SD_MM = per_axis_sd(*JI_2021["depth_mm"], 1)

#: Scenarios drawn when nothing else is said.
DEFAULT_SCENARIOS = 1000

CITATIONS: dict[str, str] = {
    "lateral_sd_mm": "entry point error 3.4 +/- 1.7 mm with 3D-printed templates (Ji Z et al., J Radiat Res "
    "2021;62:910-917), as a 2D normal per axis: sqrt((3.4^2 + 1.7^2) / 2) = 2.69 mm",
    "angle_sd_deg": "needle angle error 2.8 +/- 1.7 deg (Ji 2021), as a 2D normal per axis: "
    "sqrt((2.8^2 + 1.7^2) / 2) = 2.32 deg",
    "depth_sd_mm": "needle depth error 0.52 +/- 0.48 cm (Ji 2021), as a 1D normal: sqrt(5.2^2 + 4.8^2) = 7.08 mm",
    "seed_jitter_sd_mm": "0: no measured along-track release spread for CT-guided spinal implants was found "
    "(engineering default); a planning study simulated 4 mm SD random seed displacement (PMID 16515813)",
    "seed_loss_probability": "0: engineering default (set it to study lost or migrated seeds)",
    "tip": "the tip error is not a parameter: lateral + angle x depth; for a 60 mm track the model gives an RMS "
    "tip error of 5.1 mm, Ji 2021's tip figure 4.4 +/- 2.9 mm an RMS of 5.3 mm",
}


def tip_rms_mm(errors: ErrorModel, depth_mm: float) -> float:
    """RMS lateral tip displacement (mm) of a needle ``depth_mm`` long under ``errors`` (2 axes, small angles)."""
    d = v.number(depth_mm, "depth_mm", lo=0.0)
    per_axis = math.hypot(errors.lateral_sd_mm, d * math.radians(errors.angle_sd_deg))
    return math.sqrt(2.0) * per_axis


@dataclass(frozen=True)
class ErrorModel:
    """Placement errors of needles and seeds (all zero-mean; see the module docstring).

    Parameters
    ----------
    lateral_sd_mm : float
        SD per axis of the needle's lateral displacement, perpendicular to its track (>= 0).
    angle_sd_deg : float
        SD per axis of the needle's tilt about its entry point (0-30 deg).
    depth_sd_mm : float
        SD of the needle's depth error along its track (>= 0).
    seed_jitter_sd_mm : float
        SD of each seed's own shift along the track when released (>= 0).
    seed_loss_probability : float
        Probability that a seed is lost (0 <= p < 1).

    Defaults and their sources: :data:`CITATIONS`.  ``from_dict(to_dict())``
    round-trips exactly (also through JSON).
    """

    lateral_sd_mm: float = LATERAL_SD_MM
    angle_sd_deg: float = ANGLE_SD_DEG
    depth_sd_mm: float = DEPTH_SD_MM
    seed_jitter_sd_mm: float = 0.0
    seed_loss_probability: float = 0.0

    def __post_init__(self) -> None:
        set_ = lambda k, x: object.__setattr__(self, k, x)
        for name in ("lateral_sd_mm", "depth_sd_mm", "seed_jitter_sd_mm"):
            set_(name, v.number(getattr(self, name), f"error model {name}", lo=0.0, hi=100.0))
        set_("angle_sd_deg", v.number(self.angle_sd_deg, "error model angle_sd_deg", lo=0.0, hi=30.0))
        set_("seed_loss_probability", v.number(self.seed_loss_probability, "error model seed_loss_probability",
                                               lo=0.0, hi=1.0, hi_open=True))

    @classmethod
    def none(cls) -> ErrorModel:
        """No error at all: every scenario is the nominal plan."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def is_zero(self) -> bool:
        """True when no scenario can differ from the nominal plan."""
        return all(getattr(self, f.name) == 0.0 for f in fields(self))

    def scaled(self, factor: float) -> ErrorModel:
        """Every SD times ``factor`` (>= 0); the loss probability is kept."""
        f = v.number(factor, "factor", lo=0.0)
        return replace(self, lateral_sd_mm=self.lateral_sd_mm * f, angle_sd_deg=self.angle_sd_deg * f,
                       depth_sd_mm=self.depth_sd_mm * f, seed_jitter_sd_mm=self.seed_jitter_sd_mm * f)

    def to_dict(self) -> dict[str, float]:
        """Plain JSON-friendly dict (the keys are the field names)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "errors") -> ErrorModel:
        """Build from a mapping; missing keys take the defaults, unknown keys are refused by name."""
        v.mapping(data, where)
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; valid keys: "
                             f"{', '.join(known)}")
        try:
            return cls(**dict(data))
        except InputError as exc:
            raise type(exc)(f"{where}: {exc}") from None


def _default_errors() -> ErrorModel:
    return ErrorModel()


@dataclass(frozen=True)
class RobustnessOptions:
    """The ``robustness`` block a case or the planning options can carry.

    Parameters
    ----------
    errors : ErrorModel
    scenarios : int
        Perturbed scenarios to draw (1-1,000,000); scenario 0, the nominal plan, comes on top.
    seed : int
        Random seed (>= 0): scenario ``k`` draws from ``numpy.random.SeedSequence(seed).spawn(n)[k]``.

    As a mapping: ``{"scenarios": 1000, "seed": 0, "errors": {ErrorModel fields}}``.
    """

    errors: ErrorModel = field(default_factory=_default_errors)
    scenarios: int = DEFAULT_SCENARIOS
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.errors, ErrorModel):
            raise InputError(f"robustness errors must be an ErrorModel, got {type(self.errors).__name__}")
        object.__setattr__(self, "scenarios", v.integer(self.scenarios, "robustness scenarios", lo=1, hi=1_000_000))
        object.__setattr__(self, "seed", v.integer(self.seed, "robustness seed", lo=0, hi=2**63 - 1))

    def to_dict(self) -> dict[str, Any]:
        return {"scenarios": self.scenarios, "seed": self.seed, "errors": self.errors.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "robustness") -> RobustnessOptions:
        """Build from a mapping; missing keys take the defaults, unknown keys are refused by name."""
        v.mapping(data, where)
        unknown = sorted(str(k) for k in data if k not in ("scenarios", "seed", "errors"))
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; valid keys: "
                             "scenarios, seed, errors")
        errors = ErrorModel.from_dict(data.get("errors", {}), f"{where}.errors")
        try:
            return cls(errors=errors, scenarios=data.get("scenarios", DEFAULT_SCENARIOS), seed=data.get("seed", 0))
        except InputError as exc:
            raise type(exc)(f"{where}: {exc}") from None


# ============================================================================ scenarios
def scenario_rng(seed: int, k: int) -> np.random.Generator:
    """The random stream of scenario ``k``: ``SeedSequence(seed).spawn(n)[k]`` for any ``n > k``."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(k),)))


# ------------------------------------------------------------------------------------ geometry
@dataclass(frozen=True, eq=False)
class Geometry:
    """The plan's needles and seeds as arrays (mm, unit vectors)."""

    entries_mm: np.ndarray      # (K, 3)
    directions: np.ndarray      # (K, 3)
    basis1: np.ndarray          # (K, 3)
    basis2: np.ndarray          # (K, 3)
    seed_needle: np.ndarray     # (M,) 0-based needle of each seed
    positions_mm: np.ndarray    # (M, 3)
    axes: np.ndarray            # (M, 3)
    strengths_U: np.ndarray     # (M,) at implant


def perpendicular_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to the unit vector ``d`` and to each other (deterministic)."""
    helper = np.zeros(3)
    helper[int(np.argmin(np.abs(d)))] = 1.0
    b1 = np.cross(d, helper)
    b1 /= np.linalg.norm(b1)
    return b1, np.cross(d, b1)


@dataclass(frozen=True, eq=False)
class ScenarioSeeds:
    """The seeds of one scenario.

    Attributes
    ----------
    positions_mm, axes : (M, 3) arrays
        Every planned seed as moved (lost ones included, in plan order).
    lost : (M,) bool array
    shift_mm : (M,) array
        How far each seed moved.
    """

    positions_mm: np.ndarray
    axes: np.ndarray
    lost: np.ndarray
    shift_mm: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        return ~self.lost


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (n, 3) arrays (``numpy.cross`` is slow on small arrays)."""
    return np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                     a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], axis=1)


def _turn(vec: np.ndarray, w: np.ndarray, sin_a: np.ndarray, one_minus_cos: np.ndarray) -> np.ndarray:
    """``(R - I) vec`` row by row, R the rotation about the unit axis ``w`` (Rodrigues); 0 where ``w`` is 0."""
    wx = _cross(w, vec)
    return sin_a[:, None] * wx + one_minus_cos[:, None] * _cross(w, wx)


def draw_scenario(geometry: Geometry, errors: ErrorModel, seed: int, k: int) -> ScenarioSeeds:
    """Move the seeds as scenario ``k`` of ``seed`` draws them (scenario 0: as planned)."""
    pos0, ax0 = geometry.positions_mm, geometry.axes
    m = len(pos0)
    if k == 0:
        return ScenarioSeeds(pos0.copy(), ax0.copy(), np.zeros(m, dtype=bool), np.zeros(m))
    rng = scenario_rng(seed, k)
    nk = len(geometry.entries_mm)
    z = rng.standard_normal((nk, 5))
    jitter = rng.standard_normal(m)
    u = rng.random(m)
    d, b1, b2 = geometry.directions, geometry.basis1, geometry.basis2
    lateral = errors.lateral_sd_mm * (z[:, 0:1] * b1 + z[:, 1:2] * b2)
    tilt = math.radians(errors.angle_sd_deg) * (z[:, 2:3] * b1 + z[:, 3:4] * b2)
    angle = np.sqrt(np.sum(tilt * tilt, axis=1))
    w = _cross(d, tilt)
    norm = np.sqrt(np.sum(w * w, axis=1))
    w = np.divide(w, norm[:, None], out=np.zeros_like(w), where=(angle > 0.0)[:, None] & (norm[:, None] > 0.0))
    sin_a, omc = np.sin(angle), 1.0 - np.cos(angle)
    d_new = d + _turn(d, w, sin_a, omc)
    n = geometry.seed_needle
    turn = _turn(pos0 - geometry.entries_mm[n], w[n], sin_a[n], omc[n])
    along = errors.depth_sd_mm * z[n, 4] + errors.seed_jitter_sd_mm * jitter
    disp = lateral[n] + turn + along[:, None] * d_new[n]
    axes = ax0 + _turn(ax0, w[n], sin_a[n], omc[n])
    lost = u < errors.seed_loss_probability
    return ScenarioSeeds(pos0 + disp, axes, lost, np.sqrt(np.sum(disp * disp, axis=1)))
