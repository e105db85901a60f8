"""Shared fixtures for the imaging tests (coarse phantoms keep them fast)."""

from __future__ import annotations

import numpy as np
import pytest

from seedplan.geometry import Grid
from seedplan.imaging import CTImage, make_spine_phantom


@pytest.fixture(scope="session")
def phantom2():
    """The default L3 phantom at 2 mm."""
    return make_spine_phantom(level="L3", spacing_mm=2.0)


@pytest.fixture(scope="session")
def phantom1():
    """The default L3 phantom at 1 mm (segmentation accuracy)."""
    return make_spine_phantom(level="L3", spacing_mm=1.0)


def _small_ct(direction=None, spacing=(1.0, 1.25, 2.0), size=(24, 20, 12), origin=(-10.0, 5.0, 30.0), uids=True):
    """A small CT with a gradient and deterministic UIDs."""
    g = Grid(origin, spacing, size, direction)
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.shape), indexing="ij")
    hu = (i * 7 + j * 3 - k * 11 - 100).astype(np.float32)
    extra = {}
    if uids:
        extra = dict(series_uid="1.2.3.4.1", frame_of_reference_uid="1.2.3.4.2", study_uid="1.2.3.4.3")
    return CTImage(g, hu, **extra)


@pytest.fixture
def small_ct():
    """Factory of small CTs (see ``_small_ct``)."""
    return _small_ct
