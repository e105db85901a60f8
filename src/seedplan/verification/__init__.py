"""seedplan.verification: the CT room and after the implant.

* :mod:`~seedplan.verification.registration`: rigid registration of a later CT to the planning CT
  (:func:`register_ct`), or a transform given by the user (:func:`registration_from_matrix`,
  :func:`read_registration`), checked before use;
* :mod:`~seedplan.verification.needles`: the needles actually placed, found on the intra-operative CT and
  matched to the plan (:func:`verify_needles`);
* :mod:`~seedplan.verification.seeds`: the seeds found on the post-operative CT and matched to the plan
  (:func:`verify_seeds`);
* :mod:`~seedplan.verification.cement`: the radiopaque cement on the post-operative CT, its volume, fill
  and leaks by site (:func:`verify_cement`);
* :mod:`~seedplan.verification.synthetic`: synthetic intra- and post-operative CTs of a plan with known truth.

Everything is reported in the planning frame (patient LPS of the planning CT) after the registration.
"""

from .registration import (
    Registration,
    RegistrationError,
    as_registration,
    read_registration,
    register_ct,
    registration_from_matrix,
)
from .synthetic import JI_2021, NO_ERRORS, NeedleErrorModel, SyntheticCT, SyntheticTruth, rigid_motion, synthetic_ct

__all__ = [
    "Registration",
    "RegistrationError",
    "register_ct",
    "registration_from_matrix",
    "read_registration",
    "as_registration",
    "NeedleErrorModel",
    "JI_2021",
    "NO_ERRORS",
    "SyntheticCT",
    "SyntheticTruth",
    "synthetic_ct",
    "rigid_motion",
]
