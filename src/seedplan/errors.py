"""One error hierarchy for seedplan.

Every problem seedplan detects in its input raises a subclass of
:class:`SeedplanError`.  The message names the argument, file or structure
at fault and says what would be valid.  The command line turns these into a
single line on stderr and a non-zero exit code.
"""

from __future__ import annotations


class SeedplanError(Exception):
    """Base class of every error raised by seedplan."""


class InputError(SeedplanError, ValueError):
    """An argument has an invalid value (NaN, negative strength, bad shape...)."""


class InputTypeError(InputError, TypeError):
    """An argument has the wrong type (an :class:`InputError` that is also a ``TypeError``)."""


class SeedModelError(InputError):
    """A seed model is unknown, or its dataset file is malformed."""


class GeometryError(InputError):
    """Image, mask or grid geometries are inconsistent."""


class ResourceError(InputError):
    """A request needs more memory than the machine has."""


class FileFormatError(SeedplanError, ValueError):
    """A file is missing, unreadable, corrupt or of the wrong kind."""


class PlanningError(SeedplanError):
    """Planning cannot produce a plan (no feasible needle path, empty target...)."""


class OutputBusyError(SeedplanError):
    """Another seedplan run is writing the same output folder (its lock is held)."""
