"""Prescription and plan constraints for 125I spinal implants.

Every default is configurable and carries its source in :data:`CITATIONS`,
written as a reader would cite it: the published reference, or "a default of
this project" where no evidence was found.  The report prints them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Iterator, Mapping

from .. import _validate as v
from ..errors import InputError, InputTypeError
from ..imaging.structures import COMBINED_TARGET
from ._goals import Goal, GoalResult, check_goals

__all__ = ["Prescription", "CITATIONS", "OAR_LIMIT_METRICS"]

#: OAR metric keys a limit may refer to (keys of ``metrics["oars"][name]``).
OAR_LIMIT_METRICS = ("Dmax_Gy", "D0.1cc_Gy", "D1cc_Gy", "D2cc_Gy", "Dmean_Gy", "EQD2max_Gy", "EQD2_D0.1cc_Gy")

CITATIONS: dict[str, str] = {
    "dose_Gy": "PD 120 Gy for a first implant (100 Gy after prior external-beam radiotherapy), configurable 80-160 "
    "Gy. Spine series prescribed 80 Gy (Feng Z et al., Chin J Radiol Med Prot 2017;37:763-766) to a matched "
    "peripheral dose of 90-130 Gy (a CT-guided series of 20 patients with spinal metastases, PubMed Central "
    "PMC4690646); template implant practice in China uses 110-160 Gy (Wang J et al., J Cancer Res Ther "
    "2017;13:607-612).",
    "seed_model": "Model 6711, the reference 125I seed of the AAPM TG-43U1 report (Rivard MJ et al., Med Phys "
    "2004;31:633-674).",
    "activity_mCi_range": "0.3-1.0 mCi per seed, the range of the PVP + 125I reference study; 0.4-0.8 mCi is the "
    "most common range of CT-guided implants, 0.3-0.5 mCi near the cord (Feng 2017).",
    "d90_goal_pct_of_pd": "D90 >= PD, the usual goal of permanent 125I implants (AAPM TG-137, Nath R et al., Med Phys "
    "2009;36:5310-5322).",
    "v100_goal_pct": "V100 >= 95 %: post-implant practice asks at least 90 % (Nag S et al., Int J Radiat Oncol Biol "
    "Phys 2000;46:221-230); 95 % is a default of this project.",
    "v150_limit_pct": "V150 <= 70 %: a default of this project; no spine-specific limit was found. Prostate practice "
    "keeps V150 near 50-60 %, but CT-guided implants through bone corridors converge and report higher values "
    "(64.7 % in lung, PubMed Central PMC5679513).",
    "v200_limit_pct": "V200 <= 40 %: a default of this project, paired with V150 <= 70 %; no spine-specific limit was "
    "found.",
    "oar_limits": "Cord, cauda equina and sacral roots (foramina) D0.1cc <= 50 Gy physical dose (<= 40 Gy after prior "
    "radiotherapy): a default of this project. No standard limit exists for a permanent implant; spine series reported a mean cord dose of "
    "30.5 Gy (Feng 2017) and a median of 39 Gy after prior radiotherapy (Yao L et al., Biomed Res Int "
    "2016:8265907) without myelopathy. No sourced limits exist for the aorta or other organs: add them explicitly.",
    "seed_spacing_mm": "10 mm between seed centres along a needle, the most common spacing of CT-guided template "
    "implants (5-10 mm are used; a 4.5 mm seed makes 5 mm the practical minimum).",
    "min_needle_distance_mm": "5 mm between needle tracks inside the target: template holes lie on a 5 mm grid, and 5 "
    "mm keeps two 18G needles apart beyond the tip placement error of 4.4 +/- 2.9 mm reported with 3D-printed "
    "templates (Ji Z et al., J Radiat Res 2021;62:910-917).",
    "min_seed_canal_distance_mm": "No seed within 5 mm of the spinal canal (configurable 3-10 mm): a default of this "
    "project.",
    "target_margin_mm": "Seed positions within 5 mm of the target: template practice expands the GTV by 5-10 mm where "
    "the anatomy allows.",
    "alpha_beta_tumour_Gy": "alpha/beta 10 Gy for the tumour, the usual value for carcinoma.",
    "alpha_beta_cord_Gy": "alpha/beta 2 Gy for the spinal cord.",
    "repair_half_time_h": "Repair half-time 1.5 h (cord; also used for the tumour), in the permanent-implant BED of "
    "Dale RG, Br J Radiol 1985;58:515-528.",
    "half_life_d": "125I half-life 59.40 d (Rivard et al. 2004, TG-43U1).",
}


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
    return {"cord": {"D0.1cc_Gy": 50.0}, "cauda": {"D0.1cc_Gy": 50.0}, "foramen": {"D0.1cc_Gy": 50.0},
            "root": {"D0.1cc_Gy": 50.0}}


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
            inner[metric] = v.number(value, f"oar_limits[{key!r}][{metric!r}]", lo=0.0, hi=1000.0, lo_open=True)
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
            set_("dose_Gy", v.number(self.dose_Gy, "prescription dose dose_Gy", lo=80.0, hi=160.0))
        except InputError as exc:
            raise type(exc)(f"{exc} (allowed prescription dose range 80-160 Gy)") from None
        if not isinstance(self.seed_model, str) or not self.seed_model.strip():
            raise InputError(f"seed_model must be a non-empty string such as '6711', got {self.seed_model!r}")
        rng = self.activity_mCi_range
        if isinstance(rng, (str, bytes)) or not hasattr(rng, "__len__") or len(rng) != 2:
            raise InputError(f"activity_mCi_range must be (low, high) in mCi, got {rng!r}")
        lo = v.number(rng[0], "activity_mCi_range low", lo=0.0, hi=5.0, lo_open=True)
        hi = v.number(rng[1], "activity_mCi_range high", lo=0.0, hi=5.0, lo_open=True)
        if lo > hi:
            raise InputError(f"activity_mCi_range must have low <= high, got {rng!r}")
        set_("activity_mCi_range", (lo, hi))
        set_("d90_goal_pct_of_pd", v.number(self.d90_goal_pct_of_pd, "d90_goal_pct_of_pd", lo=50.0, hi=200.0))
        for name in ("v100_goal_pct", "v150_limit_pct", "v200_limit_pct"):
            set_(name, v.number(getattr(self, name), name, lo=0.0, hi=100.0))
        set_("oar_limits", _freeze_limits(self.oar_limits))
        set_("seed_spacing_mm", v.number(self.seed_spacing_mm, "seed_spacing_mm", lo=5.0, hi=20.0))
        set_("min_needle_distance_mm", v.number(self.min_needle_distance_mm, "min_needle_distance_mm", lo=2.0, hi=30.0))
        set_(
            "min_seed_canal_distance_mm",
            v.number(self.min_seed_canal_distance_mm, "min_seed_canal_distance_mm", lo=3.0, hi=10.0),
        )
        set_("target_margin_mm", v.number(self.target_margin_mm, "target_margin_mm", lo=0.0, hi=20.0))
        set_("alpha_beta_tumour_Gy", v.number(self.alpha_beta_tumour_Gy, "alpha_beta_tumour_Gy", lo=0.0, hi=100.0, lo_open=True))
        set_("alpha_beta_cord_Gy", v.number(self.alpha_beta_cord_Gy, "alpha_beta_cord_Gy", lo=0.0, hi=100.0, lo_open=True))
        set_("repair_half_time_h", v.number(self.repair_half_time_h, "repair_half_time_h", lo=0.0, hi=48.0, lo_open=True))
        set_("half_life_d", v.number(self.half_life_d, "half_life_d", lo=0.0, hi=1e4, lo_open=True))

    # ---------------------------------------------------------- constructors
    @classmethod
    def after_prior_ebrt(cls, **overrides: Any) -> "Prescription":
        """Re-irradiation defaults: PD 100 Gy, cord/cauda/sacral-root D0.1cc <= 40 Gy (see :data:`CITATIONS`)."""
        kw: dict[str, Any] = {"dose_Gy": 100.0, "oar_limits": {k: {"D0.1cc_Gy": 40.0}
                                                               for k in ("cord", "cauda", "foramen", "root")}}
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

    def goals(self, target: str = "target", organs: Iterable[tuple[str, str]] = ()) -> tuple[Goal, ...]:
        """The plan goals: the target's D90, V100, V150, V200, then every OAR limit that applies.

        Parameters
        ----------
        target : str
            Name of the target structure.
        organs : iterable of (name, group)
            Evaluated organ structures and their group in the metrics layout
            (``"oars"`` or ``"avoidance"``); each gets the limits of :meth:`limits_for`.
        """
        out = [
            Goal(target, "D90_Gy", ">=", self.d90_goal_pct_of_pd / 100.0 * self.dose_Gy),
            Goal(target, "V100_pct", ">=", self.v100_goal_pct),
            Goal(target, "V150_pct", "<=", self.v150_limit_pct),
            Goal(target, "V200_pct", "<=", self.v200_limit_pct),
        ]
        for name, group in organs:
            out.extend(Goal(name, metric, "<=", lim, group) for metric, lim in self.limits_for(name).items())
        return tuple(out)

    def goals_for_metrics(self, metrics: Mapping[str, Any]) -> tuple[Goal, ...]:
        """The goals that apply to the structures of an ``evaluate(...).metrics`` layout."""
        if not isinstance(metrics, Mapping):
            raise InputTypeError(f"metrics must be the mapping from evaluate(), got {type(metrics).__name__}")
        pd = metrics.get("prescription_Gy")
        if pd is not None and not math.isclose(float(pd), self.dose_Gy, rel_tol=1e-9):
            raise InputError(
                f"metrics were computed for prescription {pd} Gy but this prescription is {self.dose_Gy} Gy; "
                "re-evaluate with the same prescription dose"
            )
        target = metrics.get("target")
        organs = [(n, g) for g in ("oars", "avoidance") for n in (metrics.get(g) or {})]
        levels = [n for n in (metrics.get("targets") or {}) if n != COMBINED_TARGET]
        if target and target.get("name") == COMBINED_TARGET and levels:
            # several lesions planned as one implant: each level's target has the target goals
            return tuple(g for n in levels for g in self.goals(n)) + self.goals(COMBINED_TARGET, organs)[4:]
        goals = self.goals(target.get("name", "target"), organs) if target else self.goals("target", organs)[4:]
        return goals

    def goals_check(self, metrics: Mapping[str, Any]) -> list[GoalResult]:
        """Check the plan goals against an ``evaluate(...).metrics`` layout.

        Returns
        -------
        list of GoalResult
            ``(goal, value, limit, passed)`` for the target goals (D90, V100,
            V150, V200) when a target was evaluated, then every OAR limit
            matching an OAR/avoidance structure name.
        """
        return check_goals(self.goals_for_metrics(metrics), metrics)
