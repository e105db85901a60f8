"""seedplan: open 125I seed brachytherapy planning (TG-43) for CT-guided spinal implants.

The public scripting API is re-exported here; the workflow reads in the
sub-package names: ``imaging`` (CT, structures) -> ``planning`` (needles,
cement, seeds) -> ``plan`` (the plan value and file; its dose and
evaluation through ``dose`` and ``evaluation``) -> ``io`` / ``viz``
(case files, report, DICOM RT, views).  The planning and file names are
loaded on first use, so ``import seedplan`` stays light.
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

#: Names loaded from their sub-package on first use.
_LAZY = {
    "plan_case": "planning",
    "run_batch": "batch",
    "Prescription": "plan",
    "PlanningOptions": "plan",
    "Plan": "plan",
    "load_plan": "plan",
    "save_plan": "plan",
    "reevaluate_plan": "plan",
    "load_case": "io",
    "export_plan_dicom": "io",
    "make_spine_phantom": "imaging",
    "load_ct": "imaging",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'seedplan' has no attribute {name!r}")


__all__ = [
    "__version__",
    *_LAZY,
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
