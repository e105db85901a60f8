"""seedplan.viz: 2D review images (slice views with isodoses, DVH plot).

matplotlib is imported lazily inside the functions and only the Agg canvas
is used, so importing this package never needs a display.
"""

from .dvh_plot import plot_dvh
from .slices import extract_plane, render_slice_views, slice_figure, structure_color

__all__ = ["extract_plane", "render_slice_views", "slice_figure", "structure_color", "plot_dvh"]
