"""One call in a forked child process while the caller goes on: two independent outputs on two cores.

``seedplan demo`` and ``seedplan plan`` render the 3D views (VTK, ~2 s) in a child process while the
parent exports DICOM and draws the slice figures (~2 s); each process is single-threaded, so on a machine
with two cores the output step takes the time of the longer of the two::

    with forked_call(render_views, plan, ct, ...) as views:
        export_plan_dicom(...)
        ...
        paths = views.result()      # the child's return value

The child is a ``fork`` of the caller (no re-import, no pickling of the arguments); it sends back its
return value pickled through a pipe and leaves with ``os._exit`` (no interpreter teardown, no flushing of
the parent's buffers).  The call runs in the caller instead (in :meth:`ForkedCall.result`) when forking is
not safe or not useful:

* not on Linux (macOS system frameworks are not fork-safe), or fewer than two usable cores;
* the caller has other Python threads (a Dask worker, a notebook kernel...): a lock one of them holds
  would stay locked in the child;
* one of ``avoid_modules`` is already imported in the caller (libraries with thread pools or graphics
  contexts of their own, e.g. VTK: the child must initialise them itself);
* :data:`ENABLED` is False.

A child that fails in any way (an exception, a signal, an unreadable answer) is not trusted further: the
call is run again in the caller, which raises the same exception as a serial run would.  Leaving the
``with`` block without :meth:`~ForkedCall.result` (an exception in the caller) kills the child.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["ENABLED", "ForkedCall", "fork_possible", "forked_call"]

log = logging.getLogger("seedplan")

#: Whether :func:`forked_call` may fork at all (tests switch it off to compare with the serial run).
ENABLED = True
#: Seconds the caller waits for the child's answer before it kills the child and runs the call itself.
TIMEOUT_S = 300.0

_UNSET = object()


def fork_possible(avoid_modules: Sequence[str] = ()) -> bool:
    """True when a child process can be forked safely and usefully here (see the module documentation)."""
    if not ENABLED or not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - Linux has it
        cores = os.cpu_count() or 1
    if cores < 2 or threading.active_count() > 1:
        return False
    return not any(m in sys.modules for m in avoid_modules)


class ForkedCall:
    """``fn(*args, **kwargs)`` started in a forked child (or deferred to :meth:`result`); see :func:`forked_call`."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 avoid_modules: Sequence[str] = ()) -> None:
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._pid: int | None = None
        self._read_fd: int | None = None
        self._value: Any = _UNSET
        #: Whether the call was started in a child process.
        self.forked = False
        if fork_possible(avoid_modules):
            self._start()

    def _start(self) -> None:
        for stream in (sys.stdout, sys.stderr):  # nothing buffered twice
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        r, w = os.pipe()
        try:
            with warnings.catch_warnings():  # Python >= 3.12 warns about the idle BLAS / numba threads
                warnings.filterwarnings("ignore", r".*fork\(\) may lead to deadlocks", DeprecationWarning)
                pid = os.fork()
        except OSError as exc:  # no memory, process limit: run in the caller
            os.close(r)
            os.close(w)
            log.debug("cannot fork (%s); %s runs in this process", exc, getattr(self._fn, "__name__", "the call"))
            return
        if pid == 0:  # the child: run, answer, leave without the interpreter's teardown
            code = 1
            try:
                os.close(r)
                try:
                    payload = pickle.dumps((True, self._fn(*self._args, **self._kwargs)))
                    code = 0
                except BaseException as exc:  # noqa: BLE001 - reported to the parent, which runs the call again
                    payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
                with os.fdopen(w, "wb") as pipe:
                    pipe.write(payload)
            finally:
                os._exit(code)
        os.close(w)
        self._pid, self._read_fd, self.forked = pid, r, True

    def result(self) -> Any:
        """The call's return value: the child's answer, else the call run here (its exception propagates)."""
        if self._value is not _UNSET:
            return self._value
        if self._pid is not None:
            answer = self._collect()
            if answer is not None and answer[0]:
                self._value = answer[1]
                return self._value
            log.debug("the child process of %s failed (%s); running it in this process",
                      getattr(self._fn, "__name__", "the call"), "no answer" if answer is None else answer[1])
        self._value = self._fn(*self._args, **self._kwargs)
        return self._value

    def _collect(self) -> tuple[bool, Any] | None:
        """Read the child's answer and reap it; None when it died without a valid one."""
        assert self._pid is not None and self._read_fd is not None
        import select
        import time

        chunks: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while True:  # until the child closes its end, or the deadline (a child stuck on a lock it inherited)
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._read_fd], [], [], left)[0]:
                    log.debug("the child process of %s gave no answer in %g s; killed",
                              getattr(self._fn, "__name__", "the call"), TIMEOUT_S)
                    self.cancel()
                    return None
                chunk = os.read(self._read_fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        except BaseException:  # interrupted while waiting (SIGINT, SIGTERM): the child goes too
            self.cancel()
            raise
        os.close(self._read_fd)
        self._read_fd = None
        data = b"".join(chunks)
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        if not (os.WIFEXITED(status) and data):
            return None
        try:
            answer = pickle.loads(data)
        except Exception:  # noqa: BLE001 - a truncated or garbled answer: the call is run again
            return None
        return answer if isinstance(answer, tuple) and len(answer) == 2 else None

    def cancel(self) -> None:
        """Kill a child that is still running and reap it (the caller failed: its answer is not wanted)."""
        if self._read_fd is not None:
            os.close(self._read_fd)
            self._read_fd = None
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - already gone
                pass
            os.waitpid(self._pid, 0)
            self._pid = None


@contextmanager
def forked_call(fn: Callable[..., Any], *args: Any, avoid_modules: Sequence[str] = (),
                **kwargs: Any) -> Iterator[ForkedCall]:
    """Start ``fn(*args, **kwargs)`` in a forked child process; get its return value with ``.result()``.

    Parameters
    ----------
    fn : callable
        Runs in the child (or in the caller, see the module documentation); its return value must pickle.
        It may run twice (in the child, then in the caller after a failure of the child): it must write its
        files atomically or idempotently.
    *args, **kwargs
        Its arguments (inherited by the child, not pickled).
    avoid_modules : sequence of str
        Do not fork when one of these modules is already imported here.

    Yields
    ------
    ForkedCall
        ``.result()`` waits for the child and returns the value (or runs the call here).  Leaving the block
        without it, by an exception or not, kills the child.
    """
    call = ForkedCall(fn, args, kwargs, avoid_modules)
    try:
        yield call
    finally:
        call.cancel()
