"""The reference study's three cases: the phantom options they need (wedge fracture, soft-tissue extension
towards a sacral foramen, a lesion spreading through the ala into the ilium), the named cases of
``seedplan.demo`` and ``seedplan demo --case``, and one case planned end to end.

Morphometric definition checked here: Genant's semi-quantitative grading measures a vertebral fracture by
the reduction of the anterior (or middle) height against the posterior height of the same body: grade 1
20-25 %, grade 2 25-40 %, grade 3 > 40 % (Genant HK et al., J Bone Miner Res 1993;8:1137-1148).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from seedplan.cli import build_parser, main
from seedplan.demo import STUDY_CASES, run_demo, study_case
from seedplan.errors import InputError
from seedplan.imaging import make_spine_phantom
from seedplan.imaging.phantom import HU, vertebra_dimensions
from seedplan.io import load_case
from seedplan.io.case import write_phantom_case
from seedplan.io.report import report_html

SP = 2.0


def _heights_mm(mask: np.ndarray, grid, x_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per AP column of the sagittal plane ``x = x_mm``: the column's y (mm) and the mask's height (mm)."""
    ix = int(round((x_mm - grid.origin[0]) / grid.spacing[0]))
    sag = mask[:, :, ix]  # (z, y)
    cols = np.nonzero(sag.any(axis=0))[0]
    return grid.origin[1] + grid.spacing[1] * cols, sag[:, cols].sum(axis=0) * grid.spacing[2]


# ------------------------------------------------------------------------------------------ fracture
@pytest.mark.parametrize("loss", [0.2, 0.3, 0.45])
def test_wedge_fracture_height_loss(loss):
    """Anterior height = (1 - loss) x posterior height on the vertebral-body mask, within one voxel."""
    ph = make_spine_phantom(level="L5", spacing_mm=SP, fracture={"L5": loss})
    dims = vertebra_dimensions("L5")
    y, h = _heights_mm(ph.structures["vertebral_body_L5"].mask, ph.ct.grid)
    h_post, h_ant = h[-1], h[0]
    assert abs(h_post - dims["height"]) <= SP  # the posterior wall keeps its height
    # the wedge at the anterior-most column's centre (the wall itself is within half a voxel of it)
    y_post = dims["center_y_mm"] + dims["depth"] / 2
    expected = dims["height"] * (1 - loss * (y_post - y[0]) / dims["depth"])
    assert abs(h_ant - expected) <= SP
    assert abs((h_post - h_ant) / h_post - loss) <= SP / h_post + 0.05  # Genant ratio, one voxel
    # the collapsed space is disc, the body above is untouched
    ref = make_spine_phantom(level="L5", spacing_mm=SP)
    changed = ph.ct.hu != ref.ct.hu
    assert set(np.unique(ph.ct.hu[changed & ~ref.structures["target"].mask])) <= {int(HU["disc"]),
                                                                                   int(HU["cortical"])}
    l5_top = dims["center_z_mm"] + dims["height"] / 2 + 1.0
    k = int(np.ceil((l5_top - ph.ct.grid.origin[2]) / SP))
    assert not changed[k:].any()


def test_fracture_zero_and_absent_draw_the_same_ct():
    a = make_spine_phantom(level="L4", spacing_mm=3.0)
    b = make_spine_phantom(level="L4", spacing_mm=3.0, fracture={"L4": 0.0})
    assert np.array_equal(a.ct.hu, b.ct.hu)


# ------------------------------------------------------------------------------------ soft-tissue mass
def test_extension_reaches_the_foramen_without_entering_it():
    ph = make_spine_phantom(**STUDY_CASES["study-s2"].phantom_kwargs(SP))
    tg = ph.structures["target"].mask
    right = ph.structures["sacral_foramen_canal_S2_right"].mask
    left = ph.structures["sacral_foramen_canal_S2_left"].mask
    assert not (tg & right).any()
    d_right = ndimage.distance_transform_edt(~right, sampling=SP)[tg].min()
    assert d_right <= 2.0 + 1e-9  # touches: the nearest target voxel is a neighbour of the foramen
    assert ndimage.distance_transform_edt(~left, sampling=SP)[tg].min() > 3 * SP  # the other side stays clear
    # one connected target: bone lesion and soft-tissue mass outside the body, at soft-tissue density
    assert ndimage.label(tg, np.ones((3, 3, 3), bool))[1] == 1
    outside = tg & ~ph.structures["vertebral_body_S2"].mask
    assert np.count_nonzero(outside) * SP**3 / 1000 > 0.5
    assert set(np.unique(ph.ct.hu[outside])) == {int(HU["mass"])} and 40 <= HU["mass"] <= 60
    for name in ("spinal_canal", "cauda_equina", "rectum", "sacral_bone", "sacral_foramen_canal_S1_right"):
        if name in ph.structures:
            assert not (tg & ph.structures[name].mask & ~ph.structures["vertebral_body_S2"].mask).any(), name
    (ext,) = ph.extensions
    assert ext.toward == "foramen_right" and ext.mass_cm3 > 0.5


def test_anterior_extension_at_a_lumbar_level():
    plain = make_spine_phantom(level="L3", spacing_mm=SP, lesion_diameter_mm=24.0)
    ph = make_spine_phantom(level="L3", spacing_mm=SP, lesion_diameter_mm=24.0,
                            lesion_extension={"toward": "anterior", "length_mm": 12.0, "diameter_mm": 14.0})
    tg = ph.structures["target"].mask
    assert (tg & plain.structures["target"].mask).sum() == plain.structures["target"].mask.sum()
    extra = tg & ~plain.structures["target"].mask
    k, j, i = np.nonzero(extra & ~ph.structures["vertebral_body_L3"].mask)
    y = ph.ct.grid.origin[1] + SP * j
    front = vertebra_dimensions("L3")["center_y_mm"] - vertebra_dimensions("L3")["depth"] / 2
    assert y.size and y.max() < front  # the mass lies in front of the body
    assert not (tg & ph.structures["aorta"].mask).any()


# --------------------------------------------------------------------------------- spread into the ilium
def test_s1_lesion_reaches_the_right_ilium_only():
    ph = make_spine_phantom(**STUDY_CASES["study-s1"].phantom_kwargs(SP))
    tg = ph.structures["target"].mask
    assert np.count_nonzero(tg & ph.structures["iliac_bone_right"].mask) * SP**3 > 200.0  # mm3 in the ilium
    assert not (tg & ph.structures["iliac_bone_left"].mask).any()
    _, _, i = np.nonzero(tg)
    assert (ph.ct.grid.origin[0] + SP * i).max() < 0  # all on the patient's right (-x)
    assert (tg & ph.structures["vertebral_body_S1"].mask).any()  # a lesion of S1: it reaches the body
    assert ndimage.label(tg, np.ones((3, 3, 3), bool))[1] == 1  # one lesion across the sacroiliac joint
    for name in ("cauda_equina", "spinal_canal", "sacral_foramen_canal_S1_right"):
        assert not (tg & ph.structures[name].mask).any(), name
    # without the spread the same sphere stays in the S1 body's cancellous bone, off the ilium
    ph_body = make_spine_phantom(level="S1", spacing_mm=SP, lesion_diameter_mm=40.0,
                                 lesion_center_offset_mm=(-20.0, 0.0, 0.0))
    assert not (ph_body.structures["target"].mask & ph_body.structures["iliac_bone_right"].mask).any()


# ------------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(level="S2", lesion_extension={"toward": "bladder", "length_mm": 5}), "toward must be one of"),
        (dict(level="L5", lesion_extension={"toward": "foramen_left"}), "needs a sacral level"),
        (dict(level="S2", lesion_extension={"toward": "anterior"}), "needs length_mm"),
        (dict(level="S2", lesion_extension={"toward": "anterior", "length_mm": 5, "width": 3}), "unknown key"),
        (dict(level="S2", lesion_extension={"level": "S1", "toward": "anterior", "length_mm": 5}),
         "not a treated level"),
        (dict(level="S2", lesion_extension={"toward": "anterior", "length_mm": 5, "diameter_mm": 40}),
         "diameter_mm"),
        (dict(level="S2", lesion_extension="foramen_right"), "lesion_extension must be a mapping"),
        (dict(level="L5", fracture={"L5": 1.0}), r"fracture\['L5'\].* must be >= 0 and < 1"),
        (dict(level="L5", fracture={"L5": -0.1}), r"fracture\['L5'\]"),
        (dict(level="L5", fracture={"S1": 0.3}), "sacral"),
        (dict(level="L5", fracture={"L1": 0.3}), "outside the field of view"),
        (dict(level="L5", fracture={"L9": 0.3}), "unknown level"),
        (dict(level="L5", fracture="L5"), "fracture must be a mapping"),
        (dict(level="L5", fracture={"L5": 0.4}, lesion_center_offset_mm=(0, -12, 11)), "collapsed endplate"),
        (dict(level="S1", lesion_spread="ilium"), "lesion_spread must be 'body' or 'bone'"),
        (dict(level="S1", lesion_center_offset_mm=(-38.0, 2.7, 15.2)), "outside the S1 body"),
    ],
)
def test_bad_study_options_are_one_clear_line(kw, match):
    with pytest.raises(InputError, match=match) as info:
        make_spine_phantom(**{"spacing_mm": 3.0, **kw})
    assert "\n" not in str(info.value)


def test_unknown_case_and_conflicting_arguments(tmp_path, capsys):
    with pytest.raises(InputError, match="unknown case 'study-x'; the built-in cases are study-s2") as info:
        run_demo(tmp_path / "x", case="study-x")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="fixes the lesions; leave out level"):
        run_demo(tmp_path / "x", case="study-s1", level="S1")
    assert not (tmp_path / "x").exists()
    for args, word in ((["--case", "nope"], "unknown case 'nope'"),
                       (["--case", "study-s1", "--level", "S1"], "leave out level")):
        assert main(["demo", "--out", str(tmp_path / "y"), *args]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("[seedplan]")]
        assert len(err) == 1 and word in err[0] and err[0].startswith("seedplan demo: error:")


def test_cli_names_the_built_in_cases():
    args = build_parser().parse_args(["demo", "--case", "study-l5"])
    assert args.case == "study-l5" and args.level is None
    assert "{" + ",".join(STUDY_CASES) + "}" in _demo_help()


def _demo_help() -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["demo"].format_help()


# ------------------------------------------------------------------------------------ the cases themselves
def test_study_cases_patient_blocks_and_descriptions():
    assert set(STUDY_CASES) == {"study-s2", "study-l5", "study-s1"}
    s2, l5, s1 = (study_case(n) for n in ("study-s2", "STUDY-L5", " study-s1 "))
    assert dict(s2.patient) == {"age_y": 64, "primary": "prostate", "primary_growth": "slow"}
    assert dict(l5.patient)["age_y"] == 59 and l5.patient["metastatic_segments"] >= 2
    assert "age_y" not in s1.patient and s1.patient["primary"] == "lung" and s1.patient["primary_growth"] == "rapid"
    for c in (s2, l5, s1):
        assert "kps" not in c.patient
        assert "reference study" in c.description and "osteoblastic" in c.description
        assert all(t == "blastic" for t in np.atleast_1d(c.phantom["lesion_type"]))
        for d in np.atleast_1d(c.phantom["lesion_diameter_mm"]):  # the description says what the phantom draws
            assert f"lesion of {d:g} mm" in c.description
    ph = make_spine_phantom(**l5.phantom_kwargs(SP))
    assert ph.levels == ("L5", "S1") and dict(ph.fracture) == {"L5": 0.3}
    assert 0.25 <= ph.fracture[0][1] <= 0.40  # Genant grade 2 (moderate)


def test_case_file_carries_description_and_patient(tmp_path):
    case = STUDY_CASES["study-s2"]
    ph = make_spine_phantom(**case.phantom_kwargs(3.0))
    write_phantom_case(ph, tmp_path, name=case.title, description=case.description, patient=case.patient)
    loaded = load_case(tmp_path / "case.json")
    assert loaded.name == case.title
    assert loaded.reference["description"] == case.description
    assert loaded.reference["patient"] == dict(case.patient)


@pytest.mark.filterwarnings("ignore:simulate_cement")  # PVP tips beside the blastic lesion: injected nearby
def test_study_s1_planned_end_to_end():
    """The cheapest case at 2 mm: it meets the cauda/foramen limits and, with its lesion size, the target goals."""
    from seedplan.plan import Prescription
    from seedplan.planning import plan_case

    case = STUDY_CASES["study-s1"]
    ph = make_spine_phantom(**case.phantom_kwargs(SP))
    ref = {"name": case.title, "description": case.description, "patient": dict(case.patient)}
    res = plan_case(ph.ct, ph.structures, Prescription(), case_reference=ref)
    m = res.plan.results
    assert m["goals"] and not [g for g in m["failed_goals"] if "cauda" in g or "foramen" in g]
    assert m["oars"]["cauda_equina"]["D0.1cc_Gy"] <= 50.0
    assert m["oars"]["sacral_foramen_canal_S1_right"]["D0.1cc_Gy"] <= 50.0
    assert m["target"]["D90_Gy"] >= 120.0 and m["target"]["V100_pct"] >= 95.0
    assert 10 <= res.plan.n_seeds <= 20
    html = report_html(res)
    assert case.description[:60] in html and "Patient: primary lung, rapid growth" in html
    assert "Clinical context" in html and "Prognostic index" in html
