"""Shared fixtures: the default phantom (L3, 30 mm lytic lesion) and its automatic plan, built once."""

import pytest

from seedplan.imaging.phantom import make_spine_phantom
from seedplan.planning import plan_case


@pytest.fixture(scope="session")
def phantom():
    return make_spine_phantom(level="L3", lesion_diameter_mm=30.0, lesion_type="lytic")


@pytest.fixture(scope="session")
def result(phantom):
    return plan_case(phantom.ct, phantom.structures)
