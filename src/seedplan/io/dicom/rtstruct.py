"""RT Structure Set: the case's structures as contours, and the plan's needles and seeds as ROIs.

Contours are marching-squares iso-lines (level 0.5) of each slice of each
mask, so rasterising them back (voxel centre inside polygon) gives the same
mask.  A structure seedplan derived carries ``derived: <how>`` as its ROI
description.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ...errors import GeometryError, InputError
from ...imaging.ct import CTImage, deterministic_uid
from ...imaging.structures import Role, Structure, StructureSet
from ...plan import Plan
from ._common import (
    CT_IMAGE_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
    STUDY_COMPONENT_SOP_CLASS,
    ds_list,
    new_dataset,
    patient_study,
    raw_ds,
    require_ct_uids,
    save_dataset,
)
from ._uids import DicomExport, case_ct_path, plan_uids

__all__ = ["write_rtstruct", "export_rtstruct", "structure_set_dataset", "add_roi", "ROLE_COLORS",
           "ROLE_INTERPRETED_TYPES"]

#: Display colour of a structure by role.
ROLE_COLORS = {
    Role.TARGET: (255, 0, 0),
    Role.VERTEBRAL_BODY: (255, 200, 0),
    Role.OAR: (0, 170, 255),
    Role.CANAL: (255, 255, 0),
    Role.PEDICLE: (255, 160, 60),
    Role.AVOIDANCE: (255, 0, 255),
    Role.BODY: (0, 255, 0),
    Role.BONE: (230, 230, 200),
}
#: RTROIInterpretedType by role.
ROLE_INTERPRETED_TYPES = {
    Role.TARGET: "GTV",
    Role.VERTEBRAL_BODY: "ORGAN",
    Role.OAR: "ORGAN",
    Role.CANAL: "ORGAN",
    Role.PEDICLE: "ORGAN",
    Role.AVOIDANCE: "AVOIDANCE",
    Role.BODY: "EXTERNAL",
    Role.BONE: "ORGAN",
}


def _closed_polygon(line: np.ndarray) -> np.ndarray | None:
    """One contourpy line as a polygon without its repeated last point and without the vertices in the middle
    of straight runs (same polygon, fewer points); None for fewer than 3 points."""
    pts = np.asarray(line, dtype=float)
    if pts.shape[0] >= 2 and np.allclose(pts[0], pts[-1]):
        pts = pts[:-1]
    if pts.shape[0] < 3:
        return None
    prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    d1, d2 = pts - prev, nxt - pts
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    straight = (np.abs(cross) < 1e-9) & (np.sum(d1 * d2, axis=1) > 0)
    if np.count_nonzero(~straight) >= 3:
        pts = pts[~straight]
    return pts


def _slice_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed marching-squares contours (level 0.5) of a 2D mask, as (i, j) indices.

    The definition :func:`_stack_contours` follows (it traces many slices per contourpy call).
    """
    import contourpy

    padded = np.zeros((mask2d.shape[0] + 2, mask2d.shape[1] + 2), dtype=np.float64)
    padded[1:-1, 1:-1] = mask2d
    gen = contourpy.contour_generator(z=padded, line_type="Separate", corner_mask=False)
    out = []
    for ln in gen.lines(0.5):
        pts = _closed_polygon(np.asarray(ln, dtype=float) - 1.0)  # undo padding; contourpy gives (x=i, y=j)
        if pts is not None:
            out.append(pts)
    return out


#: Most quads traced by one contourpy call of :func:`_stack_contours` (larger arrays trace more slowly per quad).
_STACK_QUADS = 250_000


def _stack_contours(mask: np.ndarray, max_quads: int = _STACK_QUADS) -> list[tuple[int, np.ndarray]]:
    """``(k, polygon in (i, j) indices)`` of every contour of every axial slice of a ``[k, j, i]`` mask.

    The same polygons, in the same order, as :func:`_slice_contours` slice by slice, in far fewer contourpy
    calls (each costs ~0.5 ms however small the slice): the box of each non-empty slice (its rows, the
    columns of the whole mask) is stacked under the previous one with a row of zeros between them, so no
    iso-line joins two slices, and a call traces up to ``max_quads`` quads of the stack.  A point's row
    tells its slice; the box offsets are whole numbers, so the indices are exact.
    """
    import contourpy

    rows_any = mask.any(axis=2)  # [k, j]
    ks = np.nonzero(rows_any.any(axis=1))[0]
    if ks.size == 0:
        return []
    cols = np.nonzero(mask.any(axis=(0, 1)))[0]
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    width = c1 - c0 + 2

    def trace(tiles: list[tuple[int, int, int, int]], height: int) -> list[tuple[int, np.ndarray]]:
        z = np.zeros((height + 1, width), dtype=np.float64)
        for k, r0, r1, t in tiles:
            z[t + 1:t + 1 + r1 - r0, 1:-1] = mask[k, r0:r1, c0:c1]
        starts = np.array([t for _, _, _, t in tiles])
        found = []
        gen = contourpy.contour_generator(z=z, line_type="Separate", corner_mask=False)
        for ln in gen.lines(0.5):
            pts = np.asarray(ln, dtype=float)
            k, r0, _, t = tiles[int(np.searchsorted(starts, pts[:, 1].min(), side="right")) - 1]
            poly = _closed_polygon(pts - np.array([1.0 - c0, t + 1.0 - r0]))
            if poly is not None:
                found.append((k, poly))
        return found

    out: list[tuple[int, np.ndarray]] = []
    tiles: list[tuple[int, int, int, int]] = []  # (slice, first row, end row, row of the zeros above it)
    height = 0
    for k in ks:
        js = np.nonzero(rows_any[k])[0]
        r0, r1 = int(js[0]), int(js[-1]) + 1
        if tiles and (height + r1 - r0 + 2) * width > max_quads:
            out += trace(tiles, height)
            tiles, height = [], 0
        tiles.append((int(k), r0, r1, height))
        height += r1 - r0 + 1
    return out + trace(tiles, height)


def _fmt3(v: float) -> str:
    s = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _fmt3_joined(arrays: list[np.ndarray]) -> list[str]:
    """``"\\".join(_fmt3(v) for v in a.reshape(-1))`` for each array of ``arrays``, formatting each distinct
    value once (a structure's contour coordinates take a few hundred distinct values: multiples of half a voxel).
    """
    if not arrays:
        return []
    flat = [np.asarray(a, dtype=float).reshape(-1) for a in arrays]
    distinct, where = np.unique(np.concatenate(flat), return_inverse=True)
    texts = np.array([_fmt3(v) for v in distinct.tolist()], dtype=object)[where.reshape(-1)].tolist()
    out, start = [], 0
    for a in flat:
        out.append("\\".join(texts[start:start + a.size]))
        start += a.size
    return out


def add_roi(ds: Any, name: str, interpreted: str, color: tuple[int, int, int],
            contours: Iterable[tuple[str, np.ndarray, str | None]], *, description: str = "") -> int:
    """Append one ROI (its contours, display colour and observation) to a structure-set dataset.

    ``contours`` yields ``(geometric type, (n, 3) points in mm, referenced CT SOP instance UID or None)``.
    Returns the ROI number.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    number = max((int(r.ROINumber) for r in ds.StructureSetROISequence), default=0) + 1
    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    roi.ROIName = name[:64]
    if description:  # LO: at most 64 characters
        roi.ROIDescription = description[:64]
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    ds.StructureSetROISequence.append(roi)
    rc = Dataset()
    rc.ROIDisplayColor = [int(c) for c in color]
    rc.ReferencedROINumber = number
    cseq = Sequence()
    contours = list(contours)
    closed = iter(_fmt3_joined([pts for ctype, pts, _ in contours if ctype == "CLOSED_PLANAR"]))
    for ctype, pts, image_uid in contours:
        c = Dataset()
        if image_uid:
            ci = Dataset()
            ci.ReferencedSOPClassUID = CT_IMAGE_STORAGE
            ci.ReferencedSOPInstanceUID = image_uid
            c.ContourImageSequence = Sequence([ci])
        c.ContourGeometricType = ctype
        c.NumberOfContourPoints = int(pts.shape[0])
        if ctype == "CLOSED_PLANAR":
            c[0x30060050] = raw_ds(0x30060050, [next(closed)])  # ContourData, formatted at once: fast
        else:
            c.ContourData = ds_list(pts)
        cseq.append(c)
    rc.ContourSequence = cseq
    ds.ROIContourSequence.append(rc)
    obs = Dataset()
    obs.ObservationNumber = number
    obs.ReferencedROINumber = number
    obs.ROIObservationLabel = name[:16]
    obs.RTROIInterpretedType = interpreted
    obs.ROIInterpreter = ""
    ds.RTROIObservationsSequence.append(obs)
    return number


#: Contours already traced, by mask content (a run writes the same structures into more than one RTSTRUCT).
_CONTOURS: dict[bytes, list[tuple[int, np.ndarray]]] = {}


def _index_contours(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(k, polygon in (i, j) indices)`` of every contour of every axial slice, traced once per mask content."""
    import hashlib

    key = hashlib.sha1(np.packbits(mask.reshape(-1)).tobytes() + repr(mask.shape).encode()).digest()
    if key not in _CONTOURS:
        if len(_CONTOURS) > 256:
            _CONTOURS.clear()
        _CONTOURS[key] = _stack_contours(mask)
    return _CONTOURS[key]


def _mask_contours(s: Structure, ct: CTImage) -> Iterable[tuple[str, np.ndarray, str | None]]:
    grid = ct.grid
    for k, poly in _index_contours(s.mask):
        xyz = grid.index_to_world(np.column_stack([poly, np.full(poly.shape[0], float(k))]))
        yield "CLOSED_PLANAR", xyz, (ct.sop_instance_uids[k] if ct.sop_instance_uids else None)


def structure_set_dataset(
    structures: StructureSet | Iterable[Structure],
    ct: CTImage,
    *,
    sop_uid: str,
    series_uid: str,
    patient: Mapping[str, str],
    when: _dt.datetime,
    label: str = "seedplan",
    description: str = "seedplan structures",
    colors: Mapping[str, tuple[int, int, int]] | None = None,
) -> Any:
    """An RTSTRUCT dataset referencing the CT series, with one contoured ROI per structure (on the CT grid)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    structs = list(structures.values()) if isinstance(structures, StructureSet) else list(structures)
    for s in structs:
        if not s.grid.same_geometry(ct.grid):
            raise GeometryError(f"structure {s.name!r} is not on the CT grid; resample it with "
                                "Structure.resampled(ct.grid) first")
    ds = new_dataset(RT_STRUCTURE_SET_STORAGE, sop_uid, "RTSTRUCT", series_uid=series_uid, series_number=100,
                     patient=patient, when=when, description=description,
                     frame_of_reference_uid=ct.frame_of_reference_uid)
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDate, ds.StructureSetTime = ds.SeriesDate, ds.SeriesTime
    contour_images = Sequence()
    for u in ct.sop_instance_uids:
        ci = Dataset()
        ci.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        ci.ReferencedSOPInstanceUID = u
        contour_images.append(ci)
    se = Dataset()
    se.SeriesInstanceUID = ct.series_uid
    se.ContourImageSequence = contour_images
    st = Dataset()
    st.ReferencedSOPClassUID = STUDY_COMPONENT_SOP_CLASS
    st.ReferencedSOPInstanceUID = patient["StudyInstanceUID"]
    st.RTReferencedSeriesSequence = Sequence([se])
    fr = Dataset()
    fr.FrameOfReferenceUID = ct.frame_of_reference_uid
    fr.RTReferencedStudySequence = Sequence([st])
    ds.ReferencedFrameOfReferenceSequence = Sequence([fr])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    for s in structs:
        add_roi(ds, s.name, ROLE_INTERPRETED_TYPES[s.role], (colors or {}).get(s.name, ROLE_COLORS[s.role]),
                _mask_contours(s, ct), description=f"derived: {s.derived}" if s.derived else "")
    return ds


def write_rtstruct(
    structures: StructureSet | Iterable[Structure],
    ct: CTImage,
    path: str | os.PathLike[str],
    *,
    label: str = "seedplan",
    uid_seed: Any = None,
    colors: Mapping[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Write structures as a DICOM RTSTRUCT referencing the CT series.

    Parameters
    ----------
    structures : StructureSet or iterable of Structure
        Structures on the CT grid.
    ct : CTImage
        The referenced CT, with its series and frame-of-reference UIDs (as
        :func:`~seedplan.io.dicom.write_ct_dicom_series` or
        :func:`~seedplan.imaging.load_ct` return it).
    path : path-like
        Output file (written atomically).
    label : str
        StructureSetLabel.
    uid_seed : any, optional
        Derive the RTSTRUCT's SOPInstanceUID/SeriesInstanceUID (and a fixed date) from it.
    colors : mapping name -> (r, g, b), optional
        Display colours.
    """
    from pydicom.uid import generate_uid

    missing = [n for n, v in (("series", ct.series_uid), ("frame of reference", ct.frame_of_reference_uid)) if not v]
    if missing:
        raise InputError(
            f"write_rtstruct({path}): the CT has no {' / '.join(missing)} UID; write it with "
            "write_ct_dicom_series() first (it returns the CT with its UIDs)"
        )
    fixed = uid_seed is not None
    sop_uid = deterministic_uid("seedplan", uid_seed, "rtstruct") if fixed else str(generate_uid())
    series = deterministic_uid("seedplan", uid_seed, "rtseries") if fixed else str(generate_uid())
    when = _dt.datetime(2026, 1, 1, 12) if fixed else _dt.datetime.now().replace(microsecond=0)
    patient = {"PatientName": "Seedplan^Phantom" if ct.patient_id is None else str(ct.patient_id),
               "PatientID": ct.patient_id or "SEEDPLAN",
               "StudyInstanceUID": ct.study_uid or deterministic_uid("seedplan", "study-of", ct.series_uid)}
    ds = structure_set_dataset(structures, ct, sop_uid=sop_uid, series_uid=series, patient=patient, when=when,
                               label=label, colors=colors)
    return save_dataset(ds, path, "RTSTRUCT")


def export_rtstruct(
    plan: Plan,
    ct: CTImage,
    structures: StructureSet | None,
    path: str | os.PathLike[str],
    *,
    include_seeds: bool = True,
    sop_instance_uid: str | None = None,
    ct_source: str | os.PathLike[str] | None = None,
) -> DicomExport:
    """Write the case's structures plus the needles (and seeds) as an RTSTRUCT.

    Parameters
    ----------
    plan : Plan
    ct : CTImage
        The planning CT; structures must lie on its grid.
    structures : StructureSet or None
        Targets, organs at risk... (None: needles and seeds only).
    path : path-like
        Output file, written atomically.
    include_seeds : bool
        Add the ROI ``seeds`` (one POINT contour per seed, MARKER).
    sop_instance_uid : str, optional
        Default ``plan_uids(plan)["rtstruct"]`` (what :func:`~seedplan.io.dicom.export_rtplan` references).
    ct_source : path-like, optional
        CT folder/file to copy patient and study attributes from.

    Returns
    -------
    DicomExport
        ``info``: ``roi_numbers`` (name -> number), ``needle_roi_numbers``
        (needle number -> ROI number), ``target_roi_number`` (or None).

    Notes
    -----
    Needle ROIs are ``needle_N1``, ``needle_N2``... (BRACHY_CHANNEL, an
    OPEN_NONPLANAR entry -> tip line); vertebroplasty needles
    ``pvp_needle_<side>`` (interpreted type empty: no defined term fits).
    """
    what = f"export_rtstruct({path})"
    require_ct_uids(ct, what)
    if not isinstance(plan, Plan):
        raise InputError(f"{what}: plan must be a seedplan Plan, got {type(plan).__name__}")
    structs = StructureSet() if structures is None else structures
    if not isinstance(structs, StructureSet):
        structs = StructureSet(structs)
    uids = plan_uids(plan)
    sop_uid = sop_instance_uid or uids["rtstruct"]
    patient = patient_study(ct, ct_source if ct_source is not None else case_ct_path(plan))
    ds = structure_set_dataset(structs, ct, sop_uid=sop_uid, series_uid=uids["rtstruct_series"], patient=patient,
                               when=_dt.datetime.now().replace(microsecond=0), label="seedplan plan",
                               description="seedplan structures, needles and seeds")
    roi_numbers = {str(r.ROIName): int(r.ROINumber) for r in ds.StructureSetROISequence}
    target_roi = next((roi_numbers[s.name[:64]] for s in structs.values()
                       if s.role is Role.TARGET and s.name[:64] in roi_numbers), None)

    def unique(name: str) -> str:
        out, n = name[:60], 2
        while out in roi_numbers:
            out, n = f"{name[:60]}_{n}", n + 1
        return out

    def line(n: Any) -> list[tuple[str, np.ndarray, None]]:
        return [("OPEN_NONPLANAR", np.array([n.entry_mm, n.tip_mm], dtype=float), None)]

    def add(name: str, interpreted: str, color: tuple[int, int, int], contours: Any) -> int:
        name = unique(name)
        roi_numbers[name] = add_roi(ds, name, interpreted, color, contours)
        return roi_numbers[name]

    needle_rois = {i: add(f"needle_{Plan.needle_name(i)}", "BRACHY_CHANNEL", (255, 255, 0), line(n))
                   for i, n in enumerate(plan.needles, start=1)}
    for i, n in enumerate(plan.pvp_needles, start=1):
        add(f"pvp_needle_{n.label or i}", "", (255, 182, 193), line(n))
    if include_seeds and plan.n_seeds:
        add("seeds", "MARKER", (255, 128, 0),
            [("POINT", np.asarray(p, dtype=float).reshape(1, 3), None) for p in plan.positions_mm])
    out = save_dataset(ds, path, "RTSTRUCT")
    return DicomExport(out, RT_STRUCTURE_SET_STORAGE, sop_uid, uids["rtstruct_series"],
                       {"roi_numbers": dict(roi_numbers), "needle_roi_numbers": needle_rois,
                        "target_roi_number": target_roi})
