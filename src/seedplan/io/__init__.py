"""seedplan.io: what goes in and out of files: case files, plans, the plan table, volumes, the report, DICOM.

* case files: :func:`load_case`, :func:`write_case_file`, :func:`load_plan_case`,
  :func:`write_phantom_case`;
* plans: :func:`save_plan`, :func:`load_plan` (from :mod:`seedplan.plan`);
* the plan table: :func:`write_plan_table_csv`, :func:`write_plan_summary`, :func:`format_plan_table`;
* volumes (NRRD, NIfTI...): :func:`write_volume`, :func:`read_volume`;
* the report: :func:`write_report`, :func:`write_plan_report`;
* DICOM (CT series, RTSTRUCT, RTPLAN, RTDOSE): :mod:`seedplan.io.dicom`, e.g. :func:`export_plan_dicom`.
"""

from ..plan import load_plan, save_plan
from .case import Case, load_case, load_plan_case, write_case_file, write_phantom_case
from .dicom import export_plan_dicom, write_ct_dicom_series, write_rtstruct
from .plan_table import format_plan_table, plan_table_rows, write_plan_summary, write_plan_table_csv
from .report import report_html, write_plan_report, write_report
from .volumes import read_volume, write_volume

__all__ = [
    "Case",
    "load_case",
    "write_case_file",
    "load_plan_case",
    "write_phantom_case",
    "save_plan",
    "load_plan",
    "format_plan_table",
    "plan_table_rows",
    "write_plan_table_csv",
    "write_plan_summary",
    "read_volume",
    "write_volume",
    "report_html",
    "write_report",
    "write_plan_report",
    "export_plan_dicom",
    "write_ct_dicom_series",
    "write_rtstruct",
]
