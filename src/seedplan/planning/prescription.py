"""Prescription and plan constraints for 125I spinal implants.

Every default is configurable and carries its source in :data:`CITATIONS`
(section numbers refer to ``shared/reference/clinical_planning.md``; [R] =
recalled from the literature, [C] = calculated, "engineering default" = a
choice of this project, not evidence).  Reports should print which defaults
were used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Mapping, NamedTuple

from ..errors import InputError, InputTypeError

__all__ = ["Prescription", "GoalResult", "CITATIONS", "OAR_LIMIT_METRICS"]

#: OAR metric keys a limit may refer to (keys of ``metrics["oars"][name]``).
OAR_LIMIT_METRICS = ("Dmax_Gy", "D0.1cc_Gy", "D1cc_Gy", "D2cc_Gy", "Dmean_Gy", "EQD2max_Gy", "EQD2_D0.1cc_Gy")

CITATIONS: dict[str, str] = {
    "dose_Gy": "PD 120 Gy de novo (100 Gy after prior EBRT), configurable 80-160 Gy: "
    "clinical_planning.md 1.2 engine default; spine series PD 80 Gy (Feng 2017) to MPD 90-130 Gy (PMC4690646) [V], "
    "Chinese template practice 110-160 Gy [R]",
    "seed_model": "model 6711 (TG-43U1 reference 125I seed; Rivard et al. Med Phys 2004;31:633) - clinical_planning.md 1.1",
    "activity_mCi_range": "0.3-1.0 mCi/seed: reference study (clinical_planning.md 0); 0.4-0.8 mCi most common, "
    "0.3-0.5 near the cord (1.4) [R]",
    "d90_goal_pct_of_pd": "D90 >= PD: clinical_planning.md 1.2 (plan goal) [R]",
    "v100_goal_pct": "V100 >= 95 %: clinical_planning.md 1.2 gives V100 >= 90 % with a 95 % stretch goal [R]; "
    "95 % chosen as the default goal",
    "v150_limit_pct": "V150 <= 70 %: engineering default; no spine-specific limit found. Prostate template "
    "practice keeps V150 <= 50-60 % (TG-137/ABS era) [R, not verified], but CT-guided implants through bone "
    "corridors reach fewer, converging tracks and report higher V150 (lung SBT 64.7 %, PMC5679513) [V]",
    "v200_limit_pct": "V200 <= 40 %: engineering default paired with V150 <= 70 % (prostate practice V200 <= "
    "20-30 % [R, not verified]); no spine-specific limit found",
    "oar_limits": "cord and cauda equina D0.1cc <= 50 Gy physical (<= 40 Gy after prior EBRT): "
    "clinical_planning.md 1.3 engineering default (no standardized LDR cord limit exists [?]); "
    "no sourced LDR limits for aorta or other organs, add them explicitly",
    "seed_spacing_mm": "10 mm seed centre spacing (0.5-1.0 cm, 1.0 most common; 4.5 mm seed length makes 5 mm "
    "the practical minimum): clinical_planning.md 1.4 [R]",
    "min_needle_distance_mm": "5 mm between needle tracks inside the target: template holes lie on a 5 mm grid "
    "(used at 1.0 cm for parallel needles) and non-coplanar tracks may converge; 5 mm keeps two 18G needles "
    "apart beyond the reported tip placement error 4.4 +/- 2.9 mm (Ji 2021): "
    "clinical_planning.md 1.4 [R]",
    "min_seed_canal_distance_mm": "no seed within 5 mm of the dura/cord (configurable 3-10 mm): "
    "clinical_planning.md 1.3 engineering default",
    "target_margin_mm": "PTV = GTV + 0.5-1.0 cm where anatomy allows: clinical_planning.md 1.4 [R]; "
    "5 mm used as the slot-candidate margin",
    "alpha_beta_tumour_Gy": "alpha/beta 10 Gy (tumour): clinical_planning.md 1.3 [C]",
    "alpha_beta_cord_Gy": "alpha/beta 2 Gy (spinal cord): clinical_planning.md 1.3 [R]",
    "repair_half_time_h": "T1/2,rep 1.5 h (cord; also used for tumour in the 1.3 worked numbers): "
    "clinical_planning.md 1.3 [R]",
    "half_life_d": "125I half-life 59.40 d: TG-43U1, clinical_planning.md 1.1 [V]",
}


class GoalResult(NamedTuple):
    """One checked goal: ``(goal, value, limit, passed)``."""

    goal: str
    value: float
    limit: float
    passed: bool


def _number(value: Any, name: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {value!r}")
    below = (lo is not None) and (v <= lo if lo_open else v < lo)
    if below or (hi is not None and v > hi):
        lo_s = "" if lo is None else (f"> {lo:g}" if lo_open else f">= {lo:g}")
        hi_s = "" if hi is None else f"<= {hi:g}"
        rng = " and ".join(x for x in (lo_s, hi_s) if x)
        raise InputError(f"{name} must be {rng}, got {value!r}")
    return v


class _FrozenMap(Mapping):
    """Small read-only mapping (hashable, picklable, deep-copyable)."""

    __slots__ = ("_d",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_d", dict(data))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("read-only mapping")

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        return hash(frozenset(self._d.items()))

    def __reduce__(self) -> tuple:
        return (_FrozenMap, (self._d,))

    def __repr__(self) -> str:
        return repr(self._d)


def _default_oar_limits() -> dict[str, dict[str, float]]:
    return {"cord": {"D0.1cc_Gy": 50.0}, "cauda": {"D0.1cc_Gy": 50.0}}


def _freeze_limits(limits: Any) -> Mapping[str, Mapping[str, float]]:
    if not isinstance(limits, Mapping):
        raise InputTypeError(
            "oar_limits must be a mapping {structure-name substring: {metric: limit_Gy}}, "
            f"got {type(limits).__name__}"
        )
    out: dict[str, Mapping[str, float]] = {}
    for key, lim in limits.items():
        if not isinstance(key, str) or not key.strip():
            raise InputError(f"oar_limits keys must be non-empty structure-name substrings, got {key!r}")
        if not isinstance(lim, Mapping):
            raise InputTypeError(f"oar_limits[{key!r}] must be a mapping {{metric: limit_Gy}}, got {lim!r}")
        inner: dict[str, float] = {}
        for metric, value in lim.items():
            if metric not in OAR_LIMIT_METRICS:
                raise InputError(
                    f"oar_limits[{key!r}] has unknown metric {metric!r}; valid metrics: {', '.join(OAR_LIMIT_METRICS)}"
                )
            inner[metric] = _number(value, f"oar_limits[{key!r}][{metric!r}]", 0.0, 1000.0, lo_open=True)
        out[key] = _FrozenMap(inner)
    return _FrozenMap(out)


@dataclass(frozen=True)
class Prescription:
    """Prescription, plan goals and geometric constraints (validated, cited defaults).

    Parameters
    ----------
    dose_Gy : float
        Prescription (peripheral) dose PD, 80-160 Gy.
    seed_model : str
        Seed model identifier (``"6711"``).
    activity_mCi_range : (float, float)
        Allowed apparent activity per seed, ``0 < low <= high <= 5`` mCi.
    d90_goal_pct_of_pd : float
        Goal D90 >= this % of PD (50-200).
    v100_goal_pct : float
        Goal V100 >= this %.
    v150_limit_pct, v200_limit_pct : float
        Limits V150 <= / V200 <= these %.
    oar_limits : mapping
        ``{name substring: {metric: limit}}``; a structure in ``metrics["oars"]``
        (or ``"avoidance"``) gets every limit whose key is a case-insensitive
        substring of its name.  Metrics: :data:`OAR_LIMIT_METRICS`; all limits
        are upper limits.
    seed_spacing_mm : float
        Seed centre spacing along a needle (5-20 mm).
    min_needle_distance_mm : float
        Minimum distance between needles (2-30 mm).
    min_seed_canal_distance_mm : float
        Minimum seed distance to the canal/dura (3-10 mm).
    target_margin_mm : float
        Margin around the target for seed-slot candidates (0-20 mm).
    alpha_beta_tumour_Gy, alpha_beta_cord_Gy, repair_half_time_h, half_life_d : float
        Radiobiology parameters (see :mod:`seedplan.evaluation.radiobiology`).

    Notes
    -----
    Sources of every default: :data:`CITATIONS`.  Numbers are stored as
    floats so that ``from_dict(to_dict())`` round-trips exactly (also through
    JSON).
    """

    dose_Gy: float = 120.0
    seed_model: str = "6711"
    activity_mCi_range: tuple[float, float] = (0.3, 1.0)
    d90_goal_pct_of_pd: float = 100.0
    v100_goal_pct: float = 95.0
    v150_limit_pct: float = 70.0
    v200_limit_pct: float = 40.0
    oar_limits: Mapping[str, Mapping[str, float]] = field(default_factory=_default_oar_limits)
    seed_spacing_mm: float = 10.0
    min_needle_distance_mm: float = 5.0
    min_seed_canal_distance_mm: float = 5.0
    target_margin_mm: float = 5.0
    alpha_beta_tumour_Gy: float = 10.0
    alpha_beta_cord_Gy: float = 2.0
    repair_half_time_h: float = 1.5
    half_life_d: float = 59.40

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        try:
            set_("dose_Gy", _number(self.dose_Gy, "prescription dose dose_Gy", 80.0, 160.0))
        except InputError as exc:
            raise InputError(f"{exc} (allowed prescription dose range 80-160 Gy)") from None
        if not isinstance(self.seed_model, str) or not self.seed_model.strip():
            raise InputError(f"seed_model must be a non-empty string such as '6711', got {self.seed_model!r}")
        rng = self.activity_mCi_range
        if isinstance(rng, (str, bytes)) or not hasattr(rng, "__len__") or len(rng) != 2:
            raise InputError(f"activity_mCi_range must be (low, high) in mCi, got {rng!r}")
        lo = _number(rng[0], "activity_mCi_range low", 0.0, 5.0, lo_open=True)
        hi = _number(rng[1], "activity_mCi_range high", 0.0, 5.0, lo_open=True)
        if lo > hi:
            raise InputError(f"activity_mCi_range must have low <= high, got {rng!r}")
        set_("activity_mCi_range", (lo, hi))
        set_("d90_goal_pct_of_pd", _number(self.d90_goal_pct_of_pd, "d90_goal_pct_of_pd", 50.0, 200.0))
        for name in ("v100_goal_pct", "v150_limit_pct", "v200_limit_pct"):
            set_(name, _number(getattr(self, name), name, 0.0, 100.0))
        set_("oar_limits", _freeze_limits(self.oar_limits))
        set_("seed_spacing_mm", _number(self.seed_spacing_mm, "seed_spacing_mm", 5.0, 20.0))
        set_("min_needle_distance_mm", _number(self.min_needle_distance_mm, "min_needle_distance_mm", 2.0, 30.0))
        set_(
            "min_seed_canal_distance_mm",
            _number(self.min_seed_canal_distance_mm, "min_seed_canal_distance_mm", 3.0, 10.0),
        )
        set_("target_margin_mm", _number(self.target_margin_mm, "target_margin_mm", 0.0, 20.0))
        set_("alpha_beta_tumour_Gy", _number(self.alpha_beta_tumour_Gy, "alpha_beta_tumour_Gy", 0.0, 100.0, lo_open=True))
        set_("alpha_beta_cord_Gy", _number(self.alpha_beta_cord_Gy, "alpha_beta_cord_Gy", 0.0, 100.0, lo_open=True))
        set_("repair_half_time_h", _number(self.repair_half_time_h, "repair_half_time_h", 0.0, 48.0, lo_open=True))
        set_("half_life_d", _number(self.half_life_d, "half_life_d", 0.0, 1e4, lo_open=True))

    # ---------------------------------------------------------- constructors
    @classmethod
    def after_prior_ebrt(cls, **overrides: Any) -> "Prescription":
        """Re-irradiation defaults: PD 100 Gy, cord/cauda D0.1cc <= 40 Gy (section 1.2-1.3)."""
        kw: dict[str, Any] = {"dose_Gy": 100.0, "oar_limits": {"cord": {"D0.1cc_Gy": 40.0}, "cauda": {"D0.1cc_Gy": 40.0}}}
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Prescription":
        """Build from a mapping (e.g. parsed JSON); unknown keys are rejected by name."""
        if not isinstance(data, Mapping):
            raise InputTypeError(f"a prescription must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InputError(
                f"unknown prescription key(s) {', '.join(repr(k) for k in unknown)}; valid keys: {', '.join(sorted(known))}"
            )
        kw = dict(data)
        if "activity_mCi_range" in kw and isinstance(kw["activity_mCi_range"], list):
            kw["activity_mCi_range"] = tuple(kw["activity_mCi_range"])
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (lists and dicts only)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "activity_mCi_range":
                v = list(v)
            elif f.name == "oar_limits":
                v = {k: dict(inner) for k, inner in v.items()}
            out[f.name] = v
        return out

    # ---------------------------------------------------------------- checks
    def limits_for(self, structure_name: str) -> dict[str, float]:
        """All OAR limits whose key is a case-insensitive substring of ``structure_name``.

        When several keys match and set the same metric, the lowest limit wins.
        """
        lname = structure_name.lower()
        out: dict[str, float] = {}
        for key, lim in self.oar_limits.items():
            if key.lower() in lname:
                for metric, value in lim.items():
                    out[metric] = min(value, out.get(metric, math.inf))
        return out

    def goals_check(self, metrics: Mapping[str, Any]) -> list[GoalResult]:
        """Check plan goals against an ``evaluate(...).metrics`` layout.

        Returns
        -------
        list of GoalResult
            ``(goal, value, limit, passed)`` for the target goals (D90, V100,
            V150, V200) when a target was evaluated, then every OAR limit
            matching an OAR/avoidance structure name.
        """
        if not isinstance(metrics, Mapping):
            raise InputTypeError(f"metrics must be the mapping from evaluate(), got {type(metrics).__name__}")
        pd = metrics.get("prescription_Gy")
        if pd is not None and not math.isclose(float(pd), self.dose_Gy, rel_tol=1e-9):
            raise InputError(
                f"metrics were computed for prescription {pd} Gy but this prescription is {self.dose_Gy} Gy; "
                "re-evaluate with the same prescription dose"
            )
        out: list[GoalResult] = []
        target = metrics.get("target")
        if target:
            name = target.get("name", "target")
            d90_lim = self.d90_goal_pct_of_pd / 100.0 * self.dose_Gy
            checks = [
                (f"{name} D90_Gy >= {d90_lim:g}", "D90_Gy", d90_lim, True),
                (f"{name} V100_pct >= {self.v100_goal_pct:g}", "V100_pct", self.v100_goal_pct, True),
                (f"{name} V150_pct <= {self.v150_limit_pct:g}", "V150_pct", self.v150_limit_pct, False),
                (f"{name} V200_pct <= {self.v200_limit_pct:g}", "V200_pct", self.v200_limit_pct, False),
            ]
            for goal, key, lim, at_least in checks:
                if key not in target:
                    raise InputError(f"metrics['target'] has no {key!r}; pass the layout returned by evaluate()")
                val = float(target[key])
                out.append(GoalResult(goal, val, lim, val >= lim if at_least else val <= lim))
        for group in ("oars", "avoidance"):
            for sname, m in (metrics.get(group) or {}).items():
                for metric, lim in self.limits_for(sname).items():
                    if metric not in m:
                        raise InputError(f"metrics[{group!r}][{sname!r}] has no {metric!r} needed by a limit")
                    val = float(m[metric])
                    out.append(GoalResult(f"{sname} {metric} <= {lim:g}", val, lim, val <= lim))
        return out
