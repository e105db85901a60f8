"""seedplan.io.dicom: every DICOM object seedplan writes (CT series, RTSTRUCT, RTPLAN, RTDOSE).

The three objects reference the planning CT series (same StudyInstanceUID,
FrameOfReferenceUID and patient identification) and each other:
RTDOSE -> RTPLAN -> RTSTRUCT -> CT series.  Every file is written
atomically in Explicit VR Little Endian with ``enforce_file_format=True``,
and every DS value is formatted to at most 16 characters.

Conventions
-----------
RTPLAN (RT Plan Storage, brachy, permanent LDR implant)
    * ``BrachyTreatmentTechnique`` PERMANENT, ``BrachyTreatmentType`` LDR,
      ``RTPlanGeometry`` PATIENT with a ``ReferencedStructureSetSequence``;
      ``ApprovalStatus`` UNAPPROVED.
    * One ``SourceSequence`` item per distinct seed strength (one item for
      the usual single-strength plan).  ``ReferenceAirKermaRate`` is the
      seed's S_K at the calibration date in uGy h^-1 at 1 m (numerically
      equal to U); ``SourceStrengthReferenceDate/Time`` is the calibration
      date (00:00 when the plan gives no time).  ``SourceIsotopeHalfLife``
      is in days (the seed model's half-life).  ``SourceStrengthUnits`` is
      AIR_KERMA_RATE; ``SourceStrength`` (the same S_K) is written only for
      S_K < 1 U, where dciodvfy's integer-truncated condition requires it.
    * One application setup; one channel per needle (per needle and source
      when a needle carries seeds of different strengths; needles without
      seeds get no channel).  ``ChannelLength`` is the needle depth (skin
      entry to tip, mm).
    * Each seed is a *pair* of control points with the same
      ``ControlPointRelativePosition`` = the seed's retraction distance from
      the needle tip (0 = deepest seed; control points in delivery order,
      deepest first), ``ControlPoint3DPosition`` = seed centre (mm, patient
      LPS) and ``ControlPointOrientation`` = seed axis direction cosines.
      Cumulative time weights rise by 1 across each pair, so
      ``FinalCumulativeTimeWeight`` = number of seeds in the channel.
    * Time convention: ``ChannelTotalTime`` = n_seeds x tau, with the mean
      life tau = T_half / ln 2 in seconds.  A reader that takes the dwell
      time of a seed as dW x ChannelTotalTime / FinalCumulativeTimeWeight
      gets tau per seed, hence the dose to complete decay D = S_K x tau x
      (dose rate per unit S_K) -- provided it decays S_K from the
      ``SourceStrengthReferenceDate`` to the implant date.  The implant date
      is written in ``RTPlanDescription``; ``TotalReferenceAirKerma`` is
      sum(S_K at implant) x tau(h) in uGy at 1 m (decay included).
    * ``FractionGroupSequence``: 1 fraction, 0 beams, 1 brachy application
      setup whose ``BrachyApplicationSetupDose`` is the prescription dose;
      ``DoseReferenceSequence`` holds the prescription (``TargetPrescriptionDose``
      = PD), as a VOLUME on the target ROI when its number is known.
RTDOSE (RT Dose Storage)
    Multi-frame, unsigned 16-bit by default (``bits=32`` optional): stored =
    round-half-up(dose / DoseGridScaling) clipped to the integer range,
    DoseGridScaling = max / (2^bits - 1) as written in the file (<= 16
    characters).  ``ImagePositionPatient`` is the centre of voxel (0, 0, 0),
    ``ImageOrientationPatient`` the grid's first two direction columns,
    ``GridFrameOffsetVector`` is relative (0, dz, 2 dz ...) with
    ``FrameIncrementPointer`` -> (3004,000C).  A left-handed grid (third
    axis opposite to row x column) is written with its frames reversed so
    the offsets stay positive.  DoseUnits GY, DoseType PHYSICAL,
    DoseSummationType BRACHY, TissueHeterogeneityCorrection WATER.
RTSTRUCT
    The case's structures (contours from :func:`write_rtstruct`), the
    structures the plan derived (ROI description ``derived: <how>``), plus
    one ROI per needle (``needle_N1``..., an OPEN_NONPLANAR contour entry ->
    tip, RTROIInterpretedType BRACHY_CHANNEL), one per vertebroplasty needle
    (``pvp_needle_<side>``, interpreted type empty: no defined term fits) and
    one ROI ``seeds`` holding a POINT contour per seed (RTROIInterpretedType
    MARKER).  A planned cement is added as the ROI ``cement`` (AVOIDANCE:
    seeds stay out).
CT series
    :func:`write_ct_dicom_series`: one file per slice, signed 16-bit HU, the
    CT's own orientation and patient position.

UIDs
    The RTPLAN, RTSTRUCT and RTDOSE UIDs are derived from the plan's content
    (:func:`plan_uids`; its run record left out) and, for the dose, from the
    stored values: the same plan exports with the same UIDs, and objects
    exported separately still reference each other.
"""


from ._common import CT_IMAGE_STORAGE, RT_DOSE_STORAGE, RT_PLAN_STORAGE, RT_STRUCTURE_SET_STORAGE
from ._uids import DicomExport, plan_uids
from .ct_series import write_ct_dicom_series
from .export import export_plan_dicom
from .rtdose import QUANTISATION_WARN_FRACTION, DoseQuantisationWarning, export_rtdose
from .rtplan import export_rtplan
from .rtstruct import export_rtstruct, write_rtstruct

__all__ = [
    "write_ct_dicom_series",
    "write_rtstruct",
    "export_plan_dicom",
    "export_rtstruct",
    "export_rtplan",
    "export_rtdose",
    "plan_uids",
    "DicomExport",
    "DoseQuantisationWarning",
    "QUANTISATION_WARN_FRACTION",
    "CT_IMAGE_STORAGE",
    "RT_STRUCTURE_SET_STORAGE",
    "RT_PLAN_STORAGE",
    "RT_DOSE_STORAGE",
]
