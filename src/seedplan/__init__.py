"""seedplan: open 125I seed brachytherapy planning (TG-43) for CT-guided spinal implants.

The public scripting API is re-exported here; the workflow reads in the
sub-package names: ``imaging`` -> ``planning`` -> ``dose`` -> ``evaluation``
-> ``io`` / ``viz``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    FileFormatError,
    GeometryError,
    InputError,
    InputTypeError,
    PlanningError,
    ResourceError,
    SeedModelError,
    SeedplanError,
)
from .geometry import Grid
from .sources import SeedModel, U_to_mCi, available_seed_models, load_seed_model, mCi_to_U, read_seed_model_file
from .dose import dose_rate, dose_rate_grid, influence_matrix, total_dose, total_dose_grid

__all__ = [
    "__version__",
    "Grid",
    "dose_rate",
    "total_dose",
    "dose_rate_grid",
    "total_dose_grid",
    "influence_matrix",
    "mCi_to_U",
    "U_to_mCi",
    "SeedModel",
    "load_seed_model",
    "read_seed_model_file",
    "available_seed_models",
    "SeedplanError",
    "InputError",
    "InputTypeError",
    "SeedModelError",
    "GeometryError",
    "ResourceError",
    "FileFormatError",
    "PlanningError",
]
