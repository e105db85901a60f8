"""A deterministic synthetic CT of the lumbar spine and sacrum with vertebral metastases.

The phantom is built analytically in patient LPS coordinates (x: patient
left +, y: posterior +, z: superior +) on an axis-aligned grid.  The lumbar
spine is straight (no lordosis); the centre of the L3 body is at ``(0, 5, 0)``
mm.  Below L5 the sacrum tilts and curves (see *Sacrum and pelvis*).

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
+1000.  Untreated osteoblastic metastases measure 654 +- 176 HU mean and
787 +- 194 HU maximum attenuation (Ulano A et al., "Distinguishing untreated
osteoblastic metastases from enostoses using CT attenuation measurements",
AJR 2016;207(2):362-368): the phantom's +1000 HU is a dense blastic lesion at
the upper end of that range (the study's enostoses measure 1190 +- 239 HU).

Sacrum and pelvis
-----------------
Everything below the L4/L5 segment boundary (``z < -57`` mm, the caudal end of
an L3-centred field of view) is the lumbosacral region; the phantom above it
is unchanged, so L1-L3 phantoms are identical to those built before the
sacrum existed, and L4 phantoms differ only below that boundary.

*Orientation.*  The S1 upper endplate faces anteriorly and superiorly at a
sacral slope of 40 deg to the axial plane: standing sacral slope 24-55 deg
(mean +- 2 SD, mean about 40 deg) in 709 asymptomatic adults (Mac-Thiong JM
et al., "Age- and sex-related variations in sagittal sacropelvic morphology
and balance in asymptomatic adults", Eur Spine J 2011;20 Suppl 5:572-577),
41 +- 7.2 deg supine with pelvic incidence unchanged ("Influence of posture
on relationships between pelvic parameters and lumbar lordosis: comparison of
the standing, seated, and supine positions", Orthop Traumatol Surg Res
2018;104(5):565-568).  The phantom's lumbar spine is
straight, so the whole lumbosacral angle sits in the L5-S1 disc: a 40 deg
wedge, 5 mm high posteriorly (the posterior walls of L5 and S1 are aligned)
and about 26 mm at the promontory (a real L5 is itself tilted and its disc is
a smaller wedge; L5/S1 mid-sagittal disc height 7.1-13.1 mm, Zhang F et al.,
J Orthop Surg Res 2018;13:34).  The sacrum is a circular arc of 150 mm radius
(concave anteriorly, sacral kyphosis): its axis turns from 40 deg behind the
vertical at S1 to about 13 deg at S3.  Points are placed in sacral
coordinates: ``s`` along the axis from the S1 endplate centre (mm, caudal +),
``w`` across it (mm, posterior +; the bodies' posterior wall at ``w = 16.5``),
``x`` as in LPS.

*Segments* (``s`` ranges): S1 0-28 (a residual S1-S2 disc 28-30, common in
adults), S2 30-55, S3 55-76, S4 76-93 (S4 is bone only: no outlines, no
lesion).  S1 body 28 mm high with an upper endplate 50 x 33 mm tapering to
42 x 22 mm at its lower end (male S1 anterior height 28.2 +- 2.1 mm, superior
AP diameter 31.9 +- 2.3 mm, inferior diameter 20.1 +- 3.3 mm on MRI: "Sexual
dimorphism of the sacrum in south Indian population using MRI", Int J Pharma
Bio Sci 2015, issue 4:B398-B404; medians S1 height 28.0 mm, S2 29.7 mm,
sacral width 95.3 mm, length 118.6 mm on post-mortem CT: "Atypical
morphological variations of the sacrum in the Korean population: a PMCT-based
3D reconstruction study"); S2 38 x 21 -> 31 x 16.5 mm, S3 31 x 16.5 -> 24 x 13 mm.  Sacral width
(alae) about 104 mm (dry sacra: height 106.7 +- 10.2 mm, width 103.6 +- 6.8 mm,
"Anatomical evaluation of sacrum in dry bones"; interauricular distance
108.7 +- 11.0 mm and auricular height 56.2 +- 4.6 mm in female sacra, Oman Med
J, PMC5799488); the auricular surfaces (sacroiliac joints) span
``s = 3-60`` (S1 to upper S3).

*Canal.*  Triangular sacral canal 30 x 14 mm at S1 tapering to 14 x 6 mm at
S4 (lumbosacral sagittal canal diameter, lower normal limits 14.5-10.1 mm
L1-S1: Pierro A et al., J Clin Imaging Sci 2017;7:35; the canal tapers to the
hiatus whose apex depth is 5.4 +- 1.8 mm: Nastoulis E et al., Folia Morphol
2023;82(3):603-614); epidural fat (-80 HU) around a dural sac of CSF that
ends in the upper third of S2 (Binokay F et al., "Determining the level of
the dural sac tip: magnetic resonance imaging in an adult population", Acta
Radiol 2006;47(4):397) and the sacral roots (+20 HU, ``cauda_equina``, a
bundle each side of the midline);
the dorsal roof is open below S4 (sacral hiatus).

*Foramina* (S1-S3, left and right; ``sacral_foramen_canal_S<k>_<side>``):
from the lateral recess of the canal an intraosseous tunnel runs laterally and
divides into an anterior (pelvic) foramen lateral to the body and a posterior
(dorsal) foramen leaving 28 deg from the sagittal plane; each holds its root
(ventral ramus, continued 10 mm outside the anterior foramen, and dorsal
ramus) in fat.  Posterior S1 foramen centre 24 mm from the midline, 8.5 mm
wide, 11-12 mm deep (Kim YS et al., "Measurement of S1 foramen depth for
ultrasound-guided S1 transforaminal epidural injection", Korean J Pain
2023;36(1):98-105: male S1ds 24.1 +- 2.9 mm, S1W 8.3 +- 1.6 mm, S1D 11.9 +-
1.9 mm, S1A 28.2 +- 4.8 deg); S2 7.5 mm wide,
inner edges 30 mm apart, S1-S2 foramina 14.2 mm and S2-S3 12.8 mm apart edge
to edge ("Bony landmarks in the sacral region: the posterior superior iliac
spine and the second dorsal sacral foramina", Surg Radiol Anat,
doi:10.1007/s00276-010-0735-0); anterior foramina larger and more lateral:
S1 13.0 x 12.2 mm, S2 12.9 x 13.1 mm (Saluja S et al., "Morphometric analysis
of the sacrum and its surgical implications", J Clin Diagn Res
2018;12(6):AC01-AC06), their projection extending 10 mm lateral to the
posterior foramen (Ebraheim NA et al., "Radiologic and anatomic evaluation of
the anterior sacral foramens and nerve grooves", Spine 1996;21(4):407-410).
Phantom centres from the midline, anterior / posterior: S1 27 / 24 mm,
S2 23 / 19 mm, S3 20 / 17 mm; diameters 12 / 8.5, 12 / 7.5, 9 / 6.5 mm; the
posterior openings are placed so that their centres are 22 mm (S1-S2) and
20 mm (S2-S3) apart on the convex dorsal surface (edge distances plus radii).

*Bone density* (Nakamura T et al., "Bone mineral density mapping of
iliosacral region: the use of Hounsfield units to optimize transsacral screw
trajectory", Mil Med 2020: S1 body 280 HU, S2 body 192 HU,
anterior ilium 254 HU (S1) and 230 HU (S2), the sacral ala 152 HU (S1) and
170 HU (S2) below the anterior ilium, the posterior ilium 100 HU below the
anterior): S1 body +280, S2-S4 bodies +190, ala/lateral mass +100 (S1) and
+60 (S2 and below; low alar density: Wagner D et al., J Orthop Res
2014;32:1543-1548), sacral arch and pedicles +200, ilium +200 cancellous,
cortex +900 as in the lumbar spine.  Sacroiliac joint space 2 mm (+40 HU):
2.3 +- 0.4 mm under 40 years, 1.9 +- 0.2 mm over (Faflia CP et al.,
"Variation in the appearance of the normal sacroiliac joint on pelvic CT",
Clin Radiol 1998;53(10):742-746).

*Ilium.*  Per side: an auricular block beside the sacrum (``s = 3-60``), the
posterior superior iliac spine behind it and the wing, a 6 mm plate (14 mm
near the joint) sweeping anterolaterally to the anterior superior iliac
spine, iliacus on its inner and gluteal muscles on its outer face.  The
highest point of the iliac crest is 38 mm above the centre of the sacral base
(3.8 +- 0.8 cm in 172 standing volunteers: Okamoto M et al., Eur Spine J
2020;29(3):446-454), i.e. at the upper third
of L5.

*Vessels* (unenhanced blood +40 HU).  The aortic bifurcation at L4 (as
before) gives common iliac arteries of 12 mm, 5-6 cm long, dividing in front
of the sacroiliac joints at the S1 endplate level into external (9 mm,
anterolaterally along the psoas) and internal (7.5 mm, posteriorly into the
pelvis in front of the ala) iliac arteries (male reference diameters
common 11.8, external 10.3, internal 7.5 mm upper limits: Lorbeer R et al.,
PLoS One 2018;13:e0197559; common iliac artery 13.4 +- 2.0 mm in men by
ultrasound: Paivansalo MJ et al., Atherosclerosis 2000;153(1)).  The IVC
confluence at L5 (as before) receives common iliac veins of 13 mm (12.7 +- 2.5
left, 13.1 +- 2.2 mm right: Wang K et al., J Vasc Surg Venous Lymphat Disord
2025, doi:10.1016/j.jvsv.2025.102282), the left crossing in front of L5
behind the right common iliac artery, each formed by an external (12 mm) and
an internal (10 mm) iliac vein posteromedial to the arteries.

*Rectum and sigmoid colon.*  A bowel of 30 mm outer diameter (3 mm wall,
+40 HU; contents +10 HU; gas -1000 HU in the non-dependent part, which in
the prone patient is posterior) follows the sacral concavity at the male
presacral distance 16.2 mm (S1), 14.9 mm (S2), 13.0 mm (S3) (Oto A et al.,
"Determination of the width of the presacral space on magnetic resonance
imaging", Clin Anat 2004;17(1):14-16); sigmoid above the rectosigmoid
junction at S3, coming from anterior left.

*Fields of view.*  A lumbar level shows 1.5 times the distance to the body
centres above and below (the L5 grid keeps its earlier extent, 55.5 mm below
the L5 centre); a sacral level the same with the sacral body centres, and at
least up to where the body's posterior direction (the line of a pedicle
path along the sacral slope) meets the skin of the back, and down to where a
needle rising 45 deg to the body centre enters the back (a long-axis path
from below), so that such needle paths lie in the CT.  Several levels: the
union.

*Structures* (names give their roles back through
:func:`~seedplan.imaging.structures.guess_role`, as an RTSTRUCT stores none):
``sacral_bone``, ``iliac_bone_left``/``_right`` (bone; ``bone`` holds the
vertebrae and the sacrum, not the ilia), ``sacral_foramen_canal_S<k>_<side>``
(canal), the iliac vessels, ``sigmoid_colon`` and ``rectum`` (oar), and for a
treated sacral level ``vertebral_body_S<k>`` and its "pedicles" (the bone
lateral to the canal above the level's foramen, from the body to the dorsal
surface: the transpedicular corridor of S1 screws).  Vessels and bowel are
drawn after the bones and never over them.

Study-case options
------------------
Three options of :func:`make_spine_phantom` draw what the clinical cases of a
PVP + 125I series show (``seedplan.demo.STUDY_CASES``); by default none is
used and the phantom is exactly as described above.

*Pathological fracture* (``fracture={"L5": 0.3}``, lumbar and thoracic
levels).  A wedge deformity: the superior endplate of the body is drawn lower
by ``loss x height`` at the anterior wall, falling linearly to no loss at the
posterior wall (the posterior height is kept), with its cortex at the
collapsed height; the space between the collapsed and the original endplate
is filled with disc (+80 HU), the neighbouring vertebrae stay where they are.
The height loss is the Genant semi-quantitative measure, the reduction of the
anterior against the posterior height, ``(Hp - Ha) / Hp``: grade 1 (mild)
20-25 %, grade 2 (moderate) 25-40 %, grade 3 (severe) > 40 % (Genant HK, Wu
CY, van Kuijk C, Nevitt MC, "Vertebral fracture assessment using a
semiquantitative technique", J Bone Miner Res 1993;8(9):1137-1148).  In the
spinal instability score (SINS, Fisher CG et al., Spine 2010;35:E1221) a
collapse below 50 % scores 2.

*Soft-tissue extension* (``lesion_extension={"level": "S2", "toward":
"foramen_right", ...}``).  A mass growing out of the lesion: a capsule (a
cylinder with round ends) of ``diameter_mm`` from the lesion centre towards
``toward``, its tip ``length_mm`` beyond the lesion sphere's surface.  Inside
the level's vertebral body (cortex included: the mass breaks through it) the
capsule is lesion; outside the bone it is a soft-tissue mass of +45 HU (the
40-60 HU of unenhanced soft tissue; the phantom's muscle is +55, psoas +50)
replacing fat and muscle only: it never enters the canal, a foramen, a
vessel, the bowel, a kidney or other bone, which it abuts; only the part
connected to the lesion is kept, and all of it belongs to the level's target.
``toward`` is ``"anterior"`` (prevertebral / presacral, perpendicular to the
sacral axis at a sacral level), ``"left"``, ``"right"`` (patient sides) or,
at S1-S3, ``"foramen_left"`` / ``"foramen_right"``: towards the centre of
that level's anterior (pelvic) foramen, by default up to it, so that the mass
wraps the foramen's opening and its root while the
``sacral_foramen_canal_<level>_<side>`` structure stays outside the target.

*Spread into the adjacent bone* (``lesion_spread="bone"``).  The lesion
sphere is painted into every bone it covers, not only the vertebral body's
cancellous interior: at a sacral level the ala (lateral mass) and, across the
sacroiliac joint (whose space it obliterates), the ilium; in the lumbar spine
the pedicles and posterior elements.  It keeps clear of the bones' outer
cortex, the canal and the foramina.  At a sacral level the lesion centre may
then lie in the ala.

The phantom is a geometric teaching/testing object, not an anatomical atlas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from .. import _validate as v
from ..errors import InputError
from ..geometry import Grid
from .ct import CTImage, deterministic_uid
from .structures import Role, Structure, StructureSet

__all__ = [
    "SpinePhantom",
    "PhantomLesion",
    "LesionExtension",
    "make_spine_phantom",
    "LEVELS",
    "SACRAL_LEVELS",
    "SACRAL_SLOPE_DEG",
    "vertebra_dimensions",
    "sacral_point_mm",
]


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


# Inferior -> superior.  See the module docstring for sources.  (The sacrum is not a block here: see below.)
_TABLE: dict[str, _Level] = {
    "L5": _Level(50, 34, 26, 18.0, 14.0, 25, 16, 38, 26, 10),
    "L4": _Level(48, 35, 27, 12.9, 14.8, 23.5, 16, 40, 30, 11),
    "L3": _Level(46, 35, 27, 10.3, 14.9, 23, 16, 45, 30, 11),
    "L2": _Level(44, 34, 26, 8.9, 15.0, 22, 16.5, 40, 30, 11),
    "L1": _Level(42, 33, 25, 8.7, 15.4, 21, 17, 35, 30, 10),
    "T12": _Level(40, 31, 24, 7.8, 15.9, 19, 17, 28, 30, 8),
    "T11": _Level(38, 30, 23, 7.8, 16.5, 18, 16, 30, 30, 7),
    "T10": _Level(36, 28, 22, 7.0, 16.0, 17, 16, 32, 30, 6),
}
SACRAL_LEVELS: tuple[str, ...] = ("S1", "S2", "S3")
LEVELS: tuple[str, ...] = ("T11", "T12", "L1", "L2", "L3", "L4", "L5") + SACRAL_LEVELS
_LUMBAR = ("L1", "L2", "L3", "L4", "L5")
_ORDER = tuple(_TABLE)  # inferior -> superior (lumbar and thoracic)

BODY_Y_MM = 5.0  # AP position of every lumbar vertebral-body centre
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
    # sacrum and pelvis (module docstring)
    "sacral_body_S1": 280.0,
    "sacral_body": 190.0,
    "ala_S1": 100.0,
    "ala": 60.0,
    "sacral_arch": 200.0,
    "ilium": 200.0,
    "joint": 40.0,
    "epidural_fat": -80.0,
    "bowel_wall": 40.0,
    "bowel_content": 10.0,
    "mass": 45.0,  # soft-tissue extension of a lesion (module docstring, Study-case options)
}


def _centres() -> dict[str, float]:
    """z (mm) of each lumbar/thoracic body centre; L3 at 0."""
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

#: The pelvis is drawn only below this z (the L4/L5 segment boundary = the caudal end of an L3 field of view).
Z_PELVIS_MM = _Z["L4"] - _TABLE["L4"].height / 2 - _TABLE["L4"].disc_below / 2
_Z_L5_LOW = _Z["L5"] - _TABLE["L5"].height / 2  # L5 inferior endplate

# --------------------------------------------------------------------------- sacral frame
SACRAL_SLOPE_DEG = 40.0
L5S1_POSTERIOR_DISC_MM = 5.0
SACRAL_RADIUS_MM = 150.0
_WP = 16.5  # w of the posterior wall of the sacral bodies (half the S1 endplate depth)
_TH = math.radians(SACRAL_SLOPE_DEG)
_U0 = np.array([math.cos(_TH), math.sin(_TH)])  # (y, z): along the S1 endplate, anterior -> posterior
_A0 = np.array([math.sin(_TH), -math.cos(_TH)])  # (y, z): caudal sacral axis at S1 (down and back)
# posterior-superior corner of S1 under the posterior-inferior corner of L5, 5 mm of disc between
_PS = np.array([BODY_Y_MM + _TABLE["L5"].depth / 2, _Z_L5_LOW - L5S1_POSTERIOR_DISC_MM])
_P0 = _PS - _WP * _U0  # centre of the S1 upper endplate (y, z)
_CENTRE = _P0 - SACRAL_RADIUS_MM * _U0  # centre of curvature (anterior-inferior)

#: Sacral segments as ``s`` ranges (mm along the axis); S4 is bone only.
_SEG = {"S1": (0.0, 28.0), "S2": (30.0, 55.0), "S3": (55.0, 76.0), "S4": (76.0, 93.0)}
_S_END = 93.0
_S_DISC = (28.0, 30.0)  # residual S1-S2 disc
_HIATUS_S = 82.0  # dorsal roof open below this (sacral hiatus)
#: Cranial rise of the lowest needle path the field of view of a sacral level holds (the planner's sacral tilt limit).
_SACRAL_LOW_PATH_DEG = 45.0
_DURAL_END_S = 35.0  # dural sac tip: upper third of S2

# profiles along s: body half-width a, depth d; canal width cw, depth cd; dorsal wall td; lateral half-width W
_K_BODY = (np.array([0.0, 28.0, 30.0, 55.0, 76.0, 93.0]),
           np.array([25.0, 21.0, 19.0, 15.5, 12.0, 9.0]),
           np.array([33.0, 22.0, 21.0, 16.5, 13.0, 10.0]))
_K_CANAL = (np.array([0.0, 30.0, 55.0, 76.0, 93.0]),
            np.array([30.0, 26.0, 20.0, 14.0, 10.0]),
            np.array([14.0, 11.0, 8.0, 6.0, 5.0]),
            np.array([8.0, 7.0, 6.0, 5.0, 4.0]))
_K_LAT = (np.array([0.0, 14.0, 45.0, 62.0, 76.0, 93.0]), np.array([57.0, 57.0, 54.0, 46.0, 35.0, 22.0]))
_SIJ_S = (3.0, 60.0)  # auricular surfaces (sacroiliac joints)
_DORSAL_TAN = math.tan(math.radians(28.0))  # the dorsal foramina leave 28 deg from the sagittal plane
_SIJ_GAP = 2.0
_ALA_SLOPE = 0.3  # the ala's upper surface descends laterally: s_top = 0.3 (|x| - 27)


@dataclass(frozen=True)
class _Foramen:
    s: float  # level of the tunnel (mm along the axis)
    x_ant: float  # anterior foramen centre from the midline
    x_post: float  # posterior foramen centre from the midline
    r_ant: float
    r_post: float
    r_tunnel: float
    r_root: float
    s_post: float  # level of the posterior opening (the dorsal surface is longer than the axis: w > 0)


_FORAMINA = {
    "S1": _Foramen(29.0, 27.0, 24.0, 6.0, 4.25, 3.5, 2.5, 27.0),
    "S2": _Foramen(53.0, 23.0, 19.0, 6.0, 3.75, 3.0, 2.25, 45.0),
    "S3": _Foramen(74.0, 20.0, 17.0, 4.5, 3.25, 2.5, 1.75, 62.0),
}


def _profiles(s: np.ndarray) -> dict[str, np.ndarray]:
    a = np.interp(s, _K_BODY[0], _K_BODY[1])
    d = np.interp(s, _K_BODY[0], _K_BODY[2])
    cw = np.interp(s, _K_CANAL[0], _K_CANAL[1])
    cd = np.interp(s, _K_CANAL[0], _K_CANAL[2])
    td = np.interp(s, _K_CANAL[0], _K_CANAL[3])
    lat = np.interp(s, _K_LAT[0], _K_LAT[1])
    w_dorsal = _WP + cd + td
    return {"a": a, "d": d, "cw": cw, "cd": cd, "td": td, "W": lat, "w_dorsal": w_dorsal,
            "w_lat_front": _WP - 0.7 * d, "w_lat_back": w_dorsal - 3.0}


_K_FRONT, _K_BACK, _K_JOINT = 0.35, 0.15, 0.4  # slopes of the ala front, the dorsal surface and the SI joint


def _lat_front(ax: np.ndarray, p: dict) -> np.ndarray:
    """w of the lateral mass's anterior (pelvic) surface at |x| = ax: it recedes laterally from the body."""
    return p["w_lat_front"] + _K_FRONT * np.maximum(0.0, ax - 0.7 * p["a"])


def _lat_back(ax: np.ndarray, p: dict) -> np.ndarray:
    """w of the lateral mass's dorsal surface at |x| = ax (slightly forward laterally)."""
    return p["w_lat_back"] - _K_BACK * np.maximum(0.0, ax - 20.0)


def _lat_half_width(w: np.ndarray, p: dict) -> np.ndarray:
    """|x| of the auricular (sacroiliac) surface at ``w``: the sacrum is wider in front (a keystone)."""
    return p["W"] - _K_JOINT * np.maximum(0.0, w - p["w_lat_front"])


def _sac_sw(y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sacral coordinates ``(s, w)`` (mm) of LPS ``y, z``."""
    dy, dz = y - _CENTRE[0], z - _CENTRE[1]
    r = np.hypot(dy, dz)
    s = SACRAL_RADIUS_MM * np.arctan2(dy * _A0[0] + dz * _A0[1], dy * _U0[0] + dz * _U0[1])
    return s, r - SACRAL_RADIUS_MM


def sacral_point_mm(x: float, s: float, w: float) -> np.ndarray:
    """The LPS point (mm) at sacral coordinates ``(x, s, w)``.

    ``s`` runs along the sacral axis from the centre of the S1 upper endplate
    (mm, caudal positive, measured on the axis), ``w`` across it (mm, posterior
    positive; the bodies' posterior wall is at ``w = 16.5``), ``x`` is LPS x.
    """
    ang = float(s) / SACRAL_RADIUS_MM
    u = math.cos(ang) * _U0 + math.sin(ang) * _A0
    yz = _CENTRE + (SACRAL_RADIUS_MM + float(w)) * u
    return np.array([float(x), yz[0], yz[1]])


def _sacral_centre(level: str) -> np.ndarray:
    """Centre (LPS mm) of a sacral body: mid-segment, mid-depth."""
    s0, s1 = _SEG[level]
    sm = 0.5 * (s0 + s1)
    d = float(np.interp(sm, _K_BODY[0], _K_BODY[2]))
    return sacral_point_mm(0.0, sm, _WP - d / 2)


def _sacral_skin_z(level: str) -> float:
    """z (mm) where the line from a sacral body centre along the local posterior direction meets the back's skin."""
    s0, s1 = _SEG[level]
    sm = 0.5 * (s0 + s1)
    c = _sacral_centre(level)
    ang = sm / SACRAL_RADIUS_MM
    u = math.cos(ang) * _U0 + math.sin(ang) * _A0  # (y, z), posterior and cranial
    return float(c[2] + (TORSO_SEMI_MM[1] - c[1]) * u[1] / u[0])


def _level_z(level: str) -> float:
    return float(_sacral_centre(level)[2]) if level in _SEG else _Z[level]


#: All levels the phantom draws, inferior -> superior (FOV neighbours).
_ALL_ORDER = ("S4", "S3", "S2", "S1") + _ORDER


def vertebra_dimensions(level: str) -> dict[str, float]:
    """The phantom's dimensions (mm) for ``level`` and its body-centre position.

    Lumbar/thoracic levels: the table of the module docstring.  Sacral levels
    (``S1``-``S3``): ``width``/``depth`` of the body at its upper end,
    ``height`` along the sacral axis, ``canal_width``/``canal_depth`` at its
    upper end, the pedicle region's ``pedicle_width``/``pedicle_height``,
    ``s_top_mm``/``s_bottom_mm`` (sacral axis coordinates), the sacral slope
    and the foramen centres' distances from the midline.
    """
    lv = _parse_levels(level, include_thoracic=True)
    if len(lv) != 1:
        raise InputError(f"vertebra_dimensions takes one level, got {level!r}")
    lv = lv[0]
    if lv in _SEG:
        s0, s1 = _SEG[lv]
        p = _profiles(np.array(s0))
        c = _sacral_centre(lv)
        f = _FORAMINA[lv]
        ped_w, ped_h = _pedicle_box(lv)[1:]
        return dict(width=2 * float(p["a"]), depth=float(p["d"]), height=s1 - s0, canal_width=float(p["cw"]),
                    canal_depth=float(p["cd"]), pedicle_width=ped_w, pedicle_height=ped_h, s_top_mm=s0,
                    s_bottom_mm=s1, sacral_slope_deg=SACRAL_SLOPE_DEG, foramen_anterior_x_mm=f.x_ant,
                    foramen_posterior_x_mm=f.x_post, center_x_mm=float(c[0]), center_y_mm=float(c[1]),
                    center_z_mm=float(c[2]))
    d = dict(_TABLE[lv].__dict__)
    d.update(center_x_mm=0.0, center_y_mm=BODY_Y_MM, center_z_mm=_Z[lv])
    return d


def _pedicle_box(level: str) -> tuple[tuple[float, float], float, float]:
    """Sacral "pedicle" of ``level``: s range above its foramen, width lateral to the canal, height."""
    s0, _ = _SEG[level]
    f = _FORAMINA[level]
    width = {"S1": 14.0, "S2": 10.0, "S3": 8.0}[level]
    lo, hi = s0 + 2.0, f.s - f.r_tunnel - 2.0
    return (lo, hi), width, hi - lo


def _segment(level: str) -> tuple[float, float]:
    """z range owned by ``level``: mid-disc below to mid-disc above.

    Open at the top of the table; L5 ends at its inferior endplate (the L5-S1
    disc and the canal below it are drawn with the sacrum).
    """
    i = _ORDER.index(level)
    t = _TABLE[level]
    lo = _Z[level] - t.height / 2 - t.disc_below / 2 if i > 0 else _Z[level] - t.height / 2
    if i + 1 < len(_ORDER):
        up = _TABLE[_ORDER[i + 1]]
        hi = _Z[level] + t.height / 2 + up.disc_below / 2
    else:
        hi = math.inf
    return lo, hi


_KNOWN = re.compile(r"^(C[1-7]|T(?:[1-9]|1[0-2])|L[1-5]|S[1-5]|CO(?:CCYX)?)$")


def _parse_levels(level: Any, include_thoracic: bool) -> tuple[str, ...]:
    """``"L3"``, ``"L5,S1"``, ``("L5", "S1")`` -> validated level names (order kept)."""
    valid = "valid levels are L1-L5 and S1-S3 (T11, T12 with include_thoracic=True)"
    if isinstance(level, str):
        parts = [p for p in re.split(r"[,\s;+]+", level.strip()) if p]
    elif isinstance(level, (list, tuple)) and all(isinstance(p, str) for p in level):
        parts = [p.strip() for p in level]
    else:
        raise InputError(f"level must be a string such as 'L3' or 'L5,S1' (or a list of them), got {level!r}")
    if not parts:
        raise InputError(f"level is empty; {valid}")
    out: list[str] = []
    for p in parts:
        lv = p.upper()
        if lv in ("T11", "T12") and not include_thoracic:
            raise InputError(f"level {p!r} needs include_thoracic=True (the phantom's treated levels are L1-L5, S1-S3)")
        if lv not in LEVELS:
            if _KNOWN.match(lv):
                raise InputError(f"level {p!r} is outside the phantom, which draws T11-S4 and treats L1-L5 and S1-S3 "
                                 "(T11, T12 with include_thoracic=True)")
            raise InputError(f"unknown level {p!r}; {valid}")
        if lv in out:
            raise InputError(f"level {p!r} is given twice in {level!r}; give each level once")
        out.append(lv)
    if len(out) > 1:  # several levels are one implant: adjacent vertebrae
        pos = sorted(LEVELS.index(lv) for lv in out)
        if pos != list(range(pos[0], pos[0] + len(pos))):
            raise InputError(f"levels {', '.join(out)} are not adjacent; several levels are planned as one implant of "
                             "adjacent vertebrae (e.g. 'L5,S1' or 'L4,L5,S1'): plan separate levels separately")
    return tuple(out)


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


def _capsule(cv: _Canvas, a: np.ndarray, b: np.ndarray, r0: float, r1: float | None = None):
    """Box and mask of a (tapered) capsule from ``a`` (radius ``r0``) to ``b`` (radius ``r1``); None if empty.

    Returns ``(box, inside, t, nearest_y, dist)``: ``t`` in [0, 1] along the axis, the y of the nearest axis
    point and the distance (mm) to the axis.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    r1 = r0 if r1 is None else r1
    rm = max(r0, r1)
    box = cv.box(np.minimum(a, b) - rm, np.maximum(a, b) + rm)
    if box is None:
        return None
    _, Z, Y, X = box
    d = b - a
    t = np.clip(((X - a[0]) * d[0] + (Y - a[1]) * d[1] + (Z - a[2]) * d[2]) / float(d @ d), 0.0, 1.0)
    dist2 = (X - a[0] - t * d[0]) ** 2 + (Y - a[1] - t * d[1]) ** 2 + (Z - a[2] - t * d[2]) ** 2
    r = r0 + (r1 - r0) * t
    return box, dist2 <= r * r, t, a[1] + t * d[1], np.sqrt(dist2)


@dataclass(frozen=True)
class PhantomLesion:
    """One planted lesion: its level, target structure name, centre (LPS mm), diameter and type.

    ``spread`` is ``"body"`` (confined to the vertebral body) or ``"bone"`` (painted into the adjacent bone).
    """

    level: str
    target: str
    center_mm: tuple[float, float, float]
    diameter_mm: float
    lesion_type: str
    spread: str = "body"


@dataclass(frozen=True)
class LesionExtension:
    """A lesion's soft-tissue extension as drawn (see the module docstring, *Study-case options*).

    Attributes
    ----------
    level : str
        The lesion's level.
    toward : str
        ``"anterior"``, ``"left"``, ``"right"``, ``"foramen_left"`` or ``"foramen_right"``.
    length_mm : float
        How far the tip reaches beyond the lesion sphere's surface.
    diameter_mm : float
        Diameter of the capsule.
    tip_mm : tuple of 3 floats
        The capsule's outermost point (LPS mm).
    mass_cm3 : float
        Volume of the soft-tissue part (outside the bone) added to the target.
    """

    level: str
    toward: str
    length_mm: float
    diameter_mm: float
    tip_mm: tuple[float, float, float]
    mass_cm3: float


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
        Treated level (several: joined by commas, e.g. ``"L5,S1"``).
    lesion_center_mm : tuple of 3 floats
        Lesion sphere centre (LPS mm) of the first level.
    lesion_diameter_mm : float
        Lesion sphere diameter of the first level.
    lesion_type : str
        ``"lytic"`` or ``"blastic"`` (first level).
    lesions : tuple of PhantomLesion
        Every planted lesion, in the order of the levels.
    fracture : tuple of (level, height loss)
        The wedge fractures drawn (``fracture`` of :func:`make_spine_phantom`).
    extensions : tuple of LesionExtension
        The soft-tissue extensions drawn.
    """

    ct: CTImage
    structures: StructureSet
    level: str
    lesion_center_mm: tuple[float, float, float]
    lesion_diameter_mm: float
    lesion_type: str
    posterior_breach: bool = False
    seed: int = 0
    lesions: tuple[PhantomLesion, ...] = ()
    fracture: tuple[tuple[str, float], ...] = ()
    extensions: tuple[LesionExtension, ...] = ()

    @property
    def levels(self) -> tuple[str, ...]:
        """The treated levels."""
        return tuple(les.level for les in self.lesions) or (self.level,)


def _per_level(value: Any, n: int, name: str) -> list[Any]:
    """A scalar for every level, or one value per level."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            got = f"{len(value)} value{'' if len(value) == 1 else 's'}"
            raise InputError(f"{name} has {got} for {n} levels; give one value or one per level")
        return list(value)
    return [value] * n


def make_spine_phantom(
    level: str | Sequence[str] = "L3",
    spacing_mm: float = 1.0,
    lesion_diameter_mm: float | Sequence[float] = 30.0,
    lesion_type: str | Sequence[str] = "lytic",
    lesion_center_offset_mm: Sequence[float] = (0.0, 0.0, 0.0),
    posterior_breach: bool = False,
    include_thoracic: bool = False,
    noise_hu: float = 0.0,
    seed: int = 0,
    lesion_extension: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    fracture: Mapping[str, float] | None = None,
    lesion_spread: str | Sequence[str] = "body",
) -> SpinePhantom:
    """Build the synthetic lumbosacral CT with a metastasis in one or several vertebral bodies.

    Parameters
    ----------
    level : str or sequence of str
        Treated level(s): ``"L1"`` ... ``"L5"``, ``"S1"``, ``"S2"``, ``"S3"``
        (``"T11"``, ``"T12"`` with ``include_thoracic``); several as
        ``"L5,S1"`` or ``("L5", "S1")``, one lesion in each.
    spacing_mm : float
        Isotropic voxel size, 0.3-5 mm.
    lesion_diameter_mm : float or sequence
        Diameter of the spherical lesion (one per level, or one for all), at
        least two voxels and at most the body width of its level.
    lesion_type : {"lytic", "blastic"} or sequence
        Lytic (+30 HU) or blastic (+1000 HU) lesion (one per level, or one for all).
    lesion_center_offset_mm : 3 floats, or one row of 3 per level
        Shift of the lesion centre from the body centre (LPS mm); the centre
        must stay inside the body.
    posterior_breach : bool
        Move the lesion back (if needed) so it breaks through the posterior
        wall and extends about 4 mm into the spinal canal (epidural part is
        included in the target).  At a sacral level "back" is the sacral
        posterior direction (perpendicular to the sacral axis).
    include_thoracic : bool
        Extend the field of view up to T11 (with short rib stubs at
        T11-T12).
    noise_hu : float
        Standard deviation of Gaussian noise added to the HU (0 = none).
    seed : int
        Seed of the noise generator (and of the DICOM UIDs).
    lesion_extension : mapping or sequence of mappings, optional
        Soft-tissue extension(s) of a lesion (module docstring, *Study-case
        options*): ``{"level": "S2", "toward": "foramen_right", "length_mm":
        12, "diameter_mm": 14}``.  ``level``: one of the treated levels
        (optional with one level); ``toward``: ``"anterior"``, ``"left"``,
        ``"right"``, or at S1-S3 ``"foramen_left"``/``"foramen_right"``;
        ``length_mm`` (0-80): the tip's distance beyond the lesion sphere
        (optional towards a foramen: up to the foramen's centre);
        ``diameter_mm``: the capsule's diameter, two voxels to the lesion
        diameter (default half the lesion diameter).
    fracture : mapping, optional
        ``{level: anterior height loss}``, e.g. ``{"L5": 0.3}``: a wedge
        fracture of a lumbar (or thoracic) body in the field of view, the
        loss a fraction in [0, 1) of the body height (Genant grades: 0.20-0.25
        mild, 0.25-0.40 moderate, > 0.40 severe).
    lesion_spread : {"body", "bone"} or sequence
        ``"body"`` (default): the lesion stays in the vertebral body's
        cancellous bone; ``"bone"``: it is painted into the adjacent bone
        too (sacral ala and, across the sacroiliac joint, the ilium; lumbar
        pedicles), and at a sacral level its centre may lie in the ala.  One
        value, or one per level.

    Returns
    -------
    SpinePhantom
        Structures: ``target`` (target; with several levels ``target_<LEVEL>``
        each), ``vertebral_body_<LEVEL>`` (vertebral_body, includes the lesion
        part inside the body), ``pedicle_left_<LEVEL>``,
        ``pedicle_right_<LEVEL>`` (pedicle; at a sacral level the bone
        between the canal and the ala above the level's foramen, from the
        body to the dorsal surface), ``bone`` (bone; every vertebral bony
        region including the sacrum, lesion included), ``spinal_canal``
        (canal; thecal sac and sacral canal, minus any epidural tumour),
        ``spinal_cord`` / ``cauda_equina`` (canal; whichever is in the field of
        view; the cauda continues as the sacral roots), ``aorta``, ``ivc``,
        ``kidney_left``, ``kidney_right`` (oar) and ``body`` (body).  Where
        the field of view reaches below L4 (levels L4 and lower) also, when
        present: ``sacral_foramen_canal_S<k>_<side>`` (canal: the S1-S3
        foramen tunnels from the canal to the anterior and posterior
        foramina, with their roots; no needle or seed enters them),
        ``common_iliac_artery_<side>``, ``external_iliac_artery_<side>``,
        ``internal_iliac_artery_<side>`` and the same ``..._vein_<side>``,
        ``sigmoid_colon``, ``rectum`` (oar), ``sacral_bone``,
        ``iliac_bone_left``, ``iliac_bone_right`` (bone).  A soft-tissue
        extension is part of its level's target.  Left is patient
        left (+x).  Every name gives its role back through
        :func:`~seedplan.imaging.structures.guess_role`, so a structure set
        written as RTSTRUCT (which stores no roles) reads back with the same
        roles.

    Raises
    ------
    InputError
        An unknown level or one outside the phantom, a lesion larger than its
        body or centred outside it, and other invalid arguments (one line
        naming the argument and what is valid).
    """
    levels = _parse_levels(level, include_thoracic)
    n = len(levels)
    sp = v.number(spacing_mm, "spacing_mm", lo=0.3, hi=5.0)
    types = []
    for t_ in _per_level(lesion_type, n, "lesion_type"):
        if not isinstance(t_, str) or t_.lower() not in ("lytic", "blastic"):
            raise InputError(f"lesion_type must be 'lytic' or 'blastic', got {t_!r}")
        types.append(t_.lower())
    diams = [v.number(d_, "lesion_diameter_mm", lo=0.0, lo_open=True)
             for d_ in _per_level(lesion_diameter_mm, n, "lesion_diameter_mm")]
    offs = v.points(lesion_center_offset_mm, "lesion_center_offset_mm")
    if offs.shape[0] not in (1, n):
        raise InputError(f"lesion_center_offset_mm has {offs.shape[0]} row{'' if offs.shape[0] == 1 else 's'} "
                         f"for {n} levels; "
                         "give one row or one per level")
    offs = np.repeat(offs, n, axis=0) if offs.shape[0] == 1 else offs
    noise = v.number(noise_hu, "noise_hu", lo=0.0)
    breach = bool(posterior_breach)
    spreads = []
    for s_ in _per_level(lesion_spread, n, "lesion_spread"):
        if not isinstance(s_, str) or s_.lower() not in ("body", "bone"):
            raise InputError(f"lesion_spread must be 'body' or 'bone', got {s_!r}")
        spreads.append(s_.lower())
    fractures = _parse_fracture(fracture, include_thoracic)
    extensions = _parse_extensions(lesion_extension, levels, diams, sp)

    # ------------------------------------------------------------- lesion centres
    centers: list[np.ndarray] = []
    for lv, diam, off, spread in zip(levels, diams, offs, spreads):
        if diam < 2 * sp:
            raise InputError(
                f"lesion_diameter_mm={diam:g} is below two voxels at spacing_mm={sp:g}; use a finer spacing or a larger lesion"
            )
        width = _TABLE[lv].width if lv in _TABLE else 2 * float(np.interp(_SEG[lv][0], _K_BODY[0], _K_BODY[1]))
        if diam > width:
            raise InputError(
                f"lesion_diameter_mm={diam:g} is larger than the {lv} body width ({width:g} mm); use at most {width:g}"
            )
        center = (_sacral_lesion_centre(lv, diam, off, breach, spread == "bone") if lv in _SEG
                  else _lumbar_lesion_centre(lv, diam, off, breach))
        if lv in fractures and center[2] > _wedge_top_z(lv, fractures[lv], center[1]):
            raise InputError(f"lesion_center_offset_mm={off.tolist()} puts the {lv} lesion centre above the collapsed "
                             f"endplate of the fracture ({fractures[lv]:g} height loss); lower its z offset")
        centers.append(center)

    # ----------------------------------------------------------- field of view
    z_lo, z_hi = math.inf, -math.inf
    for lv in levels:
        i = _ALL_ORDER.index(lv)
        zc = _level_z(lv)
        below = _level_z(_ALL_ORDER[i - 1])
        if lv == "L5":  # as before the sacrum existed: a 28 mm S1 block below a 10 mm disc (same L5 grids)
            below = zc - _TABLE["L5"].height / 2 - _TABLE["L5"].disc_below - 14.0
        z_lo = min(z_lo, zc - 1.5 * (zc - below))
        z_hi = max(z_hi, zc + 1.5 * (_level_z(_ALL_ORDER[i + 1]) - zc))
        if lv in _SEG:  # up to where the body's posterior direction (a pedicle path) meets the skin at the back
            z_hi = max(z_hi, _sacral_skin_z(lv) + 5.0)
            # and down to where a needle rising at _SACRAL_LOW_PATH_DEG to the body centre enters the back
            c = _sacral_centre(lv)
            z_lo = min(z_lo, float(c[2]) - (TORSO_SEMI_MM[1] - float(c[1])) * math.tan(math.radians(_SACRAL_LOW_PATH_DEG)))
    if include_thoracic:
        t11 = _TABLE["T11"]
        z_hi = max(z_hi, _Z["T11"] + t11.height / 2 + _TABLE["T10"].disc_below / 2 + 2.0)
    for lv in fractures:
        if not z_lo <= _Z[lv] <= z_hi:
            raise InputError(f"fracture: {lv} is outside the field of view of level {','.join(levels)}; a fracture is "
                             "drawn only at a vertebra the CT shows")
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
        for nm in names:
            mask(nm)[sl] |= r

    _paint_soft_tissue(cv, paint)
    pelvis = z_lo < Z_PELVIS_MM
    if pelvis:
        wings = [_ilium_wing(cv, 1.0), _ilium_wing(cv, -1.0)]
        _paint_pelvic_soft_tissue(cv, paint, wings)
    shell = max(1.0, sp)  # cortical shell ~1 mm, at least one voxel so it stays closed
    _paint_lumbar_spine(cv, paint, masks, shape, levels, include_thoracic, shell, z_lo, z_hi, fractures)
    if pelvis:
        _paint_pelvic_bone(cv, paint, mask, masks, levels, shell, wings)
        _paint_pelvic_organs(cv, paint, hu)

    # ------------------------------------------------------------------ lesions
    lesions: list[PhantomLesion] = []
    drawn_ext: list[LesionExtension] = []
    taken = np.zeros(shape, dtype=bool)
    for lv, diam, ltype, center, spread in zip(levels, diams, types, centers, spreads):
        r = diam / 2
        lb = cv.box(center - r, center + r)
        vb_name = f"vertebral_body_{lv}"
        if lb is None:
            raise InputError(f"the lesion at {center.round(1).tolist()} mm is outside the field of view")
        sl, Zs, Ys, Xs = lb
        sphere = (Xs - center[0]) ** 2 + (Ys - center[1]) ** 2 + (Zs - center[2]) ** 2 <= r * r
        sphere = np.broadcast_to(sphere, hu[sl].shape)
        if spread == "bone":
            allowed = masks[f"_inner_{lv}"][sl] | _bone_interior(cv, masks, center, r, shell)
            if breach:
                allowed = allowed | masks[vb_name][sl] | masks["spinal_canal"][sl]
        elif breach:
            allowed = masks[vb_name][sl] | masks["spinal_canal"][sl]
        else:
            allowed = masks[f"_inner_{lv}"][sl]
        lesion = sphere & allowed & ~taken[sl]
        if not lesion.any():
            raise InputError(f"the {lv} lesion does not overlap the vertebral body at this spacing; "
                             "use a larger lesion")
        tname = "target" if n == 1 else f"target_{lv}"
        mask(tname)[sl] |= lesion
        taken[sl] |= lesion
        hu[sl][lesion] = HU["lytic" if ltype == "lytic" else "blastic"]
        masks["bone"][sl] |= lesion & masks[vb_name][sl]
        for nm in ("spinal_canal", "spinal_cord", "cauda_equina"):
            if nm in masks:
                masks[nm][sl] &= ~lesion
        lesions.append(PhantomLesion(lv, tname, tuple(float(c) for c in center), diam, ltype, spread))
        for ext in extensions:
            if ext["level"] == lv:
                drawn_ext.append(_paint_extension(cv, hu, masks, taken, ext, lv, tname, center, r,
                                                  HU["lytic" if ltype == "lytic" else "blastic"]))
    for nm in [k for k in masks if k.startswith("_")]:
        masks.pop(nm)

    if noise > 0:
        rng = np.random.default_rng(seed)
        inside = masks["body"]
        hu[inside] += rng.normal(0.0, noise, size=int(inside.sum())).astype(np.float32)
    hu_i16 = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    first = lesions[0]
    if n == 1:
        key = (f"seedplan-phantom/{first.level}/{sp:g}/{first.diameter_mm:g}/{first.lesion_type}/"
               f"{centers[0].round(3).tolist()}/{breach}/{include_thoracic}/{noise:g}/{seed}")
        desc = f"seedplan spine phantom {first.level} {first.lesion_type} {first.diameter_mm:g} mm"
    else:
        key = (f"seedplan-phantom/{'+'.join(levels)}/{sp:g}/{[f'{d:g}' for d in diams]}/{types}/"
               f"{[c.round(3).tolist() for c in centers]}/{breach}/{include_thoracic}/{noise:g}/{seed}")
        desc = "seedplan spine phantom " + ", ".join(f"{le.level} {le.lesion_type} {le.diameter_mm:g} mm"
                                                     for le in lesions)
    # the study-case options (only when used, so that every other phantom keeps its UIDs and description)
    if any(s_ == "bone" for s_ in spreads):
        key += f"/spread={spreads}"
        desc += ", spread into the adjacent bone"
    if fractures:
        key += f"/fracture={sorted(fractures.items())}"
        desc += ", " + ", ".join(f"{lv} fracture {100 * f:.0f} %" for lv, f in fractures.items())
    if drawn_ext:
        key += "/extension=" + repr([(e.level, e.toward, round(e.length_mm, 3), e.diameter_mm) for e in drawn_ext])
        desc += ", " + ", ".join(f"{e.level} soft-tissue extension toward {e.toward}" for e in drawn_ext)
    ct = CTImage(
        grid=grid,
        hu=hu_i16,
        series_uid=deterministic_uid(key, "series"),
        description=desc,
        frame_of_reference_uid=deterministic_uid(key, "for"),
        study_uid=deterministic_uid(key, "study"),
        sop_instance_uids=tuple(deterministic_uid(key, "sop", k) for k in range(grid.size[2])),
        patient_id="SEEDPLAN-PHANTOM",
        patient_position="HFP",  # prone, as for the implant: the needles enter from the back (+y)
    )
    roles: dict[str, Role] = {le.target: Role.TARGET for le in lesions}
    for lv in levels:
        roles[f"vertebral_body_{lv}"] = Role.VERTEBRAL_BODY
        roles[f"pedicle_left_{lv}"] = Role.PEDICLE
        roles[f"pedicle_right_{lv}"] = Role.PEDICLE
    roles.update({"spinal_canal": Role.CANAL, "spinal_cord": Role.CANAL, "cauda_equina": Role.CANAL})
    roles.update({f"sacral_foramen_canal_{k}_{side}": Role.CANAL for k in _FORAMINA for side in ("left", "right")})
    roles.update({"aorta": Role.OAR, "ivc": Role.OAR})
    roles.update({f"{kind}_iliac_{vessel}_{side}": Role.OAR for vessel in ("artery", "vein")
                  for side in ("left", "right") for kind in ("common", "external", "internal")})
    roles.update({"sigmoid_colon": Role.OAR, "rectum": Role.OAR, "kidney_left": Role.OAR, "kidney_right": Role.OAR,
                  "bone": Role.BONE, "sacral_bone": Role.BONE, "iliac_bone_left": Role.BONE,
                  "iliac_bone_right": Role.BONE,
                  "body": Role.BODY})
    # OARs cut to a sliver by the field-of-view edge (e.g. the conus tip) are left out
    vox = grid.voxel_volume_mm3
    min_voxels = {"spinal_cord": 200.0 / vox, "cauda_equina": 200.0 / vox}
    for nm in roles:
        if nm.startswith(("sacral_foramen", "common_iliac", "external_iliac", "internal_iliac", "sigmoid", "rectum",
                          "sacral_bone", "iliac_bone")):
            min_voxels[nm] = 50.0 / vox
    structs = [
        Structure(nm, role, masks[nm], grid)
        for nm, role in roles.items()
        if nm in masks and np.count_nonzero(masks[nm]) >= max(1.0, min_voxels.get(nm, 1.0))
    ]
    return SpinePhantom(
        ct=ct,
        structures=StructureSet(structs),
        level=",".join(levels),
        lesion_center_mm=first.center_mm,
        lesion_diameter_mm=first.diameter_mm,
        lesion_type=first.lesion_type,
        posterior_breach=breach,
        seed=int(seed),
        lesions=tuple(lesions),
        fracture=tuple(fractures.items()),
        extensions=tuple(drawn_ext),
    )


def _lumbar_lesion_centre(lv: str, diam: float, off: np.ndarray, breach: bool) -> np.ndarray:
    t = _TABLE[lv]
    a, b, zc = t.width / 2, t.depth / 2, _Z[lv]
    center = np.array([0.0, BODY_Y_MM, zc]) + off
    if not (abs(off[0] / a) ** 2.5 + abs(off[1] / b) ** 2.5 <= 1 and abs(off[2]) <= t.height / 2):
        raise InputError(
            f"lesion_center_offset_mm={off.tolist()} puts the lesion centre outside the {lv} body "
            f"({t.width:g} x {t.depth:g} x {t.height:g} mm); keep |x|<{a:g}, |y|<{b:g}, |z|<{t.height / 2:g}"
        )
    if breach:
        wall = BODY_Y_MM + b
        need = wall + 4.0 - diam / 2
        if center[1] < need:
            center[1] = need
        if center[1] > wall:
            raise InputError(
                f"posterior_breach with a {diam:g} mm lesion would put its centre behind the {lv} posterior wall; "
                "use a larger lesion"
            )
    return center


def _in_lateral_mass(x: float, s: float, w: float) -> bool:
    """Whether the sacral point ``(x, s, w)`` lies in the lateral mass (ala) as :func:`_paint_pelvic_bone` draws it."""
    p = _profiles(np.array(s))
    ax, wa = np.array(abs(x)), np.array(w)
    return bool(s >= max(0.0, _ALA_SLOPE * (abs(x) - 27.0)) and s <= _S_END
                and _lat_front(ax, p) <= w <= _lat_back(ax, p) and abs(x) <= _lat_half_width(wa, p)
                and (abs(x) >= float(p["cw"]) / 2 + 2.0 or w < _WP))


def _sacral_lesion_centre(lv: str, diam: float, off: np.ndarray, breach: bool, spread: bool = False) -> np.ndarray:
    center = _sacral_centre(lv) + off
    s0, s1 = _SEG[lv]
    s, w = (float(q) for q in _sac_sw(np.array(center[1]), np.array(center[2])))
    p = _profiles(np.array(s))
    inside = s0 <= s <= s1 and bool(_superellipse(np.array(center[0]), np.array(w - (_WP - p["d"] / 2)),
                                                  float(p["a"]), float(p["d"]) / 2, 2.5))
    if spread and not inside:  # a lesion spreading into the bone may be centred in the level's ala
        inside = s0 <= s <= s1 and _in_lateral_mass(float(center[0]), s, w)
    if not inside:
        where = f"the {lv} body or its ala" if spread else f"the {lv} body"
        raise InputError(
            f"lesion_center_offset_mm={off.tolist()} puts the lesion centre outside {where} "
            f"({2 * float(p['a']):.0f} x {float(p['d']):.0f} x {s1 - s0:g} mm along the tilted sacral axis); "
            "keep the centre inside the " + ("bone" if spread else "body")
        )
    if breach:
        need = _WP + 4.0 - diam / 2
        if w < need:
            center = sacral_point_mm(center[0], s, need)
            w = need
        if w > _WP:
            raise InputError(
                f"posterior_breach with a {diam:g} mm lesion would put its centre behind the {lv} posterior wall; "
                "use a larger lesion"
            )
    return np.asarray(center, float)


# ============================================================================ study-case options
_TOWARD = ("anterior", "left", "right", "foramen_left", "foramen_right")
_EXT_KEYS = ("level", "toward", "length_mm", "diameter_mm")
#: What a soft-tissue extension may replace: fat and muscle (never bone, canal, foramina, vessels, bowel, kidneys).
_MASS_REPLACES = ("fat", "retro_fat", "soft", "muscle", "psoas")
_MASS_AVOIDS = ("spinal_canal", "spinal_cord", "cauda_equina", "aorta", "ivc", "kidney_", "sacral_foramen_canal_",
                "_iliac_", "sigmoid_colon", "rectum", "bone", "sacral_bone", "iliac_bone_")


def _parse_fracture(fracture: Any, include_thoracic: bool) -> dict[str, float]:
    """``{"L5": 0.3}`` -> validated ``{level: anterior height loss}`` (lumbar/thoracic levels only)."""
    if fracture is None:
        return {}
    if not isinstance(fracture, Mapping):
        raise InputError(f"fracture must be a mapping of level to anterior height loss in [0, 1), e.g. "
                         f"{{'L5': 0.3}}, got {fracture!r}")
    out: dict[str, float] = {}
    for key, loss in fracture.items():
        lv = _parse_levels(key, include_thoracic=True)
        if len(lv) != 1:
            raise InputError(f"fracture: give one level per key, got {key!r}")
        lv = lv[0]
        if lv in _SEG:
            raise InputError(f"fracture: {lv} is sacral; a wedge fracture is drawn at lumbar levels (L1-L5, and T11, "
                             "T12 with include_thoracic=True)")
        if lv in ("T11", "T12") and not include_thoracic:
            raise InputError(f"fracture: {lv} needs include_thoracic=True")
        if lv in out:
            raise InputError(f"fracture: {lv} is given twice")
        out[lv] = v.number(loss, f"fracture[{lv!r}] (anterior height loss, a fraction)", lo=0.0, hi=1.0,
                           hi_open=True)
    return out


def _wedge_top_z(level: str, loss: float, y: Any) -> Any:
    """z (mm) of the collapsed superior endplate of a wedge-fractured body at LPS ``y``.

    The anterior wall (``y = BODY_Y_MM - depth/2``) loses ``loss x height``, the posterior wall nothing,
    linearly in between (Genant's anterior-vs-posterior height reduction, module docstring).
    """
    L = _TABLE[level]
    b = L.depth / 2
    toward_front = np.clip((BODY_Y_MM + b - np.asarray(y, float)) / (2 * b), 0.0, 1.0)
    return _Z[level] + L.height / 2 - loss * L.height * toward_front


def _parse_extensions(value: Any, levels: Sequence[str], diams: Sequence[float], sp: float) -> list[dict[str, Any]]:
    """Validate ``lesion_extension`` (one mapping or a sequence of them) into a list of complete mappings."""
    if value is None:
        return []
    items = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(e, Mapping) for e in items):
        raise InputError("lesion_extension must be a mapping such as {'level': 'S2', 'toward': 'foramen_right', "
                         f"'length_mm': 12, 'diameter_mm': 14}} (or a list of them), got {value!r}")
    out = []
    for e in items:
        unknown = sorted(set(e) - set(_EXT_KEYS))
        if unknown:
            raise InputError(f"lesion_extension: unknown key(s) {unknown}; valid keys: {list(_EXT_KEYS)}")
        if "level" in e:
            lv = str(e["level"]).strip().upper()
            if lv not in levels:
                raise InputError(f"lesion_extension level {e['level']!r} is not a treated level; the lesions are at "
                                 f"{', '.join(levels)}")
        elif len(levels) == 1:
            lv = levels[0]
        else:
            raise InputError(f"lesion_extension needs 'level' with several levels ({', '.join(levels)})")
        toward = e.get("toward")
        if not isinstance(toward, str) or toward.lower() not in _TOWARD:
            raise InputError(f"lesion_extension toward must be one of {', '.join(_TOWARD)}, got {toward!r}")
        toward = toward.lower()
        if toward.startswith("foramen") and lv not in _SEG:
            raise InputError(f"lesion_extension toward {toward!r} needs a sacral level (S1-S3), got {lv}")
        diam = diams[levels.index(lv)]
        d_ext = v.number(e.get("diameter_mm", diam / 2), "lesion_extension diameter_mm", lo=2 * sp, hi=diam)
        if "length_mm" in e:
            length = v.number(e["length_mm"], "lesion_extension length_mm", lo=0.0, hi=80.0, lo_open=True)
        elif toward.startswith("foramen"):
            length = None  # up to the foramen
        else:
            raise InputError(f"lesion_extension toward {toward!r} needs length_mm (the tip's distance beyond the "
                             "lesion, mm)")
        out.append({"level": lv, "toward": toward, "length_mm": length, "diameter_mm": d_ext})
    return out


def _anterior_foramen_mm(level: str, sgn: float) -> np.ndarray:
    """Centre (LPS mm) of ``level``'s anterior (pelvic) foramen; ``sgn`` +1 left, -1 right."""
    f = _FORAMINA[level]
    p_f = _profiles(np.array(f.s))
    w_front = float(_lat_front(np.array(f.x_ant), p_f))
    return sacral_point_mm(sgn * f.x_ant, f.s + 1.0, w_front - 1.5)


def _bone_interior(cv: _Canvas, masks: dict, center: np.ndarray, r: float, shell: float) -> np.ndarray:
    """Inside the sphere's box: the bone (vertebrae, sacrum, ilia, the sacroiliac joint spaces between them) less
    its outer cortex (``shell`` thick), the canal and the foramina."""
    from scipy import ndimage

    k = max(1, int(round(shell / cv.grid.spacing[0])))
    pad = (k + 1) * cv.grid.spacing[0]
    inner = cv.box(center - r, center + r)
    outer = cv.box(center - r - pad, center + r + pad)
    osl = outer[0]
    solid = masks["bone"][osl].copy()
    for nm in ("sacral_bone", "iliac_bone_left", "iliac_bone_right", "_joint"):
        if nm in masks:
            solid |= masks[nm][osl]
    core = ndimage.binary_erosion(solid, iterations=k)
    crop = tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner[0], osl))
    core = core[crop]
    for nm, m in masks.items():
        if nm in ("spinal_canal", "spinal_cord", "cauda_equina") or nm.startswith("sacral_foramen_canal_"):
            core &= ~m[inner[0]]
    return core


def _paint_extension(cv: _Canvas, hu: np.ndarray, masks: dict, taken: np.ndarray, ext: Mapping[str, Any], lv: str,
                     tname: str, center: np.ndarray, r: float, lesion_hu: float) -> LesionExtension:
    """Paint one soft-tissue extension of the ``lv`` lesion into ``hu`` and its target (module docstring)."""
    from scipy import ndimage

    toward = ext["toward"]
    if toward.startswith("foramen"):
        goal = _anterior_foramen_mm(lv, 1.0 if toward.endswith("left") else -1.0)
        u = goal - center
        dist = float(np.linalg.norm(u))
        u = u / dist
        length = dist - r if ext["length_mm"] is None else ext["length_mm"]
        if length <= 0:
            raise InputError(f"lesion_extension: the {lv} lesion already reaches the {toward.replace('_', ' ')}; "
                             "use a smaller lesion or another direction")
    elif toward == "anterior":
        if lv in _SEG:  # perpendicular to the sacral axis at the lesion
            s, _ = _sac_sw(np.array(center[1]), np.array(center[2]))
            ang = float(s) / SACRAL_RADIUS_MM
            uyz = math.cos(ang) * _U0 + math.sin(ang) * _A0
            u = np.array([0.0, -uyz[0], -uyz[1]])
        else:
            u = np.array([0.0, -1.0, 0.0])
        length = ext["length_mm"]
    else:
        u = np.array([1.0 if toward == "left" else -1.0, 0.0, 0.0])
        length = ext["length_mm"]
    rad = ext["diameter_mm"] / 2
    tip = center + (r + length) * u
    cap = _capsule(cv, center, tip - rad * u, rad)
    if cap is None:
        raise InputError(f"lesion_extension of {lv} toward {toward} lies outside the field of view")
    box, inside = cap[0], cap[1]
    sl = box[0]
    soft = np.isin(hu[sl], [HU[k] for k in _MASS_REPLACES])
    for nm, m in masks.items():
        if any(key in nm for key in _MASS_AVOIDS) and not nm.startswith("_"):
            soft &= ~m[sl]
    vb = masks[f"vertebral_body_{lv}"][sl]
    cand = np.broadcast_to(inside, soft.shape) & (soft | vb) & ~taken[sl]
    own = masks[tname][sl]
    lab, _ = ndimage.label(cand | own, structure=np.ones((3, 3, 3), bool))
    keep = np.isin(lab, np.unique(lab[own & (lab > 0)]))
    new = cand & keep & ~own
    hu[sl][new & vb] = lesion_hu
    hu[sl][new & ~vb] = HU["mass"]
    masks[tname][sl] |= new
    taken[sl] |= new
    return LesionExtension(lv, toward, float(length), float(ext["diameter_mm"]), tuple(float(c) for c in tip),
                           float(np.count_nonzero(new & ~vb)) * cv.grid.voxel_volume_mm3 / 1000.0)


# ============================================================================ painters
def _paint_soft_tissue(cv: _Canvas, paint) -> None:
    """Torso, fat, muscles, kidneys and the great vessels down to the L4/L5 boundary (unchanged lumbar phantom)."""
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

    # ---------------------------------------------------------- psoas muscles (pelvic part: _paint_pelvic_soft_tissue)
    z_l1, z_l5 = _Z["L1"], _Z["L5"]
    z_psoas_top = z_l1 + _TABLE["L1"].height / 2
    for sx in (-1, 1):
        pb = cv.box((sx * 36 - 40, -20, z_l5), (sx * 36 + 40, 40, z_psoas_top))
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
    for sx in (-1, 1):  # common iliac arteries below the bifurcation (pelvic course: _PELVIC_VESSELS)
        ib = cv.box((sx * 18 - 7, y_ant - 20, Z_PELVIS_MM), (sx * 18 + 7, y_ant - 6, z_bif))
        if ib is not None:
            paint(ib, (ib[3] - sx * 18.0) ** 2 + (ib[2] - (y_ant - 13.0)) ** 2 <= 6.0**2, HU["vessel"])
    z_conf = _Z["L5"]
    vb = cv.box((-20 - 12, y_ant - 9 - 8, z_conf), (-20 + 12, y_ant - 9 + 8, np.inf))
    if vb is not None:
        paint(vb, ((vb[3] + 20.0) / 12.0) ** 2 + ((vb[2] - (y_ant - 9.0)) / 8.0) ** 2 <= 1, HU["vessel"], "ivc")


def _paint_lumbar_spine(cv: _Canvas, paint, masks: dict, shape, levels: Sequence[str], include_thoracic: bool,
                        shell: float, z_lo: float, z_hi: float, fractures: Mapping[str, float] | None = None) -> None:
    """Vertebrae T10-L5 with canal, cord/cauda; the treated ones outlined (body, pedicles) with their inner body.

    ``fractures``: ``{level: anterior height loss}``, wedge fractures (:func:`_wedge_top_z`).
    """
    fractures = fractures or {}
    z_conus = (_Z["L1"] + _Z["L2"]) / 2
    for name in _ORDER:
        seg_lo, seg_hi = _segment(name)
        if seg_hi < z_lo - 40 or seg_lo > z_hi + 40:
            continue
        treated = name in levels
        L = _TABLE[name]
        a_, b_, zc_ = L.width / 2, L.depth / 2, _Z[name]
        h2 = L.height / 2
        y0 = BODY_Y_MM
        y_can = y0 + b_ + L.canal_depth / 2
        # discs (own half-discs of this segment)
        loss = fractures.get(name, 0.0)
        db = cv.box((-a_, y0 - b_, max(seg_lo, -1e9)), (a_, y0 + b_, min(seg_hi, 1e9)))
        if db is not None:
            _, Zd, Yd, Xd = db
            if loss:  # wedge fracture: the space above the collapsed endplate is disc
                level_ok = (Zd < zc_ - h2) | (Zd > _wedge_top_z(name, loss, Yd))
            else:
                level_ok = np.abs(Zd - zc_) > h2
            disc = _superellipse(Xd, Yd - y0, a_, b_, 2.5) & level_ok
            paint(db, disc, HU["disc"])
        # body: cortex + cancellous
        bb = cv.box((-a_, y0 - b_, zc_ - h2), (a_, y0 + b_, zc_ + h2))
        if bb is not None:
            _, Zb, Yb, Xb = bb
            if loss:  # the superior endplate and its cortex drawn at the collapsed height
                top = _wedge_top_z(name, loss, Yb)
                outer_b = _superellipse(Xb, Yb - y0, a_, b_, 2.5) & (Zb >= zc_ - h2) & (Zb <= top)
                inner_b = (_superellipse(Xb, Yb - y0, a_ - shell, b_ - shell, 2.5) & (Zb >= zc_ - h2 + shell)
                           & (Zb <= top - shell))
            else:
                outer_b = _superellipse(Xb, Yb - y0, a_, b_, 2.5) & (np.abs(Zb - zc_) <= h2)
                inner_b = _superellipse(Xb, Yb - y0, a_ - shell, b_ - shell, 2.5) & (np.abs(Zb - zc_) <= h2 - shell)
            paint(bb, outer_b, HU["cortical"], "bone", *((f"vertebral_body_{name}",) if treated else ()))
            paint(bb, inner_b, HU["cancellous"])
            if treated:
                masks[f"_inner_{name}"] = np.zeros(shape, dtype=bool)
                masks[f"_inner_{name}"][bb[0]] = np.broadcast_to(inner_b, masks[f"_inner_{name}"][bb[0]].shape)
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
            names = ("bone", f"pedicle_{side}_{name}") if treated else ("bone",)
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
            canal = _lumbar_canal(L, Xc, Yc) & (Zc > -1e9)
            if seg_lo > -1e9:
                canal &= Zc >= seg_lo
            if seg_hi < 1e9:
                canal &= Zc < seg_hi
            _paint_canal_contents(cb, canal, L, Xc, Yc, Zc, paint, z_conus)


def _lumbar_canal(L: _Level, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Cross-section of a lumbar canal (behind the body, the posterior half elliptical)."""
    y0 = BODY_Y_MM
    a_, b_ = L.width / 2, L.depth / 2
    y_can = y0 + b_ + L.canal_depth / 2
    in_front = _superellipse(X, Y - y0, a_, b_, 2.5)
    ell = (X / (L.canal_width / 2)) ** 2 + ((Y - y_can) / (L.canal_depth / 2)) ** 2 <= 1
    return (np.abs(X) <= L.canal_width / 2) & ~in_front & ((Y <= y_can) | ell)


def _paint_canal_contents(box, canal, L: _Level, X, Y, Z, paint, z_conus: float) -> None:
    y_can = BODY_Y_MM + L.depth / 2 + L.canal_depth / 2
    paint(box, canal, HU["csf"], "spinal_canal")
    above = Z >= z_conus
    taper = np.clip(0.35 + (Z - z_conus) / 25.0, 0.35, 1.0)
    cord = above & ((X / (5.0 * taper)) ** 2 + ((Y - y_can) / (4.0 * taper)) ** 2 <= 1) & canal
    cauda = ~above & (
        (X / (0.32 * L.canal_width)) ** 2 + ((Y - y_can - 0.12 * L.canal_depth) / (0.28 * L.canal_depth)) ** 2 <= 1
    ) & canal
    if cord.any():
        paint(box, cord, HU["cord"], "spinal_cord")
    if cauda.any():
        paint(box, cauda, HU["cauda"], "cauda_equina")


# ============================================================================ pelvis
def _vessel_table() -> dict[str, tuple[float, list[tuple[float, float, float]]]]:
    """Pelvic vessels: name -> (radius mm, LPS polyline), left side; the right mirrors x (module docstring)."""
    cia_top = (18.0, BODY_Y_MM - _TABLE["L3"].depth / 2 - 13.0, Z_PELVIS_MM)  # the lumbar tube's lower end
    left = {
        "common_iliac_artery": (6.0, [cia_top, (30.0, -31.0, -80.0), (36.0, -30.0, -102.0)]),
        "external_iliac_artery": (4.5, [(36.0, -30.0, -102.0), (46.0, -44.0, -130.0), (54.0, -56.0, -160.0),
                                        (60.0, -64.0, -195.0)]),
        "internal_iliac_artery": (3.75, [(36.0, -30.0, -102.0), (36.0, -14.0, -122.0), (34.0, 2.0, -145.0),
                                         (32.0, 14.0, -170.0)]),
        "common_iliac_vein": (6.5, [(-14.0, -20.0, _Z["L5"]), (0.0, -20.0, -83.0), (20.0, -17.0, -92.0),
                                    (34.0, -14.0, -108.0)]),
        "external_iliac_vein": (6.0, [(34.0, -14.0, -108.0), (42.0, -34.0, -135.0), (46.0, -42.0, -160.0),
                                      (50.0, -50.0, -195.0)]),
        "internal_iliac_vein": (5.0, [(34.0, -14.0, -108.0), (36.0, -2.0, -125.0), (33.0, 14.0, -148.0),
                                      (31.0, 24.0, -172.0)]),
    }
    out: dict[str, tuple[float, list[tuple[float, float, float]]]] = {}
    for name, (r, pts) in left.items():
        out[f"{name}_left"] = (r, pts)
        right = [(-x, y, z) for x, y, z in pts]
        if name == "common_iliac_artery":  # crosses in front of the confluence, then right
            right = [(-cia_top[0], cia_top[1], cia_top[2]), (-28.0, -36.0, -78.0), (-36.0, -32.0, -102.0)]
        elif name in ("external_iliac_artery", "internal_iliac_artery"):
            right[0] = (-36.0, -32.0, -102.0)
        elif name == "common_iliac_vein":  # the right vein: from the IVC straight down and out
            right = [(-20.0, BODY_Y_MM - _TABLE["L3"].depth / 2 - 9.0, _Z["L5"]), (-28.0, -19.0, -90.0),
                     (-34.0, -14.0, -108.0)]
        out[f"{name}_right"] = (r, right)
    return out


_PELVIC_VESSELS = _vessel_table()

# iliac wing: per-z circular arc through a posterior (A), lateral (B) and anterior (C) point, left side (x, y)
_Z_CREST = float(_P0[1]) + 38.0  # highest point of the iliac crest: 38 mm above the sacral base centre
# rows: z; the posterior end A follows the anterolateral corner of the ilium's auricular part (s = 3-60), the
# anterior end C recedes from the anterior superior iliac spine (S1) towards the acetabular roof
_ILIUM_Z = np.array([_Z_CREST + 2.0, -84.0, -97.0, -109.0, -122.0, -137.0, -154.0, -175.0, -205.0])
_ILIUM_A = np.array([[52.0, 46.0], [54.0, 44.0], [62.0, 24.0], [69.0, 9.0], [69.0, 24.0], [67.0, 36.0],
                     [62.0, 45.0], [64.0, 30.0], [62.0, 12.0]])
_ILIUM_B = np.array([[126.0, 8.0], [124.0, 4.0], [121.0, 0.0], [118.0, -4.0], [114.0, -4.0], [108.0, -2.0],
                     [102.0, 0.0], [96.0, -4.0], [88.0, -8.0]])
_ILIUM_C = np.array([[112.0, -50.0], [110.0, -56.0], [108.0, -60.0], [106.0, -60.0], [104.0, -52.0],
                     [100.0, -40.0], [94.0, -32.0], [88.0, -25.0], [80.0, -15.0]])
_ILIUM_BOTTOM = -205.0


def _ilium_arc(z: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centre (x, y), radius, start and end angle of the left wing's arc at each z (1-D arrays)."""
    zs = _ILIUM_Z[::-1]

    def at(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.interp(z, zs, p[::-1, 0]), np.interp(z, zs, p[::-1, 1])

    (x1, y1), (x2, y2), (x3, y3) = at(_ILIUM_A), at(_ILIUM_B), at(_ILIUM_C)
    d = 2.0 * (x1 * (y2 - y3) + x2 * (y3 - y1) + x3 * (y1 - y2))
    q1, q2, q3 = x1**2 + y1**2, x2**2 + y2**2, x3**2 + y3**2
    ux = (q1 * (y2 - y3) + q2 * (y3 - y1) + q3 * (y1 - y2)) / d
    uy = (q1 * (x3 - x2) + q2 * (x1 - x3) + q3 * (x2 - x1)) / d
    return ux, uy, np.hypot(x1 - ux, y1 - uy), np.arctan2(y1 - uy, x1 - ux), np.arctan2(y3 - uy, x3 - ux)


def _ilium_wing(cv: _Canvas, side: float) -> list[tuple]:
    """Per axial slice, in a box around the arc: the wing's radial offset, arc parameter, thickness, crest z.

    Returns a list of ``(box, dr, tau, thick, z_crest, arc_len)`` with 2-D fields broadcast to the box.
    """
    z_top = min(Z_PELVIS_MM - 1e-6, _Z_CREST + 4.0)
    ks = np.nonzero((cv.z >= _ILIUM_BOTTOM) & (cv.z <= z_top))[0]
    if ks.size == 0:
        return []
    ux, uy, R, pa, pc = _ilium_arc(cv.z[ks])
    out = []
    margin = 14.0 / 2 + 4.0 + 28.0
    for j, k in enumerate(ks):
        ang = np.linspace(pa[j], pc[j], 17)
        px, py = ux[j] + R[j] * np.cos(ang), uy[j] + R[j] * np.sin(ang)
        xlo, xhi = side * (px.min() - margin), side * (px.max() + margin)
        box = cv.box((min(xlo, xhi), py.min() - margin, cv.z[k]), (max(xlo, xhi), py.max() + margin, cv.z[k]))
        if box is None:
            continue
        _, Z, Y, X = box
        xs, yy = (side * X).astype(np.float32), Y.astype(np.float32)
        r = np.hypot(xs - ux[j], yy - uy[j])
        tau = (pa[j] - np.arctan2(yy - uy[j], xs - ux[j])) / (pa[j] - pc[j])
        thick = 14.0 - 8.0 * np.clip((tau - 0.1) / 0.2, 0.0, 1.0)
        z_crest = _Z_CREST - 110.0 * (tau - 0.4) ** 2
        thick = thick + 4.0 * (cv.z[k] > z_crest - 8.0)
        out.append((box, r - R[j], tau, thick, z_crest, R[j] * abs(pa[j] - pc[j])))
    return out


def _pbox(cv: _Canvas, lo: Sequence[float], hi: Sequence[float]):
    """A canvas box clipped to the pelvis (below Z_PELVIS_MM)."""
    return cv.box(lo, (hi[0], hi[1], min(hi[2], Z_PELVIS_MM - 1e-6)))


def _paint_pelvic_soft_tissue(cv: _Canvas, paint, wings: list) -> None:
    """Psoas, iliacus and gluteal muscles (below the L4/L5 boundary)."""
    A, B = TORSO_SEMI_MM
    z5 = _Z["L5"]
    # psoas below L5: moves anterolaterally to the pelvic brim (iliopsoas)
    zk = np.array([-200.0, -150.0, -110.0, z5])
    for sx in (-1, 1):
        pb = _pbox(cv, (sx * 62 - 34, -60, -np.inf), (sx * 62 + 34, 30, z5))
        if pb is None:
            continue
        _, Zp, Yp, Xp = pb
        zz = Zp[:, 0, 0]
        cx = sx * np.interp(zz, zk, [68.0, 66.0, 56.0, 39.0])[:, None, None]
        cy = np.interp(zz, zk, [-32.0, -20.0, -4.0, BODY_Y_MM + 2.0])[:, None, None]
        ax_ = np.interp(zz, zk, [13.0, 14.0, 15.0, 20.0])[:, None, None]
        ay_ = np.interp(zz, zk, [12.0, 12.5, 13.0, 16.0])[:, None, None]
        paint(pb, ((Xp - cx) / ax_) ** 2 + ((Yp - cy) / ay_) ** 2 <= 1, HU["psoas"])
    # iliacus (inner face of the wing) and gluteal muscles (outer face)
    for wing in wings:
        for box, dr, tau, thick, z_crest, _ in wing:
            Z, Y, X = box[1], box[2], box[3]
            fat_in = _superellipse(X, Y, A - FAT_THICKNESS_MM, B - FAT_THICKNESS_MM, 2.2)
            iliacus = ((dr < -thick / 2) & (dr >= -thick / 2 - 18.0) & (tau >= 0.15) & (tau <= 0.97)
                       & (Z <= z_crest - 3.0))
            glut = (dr > thick / 2) & (dr <= thick / 2 + 26.0) & (tau >= -0.05) & (tau <= 0.8) & (Z <= z_crest + 3.0)
            paint(box, iliacus | (glut & fat_in), HU["muscle"])


def _paint_pelvic_organs(cv: _Canvas, paint, hu: np.ndarray) -> None:
    """Iliac vessels, sigmoid colon and rectum, drawn after the bones and never over bone."""

    def soft(box) -> np.ndarray:
        return (box[1] < Z_PELVIS_MM) & (hu[box[0]] < 150.0)

    # iliac arteries and veins
    for name, (r, pts) in _PELVIC_VESSELS.items():
        for a, b in pairwise(pts):
            c = _capsule(cv, np.array(a), np.array(b), r)
            if c is None:
                continue
            box, inside, *_ = c
            paint(box, inside & soft(box), HU["vessel"], name)
    # sigmoid colon and rectum: a 30 mm bowel along the sacral concavity; gas floats posteriorly (prone)
    path = _bowel_path()
    z_rs = float(sacral_point_mm(0.0, _SEG["S3"][0], 0.0)[2])  # rectosigmoid junction at S3
    r_out, wall = 15.0, 3.0
    pieces = [c for a, b in pairwise(path) if (c := _capsule(cv, a, b, r_out)) is not None]
    for box, inside, _, _, _ in pieces:  # walls first, so no segment's wall covers its neighbour's lumen
        inside = inside & soft(box)
        for nm, part in (("sigmoid_colon", box[1] >= z_rs), ("rectum", box[1] < z_rs)):
            paint(box, inside & part, HU["bowel_wall"], nm)
    for box, inside, _, y_axis, dist in pieces:
        lumen = inside & (dist <= r_out - wall) & soft(box)
        paint(box, lumen, HU["bowel_content"])
        paint(box, lumen & (box[2] > y_axis + 0.45 * (r_out - wall)), HU["air"])


def _bowel_path() -> list[np.ndarray]:
    """Centre line of the sigmoid colon and rectum (LPS mm): from anterior left onto the sacral concavity."""
    def pres(s: float) -> float:  # presacral space, men (Oto 2004)
        return float(np.interp(s, [14.0, 42.5, 65.5], [16.2, 14.9, 13.0]))

    pts = [np.array([18.0, -64.0, -92.0]), np.array([10.0, -52.0, -112.0])]
    for x, s in ((6.0, 36.0), (2.0, 52.0), (0.0, 66.0), (0.0, 84.0), (0.0, 104.0)):
        d = float(np.interp(min(s, _S_END), _K_BODY[0], _K_BODY[2]))
        pts.append(sacral_point_mm(x, s, _WP - d - pres(s) - 15.0))
    return pts


def _paint_pelvic_bone(cv: _Canvas, paint, mask, masks: dict, levels: Sequence[str], shell: float,
                       wings: list) -> None:
    """L5-S1 disc and the canal below L5, the sacrum with canal, roots and foramina, sacroiliac joints, ilia."""
    sh = shell
    # ------------------------------------------------------------------ L5-S1 disc and junction canal
    L5 = _TABLE["L5"]
    prom = sacral_point_mm(0.0, 0.0, _WP - float(_K_BODY[2][0]))  # promontory (anterior-superior S1 corner)
    y_ai = BODY_Y_MM - L5.depth / 2
    jb = _pbox(cv, (-L5.width / 2, y_ai, prom[2]), (L5.width / 2, BODY_Y_MM + L5.depth / 2 + L5.canal_depth + 2,
                                                   _Z_L5_LOW))
    if jb is not None:
        _, Zj, Yj, Xj = jb
        s, _w = _sac_sw(Yj, Zj)
        above = (Zj < _Z_L5_LOW) & (s < 0)
        y_front = y_ai + (prom[1] - y_ai) * (_Z_L5_LOW - Zj) / (_Z_L5_LOW - prom[2])
        disc = above & _superellipse(Xj, Yj - BODY_Y_MM, L5.width / 2, L5.depth / 2, 2.5) & (Yj >= y_front)
        paint(jb, disc, HU["disc"])
        canal = above & (Yj >= BODY_Y_MM) & _lumbar_canal(L5, Xj, Yj)
        _paint_canal_contents(jb, canal, L5, Xj, Yj, Zj, paint, (_Z["L1"] + _Z["L2"]) / 2)

    # ------------------------------------------------------------------ sacrum (symmetric: x >= 0, mirrored)
    corners = [sacral_point_mm(0.0, s, w) for s in (0.0, 30.0, 60.0, _S_END) for w in (-25.0, 62.0)]
    lo = np.min(corners, axis=0) - 3.0
    hi = np.max(corners, axis=0) + 3.0
    xm = float(_K_LAT[1].max()) + _SIJ_GAP + 20.0
    sb = _pbox(cv, (-xm, lo[1], lo[2]), (xm, hi[1], hi[2]))
    if sb is None:
        return
    sl, Z, Y, Xf = sb
    xf = Xf[0, 0, :]
    xh = xf[xf >= -1e-9]
    mirror = np.abs(np.abs(xf)[:, None] - xh[None, :]).argmin(axis=1)
    shape = (Z.shape[0], Y.shape[1], xh.size)

    def full(a: np.ndarray) -> np.ndarray:
        return np.broadcast_to(a, shape)[..., mirror]

    X = AX = xh[None, None, :]
    S, Wd = _sac_sw(Y, Z)
    p = _profiles(S)
    a, d, cw, cd, w_dor = p["a"], p["d"], p["cw"], p["cd"], p["w_dorsal"]
    in_s = (S >= 0) & (S <= _S_END)
    band = (S > _S_DISC[0]) & (S < _S_DISC[1])
    wc = _WP - d / 2
    body_shape = _superellipse(X, Wd - wc, a, d / 2, 2.5)
    body = in_s & ~band & body_shape
    body_in = ((S >= sh) & (S <= _S_END - sh) & ~((S > _S_DISC[0] - sh) & (S < _S_DISC[1] + sh))
               & _superellipse(X, Wd - wc, a - sh, d / 2 - sh, 2.5))
    frac = (Wd - _WP) / cd
    canal_w = cw / 2 * (1 - 0.45 * frac)
    canal = in_s & (Wd >= _WP) & (Wd <= _WP + cd) & (AX <= canal_w)
    canal_d = (S >= -sh) & (Wd >= _WP - sh) & (Wd <= _WP + cd + sh) & (AX <= canal_w + sh)
    arch_x = AX <= cw / 2 + 11.0
    arch = (in_s & (Wd >= _WP - 1.0) & (Wd <= w_dor) & arch_x
            & np.where(Wd > _WP + cd, (S >= 7.0) & (S <= _HIATUS_S), True))
    arch_in = ((S >= sh) & (S <= _S_END - sh) & (Wd >= _WP - 1.0) & (Wd <= w_dor - sh) & (AX <= cw / 2 + 11.0 - sh)
               & np.where(Wd > _WP + cd - sh, (S >= 7.0 + sh) & (S <= _HIATUS_S - sh), True))
    s_top = np.maximum(0.0, _ALA_SLOPE * (AX - 27.0))
    side_ok = (AX >= cw / 2 + 2.0) | (Wd < _WP)
    front, back, wj = _lat_front(AX, p), _lat_back(AX, p), _lat_half_width(Wd, p)
    latm = (S >= s_top) & (S <= _S_END) & (Wd >= front) & (Wd <= back) & (AX <= wj) & side_ok
    lat_in = ((S >= s_top + sh) & (S <= _S_END - sh) & (Wd >= front + sh) & (Wd <= back - sh) & (AX <= wj - sh)
              & side_ok)
    tub = np.zeros_like(S, dtype=bool)
    tub_in = np.zeros_like(S, dtype=bool)
    for s0, s1 in ((10.0, 24.0), (36.0, 50.0), (60.0, 72.0)):  # median sacral crest: S1-S3 spinous tubercles
        tub = tub | ((S >= s0) & (S <= s1))
        tub_in = tub_in | ((S >= s0 + sh) & (S <= s1 - sh))
    crest = tub & (AX <= 4.0) & (Wd >= w_dor - 1.0) & (Wd <= w_dor + 9.0)
    crest_in = tub_in & (AX <= 4.0 - sh) & (Wd >= w_dor - 1.0) & (Wd <= w_dor + 9.0 - sh)
    disc_rem = band & body_shape & (S >= 0)
    bone = (body | arch | latm | crest) & ~canal & ~disc_rem
    inner = (body_in | arch_in | lat_in | crest_in) & ~canal_d & ~disc_rem & bone
    in_sij = (S >= _SIJ_S[0]) & (S <= _SIJ_S[1])
    wlf, wlb = p["w_lat_front"], p["w_lat_back"]
    joint = in_sij & (AX > wj) & (AX <= wj + _SIJ_GAP) & (Wd >= wlf + 2.0) & (Wd <= back)
    body_hu = np.where(S < 29.0, HU["sacral_body_S1"], HU["sacral_body"])
    ala_hu = np.where(S < 29.0, HU["ala_S1"], HU["ala"])
    inner_hu = np.where(body_shape, body_hu, np.where(arch_x & (Wd >= _WP - 1.0), HU["sacral_arch"], ala_hu))
    wmid = _WP + 0.45 * cd
    taper = np.clip((_DURAL_END_S - S) / 8.0, 0.35, 1.0)
    sac = canal & (S < _DURAL_END_S) & ((X / (0.38 * cw * taper)) ** 2 + ((Wd - wmid) / (0.36 * cd * taper)) ** 2 <= 1)
    # the sacral roots: a bundle each side of the midline, in the sac's CSF and then in the epidural fat
    roots = canal & (S <= _FORAMINA["S3"].s + 6.0) & (((X - 0.2 * cw) / (0.1 * cw)) ** 2
                                                        + ((Wd - wmid) / (0.22 * cd)) ** 2 <= 1)
    # ilium: auricular part 16 mm lateral to the joint; posterior ilium (tuberosity, posterior superior iliac
    # spine) behind the joint, overhanging the dorsum
    x_in = wj + _SIJ_GAP
    block = in_sij & (AX > x_in) & (AX <= x_in + 16.0) & (Wd >= wlf + 2.0) & (Wd <= wlb + 4.0)
    block_in = ((S >= _SIJ_S[0] + sh) & (S <= _SIJ_S[1] - sh) & (AX > x_in + sh) & (AX <= x_in + 16.0 - sh)
                & (Wd >= wlf + 2.0 + sh) & (Wd <= wlb + 4.0 - sh))
    xj_back = _lat_half_width(wlb, p) + _SIJ_GAP
    psis_u, psis_v = AX - (xj_back + 8.0), Wd - (wlb + 9.0)
    psis = ((S >= 4.0) & (S <= 42.0) & _superellipse(psis_u, psis_v, 15.0, 11.0, 2.2)
            & ~((AX <= x_in) & (Wd < back + 3.0)))
    psis_in = (S >= 4.0 + sh) & (S <= 42.0 - sh) & _superellipse(psis_u, psis_v, 15.0 - sh, 11.0 - sh, 2.2)
    il = (block | psis) & ~bone & ~joint
    il_in = (block_in | psis_in) & il

    # paint: joint space, sacral bone (cortex, then cancellous by region), residual disc, canal contents
    paint(sb, full(joint), HU["joint"], "_joint")
    bone_f = full(bone)
    if "spinal_canal" in masks:  # the L5 canal above the sacrum stays open
        bone_f &= ~masks["spinal_canal"][sl]
    paint(sb, bone_f, HU["cortical"], "bone", "sacral_bone")
    _paint_values(paint, sb, full(inner) & bone_f, full(inner_hu))
    paint(sb, full(disc_rem), HU["disc"])
    canal_f = full(canal)
    paint(sb, canal_f, HU["epidural_fat"], "spinal_canal")
    paint(sb, full(sac), HU["csf"])
    paint(sb, full(roots), HU["cauda"], "cauda_equina")
    il_f, il_in_f = full(il), full(il_in)
    for side, here in (("left", Xf > 0), ("right", Xf < 0)):
        paint(sb, il_f & here, HU["cortical"], f"iliac_bone_{side}")
        paint(sb, il_in_f & here, HU["ilium"])
    # treated sacral levels: body, pedicles and the lesion's allowed region
    for lv in levels:
        if lv not in _SEG:
            continue
        s0, s1 = _SEG[lv]
        seg = (S >= s0) & (S <= s1)
        mask(f"vertebral_body_{lv}")[sl] |= full(body & seg) & bone_f
        mask(f"_inner_{lv}")[sl] |= full(inner & seg) & bone_f
        (ps0, ps1), pw, _ = _pedicle_box(lv)
        ped = full((S >= ps0) & (S <= ps1) & (AX >= cw / 2) & (AX <= cw / 2 + pw) & (Wd >= _WP - 3.0) & ~body) & bone_f
        for side, here in (("left", Xf > 0), ("right", Xf < 0)):
            mask(f"pedicle_{side}_{lv}")[sl] |= ped & here
    # foramina: cortical rim, then the tunnel (fat) with its root
    sac_mask = masks["sacral_bone"]
    carve = [f"vertebral_body_{lv}" for lv in levels if lv in _SEG] + [f"pedicle_{s}_{lv}" for lv in levels
                                                                      if lv in _SEG for s in ("left", "right")]
    for lv, f in _FORAMINA.items():
        p_f = _profiles(np.array(f.s))
        for side, sgn in (("left", 1.0), ("right", -1.0)):
            w_mid = _WP + 0.45 * float(p_f["cd"])
            c0 = sacral_point_mm(sgn * (float(p_f["cw"]) / 2 - 1.0), f.s, w_mid)
            w_front = float(_lat_front(np.array(f.x_ant), p_f))
            an = _anterior_foramen_mm(lv, sgn)
            an2 = sacral_point_mm(sgn * (f.x_ant + 7.0), f.s + 8.0, w_front - 10.0)
            p_p = _profiles(np.array(f.s_post))
            w_back = float(_lat_back(np.array(f.x_post), p_p))
            po = sacral_point_mm(sgn * f.x_post, f.s_post, w_back + 1.5)
            # the intraosseous (intervertebral) foramen runs laterally from the lateral recess to where the dorsal
            # foramen leaves 28 deg from the sagittal plane (Kim 2023: S1A 28.2 +- 4.8 deg)
            jn = sacral_point_mm(sgn * (f.x_post - _DORSAL_TAN * (w_back - w_mid)), 0.5 * (f.s + f.s_post), w_mid)
            name = f"sacral_foramen_canal_{lv}_{side}"
            for a_, b_, r_a, r_b, r_nerve in ((c0, jn, f.r_tunnel, f.r_tunnel, f.r_root),
                                             (jn, an, f.r_tunnel, f.r_ant, f.r_root),
                                             (jn, po, f.r_tunnel, f.r_post, 1.25)):
                rim = _capsule(cv, a_, b_, r_a + sh, r_b + sh)
                if rim is not None:
                    box, inside, *_ = rim
                    inside = inside & (box[1] < Z_PELVIS_MM)
                    paint(box, inside & sac_mask[box[0]], HU["cortical"])
                    for nm in [k for k in masks if k.startswith("_inner_")]:
                        masks[nm][box[0]] &= ~inside
                tun = _capsule(cv, a_, b_, r_a, r_b)
                if tun is None:
                    continue
                box, inside, *_ = tun
                inside = inside & (box[1] < Z_PELVIS_MM) & ~masks["spinal_canal"][box[0]]
                paint(box, inside, HU["epidural_fat"], name)
                for nm in ["bone", "sacral_bone", *carve]:
                    if nm in masks:
                        masks[nm][box[0]] &= ~inside
                nerve = _capsule(cv, a_, b_, r_nerve)
                if nerve is not None:
                    nb, nin, *_ = nerve
                    paint(nb, nin & (nb[1] < Z_PELVIS_MM) & masks[name][nb[0]], HU["cauda"])
            stub = _capsule(cv, an, an2, f.r_root)
            if stub is not None:
                box, inside, *_ = stub
                paint(box, inside & (box[1] < Z_PELVIS_MM) & ~sac_mask[box[0]], HU["cauda"], name)

    # ------------------------------------------------------------------ iliac wings
    for wing, side in zip(wings, ("left", "right")):
        for box, dr, tau, thick, z_crest, arc_len in wing:
            Zw = box[1]
            end = min(0.5, sh / max(arc_len, 1.0))
            bone_w = (np.abs(dr) <= thick / 2) & (tau >= 0.0) & (tau <= 1.0) & (Zw <= z_crest)
            bone_w &= ~masks["sacral_bone"][box[0]]
            wing_in = ((np.abs(dr) <= thick / 2 - sh) & (tau >= end) & (tau <= 1.0 - end) & (Zw <= z_crest - sh)
                       & (Zw >= _ILIUM_BOTTOM + sh))
            paint(box, bone_w, HU["cortical"], f"iliac_bone_{side}")
            paint(box, wing_in & bone_w, HU["ilium"])


def _paint_values(paint, box, region: np.ndarray, values: np.ndarray) -> None:
    """Paint per-voxel values (a few distinct levels) into ``region`` of ``box``."""
    for val in np.unique(values[region]):
        paint(box, region & (values == val), float(val))
