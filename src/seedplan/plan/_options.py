"""How a plan is made: the needle constraints and the planning options (values recorded in the plan).

The planner (:mod:`seedplan.planning`) reads them; the case file's
``planning`` block is a :class:`PlanningOptions`; the plan file keeps the
options it was made with, so a re-plan in the CT room starts from the same
settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping

from .. import _validate as v
from ._placement import RobustnessOptions
from ..errors import InputError

__all__ = ["NeedleConstraints", "PlanningOptions", "DEFAULT_MARGINS_MM", "FORAMEN_MARGIN_MM", "CEMENT_MODEL_NAMES", "BONE_MIN_HU"]

#: Default safety margins (mm) per forbidden structure (clinical_planning.md 4:
#: canal/dura 3-5 mm, aorta/IVC 5 mm; kidney 5 mm).  Unknown names use
#: ``NeedleConstraints.default_margin_mm``.
DEFAULT_MARGINS_MM: Mapping[str, float] = MappingProxyType(
    {
        "spinal_canal": 5.0,
        "canal": 5.0,
        "cord": 5.0,
        "spinal_cord": 5.0,
        "dura": 5.0,
        "cauda_equina": 5.0,
        "aorta": 5.0,
        "ivc": 5.0,
        "kidney_left": 5.0,
        "kidney_right": 5.0,
        "kidney": 5.0,
    }
)
#: Margin (mm) of a neural foramen (a name holding ``foramen``, e.g. ``sacral_foramen_canal_S2_left``) not named
#: in :data:`DEFAULT_MARGINS_MM` or the constraints: the low end of the canal/dura 3-5 mm (clinical_planning.md 4),
#: as the structure is the whole bony tunnel and its root fills only part of it (lumbar root to pedicle wall
#: 2.4-9.6 mm, PMC2200778).  With 5 mm the dorsal sacrum between the S1-S3 foramina and the canal holds no
#: needle path to S2 (the foramina 8-32 mm from the midline, the canal 13 mm wide each side).
FORAMEN_MARGIN_MM = 3.0

#: Volume models of the planned cement (:data:`seedplan.planning.cement.CEMENT_MODELS`).
CEMENT_MODEL_NAMES = ("combined", "pvp")

#: Scenarios of robust planning when the ``robust`` block does not say (each adds the samples to the optimiser).
ROBUST_PLANNING_SCENARIOS = 10

#: HU above which voxels count as bone a needle cannot cross (cortical and dense cancellous bone).
BONE_MIN_HU = 250.0

#: An implant date this many days (about one 125I half-life) or more before the calibration date is refused:
#: the seeds would be twice as strong at the implant as at their calibration.
MAX_DAYS_IMPLANT_BEFORE_CALIBRATION = 60.0


def check_dates(calibration_date: str | None, implant_date: str | None, where: str = "") -> None:
    """Refuse an implant date long before the calibration date (a typo, not a plan)."""
    if not (calibration_date and implant_date):
        return
    import datetime as _dt

    days = (_dt.datetime.fromisoformat(calibration_date) - _dt.datetime.fromisoformat(implant_date)).total_seconds()
    days /= 86400.0
    if days >= MAX_DAYS_IMPLANT_BEFORE_CALIBRATION:
        raise InputError(
            f"{where}implant_date {implant_date} is {days:.0f} days before calibration_date {calibration_date}: the "
            f"seeds would be {2 ** (days / 59.4):.1f} x stronger at the implant than calibrated; check the dates "
            "(seeds are calibrated before the implant, or for a reference date a few days after it)")


@dataclass(frozen=True)
class NeedleConstraints:
    """Hard limits and soft-cost weights of the needle planner.

    Parameters
    ----------
    max_depth_mm : float
        Usable needle length skin->tip (15 cm usable of an 18G needle, section 4).
    max_axial_tilt_deg : float
        Largest cranio-caudal tilt (angle to the axial plane), a gantry-tilt-like limit.
    max_angle_from_vertical_deg : float
        Largest in-plane angle from the AP direction (section 4: <= 45-60 deg).
    margins_mm : mapping of str to float, optional
        Safety margin per forbidden structure; overrides :data:`DEFAULT_MARGINS_MM`.
    default_margin_mm : float
        Margin for structures not named anywhere (a neural foramen:
        :data:`FORAMEN_MARGIN_MM`).
    min_needle_distance_mm : float
        Minimum distance between the in-target parts of two needles (1.0 cm, section 1.4).
    min_entry_distance_mm : float
        Minimum distance between two skin entry points (template hole pitch).
    min_track_distance_mm : float
        Minimum distance between two whole needles, skin to tip, so that
        non-coplanar needles never touch outside the target.
    allow_bone_drill : bool
        If False, bone outside ``bone_allowed`` is a hard obstacle (cleared by ``bone_margin_mm``).
    bone_margin_mm : float
        Clearance from forbidden-bone voxel centres (needle radius + rounding).
    tip_inset_mm : float
        Tip distance inside the distal target edge (first seed ~5 mm inside, section 3).
    min_chord_mm : float
        Minimum target length a seed needle must host.
    coverage_radius_mm : float
        A target point is covered when within this distance of a needle track.
    coverage_goal : float
        Automatic needle count stops at this covered fraction ...
    min_gain_fraction : float
        ... or when the next needle adds less than this fraction.
    max_needles : int
        Upper bound on the automatic needle count.
    direction_step_deg : float
        Angular sampling step of candidate directions (2-5 deg).
    line_pitch_mm : float
        Spacing of parallel candidate lines per direction (free mode).
    template_hole_pitch_mm : float
        Hole pitch of the coplanar template (5 mm, section 1.4).
    w_length_per_mm, w_angle_per_deg, w_tilt_per_deg, w_clearance_mm, w_bone_per_mm, w_target_per_mm : float
        Weights of the cost J (see module docstring): per mm of depth, per
        degree from the AP axis, per degree of cranio-caudal tilt, times
        1/clearance summed over structures, per mm of bone, per mm of target chord.
    w_cost_vs_coverage : float
        Needle-set objective: 100 * coverage gain - this * J.
    """

    max_depth_mm: float = 150.0
    max_axial_tilt_deg: float = 20.0
    max_angle_from_vertical_deg: float = 60.0
    margins_mm: Mapping[str, float] = field(default_factory=dict)
    default_margin_mm: float = 5.0
    min_needle_distance_mm: float = 10.0
    min_entry_distance_mm: float = 5.0
    min_track_distance_mm: float = 3.0
    allow_bone_drill: bool = False
    bone_margin_mm: float = 1.0
    tip_inset_mm: float = 5.0
    min_chord_mm: float = 5.0
    coverage_radius_mm: float = 8.0
    coverage_goal: float = 0.95
    min_gain_fraction: float = 0.01
    max_needles: int = 20
    direction_step_deg: float = 4.0
    line_pitch_mm: float = 4.0
    template_hole_pitch_mm: float = 5.0
    w_length_per_mm: float = 0.05
    w_angle_per_deg: float = 0.1
    w_tilt_per_deg: float = 1.0
    w_clearance_mm: float = 10.0
    w_bone_per_mm: float = 0.5
    w_target_per_mm: float = 0.2
    w_cost_vs_coverage: float = 0.1

    def __post_init__(self) -> None:
        pos = [
            "max_depth_mm",
            "direction_step_deg",
            "line_pitch_mm",
            "template_hole_pitch_mm",
            "coverage_radius_mm",
        ]
        nonneg = [
            "default_margin_mm",
            "min_needle_distance_mm",
            "min_entry_distance_mm",
            "min_track_distance_mm",
            "bone_margin_mm",
            "tip_inset_mm",
            "min_chord_mm",
            "min_gain_fraction",
            "w_length_per_mm",
            "w_angle_per_deg",
            "w_tilt_per_deg",
            "w_clearance_mm",
            "w_bone_per_mm",
            "w_target_per_mm",
            "w_cost_vs_coverage",
            "max_axial_tilt_deg",
            "max_angle_from_vertical_deg",
        ]
        for name in pos + nonneg:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"NeedleConstraints.{name} must be a finite number, got {v!r}")
            if (name in pos and v <= 0) or v < 0:
                raise InputError(f"NeedleConstraints.{name} must be {'> 0' if name in pos else '>= 0'}, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.max_axial_tilt_deg >= 90 or self.max_angle_from_vertical_deg >= 90:
            raise InputError("max_axial_tilt_deg and max_angle_from_vertical_deg must be < 90")
        if not 0 < self.coverage_goal <= 1:
            raise InputError(f"coverage_goal must be in (0, 1], got {self.coverage_goal!r}")
        if not isinstance(self.max_needles, int) or self.max_needles < 1:
            raise InputError(f"max_needles must be an integer >= 1, got {self.max_needles!r}")
        if not isinstance(self.allow_bone_drill, bool):
            raise InputError(f"allow_bone_drill must be a bool, got {self.allow_bone_drill!r}")
        margins = {}
        for k, v in dict(self.margins_mm).items():
            if not isinstance(k, str) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"margins_mm must map structure names to finite margins >= 0 mm, got {k!r}: {v!r}")
            margins[k] = float(v)
        object.__setattr__(self, "margins_mm", MappingProxyType(margins))

    def __hash__(self) -> int:  # mappingproxy is unhashable; hash the plain items
        return hash(tuple((k, getattr(self, k)) for k in self.__dataclass_fields__ if k != "margins_mm"))

    def margin_for(self, name: str) -> float:
        """Safety margin (mm) applied to the forbidden structure ``name``."""
        if name in self.margins_mm:
            return self.margins_mm[name]
        if name in DEFAULT_MARGINS_MM:
            return float(DEFAULT_MARGINS_MM[name])
        return FORAMEN_MARGIN_MM if "foramen" in name.lower() else self.default_margin_mm



    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (exact round trip with :meth:`from_dict`)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["margins_mm"] = dict(self.margins_mm)
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str = "needle_constraints") -> "NeedleConstraints":
        """Build from a mapping; unknown keys are refused by name."""
        return cls(**_known_keys(cls, data, where))


def _known_keys(cls: type, data: Any, where: str) -> dict[str, Any]:
    v.mapping(data, where)
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                         f"valid keys: {', '.join(sorted(known))}")
    return dict(data)


def _default_constraints() -> NeedleConstraints:
    return NeedleConstraints(coverage_radius_mm=5.0)


@dataclass(frozen=True)
class PlanningOptions:
    """Settings of the automatic chain that are not part of the prescription.

    Attributes
    ----------
    needle_mode : {"free", "coplanar"}
        Non-coplanar needles (3D-printed individual template) or parallel needles on a template grid.
    needle_constraints : NeedleConstraints
        Needle limits; its ``min_needle_distance_mm`` is replaced by the prescription's.
    min_seed_distance_mm : float
        Minimum distance between seeds on different needles (crossing tracks).
    formalism : {"2D", "1D", "1D-point"}
    bone_min_hu : float
        Bone threshold for needle paths.
    bone_access : {"auto", "corridor", "drill"}
        Which bone a needle may cross.  ``"corridor"``: only the treated vertebral body and its
        pedicles (trocar access, as in vertebroplasty); ``"drill"``: any bone, with a bone drill
        or coaxial trocar (the path cost still counts every mm of bone); ``"auto"`` (default): the
        corridor for thoracic and lumbar levels, drill access for the sacrum, which is reached
        through the dorsal sacrum, the ala or the ilium (posterior, long-axis and transiliac
        approaches), chosen by the same optimisation.
    dose_spacing_mm : float
        Spacing of the exported dose grid.
    dose_margin_mm : float
        Margin of the dose grid around the target, the seeds and the organs it covers.
    dose_oar_reach_mm : float
        The dose grid (and the exported RTDOSE) covers every organ at risk closer than this to a seed
        (:data:`~seedplan.plan.OAR_REACH_MM`).
    sample_points_per_mm3 : float
        Density of target/OAR samples for the optimiser.
    calibration_date, implant_date : str, optional
        ISO dates (default: today for both).
    rng_seed : int
        Seed of every randomised step (deterministic plans).
    pvp_approach : {"transpedicular", "parapedicular"} or None
        Also plan the vertebroplasty needles into the treated vertebral body
        (None: skip, and no cement).
    pvp_bilateral : bool
        Bipedicular (one needle per side, the default) or unipedicular (one
        needle aimed at the midline).  When one side is blocked, a bipedicular
        request falls back to a single needle, with a warning.
    cement : bool
        Plan and simulate the cement from the vertebroplasty needle tips.
    cement_volume_mL : float, optional
        Inject this volume instead of the recommended one.
    cement_model : {"combined", "pvp"}
        Volume model (:data:`~seedplan.planning.cement.CEMENT_MODELS`):
        ``"combined"`` (seeds treat the lesion, cement restores strength,
        1-5 mL) or ``"pvp"`` (vertebroplasty alone, cavity filled, 2-9 mL).
    cement_material : str
        A :data:`~seedplan.dose.materials.CEMENT_MATERIALS` key; the default
        30 wt% BaSO4 is a stand-in: enter the product actually used.
    cement_seed_margin_mm : float
        Seeds stay this far outside radiopaque cement.
    heterogeneity : bool
        Also evaluate the dose with the cement/bone primary-attenuation
        correction (:mod:`seedplan.dose.heterogeneity`) when cement is planned.
    dose_model : {"tg43", "corrected"}
        The dose the seeds are optimised on and the goals are checked on: ``"tg43"`` (default), the
        TG-43 dose to water; ``"corrected"``, the cement/bone-corrected dose (TG-43 x primary
        attenuation through the planned cement and the bone, approximate, not TG-186), so the seeds
        make up for the shadow of radiopaque cement.  A corrected plan also records the TG-43 plan
        of the same options (its seeds, activity and both doses on the optimiser's samples) for a side
        by side comparison.  Needs ``heterogeneity`` and planned cement; without cement the TG-43
        dose is used, with a note.
    robust : RobustnessOptions or mapping, optional
        Robust planning: the seeds are optimised over ``robust.scenarios`` needle-placement scenarios drawn
        from ``robust.errors`` (:class:`~seedplan.plan.ErrorModel`, Ji et al. 2021 by default) besides the
        nominal one: every goal on the samples of all scenarios pooled (the coverage and the organs'
        hottest volumes expected over the scenarios).  The optimiser may trade fewer, stronger seeds for
        more, weaker ones where that keeps the coverage when needles miss.  10-100 scenarios (the time of
        the optimiser grows with them); None (default) plans the nominal placement.
    """

    needle_mode: str = "free"
    needle_constraints: NeedleConstraints = field(default_factory=_default_constraints)
    min_seed_distance_mm: float = 6.0
    formalism: str = "2D"
    bone_min_hu: float = BONE_MIN_HU
    bone_access: str = "auto"
    dose_spacing_mm: float = 1.0
    dose_margin_mm: float = 25.0
    dose_oar_reach_mm: float = 50.0
    sample_points_per_mm3: float = 0.5
    calibration_date: str | None = None
    implant_date: str | None = None
    rng_seed: int = 0
    pvp_approach: str | None = "transpedicular"
    pvp_bilateral: bool = True
    cement: bool = True
    cement_volume_mL: float | None = None
    cement_model: str = "combined"
    cement_material: str = "pmma-baso4-30"
    cement_seed_margin_mm: float = 1.0
    heterogeneity: bool = True
    dose_model: str = "tg43"
    robust: RobustnessOptions | None = None

    def __post_init__(self) -> None:
        from ..dose.materials import cement_material

        set_ = lambda k, x: object.__setattr__(self, k, x)  # noqa: E731
        v.choice(self.needle_mode, "needle_mode", ("free", "coplanar"))
        if isinstance(self.needle_constraints, Mapping):
            set_("needle_constraints", NeedleConstraints.from_dict(self.needle_constraints))
        elif not isinstance(self.needle_constraints, NeedleConstraints):
            raise InputError(f"needle_constraints must be a NeedleConstraints or a mapping, got "
                             f"{type(self.needle_constraints).__name__}")
        set_("min_seed_distance_mm", v.number(self.min_seed_distance_mm, "min_seed_distance_mm", lo=0.0, hi=50.0))
        v.choice(self.formalism, "formalism", ("2D", "1D", "1D-point"))
        set_("bone_min_hu", v.number(self.bone_min_hu, "bone_min_hu", lo=-1000.0, hi=3000.0))
        v.choice(self.bone_access, "bone_access", ("auto", "corridor", "drill"))
        set_("dose_spacing_mm", v.number(self.dose_spacing_mm, "dose_spacing_mm", lo=0.1, hi=10.0))
        set_("dose_margin_mm", v.number(self.dose_margin_mm, "dose_margin_mm", lo=0.0, hi=200.0))
        set_("dose_oar_reach_mm", v.number(self.dose_oar_reach_mm, "dose_oar_reach_mm", lo=0.0, hi=300.0))
        set_("sample_points_per_mm3", v.number(self.sample_points_per_mm3, "sample_points_per_mm3", lo=0.0,
                                               hi=64.0, lo_open=True))
        for k in ("calibration_date", "implant_date"):
            if getattr(self, k) is not None:
                v.iso_date(getattr(self, k), k)
        check_dates(self.calibration_date, self.implant_date)
        v.integer(self.rng_seed, "rng_seed", lo=0)
        v.choice(self.pvp_approach, "pvp_approach", ("transpedicular", "parapedicular", None))
        for k in ("cement", "heterogeneity", "pvp_bilateral"):
            v.flag(getattr(self, k), f"planning option {k}")
        if self.cement_volume_mL is not None:
            set_("cement_volume_mL", v.number(self.cement_volume_mL, "cement_volume_mL (a volume in mL, or null "
                                              "to use the recommendation)", lo=0.0, lo_open=True))
        v.choice(self.cement_model, "cement_model", CEMENT_MODEL_NAMES)
        v.choice(self.dose_model, "dose_model", ("tg43", "corrected"))
        if isinstance(self.robust, Mapping):
            set_("robust", RobustnessOptions.from_dict(
                {"scenarios": ROBUST_PLANNING_SCENARIOS, **self.robust}, "robust"))
        if self.robust is not None:
            if not isinstance(self.robust, RobustnessOptions):
                raise InputError(f"robust must be a RobustnessOptions, a mapping like {{'scenarios': 20, 'errors': "
                                 f"{{...}}}} or None, got {type(self.robust).__name__}")
            if self.robust.scenarios > 100:
                raise InputError(f"robust planning over {self.robust.scenarios} scenarios: each adds the target's and "
                                 "organs' samples to the optimiser; use 10-100 (the robustness analysis is the place "
                                 "for 1000s)")
        if self.dose_model == "corrected" and not self.heterogeneity:
            raise InputError("dose_model='corrected' plans on the cement/bone-corrected dose, which needs "
                             "heterogeneity=True")
        cement_material(self.cement_material)
        set_("cement_seed_margin_mm", v.number(self.cement_seed_margin_mm, "cement_seed_margin_mm", lo=0.0, hi=20.0))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (exact round trip with :meth:`from_dict`)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["needle_constraints"] = self.needle_constraints.to_dict()
        d["robust"] = self.robust.to_dict() if self.robust is not None else None
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str = "planning") -> "PlanningOptions":
        """Build from a mapping (a case file's ``planning`` block); unknown keys are refused by name."""
        kw = _known_keys(cls, data, where)
        if "needle_constraints" in kw:
            kw["needle_constraints"] = NeedleConstraints.from_dict(kw["needle_constraints"],
                                                                   f"{where}.needle_constraints")
        try:
            return cls(**kw)
        except InputError as exc:
            raise type(exc)(f"{where}: {exc}") from None
