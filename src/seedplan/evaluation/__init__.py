"""seedplan.evaluation: DVHs, plan indices and radiobiology of a dose distribution.

Workflow: :func:`sample_mask_points` (fine sub-voxel sampling of a structure)
-> dose engine at those points -> :class:`DVH` -> :func:`target_indices` /
:func:`oar_indices`; :func:`evaluate` does all of it for a structure set and
returns an :class:`Evaluation` (metrics dict + DVHs).
"""

from .dvh import DVH
from .indices import oar_indices, target_indices
from .metrics import Evaluation, SamplingOptions, dvh_of_structure, evaluate
from .radiobiology import bed_permanent_Gy, eqd2_Gy, eqd2_permanent_Gy
from .sampling import sample_mask_points

__all__ = [
    "DVH",
    "Evaluation",
    "SamplingOptions",
    "bed_permanent_Gy",
    "dvh_of_structure",
    "eqd2_Gy",
    "eqd2_permanent_Gy",
    "evaluate",
    "oar_indices",
    "sample_mask_points",
    "target_indices",
]
