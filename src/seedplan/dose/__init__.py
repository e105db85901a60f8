"""TG-43 dose: tabulated and exact point evaluation, fast grid kernels, decay."""

from .api import dose_rate, dose_rate_grid, influence_matrix, total_dose, total_dose_grid
from .decay import (
    I125_HALF_LIFE_D,
    decay_factor,
    delivered_fraction,
    dose_delivered_Gy,
    elapsed_days,
    mean_life_h,
    strength_at,
)

__all__ = [
    "dose_rate",
    "total_dose",
    "dose_rate_grid",
    "total_dose_grid",
    "influence_matrix",
    "I125_HALF_LIFE_D",
    "mean_life_h",
    "decay_factor",
    "delivered_fraction",
    "dose_delivered_Gy",
    "elapsed_days",
    "strength_at",
]
