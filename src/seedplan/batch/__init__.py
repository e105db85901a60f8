"""seedplan.batch: many plans as Dask tasks, for a cohort of cases or a parameter sweep of one case.

* :func:`run_batch`: plan case files (or one case over a sweep table of prescription dose, seed
  activity, phantom lesion size...) on a local Dask cluster or an existing one, one output folder per
  case, ``summary.csv``, resuming where an earlier run stopped;
* :class:`BatchResult`: its rows and the summary's path;
* :func:`read_sweep`: read and check a sweep table (:data:`SWEEP_COLUMNS`).

Command line: ``seedplan batch CASE [CASE ...] --out DIR [--sweep TABLE.csv] [--workers N | --scheduler
ADDRESS]``.
"""

from ._run import COLUMNS, RECORD, SUMMARY, BatchResult, run_batch
from ._sweep import PRESCRIPTION_COLUMNS, SWEEP_COLUMNS, read_sweep

__all__ = ["run_batch", "BatchResult", "read_sweep", "COLUMNS", "SWEEP_COLUMNS", "PRESCRIPTION_COLUMNS",
           "SUMMARY", "RECORD"]
