"""The sweep table of a batch: variants of one case, checked before any task starts.

A sweep table is a CSV file with a header row and one variant per row::

    name,dose_Gy,activity_mCi
    pd100,100,
    pd120_a05,120,0.5

Columns (all optional except one parameter column):

* ``name``: the variant's folder name (letters, digits, ``.``, ``_``, ``-``);
  empty or absent: ``<case>_001``, ``<case>_002``... by row;
* ``activity_mCi``: a fixed seed activity (the prescription's activity range
  becomes that one value: the optimiser places seeds of this activity);
* ``lesion_diameter_mm``: the lesion of a phantom case (a folder written by
  ``seedplan phantom``, with its ``phantom.json``): the phantom is built again
  with this diameter and the variant is planned on it;
* any number of the prescription (:class:`~seedplan.plan.Prescription`):
  ``dose_Gy``, ``d90_goal_pct_of_pd``, ``v100_goal_pct``, ``seed_spacing_mm``,
  ``target_margin_mm``... (:data:`PRESCRIPTION_COLUMNS`).

An empty cell keeps the case's own value.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from .._atomic import read_json, write_text_atomic
from ..errors import InputError
from ..plan import Prescription

__all__ = ["PRESCRIPTION_COLUMNS", "SWEEP_COLUMNS", "read_sweep", "phantom_recipe", "variant_prescription",
           "write_variant_phantom"]

#: Numbers of the prescription a sweep may set (its float fields).
PRESCRIPTION_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Prescription) if isinstance(f.default, float))
#: Every column a sweep table may have.
SWEEP_COLUMNS: tuple[str, ...] = ("name", "activity_mCi", "lesion_diameter_mm", *PRESCRIPTION_COLUMNS)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _rows(source: Any) -> tuple[str, list[tuple[int, dict[str, Any]]]]:
    """``(where, [(line, {column: cell})])`` of a CSV file or of a sequence of mappings."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise InputError(f"sweep table {path}: cannot read it ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise InputError(f"sweep table {path}: not a text (UTF-8 CSV) file") from None
        reader = csv.reader(io.StringIO(text))
        header: list[str] | None = None
        rows = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                for c in header:
                    if not c:
                        raise InputError(f"sweep table {path}: line {reader.line_num}: a column has no name")
                    if header.count(c) > 1:
                        raise InputError(f"sweep table {path}: column {c!r} appears twice in the header")
                continue
            if len(cells) > len(header):
                raise InputError(f"sweep table {path}, line {reader.line_num}: {len(cells)} cells for "
                                 f"{len(header)} columns ({', '.join(header)})")
            rows.append((reader.line_num, dict(zip(header, cells))))
        return str(path), rows
    if isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        rows = []
        for k, row in enumerate(source, start=1):
            if not isinstance(row, Mapping):
                raise InputError(f"sweep rows: row {k} must be a mapping {{column: value}}, got {type(row).__name__}")
            rows.append((k, {str(c): x for c, x in row.items()}))
        return "sweep rows", rows
    raise InputError(f"sweep must be a CSV file or a sequence of rows {{column: value}}, got {type(source).__name__}")


def _number(cell: Any, where: str) -> float | None:
    """The number of a cell (None for an empty one)."""
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return None
    if isinstance(cell, bool):
        raise InputError(f"{where}: must be a number, got {cell!r}")
    try:
        x = float(cell.strip() if isinstance(cell, str) else cell)
    except (TypeError, ValueError):
        raise InputError(f"{where}: must be a number, got {cell!r}") from None
    if not math.isfinite(x):
        raise InputError(f"{where}: must be a finite number, got {cell!r}")
    return x


def _check(column: str, x: float, where: str) -> None:
    """The value's range, as the planner checks it, named by the table's row and column."""
    try:
        if column == "activity_mCi":
            Prescription(activity_mCi_range=(x, x))
        elif column == "lesion_diameter_mm":
            if x <= 0:
                raise InputError(f"must be > 0 mm, got {x:g}")
        else:
            Prescription(**{column: x})
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def read_sweep(source: Any, case_name: str) -> tuple[tuple[str, ...], list[tuple[str, dict[str, float]]]]:
    """Read and check a sweep table.

    Parameters
    ----------
    source : path or sequence of mappings
        A CSV file (header row, one variant per row) or the rows as ``{column: value}``.  Columns
        (:data:`SWEEP_COLUMNS`): ``name`` (the variant's folder name), ``activity_mCi`` (a fixed seed
        activity), ``lesion_diameter_mm`` (phantom cases), and the numbers of the prescription
        (:data:`PRESCRIPTION_COLUMNS`: ``dose_Gy``, ``seed_spacing_mm``...); an empty cell keeps the case's value.
    case_name : str
        The case's folder name, for the default variant names ``<case>_001``...

    Returns
    -------
    (columns, variants)
        The parameter columns (table order, without ``name``) and, per row, its folder name and its
        parameters ``{column: value}`` (empty cells left out).

    Raises
    ------
    InputError
        An unknown column, no parameter column, no row, a cell that is not a number or is out of range, a
        name that is not a folder name or is given twice; the message names the table, row and column.
    """
    where, rows = _rows(source)
    if not rows:
        raise InputError(f"sweep table {where}: no rows; give a header and one row per variant")
    columns: list[str] = []
    for _, row in rows:
        columns += [c for c in row if c not in columns]
    unknown = [c for c in columns if c not in SWEEP_COLUMNS]
    if unknown:
        raise InputError(f"sweep table {where}: unknown column {unknown[0]!r}; valid columns: "
                         f"{', '.join(SWEEP_COLUMNS)}")
    params = tuple(c for c in columns if c != "name")
    if not params:
        raise InputError(f"sweep table {where}: no parameter column; give one or more of "
                         f"{', '.join(SWEEP_COLUMNS[1:])}")
    out: list[tuple[str, dict[str, float]]] = []
    seen: dict[str, int] = {}
    for k, (line, row) in enumerate(rows, start=1):
        at = f"sweep table {where}, row {k}" + (f" (line {line})" if where != "sweep rows" else "")
        values = {}
        for c in params:
            x = _number(row.get(c), f"{at}, column {c!r}")
            if x is not None:
                _check(c, x, f"{at}, column {c!r}")
                values[c] = x
        raw = row.get("name")
        name = str(raw).strip() if raw is not None else ""
        if not name:
            name = f"{case_name}_{k:03d}"
        elif not _NAME.match(name):
            raise InputError(f"{at}, column 'name': {name!r} is not a folder name; use letters, digits, '.', '_' "
                             "and '-' (at most 100, not starting with '.' or '-')")
        if name in seen:
            raise InputError(f"{at}, column 'name': {name!r} is already the name of row {seen[name]}; every "
                             "variant needs a name of its own")
        seen[name] = k
        out.append((name, values))
    return params, out


def variant_prescription(prescription: Prescription, variant: Mapping[str, float]) -> Prescription:
    """The case's prescription with the variant's numbers (``activity_mCi``: a fixed seed activity)."""
    kw: dict[str, Any] = {c: x for c, x in variant.items() if c in PRESCRIPTION_COLUMNS}
    if "activity_mCi" in variant:
        kw["activity_mCi_range"] = (variant["activity_mCi"], variant["activity_mCi"])
    return replace(prescription, **kw) if kw else prescription


# ---------------------------------------------------------------------------------- phantom cases
def phantom_recipe(case_file: Path) -> dict[str, Any]:
    """The :func:`~seedplan.imaging.make_spine_phantom` arguments that rebuild a phantom case's phantom.

    Read from the ``phantom.json`` beside the case file and checked: the phantom built again from them
    must have the CT recorded there (same voxels), so that a variant differs by its lesion only.

    Raises
    ------
    InputError
        The case is not a phantom case, or its phantom was made with options ``phantom.json`` does not
        record (a lesion offset, noise, one lesion per level).
    """
    from ..imaging.phantom import make_spine_phantom

    column = "sweep column 'lesion_diameter_mm'"
    info_path = case_file.parent / "phantom.json"
    if not info_path.is_file():
        raise InputError(f"{column}: {case_file} is not a phantom case (no phantom.json beside it, as `seedplan "
                         "phantom` writes); only a phantom's lesion can be resized: vary dose_Gy or activity_mCi, "
                         "or list one case file per lesion")
    info = read_json(info_path, "phantom description")
    lacks = InputError(f"{column}: {info_path} lacks level, spacing_mm, lesion_type, lesion_diameter_mm or "
                       "ct_sha256; write the phantom again with `seedplan phantom`")
    if not isinstance(info, dict):
        raise lacks
    try:
        spacing = [float(s) for s in info["spacing_mm"]]
        recipe = {"level": str(info["level"]), "spacing_mm": spacing[0], "lesion_type": str(info["lesion_type"]),
                  "posterior_breach": bool(info["posterior_breach"])}
        diameter, digest = float(info["lesion_diameter_mm"]), str(info["ct_sha256"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise lacks from None
    if len(set(spacing)) == 1:
        for thoracic in (False, True):
            try:
                phantom = make_spine_phantom(**recipe, lesion_diameter_mm=diameter, include_thoracic=thoracic)
            except InputError:
                continue
            if phantom.ct.content_sha256 == digest:
                return {**recipe, "include_thoracic": thoracic}
    raise InputError(f"{column}: the phantom of {case_file} cannot be built again from {info_path.name} (it was made "
                     "with an option the file does not record: anisotropic voxels, a lesion offset, noise or one "
                     "lesion per level); write one phantom per diameter with `seedplan phantom "
                     "--lesion-diameter-mm` and list their case files instead")


def write_variant_phantom(case_file: Path, recipe: Mapping[str, Any], diameter_mm: float, folder: Path) -> Path:
    """Build the phantom with another lesion diameter and write it as a case folder like the original.

    The new case file is the original one (prescription, planning options, roles...) pointing to the new
    CT and structures.  Returns its path.
    """
    from ..imaging.phantom import make_spine_phantom
    from ..io import write_phantom_case

    phantom = make_spine_phantom(**recipe, lesion_diameter_mm=diameter_mm)
    written = write_phantom_case(phantom, folder)
    data = read_json(case_file, "case file")
    if not isinstance(data, dict):
        raise InputError(f"{case_file}: a case file must be a JSON object")
    data.pop("ct_series_uid", None)
    data.update(ct="ct", structures={"rtstruct": "rtstruct.dcm"},
                name=f"{data.get('name') or case_file.stem} (lesion resized to {diameter_mm:g} mm)")
    presc = data.get("prescription")
    if isinstance(presc, dict) and str(presc.get("seed_model", "")).lower().endswith(".json"):
        presc["seed_model"] = str((case_file.parent / presc["seed_model"]).resolve())  # relative to the original
    return write_text_atomic(written["case"], json.dumps(data, indent=1) + "\n")
