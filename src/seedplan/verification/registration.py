"""Rigid registration of a later CT (intra-operative or post-operative) to the planning CT.

The verification works in the planning frame: the plan's needles, seeds and
cement and the structures are all there.  A later CT is taken after the
patient was moved (or re-positioned on another day), so its LPS coordinates
differ from the planning CT's by a rigid motion that :func:`register_ct`
finds with SimpleITK's registration framework:

* metric: Mattes mutual information (50 bins), sampled on a regular grid in
  a bone mask of the planning CT: bone (HU >= ``bone_hu``) dilated by 3 mm,
  within ``roi_radius_mm`` of the region of interest (the plan's seeds, or
  ``center_mm``), without the planned cement (dilated 5 mm); in the later CT
  everything at or above ``dense_hu`` (seeds, needles, radiopaque cement)
  dilated by 3 mm is masked out, so what is new in the later CT does not
  pull the fit;
* both images clamped to [-300, ``dense_hu``] HU; three resolution levels
  (Gaussian smoothing 3, 1.5 and 0 mm, shrunk where the planning CT is
  fine); regular-step gradient descent on an Euler (rotation +
  translation) transform centred on the region of interest, scales from
  physical shift;
* initialisation from the images: the identity and the shift between the
  image centres, each also corrected by the translation that best overlays
  the two CTs' bone in the region of interest (FFT cross-correlation of the
  bone masks on a 2 mm grid, within 40 mm); the candidate with the best
  metric starts the optimisation.  ``initial`` replaces them.

The result (:class:`Registration`) is checked before anyone may use it: the
bone of both CTs inside the region of interest must agree (Dice of the
thresholded bone >= ``min_bone_dice``), the later CT must cover the region,
and the motion must be plausible (rotation <= ``max_rotation_deg``, shift
of the region's centre <= ``max_translation_mm``).  A result that fails is
returned marked ``ok=False`` with the reason; every function that uses a
registration calls :meth:`Registration.require`, which raises
:class:`RegistrationError` for it.  A transform found elsewhere is accepted
instead (:func:`registration_from_matrix`, :func:`read_registration`).

Conventions: :attr:`Registration.matrix` maps later-CT LPS points to
planning LPS (``p_plan = M @ p_later``).  An ITK/SimpleITK transform file
holds the transform that resamples the later CT onto the planning CT, which
maps *planning* points to *later* points (ITK's fixed-to-moving direction):
:meth:`Registration.write` writes that one, :func:`read_registration` reads
it (``maps=`` says which direction a file or matrix holds).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _validate as v
from .._atomic import atomic_path
from ..errors import FileFormatError, GeometryError, InputError, InputTypeError
from ..geometry import Grid
from ..imaging.ct import CTImage
from . import _frames as fr

__all__ = [
    "Registration",
    "RegistrationError",
    "register_ct",
    "registration_from_matrix",
    "read_registration",
    "as_registration",
    "region_of_interest",
]

log = logging.getLogger("seedplan")

MAPS = ("later_to_planning", "planning_to_later")


class RegistrationError(GeometryError):
    """A registration could not be computed, or one that failed its checks was about to be used."""


@dataclass(frozen=True, eq=False)
class Registration:
    """A rigid map from a later CT's LPS frame to the planning CT's, with how it was found and checked.

    Attributes
    ----------
    matrix : (4, 4) ndarray
        Maps later-CT LPS points to planning LPS: ``p_plan = matrix @ (p_later, 1)`` (read-only).
    metric : float or None
        Final Mattes mutual information (SimpleITK's sign: lower is better); None for a given transform.
    iterations : int
        Optimiser iterations over all resolution levels.
    ok : bool
        True when the transform may be used (:meth:`require`).
    quality : {"good", "failed", "unchecked"}
        ``"unchecked"``: a given transform not compared with the images.
    reason : str
        Why it failed (empty when ok).
    source : {"registered", "given"}
    bone_dice : float or None
        Dice of the bone (HU >= ``bone_hu``) of both CTs inside the region of interest after the transform.
    identity_bone_dice : float or None
        The same without the transform (for comparison).
    coverage : float or None
        Fraction of the region of interest the later CT covers.
    center_mm : tuple of 3 floats or None
        Centre of the region of interest (planning LPS).
    initialisation : str
        Which initial transform started the optimisation.
    stop_condition : str
        The optimiser's stop condition of the last level.
    elapsed_s : float
    """

    matrix: np.ndarray
    metric: float | None = None
    iterations: int = 0
    ok: bool = True
    quality: str = "unchecked"
    reason: str = ""
    source: str = "given"
    bone_dice: float | None = None
    identity_bone_dice: float | None = None
    coverage: float | None = None
    center_mm: tuple[float, float, float] | None = None
    initialisation: str = ""
    stop_condition: str = ""
    elapsed_s: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        m = fr.rigid_matrix(self.matrix, "Registration.matrix").copy()
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)
        v.choice(self.quality, "Registration.quality", ("good", "failed", "unchecked"))
        v.choice(self.source, "Registration.source", ("registered", "given"))
        if self.ok and self.quality == "failed":
            raise InputError("a Registration marked quality='failed' cannot be ok")
        if self.center_mm is not None:
            object.__setattr__(self, "center_mm", v.vector(self.center_mm, "Registration.center_mm"))

    # ------------------------------------------------------------ geometry
    @property
    def inverse_matrix(self) -> np.ndarray:
        """Planning LPS -> later-CT LPS."""
        return fr.inverse(self.matrix)

    @property
    def rotation_deg(self) -> float:
        """Rotation angle of the motion (deg)."""
        return fr.rotation_angle_deg(self.matrix)

    def shift_mm(self, point_mm: Any | None = None) -> float:
        """How far the motion moves a point (default the region's centre, else the origin), mm."""
        p = np.array(v.vector(point_mm, "point_mm") if point_mm is not None else (self.center_mm or (0.0, 0.0, 0.0)))
        return float(np.linalg.norm(fr.apply(self.matrix, p) - p))

    def to_planning(self, points_mm: Any) -> np.ndarray:
        """Later-CT points ``(N, 3)`` (or one point) in planning LPS."""
        return fr.apply(self.matrix, points_mm)

    def to_later(self, points_mm: Any) -> np.ndarray:
        """Planning points in the later CT's LPS."""
        return fr.apply(self.inverse_matrix, points_mm)

    def vectors_to_planning(self, vectors: Any) -> np.ndarray:
        """Directions (axes) of the later CT in the planning frame."""
        return fr.rotate(self.matrix, vectors)

    def vectors_to_later(self, vectors: Any) -> np.ndarray:
        """Planning directions in the later CT's frame."""
        return fr.rotate(self.inverse_matrix, vectors)

    def later_grid_in_planning(self, grid: Grid) -> Grid:
        """The later CT's voxels seen from the planning frame (to sample planning masks on them)."""
        return fr.grid_in(grid, self.matrix)

    # ------------------------------------------------------------- use
    def require(self, what: str = "this step") -> "Registration":
        """This registration when it may be used, else :class:`RegistrationError` with the reason."""
        if not self.ok:
            raise RegistrationError(
                f"the registration of the later CT failed its check ({self.reason}); {what} cannot use it: "
                "check the CTs, register with another initial transform or pass a transform "
                "(registration_from_matrix, read_registration)")
        return self

    def sitk_transform(self) -> Any:
        """The SimpleITK transform that resamples the later CT onto the planning CT (planning -> later points)."""
        return fr.sitk_affine(self.inverse_matrix)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the resampling transform (planning -> later points) as an ITK transform file (``.tfm``/``.txt``),
        atomically; :func:`read_registration` with the default ``maps`` reads it back."""
        import SimpleITK as sitk

        p = Path(path)
        with atomic_path(p) as tmp:
            sitk.WriteTransform(self.sitk_transform(), str(tmp))
        return p

    def summary(self) -> dict[str, Any]:
        """JSON-ready record (matrix as nested lists)."""
        return {
            "matrix_later_to_planning": [[float(x) for x in row] for row in self.matrix],
            "rotation_deg": round(self.rotation_deg, 4),
            "shift_mm": round(self.shift_mm(), 3),
            "metric": None if self.metric is None else float(self.metric),
            "iterations": int(self.iterations),
            "ok": bool(self.ok),
            "quality": self.quality,
            "reason": self.reason,
            "source": self.source,
            "bone_dice": self.bone_dice,
            "identity_bone_dice": self.identity_bone_dice,
            "coverage": self.coverage,
            "initialisation": self.initialisation,
            "stop_condition": self.stop_condition,
        }

    def check_image(self, later_ct: CTImage, planning_ct: CTImage, path: str | os.PathLike[str], *,
                    center_mm: Any | None = None, bone_hu: float = 250.0, size_mm: float = 140.0) -> Path:
        """Write a PNG with the bone edges of both CTs overlaid: the planning CT in grey, its bone edge in
        green and the later CT's bone edge (through this transform) in magenta, in axial, coronal and sagittal
        planes through ``center_mm`` (default the region's centre).  matplotlib is imported here."""
        fr.check_ct(later_ct, "later_ct")
        fr.check_ct(planning_ct, "planning_ct")
        bone_hu = v.number(bone_hu, "bone_hu")
        size_mm = v.number(size_mm, "size_mm", lo=10.0, hi=1000.0)
        c = np.array(v.vector(center_mm, "center_mm") if center_mm is not None else
                     (self.center_mm if self.center_mm is not None else _grid_centre(planning_ct.grid)))
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        step = max(0.5, float(min(min(planning_ct.grid.spacing_mm), min(later_ct.grid.spacing_mm))))
        views = (("axial", 0, 1, True), ("coronal", 0, 2, False), ("sagittal", 1, 2, False))
        fig = Figure(figsize=(15, 5.4), dpi=100)
        FigureCanvasAgg(fig)
        for n, (name, h, vv, down) in enumerate(views):
            plane = _plane_grid(c, h, vv, size_mm, step)
            plan_hu = fr.resample_hu(planning_ct, plane, np.eye(4), default_hu=-1024.0)[0]
            later_hu = fr.resample_hu(later_ct, plane, self.inverse_matrix, default_hu=-1024.0)[0]
            ax = fig.add_subplot(1, 3, n + 1)
            ext = (c[h] - size_mm / 2, c[h] + size_mm / 2, c[vv] - size_mm / 2, c[vv] + size_mm / 2)
            ax.imshow(np.clip(plan_hu, -200, 1200), cmap="gray", extent=ext, origin="lower", vmin=-200, vmax=1200)
            uu = np.linspace(ext[0], ext[1], plan_hu.shape[1])
            ww = np.linspace(ext[2], ext[3], plan_hu.shape[0])
            for img, colour in ((plan_hu, "#00ff00"), (later_hu, "#ff00ff")):
                if img.min() < bone_hu <= img.max():
                    ax.contour(uu, ww, img, levels=[bone_hu], colors=colour, linewidths=0.8)
            if down:
                ax.invert_yaxis()
            if name == "sagittal":
                ax.set_xlabel("y (mm), +y = posterior")
            else:
                ax.set_xlabel("x (mm), +x = patient left")
            ax.set_ylabel("y (mm), +y = posterior" if name == "axial" else "z (mm), +z = superior")
            ax.set_title(name)
        dice = "n/a" if self.bone_dice is None else f"{self.bone_dice:.3f}"
        fig.suptitle(f"registration check ({self.source}, {self.quality}{': ' + self.reason if self.reason else ''}): "
                     f"rotation {self.rotation_deg:.2f} deg, shift {self.shift_mm():.1f} mm, bone Dice {dice}; "
                     "green = planning bone edge, magenta = later CT bone edge", fontsize=9)
        out = Path(path)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi)
        return out


# ============================================================================ helpers
def _grid_centre(grid: Grid) -> np.ndarray:
    return grid.index_to_world((np.asarray(grid.size, float) - 1) / 2)


def _plane_grid(c: np.ndarray, h: int, vert: int, size_mm: float, step: float) -> Grid:
    n = int(round(size_mm / step)) + 1
    e = np.eye(3)
    normal = np.cross(e[h], e[vert])
    direction = np.stack([e[h], e[vert], normal], axis=1)
    origin = c - size_mm / 2 * e[h] - size_mm / 2 * e[vert]
    return Grid(origin, (step, step, step), (n, n, 1), direction)


def region_of_interest(planning_ct: CTImage, plan: Any = None, center_mm: Any = None) -> np.ndarray:
    """Centre of the region a registration must get right (planning LPS): ``center_mm``, else the plan's seed
    centroid (else its needle tips, else its cement), else the planning CT's centre."""
    c = _roi_centre(plan, center_mm)
    return _grid_centre(fr.check_ct(planning_ct, "planning_ct").grid) if c is None else c


def _roi_centre(plan: Any, center_mm: Any) -> np.ndarray | None:
    if center_mm is not None:
        return np.array(v.vector(center_mm, "center_mm"))
    if plan is not None:
        from ..plan import Plan

        if not isinstance(plan, Plan):
            raise InputTypeError(f"plan must be a seedplan Plan, got {type(plan).__name__}")
        if plan.seeds:
            return plan.positions_mm.mean(axis=0)
        tips = [n.tip for n in tuple(plan.needles) + tuple(plan.pvp_needles)]
        if tips:
            return np.mean(tips, axis=0)
        if plan.cement is not None and plan.cement.mask.any():
            idx = np.argwhere(plan.cement.mask)
            return fr.world_of_indices(plan.cement.grid, idx).mean(axis=0)
    return None


def _bone_correlation_shift(fhu: np.ndarray, fgrid: Grid, roi: np.ndarray, later_ct: CTImage, plan_to_later: np.ndarray,
                            bone_hu: float, dense_hu: float, search_mm: float = 40.0, step_mm: float = 2.0
                            ) -> np.ndarray | None:
    """The shift ``s`` (planning frame, mm) for which the later CT's bone, seen through ``plan_to_later``, best
    overlays the planning CT's bone in the region of interest (``later(plan_to_later(x + s)) ~ planning(x)``), by
    FFT cross-correlation of the bone masks on a ``step_mm`` grid within ``search_mm``.  None when the later CT
    has no bone there."""
    from scipy import ndimage, signal

    # the planning bone in the region, on a coarse grid
    k = max(1, int(round(step_mm / float(min(fgrid.spacing_mm)))))
    a = ((fhu >= bone_hu) & (fhu < dense_hu) & roi)[::k, ::k, ::k].astype(np.float32)
    if a.sum() < 20:
        return None
    cgrid = Grid(fgrid.origin_mm, np.asarray(fgrid.spacing_mm) * k, np.asarray(a.shape)[::-1], fgrid.direction_matrix)
    pad = int(np.ceil(search_mm / float(min(cgrid.spacing_mm))))
    big = Grid(cgrid.index_to_world(np.full(3, -float(pad))), cgrid.spacing_mm, np.asarray(cgrid.size) + 2 * pad,
               cgrid.direction_matrix)
    later = fr.resample_hu(later_ct, big, plan_to_later, default_hu=-1024.0)
    dense = ndimage.binary_dilation(later >= dense_hu, iterations=2)
    b = ((later >= bone_hu) & (later < dense_hu) & ~dense).astype(np.float32)
    if b.sum() < 20:
        return None
    # correlation of a (template) over b: peak index - pad = the shift in coarse voxels
    corr = signal.fftconvolve(b, a[::-1, ::-1, ::-1], mode="valid")
    if not np.isfinite(corr).all() or corr.max() <= 0:
        return None
    kz, ky, kx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    shift_idx = np.array([kx, ky, kz], float) - pad
    return cgrid.direction_matrix @ (shift_idx * np.asarray(cgrid.spacing_mm))


def _sitk_image(hu: np.ndarray, grid: Grid, lo: float, hi: float) -> Any:
    return grid.to_sitk(np.clip(np.asarray(hu, dtype=np.float32), lo, hi))


def _bone_agreement(planning_hu: np.ndarray, fixed_grid: Grid, later_ct: CTImage, plan_to_later: np.ndarray,
                    roi: np.ndarray, exclude: np.ndarray, bone_hu: float, dense_hu: float) -> tuple[float, float]:
    """(bone Dice inside the region of interest, fraction of the region the later CT covers)."""
    sentinel = -5000.0
    later = fr.resample_hu(later_ct, fixed_grid, plan_to_later, default_hu=sentinel)
    valid = later > sentinel / 2
    sp = np.asarray(fixed_grid.spacing_mm)[::-1]
    region = roi & valid & ~exclude & ~fr.dilate(later >= dense_hu, 3.0, sp)
    coverage = float((roi & valid).sum() / max(int(roi.sum()), 1))
    a = (planning_hu >= bone_hu) & region
    b = (later >= bone_hu) & region
    s = int(a.sum()) + int(b.sum())
    return (2.0 * int((a & b).sum()) / s if s else 0.0), coverage


# ============================================================================ register
def register_ct(
    later_ct: CTImage,
    planning_ct: CTImage,
    *,
    plan: Any = None,
    center_mm: Any = None,
    roi_radius_mm: float = 60.0,
    initial: Any = None,
    bone_hu: float = 250.0,
    dense_hu: float = 1500.0,
    max_rotation_deg: float = 15.0,
    max_translation_mm: float = 60.0,
    min_bone_dice: float = 0.6,
    max_iterations: int = 300,
    sampling: float = 0.15,
) -> Registration:
    """Rigidly register a later CT to the planning CT around the treated region.

    Parameters
    ----------
    later_ct : CTImage
        Intra-operative or post-operative CT.
    planning_ct : CTImage
        The CT the plan was made on.
    plan : Plan, optional
        Centres the region of interest on its seeds and keeps its planned cement out of the metric.
    center_mm : 3 floats, optional
        Centre of the region of interest (planning LPS); overrides the plan's.
    roi_radius_mm : float
        Radius of the region of interest (default 60 mm: the treated vertebra and its neighbours' edges).
    initial : Registration, (4, 4) array or SimpleITK transform, optional
        Initial later -> planning transform (a SimpleITK transform in ITK's planning -> later direction);
        replaces the automatic initialisation.
    bone_hu : float
        Bone threshold for the metric mask and the bone Dice check.
    dense_hu : float
        Voxels of the later CT at or above it (metal, radiopaque cement) are kept out of the metric.
    max_rotation_deg, max_translation_mm : float
        Larger motions are reported as failed (implausible for a patient on the table).
    min_bone_dice : float
        Smallest bone Dice in the region of interest accepted as a good registration.
    max_iterations : int
        Iterations per resolution level.
    sampling : float
        Fraction (0-1] of the masked planning voxels the metric samples (regular grid: deterministic).

    Returns
    -------
    Registration
        ``ok=False`` with ``reason`` when a check failed; use :meth:`Registration.require`.

    Raises
    ------
    RegistrationError
        The images do not overlap in any initialisation, or SimpleITK could not evaluate the metric.
    InputError
        Bad arguments.
    """
    import SimpleITK as sitk

    t_start = time.perf_counter()
    fr.check_ct(later_ct, "later_ct")
    fr.check_ct(planning_ct, "planning_ct")
    roi_radius_mm = v.number(roi_radius_mm, "roi_radius_mm", lo=10.0, hi=500.0)
    bone_hu = v.number(bone_hu, "bone_hu")
    dense_hu = v.number(dense_hu, "dense_hu", lo=bone_hu, lo_open=True)
    max_rotation_deg = v.number(max_rotation_deg, "max_rotation_deg", lo=0.0, hi=180.0)
    max_translation_mm = v.number(max_translation_mm, "max_translation_mm", lo=0.0)
    min_bone_dice = v.number(min_bone_dice, "min_bone_dice", lo=0.0, hi=1.0)
    max_iterations = v.integer(max_iterations, "max_iterations", lo=1, hi=100_000)
    sampling = v.number(sampling, "sampling", lo=0.0, hi=1.0, lo_open=True)
    centre = region_of_interest(planning_ct, plan, center_mm)

    # ---------------------------------------------------------------- fixed: the planning CT around the region
    pad = roi_radius_mm + 10.0
    try:
        fgrid, fsl = fr.crop_grid(planning_ct.grid, centre - pad, centre + pad)
    except GeometryError:
        raise RegistrationError(f"the region of interest around ({centre[0]:.1f}, {centre[1]:.1f}, {centre[2]:.1f}) mm "
                                "lies outside the planning CT") from None
    fhu = np.asarray(planning_ct.hu[fsl], dtype=np.float32)
    fsp = np.asarray(fgrid.spacing_mm)[::-1]
    roi = fgrid.ball_mask(centre, roi_radius_mm)
    exclude = np.zeros(fgrid.shape, bool)
    if plan is not None and getattr(plan, "cement", None) is not None:
        same = plan.cement.grid.same_geometry(planning_ct.grid)
        cm = plan.cement.mask[fsl] if same else plan.cement.mask_on(fgrid)
        exclude = fr.dilate(np.asarray(cm, bool), 5.0, fsp)
    fmask = roi & fr.dilate(fhu >= bone_hu, 3.0, fsp) & ~exclude
    if fmask.sum() < 500:
        raise RegistrationError(f"the planning CT has almost no bone (HU >= {bone_hu:g}) within {roi_radius_mm:g} mm "
                                "of "
                                f"({centre[0]:.1f}, {centre[1]:.1f}, {centre[2]:.1f}) mm; register around bone "
                                "(center_mm) or pass a transform")
    fixed = _sitk_image(fhu, fgrid, -300.0, dense_hu)
    fixed_mask = fgrid.to_sitk(fmask.astype(np.uint8))
    # the starts are ranked on a ~2 mm fixed grid: the metric's set-up visits every fixed voxel
    k = max(1, int(round(2.0 / float(min(fgrid.spacing_mm)))))
    cgrid = Grid(fgrid.origin_mm, np.asarray(fgrid.spacing_mm) * k, np.asarray(fhu[::k, ::k, ::k].shape)[::-1],
                 fgrid.direction_matrix)
    coarse = _sitk_image(fhu[::k, ::k, ::k], cgrid, -300.0, dense_hu)
    coarse_mask = cgrid.to_sitk(fmask[::k, ::k, ::k].astype(np.uint8))

    # ---------------------------------------------------------------- moving: the later CT, dense voxels masked
    lhu = np.asarray(later_ct.hu, dtype=np.float32)
    lsp = np.asarray(later_ct.grid.spacing_mm)[::-1]
    dense = lhu >= dense_hu
    mmask = ~fr.dilate(dense, 3.0, lsp)

    # ---------------------------------------------------------------- candidates (planning -> later)
    candidates: list[tuple[str, np.ndarray]] = []
    if initial is not None:
        init = as_registration(initial, maps="later_to_planning", name="initial", check=False)
        candidates.append(("given", init.inverse_matrix))
    else:
        frames = [("identity", np.eye(4))]
        t = np.eye(4)
        t[:3, 3] = _grid_centre(later_ct.grid) - _grid_centre(planning_ct.grid)
        frames.append(("image centres", t))
        for name, m in frames:
            candidates.append((name, m))
            shift = _bone_correlation_shift(fhu, fgrid, roi, later_ct, m, bone_hu, dense_hu, search_mm=40.0)
            if shift is not None:
                t = m.copy()
                t[:3, 3] += m[:3, :3] @ shift
                candidates.append((f"bone correlation from {name}", t))

    def method(levels: bool, fraction: float) -> Any:
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
        r.SetMetricSamplingStrategy(r.REGULAR)
        r.SetMetricSamplingPercentage(fraction, 1)
        # gradients where sampled, not filtered over the whole (large) later CT
        r.MetricUseFixedImageGradientFilterOff()
        r.MetricUseMovingImageGradientFilterOff()
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=max_iterations,
                                                   relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
        r.SetOptimizerScalesFromPhysicalShift()
        if levels:
            finest = float(min(fgrid.spacing_mm))
            shrink, sigma = [], []
            for target in (6.0, 3.0):  # coarse levels: smoothed (a wide capture range), shrunk where the CT is fine
                shrink.append(max(1, int(round(target / finest / 1.5))))
                sigma.append(target / 2.0)
            shrink.append(1)
            sigma.append(0.0)
            r.SetShrinkFactorsPerLevel(shrink)
            r.SetSmoothingSigmasPerLevel(sigma)
            r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        return r

    def euler(m: np.ndarray) -> Any:
        tx = sitk.Euler3DTransform()
        tx.SetCenter(tuple(float(x) for x in centre))
        tx.SetMatrix(tuple(float(x) for x in m[:3, :3].reshape(-1)))
        # p' = R (p - c) + c + t  and  p' = R p + b  =>  t = b - c + R c
        tx.SetTranslation(tuple(float(x) for x in m[:3, 3] - centre + m[:3, :3] @ centre))
        return tx

    def moving_near(m: np.ndarray) -> tuple[Any, Any]:
        """The later CT (and its mask) around where the region lands under ``m`` (planning -> later): the metric's
        set-up and the pyramid cost in proportion to the moving image, and the whole later CT costs more than the
        fit."""
        reach = roi_radius_mm + 10.0 + 30.0
        try:
            mgrid, msl = fr.crop_grid(later_ct.grid, centre - reach, centre + reach, frame_to_grid=m)
        except GeometryError:
            mgrid, msl = later_ct.grid, (slice(None),) * 3
        return _sitk_image(lhu[msl], mgrid, -300.0, dense_hu), mgrid.to_sitk(mmask[msl].astype(np.uint8))

    scored = []
    for name, m in candidates:
        r = method(False, min(1.0, 4.0 * sampling))
        r.SetMetricFixedMask(coarse_mask)
        r.SetInitialTransform(euler(m), inPlace=False)
        mov, mov_mask = moving_near(m)
        r.SetMetricMovingMask(mov_mask)
        try:
            value = float(r.MetricEvaluate(coarse, mov))
        except RuntimeError:
            continue
        if np.isfinite(value):
            scored.append((value, name, m))
    if not scored:
        raise RegistrationError(
            "the later CT does not overlap the planning CT's region of interest under any initial transform "
            "(identity, image centres, bone correlation); is it a CT of the same patient and region? Pass a transform "
            "(initial=) if the frames are far apart")
    scored.sort(key=lambda s: s[0])
    _, init_name, init_m = scored[0]
    log.info("registration: initialisation %s (metric %s)", init_name, ", ".join(f"{n} {s:.4f}" for s, n, _ in scored))

    moving, moving_mask = moving_near(init_m)
    r = method(True, sampling)
    r.SetMetricFixedMask(fixed_mask)
    r.SetMetricMovingMask(moving_mask)
    r.SetInitialTransform(euler(init_m), inPlace=False)
    count = [0]
    r.AddCommand(sitk.sitkIterationEvent, lambda: count.__setitem__(0, count[0] + 1))
    try:
        final = r.Execute(fixed, moving)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        raise RegistrationError("the registration stopped: the later CT and the planning CT's region of interest "
                                "stopped "
                                f"overlapping ({detail[-1][:160] if detail else 'SimpleITK error'}); pass a transform "
                                "(initial=) or check the CTs") from None
    plan_to_later = fr.matrix_of_sitk(final)
    # re-orthonormalise (float noise), then later -> planning
    u, _, vt = np.linalg.svd(plan_to_later[:3, :3])
    plan_to_later[:3, :3] = u @ vt
    matrix = fr.inverse(plan_to_later)

    dice, coverage = _bone_agreement(fhu, fgrid, later_ct, plan_to_later, roi, exclude, bone_hu, dense_hu)
    try:
        dice0, _ = _bone_agreement(fhu, fgrid, later_ct, np.eye(4), roi, exclude, bone_hu, dense_hu)
    except RuntimeError:  # pragma: no cover - SimpleITK resampling does not fail on disjoint grids
        dice0 = None
    rot = fr.rotation_angle_deg(matrix)
    shift = float(np.linalg.norm(fr.apply(matrix, centre) - centre))
    problems = []
    if coverage < 0.5:
        problems.append(f"the later CT covers only {100 * coverage:.0f} % of the region of interest")
    if dice < min_bone_dice:
        problems.append(f"the bone of the two CTs does not line up (bone Dice {dice:.2f} < {min_bone_dice:g})")
    if rot > max_rotation_deg:
        problems.append(f"rotation {rot:.1f} deg exceeds max_rotation_deg={max_rotation_deg:g}")
    if shift > max_translation_mm:
        problems.append(f"the region's centre moves {shift:.1f} mm, more than "
                        f"max_translation_mm={max_translation_mm:g}")
    ok = not problems
    reg = Registration(
        matrix=matrix, metric=float(r.GetMetricValue()), iterations=int(count[0]), ok=ok,
        quality="good" if ok else "failed", reason="; ".join(problems), source="registered",
        bone_dice=round(dice, 4), identity_bone_dice=None if dice0 is None else round(dice0, 4),
        coverage=round(coverage, 4), center_mm=tuple(float(x) for x in centre), initialisation=init_name,
        stop_condition=r.GetOptimizerStopConditionDescription(), elapsed_s=time.perf_counter() - t_start,
    )
    if ok:
        log.info("registration: rotation %.2f deg, shift %.1f mm, bone Dice %.3f (identity %s), %d iterations, %.1f s",
                 rot, shift, dice, "n/a" if dice0 is None else f"{dice0:.3f}", reg.iterations, reg.elapsed_s)
    else:
        log.warning("registration failed its check: %s", reg.reason)
    return reg


# ============================================================================ given transforms
def registration_from_matrix(matrix: Any, *, maps: str = "later_to_planning", later_ct: CTImage | None = None,
                             planning_ct: CTImage | None = None, plan: Any = None, center_mm: Any = None,
                             roi_radius_mm: float = 60.0, bone_hu: float = 250.0, dense_hu: float = 1500.0,
                             min_bone_dice: float = 0.6) -> Registration:
    """A :class:`Registration` from a rigid 4x4 matrix found elsewhere.

    Parameters
    ----------
    matrix : (4, 4) array_like
        Rigid (rotation + translation) matrix.
    maps : {"later_to_planning", "planning_to_later"}
        Which points it maps.
    later_ct, planning_ct : CTImage, optional
        With both, the transform is checked like a registration (bone Dice and coverage in the region of
        interest) and marked ``good`` or ``failed``; without them it is ``unchecked`` (and usable).
    """
    v.choice(maps, "maps", MAPS)
    m = fr.rigid_matrix(matrix, "matrix")
    if maps == "planning_to_later":
        m = fr.inverse(m)
    if later_ct is None or planning_ct is None:
        if (later_ct is None) != (planning_ct is None):
            raise InputError("pass both later_ct and planning_ct to check a given transform, or neither")
        centre = _roi_centre(plan, center_mm)
        return Registration(m, ok=True, quality="unchecked", source="given",
                            center_mm=None if centre is None else tuple(float(x) for x in centre))
    fr.check_ct(later_ct, "later_ct")
    fr.check_ct(planning_ct, "planning_ct")
    centre = region_of_interest(planning_ct, plan, center_mm)
    roi_radius_mm = v.number(roi_radius_mm, "roi_radius_mm", lo=10.0, hi=500.0)
    try:
        fgrid, fsl = fr.crop_grid(planning_ct.grid, centre - roi_radius_mm, centre + roi_radius_mm)
    except GeometryError:
        raise RegistrationError("the region of interest lies outside the planning CT") from None
    roi = fgrid.ball_mask(centre, roi_radius_mm)
    dice, coverage = _bone_agreement(np.asarray(planning_ct.hu[fsl], np.float32), fgrid, later_ct, fr.inverse(m), roi,
                                     np.zeros(fgrid.shape, bool), bone_hu, dense_hu)
    problems = []
    if coverage < 0.5:
        problems.append(f"the later CT covers only {100 * coverage:.0f} % of the region of interest")
    if dice < min_bone_dice:
        problems.append(f"the bone of the two CTs does not line up (bone Dice {dice:.2f} < {min_bone_dice:g})")
    return Registration(m, ok=not problems, quality="failed" if problems else "good", reason="; ".join(problems),
                        source="given", bone_dice=round(dice, 4), coverage=round(coverage, 4),
                        center_mm=tuple(float(x) for x in centre))


def read_registration(path: str | os.PathLike[str], *, maps: str = "planning_to_later", **check: Any) -> Registration:
    """A :class:`Registration` from an ITK/SimpleITK transform file (rigid, affine without scaling, or a
    composite of such).

    ``maps`` says which points the file's transform maps; the default is ITK's resampling convention
    (fixed = planning, moving = later: planning -> later points), what :meth:`Registration.write` writes and
    what SimpleITK/ITK registrations and 3D Slicer's "transform from parent" store.  ``check`` is passed on
    to :func:`registration_from_matrix` (``later_ct=``, ``planning_ct=``... to check it against the images).
    """
    import SimpleITK as sitk

    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"transform file {p} does not exist (expected an ITK .tfm/.txt/.h5 transform)")
    try:
        tx = sitk.ReadTransform(str(p))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        raise FileFormatError(f"cannot read transform file {p}: not an ITK transform "
                              f"({detail[-1][:160] if detail else 'unreadable'})") from None
    try:
        m = fr.matrix_of_sitk(tx)
        m = fr.rigid_matrix(m, f"the transform in {p}")
    except InputError as exc:
        raise FileFormatError(f"transform file {p}: {exc}") from None
    return registration_from_matrix(m, maps=maps, **check)


def as_registration(value: Any, *, maps: str = "later_to_planning", name: str = "registration",
                    check: bool = True) -> Registration:
    """A :class:`Registration` from what a caller passed: a Registration, a 4x4 matrix (``maps`` direction), a
    SimpleITK transform (ITK planning -> later direction) or a transform file path.  With ``check`` a failed
    registration raises :class:`RegistrationError` here (it is never used silently)."""
    if isinstance(value, Registration):
        reg = value
    elif isinstance(value, (str, os.PathLike)):
        reg = read_registration(value)
    elif value is None:
        raise InputTypeError(f"{name} is required: a Registration (register_ct), a 4x4 later -> planning matrix or a "
                             "transform file; pass numpy.eye(4) if the CTs share the frame")
    elif hasattr(value, "TransformPoint"):
        reg = registration_from_matrix(fr.matrix_of_sitk(value), maps="planning_to_later")
    else:
        try:
            reg = registration_from_matrix(value, maps=maps)
        except InputError as exc:
            raise type(exc)(f"{name}: {exc}") from None
    return reg.require() if check else reg
