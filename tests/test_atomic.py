"""All-or-nothing output folders and clean files (seedplan._atomic).

Each failure measured in the hostile-user test has a test here: SIGINT and
SIGTERM at several points of a run (subprocesses), a crash inside the swap,
a full disk, an exception half-way, two runs into one folder, file modes
under the umask, and the add/replace mode.  The fake output folder is the
shape of a real one (plan, table, volumes, PNGs, report, dicom/, case/ct/).
"""

from __future__ import annotations

import errno
import hashlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import seedplan
from seedplan import _atomic
from seedplan._atomic import (
    Terminated,
    atomic_folder,
    atomic_path,
    recover_folder,
    write_bytes_atomic,
    write_text_atomic,
)
from seedplan.errors import FileFormatError, OutputBusyError, SeedplanError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals, flock and modes are POSIX")

NAMES = [
    "plan.json", "plan_table.csv", "dose.nrrd", "metrics.json", "dvh.csv", "cement.nrrd",
    "view3d_left.png", "view3d_oblique.png", "slice_axial.png", "slice_sagittal.png",
    "case/case.json", "case/ct/CT_0001.dcm", "case/ct/CT_0002.dcm", "case/ct/CT_0003.dcm", "case/rtstruct.dcm",
    "dicom/RTPLAN.dcm", "dicom/RTDOSE.dcm", "dicom/RTSTRUCT.dcm", "dvh.png", "report.html",
]
IN_FILE = 12  # index of the file written through atomic_path where the "in-file" pause happens


def content(tag: str, name: str) -> bytes:
    """What run ``tag`` writes in ``name``: tells the runs apart, a few kB each."""
    return (f"{tag} {name}\n" * (60 + 9 * len(name))).encode()


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry below ``folder`` (hidden ones too): sha256 and mode of files, mode of folders."""
    snap = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            p = Path(root, d)
            snap[str(p.relative_to(folder)) + "/"] = oct(p.lstat().st_mode)
        for f in files:
            p = Path(root, f)
            snap[str(p.relative_to(folder))] = f"{hashlib.sha256(p.read_bytes()).hexdigest()} {oct(p.lstat().st_mode)}"
    return snap


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_complete(folder: Path, tag: str) -> None:
    """``folder`` is exactly the output of run ``tag``: every file, nothing else."""
    assert contents(folder) == {n: content(tag, n) for n in NAMES}


def leftovers(work: Path) -> list[str]:
    """Everything in the parent besides the output folder: temporary folders, locks, files."""
    return sorted(n for n in os.listdir(work) if n != "out")


def write_outputs(staging: Path, tag: str, *, fail_after: int | None = None) -> None:
    """Write the fake output folder of run ``tag`` with seedplan's atomic writers."""
    for i, name in enumerate(NAMES):
        if fail_after is not None and i == fail_after:
            raise RuntimeError(f"injected failure after {i} files")
        write_bytes_atomic(staging / name, content(tag, name))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The parent of the output folder; it holds nothing else, so any leftover shows."""
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def earlier(work: Path) -> Path:
    """An earlier output folder, written the plain way (as older seedplan versions did), plus a note."""
    out = work / "out"
    for name in NAMES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content("old", name))
    (out / "notes.txt").write_text("the physicist's notes\n")
    return out


@pytest.fixture
def default_sigterm():
    """SIGTERM with its default action, as in a fresh seedplan process (whatever the test runner set)."""
    saved = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, saved)


@pytest.fixture(params=["exchange", "fallback"])
def swap(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the one-step exchange (Linux) and with the two-rename fallback."""
    if request.param == "fallback":
        monkeypatch.setattr(_atomic, "_USE_EXCHANGE", False)
    return request.param


# --------------------------------------------------------------------- subprocesses
WRITER = textwrap.dedent('''
    """Write a fake seedplan output folder, pausing at a named point until a "go" file appears."""
    import os, sys, time
    from pathlib import Path
    from seedplan import _atomic
    from seedplan._atomic import atomic_folder, atomic_path, write_bytes_atomic
    from seedplan.errors import SeedplanError

    kind, out, tag, pause, swap, ctl = sys.argv[1:7]
    names = sys.argv[7].split(",")
    in_file = int(sys.argv[8])
    go = Path(ctl, "go")

    def content(tag, name):
        return (f"{tag} {name}\\n" * (60 + 9 * len(name))).encode()

    def wait(point):
        if pause != point:
            return
        print(f"at {point}", flush=True)
        deadline = time.monotonic() + 30
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    if swap == "fallback":
        _atomic._USE_EXCHANGE = False
    real_exchange, real_rename = _atomic._exchange, os.rename

    def exchange(a, b):  # inside the swap, before the folders change places
        wait("exchange")
        return real_exchange(a, b)

    def rename(src, dst):  # between "earlier folder aside" and "new folder in place"
        real_rename(src, dst)
        if os.fspath(src) == os.path.realpath(out) and ".seedplan-old-" in os.fspath(dst):
            wait("window")

    _atomic._exchange, os.rename = exchange, rename

    def write_file(path, data):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data[: len(data) // 2])
            wait("in-file")
            tmp.write_bytes(data)

    try:
        if kind == "file":
            write_file(Path(out) / "RTPLAN.dcm", content(tag, "RTPLAN.dcm"))
        else:
            with atomic_folder(out) as staging:
                wait("start")
                for i, name in enumerate(names):
                    if i == len(names) // 2:
                        wait("middle")
                    if i == in_file:
                        write_file(staging / name, content(tag, name))
                    else:
                        write_bytes_atomic(staging / name, content(tag, name))
                wait("end")
    except SeedplanError as exc:  # what the command line does
        print(f"seedplan plan: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print("done", flush=True)
''')


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    script = tmp_path_factory.mktemp("writer") / "writer.py"
    script.write_text(WRITER)
    return script


class Run:
    """A writer subprocess: started, then driven to a pause point, signalled, released."""

    def __init__(self, writer: Path, out: Path, tag: str, *, pause: str = "none", swap: str = "exchange",
                 kind: str = "folder") -> None:
        self.ctl = out.parent.parent / f"ctl-{tag}"
        self.ctl.mkdir(exist_ok=True)
        src = str(Path(seedplan.__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen(
            [sys.executable, str(writer), kind, str(out), tag, pause, swap, str(self.ctl), ",".join(NAMES),
             str(IN_FILE)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        self.seen = b""

    def wait_for(self, point: str, timeout: float = 30.0) -> None:
        marker = f"at {point}\n".encode()
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while marker not in self.seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                self.seen += chunk
        if marker not in self.seen:
            self.proc.kill()
            _out, err = self.proc.communicate()
            pytest.fail(f"the writer never reached {point!r}: {self.seen!r} {err.decode()[-2000:]}")

    def release(self) -> None:
        (self.ctl / "go").touch()

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self.seen + out).decode(), err.decode()


def interrupted_status(sig: int) -> int:
    """Exit status of the writer after ``sig``: KeyboardInterrupt kills with SIGINT, Terminated exits 128+n."""
    return -signal.SIGINT if sig == signal.SIGINT else 128 + sig


# ------------------------------------------------------------ SIGINT / SIGTERM / SIGHUP
@pytest.mark.parametrize("point", ["start", "middle", "in-file", "end"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_writing_leaves_the_earlier_folder_identical(writer, work, earlier, sig, point):
    before = snapshot(earlier)
    run = Run(writer, earlier, "new", pause=point)
    run.wait_for(point)
    run.proc.send_signal(sig)
    status, out, err = run.finish()
    assert status == interrupted_status(sig), err
    assert "done" not in out
    assert snapshot(earlier) == before
    assert leftovers(work) == []  # no staging folder, set-aside folder, lock or *.tmp.* file


def test_sighup_is_handled_like_sigterm(writer, work, earlier):
    before = snapshot(earlier)
    run = Run(writer, earlier, "new", pause="middle")
    run.wait_for("middle")
    run.proc.send_signal(signal.SIGHUP)
    status, _out, err = run.finish()
    assert status == 128 + signal.SIGHUP, err
    assert snapshot(earlier) == before
    assert leftovers(work) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_on_a_first_run_leaves_nothing(writer, work, sig):
    run = Run(writer, work / "out", "new", pause="middle")
    run.wait_for("middle")
    run.proc.send_signal(sig)
    status, _out, err = run.finish()
    assert status == interrupted_status(sig), err
    assert leftovers(work) == [] and not (work / "out").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigterm_inside_a_single_atomic_file_leaves_no_temporary_file(writer, work, sig):
    (work / "out").mkdir()
    (work / "out" / "RTPLAN.dcm").write_bytes(b"earlier plan")
    run = Run(writer, work / "out", "new", pause="in-file", kind="file")
    run.wait_for("in-file")
    run.proc.send_signal(sig)
    status, _out, err = run.finish()
    assert status == interrupted_status(sig), err
    assert os.listdir(work / "out") == ["RTPLAN.dcm"]  # no hidden .RTPLAN.dcm.*.tmp.dcm
    assert (work / "out" / "RTPLAN.dcm").read_bytes() == b"earlier plan"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point, swap_kind", [("exchange", "exchange"), ("window", "fallback")])
def test_signal_during_the_swap_is_deferred_until_the_new_folder_is_in_place(writer, work, earlier, sig, point,
                                                                             swap_kind):
    run = Run(writer, earlier, "new", pause=point, swap=swap_kind)
    run.wait_for(point)
    if point == "window":
        assert not earlier.exists()  # really inside the window of the two-rename swap
    run.proc.send_signal(sig)
    time.sleep(0.2)  # delivered (and deferred) while the swap is paused
    run.release()
    status, out, err = run.finish()
    assert status == interrupted_status(sig), err  # the interruption is reported after the swap
    assert "done" not in out
    assert_complete(earlier, "new")
    assert leftovers(work) == []


@pytest.mark.parametrize("repair", ["recover_folder", "next run"])
def test_sigkill_inside_the_swap_window_is_repaired(writer, work, earlier, repair):
    before = snapshot(earlier)
    run = Run(writer, earlier, "new", pause="window", swap="fallback")
    run.wait_for("window")
    run.proc.kill()
    run.finish()
    # the documented crash state: the folder is missing, both versions complete in hidden siblings
    assert not earlier.exists()
    kinds = sorted(n.split(".seedplan-")[1].split("-")[0] for n in leftovers(work) if n.startswith(".out."))
    assert kinds == ["lock", "new", "old"]
    if repair == "recover_folder":
        assert recover_folder(earlier) is True
        assert snapshot(earlier) == before
    else:
        with atomic_folder(earlier) as staging:
            assert snapshot(earlier) == before  # restored before the next run writes
            write_outputs(staging, "next")
        assert_complete(earlier, "next")
    assert leftovers(work) == []


def test_sigkill_while_writing_leaves_only_hidden_siblings_that_the_next_run_removes(writer, work, earlier):
    before = snapshot(earlier)
    run = Run(writer, earlier, "new", pause="middle")
    run.wait_for("middle")
    run.proc.kill()
    run.finish()
    assert snapshot(earlier) == before
    assert len(leftovers(work)) == 2  # the staging folder and the stale lock file
    with atomic_folder(earlier) as staging:  # the stale lock of the dead run does not block
        write_outputs(staging, "next")
    assert_complete(earlier, "next")
    assert leftovers(work) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("step", ["lock", "staging folder", "temporary file", "swap"])
def test_a_signal_as_a_critical_step_ends_is_raised_after_it_and_cleaned_up(work, earlier, monkeypatch, sig, step,
                                                                           default_sigterm):
    where = {"lock": (_atomic._FolderLock, "acquire"), "staging folder": (_atomic, "_make_sibling_dir"),
             "temporary file": (_atomic, "_create_temp_file"), "swap": (_atomic, "_swap")}
    owner, name = where[step]
    real = getattr(owner, name)

    def interrupted(*args, **kwargs):
        result = real(*args, **kwargs)
        signal.getsignal(sig)(sig, None)  # the signal arrives just as the step ends
        return result

    monkeypatch.setattr(owner, name, interrupted)
    before = snapshot(earlier)
    with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else Terminated):
        with atomic_folder(earlier) as staging:
            write_outputs(staging, "new")
    if step == "swap":
        assert_complete(earlier, "new")  # the swap was done when the signal came
    else:
        assert snapshot(earlier) == before
    assert leftovers(work) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_as_a_single_temporary_file_is_created_leaves_no_file(work, monkeypatch, sig, default_sigterm):
    real = _atomic._create_temp_file

    def interrupted(*args, **kwargs):
        result = real(*args, **kwargs)
        signal.getsignal(sig)(sig, None)
        return result

    monkeypatch.setattr(_atomic, "_create_temp_file", interrupted)
    (work / "plan.json").write_text("earlier")
    with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else Terminated):
        write_text_atomic(work / "plan.json", "new")
    assert os.listdir(work) == ["plan.json"] and (work / "plan.json").read_text() == "earlier"


# ------------------------------------------------------------------ two runs at once
def test_second_run_into_a_busy_folder_fails_at_once_with_one_line(writer, work, earlier):
    first = Run(writer, earlier, "first", pause="middle")
    first.wait_for("middle")
    before = snapshot(earlier)
    started = time.monotonic()
    second = Run(writer, earlier, "second")
    status, out, err = second.finish()
    assert time.monotonic() - started < 15
    assert status == 2 and "done" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(earlier.resolve()) in lines[0] and "another seedplan run" in lines[0]
    assert snapshot(earlier) == before
    first.release()
    status, out, err = first.finish()
    assert status == 0 and "done" in out, err
    assert_complete(earlier, "first")
    assert leftovers(work) == []


def test_busy_error_names_the_folder_and_the_holder(work, earlier):
    with atomic_folder(earlier) as staging:
        with pytest.raises(OutputBusyError) as info:
            with atomic_folder(work / "." / "out"):
                pass
        write_outputs(staging, "new")
    message = str(info.value)
    assert isinstance(info.value, SeedplanError) and "\n" not in message
    assert message.startswith(f"{earlier.resolve()}: another seedplan run (pid {os.getpid()} ")
    assert_complete(earlier, "new")
    assert leftovers(work) == []


def test_a_lock_file_replaced_while_locking_is_not_trusted(work, earlier, monkeypatch):
    """The race of removable lock files: between our open and our flock, the holder removes the file
    and a third run creates and locks a new one; the lock we then get is on a removed file."""
    import fcntl

    real_flock = fcntl.flock
    lock_file = work / ".out.seedplan-lock"
    lock_file.write_text("")
    third: list[int] = []

    def flock(fd: int, op: int) -> None:
        if not third:
            lock_file.unlink()
            third.append(os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666))
            real_flock(third[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    before = snapshot(earlier)
    try:
        with pytest.raises(OutputBusyError):
            with atomic_folder(earlier) as staging:
                write_outputs(staging, "new")
    finally:
        os.close(third[0])
    assert snapshot(earlier) == before


def test_without_lock_support_the_run_goes_on_with_a_warning(work, earlier, monkeypatch, caplog):
    import fcntl

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with atomic_folder(earlier) as staging:
        write_outputs(staging, "new")
    assert_complete(earlier, "new")
    assert "without a lock" in caplog.text
    assert leftovers(work) == []


def test_a_symlink_to_the_folder_shares_its_lock_and_keeps_pointing_to_it(work, earlier):
    link = work / "link"
    link.symlink_to(earlier.name)
    with atomic_folder(link) as staging:
        with pytest.raises(OutputBusyError):
            with atomic_folder(earlier):
                pass
        write_outputs(staging, "new")
    assert link.is_symlink() and os.readlink(link) == "out"
    assert_complete(earlier, "new")
    assert leftovers(work) == ["link"]


# --------------------------------------------------------------- disk full, exceptions
@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_leaves_the_earlier_folder_identical(work, earlier, monkeypatch, where, swap):
    before = snapshot(earlier)
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    calls = []
    if where == "write":
        real = Path.write_bytes

        def write_bytes(self: Path, data: bytes) -> int:
            calls.append(self)
            if len(calls) == 9:
                real(self, data[:100])  # the disk fills up in the middle of a file
                raise enospc
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    else:
        real_fsync = os.fsync

        def fsync(fd: int) -> None:  # delayed allocation: ENOSPC shows when flushing
            calls.append(fd)
            if len(calls) == 9:
                raise enospc
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        with atomic_folder(earlier) as staging:
            write_outputs(staging, "new")
    assert info.value.errno == errno.ENOSPC
    assert len(calls) == 9
    assert snapshot(earlier) == before
    assert leftovers(work) == []


@pytest.mark.parametrize("update", [False, True], ids=["replace", "update"])
def test_exception_half_way_leaves_the_earlier_folder_identical(work, earlier, update, swap):
    before = snapshot(earlier)
    with pytest.raises(RuntimeError, match="injected failure after 10 files"):
        with atomic_folder(earlier, update=update) as staging:
            write_outputs(staging, "new", fail_after=10)
    assert snapshot(earlier) == before
    assert leftovers(work) == []


def test_failed_first_run_leaves_nothing(work):
    with pytest.raises(RuntimeError):
        with atomic_folder(work / "out") as staging:
            write_outputs(staging, "new", fail_after=10)
    assert os.listdir(work) == []


def test_a_failed_swap_puts_the_earlier_folder_back(work, earlier, monkeypatch):
    before = snapshot(earlier)
    monkeypatch.setattr(_atomic, "_USE_EXCHANGE", False)
    real_rename = os.rename

    def rename(src, dst):
        if ".seedplan-new-" in os.fspath(src):
            raise OSError(errno.EIO, "I/O error", os.fspath(src))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="I/O error"):
        with atomic_folder(earlier) as staging:
            write_outputs(staging, "new")
    assert snapshot(earlier) == before
    assert leftovers(work) == []


# ------------------------------------------------------------------------- success
def test_a_run_replaces_the_folder_as_a_whole(work, earlier, swap, monkeypatch):
    renamed = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renamed.append(os.fspath(a)), real_rename(a, b)))
    with atomic_folder(earlier) as staging:
        assert staging.parent == earlier.parent.resolve() and staging.name.startswith(".out.seedplan-new-")
        write_outputs(staging, "new")
        assert "notes.txt" in os.listdir(earlier)  # the earlier folder is untouched until the end
    assert_complete(earlier, "new")  # notes.txt went with the earlier folder
    assert leftovers(work) == []
    if swap == "fallback" or _atomic._renameat2() is None:
        assert renamed == [str(earlier.resolve()), str(staging)]  # aside, then into place
    else:
        assert renamed == []  # one renameat2(RENAME_EXCHANGE): the folder was never missing


def test_a_replaced_folder_keeps_its_permissions(work, earlier):
    earlier.chmod(0o750)
    with atomic_folder(earlier) as staging:
        write_outputs(staging, "new")
    assert earlier.stat().st_mode & 0o7777 == 0o750


def test_an_existing_file_is_not_replaced_by_a_folder(work):
    (work / "out").write_text("not a folder")
    with pytest.raises(FileFormatError, match="not a folder"):
        with atomic_folder(work / "out"):
            pass
    assert (work / "out").read_text() == "not a folder"
    assert leftovers(work) == []


def test_leftovers_of_dead_runs_are_removed_and_lookalikes_kept(work, earlier):
    dead = work / ".out.seedplan-new-0123456789ab"
    (dead / "dicom").mkdir(parents=True)
    (dead / "dicom" / "RTPLAN.dcm").write_bytes(b"half")
    aside = work / ".out.seedplan-old-ba9876543210"  # the folder exists, so a set-aside copy is stale
    aside.mkdir()
    (work / ".out.seedplan-lock").write_text("999999 elsewhere\n")  # left by a killed run
    lookalikes = [".out.seedplan-new-notours", "out.seedplan-new-0123456789ab", ".other.seedplan-new-0123456789ab"]
    for name in lookalikes:
        (work / name).mkdir()
    with atomic_folder(earlier) as staging:
        write_outputs(staging, "new")
    assert_complete(earlier, "new")
    assert leftovers(work) == sorted(lookalikes)


# --------------------------------------------------------------------------- modes
@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                           (0o002, 0o664, 0o775)])
def test_modes_follow_the_umask(tmp_path, umask, file_mode, folder_mode):
    previous = os.umask(umask)
    try:
        with atomic_folder(tmp_path / "out") as staging:
            write_text_atomic(staging / "report.html", "<html></html>")
            with atomic_path(staging / "dicom" / "RTPLAN.dcm") as tmp:
                tmp.write_bytes(b"DICM")
        single = write_text_atomic(tmp_path / "single" / "metrics.json", "{}")
    finally:
        os.umask(previous)

    def mode(p: Path) -> int:
        return p.stat().st_mode & 0o7777

    out = tmp_path / "out"
    assert [mode(out), mode(out / "dicom"), mode(single.parent)] == [folder_mode] * 3
    assert [mode(out / "report.html"), mode(out / "dicom" / "RTPLAN.dcm"), mode(single)] == [file_mode] * 3


# ---------------------------------------------------------------------- update mode
@pytest.mark.parametrize("link", [True, False], ids=["hard links", "copies"])
def test_update_mode_keeps_untouched_files_and_swaps_the_folder_as_a_whole(work, earlier, link, swap):
    stray = earlier / ".dose.nrrd.k3x9q2ab.tmp.nrrd"  # left by a killed run of an older version
    stray.write_bytes(b"half a dose")
    (earlier / "plan_link.json").symlink_to("plan.json")
    before = snapshot(earlier)
    inode = (earlier / "case" / "ct" / "CT_0001.dcm").stat().st_ino
    with atomic_folder(earlier, update=True, link=link) as staging:
        kept = {k: v for k, v in before.items() if not k.startswith(".dose.nrrd.")}
        assert snapshot(staging) == kept  # starts as the earlier folder, without the stray file
        write_bytes_atomic(staging / "dose.nrrd", b"the new dose")
        write_text_atomic(staging / "metrics.json", "{}\n")
        write_text_atomic(staging / "view3d_superior.png", "new view")
        (staging / "dvh.csv").unlink()
        assert snapshot(earlier) == before  # nothing shows before the swap
    after = contents(earlier)
    expected = {n: content("old", n) for n in NAMES if n != "dvh.csv"}
    expected.update({"notes.txt": b"the physicist's notes\n", "dose.nrrd": b"the new dose", "metrics.json": b"{}\n",
                     "view3d_superior.png": b"new view", "plan_link.json": content("old", "plan.json")})
    assert after == expected
    assert os.readlink(earlier / "plan_link.json") == "plan.json"
    assert ((earlier / "case" / "ct" / "CT_0001.dcm").stat().st_ino == inode) is link
    assert leftovers(work) == []


def test_update_mode_copies_where_hard_links_fail(work, earlier, monkeypatch):
    def no_link(*_a, **_k):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    with atomic_folder(earlier, update=True) as staging:
        write_text_atomic(staging / "metrics.json", "{}\n")
    assert contents(earlier)["plan.json"] == content("old", "plan.json")
    assert contents(earlier)["metrics.json"] == b"{}\n"


def test_update_mode_on_a_missing_folder_starts_empty(work):
    with atomic_folder(work / "out", update=True) as staging:
        assert os.listdir(staging) == []
        write_outputs(staging, "new")
    assert_complete(work / "out", "new")


# --------------------------------------------------------------------- signal state
def test_signal_handlers_are_restored_and_sigterm_raises_inside(work):
    def own(signum, frame):
        pass

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with pytest.raises(Terminated):
            with atomic_folder(work / "out") as staging:
                write_outputs(staging, "new")
                assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # ignored stays ignored
                signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # what the interpreter does on SIGTERM
        assert os.listdir(work) == []
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is saved[signal.SIGINT]
        signal.signal(signal.SIGTERM, own)
        with atomic_folder(work / "out"):
            assert signal.getsignal(signal.SIGTERM) is not own
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_terminated_is_a_system_exit_with_the_conventional_status():
    exc = Terminated(signal.SIGTERM)
    assert isinstance(exc, SystemExit) and not isinstance(exc, Exception)
    assert exc.code == 143 and exc.signum == signal.SIGTERM


def test_works_outside_the_main_thread_without_touching_signals(work, earlier):
    seen: list[object] = []

    def job() -> None:
        try:
            with atomic_folder(earlier) as staging:
                seen.append(signal.getsignal(signal.SIGTERM))
                write_outputs(staging, "new")
        except BaseException as exc:  # noqa: BLE001 - reported below
            seen.append(exc)

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=job)
    t.start()
    t.join(30)
    assert seen == [before]
    assert_complete(earlier, "new")
    assert leftovers(work) == []
