"""seedplan.viz: review images.

* :mod:`~seedplan.viz.slices` and :mod:`~seedplan.viz.dvh_plot`: 2D slice views
  with isodoses and the DVH plot (matplotlib, Agg canvas only);
* :mod:`~seedplan.viz.scene`: the 3D scene (pyvista), interactive or as
  off-screen screenshots of standard views.

matplotlib and pyvista are imported lazily inside the functions, so importing
this package never needs a display.
"""

from .dvh_plot import plot_dvh
from .scene import DEFAULT_VIEWS, VIEWS, build_scene, mask_surface, render_views, seed_capsules, show
from .slices import extract_plane, render_slice_views, slice_figure, structure_color

__all__ = ["extract_plane", "render_slice_views", "slice_figure", "structure_color", "plot_dvh", "VIEWS",
           "DEFAULT_VIEWS", "build_scene", "render_views", "show", "mask_surface", "seed_capsules"]
