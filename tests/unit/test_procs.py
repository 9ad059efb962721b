"""run_group: a child and everything it started die with an interrupted vmtest."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from vmtest import procs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_interrupt_stops_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    # The grandchild ignores nothing: make's sub-makes and compilers are like it.
    script = f"sleep 60 & echo $! > {pidfile}; wait"

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            procs.run_group(["sh", "-c", script])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = _alive(grandchild)
    if survived:  # the test owns it: leave nothing behind even when it fails
        os.kill(grandchild, signal.SIGKILL)
    assert not survived, "the grandchild outlived the interrupted run_group"


def test_result_and_check(tmp_path: Path) -> None:
    import subprocess
    done = procs.run_group(["sh", "-c", "echo hi; exit 3"], stdout=subprocess.PIPE, text=True)
    assert (done.returncode, done.stdout) == (3, "hi\n")
    with pytest.raises(subprocess.CalledProcessError):
        procs.run_group(["false"], check=True)


class _Stop(Exception):
    pass


def _raising(signum, frame):
    raise _Stop(signum)


@pytest.mark.fault("SIGTERM or Ctrl-C while paramiko holds a channel's lock (mid-command)",
                   verdict="interrupted", exit="143 / 130",
                   message="vmtest: terminated (SIGTERM) / interrupted",
                   kept="the run directory; QEMU stopped (it used to hang in the channel's "
                   "close)")
def test_safe_points_hold_a_signal_until_check_then_raise_it_through_the_handler():
    import os
    import signal

    from vmtest.procs import SafePoints

    before = signal.signal(signal.SIGTERM, _raising)
    try:
        with pytest.raises(_Stop):
            with SafePoints() as points:
                os.kill(os.getpid(), signal.SIGTERM)
                reached = True  # a handler that raised would have left before this
                points.check()
                pytest.fail("check() did not raise the recorded signal")
        assert reached
        assert signal.getsignal(signal.SIGTERM) is _raising  # restored
        # Recorded after the last check: raised on the way out, the error it met chained.
        with pytest.raises(_Stop) as raised:
            with SafePoints():
                os.kill(os.getpid(), signal.SIGTERM)
                raise ValueError("the block's own error")
        assert isinstance(raised.value.__context__, ValueError)
    finally:
        signal.signal(signal.SIGTERM, before)


def test_safe_points_leave_default_handlers_and_other_threads_alone():
    import signal
    import threading

    from vmtest.procs import SafePoints

    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with SafePoints():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        seen = []

        def worker():
            with SafePoints() as points:
                seen.append(points._saved)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen == [{}]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_long_step_says_how_far_it_got(tmp_path):
    import logging
    import subprocess

    log_file = tmp_path / "build.log"
    log_file.write_text("  CC      mm/a.o\n  CC      mm/b.o\n  LD      vmlinux\nnoise\n")
    beats: list[float] = []
    beat = procs.log_heartbeat("building x", log_file)

    def heartbeat(elapsed_s: float) -> None:
        beats.append(elapsed_s)
        beat(elapsed_s)

    # A handler on the progress logger itself: the CLI (other tests run it) stops that
    # logger propagating to the root, where caplog listens.
    said: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    progress = logging.getLogger("vmtest.progress")
    level = progress.level
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    try:
        proc = procs.run_group(["sleep", "0.35"], heartbeat=heartbeat, every_s=0.1,
                               stdout=subprocess.DEVNULL)
    finally:
        progress.removeHandler(handler)
        progress.setLevel(level)
    assert proc.returncode == 0 and len(beats) >= 2
    assert any("building x: 3 files built" in m and str(log_file) in m for m in said), said
