"""Cement on the post-operative CT: the planned fill measured back, a planted leak reported at its site with its
volume, bad input refused in one line."""

import numpy as np
import pytest
from verify_helpers import one_line

from seedplan.errors import GeometryError, InputError
from seedplan.geometry import Grid
from seedplan.imaging import CTImage, StructureSet
from seedplan.verification import synthetic_ct
from seedplan.verification.cement import SITES, verify_cement


@pytest.fixture(scope="module")
def canal(postop, v_phantom, v_plan, postop_registration):
    return verify_cement(postop.ct, v_phantom.ct, postop_registration, v_phantom.structures, plan=v_plan)


def test_a_canal_leak_is_reported_at_the_canal_with_its_volume(canal, postop):
    truth = postop.truth
    assert truth.leak_site == "spinal_canal" and truth.leak_volume_mL == pytest.approx(0.3, rel=0.05)
    assert [lk.site for lk in canal.leaks] == ["spinal_canal"]
    assert canal.leak_mL["spinal_canal"] == pytest.approx(truth.leak_volume_mL, rel=0.25)
    assert all(canal.leak_mL[s] == 0.0 for s in SITES if s != "spinal_canal")
    assert canal.leak_mL["outside_vertebral_body"] == pytest.approx(truth.leak_volume_mL, rel=0.25)
    lk = canal.leaks[0]
    assert np.linalg.norm(np.subtract(lk.centroid_mm, truth.leak_center_mm)) < 2.0
    assert any("spinal canal" in w for w in canal.warnings) and canal.leaked


def test_the_planned_fill_is_measured_back(canal, postop, v_plan):
    """Seeds (some in or next to the cement), streaks and noise do not change the measured fill."""
    planned = v_plan.cement.metrics
    assert canal.inside_vertebral_body_mL == pytest.approx(postop.truth.cement_volume_mL, rel=0.05)
    assert canal.max_cross_section_ratio == pytest.approx(planned["max_cross_section_ratio"], abs=0.03)
    assert canal.fill_pct == pytest.approx(planned["fill_pct"], rel=0.1)
    assert canal.endplate_contact == planned["endplate_contact"]
    assert canal.planned_volume_mL == v_plan.cement.volume_mL
    assert canal.dice_with_plan > 0.9
    assert 800 < canal.threshold_hu < 1200  # half-way between the 1800 HU cement and the bone it replaced
    s = canal.summary()
    assert s["leaks"][0]["site"] == "spinal_canal" and s["vertebral_body"] == "vertebral_body_L3"


def test_a_vein_leak_is_paravertebral(v_plan, v_phantom, v_motion, post_grid):
    later = synthetic_ct(v_plan, v_phantom.ct, kind="postop", motion=v_motion, grid=post_grid,
                         structures=v_phantom.structures, leak="vein", leak_volume_mL=0.4, seed=5)
    found = verify_cement(later.ct, v_phantom.ct, later.truth.later_to_planning, v_phantom.structures, plan=v_plan)
    assert [lk.site for lk in found.leaks] == ["paravertebral"]
    assert found.leak_mL["paravertebral"] == pytest.approx(later.truth.leak_volume_mL, rel=0.25)
    assert found.leak_mL["spinal_canal"] == 0.0


def test_no_leak_no_leak_report(v_plan, v_phantom, post_grid):
    later = synthetic_ct(v_plan, v_phantom.ct, kind="postop", grid=post_grid, seed=6)
    found = verify_cement(later.ct, v_phantom.ct, np.eye(4), v_phantom.structures, plan=v_plan)
    assert not found.leaks and found.outside_vertebral_body_mL < 0.01
    assert found.volume_mL == pytest.approx(later.truth.cement_volume_mL, rel=0.05)


def test_without_cement(v_plan, v_phantom, post_grid):
    later = synthetic_ct(v_plan, v_phantom.ct, kind="postop", grid=post_grid, cement=False, seed=6)
    found = verify_cement(later.ct, v_phantom.ct, np.eye(4), v_phantom.structures, plan=v_plan)
    assert found.volume_mL == 0.0 and not found.leaks and found.endplate_contact == "none"
    assert any("no radiopaque cement" in w for w in found.warnings)


def test_without_a_vertebral_body_is_refused(postop, v_phantom, postop_registration):
    only_canal = StructureSet([v_phantom.structures["spinal_canal"]])
    with pytest.raises(InputError) as exc:
        verify_cement(postop.ct, v_phantom.ct, postop_registration, only_canal)
    assert "vertebral body" in one_line(exc)
    with pytest.raises(InputError) as exc:
        verify_cement(postop.ct, v_phantom.ct, postop_registration, v_phantom.structures, vertebral_body="L9")
    assert "'L9'" in one_line(exc)


def test_a_ct_that_does_not_cover_the_body_is_refused(postop, v_phantom):
    g = postop.ct.grid
    far = CTImage(Grid(np.add(g.origin_mm, (300.0, 0.0, 0.0)), g.spacing_mm, g.size), postop.ct.hu)
    with pytest.raises(GeometryError) as exc:
        verify_cement(far, v_phantom.ct, np.eye(4), v_phantom.structures)
    assert "does not contain the treated vertebral body" in one_line(exc)
