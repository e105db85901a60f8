"""Bad input raises a seedplan error that names the argument."""


import numpy as np
import pytest

import seedplan
from seedplan.errors import InputError, InputTypeError, ResourceError, SeedModelError, SeedplanError

P = [[10.0, 0, 0]]
S = [[0.0, 0, 0]]


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(points_mm=[[np.nan, 0, 0]]), InputError, "points_mm"),
        (dict(points_mm=[[np.inf, 0, 0]]), InputError, "points_mm"),
        (dict(seeds_mm=[[0, np.nan, 0]]), InputError, "seeds_mm"),
        (dict(strength_U=[0.0]), InputError, "strength_U"),
        (dict(strength_U=[-1.0]), InputError, "strength_U"),
        (dict(strength_U=[1.0, 2.0]), InputError, "strength_U"),
        (dict(points_mm=[[1.0, 2.0]]), InputError, "points_mm"),
        (dict(points_mm=np.zeros((2, 3, 1))), InputError, "points_mm"),
        (dict(points_mm="abc"), InputTypeError, "points_mm"),
        (dict(source="9999"), SeedModelError, "9999"),
        (dict(axes=[[0, 0, 0]]), InputError, "axes"),
        (dict(axes=[[0, 0, 1], [0, 1, 0]]), InputError, "axes"),
        (dict(formalism="3D"), InputError, "formalism"),
        (dict(cutoff_mm=-5), InputError, "cutoff_mm"),
    ],
)
def test_point_api_rejects(kwargs, exc, word):
    args = dict(points_mm=P, seeds_mm=S, strength_U=[1.0])
    args.update(kwargs)
    with pytest.raises(exc) as info:
        seedplan.dose_rate(args.pop("points_mm"), args.pop("seeds_mm"), args.pop("strength_U"), **args)
    assert word in str(info.value)
    assert isinstance(info.value, SeedplanError)
    assert isinstance(info.value, (ValueError, TypeError))


def test_grid_too_large_for_memory():
    grid = seedplan.Grid([0, 0, 0], [1, 1, 1], [20000, 20000, 20000])
    with pytest.raises(ResourceError, match="GiB"):
        seedplan.dose_rate_grid(grid, S, 1.0)


def test_grid_argument_type():
    with pytest.raises(InputTypeError, match="grid"):
        seedplan.dose_rate_grid("not a grid", S, 1.0)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(origin_mm=[0, 0]), "origin_mm"),
        (dict(spacing_mm=[1, 0, 1]), "spacing_mm"),
        (dict(size=[10, 0, 10]), "size"),
        (dict(direction=[[1, 0, 0], [0, 1, 0], [0, 1, 0]]), "direction"),
        (dict(origin_mm=[0, np.nan, 0]), "origin_mm"),
    ],
)
def test_grid_validation(kwargs, word):
    args = dict(origin_mm=[0, 0, 0], spacing_mm=[1, 1, 1], size=[10, 10, 10])
    args.update(kwargs)
    with pytest.raises(InputError, match=word):
        seedplan.Grid(**args)


def test_mci_conversion_rejects_negative():
    with pytest.raises(InputError, match="activity_mCi"):
        seedplan.mCi_to_U(-0.5)
    assert seedplan.mCi_to_U([0.3, 1.0]) == pytest.approx([0.381, 1.27])
    override = seedplan.load_seed_model("6711").with_U_per_mCi(1.3)
    assert seedplan.mCi_to_U(1.0, source=override) == pytest.approx(1.3)


# ------------------------------------------------------------ resources and absurd values (before memory is spent)
def test_too_many_points_or_pairs_is_a_resource_error_before_any_copy():
    import seedplan
    from seedplan.errors import ResourceError

    seed = np.zeros((1, 3))
    huge = np.broadcast_to(np.zeros(3), (10**10, 3))  # a view: no memory is spent making it
    with pytest.raises(ResourceError, match="points.*GiB"):
        seedplan.dose_rate(huge, seed, 1.0)
    slots = np.broadcast_to(np.zeros(3), (10**5, 3))
    with pytest.raises(ResourceError, match="influence matrix of 1,000,000 points x 100,000 seeds"):
        seedplan.influence_matrix(np.broadcast_to(np.ones(3), (10**6, 3)), slots)
    with pytest.raises(ResourceError, match="seeds_mm has 1,000,000 rows"):
        seedplan.total_dose(np.zeros((1, 3)), np.broadcast_to(np.ones(3), (10**6, 3)), 1.0)


def test_absurd_positions_and_kinds_are_refused():
    import seedplan
    from seedplan.errors import InputError, InputTypeError

    with pytest.raises(InputError, match=r"seeds_mm\[1\].*farther than 100000 mm"):
        seedplan.total_dose(np.zeros((1, 3)), [[0, 0, 0], [1e30, 0, 0]], 1.0)
    with pytest.raises(InputTypeError, match="complex"):
        seedplan.dose_rate(np.zeros((2, 3), complex), np.zeros((1, 3)), 1.0)
    with pytest.raises(InputTypeError, match="booleans"):
        seedplan.dose_rate(np.ones((2, 3), bool), np.zeros((1, 3)), 1.0)
    with pytest.raises(InputError, match="seeds_mm is empty"):
        seedplan.total_dose_grid(seedplan.Grid([0, 0, 0], [1, 1, 1], [5, 5, 5]), np.zeros((0, 3)), [])
