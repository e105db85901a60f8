"""seedplan.verification: the CT room and after the implant.

* :mod:`~seedplan.verification.registration`: rigid registration of a later CT to the planning CT
  (:func:`register_ct`), or a transform given by the user (:func:`registration_from_matrix`,
  :func:`read_registration`); a :class:`Registration` is checked (bone agreement, plausible motion) and a
  failed one is never used (:class:`RegistrationError`);
* :mod:`~seedplan.verification.needles`: the needles actually placed, found on the intra-operative CT and
  matched to the plan with their deviations (:func:`verify_needles`; ``actual_needles()`` for a re-plan);
* :mod:`~seedplan.verification.seeds`: the seeds found on the post-operative CT (touching ones split) and
  matched to the plan: pairs, missing, extra (:func:`verify_seeds`);
* :mod:`~seedplan.verification.cement`: the radiopaque cement on the post-operative CT, its volume, fill,
  cross-section, endplate contact and leaks by site (:func:`verify_cement`);
* :mod:`~seedplan.verification.postplan`: the plan as delivered (:func:`delivered_plan`) and planned vs
  delivered (:func:`comparison`);
* :mod:`~seedplan.verification.synthetic`: synthetic intra- and post-operative CTs of a plan with known truth
  (:func:`synthetic_ct`).

Everything is reported in the planning frame (patient LPS of the planning CT) after the registration; what is
detected keeps the later CT's frame too.  Typical use::

    reg = register_ct(post_ct, planning_ct, plan=plan)          # checked; reg.check_image(...) to look
    seeds = verify_seeds(post_ct, plan, reg, planning_ct=planning_ct)
    cement = verify_cement(post_ct, planning_ct, reg, structures, plan=plan)
"""

from .cement import SITES, CementLeak, CementVerification, verify_cement
from .needles import (
    DetectedNeedle,
    NeedleDetection,
    NeedleDeviation,
    NeedleVerification,
    detect_needles,
    match_needles,
    verify_needles,
)
from .registration import (
    Registration,
    RegistrationError,
    as_registration,
    read_registration,
    register_ct,
    registration_from_matrix,
)
from .postplan import comparison, delivered_plan, postplan_record
from .seeds import DetectedSeed, SeedDetection, SeedPair, SeedVerification, detect_seeds, match_seeds, verify_seeds
from .synthetic import JI_2021, NO_ERRORS, NeedleErrorModel, SyntheticCT, SyntheticTruth, rigid_motion, synthetic_ct

__all__ = [
    "Registration",
    "RegistrationError",
    "register_ct",
    "registration_from_matrix",
    "read_registration",
    "as_registration",
    "DetectedNeedle",
    "NeedleDetection",
    "NeedleDeviation",
    "NeedleVerification",
    "detect_needles",
    "match_needles",
    "verify_needles",
    "DetectedSeed",
    "SeedDetection",
    "SeedPair",
    "SeedVerification",
    "detect_seeds",
    "match_seeds",
    "verify_seeds",
    "CementLeak",
    "CementVerification",
    "verify_cement",
    "SITES",
    "NeedleErrorModel",
    "JI_2021",
    "NO_ERRORS",
    "SyntheticCT",
    "SyntheticTruth",
    "synthetic_ct",
    "rigid_motion",
    "delivered_plan",
    "comparison",
    "postplan_record",
]
