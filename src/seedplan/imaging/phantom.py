"""A deterministic synthetic CT of the lumbar spine with a vertebral metastasis.

The phantom is built analytically in patient LPS coordinates (x: patient
left +, y: posterior +, z: superior +) on an axis-aligned grid.  The spine is
straight (no lordosis); the centre of the L3 body is at ``(0, 5, 0)`` mm.

Dimensions (rounded, adult male means) and their sources
--------------------------------------------------------
Vertebral bodies, lumbar (Panjabi MM et al., "Human lumbar vertebrae:
quantitative three-dimensional anatomy", Spine 1992;17(3):299-306; end-plate
width / depth, body height):

=====  =========  =========  ==========  ===========  ===========
level  width mm   depth mm   height mm   canal w mm   canal d mm
=====  =========  =========  ==========  ===========  ===========
L1     42         33         25          21           17
L2     44         34         26          22           16.5
L3     46         35         27          23           16
L4     48         35         27          23.5         16
L5     50         34         26          25           16
=====  =========  =========  ==========  ===========  ===========

Lower thoracic bodies (Panjabi MM et al., "Thoracic human vertebrae:
quantitative three-dimensional anatomy", Spine 1991;16(8):888-901):
T11 38 x 30 x 23 mm, T12 40 x 31 x 24 mm, canal about 18 x 16 mm.

Pedicle transverse width / sagittal height (Zindrick MR et al., "Analysis of
the morphometric characteristics of the thoracic and lumbar pedicles",
Spine 1987;12(2):160-166): T11 7.8/16.5, T12 7.8/15.9, L1 8.7/15.4,
L2 8.9/15.0, L3 10.3/14.9, L4 12.9/14.8, L5 18.0/14.0 mm.

Intervertebral disc height about 10-11 mm in the lumbar spine and 6-8 mm at
T10-L1 (typical radiographic values).  Abdominal aorta diameter about 22 mm
(normal infrarenal range 15-24 mm), bifurcation at L4; IVC confluence at L5;
kidneys about 11 x 6 x 4.5 cm centred at L1-L2, right 1.5 cm lower; conus
medullaris at the L1-L2 disc.

HU values: cortical bone +900, cancellous +200, pedicle core +250, posterior
elements +700, disc +80, CSF +10, cord +35, cauda equina +20, aorta/IVC +40,
psoas +50, paraspinal muscle +55, kidney +30, subcutaneous fat -100,
retroperitoneal fat -80, skin +30, air -1000; lytic lesion +30, blastic
+1000.

The phantom is a geometric teaching/testing object, not an anatomical atlas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..geometry import Grid
from .ct import CTImage, deterministic_uid
from .structures import Role, Structure, StructureSet

__all__ = ["SpinePhantom", "make_spine_phantom", "LEVELS", "vertebra_dimensions"]


@dataclass(frozen=True)
class _Level:
    width: float  # body width (x), mm
    depth: float  # body AP depth (y), mm
    height: float  # body height (z), mm
    pedicle_width: float
    pedicle_height: float
    canal_width: float
    canal_depth: float
    tp_reach: float  # transverse process tip distance from midline, mm
    spinous_length: float  # spinous process length behind the lamina, mm
    disc_below: float  # height of the disc below this level, mm


# Inferior -> superior.  See the module docstring for sources.
_TABLE: dict[str, _Level] = {
    "S1": _Level(50, 33, 28, 18.0, 14.0, 26, 15, 30, 15, 10),
    "L5": _Level(50, 34, 26, 18.0, 14.0, 25, 16, 38, 26, 10),
    "L4": _Level(48, 35, 27, 12.9, 14.8, 23.5, 16, 40, 30, 11),
    "L3": _Level(46, 35, 27, 10.3, 14.9, 23, 16, 45, 30, 11),
    "L2": _Level(44, 34, 26, 8.9, 15.0, 22, 16.5, 40, 30, 11),
    "L1": _Level(42, 33, 25, 8.7, 15.4, 21, 17, 35, 30, 10),
    "T12": _Level(40, 31, 24, 7.8, 15.9, 19, 17, 28, 30, 8),
    "T11": _Level(38, 30, 23, 7.8, 16.5, 18, 16, 30, 30, 7),
    "T10": _Level(36, 28, 22, 7.0, 16.0, 17, 16, 32, 30, 6),
}
LEVELS: tuple[str, ...] = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")
_LUMBAR = ("L1", "L2", "L3", "L4", "L5")
_ORDER = tuple(_TABLE)  # inferior -> superior

BODY_Y_MM = 5.0  # AP position of every vertebral-body centre
TORSO_SEMI_MM = (160.0, 115.0)  # torso half-width (x) and half-depth (y): 320 x 230 mm
FAT_THICKNESS_MM = 18.0
SKIN_MM = 2.0

HU = {
    "air": -1000.0,
    "skin": 30.0,
    "fat": -100.0,
    "retro_fat": -80.0,
    "soft": 25.0,
    "muscle": 55.0,
    "psoas": 50.0,
    "kidney": 30.0,
    "vessel": 40.0,
    "disc": 80.0,
    "cortical": 900.0,
    "cancellous": 200.0,
    "pedicle_core": 250.0,
    "posterior": 700.0,
    "csf": 10.0,
    "cord": 35.0,
    "cauda": 20.0,
    "lytic": 30.0,
    "blastic": 1000.0,
}


def _centres() -> dict[str, float]:
    """z (mm) of each body centre; L3 at 0."""
    z = {"L3": 0.0}
    i3 = _ORDER.index("L3")
    for i in range(i3 + 1, len(_ORDER)):  # upwards
        lo, hi = _TABLE[_ORDER[i - 1]], _TABLE[_ORDER[i]]
        z[_ORDER[i]] = z[_ORDER[i - 1]] + lo.height / 2 + hi.disc_below + hi.height / 2
    for i in range(i3 - 1, -1, -1):  # downwards
        lo, hi = _TABLE[_ORDER[i]], _TABLE[_ORDER[i + 1]]
        z[_ORDER[i]] = z[_ORDER[i + 1]] - hi.height / 2 - hi.disc_below - lo.height / 2
    return z


_Z = _centres()


def vertebra_dimensions(level: str) -> dict[str, float]:
    """The phantom's dimensions (mm) for ``level`` and its body-centre position."""
    lv = _check_level(level, include_thoracic=True)
    d = dict(_TABLE[lv].__dict__)
    d.update(center_x_mm=0.0, center_y_mm=BODY_Y_MM, center_z_mm=_Z[lv])
    return d


def _segment(level: str) -> tuple[float, float]:
    """z range owned by ``level``: mid-disc below to mid-disc above (open at the ends of the table)."""
    i = _ORDER.index(level)
    t = _TABLE[level]
    lo = _Z[level] - t.height / 2 - t.disc_below / 2 if i > 0 else -math.inf
    if i + 1 < len(_ORDER):
        up = _TABLE[_ORDER[i + 1]]
        hi = _Z[level] + t.height / 2 + up.disc_below / 2
    else:
        hi = math.inf
    return lo, hi


def _check_level(level: str, include_thoracic: bool) -> str:
    if not isinstance(level, str):
        raise InputError(f"level must be a string such as 'L3', got {level!r}")
    lv = level.strip().upper()
    if lv in ("T11", "T12") and not include_thoracic:
        raise InputError(f"level {level!r} needs include_thoracic=True (the phantom's treated levels are L1-L5)")
    if lv not in LEVELS:
        raise InputError(f"unknown level {level!r}; valid levels are L1-L5 (and T11, T12 with include_thoracic=True)")
    return lv


# ------------------------------------------------------------------------- canvas
class _Canvas:
    """Axis-aligned grid with fast box-restricted evaluation."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.x = grid.origin[0] + grid.spacing[0] * np.arange(grid.size[0])
        self.y = grid.origin[1] + grid.spacing[1] * np.arange(grid.size[1])
        self.z = grid.origin[2] + grid.spacing[2] * np.arange(grid.size[2])

    def box(self, lo: Sequence[float], hi: Sequence[float]):
        """Slices and broadcastable world coordinates (Z, Y, X) of the voxels in [lo, hi]; None if empty."""
        sl = []
        for ax, (a, b) in zip((self.x, self.y, self.z), zip(lo, hi)):
            i0 = int(np.searchsorted(ax, a, side="left"))
            i1 = int(np.searchsorted(ax, b, side="right"))
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
        sx, sy, sz = sl
        return (
            (sz, sy, sx),
            self.z[sz][:, None, None],
            self.y[sy][None, :, None],
            self.x[sx][None, None, :],
        )


def _superellipse(u: np.ndarray, v: np.ndarray, a: float, b: float, p: float) -> np.ndarray:
    return (np.abs(u / a) ** p + np.abs(v / b) ** p) <= 1.0


@dataclass(frozen=True)
class SpinePhantom:
    """The synthetic spine CT and its ground-truth structures.

    Attributes
    ----------
    ct : CTImage
        HU volume (int16) with deterministic DICOM UIDs.
    structures : StructureSet
        Ground truth (see :func:`make_spine_phantom`).
    level : str
        Treated level.
    lesion_center_mm : tuple of 3 floats
        Lesion sphere centre (LPS mm).
    lesion_diameter_mm : float
        Lesion sphere diameter.
    lesion_type : str
        ``"lytic"`` or ``"blastic"``.
    """

    ct: CTImage
    structures: StructureSet
    level: str
    lesion_center_mm: tuple[float, float, float]
    lesion_diameter_mm: float
    lesion_type: str
    posterior_breach: bool = False
    seed: int = 0


def make_spine_phantom(
    level: str = "L3",
    spacing_mm: float = 1.0,
    lesion_diameter_mm: float = 30.0,
    lesion_type: str = "lytic",
    lesion_center_offset_mm: Sequence[float] = (0.0, 0.0, 0.0),
    posterior_breach: bool = False,
    include_thoracic: bool = False,
    noise_hu: float = 0.0,
    seed: int = 0,
) -> SpinePhantom:
    """Build the synthetic lumbar-spine CT with a metastasis in one vertebral body.

    Parameters
    ----------
    level : str
        Treated level, ``"L1"`` ... ``"L5"`` (``"T11"``, ``"T12"`` with
        ``include_thoracic``).
    spacing_mm : float
        Isotropic voxel size, 0.3-5 mm.
    lesion_diameter_mm : float
        Diameter of the spherical lesion, at least two voxels and at most the
        body width of the level.
    lesion_type : {"lytic", "blastic"}
        Lytic (+30 HU) or blastic (+1000 HU) lesion.
    lesion_center_offset_mm : 3 floats
        Shift of the lesion centre from the body centre (LPS mm); the centre
        must stay inside the body.
    posterior_breach : bool
        Move the lesion back (if needed) so it breaks through the posterior
        wall and extends about 4 mm into the spinal canal (epidural part is
        included in ``target``).
    include_thoracic : bool
        Extend the field of view up to T11 (with short rib stubs at
        T11-T12).
    noise_hu : float
        Standard deviation of Gaussian noise added to the HU (0 = none).
    seed : int
        Seed of the noise generator (and of the DICOM UIDs).

    Returns
    -------
    SpinePhantom
        Structures: ``target`` (target), ``vertebral_body_<LEVEL>``
        (vertebral_body, includes the lesion part inside the body),
        ``pedicle_left_<LEVEL>``, ``pedicle_right_<LEVEL>`` and ``bone``
        (bone; ``bone`` is every vertebral bony region, lesion included),
        ``spinal_canal`` (avoidance; thecal sac, minus any epidural tumour),
        ``spinal_cord`` / ``cauda_equina`` (oar, whichever is in the field of
        view), ``aorta``, ``ivc``, ``kidney_left``, ``kidney_right`` (oar,
        when in the field of view) and ``body`` (body).
    """
    lv = _check_level(level, include_thoracic)
    try:
        sp = float(spacing_mm)
    except (TypeError, ValueError):
        raise InputError(f"spacing_mm must be a number, got {spacing_mm!r}") from None
    if not (0.3 <= sp <= 5.0) or not math.isfinite(sp):
        raise InputError(f"spacing_mm must be between 0.3 and 5 mm, got {spacing_mm!r}")
    if not isinstance(lesion_type, str) or lesion_type.lower() not in ("lytic", "blastic"):
        raise InputError(f"lesion_type must be 'lytic' or 'blastic', got {lesion_type!r}")
    ltype = lesion_type.lower()
    t = _TABLE[lv]
    try:
        diam = float(lesion_diameter_mm)
    except (TypeError, ValueError):
        raise InputError(f"lesion_diameter_mm must be a number, got {lesion_diameter_mm!r}") from None
    if not math.isfinite(diam) or diam <= 0:
        raise InputError(f"lesion_diameter_mm must be > 0, got {lesion_diameter_mm!r}")
    if diam < 2 * sp:
        raise InputError(
            f"lesion_diameter_mm={diam:g} is below two voxels at spacing_mm={sp:g}; use a finer spacing or a larger lesion"
        )
    if diam > t.width:
        raise InputError(
            f"lesion_diameter_mm={diam:g} is larger than the {lv} body width ({t.width:g} mm); use at most {t.width:g}"
        )
    try:
        off = np.asarray(lesion_center_offset_mm, dtype=float).reshape(3)
    except (TypeError, ValueError):
        raise InputError(f"lesion_center_offset_mm must be 3 numbers, got {lesion_center_offset_mm!r}") from None
    if not np.all(np.isfinite(off)):
        raise InputError("lesion_center_offset_mm must be finite")
    try:
        noise = float(noise_hu)
    except (TypeError, ValueError):
        raise InputError(f"noise_hu must be a number, got {noise_hu!r}") from None
    if not math.isfinite(noise) or noise < 0:
        raise InputError(f"noise_hu must be >= 0, got {noise_hu!r}")

    a, b, zc = t.width / 2, t.depth / 2, _Z[lv]
    center = np.array([0.0, BODY_Y_MM, zc]) + off
    if not (abs(off[0] / a) ** 2.5 + abs(off[1] / b) ** 2.5 <= 1 and abs(off[2]) <= t.height / 2):
        raise InputError(
            f"lesion_center_offset_mm={off.tolist()} puts the lesion centre outside the {lv} body "
            f"({t.width:g} x {t.depth:g} x {t.height:g} mm); keep |x|<{a:g}, |y|<{b:g}, |z|<{t.height / 2:g}"
        )
    if posterior_breach:
        wall = BODY_Y_MM + b
        need = wall + 4.0 - diam / 2
        if center[1] < need:
            center[1] = need
        if center[1] > wall:
            raise InputError(
                f"posterior_breach with a {diam:g} mm lesion would put its centre behind the {lv} posterior wall; "
                "use a larger lesion"
            )

    # ----------------------------------------------------------- field of view
    i = _ORDER.index(lv)
    z_below = _Z[_ORDER[i - 1]] if i > 0 else zc - (t.height + t.disc_below)
    z_above = _Z[_ORDER[i + 1]]
    z_lo = zc - 1.5 * (zc - z_below)
    z_hi = zc + 1.5 * (z_above - zc)
    if include_thoracic:
        t11 = _TABLE["T11"]
        z_hi = max(z_hi, _Z["T11"] + t11.height / 2 + _TABLE["T10"].disc_below / 2 + 2.0)
    half = np.array([TORSO_SEMI_MM[0] + 10.0, TORSO_SEMI_MM[1] + 10.0])
    nx = int(round(2 * half[0] / sp)) + 1
    ny = int(round(2 * half[1] / sp)) + 1
    nz = int(math.floor((z_hi - z_lo) / sp)) + 1
    origin = (-(nx - 1) * sp / 2, -(ny - 1) * sp / 2, z_lo)
    grid = Grid(origin, (sp, sp, sp), (nx, ny, nz))
    cv = _Canvas(grid)
    shape = grid.shape

    hu = np.full(shape, HU["air"], dtype=np.float32)
    masks: dict[str, np.ndarray] = {}

    def mask(name: str) -> np.ndarray:
        if name not in masks:
            masks[name] = np.zeros(shape, dtype=bool)
        return masks[name]

    def paint(box, region: np.ndarray, value: float, *names: str) -> None:
        sl = box[0]
        r = np.broadcast_to(region, hu[sl].shape)
        hu[sl][r] = value
        for n in names:
            mask(n)[sl] |= r

    # ------------------------------------------------------------------ torso
    A, B = TORSO_SEMI_MM
    bx = cv.box((-A, -B, -np.inf), (A, B, np.inf))
    _, Zt, Yt, Xt = bx
    outer = _superellipse(Xt, Yt, A, B, 2.2)
    skin_in = _superellipse(Xt, Yt, A - SKIN_MM, B - SKIN_MM, 2.2)
    fat_in = _superellipse(Xt, Yt, A - FAT_THICKNESS_MM, B - FAT_THICKNESS_MM, 2.2)
    paint(bx, outer, HU["skin"], "body")
    paint(bx, skin_in, HU["fat"])
    paint(bx, fat_in, HU["soft"])
    # retroperitoneal fat around the spine and great vessels
    rb = cv.box((-110, -40, -np.inf), (110, 60, np.inf))
    paint(rb, ((rb[3] / 105.0) ** 2 + ((rb[2] - 10.0) / 48.0) ** 2 <= 1), HU["retro_fat"])
    # paraspinal (erector spinae) muscles
    for sx in (-1, 1):
        pb = cv.box((sx * 30 - 24, 36, -np.inf), (sx * 30 + 24, 84, np.inf))
        if pb is not None:
            paint(pb, ((pb[3] - sx * 30) / 23.0) ** 2 + ((pb[2] - 60.0) / 22.0) ** 2 <= 1, HU["muscle"])

    # ---------------------------------------------------------- psoas muscles
    z_l1, z_l5 = _Z["L1"], _Z["L5"]
    z_psoas_top = z_l1 + _TABLE["L1"].height / 2
    for sx in (-1, 1):
        pb = cv.box((sx * 36 - 40, -20, -np.inf), (sx * 36 + 40, 40, z_psoas_top))
        if pb is None:
            continue
        sl, Zp, Yp, Xp = pb
        s = np.clip((z_l1 - Zp) / (z_l1 - z_l5), 0.0, 1.0)
        ax_, ay_ = 8.0 + 12.0 * s, 8.0 + 8.0 * s
        cx = sx * (22.0 + ax_ - 3.0)
        paint(pb, ((Xp - cx) / ax_) ** 2 + ((Yp - (BODY_Y_MM + 2.0)) / ay_) ** 2 <= 1, HU["psoas"])

    # ------------------------------------------------------------------ kidneys
    z_l1l2 = (_Z["L1"] + _Z["L2"]) / 2
    for name, sx, dz in (("kidney_left", 1, 0.0), ("kidney_right", -1, -15.0)):
        kc = np.array([sx * 78.0, 40.0, z_l1l2 + dz])
        semi = np.array([26.0, 20.0, 55.0])
        for pad, value, names in ((8.0, HU["retro_fat"], ()), (0.0, HU["kidney"], (name,))):
            s3 = semi + pad
            kb = cv.box(kc - s3, kc + s3)
            if kb is None:
                continue
            _, Zk, Yk, Xk = kb
            region = ((Xk - kc[0]) / s3[0]) ** 2 + ((Yk - kc[1]) / s3[1]) ** 2 + ((Zk - kc[2]) / s3[2]) ** 2 <= 1
            paint(kb, region, value, *names)

    # ------------------------------------------------------------ great vessels
    y_ant = BODY_Y_MM - _TABLE["L3"].depth / 2
    z_bif = _Z["L4"]
    ab = cv.box((15 - 11, y_ant - 13 - 11, z_bif), (15 + 11, y_ant - 13 + 11, np.inf))
    if ab is not None:
        paint(ab, (ab[3] - 15.0) ** 2 + (ab[2] - (y_ant - 13.0)) ** 2 <= 11.0**2, HU["vessel"], "aorta")
    for sx in (-1, 1):  # common iliac arteries below the bifurcation
        ib = cv.box((sx * 18 - 7, y_ant - 20, -np.inf), (sx * 18 + 7, y_ant - 6, z_bif))
        if ib is not None:
            paint(ib, (ib[3] - sx * 18.0) ** 2 + (ib[2] - (y_ant - 13.0)) ** 2 <= 6.0**2, HU["vessel"])
    z_conf = _Z["L5"]
    vb = cv.box((-20 - 12, y_ant - 9 - 8, z_conf), (-20 + 12, y_ant - 9 + 8, np.inf))
    if vb is not None:
        paint(vb, ((vb[3] + 20.0) / 12.0) ** 2 + ((vb[2] - (y_ant - 9.0)) / 8.0) ** 2 <= 1, HU["vessel"], "ivc")

    # ------------------------------------------------------------------- spine
    shell = max(1.0, sp)  # cortical shell ~1 mm, at least one voxel so it stays closed
    z_conus = (_Z["L1"] + _Z["L2"]) / 2
    for name in _ORDER:
        seg_lo, seg_hi = _segment(name)
        if seg_hi < z_lo - 40 or seg_lo > z_hi + 40:
            continue
        L = _TABLE[name]
        a_, b_, zc_ = L.width / 2, L.depth / 2, _Z[name]
        h2 = L.height / 2
        y0 = BODY_Y_MM
        y_can = y0 + b_ + L.canal_depth / 2
        # discs (own half-discs of this segment)
        db = cv.box((-a_, y0 - b_, max(seg_lo, -1e9)), (a_, y0 + b_, min(seg_hi, 1e9)))
        if db is not None:
            _, Zd, Yd, Xd = db
            disc = _superellipse(Xd, Yd - y0, a_, b_, 2.5) & (np.abs(Zd - zc_) > h2)
            paint(db, disc, HU["disc"])
        # body: cortex + cancellous
        bb = cv.box((-a_, y0 - b_, zc_ - h2), (a_, y0 + b_, zc_ + h2))
        if bb is not None:
            _, Zb, Yb, Xb = bb
            outer_b = _superellipse(Xb, Yb - y0, a_, b_, 2.5) & (np.abs(Zb - zc_) <= h2)
            inner_b = _superellipse(Xb, Yb - y0, a_ - shell, b_ - shell, 2.5) & (np.abs(Zb - zc_) <= h2 - shell)
            paint(bb, outer_b, HU["cortical"], "bone", *( (f"vertebral_body_{name}",) if name == lv else ()))
            paint(bb, inner_b, HU["cancellous"])
            if name == lv:
                masks["_inner_body"] = np.zeros(shape, dtype=bool)
                masks["_inner_body"][bb[0]] = np.broadcast_to(inner_b, masks["_inner_body"][bb[0]].shape)
        # pedicles (outside the body)
        zp = zc_ + 0.12 * L.height
        for side, sx in (("left", 1), ("right", -1)):
            xp = sx * (L.canal_width / 2 + L.pedicle_width / 2)
            pb = cv.box(
                (xp - L.pedicle_width / 2, y0 + 0.5 * b_, zp - L.pedicle_height / 2),
                (xp + L.pedicle_width / 2, y_can + L.canal_depth / 4, zp + L.pedicle_height / 2),
            )
            if pb is None:
                continue
            _, Zq, Yq, Xq = pb
            not_body = ~_superellipse(Xq, Yq - y0, a_, b_, 2.5)
            ped = _superellipse(Xq - xp, Zq - zp, L.pedicle_width / 2, L.pedicle_height / 2, 4.0) & not_body
            core = _superellipse(Xq - xp, Zq - zp, L.pedicle_width / 2 - shell, L.pedicle_height / 2 - shell, 4.0)
            names = ("bone", f"pedicle_{side}_{lv}") if name == lv else ("bone",)
            paint(pb, ped, HU["cortical"], *names)
            paint(pb, core & ped & (Yq > y0 + b_ + shell) & (Yq < y_can + L.canal_depth / 4 - shell), HU["pedicle_core"])
        # lamina
        lt = 6.0
        lb = cv.box(
            (-(L.canal_width / 2 + lt), y_can - 1, zc_ - 0.42 * L.height),
            (L.canal_width / 2 + lt, y_can + L.canal_depth / 2 + lt, zc_ + 0.42 * L.height),
        )
        if lb is not None:
            _, Zl, Yl, Xl = lb
            ell_o = (Xl / (L.canal_width / 2 + lt)) ** 2 + ((Yl - y_can) / (L.canal_depth / 2 + lt)) ** 2 <= 1
            ell_i = (Xl / (L.canal_width / 2)) ** 2 + ((Yl - y_can) / (L.canal_depth / 2)) ** 2 <= 1
            paint(lb, ell_o & ~ell_i & (Yl >= y_can) & (Zl >= -1e9), HU["posterior"], "bone")
        # spinous process
        y_sp0 = y_can + L.canal_depth / 2 + lt - 2
        zs, hs = zc_ - 0.1 * L.height, 0.3 * L.height
        sb = cv.box((-3.5, y_sp0, zs - hs), (3.5, y_sp0 + L.spinous_length, zs + hs))
        if sb is not None:
            paint(sb, np.ones((1, 1, 1), bool), HU["posterior"], "bone")
        # transverse processes
        ytp, ztp = y_can - 2.0, zc_ + 0.1 * L.height
        for sx in (-1, 1):
            x_in = sx * (L.canal_width / 2 + L.pedicle_width / 2)
            x_out = sx * L.tp_reach
            tb = cv.box((min(x_in, x_out), ytp - 3.5, ztp - 6), (max(x_in, x_out), ytp + 3.5, ztp + 6))
            if tb is not None:
                _, Zt2, Yt2, Xt2 = tb
                paint(tb, ((Yt2 - ytp) / 3.5) ** 2 + ((Zt2 - ztp) / 6.0) ** 2 <= 1, HU["posterior"], "bone")
        # rib stubs at T11-T12
        if include_thoracic and name in ("T11", "T12"):
            for sx in (-1, 1):
                p0 = np.array([sx * (a_ - 2.0), y0 + 0.7 * b_, zc_ + 0.2 * L.height])
                d = np.array([sx * 0.8, 0.45, -0.3])
                d /= np.linalg.norm(d)
                p1 = p0 + 60.0 * d
                r = 5.0
                rb2 = cv.box(np.minimum(p0, p1) - r, np.maximum(p0, p1) + r)
                if rb2 is None:
                    continue
                _, Zr, Yr, Xr = rb2
                tpar = np.clip((Xr - p0[0]) * d[0] + (Yr - p0[1]) * d[1] + (Zr - p0[2]) * d[2], 0.0, 60.0)
                dist2 = (Xr - p0[0] - tpar * d[0]) ** 2 + (Yr - p0[1] - tpar * d[1]) ** 2 + (Zr - p0[2] - tpar * d[2]) ** 2
                not_body = ~(_superellipse(Xr, Yr - y0, a_, b_, 2.5) & (np.abs(Zr - zc_) <= h2))
                paint(rb2, (dist2 <= r * r) & not_body, HU["posterior"], "bone")
        # canal (+ cord / cauda) in this segment
        cb = cv.box((-L.canal_width / 2, y0, max(seg_lo, -1e9)), (L.canal_width / 2, y_can + L.canal_depth / 2, min(seg_hi, 1e9)))
        if cb is not None:
            _, Zc, Yc, Xc = cb
            in_front = _superellipse(Xc, Yc - y0, a_, b_, 2.5)
            ell = (Xc / (L.canal_width / 2)) ** 2 + ((Yc - y_can) / (L.canal_depth / 2)) ** 2 <= 1
            canal = (np.abs(Xc) <= L.canal_width / 2) & ~in_front & ((Yc <= y_can) | ell) & (Zc > -1e9)
            if seg_lo > -1e9:
                canal &= Zc >= seg_lo
            if seg_hi < 1e9:
                canal &= Zc < seg_hi
            paint(cb, canal, HU["csf"], "spinal_canal")
            above = Zc >= z_conus
            taper = np.clip(0.35 + (Zc - z_conus) / 25.0, 0.35, 1.0)
            cord = above & ((Xc / (5.0 * taper)) ** 2 + ((Yc - y_can) / (4.0 * taper)) ** 2 <= 1) & canal
            cauda = ~above & (
                (Xc / (0.32 * L.canal_width)) ** 2 + ((Yc - y_can - 0.12 * L.canal_depth) / (0.28 * L.canal_depth)) ** 2 <= 1
            ) & canal
            if cord.any():
                paint(cb, cord, HU["cord"], "spinal_cord")
            if cauda.any():
                paint(cb, cauda, HU["cauda"], "cauda_equina")

    # ------------------------------------------------------------------ lesion
    r = diam / 2
    lb = cv.box(center - r, center + r)
    vb_name = f"vertebral_body_{lv}"
    if lb is None:
        raise InputError(f"the lesion at {center.tolist()} mm is outside the field of view")
    sl, Zs, Ys, Xs = lb
    sphere = (Xs - center[0]) ** 2 + (Ys - center[1]) ** 2 + (Zs - center[2]) ** 2 <= r * r
    sphere = np.broadcast_to(sphere, hu[sl].shape)
    if posterior_breach:
        allowed = masks[vb_name][sl] | masks["spinal_canal"][sl]
    else:
        allowed = masks["_inner_body"][sl]
    lesion = sphere & allowed
    if not lesion.any():
        raise InputError("the lesion does not overlap the vertebral body at this spacing; use a larger lesion")
    target = mask("target")
    target[sl] = lesion
    hu[sl][lesion] = HU["lytic" if ltype == "lytic" else "blastic"]
    masks["bone"][sl] |= lesion & masks[vb_name][sl]
    for n in ("spinal_canal", "spinal_cord", "cauda_equina"):
        if n in masks:
            masks[n][sl] &= ~lesion
    masks.pop("_inner_body", None)

    if noise > 0:
        rng = np.random.default_rng(seed)
        inside = masks["body"]
        hu[inside] += rng.normal(0.0, noise, size=int(inside.sum())).astype(np.float32)
    hu_i16 = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    key = f"seedplan-phantom/{lv}/{sp:g}/{diam:g}/{ltype}/{center.round(3).tolist()}/{posterior_breach}/{include_thoracic}/{noise:g}/{seed}"
    ct = CTImage(
        grid=grid,
        hu=hu_i16,
        series_uid=deterministic_uid(key, "series"),
        description=f"seedplan spine phantom {lv} {ltype} {diam:g} mm",
        frame_of_reference_uid=deterministic_uid(key, "for"),
        study_uid=deterministic_uid(key, "study"),
        sop_instance_uids=tuple(deterministic_uid(key, "sop", k) for k in range(grid.size[2])),
        patient_id="SEEDPLAN-PHANTOM",
        patient_position="HFP",  # prone, as for the implant: the needles enter from the back (+y)
    )
    roles = {
        "target": Role.TARGET,
        vb_name: Role.VERTEBRAL_BODY,
        f"pedicle_left_{lv}": Role.PEDICLE,
        f"pedicle_right_{lv}": Role.PEDICLE,
        "spinal_canal": Role.CANAL,
        "spinal_cord": Role.CANAL,
        "cauda_equina": Role.CANAL,
        "aorta": Role.OAR,
        "ivc": Role.OAR,
        "kidney_left": Role.OAR,
        "kidney_right": Role.OAR,
        "bone": Role.BONE,
        "body": Role.BODY,
    }
    # OARs cut to a sliver by the field-of-view edge (e.g. the conus tip) are left out
    min_voxels = {"spinal_cord": 200.0 / grid.voxel_volume_mm3, "cauda_equina": 200.0 / grid.voxel_volume_mm3}
    structs = [
        Structure(n, role, masks[n], grid)
        for n, role in roles.items()
        if n in masks and masks[n].sum() >= max(1.0, min_voxels.get(n, 1.0))
    ]
    return SpinePhantom(
        ct=ct,
        structures=StructureSet(structs),
        level=lv,
        lesion_center_mm=(float(center[0]), float(center[1]), float(center[2])),
        lesion_diameter_mm=diam,
        lesion_type=ltype,
        posterior_breach=bool(posterior_breach),
        seed=int(seed),
    )
