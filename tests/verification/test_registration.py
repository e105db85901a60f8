"""Registration of a later CT to the planning CT: the known motion is recovered, failures are reported and
never used, transforms from elsewhere are accepted."""

import json

import numpy as np
import pytest
from verify_helpers import one_line, rotation_error_deg

from seedplan.errors import FileFormatError, InputError
from seedplan.imaging import CTImage
from seedplan.verification import (
    Registration,
    RegistrationError,
    as_registration,
    read_registration,
    register_ct,
    registration_from_matrix,
    rigid_motion,
    synthetic_ct,
)
from seedplan.verification._frames import apply, rotation_angle_deg


def test_the_planted_motion_is_3_deg_and_8_mm(v_motion, v_centre):
    assert rotation_angle_deg(v_motion) == pytest.approx(3.0, abs=0.05)
    assert np.linalg.norm(apply(v_motion, v_centre) - v_centre) == pytest.approx(8.0, abs=0.05)


def test_registration_recovers_the_known_motion(postop, postop_registration, v_plan, v_centre):
    reg = postop_registration
    truth = postop.truth.later_to_planning
    assert reg.ok and reg.quality == "good" and reg.source == "registered", reg.reason
    assert rotation_error_deg(reg.matrix, truth) < 0.5
    # translation: every planned seed (the region that matters) lands within 1 mm of where the truth puts it
    later = apply(np.linalg.inv(truth), v_plan.positions_mm)
    assert np.max(np.linalg.norm(reg.to_planning(later) - v_plan.positions_mm, axis=1)) < 1.0
    assert np.linalg.norm(reg.to_planning(apply(np.linalg.inv(truth), v_centre)) - v_centre) < 1.0
    # the check that made it "good": bone lines up after, not before
    assert reg.bone_dice > 0.8 > reg.identity_bone_dice
    assert reg.iterations > 0 and reg.metric < 0
    assert reg.rotation_deg == pytest.approx(3.0, abs=0.5)
    json.dumps(reg.summary())  # a JSON-ready record


def test_registration_of_the_intraop_ct_with_needles(intraop, intraop_registration):
    reg = intraop_registration
    assert reg.ok, reg.reason
    truth = intraop.truth.later_to_planning
    assert rotation_error_deg(reg.matrix, truth) < 0.5
    c = np.array(reg.center_mm)
    assert np.linalg.norm(reg.to_planning(apply(np.linalg.inv(truth), c)) - c) < 1.0


def test_an_implausible_motion_is_reported_failed_and_never_used(postop, v_phantom, v_plan):
    reg = register_ct(postop.ct, v_phantom.ct, plan=v_plan, max_translation_mm=3.0)
    assert not reg.ok and reg.quality == "failed"
    assert "max_translation_mm=3" in reg.reason
    with pytest.raises(RegistrationError) as exc:
        reg.require()
    assert "max_translation_mm" in one_line(exc)
    with pytest.raises(RegistrationError):
        as_registration(reg)
    from seedplan.verification.seeds import verify_seeds

    with pytest.raises(RegistrationError):
        verify_seeds(postop.ct, v_plan, reg)


def test_a_ct_without_the_patient_is_refused(postop, v_phantom, v_plan):
    air = CTImage(postop.ct.grid, np.full(postop.ct.grid.shape, -1000, np.int16))
    try:
        reg = register_ct(air, v_phantom.ct, plan=v_plan)
    except RegistrationError as exc:
        assert "\n" not in str(exc)
    else:
        assert not reg.ok and "bone" in reg.reason


def test_a_registration_landing_on_the_wrong_place_is_failed(postop, v_phantom, v_plan):
    # started 25 mm off along the spine, the optimiser cannot come back: the bone check catches it
    start = np.eye(4)
    start[2, 3] = 25.0
    reg = register_ct(postop.ct, v_phantom.ct, plan=v_plan, initial=postop.truth.later_to_planning @ start,
                      max_iterations=5)
    assert not reg.ok and "bone" in reg.reason


def test_a_given_matrix_is_accepted_and_checked(postop, v_phantom, v_plan):
    truth = postop.truth.later_to_planning
    unchecked = registration_from_matrix(truth)
    assert unchecked.ok and unchecked.quality == "unchecked" and unchecked.source == "given"
    assert np.allclose(unchecked.matrix, truth)
    inverse = registration_from_matrix(np.linalg.inv(truth), maps="planning_to_later")
    assert np.allclose(inverse.matrix, truth, atol=1e-12)
    checked = registration_from_matrix(truth, later_ct=postop.ct, planning_ct=v_phantom.ct, plan=v_plan)
    assert checked.quality == "good" and checked.bone_dice > 0.8
    wrong = registration_from_matrix(np.eye(4), later_ct=postop.ct, planning_ct=v_phantom.ct, plan=v_plan)
    assert wrong.quality == "failed" and not wrong.ok and "bone" in wrong.reason


def test_a_transform_file_round_trip(tmp_path, postop_registration):
    path = postop_registration.write(tmp_path / "later_to_planning.tfm")
    back = read_registration(path)
    assert np.allclose(back.matrix, postop_registration.matrix, atol=1e-9)
    assert as_registration(str(path)).ok
    import SimpleITK as sitk

    tx = sitk.ReadTransform(str(path))  # ITK's direction: planning -> later points
    p = np.array([10.0, 20.0, -5.0])
    assert np.allclose(tx.TransformPoint(tuple(p)), postop_registration.to_later(p), atol=1e-6)
    assert np.allclose(as_registration(tx).matrix, postop_registration.matrix, atol=1e-9)


@pytest.mark.parametrize("bad, what", [
    (np.diag([2.0, 1.0, 1.0, 1.0]), "rigid"),
    (np.diag([-1.0, 1.0, 1.0, 1.0]), "rigid"),
    (np.eye(3), "4x4"),
    ("eye", "4x4"),
    (np.full((4, 4), np.nan), "finite"),
])
def test_bad_matrices_give_one_clear_error(bad, what):
    with pytest.raises(InputError) as exc:
        registration_from_matrix(bad)
    assert what in one_line(exc)


def test_bad_transform_files(tmp_path):
    with pytest.raises(FileFormatError) as exc:
        read_registration(tmp_path / "missing.tfm")
    assert "does not exist" in one_line(exc)
    junk = tmp_path / "junk.tfm"
    junk.write_text("not a transform\n")
    with pytest.raises(FileFormatError) as exc:
        read_registration(junk)
    assert "junk.tfm" in one_line(exc)


def test_a_registration_value_is_frozen_and_validated(postop_registration):
    with pytest.raises(AttributeError):
        postop_registration.ok = False  # type: ignore[misc]
    with pytest.raises(ValueError):
        postop_registration.matrix[0, 0] = 2.0
    with pytest.raises(InputError):
        Registration(np.eye(4), ok=True, quality="failed")
    with pytest.raises(InputError):
        as_registration(None)


def test_the_check_image(tmp_path, postop, v_phantom, postop_registration):
    out = postop_registration.check_image(postop.ct, v_phantom.ct, tmp_path / "check.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_a_larger_motion_is_recovered_too(v_plan, v_phantom, post_grid, v_centre):
    motion = rigid_motion((0.0, 0.0, -6.0), (12.0, 6.0, -8.0), v_centre)
    later = synthetic_ct(v_plan, v_phantom.ct, kind="postop", motion=motion, grid=post_grid, seed=7)
    reg = register_ct(later.ct, v_phantom.ct, plan=v_plan)
    assert reg.ok, reg.reason
    assert rotation_error_deg(reg.matrix, later.truth.later_to_planning) < 0.5
    c = np.array(reg.center_mm)
    assert np.linalg.norm(reg.to_planning(apply(motion, c)) - c) < 1.0
