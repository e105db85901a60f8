"""DICOM RT export (RTPLAN / RTDOSE / RTSTRUCT): conformance, references, geometry, values."""

from __future__ import annotations

import math
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from seedplan.cli import main
from seedplan.errors import FileFormatError, InputError
from seedplan.geometry import Grid
from seedplan.imaging.ct import CTImage
from seedplan.imaging.phantom import make_spine_phantom
from seedplan.imaging.structures import load_rtstruct
from seedplan.io.case import load_case, write_phantom_case
from seedplan.io.dicom import (
    RT_DOSE_STORAGE,
    RT_PLAN_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
    DoseQuantisationWarning,
    export_plan_dicom,
    export_rtdose,
    export_rtplan,
)
from seedplan.plan import Needle, Plan, PlannedSeed, plan_dose_grid, save_plan
from seedplan.sources import load_seed_model

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) not installed")


def _dciodvfy(path: Path) -> tuple[int, str]:
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def _make_plan(case, strengths=(0.8, 0.8, 0.8), with_case: bool = True) -> Plan:
    """Three oblique needles through the target, 2-3 seeds each, 10 mm apart."""
    c = case.structures["target"].centroid_mm
    dirs = [np.array([0.3, -0.9, 0.2]), np.array([-0.4, -0.85, -0.25]), np.array([0.05, -0.95, 0.3])]
    offsets = [np.array([-6.0, 5.0, 0.0]), np.array([6.0, 4.0, 3.0]), np.array([0.0, 8.0, -6.0])]
    needles, seeds = [], []
    for n, (d, o) in enumerate(zip(dirs, offsets), start=1):
        d = d / np.linalg.norm(d)
        tip = c + o
        needles.append(Needle(tuple(tip - 90.0 * d), tuple(tip), label=f"N{n}"))
        for r in ((0.0, 10.0, 20.0) if n == 1 else (0.0, 10.0)):
            seeds.append(PlannedSeed(tuple(tip - r * d), tuple(d), n, r, 0.63, strengths[n - 1]))
    return Plan(
        case=dict(case.reference) if with_case else {"name": "no case"},
        prescription=case.prescription,
        seed_model="6711",
        formalism="2D",
        needles=tuple(needles),
        seeds=tuple(seeds),
        calibration_date="2026-11-01",
        implant_date="2026-11-21",
        run={"created": "2026-11-22T00:00:00"},
    )


def _with_cement(plan: Plan, case) -> Plan:
    """Add one vertebroplasty needle and 2 mL of cement injected from its tip."""
    import dataclasses

    from seedplan.planning.cement import plan_cement

    vb = case.structures["vertebral_body_L3"]
    tip = np.asarray(vb.centroid_mm) + np.array([6.0, -4.0, 0.0])
    pvp = Needle(tuple(tip + np.array([20.0, 110.0, 0.0])), tuple(tip), kind="pvp", label="left")
    cement = plan_cement(case.ct, vb, [tip], volume_mL=2.0)
    return dataclasses.replace(plan, pvp_needles=(pvp,), cement=cement.as_plan_cement(case.ct.grid))


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    """A 3 mm phantom case, a hand-made plan, its dose and the exported RT objects."""
    tmp = tmp_path_factory.mktemp("dicom_rt")
    written = write_phantom_case(make_spine_phantom(spacing_mm=3.0), tmp / "case")
    case = load_case(written["case"])
    plan = _with_cement(_make_plan(case), case)
    plan_json = save_plan(plan, tmp / "plan.json")
    grid, dose = plan_dose_grid(plan, case.ct.grid, spacing_mm=2.0, margin_mm=15.0)
    with warnings.catch_warnings(record=True) as caught:  # pydicom warns about invalid values (VR lengths...)
        warnings.simplefilter("always")
        files = export_plan_dicom(plan, tmp / "rt", dose=(grid, dose))
    assert not caught, [str(w.message) for w in caught]
    ds = {k: pydicom.dcmread(v) for k, v in files.items()}
    ct_hdr = pydicom.dcmread(sorted(Path(written["ct"]).glob("*.dcm"))[0], stop_before_pixels=True)
    return {"tmp": tmp, "case": case, "plan": plan, "plan_json": plan_json, "grid": grid, "dose": dose,
            "files": files, "ds": ds, "ct_hdr": ct_hdr}


# ------------------------------------------------------------------ conformance
@needs_dciodvfy
@pytest.mark.parametrize("kind", ["rtplan", "rtdose", "rtstruct"])
def test_dciodvfy_reports_no_error(rt, kind):
    rc, out = _dciodvfy(rt["files"][kind])
    errors = [line for line in out.splitlines() if "Error" in line]
    assert not errors, f"dciodvfy {kind}:\n{out}"
    assert rc == 0, out


def _ds_strings(ds):
    """Every DS value of a dataset (nested sequences included) as written in the file."""
    out = []

    def visit(dataset, elem):
        if elem.VR == "DS" and elem.value is not None and elem.value != "":
            values = elem.value if elem.VM > 1 else [elem.value]
            out.extend((elem.keyword, getattr(v, "original_string", str(v))) for v in values)

    ds.walk(visit)
    return out


@pytest.mark.parametrize("kind", ["rtplan", "rtdose", "rtstruct"])
def test_every_ds_value_fits_16_characters(rt, kind):
    values = _ds_strings(pydicom.dcmread(rt["files"][kind]))
    assert values
    too_long = [(k, v) for k, v in values if len(v.strip()) > 16]
    assert not too_long, too_long[:10]


def test_files_are_explicit_vr_little_endian_with_the_right_sop_classes(rt):
    ds = rt["ds"]
    for kind, sop in (("rtplan", RT_PLAN_STORAGE), ("rtdose", RT_DOSE_STORAGE), ("rtstruct", RT_STRUCTURE_SET_STORAGE)):
        assert ds[kind].SOPClassUID == sop
        assert ds[kind].file_meta.MediaStorageSOPClassUID == sop
        assert ds[kind].file_meta.MediaStorageSOPInstanceUID == ds[kind].SOPInstanceUID
        assert ds[kind].file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (ds["rtplan"].Modality, ds["rtdose"].Modality, ds["rtstruct"].Modality) == ("RTPLAN", "RTDOSE", "RTSTRUCT")


def test_cross_references_are_consistent(rt):
    ds, ct = rt["ds"], rt["case"].ct
    plan_ds, dose_ds, st_ds = ds["rtplan"], ds["rtdose"], ds["rtstruct"]
    # RTDOSE -> RTPLAN
    ref = dose_ds.ReferencedRTPlanSequence[0]
    assert ref.ReferencedSOPClassUID == RT_PLAN_STORAGE
    assert ref.ReferencedSOPInstanceUID == plan_ds.SOPInstanceUID
    assert ref.ReferencedFractionGroupSequence[0].ReferencedFractionGroupNumber == 1
    # RTPLAN -> RTSTRUCT
    rs = plan_ds.ReferencedStructureSetSequence[0]
    assert rs.ReferencedSOPClassUID == RT_STRUCTURE_SET_STORAGE
    assert rs.ReferencedSOPInstanceUID == st_ds.SOPInstanceUID
    # all -> CT study, frame of reference, patient
    for d in (plan_ds, dose_ds, st_ds):
        assert d.StudyInstanceUID == ct.study_uid == rt["ct_hdr"].StudyInstanceUID
        assert d.FrameOfReferenceUID == ct.frame_of_reference_uid
        assert d.PatientID == rt["ct_hdr"].PatientID
        assert str(d.PatientName) == str(rt["ct_hdr"].PatientName)
    assert len({d.SeriesInstanceUID for d in (plan_ds, dose_ds, st_ds)} | {ct.series_uid}) == 4
    # RTSTRUCT -> CT series and slices
    fr = st_ds.ReferencedFrameOfReferenceSequence[0]
    assert fr.FrameOfReferenceUID == ct.frame_of_reference_uid
    se = fr.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert se.SeriesInstanceUID == ct.series_uid
    assert [c.ReferencedSOPInstanceUID for c in se.ContourImageSequence] == list(ct.sop_instance_uids)
    assert all(c.ReferencedSOPClassUID == CT_IMAGE_STORAGE for c in se.ContourImageSequence)
    # channels -> needle ROIs, prescription -> target ROI
    rois = {int(r.ROINumber): str(r.ROIName) for r in st_ds.StructureSetROISequence}
    channels = plan_ds.ApplicationSetupSequence[0].ChannelSequence
    assert [rois[int(ch.ReferencedROINumber)] for ch in channels] == ["needle_N1", "needle_N2", "needle_N3"]
    assert rois[int(plan_ds.DoseReferenceSequence[0].ReferencedROINumber)] == "target"


# ----------------------------------------------------------------------- RTDOSE
def test_rtdose_reads_back_with_the_grid_geometry_and_values(rt):
    grid, dose = rt["grid"], rt["dose"]
    d = rt["ds"]["rtdose"]
    img = sitk.ReadImage(str(rt["files"]["rtdose"]))
    np.testing.assert_allclose(img.GetOrigin(), grid.origin_mm, atol=1e-6)
    np.testing.assert_allclose(img.GetSpacing(), grid.spacing_mm, atol=1e-9)
    np.testing.assert_allclose(img.GetDirection(), grid.direction, atol=1e-9)
    assert img.GetSize() == grid.size
    scale = float(d.DoseGridScaling)
    assert scale == pytest.approx(dose.max() / 65535, rel=1e-12)
    back = sitk.GetArrayFromImage(img).astype(float) * scale
    assert back.shape == dose.shape
    # round-half-up: within half a step (truncation would be off by up to a full step)
    assert np.max(np.abs(back - dose)) <= 0.5 * scale * (1 + 1e-9)
    np.testing.assert_array_equal(d.pixel_array, sitk.GetArrayFromImage(img))
    # the DICOM attributes themselves
    assert (d.DoseUnits, d.DoseType, d.DoseSummationType, d.TissueHeterogeneityCorrection) == \
        ("GY", "PHYSICAL", "BRACHY", "WATER")
    assert d.FrameIncrementPointer == 0x3004000C
    assert (d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation) == (16, 16, 15, 0)
    assert int(d.NumberOfFrames) == grid.size[2]
    np.testing.assert_allclose([float(v) for v in d.GridFrameOffsetVector], np.arange(grid.size[2]) * grid.spacing_mm[2])
    np.testing.assert_allclose([float(v) for v in d.PixelSpacing], [grid.spacing_mm[1], grid.spacing_mm[0]])


def _small_ct(direction) -> CTImage:
    g = Grid((-20.0, -10.0, 5.0), (1.0, 1.0, 2.0), (16, 12, 6), direction)
    return CTImage(g, np.zeros(g.shape, np.int16), series_uid="2.25.11", frame_of_reference_uid="2.25.12",
                   study_uid="2.25.13", patient_id="P1")


def _rotation(angle_deg: float, axis) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


@pytest.mark.parametrize("handed", ["right", "left"])
def test_rtdose_oblique_and_flipped_grids_map_every_voxel_to_its_world_point(rt, tmp_path, handed):
    rot = _rotation(25.0, (1.0, 2.0, 0.5))
    if handed == "left":
        rot[:, 2] *= -1.0
    ct = _small_ct(rot)
    grid = Grid((3.0, -7.5, 12.25), (1.5, 2.0, 2.5), (9, 7, 5), rot)
    # dose = a linear function of the world position: any voxel mix-up shows
    w = grid.voxel_centers_mm()
    dose = 50.0 + w @ np.array([0.7, -0.4, 0.9])
    path = export_rtdose(rt["plan"], grid, dose, ct, tmp_path / "RTDOSE.dcm").path
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img).astype(float) * float(pydicom.dcmread(path).DoseGridScaling)
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in img.GetSize()[::-1]), indexing="ij"), -1)[..., ::-1]
    world = np.asarray(img.GetOrigin()) + (idx * np.asarray(img.GetSpacing())) @ \
        np.asarray(img.GetDirection()).reshape(3, 3).T
    expect = 50.0 + world @ np.array([0.7, -0.4, 0.9])
    step = float(pydicom.dcmread(path).DoseGridScaling)
    assert np.max(np.abs(arr - expect)) <= 0.5 * step + 1e-9
    if handed == "right":
        np.testing.assert_allclose(img.GetOrigin(), grid.origin_mm, atol=1e-6)
        np.testing.assert_allclose(img.GetDirection(), grid.direction, atol=1e-9)
    if DCIODVFY:
        rc, out = _dciodvfy(path)
        assert not [x for x in out.splitlines() if "Error" in x], out


def test_quantisation_warning(rt, tmp_path):
    plan, ct = rt["plan"], rt["case"].ct
    grid = Grid((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (4, 3, 2))
    dose = np.full(grid.shape, 100.0)
    dose[0, 0, 0] = 1.0e5  # a voxel on a seed: step 1.5 Gy > 0.1 % of the PD
    with pytest.warns(DoseQuantisationWarning, match="quantisation step"):
        res = export_rtdose(plan, grid, dose, ct, tmp_path / "hot.dcm")
    assert res.info["warning"] and res.info["quantisation_step_Gy"] > 1e-3 * plan.prescription.dose_Gy
    with warnings.catch_warnings():
        warnings.simplefilter("error", DoseQuantisationWarning)
        res32 = export_rtdose(plan, grid, dose, ct, tmp_path / "hot32.dcm", bits=32)
        ok = export_rtdose(plan, grid, np.full(grid.shape, 60.0), ct, tmp_path / "ok.dcm")
    assert res32.info["warning"] is None and ok.info["warning"] is None
    # the same step passes when the prescription is large enough
    with warnings.catch_warnings():
        warnings.simplefilter("error", DoseQuantisationWarning)
        export_rtdose(plan, grid, dose, ct, tmp_path / "hot_pd.dcm", prescription_Gy=2000.0)


def test_rtdose_32_bit(rt, tmp_path):
    grid, dose = rt["grid"], rt["dose"]
    res = export_rtdose(rt["plan"], grid, dose, rt["case"].ct, tmp_path / "RTDOSE32.dcm", bits=32)
    d = pydicom.dcmread(res.path)
    assert (d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation) == (32, 32, 31, 0)
    back = d.pixel_array.astype(float) * float(d.DoseGridScaling)
    assert np.max(np.abs(back - dose)) <= 0.5 * float(d.DoseGridScaling) * (1 + 1e-9) + 1e-12
    img = sitk.ReadImage(str(res.path))
    np.testing.assert_allclose(img.GetOrigin(), grid.origin_mm, atol=1e-6)
    if DCIODVFY:
        # the Debian dciodvfy build aborts on 32-bit dose pixels (assertion in attrothr.cc); otherwise no errors
        rc, out = _dciodvfy(res.path)
        if "Assertion" not in out:
            assert not [x for x in out.splitlines() if "Error" in x], out


def test_rtdose_rejects_bad_input(rt, tmp_path):
    plan, ct, grid = rt["plan"], rt["case"].ct, Grid((0, 0, 0), (1, 1, 1), (3, 3, 3))
    with pytest.raises(InputError, match="bits"):
        export_rtdose(plan, grid, np.zeros(grid.shape), ct, tmp_path / "x.dcm", bits=8)
    with pytest.raises(InputError, match="shape"):
        export_rtdose(plan, grid, np.zeros((2, 3, 3)), ct, tmp_path / "x.dcm")
    with pytest.raises(InputError, match="negative"):
        export_rtdose(plan, grid, -np.ones(grid.shape), ct, tmp_path / "x.dcm")
    with pytest.raises(InputError, match="FrameOfReferenceUID"):
        export_rtdose(plan, grid, np.zeros(grid.shape), CTImage(ct.grid, ct.hu, series_uid="2.25.1"), tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


# ----------------------------------------------------------------------- RTPLAN
def test_rtplan_seeds_channels_and_sources(rt):
    plan, d = rt["plan"], rt["ds"]["rtplan"]
    model = load_seed_model(plan.seed_model)
    assert (d.BrachyTreatmentTechnique, d.BrachyTreatmentType, d.RTPlanGeometry, d.ApprovalStatus) == \
        ("PERMANENT", "LDR", "PATIENT", "UNAPPROVED")
    (src,) = d.SourceSequence
    assert float(src.ReferenceAirKermaRate) == plan.seeds[0].strength_U
    assert (src.SourceIsotopeName, src.SourceType, src.SourceModelID) == ("I-125", "LINE", "6711")
    assert float(src.SourceIsotopeHalfLife) == pytest.approx(model.half_life_d)
    assert float(src.ActiveSourceLength) == pytest.approx(model.active_length_mm)
    assert (src.SourceStrengthReferenceDate, src.SourceStrengthReferenceTime) == ("20261101", "000000")
    setup = d.ApplicationSetupSequence[0]
    channels = setup.ChannelSequence
    assert len(channels) == len(plan.needles)
    tau_s = model.half_life_d * 86400.0 / math.log(2.0)
    got_pos, got_ax, dwell = [], [], []
    for n, ch in enumerate(channels, start=1):
        assert ch.SourceMovementType == "FIXED" and int(ch.ReferencedSourceNumber) == 1
        seeds = plan.seeds_on_needle(n)
        cps = ch.BrachyControlPointSequence
        assert int(ch.NumberOfControlPoints) == len(cps) == 2 * len(seeds)
        assert [int(c.ControlPointIndex) for c in cps] == list(range(len(cps)))
        assert float(ch.ChannelLength) == pytest.approx(plan.needles[n - 1].depth_mm, abs=1e-6)
        final, total = float(ch.FinalCumulativeTimeWeight), float(ch.ChannelTotalTime)
        w = [float(c.CumulativeTimeWeight) for c in cps]
        assert w[-1] == final and all(b >= a for a, b in zip(w, w[1:]))
        for i, s in enumerate(seeds):
            a, b = cps[2 * i], cps[2 * i + 1]
            assert float(a.ControlPointRelativePosition) == float(b.ControlPointRelativePosition) == s.retraction_mm
            got_pos.append([float(v) for v in a.ControlPoint3DPosition])
            got_ax.append([float(v) for v in a.ControlPointOrientation])
            np.testing.assert_array_equal(a.ControlPoint3DPosition, b.ControlPoint3DPosition)
            dwell.append((w[2 * i + 1] - w[2 * i]) * total / final)
    want = [s for n in range(1, len(plan.needles) + 1) for s in plan.seeds_on_needle(n)]
    np.testing.assert_allclose(got_pos, [s.position_mm for s in want], atol=1e-9)
    np.testing.assert_allclose(got_ax, [s.axis for s in want], atol=1e-6)  # FL (single precision)
    # time convention: each seed dwells one mean life, so dose = S_K(implant) x tau x kernel
    np.testing.assert_allclose(dwell, tau_s, rtol=1e-9)
    total_kerma = float(setup.TotalReferenceAirKerma)
    assert total_kerma == pytest.approx(float(np.sum(plan.strengths_at_implant_U)) * tau_s / 3600.0, rel=1e-9)
    # prescription and fraction scheme
    pd = plan.prescription.dose_Gy
    assert float(d.DoseReferenceSequence[0].TargetPrescriptionDose) == pd
    fg = d.FractionGroupSequence[0]
    assert (int(fg.NumberOfFractionsPlanned), int(fg.NumberOfBeams), int(fg.NumberOfBrachyApplicationSetups)) == (1, 0, 1)
    assert float(fg.ReferencedBrachyApplicationSetupSequence[0].BrachyApplicationSetupDose) == pd
    assert plan.implant_date in d.RTPlanDescription


def test_rtplan_one_source_per_strength(rt, tmp_path):
    # S_K on both sides of 1 U: dciodvfy's SourceStrength condition truncates the rate to an integer
    plan = _make_plan(rt["case"], strengths=(1.27, 0.5, 1.27))
    seeds = list(plan.seeds)
    seeds[0] = PlannedSeed(seeds[0].position_mm, seeds[0].axis, 1, seeds[0].retraction_mm, 0.4, 0.5)
    plan = Plan(**{**plan.__dict__, "seeds": tuple(seeds)})
    path = export_rtplan(plan, rt["case"].ct, tmp_path / "RTPLAN.dcm").path
    d = pydicom.dcmread(path)
    assert [float(s.ReferenceAirKermaRate) for s in d.SourceSequence] == [0.5, 1.27]
    chans = d.ApplicationSetupSequence[0].ChannelSequence
    # needle 1 holds both strengths: two channels; needles 2 and 3 one each
    assert [(int(c.SourceApplicatorNumber), int(c.ReferencedSourceNumber), int(c.NumberOfControlPoints))
            for c in chans] == [(1, 1, 2), (1, 2, 4), (2, 1, 4), (3, 2, 4)]
    by_source = {}
    for c in chans:
        for cp in c.BrachyControlPointSequence[::2]:
            by_source.setdefault(int(c.ReferencedSourceNumber), []).append(tuple(float(v) for v in cp.ControlPoint3DPosition))
    for number, sk in ((1, 0.5), (2, 1.27)):
        want = sorted(tuple(s.position_mm) for s in plan.seeds if s.strength_U == sk)
        np.testing.assert_allclose(sorted(by_source[number]), want, atol=1e-9)
    if DCIODVFY:
        rc, out = _dciodvfy(path)
        assert not [x for x in out.splitlines() if "Error" in x], out


# --------------------------------------------------------------------- RTSTRUCT
def test_rtstruct_needles_seeds_and_case_structures(rt):
    plan, d = rt["plan"], rt["ds"]["rtstruct"]
    names = {int(r.ROINumber): str(r.ROIName) for r in d.StructureSetROISequence}
    interp = {names[int(o.ReferencedROINumber)]: o.RTROIInterpretedType for o in d.RTROIObservationsSequence}
    contours = {names[int(c.ReferencedROINumber)]: c.ContourSequence for c in d.ROIContourSequence}
    for name in rt["case"].structures.names:
        assert name in names.values()
    for n, needle in enumerate(plan.needles, start=1):
        name = f"needle_N{n}"
        assert interp[name] == "BRACHY_CHANNEL"
        (c,) = contours[name]
        assert c.ContourGeometricType == "OPEN_NONPLANAR" and int(c.NumberOfContourPoints) == 2
        np.testing.assert_allclose(np.reshape([float(v) for v in c.ContourData], (2, 3)),
                                   [needle.entry_mm, needle.tip_mm], atol=1e-9)
    assert interp["seeds"] == "MARKER"
    pts = [[float(v) for v in c.ContourData] for c in contours["seeds"]]
    assert all(c.ContourGeometricType == "POINT" for c in contours["seeds"])
    np.testing.assert_allclose(pts, plan.positions_mm, atol=1e-9)
    assert interp["target"] == "GTV"
    (pvp,) = plan.pvp_needles
    (c,) = contours["pvp_needle_left"]
    assert interp["pvp_needle_left"] == "" and c.ContourGeometricType == "OPEN_NONPLANAR"
    np.testing.assert_allclose(np.reshape([float(v) for v in c.ContourData], (2, 3)), [pvp.entry_mm, pvp.tip_mm],
                               atol=1e-9)
    assert interp["cement"] == "AVOIDANCE"
    # the contours read back as the case's masks; the needle/seed ROIs are skipped with a warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = load_rtstruct(rt["files"]["rtstruct"], rt["case"].ct)
    skipped = " ".join(str(w.message) for w in caught)
    assert all(f"'{n}'" in skipped for n in ("needle_N1", "needle_N2", "needle_N3", "seeds", "pvp_needle_left"))
    for name in ("target", "spinal_canal"):
        np.testing.assert_array_equal(back[name].mask, rt["case"].structures[name].mask)
    # the cement ROI is the plan's stored cement, 2 mL
    np.testing.assert_array_equal(back["cement"].mask, plan.cement.mask)
    assert back["cement"].volume_cm3 == pytest.approx(2.0, abs=0.03)


# -------------------------------------------------------------- errors and CLI
def test_missing_ct_is_a_clear_error(rt, tmp_path):
    with pytest.raises(InputError, match="case reference"):
        export_plan_dicom(_make_plan(rt["case"], with_case=False), tmp_path / "a")
    moved = Plan(**{**rt["plan"].__dict__, "case": {**rt["plan"].case, "case_file": str(tmp_path / "gone.json")}})
    with pytest.raises(FileFormatError, match="gone.json"):
        export_plan_dicom(moved, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_export(rt, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["export", str(rt["plan_json"]), "--out", str(out), "--dose-spacing-mm", "2"]) == 0
    printed = capsys.readouterr().out
    for name in ("RTPLAN.dcm", "RTDOSE.dcm", "RTSTRUCT.dcm"):
        assert (out / name).is_file() and str(out / name) in printed
    dose = pydicom.dcmread(out / "RTDOSE.dcm")
    rtplan = pydicom.dcmread(out / "RTPLAN.dcm")
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rtplan.SOPInstanceUID
    assert dose.FrameOfReferenceUID == rt["case"].ct.frame_of_reference_uid
    # errors: one line on stderr, exit 2
    assert main(["export", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.json" in err[0]
