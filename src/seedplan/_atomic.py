"""Write files and folders so that nothing is ever half-written.

Files
-----
Every writer in seedplan goes through :func:`atomic_path`: the content is
written to a hidden temporary file in the destination folder and renamed over
the destination only when writing succeeded.  A failed run leaves any previous
file untouched, and the temporary file is removed on any exception,
``KeyboardInterrupt`` (SIGINT) or SIGTERM.  New files get the usual mode
``0o666 & ~umask`` (0644 under the common umask 022), not 0600.

Output folders
--------------
A command that writes an output folder puts ONE ``with`` around the whole
write and gives every writer a path inside the staging folder::

    from seedplan._atomic import atomic_folder

    with atomic_folder(out) as staging:            # locks `out`, stages a hidden sibling
        save_plan(plan, staging / "plan.json")
        write_volume(grid, dose, staging / "dose.nrrd")
        export_plan_dicom(plan, staging / "dicom", ...)
    # here `out` holds the new folder, complete; after any failure it is the earlier one, byte for byte

A command that only adds or replaces some files beside others (``seedplan
dose`` writing ``dose.nrrd`` and ``metrics.json`` beside a plan) passes
``update=True``: the staging folder starts as a copy of the existing folder
(hard links, so it is cheap) and the whole folder is still swapped at the end::

    with atomic_folder(plan_dir, update=True) as staging:
        write_volume(grid, dose, staging / "dose.nrrd")

Rules for the code inside the ``with``:

* Write only below ``staging``.  ``out`` is the earlier folder until the
  ``with`` ends; anything written there directly is lost or mixed.
* Paths returned by writers point into ``staging``, which is renamed at the
  end.  Map them with ``out / p.relative_to(staging)`` before printing them or
  storing them in a file (a plan's case reference, a case file's CT path).
* With ``update=True`` the files in ``staging`` are hard links to the files of
  the earlier folder: replace them (:func:`atomic_path`,
  :func:`write_text_atomic`, or unlink first), never open an existing one for
  writing in place, or the earlier folder changes too.  Pass ``link=False``
  for real copies.  Temporary files left in the earlier folder by killed
  writers (``.NAME.XXXXXXXX.tmp*``) are not copied.
* Without ``update`` the new folder replaces the earlier one as a whole: files
  of the earlier folder that the run does not write are gone afterwards.

What happens when
-----------------
``atomic_folder(path)`` works with three hidden siblings of ``path`` (same
parent, so every rename stays on one file system):

* ``.NAME.seedplan-lock`` - the lock file (``fcntl.flock``), removed at the end;
* ``.NAME.seedplan-new-XXXXXXXXXXXX`` - the staging folder;
* ``.NAME.seedplan-old-XXXXXXXXXXXX`` - the earlier folder, set aside during the
  swap when the file system cannot exchange two folders in one step.

==========================================  ==================================================
event                                       result
==========================================  ==================================================
the ``with`` body returns                   ``path`` is the new folder; the earlier one is gone
any exception in the body (disk full...)    staging removed, ``path`` byte-identical, the
                                            exception propagates unchanged
SIGINT                                      ``KeyboardInterrupt``: as above
SIGTERM, SIGHUP                             :class:`Terminated` (a ``SystemExit`` with status
                                            128 + signal): as above; uncaught, the process
                                            exits quietly with status 143 (SIGTERM)
SIGINT / SIGTERM during the swap            deferred until the swap is done: ``path`` is the
                                            complete new folder, then the exception is raised
a second run into the same folder           :class:`~seedplan.errors.OutputBusyError` at once
SIGKILL while writing                       ``path`` untouched; the staging folder and the lock
                                            file stay hidden until the next run removes them
SIGKILL, power loss inside the swap         see below
==========================================  ==================================================

The swap.  On Linux the staging folder and ``path`` are exchanged in one
``renameat2(RENAME_EXCHANGE)`` call: ``path`` is never missing, and a crash
leaves either the earlier or the new folder at ``path`` plus a hidden sibling
holding the other.  Elsewhere (or on file systems without the exchange, e.g.
NFS) ``path`` is renamed to ``.NAME.seedplan-old-*`` and the staging folder is
renamed to ``path``: two consecutive renames, so ``path`` is missing for the
time of one rename (microseconds).  A crash exactly there leaves ``path``
missing, the earlier folder complete in ``.NAME.seedplan-old-*`` and the new
one complete in ``.NAME.seedplan-new-*``.  Every later
:func:`atomic_folder` on ``path`` (or :func:`recover_folder`) first takes the
lock and then recovers: when ``path`` is missing it renames the set-aside
earlier folder back to ``path`` (the crashed run never reported success);
every other hidden sibling of a dead run is removed.  By hand: rename
``.NAME.seedplan-old-*`` back to ``NAME``.  With ``fsync=True`` (the default)
every file and folder of the staging folder is flushed to disk before the
swap, so a power loss after the swap cannot leave empty files in place of the
earlier folder.

Locking and platforms
---------------------
The lock is ``fcntl.flock`` on ``.NAME.seedplan-lock`` beside the folder, taken
without waiting.  The kernel releases it when its process dies, so a lock file
left by a killed run never blocks; the next run takes it over and removes it.
A symbolic link given as ``path`` is resolved: the folder it points to is
replaced and the link keeps pointing to it.  On network file systems the lock
is as good as the file system's lock support; where ``flock`` is not supported
(``ENOLCK``...) a warning is logged and the run goes on unlocked.  Without
``fcntl`` (Windows) there is no lock: two runs into one folder still each
swap in a complete folder, the last one wins; and renaming a folder fails
while another program has a file in it open (the run then fails and the
earlier folder stays).  SIGTERM/SIGHUP handling needs the main thread: in
other threads the signal handlers are left alone (a signal then acts as it
would without seedplan).  The parent folder of ``path`` must be writable.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import sys
import threading
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any, Callable, Iterator

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_log = logging.getLogger("seedplan")

__all__ = [
    "Terminated",
    "atomic_folder",
    "atomic_path",
    "read_json",
    "recover_folder",
    "write_bytes_atomic",
    "write_text_atomic",
]


# ============================================================================ signals
class Terminated(SystemExit):
    """SIGTERM (or SIGHUP) arrived while an atomic file or folder was being written.

    Raised in the main thread so that every ``finally`` and ``with`` cleans up.
    A ``SystemExit`` with the conventional status ``128 + signal`` (143 for
    SIGTERM): uncaught, it ends the process quietly with that status; it is not
    caught by ``except Exception``.

    Attributes
    ----------
    signum : int
        The signal number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    def __str__(self) -> str:
        return f"terminated by signal {self.signum}"


_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)

# Main-thread state of the signal guard: nesting depth, the handlers it replaced,
# how many critical sections are open (signals are deferred) and the deferred signals.
_sig = SimpleNamespace(depth=0, previous={}, deferring=0, pending=[])


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _deliver(signum: int, frame: FrameType | None, previous: dict[int, Any]) -> None:
    """Act on a signal as the program would have without the guard, but as an exception."""
    prev = previous.get(signum)
    if callable(prev):  # the program's own handler (for SIGINT usually default_int_handler)
        prev(signum, frame)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _sig.deferring:
        _sig.pending.append(signum)
        return
    _deliver(signum, frame, _sig.previous)


@contextlib.contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    """While open (main thread only), SIGINT, SIGTERM and SIGHUP raise exceptions instead of killing.

    SIGTERM and SIGHUP with their default action become :class:`Terminated`;
    SIGINT raises ``KeyboardInterrupt`` (or calls the program's own handler).
    Ignored signals stay ignored.  Nested uses share the outermost guard; the
    previous handlers are restored when the outermost one closes.
    """
    if not _in_main_thread():
        yield
        return
    if _sig.depth == 0:
        _sig.deferring += 1  # no delivery while the handlers change
        try:
            for signum in _SIGNALS:
                prev = signal.getsignal(signum)
                if prev is signal.SIG_IGN or prev is None:  # ignored, or a handler we cannot restore
                    continue
                _sig.previous[signum] = prev
                signal.signal(signum, _on_signal)
        finally:
            _sig.deferring -= 1
    _sig.depth += 1
    try:
        yield
    finally:
        _sig.depth -= 1
        if _sig.depth == 0:
            _sig.deferring += 1
            previous = dict(_sig.previous)
            for signum, prev in previous.items():
                signal.signal(signum, prev)
            _sig.previous.clear()
            pending, _sig.pending[:] = list(_sig.pending), []
            _sig.deferring -= 1
            if pending:
                _deliver(pending[0], None, previous)


class _Shield:
    """A critical section: SIGINT/SIGTERM arriving inside are acted on when it closes.

    Only effective inside :func:`_signals_as_exceptions` in the main thread.
    """

    def __enter__(self) -> None:
        self._active = _in_main_thread()
        if self._active:
            _sig.deferring += 1

    def __exit__(self, *exc: object) -> bool:
        if self._active:
            _sig.deferring -= 1
            if _sig.deferring == 0 and _sig.pending:
                signum = _sig.pending[0]
                _sig.pending.clear()
                _deliver(signum, None, _sig.previous)
        return False


# ============================================================================= files
_TMP_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
              | getattr(os, "O_BINARY", 0))


def _create_temp_file(folder: Path, prefix: str, suffix: str) -> Path:
    """Create an empty file with a fresh random name, mode ``0o666 & ~umask`` (unlike mkstemp's 0600)."""
    for _ in range(100):
        candidate = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(candidate, _TMP_FLAGS, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(folder))


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        _log.warning("could not remove the temporary file %s: %s", path, exc.strerror or exc)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary file is hidden (``.NAME.XXXXXXXX.tmp<suffix>``), created with
    mode ``0o666 & ~umask`` and removed on any exception, ``KeyboardInterrupt``
    or SIGTERM (turned into :class:`Terminated` while the block is open, in the
    main thread).

    Parameters
    ----------
    path : path-like
        Final destination.  Its folder is created if needed.
    suffix : str, optional
        Suffix of the temporary file (some writers pick the format from it).
        Defaults to the destination's full suffix (``.nii.gz`` stays whole).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(dest.suffixes)
    tmp_path: Path | None = None
    with _signals_as_exceptions():
        try:
            with _Shield():  # a signal deferred here is raised on leaving, inside the try
                tmp_path = _create_temp_file(dest.parent, f".{dest.name}.", f".tmp{suffix}")
            yield tmp_path
            os.replace(tmp_path, dest)
        except BaseException:
            if tmp_path is not None:
                with _Shield():
                    _unlink_quietly(tmp_path)
            raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


# =========================================================================== folders
_HEX = 12  # random hex digits in the names of staging and set-aside folders
# Files left by atomic_path (and by the mkstemp-based versions before it) when a process was killed.
_STRAY_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\..*)?$")


def _stem(name: str) -> str:
    """The folder name as used in its siblings' names (shortened so they stay under NAME_MAX)."""
    if len(name) <= 180:
        return name
    return f"{name[:150]}~{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"


def _lock_path(dest: Path) -> Path:
    return dest.parent / f".{_stem(dest.name)}.seedplan-lock"


def _sibling_pattern(dest: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(_stem(dest.name))}\.seedplan-(new|old)-[0-9a-f]{{{_HEX}}}$")


def _make_sibling_dir(dest: Path, kind: str) -> Path:
    """Create an empty hidden sibling folder ``.NAME.seedplan-<kind>-<hex>`` (mode ``0o777 & ~umask``)."""
    for _ in range(100):
        candidate = dest.parent / f".{_stem(dest.name)}.seedplan-{kind}-{secrets.token_hex(_HEX // 2)}"
        try:
            os.mkdir(candidate, 0o777)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, "no unused staging folder name", str(dest.parent))


def _sibling_name(dest: Path, kind: str) -> Path:
    """A free name for a hidden sibling (not created)."""
    while True:
        candidate = dest.parent / f".{_stem(dest.name)}.seedplan-{kind}-{secrets.token_hex(_HEX // 2)}"
        if not os.path.lexists(candidate):
            return candidate


def _remove_tree(path: Path) -> None:
    """Remove a folder of ours; log (do not raise) when something cannot be removed."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        _unlink_quietly(path)
        return
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        _log.warning("could not remove %s completely; the next seedplan run into this folder removes it", path)


class _FolderLock:
    """An exclusive, non-waiting ``flock`` on ``.NAME.seedplan-lock`` beside a folder."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.path = _lock_path(dest)
        self.fd: int | None = None

    def _holder(self) -> str:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            return ""
        if len(text) >= 2:
            return f" (pid {text[0]} on {text[1]})"
        return f" (pid {text[0]})" if text else ""

    def acquire(self) -> None:
        from .errors import OutputBusyError

        if fcntl is None:  # pragma: no cover - Windows
            return
        flags = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | flags, 0o666)
            except PermissionError:  # a lock file left by another user: flock works on a read-only file
                fd = os.open(self.path, os.O_RDONLY | flags)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputBusyError(
                    f"{self.dest}: another seedplan run{self._holder()} is writing this folder; "
                    "wait for it to finish or choose another output folder"
                ) from None
            except OSError as exc:  # no lock support on this file system
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                _log.warning("cannot lock %s (%s); writing %s without a lock",
                             self.path, exc.strerror or exc, self.dest)
                return
            # The file may have been removed (and maybe re-created) by its previous holder
            # between our open and our flock: then we hold a lock nobody else sees; retry.
            try:
                st_path = os.stat(self.path)
            except FileNotFoundError:
                os.close(fd)
                continue
            st_fd = os.fstat(fd)
            if (st_fd.st_dev, st_fd.st_ino) == (st_path.st_dev, st_path.st_ino):
                break
            os.close(fd)
        self.fd = fd
        with contextlib.suppress(OSError):  # who holds it, for the busy message
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):  # unlink while holding the lock, then release
            os.unlink(self.path)
        os.close(fd)


def _recover(dest: Path) -> None:
    """Clean up after dead runs (call with the lock held); restore an earlier folder set aside by a crash."""
    pattern = _sibling_pattern(dest)
    try:
        names = os.listdir(dest.parent)
    except FileNotFoundError:
        return
    left = [(m.group(1), dest.parent / n) for n in names if (m := pattern.match(n))]
    if not left:
        return
    olds = sorted((p for kind, p in left if kind == "old"), key=lambda p: os.lstat(p).st_ctime)
    rest = [p for kind, p in left if kind == "new"]
    if olds and not os.path.lexists(dest):
        earlier = olds.pop()
        os.rename(earlier, dest)
        _log.warning("%s: restored the earlier folder set aside by an interrupted seedplan run", dest)
    for p in olds + rest:
        _log.info("removing %s, left by an interrupted seedplan run", p)
        _remove_tree(p)


def recover_folder(path: str | os.PathLike[str]) -> bool:
    """Bring ``path`` back to a clean state after a seedplan run was killed while writing it.

    Restores the earlier folder when a crash inside the swap left ``path``
    missing, and removes the hidden staging and set-aside folders of dead runs.
    :func:`atomic_folder` does this itself before every write; call this to
    repair a folder you are about to read.

    Parameters
    ----------
    path : path-like
        The output folder.

    Returns
    -------
    bool
        Whether ``path`` exists afterwards.

    Raises
    ------
    seedplan.errors.OutputBusyError
        Another run is writing the folder now.
    """
    dest = Path(os.path.realpath(path))
    if not dest.parent.is_dir():
        return False
    lock = _FolderLock(dest)
    with _signals_as_exceptions():
        try:
            with _Shield():
                lock.acquire()
            _recover(dest)
        finally:
            with _Shield():
                lock.release()
    return dest.exists()


def _populate(src: Path, dst: Path, link: bool) -> None:
    """Fill ``dst`` with a copy of ``src``: hard links where possible, copies otherwise; symlinks as links."""

    def link_or_copy(s: str, d: str) -> str:
        if link:
            try:
                os.link(s, d)
                return d
            except OSError:  # no hard links here (FAT, some SMB shares, protected_hardlinks...)
                pass
        shutil.copy2(s, d)
        return d

    def strays(_folder: str, names: list[str]) -> set[str]:  # temporary files of killed writers
        return {n for n in names if _STRAY_TMP.match(n)}

    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy, ignore=strays, dirs_exist_ok=True)


def _fsync_path(path: str | os.PathLike[str], directory: bool) -> None:
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # folders cannot be opened on some platforms
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if not (directory and exc.errno in (errno.EINVAL, errno.EBADF, errno.EACCES, errno.ENOTSUP)):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every regular file and folder below ``root`` to disk (an I/O error or ENOSPC raises)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(p).st_mode):
                _fsync_path(p, directory=False)
        _fsync_path(folder, directory=True)


# renameat2(2) on Linux: exchange two paths in one step.
_USE_EXCHANGE = True
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.lru_cache(maxsize=None)
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (ImportError, OSError, AttributeError):  # no ctypes, or a libc without renameat2 (old glibc, musl)
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _exchange(a: Path, b: Path) -> bool:
    """Exchange the folders ``a`` and ``b`` atomically; ``False`` when the system cannot."""
    func = _renameat2() if _USE_EXCHANGE else None
    if func is None:
        return False
    import ctypes

    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False  # kernel or file system without RENAME_EXCHANGE: fall back to two renames
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _fsync_parent(dest: Path) -> None:
    """Flush the renames in ``dest``'s parent; the swap is done, so a failure is only logged."""
    try:
        _fsync_path(dest.parent, directory=True)
    except OSError as exc:
        _log.warning("could not flush %s to disk: %s", dest.parent, exc.strerror or exc)


def _swap(staging: Path, dest: Path, fsync: bool) -> None:
    """Put the complete ``staging`` folder at ``dest``; remove the earlier folder (call inside a shield)."""
    if not os.path.lexists(dest):
        os.rename(staging, dest)
        if fsync:
            _fsync_parent(dest)
        return
    if _exchange(staging, dest):
        if fsync:
            _fsync_parent(dest)
        _remove_tree(staging)  # now the earlier folder
        return
    aside = _sibling_name(dest, "old")
    os.rename(dest, aside)
    # `dest` is missing from here to the next rename; a crash here is repaired by _recover.
    try:
        os.rename(staging, dest)
    except BaseException as exc:
        try:
            os.rename(aside, dest)
        except OSError:
            from .errors import FileFormatError

            raise FileFormatError(
                f"{dest}: could not put the new folder in place ({exc}) nor the earlier one back; "
                f"the earlier folder is {aside} (the next seedplan run into {dest} restores it)"
            ) from exc
        raise
    if fsync:
        _fsync_parent(dest)
    _remove_tree(aside)


@contextlib.contextmanager
def atomic_folder(
    path: str | os.PathLike[str],
    *,
    update: bool = False,
    link: bool = True,
    fsync: bool = True,
) -> Iterator[Path]:
    """Write a whole folder all-or-nothing: yield a staging folder that replaces ``path`` on success.

    Takes the folder's lock (a second run fails at once), cleans up after
    runs that were killed, creates a hidden staging folder beside ``path`` and
    yields it.  When the ``with`` body returns, the staging folder replaces
    ``path`` as a whole (see the module documentation for the swap and what a
    crash inside it leaves).  On any exception, ``KeyboardInterrupt``, SIGTERM
    or SIGHUP (the latter two raised as :class:`Terminated` in the main thread)
    the staging folder is removed and ``path`` is left exactly as it was.

    Parameters
    ----------
    path : path-like
        The output folder.  Its parent is created if needed; a symbolic link
        is followed (the folder it points to is replaced).
    update : bool
        Start the staging folder as a copy of the existing folder (if any), for
        commands that add or replace a few files: the files not written are
        kept.  Files in the copy are hard links: replace them, never rewrite
        them in place (see ``link``).
    link : bool
        With ``update``, hard-link the existing files (fast; falls back to
        copying where hard links are impossible).  ``False`` copies them.
    fsync : bool
        Flush the new folder to disk before the swap, so that a power loss
        cannot leave empty files where the earlier folder was.

    Yields
    ------
    pathlib.Path
        The staging folder (absolute).  Write everything below it; map paths to
        the final folder with ``path / p.relative_to(staging)``.

    Raises
    ------
    seedplan.errors.OutputBusyError
        Another seedplan run is writing ``path``.
    seedplan.errors.FileFormatError
        ``path`` exists and is not a folder.
    OSError
        The parent cannot be written, the disk is full...; ``path`` is unchanged.

    Notes
    -----
    The new folder keeps the permission bits of the folder it replaces; a new
    folder gets ``0o777 & ~umask``.  If the process's working folder is
    ``path`` (or inside it), it still refers to the earlier, removed folder
    afterwards.
    """
    from .errors import FileFormatError

    dest = Path(os.path.realpath(path))
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = _FolderLock(dest)
    staging: Path | None = None
    with _signals_as_exceptions():
        try:
            with _Shield():  # a signal deferred in a shield is raised on leaving it, inside the try
                lock.acquire()
            _recover(dest)
            if os.path.lexists(dest) and not dest.is_dir():
                raise FileFormatError(f"{dest} exists and is not a folder; cannot write an output folder there")
            try:
                with _Shield():
                    staging = _make_sibling_dir(dest, "new")
                if dest.is_dir():
                    if update:
                        _populate(dest, staging, link)
                    os.chmod(staging, stat.S_IMODE(os.stat(dest).st_mode))
                yield staging
                if fsync:
                    _fsync_tree(staging)
                with _Shield():
                    _swap(staging, dest, fsync)
            except BaseException:
                if staging is not None:
                    with _Shield():
                        _remove_tree(staging)
                raise
        finally:
            with _Shield():
                lock.release()


def read_json(path: str | os.PathLike[str], what: str, invalid: type[Exception] | None = None) -> object:
    """Read a JSON file, raising seedplan errors that name the file.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for the message ("plan file", "case file"...).
    invalid : exception class, optional
        Raised when the text is not JSON (default :class:`~seedplan.errors.FileFormatError`).
    """
    import json

    from .errors import FileFormatError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileFormatError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise (invalid or FileFormatError)(f"{p}: not a text (UTF-8 JSON) {what}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise (invalid or FileFormatError)(
            f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}); the {what} is corrupt or was edited by hand"
        ) from None
