"""Shared fixtures of the verification tests, each built once per session.

* the coarse phantom (L3, 24 mm lytic lesion, 3 mm voxels) and its plan from ``plan_case`` (needles, seeds,
  vertebroplasty needles and cement);
* a known patient motion of 3 deg and 8 mm about the implant;
* a synthetic post-operative CT on a 1 mm grid around the implant (seeds, cement, a 0.3 mL canal leak, a
  missing seed, a migrated seed, noise, streaks) and its registration;
* a synthetic intra-operative CT on a 1 mm grid covering the needles up to the skin and its registration.
"""

import numpy as np
import pytest

from seedplan.geometry import Grid
from seedplan.imaging import make_spine_phantom
from seedplan.plan import PlanningOptions
from seedplan.planning import plan_case
from seedplan.verification import register_ct, rigid_motion, synthetic_ct

#: The motion of every synthetic later CT: 3.0 deg about an oblique axis, 8.0 mm.
ROTATION_DEG = (1.7, -1.75, 1.75)
TRANSLATION_MM = (4.9, -4.0, 4.9)


@pytest.fixture(scope="session")
def v_phantom():
    return make_spine_phantom(level="L3", spacing_mm=3.0, lesion_diameter_mm=24.0)


@pytest.fixture(scope="session")
def v_plan(v_phantom):
    opts = PlanningOptions(heterogeneity=False, calibration_date="2024-01-01")
    return plan_case(v_phantom.ct, v_phantom.structures, options=opts).plan


@pytest.fixture(scope="session")
def v_centre(v_plan):
    return v_plan.positions_mm.mean(axis=0)


@pytest.fixture(scope="session")
def v_motion(v_centre):
    return rigid_motion(ROTATION_DEG, TRANSLATION_MM, v_centre)


@pytest.fixture(scope="session")
def post_grid(v_centre):
    """1 mm around the implant (the later CT's own frame)."""
    return Grid.from_bounds(v_centre + [-60, -60, -45], v_centre + [60, 60, 45], 1.0)


@pytest.fixture(scope="session")
def postop(v_plan, v_phantom, v_motion, post_grid):
    return synthetic_ct(v_plan, v_phantom.ct, kind="postop", motion=v_motion, grid=post_grid,
                        structures=v_phantom.structures, missing_seeds=1, migrated_seeds=1, leak="canal",
                        leak_volume_mL=0.3, noise_hu=15.0, streaks=4, seed=1)


@pytest.fixture(scope="session")
def postop_registration(postop, v_phantom, v_plan):
    return register_ct(postop.ct, v_phantom.ct, plan=v_plan)


@pytest.fixture(scope="session")
def intraop(v_plan, v_phantom, v_motion, v_centre):
    ends = np.array([p for n in tuple(v_plan.needles) + tuple(v_plan.pvp_needles) for p in (n.entry, n.tip)])
    lo = np.minimum(ends.min(axis=0), v_centre - 40) - 10
    hi = np.maximum(ends.max(axis=0), v_centre + 40) + np.array([10, 25, 10])
    return synthetic_ct(v_plan, v_phantom.ct, kind="intraop", motion=v_motion, grid=Grid.from_bounds(lo, hi, 1.0),
                        noise_hu=15.0, seed=4)


@pytest.fixture(scope="session")
def intraop_registration(intraop, v_phantom, v_plan):
    return register_ct(intraop.ct, v_phantom.ct, plan=v_plan)
