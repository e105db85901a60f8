"""One call in a forked child process (seedplan._forked), the plan outputs written with and without it, and the
console command's exit without the interpreter teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from seedplan import _forked
from seedplan._forked import fork_possible, forked_call


def _pid_and(value):
    return os.getpid(), value


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# this test process may hold other threads (an in-process Dask cluster of earlier tests), where forked_call
# rightly refuses to fork: the forking cases run in a fresh interpreter
can_fork = pytest.mark.skipif(not sys.platform.startswith("linux") or _cores() < 2,
                              reason="forking needs Linux and two cores")

_CASES = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path

    from seedplan._forked import fork_possible, forked_call

    def pid_and(value):
        return os.getpid(), value

    def write_then_fail(path, marker):
        Path(path).write_text(f"{os.getpid()}\\n")
        if os.getpid() != marker:  # in the child
            raise RuntimeError("the child fails")
        return "from the caller"

    def fail(exc):
        raise exc

    def killed_in_the_child(marker):
        if os.getpid() != marker:
            os.kill(os.getpid(), signal.SIGKILL)
        return "survived"

    def case_value():
        with forked_call(pid_and, [1, 2], avoid_modules=("a_module_nobody_imports",)) as call:
            assert call.forked
            pid, value = call.result()
        assert pid != os.getpid() and value == [1, 2]
        assert call.result() == (pid, [1, 2])  # asked again: the same answer, no second run

    def case_failing_child():
        path = Path(sys.argv[2]) / "who"
        with forked_call(write_then_fail, path, os.getpid()) as call:
            assert call.forked
            assert call.result() == "from the caller"
        assert path.read_text() == f"{os.getpid()}\\n"

    def case_error():
        with forked_call(fail, ValueError("no such view")) as call:
            assert call.forked
            try:
                call.result()
            except ValueError as exc:
                assert str(exc) == "no such view"
            else:
                raise AssertionError("no error")

    def case_killed_child():
        with forked_call(killed_in_the_child, os.getpid()) as call:
            assert call.forked and call.result() == "survived"

    def stuck_in_the_child(marker):
        if os.getpid() != marker:
            time.sleep(60)  # a child stuck on a lock it inherited
        return "from the caller"

    def case_stuck_child():
        import seedplan._forked as forked
        forked.TIMEOUT_S = 0.5
        t0 = time.monotonic()
        with forked_call(stuck_in_the_child, os.getpid()) as call:
            pid = call._pid
            assert call.forked and call.result() == "from the caller"
        assert time.monotonic() - t0 < 30
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # killed and reaped
            pass
        else:
            raise AssertionError("the stuck child was not reaped")

    def case_cancel():
        try:
            with forked_call(time.sleep, 60) as call:
                pid = call._pid
                assert call.forked and pid is not None
                raise KeyError("the caller failed")
        except KeyError:
            pass
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped: no zombie left
            pass
        else:
            raise AssertionError("the child was not reaped")

    assert fork_possible()
    globals()["case_" + sys.argv[1]]()
    print("ok")
""")


@can_fork
@pytest.mark.parametrize("case", ["value", "failing_child", "error", "killed_child", "stuck_child", "cancel"])
def test_forked_call(case, tmp_path):
    """value: from the child; failing_child / error / killed_child: run again in the caller (its error
    propagates); stuck_child: killed after TIMEOUT_S and run in the caller; cancel: leaving the block by an
    exception kills and reaps the child."""
    proc = subprocess.run([sys.executable, "-c", _CASES, case, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_no_fork_with_other_threads_an_avoided_module_or_when_disabled(monkeypatch):
    assert not fork_possible(avoid_modules=("os",))  # already imported here
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not fork_possible()
        with forked_call(_pid_and, 3) as call:
            assert not call.forked
            assert call.result() == (os.getpid(), 3)
    finally:
        stop.set()
        t.join()
    monkeypatch.setattr(_forked, "ENABLED", False)
    with forked_call(_pid_and, 4) as call:
        assert not call.forked and call.result() == (os.getpid(), 4)


_OUTPUTS_SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path

    import pydicom

    from seedplan import _forked
    from seedplan.imaging import make_spine_phantom
    from seedplan.io import load_case, write_phantom_case
    from seedplan.outputs import write_plan_outputs
    from seedplan.planning import plan_case

    root = Path(sys.argv[1])
    written = write_phantom_case(make_spine_phantom(spacing_mm=3.0, lesion_diameter_mm=26.0), root / "case")
    case = load_case(written["case"])
    result = plan_case(case.ct, case.structures, case.prescription, options=case.planning,
                       case_reference=case.reference)
    forked = []
    real = _forked.forked_call

    def spy(*a, **k):
        cm = real(*a, **k)
        call = cm.__enter__()
        forked.append(call.forked)

        class Wrapped:
            def __enter__(self):
                return call

            def __exit__(self, *exc):
                return cm.__exit__(*exc)
        return Wrapped()

    _forked.forked_call = spy
    assert "vtkmodules" not in sys.modules
    files = {}
    for name, enabled in (("forked", True), ("serial", False)):
        _forked.ENABLED = enabled
        files[name] = {k: str(v.relative_to(root / name)) for k, v in
                       write_plan_outputs(result, root / name, ct=case.ct, structures=case.structures).items()}

    def content(p):
        if p.suffix == ".dcm":  # the export time differs
            ds = pydicom.dcmread(p)
            for kw in ("InstanceCreationDate", "InstanceCreationTime", "SeriesDate", "SeriesTime",
                       "StructureSetDate", "StructureSetTime", "RTPlanDate", "RTPlanTime", "ContentDate",
                       "ContentTime"):
                if kw in ds:
                    delattr(ds, kw)
            return hashlib.sha256(repr(ds).encode()).hexdigest()
        return hashlib.sha256(p.read_bytes()).hexdigest()

    same = {k: content(root / "forked" / v) == content(root / "serial" / v) for k, v in files["forked"].items()}
    print(json.dumps({"forked": forked, "files": files, "same": same}))
""")


@can_fork
def test_outputs_written_with_the_3d_views_in_a_child_are_those_of_a_serial_run(tmp_path):
    """A fresh process (VTK not loaded): the views are rendered in a child, then everything again serially."""
    proc = subprocess.run([sys.executable, "-c", _OUTPUTS_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["forked"] == [True, False]
    assert got["files"]["forked"] == got["files"]["serial"]  # the same files, listed in the same order
    assert {"view3d_oblique", "dicom_rtstruct", "axial", "dvh_png", "report"} <= set(got["files"]["forked"])
    assert all(got["same"].values()), [k for k, v in got["same"].items() if not v]


_CONSOLE_SCRIPT = textwrap.dedent("""
    import atexit, os, sys
    if sys.argv[1] == "profiled":
        sys.setprofile(lambda *a: None)


    class Teardown:  # finalised in the interpreter's teardown, which the fast exit skips
        def __del__(self, write=os.write):
            write(1, b"teardown ran\\n")


    keep = Teardown()
    atexit.register(lambda: print("atexit handler ran", flush=True))
    from seedplan.cli import console_main
    sys.argv = ["seedplan"] + sys.argv[2:]
    print("before", end="")  # left in the buffer: flushed before the process ends
    sys.exit(console_main())
""")


@pytest.mark.parametrize("profiled", [False, True])
def test_the_console_command_exits_with_its_code_after_the_atexit_handlers(tmp_path, profiled):
    args = ["plan", str(tmp_path / "no_such_case.json"), "--out", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-c", _CONSOLE_SCRIPT, "profiled" if profiled else "plain", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stdout.startswith("before") and "atexit handler ran" in proc.stdout
    assert "no_such_case.json" in proc.stderr and "Traceback" not in proc.stderr
    # the teardown is skipped, unless a profiler (or tracer) needs the normal exit to write its output
    assert ("teardown ran" in proc.stdout) == profiled
