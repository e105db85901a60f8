"""The Dask client of the commands that run on a cluster (``robustness``, ``batch``).

Without a scheduler address :func:`open_client` starts a
:class:`distributed.LocalCluster` of process workers with one thread each
(OpenMP and BLAS limited to one thread per worker by :data:`WORKER_ENV`; a
task limits numba itself); with one it connects to that cluster (any
deployment: ``dask scheduler`` + ``dask worker``, dask-jobqueue on SLURM or
PBS, Kubernetes...), whose workers must be able to import seedplan.
Dask is imported only when a client is opened.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from . import _validate as v
from .errors import InputError

__all__ = ["WORKER_ENV", "QuietDask", "cluster_arguments", "default_workers", "open_client"]

#: Environment of the local cluster's worker processes: one thread for OpenMP and BLAS.  Numba is limited
#: to one thread per task with ``numba.set_num_threads(1)`` (thread-local) rather than NUMBA_NUM_THREADS:
#: the nanny sets its environment after the worker has imported numba, and numba refuses to compile once
#: the variable and its running thread pool disagree.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def default_workers() -> int:
    """Workers of a local cluster by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cluster_arguments(workers: Any, scheduler: Any, client: Any) -> tuple[int | None, str | None]:
    """Where to run, checked once: at most one of ``workers`` (a local cluster of that many), ``scheduler``
    (an address) and ``client``; returns the validated ``(workers, scheduler)``."""
    if sum(x is not None for x in (workers, scheduler, client)) > 1:
        raise InputError("give at most one of workers (a local cluster), scheduler (an address) and client")
    return (None if workers is None else v.integer(workers, "workers", lo=1, hi=512),
            None if scheduler is None else v.text(scheduler, "scheduler"))


def open_client(workers: int | None, scheduler: str | None, processes: bool) -> tuple[Any, Any]:
    """A Dask client and the local cluster it started (None when connecting to ``scheduler``)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"scheduler {scheduler!r}: no Dask scheduler answered ({exc}); give the address of "
                             "a running scheduler, e.g. tcp://127.0.0.1:8786, or no address for a local cluster") from None
        return client, None
    n = workers if workers is not None else default_workers()
    kwargs: dict[str, Any] = {"env": dict(WORKER_ENV)} if processes else {}
    # the scheduler's HTTP server on a free local port (with no address it tries 8787 and warns when taken)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes, dashboard_address="127.0.0.1:0",
                           silence_logs=logging.ERROR, **kwargs)
    try:
        return Client(cluster), cluster
    except BaseException:
        cluster.close()
        raise


class QuietDask:
    """Keep the in-process Dask loggers (scheduler, thread workers) to errors while a cluster of ours runs."""

    def __enter__(self) -> None:
        import distributed  # noqa: F401  (its import sets the level this context overrides)

        self.logger = logging.getLogger("distributed")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)
