"""seedplan.imaging: the CT, structures (label maps, masks, RTSTRUCT), segmentation, the anatomy derived from
the CT, the TotalSegmentator import and the spine phantom.

DICOM writers live in :mod:`seedplan.io.dicom`."""

from __future__ import annotations

from .anatomy import (
    SPINE_LEVELS,
    adjacent_levels,
    air_regions,
    body_outline,
    derive_anatomy,
    normalize_level,
    spinal_canal_levels,
    thecal_sac,
    vertebra_parts,
    vertebra_parts_near,
)
from .ct import CTImage, deterministic_uid, load_ct, write_ct_image
from .phantom import LEVELS, SpinePhantom, make_spine_phantom, vertebra_dimensions
from .segmentation import bone_masks, connected_components, dice, spinal_canal, vertebral_body_near
from .structures import (
    COMBINED_TARGET,
    Role,
    Structure,
    StructureNotFoundError,
    StructureSet,
    guess_role,
    load_label_map,
    load_mask,
    load_rtstruct,
    rasterize_polygons,
    write_label_map,
)
from .totalseg import TotalSegClass, load_totalsegmentator, totalseg_classes

__all__ = [
    "CTImage",
    "load_ct",
    "write_ct_image",
    "deterministic_uid",
    "COMBINED_TARGET",
    "Role",
    "Structure",
    "StructureSet",
    "StructureNotFoundError",
    "guess_role",
    "load_label_map",
    "load_mask",
    "load_rtstruct",
    "write_label_map",
    "rasterize_polygons",
    "bone_masks",
    "connected_components",
    "vertebral_body_near",
    "spinal_canal",
    "dice",
    "SpinePhantom",
    "make_spine_phantom",
    "vertebra_dimensions",
    "LEVELS",
    "SPINE_LEVELS",
    "normalize_level",
    "adjacent_levels",
    "body_outline",
    "air_regions",
    "vertebra_parts",
    "vertebra_parts_near",
    "spinal_canal_levels",
    "thecal_sac",
    "derive_anatomy",
    "TotalSegClass",
    "totalseg_classes",
    "load_totalsegmentator",
]
