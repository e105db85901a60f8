"""``seedplan demo``: the whole chain on the built-in spine phantom.

Writes into the output folder:

* ``case/`` - the phantom as a DICOM CT series, RTSTRUCT, NIfTI label map and
  ``case.json`` (so ``seedplan plan OUT/case/case.json`` replans it);
* ``plan.json`` - the plan (needles, seeds, prescription, seed model, cement, results);
* ``plan_table.csv`` and ``plan_summary.txt`` - the treatment plan table for the CT room;
* ``dose.nrrd`` - the total dose (Gy) on a 1 mm grid around the target;
* ``metrics.json`` - the plan metrics;
* ``dvh.csv`` - cumulative DVHs in cm^3 and %;
* ``report.html`` - the printable plan report, with the slice views, the
  DVH and the 3D views as PNGs beside it;
* ``dicom/`` - RTPLAN, RTDOSE and RTSTRUCT referencing the CT in ``case/ct``.

``run_demo(..., case="study-s2")`` (``seedplan demo --case study-s2``) builds one of the
:data:`STUDY_CASES` instead: the three illustrated cases of the reference study, with their
anatomy, their patient block (the report's clinical context) and a description the report shows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .errors import InputError
from .io.case import load_case, write_phantom_case
from .io.plan_table import format_plan_table
from .outputs import final_path, format_timings, output_folder, write_plan_outputs

__all__ = ["run_demo", "StudyCase", "STUDY_CASES", "study_case"]

log = logging.getLogger("seedplan")


def _reuse_case(phantom: object, earlier: Path, staging: Path) -> bool:
    """Link the earlier demo's case folder into the new one when it holds this very phantom (same CT series,
    same structure volumes, written by this version), instead of writing 100+ DICOM slices again."""
    import json
    import os
    import shutil

    from . import __version__
    from .io.case import phantom_info

    info = earlier / "phantom.json"
    try:
        old = json.loads(info.read_text())
    except (OSError, ValueError):
        return False
    if old != phantom_info(phantom, series_uid=phantom.ct.series_uid, version=__version__):
        return False

    def link(src: str, dst: str) -> str:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return dst

    shutil.copytree(earlier, staging, copy_function=link)
    log.info("reusing the phantom case of the earlier demo in %s (same phantom)", earlier)
    return True


#: Where the demo puts a sacral lesion: 5 mm anterior of the body's centre (LPS -y).  A lesion centred in
#: S1 or S2 reaches within 3-4 mm of the cauda equina in the sacral canal, where no seed plan gives the
#: lesion 120 Gy with the cauda's D0.1cc within 50 Gy; at 5 mm the S1 demo meets every goal.
SACRAL_LESION_OFFSET_MM = (0.0, -5.0, 0.0)


def _jsonable(value: Any) -> Any:
    """Mappings, tuples and numbers as JSON-ready dicts, lists and floats."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(val) for k, val in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(val) for val in value]
    return value


#: The demo's lesion diameter (mm): 30 mm, less where the body is smaller or several levels share the cauda.
#: The phantom's S2 body is 21 mm deep and 25 mm high, S3 16.5 and 21 mm (``vertebra_dimensions``): a
#: 30 mm lesion clipped to the body fills it up to the canal's wall, so 24 mm (the study-s2 case's) and 20 mm.
#: With several levels the cauda equina behind them sums their doses: at L5 + S1 with 30 mm lesions V100
#: reached 91.6 / 93.1 % with the cauda's D0.1cc at its 50 Gy limit; with 28 mm every goal holds.
DEMO_LESION_DIAMETER_MM = {"default": 30.0, "S2": 24.0, "S3": 20.0, "several levels": 28.0}


def _demo_levels(level: str) -> list[str]:
    import re

    return [q.upper() for q in re.split(r"[,\s;+]+", str(level).strip()) if q]


def demo_lesion_offsets(level: str) -> list[tuple[float, float, float]]:
    """The lesion centre offset of each level of ``level`` (``"L5,S1"``): sacral lesions sit anteriorly."""
    parts = _demo_levels(level)
    return [SACRAL_LESION_OFFSET_MM if q.startswith("S") else (0.0, 0.0, 0.0) for q in parts] or [(0.0, 0.0, 0.0)]


def demo_lesion_diameters(level: str) -> list[float]:
    """The demo's lesion diameter (mm) of each level of ``level`` (:data:`DEMO_LESION_DIAMETER_MM`)."""
    parts = _demo_levels(level) or ["L3"]
    d = DEMO_LESION_DIAMETER_MM
    base = d["several levels"] if len(parts) > 1 else d["default"]
    return [min(base, d.get(q, base)) for q in parts]


# ----------------------------------------------------------------------------- the study's cases
_STUDY = ("the reference study (PVP + 125I for lumbosacral osteoblastic metastases, 62 patients, 31 with "
          "PVP + 125I; retrospective)")


@dataclass(frozen=True, eq=False)
class StudyCase:
    """One illustrated case of the reference study, as a phantom, a patient block and a description.

    Attributes
    ----------
    name : str
        The ``--case`` name (``"study-s2"``).
    title : str
        The case name in the case file and the report.
    description : str
        One paragraph for the report: the study's case, its source, what the phantom models and why.
    phantom : mapping
        Keyword arguments of :func:`~seedplan.imaging.phantom.make_spine_phantom` except the lesion
        centres, which :meth:`phantom_kwargs` adds.
    lesion_centres : tuple
        Per level, ``("body", (dx, dy, dz))``: offset (LPS mm) from the body centre; or, at a sacral
        level, ``("sacral", (x, s, w))``: the centre in sacral coordinates
        (:func:`~seedplan.imaging.phantom.sacral_point_mm`).
    patient : mapping
        The case file's ``patient`` block (:func:`~seedplan.plan._context.patient_from_dict`): only what
        the study reports.
    """

    name: str
    title: str
    description: str
    phantom: Mapping[str, Any]
    lesion_centres: tuple[tuple[str, tuple[float, float, float]], ...]
    patient: Mapping[str, Any]

    @property
    def level(self) -> str:
        """The treated level(s), e.g. ``"L5,S1"``."""
        return str(self.phantom["level"])

    def lesion_offsets_mm(self) -> list[tuple[float, float, float]]:
        """The ``lesion_center_offset_mm`` of each level (sacral coordinates converted to offsets)."""
        from .imaging.phantom import sacral_point_mm, vertebra_dimensions

        out = []
        for lv, (kind, xyz) in zip(self.level.split(","), self.lesion_centres):
            if kind == "body":
                out.append(tuple(float(q) for q in xyz))
                continue
            dims = vertebra_dimensions(lv)
            centre = (dims["center_x_mm"], dims["center_y_mm"], dims["center_z_mm"])
            point = sacral_point_mm(*xyz)
            out.append(tuple(round(float(p - c), 3) for p, c in zip(point, centre)))
        return out

    def phantom_kwargs(self, spacing_mm: float = 1.0) -> dict[str, Any]:
        """Keyword arguments of :func:`~seedplan.imaging.phantom.make_spine_phantom` for this case."""
        kw = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.phantom.items()}
        kw["lesion_center_offset_mm"] = self.lesion_offsets_mm()
        kw["spacing_mm"] = spacing_mm
        return kw


def _frozen(**kw: Any) -> Mapping[str, Any]:
    return MappingProxyType(kw)


#: The three illustrated cases of the reference study as built-in examples (``seedplan demo --case NAME``).
#: Prostate primaries are coded slow-growing and lung rapid-growing, as in the Tomita score (Tomita K et al.,
#: Spine 2001;26(3):298-306), the coding of the report's prognostic index (``primary_growth``).  What the study
#: does not report (KPS; the women's age; the number of metastatic segments where it is not stated) is left out.
STUDY_CASES: Mapping[str, StudyCase] = MappingProxyType({c.name: c for c in (
    StudyCase(
        name="study-s2",
        title="study-s2: S2 osteoblastic metastasis (prostate) with a soft-tissue mass reaching the right S2 foramen",
        description=(
            f"Modelled on the first illustrated case of {_STUDY}: a 64-year-old man with prostate cancer and an "
            "osteoblastic S2 metastasis whose soft-tissue mass reached the sacral foramen; the post-operative CT "
            "showed cement and seeds in the lesion and no leak. Phantom: a blastic (+1000 HU) lesion of 24 mm "
            "in the anterior right part of the S2 body, and a soft-tissue mass (+45 HU, 16 mm across) growing "
            "out of the body to the right anterior S2 foramen, which it wraps without entering: the foramen "
            "and its root stay a structure with the 50 Gy D0.1cc limit (the study does not give the side; "
            "right is chosen); the lesion sits in the front of the body, about 6 mm from the sacral roots in the "
            "canal. A target that touches a root cannot receive the prescription dose at that edge while the "
            "root's hottest 0.1 cm3 stays within 50 Gy, so this case cannot meet all its goals."
        ),
        phantom=_frozen(level="S2", lesion_diameter_mm=24.0, lesion_type="blastic",
                        lesion_extension=_frozen(level="S2", toward="foramen_right", diameter_mm=16.0)),
        lesion_centres=(("sacral", (-6.0, 44.0, 1.0)),),
        patient=_frozen(age_y=64, primary="prostate", primary_growth="slow"),
    ),
    StudyCase(
        name="study-l5",
        title="study-l5: L5 osteoblastic metastasis (prostate) with a pathological fracture, and an S1 lesion",
        description=(
            f"Modelled on the second illustrated case of {_STUDY}: a 59-year-old man with prostate cancer and "
            "multiple lumbosacral osteoblastic metastases, with pathological fractures at L5; the post-operative "
            "CT showed cement and seeds in the lesion and no leak. Phantom: a wedge fracture of L5 with 30 % "
            "anterior height loss (Genant grade 2, moderate: 25-40 %; Genant HK et al., J Bone Miner Res "
            "1993;8:1137-1148), a blastic (+1000 HU) lesion of 30 mm in the collapsed L5 body, and a second "
            "blastic lesion of 20 mm in S1 (5 mm anterior of its centre, clear of the sacral roots). Both "
            "lesions are planned as one implant (needles and cement per level, one seed set on both targets); "
            "that both were treated in one session is this example's assumption (the phantom draws lesions only "
            "at treated levels)."
        ),
        phantom=_frozen(level="L5,S1", lesion_diameter_mm=(30.0, 20.0), lesion_type="blastic",
                        fracture=_frozen(L5=0.30)),
        lesion_centres=(("body", (0.0, -2.0, -4.0)), ("body", (0.0, -5.0, 0.0))),
        patient=_frozen(age_y=59, primary="prostate", primary_growth="slow", metastatic_segments=2),
    ),
    StudyCase(
        name="study-s1",
        title="study-s1: right-sided S1 osteoblastic metastasis (lung) reaching the right ilium",
        description=(
            f"Modelled on the third illustrated case of {_STUDY}: a woman (age not given) with lung cancer and a "
            "right-sided osteoblastic S1 metastasis reaching the right ilium; the post-operative CT showed "
            "cement and seeds in the lesion and no leak. Phantom: a blastic (+1000 HU) lesion of 40 mm centred "
            "in the right S1 ala, painted into the bone it covers: the lateral edge of the S1 body, the ala and, "
            "across the right sacroiliac joint, the ilium (nothing on the left). It sits in the upper ala, about "
            "5 mm clear of the right S1 foramen below it."
        ),
        phantom=_frozen(level="S1", lesion_diameter_mm=40.0, lesion_type="blastic", lesion_spread="bone"),
        lesion_centres=(("sacral", (-38.0, 4.0, 14.0)),),
        patient=_frozen(primary="lung", primary_growth="rapid"),
    ),
)})


def study_case(name: str) -> StudyCase:
    """The built-in study case ``name``; an unknown name is a one-line :class:`~seedplan.errors.InputError`."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in STUDY_CASES:
        raise InputError(f"unknown case {name!r}; the built-in cases are {', '.join(STUDY_CASES)}")
    return STUDY_CASES[key]


def run_demo(out_dir: Path, *, level: str | None = None, lesion_diameter_mm: float | None = None,
             lesion_type: str | None = None, timings: bool = False, dose_model: str = "tg43",
             case: str | None = None) -> Path:
    """Build the phantom, plan it, and write the outputs; returns the output folder.

    The folder is written all-or-nothing (:func:`~seedplan.outputs.output_folder`):
    a failed or interrupted demo leaves an earlier one as it was.  ``timings``: also
    print the time of each step.  ``dose_model="corrected"``: plan the seeds on the cement/bone-corrected
    dose (:class:`~seedplan.plan.PlanningOptions`), the TG-43 plan beside it in the report.

    Parameters
    ----------
    level, lesion_diameter_mm, lesion_type
        The phantom's lesion (defaults ``"L3"``, :func:`demo_lesion_diameters` (30 mm at L1-S1),
        ``"lytic"``).
    case : str, optional
        One of :data:`STUDY_CASES` (``"study-s2"``, ``"study-l5"``, ``"study-s1"``): that case's
        phantom, patient block and description instead; it fixes the lesions, so ``level``,
        ``lesion_diameter_mm`` and ``lesion_type`` must then be left out.

    Raises
    ------
    InputError
        An unknown case, or a case together with a lesion argument.
    """
    import time

    from .imaging.phantom import make_spine_phantom
    from .planning import plan_case

    study = None
    if case is not None:
        study = study_case(case)
        given = [k for k, val in (("level", level), ("lesion_diameter_mm", lesion_diameter_mm),
                                  ("lesion_type", lesion_type)) if val is not None]
        if given:
            raise InputError(f"case {study.name!r} fixes the lesions; leave out {', '.join(given)}")
    level = "L3" if level is None else level
    lesion_type = "lytic" if lesion_type is None else lesion_type
    out = Path(out_dir)
    t0 = time.perf_counter()
    with output_folder(out, what="demo") as staging:
        if study is None:
            if lesion_diameter_mm is None:
                diameters = demo_lesion_diameters(level)
                lesion_diameter_mm = diameters[0] if len(set(diameters)) == 1 else diameters
            log.info("building the spine phantom: %s, %s lesion of %s mm", level, lesion_type,
                     lesion_diameter_mm if isinstance(lesion_diameter_mm, list) else f"{lesion_diameter_mm:g}")
            phantom_kw: dict[str, Any] = dict(level=level, lesion_diameter_mm=lesion_diameter_mm,
                                              lesion_type=lesion_type,
                                              lesion_center_offset_mm=demo_lesion_offsets(level))
            case_text: dict[str, Any] = {}
        else:
            log.info("building the spine phantom of %s", study.title)
            phantom_kw = study.phantom_kwargs()
            case_text = {"name": study.title, "description": study.description, "patient": dict(study.patient)}
        ph = make_spine_phantom(**phantom_kw)
        if not _reuse_case(ph, out / "case", staging / "case"):
            write_phantom_case(ph, staging / "case", **case_text)
        elif case_text:  # the same phantom: its case file gets this version's description and patient block
            from .io.case import write_case_file

            write_case_file(staging / "case" / "case.json", ct=str(staging / "case" / "ct"),
                            rtstruct=str(staging / "case" / "rtstruct.dcm"), **case_text)
        case_data = load_case(staging / "case" / "case.json")  # plan what a user would load: the DICOM CT, RTSTRUCT
        reference = dict(case_data.reference)
        if study is None:
            reference["phantom"] = {"level": level, "lesion_diameter_mm": lesion_diameter_mm,
                                    "lesion_type": lesion_type,
                                    "lesion_center_offset_mm": [list(o) for o in demo_lesion_offsets(level)]}
        else:
            reference["phantom"] = {"study_case": study.name, **_jsonable(phantom_kw)}
        t_case = time.perf_counter() - t0
        options = dc_replace(case_data.planning, dose_model=dose_model) \
            if dose_model != case_data.planning.dose_model else case_data.planning
        result = plan_case(case_data.ct, case_data.structures, case_data.prescription, options=options,
                           case_reference=reference)
        t = time.perf_counter()
        files = write_plan_outputs(result, staging, ct=case_data.ct, structures=case_data.structures)
        t_out = time.perf_counter() - t
    print(format_plan_table(result.plan))
    print()
    for label, path in files.items():
        print(f"{label}: {final_path(path, staging, out)}")
    if timings:
        print()
        print(format_timings({"phantom case": round(t_case, 3), **result.timings_s}, outputs_s=t_out))
        print(f"(whole demo {time.perf_counter() - t0:.1f} s)")
    return out
