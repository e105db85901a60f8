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

__all__ = [
    "__version__",
    "Grid",
    "SeedplanError",
    "InputError",
    "InputTypeError",
    "SeedModelError",
    "GeometryError",
    "ResourceError",
    "FileFormatError",
    "PlanningError",
]
