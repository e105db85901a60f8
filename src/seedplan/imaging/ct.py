"""CT volumes: the :class:`CTImage` container, loaders and a DICOM CT writer.

Coordinates are DICOM patient LPS in millimetres (see :mod:`seedplan.geometry`).
HU arrays are indexed ``[z, y, x]`` (``[k, j, i]``) like every array on a
:class:`~seedplan.geometry.Grid`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path
from ..errors import FileFormatError, GeometryError, InputError
from ..geometry import Grid

__all__ = ["CTImage", "load_ct", "write_ct_image", "deterministic_uid"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Largest relative deviation of one slice gap from the median gap accepted
#: as "uniform" slice spacing.
SLICE_GAP_RTOL = 0.02


@dataclass(frozen=True)
class CTImage:
    """A CT volume in Hounsfield units on a :class:`~seedplan.geometry.Grid`.

    Parameters
    ----------
    grid : Grid
        Geometry (origin, spacing, direction, size) in patient LPS mm.
    hu : numpy.ndarray
        HU values, shape ``grid.shape`` (``[z, y, x]``), float32 or int16.
    series_uid : str, optional
        DICOM SeriesInstanceUID when the volume came from (or was written to)
        a DICOM series.
    description : str
        Free text (series description or file name).
    frame_of_reference_uid, study_uid : str, optional
        DICOM FrameOfReferenceUID / StudyInstanceUID, when known.
    sop_instance_uids : tuple of str
        SOPInstanceUID of each slice ``k`` (empty when unknown).
    patient_id : str, optional
        DICOM PatientID when known.
    patient_position : str, optional
        DICOM PatientPosition (``HFS``, ``HFP``, ``FFS``, ``FFP``...) when known.
    """

    grid: Grid
    hu: np.ndarray
    series_uid: str | None = None
    description: str = ""
    frame_of_reference_uid: str | None = None
    study_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = field(default=(), repr=False)
    patient_id: str | None = None
    patient_position: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.grid, Grid):
            raise InputError(f"CTImage.grid must be a seedplan.geometry.Grid, got {type(self.grid).__name__}")
        hu = np.asarray(self.hu)
        if hu.shape != self.grid.shape:
            raise GeometryError(
                f"CTImage.hu has shape {hu.shape} but the grid expects {self.grid.shape} (z, y, x)"
            )
        if hu.dtype not in (np.float32, np.int16):
            if not np.issubdtype(hu.dtype, np.number) or hu.dtype == bool:
                raise InputError(f"CTImage.hu must be numeric HU values, got dtype {hu.dtype}")
            hu = hu.astype(np.float32)
        if hu.dtype == np.float32 and not np.all(np.isfinite(hu)):
            raise InputError("CTImage.hu contains NaN or infinite values")
        object.__setattr__(self, "hu", hu)
        uids = tuple(str(u) for u in self.sop_instance_uids)
        if uids and len(uids) != self.grid.size[2]:
            raise InputError(
                f"CTImage.sop_instance_uids has {len(uids)} entries, expected one per slice ({self.grid.size[2]})"
            )
        object.__setattr__(self, "sop_instance_uids", uids)

    def to_sitk(self) -> Any:
        """The volume as a SimpleITK image with full geometry."""
        return self.grid.to_sitk(self.hu)

    @property
    def content_sha256(self) -> str:
        """SHA-256 of the geometry and the HU values: what a plan checks its CT against."""
        import hashlib

        g = self.grid
        h = hashlib.sha256(repr((g.origin_mm, g.spacing_mm, g.size, g.direction)).encode("ascii"))
        h.update(str(self.hu.dtype).encode("ascii"))
        h.update(np.ascontiguousarray(self.hu).tobytes())
        return h.hexdigest()


# ----------------------------------------------------------------------------- helpers
def deterministic_uid(*parts: Any) -> str:
    """A valid DICOM UID (``2.25.<int>``) derived deterministically from ``parts``."""
    import hashlib

    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return "2.25." + str(int(digest[:32], 16))  # 128-bit integer: at most 44 characters


def _has_image_suffix(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in _IMAGE_SUFFIXES)


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_sitk(path: Path) -> Any:
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[-1] if first else ""
        raise FileFormatError(
            f"cannot read image file {path}: not a readable NIfTI/NRRD/MHA/MHD image ({detail[:200]})"
        ) from None


# ----------------------------------------------------------------------------- loading
#: DICOM patient positions and the orientation of their standard axial image: where the voxel index
#: i, j, k increases (SimpleITK DICOMOrient codes; ImageOrientationPatient HFS 1,0,0,0,1,0 ...).
STANDARD_ORIENTATION = {"HFS": "LPS", "HFP": "RAS", "FFS": "RPI", "FFP": "LAI"}


def load_ct(path: str | os.PathLike[str], series_uid: str | None = None, *,
            patient_position: str | None = None) -> CTImage:
    """Load a CT volume in HU with its full geometry.

    Parameters
    ----------
    path : path-like
        A folder holding a DICOM series (files directly inside it), or a
        ``.nii``/``.nii.gz``, ``.nrrd``, ``.mha``/``.mhd`` file (values taken
        as HU), or a single DICOM file (its whole series is read from the
        same folder).
    series_uid : str, optional
        SeriesInstanceUID to read when the folder holds several series.
        Without it the largest series is read (with a warning); equal-sized
        series are ambiguous and raise.
    patient_position : {"HFS", "HFP", "FFS", "FFP"}, optional
        For image files, which carry none: how the patient lay.  A DICOM
        series gives its own (a different value here raises).

    Returns
    -------
    CTImage
        An image file's CT is turned into the standard axial orientation of its
        patient position (HFS when not given: rows run to the patient's left,
        columns to the back, slices upwards), as a DICOM series of that position
        would be, and gets DICOM UIDs derived from its content, stable from one
        load to the next, so that it can be exported and referenced like a
        DICOM CT.

    Raises
    ------
    FileFormatError
        Missing path, folder without DICOM images, corrupt or unreadable file.
    GeometryError
        Non-uniform slice spacing (missing slices), duplicate slice positions,
        inconsistent orientation or matrix size inside the series.
    InputError
        ``series_uid`` not found, or several equally large series.
    """
    p = Path(path)
    if patient_position is not None and patient_position not in STANDARD_ORIENTATION:
        raise InputError(f"patient_position must be one of {', '.join(STANDARD_ORIENTATION)}, got {patient_position!r}")
    if not p.exists():
        raise FileFormatError(f"CT path {p} does not exist (expected a DICOM folder or a NIfTI/NRRD/MHA file)")
    if _has_image_suffix(p) and not p.is_dir():
        return _load_image_file(p, patient_position)
    if p.is_dir():
        ct = _load_dicom_folder(p, series_uid)
    elif _looks_like_dicom(p) or p.suffix.lower() in (".dcm", ".ima"):
        if not _looks_like_dicom(p):
            _read_header(p)  # raises a clear FileFormatError for corrupt files
        if series_uid is None:
            hdr = _read_header(p)
            series_uid = str(getattr(hdr, "SeriesInstanceUID", "") or "") or None
        ct = _load_dicom_folder(p.parent, series_uid)
    else:
        raise FileFormatError(
            f"cannot load CT from {p}: expected a DICOM series folder or a file ending in "
            + ", ".join(_IMAGE_SUFFIXES)
        )
    if patient_position is not None and ct.patient_position and ct.patient_position != patient_position:
        raise InputError(f"{p}: the DICOM series says PatientPosition {ct.patient_position}, but "
                         f"{patient_position} was given; remove the patient_position setting")
    return replace(ct, patient_position=ct.patient_position or patient_position)


def _load_image_file(p: Path, patient_position: str | None) -> CTImage:
    """A NIfTI / NRRD / MHA CT in the standard orientation of its patient position, with content-derived UIDs."""
    import SimpleITK as sitk

    img = _read_sitk(p)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise FileFormatError(f"{p} has {img.GetNumberOfComponentsPerPixel()} components per voxel; a CT needs 1")
    if img.GetDimension() != 3:
        raise FileFormatError(f"{p} is {img.GetDimension()}D; a CT volume must be 3D")
    d = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    if np.allclose(np.abs(d), np.round(np.abs(d)), atol=1e-6):  # axis-aligned: reorder the voxels exactly
        img = sitk.DICOMOrient(img, STANDARD_ORIENTATION[patient_position or "HFS"])
    arr = sitk.GetArrayFromImage(img)
    arr = arr if arr.dtype == np.int16 else arr.astype(np.float32)
    ct = CTImage(grid=Grid.from_sitk(img), hu=arr, description=p.name, patient_position=patient_position)
    key = ct.content_sha256
    nz = ct.grid.size[2]
    return replace(ct, study_uid=deterministic_uid("seedplan-ct", key, "study"),
                   series_uid=deterministic_uid("seedplan-ct", key, "series"),
                   frame_of_reference_uid=deterministic_uid("seedplan-ct", key, "for"),
                   sop_instance_uids=tuple(deterministic_uid("seedplan-ct", key, "sop", k) for k in range(nz)))


def _read_header(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise FileFormatError(f"{path} is not a valid DICOM file ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on corrupt input
        raise FileFormatError(f"{path} is a corrupt or unreadable DICOM file ({type(exc).__name__}: {exc})") from None


def _scan_folder(folder: Path) -> dict[str, list[tuple[Path, Any]]]:
    """Group the DICOM image files of ``folder`` by SeriesInstanceUID."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, list[tuple[Path, Any]]] = {}
    try:
        entries = sorted(e for e in folder.iterdir() if e.is_file() and not e.name.startswith("."))
    except OSError as exc:
        raise FileFormatError(f"cannot list CT folder {folder}: {exc.strerror or exc}") from None
    for f in entries:
        is_dicom_name = f.suffix.lower() in (".dcm", ".ima") or f.suffix == ""
        magic = _looks_like_dicom(f)
        if not magic and not (f.suffix.lower() in (".dcm", ".ima")):
            if not is_dicom_name:
                continue  # README.txt, labels.json, ...: not DICOM, ignore
            try:  # extension-less: maybe DICOM without preamble
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=False)
            except (InvalidDicomError, Exception):  # noqa: BLE001
                continue
        else:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except InvalidDicomError as exc:
                raise FileFormatError(f"{f} is not a valid DICOM file ({exc}); remove it from {folder}") from None
            except Exception as exc:  # noqa: BLE001
                raise FileFormatError(
                    f"{f} is a corrupt DICOM file ({type(exc).__name__}: {exc}); remove or replace it"
                ) from None
        if "ImagePositionPatient" not in ds or "PixelSpacing" not in ds or "Rows" not in ds:
            if str(getattr(ds, "Modality", "")) in ("CT", "MR", "PT") or str(
                getattr(ds, "SOPClassUID", "")
            ) == CT_IMAGE_STORAGE:
                raise FileFormatError(
                    f"{f} is an incomplete {getattr(ds, 'Modality', 'image')} file (no ImagePositionPatient/"
                    "PixelSpacing/Rows; truncated?); remove or replace it"
                )
            continue  # RTSTRUCT, RTPLAN, DICOMDIR... not an image slice
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "<no SeriesInstanceUID>")
        series.setdefault(uid, []).append((f, ds))
    return series


def _floats(ds: Any, keyword: str, n: int, path: Path) -> np.ndarray:
    try:
        v = np.asarray([float(x) for x in ds[keyword].value], dtype=float)
    except Exception:  # noqa: BLE001
        raise FileFormatError(f"{path}: {keyword} is missing or not numeric") from None
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise FileFormatError(f"{path}: {keyword} must have {n} finite numbers, got {v.tolist()}")
    return v


def _load_dicom_folder(folder: Path, series_uid: str | None) -> CTImage:
    series = _scan_folder(folder)
    if not series:
        raise FileFormatError(
            f"no DICOM image files found in {folder} (expected one file per CT slice with "
            "ImagePositionPatient; NIfTI/NRRD/MHA files must be given as a file path)"
        )
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(
                f"series {series_uid} not found in {folder}; available series: "
                + ", ".join(f"{u} ({len(v)} files)" for u, v in series.items())
            )
        chosen = series_uid
    elif len(series) == 1:
        chosen = next(iter(series))
    else:
        sizes = sorted(((len(v), u) for u, v in series.items()), reverse=True)
        listing = ", ".join(f"{u} ({n} files)" for n, u in sizes)
        if sizes[0][0] == sizes[1][0]:
            raise InputError(
                f"{folder} holds several DICOM series of the same size ({listing}); choose one: "
                "\"ct_series_uid\" in the case file (series_uid= in load_ct)"
            )
        chosen = sizes[0][1]
        warnings.warn(
            f"{folder} holds {len(series)} DICOM series ({listing}); reading the largest, {chosen}. "
            "To choose another, set \"ct_series_uid\" in the case file (series_uid= in load_ct).",
            stacklevel=3,
        )
    files = series[chosen]
    return _assemble_series(folder, chosen, files)


def _assemble_series(folder: Path, uid: str, files: list[tuple[Path, Any]]) -> CTImage:
    f0, ds0 = files[0]
    iop = _floats(ds0, "ImageOrientationPatient", 6, f0) if "ImageOrientationPatient" in ds0 else np.array(
        [1.0, 0, 0, 0, 1, 0]
    )
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise GeometryError(f"{f0}: ImageOrientationPatient {iop.tolist()} is not two orthonormal vectors")
    normal = np.cross(row, col)
    ps0 = _floats(ds0, "PixelSpacing", 2, f0)
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    positions = []
    for f, ds in files:
        if "ImageOrientationPatient" in ds and not np.allclose(
            _floats(ds, "ImageOrientationPatient", 6, f), iop, atol=1e-4
        ):
            raise GeometryError(f"{f} has a different ImageOrientationPatient from {f0} in series {uid} of {folder}")
        if int(ds.Rows) != rows or int(ds.Columns) != cols:
            raise GeometryError(f"{f} has a different matrix size from {f0} in series {uid} of {folder}")
        if not np.allclose(_floats(ds, "PixelSpacing", 2, f), ps0, rtol=1e-4):
            raise GeometryError(f"{f} has a different PixelSpacing from {f0} in series {uid} of {folder}")
        positions.append(_floats(ds, "ImagePositionPatient", 3, f))
    pos = np.asarray(positions)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    files = [files[i] for i in order]
    pos, dist = pos[order], dist[order]
    if len(files) > 1:
        gaps = np.diff(dist)
        if np.any(gaps < 1e-3):
            i = int(np.argmin(gaps))
            raise GeometryError(
                f"series {uid} in {folder} has two slices at the same position ({files[i][0].name} and "
                f"{files[i + 1][0].name}, {dist[i]:.3f} mm along the slice normal); remove duplicates"
            )
        dz = float(np.median(gaps))
        bad = np.nonzero(np.abs(gaps - dz) > SLICE_GAP_RTOL * dz + 1e-3)[0]
        if bad.size:
            i = int(bad[0])
            raise GeometryError(
                f"series {uid} in {folder} has non-uniform slice spacing: gap of {gaps[i]:.3f} mm between "
                f"{files[i][0].name} and {files[i + 1][0].name} (at {dist[i]:.2f} -> {dist[i + 1]:.2f} mm) "
                f"while the median gap is {dz:.3f} mm; a slice is probably missing. Complete the series "
                "or resample it to a uniform spacing."
            )
        # in-plane drift (gantry tilt) is not a regular grid either
        lateral = pos - pos[0] - np.outer(dist - dist[0], normal)
        if np.max(np.linalg.norm(lateral, axis=1)) > 0.01 * max(float(ps0.min()), 1e-3) + 0.01:
            raise GeometryError(
                f"series {uid} in {folder}: slice origins do not lie on a line along the slice normal "
                "(gantry tilt or sheared acquisition); resample it before planning"
            )
    else:
        dz = float(getattr(ds0, "SliceThickness", 0) or 0) or 1.0
    hu = np.empty((len(files), rows, cols), dtype=np.float32)
    for k, (f, _) in enumerate(files):
        hu[k] = _read_slice_hu(f, rows, cols)
    direction = np.column_stack([row, col, normal])
    grid = Grid(pos[0], (float(ps0[1]), float(ps0[0]), dz), (cols, rows, len(files)), direction)
    lo, hi = float(hu.min()), float(hu.max())
    if lo >= -32768 and hi <= 32767 and np.all(hu == np.round(hu)):
        hu = hu.astype(np.int16)
    return CTImage(
        grid=grid,
        hu=hu,
        series_uid=None if uid.startswith("<") else uid,
        description=str(getattr(ds0, "SeriesDescription", "") or folder.name),
        frame_of_reference_uid=str(getattr(ds0, "FrameOfReferenceUID", "") or "") or None,
        study_uid=str(getattr(ds0, "StudyInstanceUID", "") or "") or None,
        sop_instance_uids=tuple(str(getattr(ds, "SOPInstanceUID", "")) for _, ds in files)
        if all("SOPInstanceUID" in ds for _, ds in files)
        else (),
        patient_id=str(getattr(ds0, "PatientID", "") or "") or None,
        patient_position=str(getattr(ds0, "PatientPosition", "") or "").strip().upper() or None,
    )


def _read_slice_hu(path: Path, rows: int, cols: int) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise FileFormatError(
            f"cannot read the pixel data of {path} ({type(exc).__name__}: {exc}); the file is corrupt, "
            "truncated or uses an unsupported compression"
        ) from None
    if arr.shape != (rows, cols):
        raise FileFormatError(f"{path}: pixel data has shape {arr.shape}, expected ({rows}, {cols})")
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return (arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


# ----------------------------------------------------------------------------- writing
def write_ct_image(ct: CTImage, path: str | os.PathLike[str]) -> Path:
    """Write ``ct`` as a NIfTI (``.nii``/``.nii.gz``), NRRD or MHA/MHD file (atomically).

    Returns the path written.
    """
    import SimpleITK as sitk

    p = Path(path)
    if not _has_image_suffix(p):
        raise InputError(f"cannot write {p}: the name must end in one of {', '.join(_IMAGE_SUFFIXES)}")
    img = ct.to_sitk()
    if p.name.lower().endswith(".mhd"):
        # MetaImage header + raw data: two files, write them into place directly.
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            sitk.WriteImage(img, str(p))
        except RuntimeError as exc:
            raise FileFormatError(f"cannot write {p}: {str(exc).strip().splitlines()[-1]}") from None
        return p
    with atomic_path(p) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), useCompression=p.name.lower().endswith((".gz", ".nrrd", ".mha")))
        except RuntimeError as exc:
            raise FileFormatError(f"cannot write {p}: {str(exc).strip().splitlines()[-1]}") from None
    return p
