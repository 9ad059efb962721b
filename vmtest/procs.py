"""Child processes that vmtest owns together with everything they start.

make forks sub-makes and compilers; a plain subprocess.run() kills only make itself when
vmtest is interrupted or terminated, and the rest runs on as orphans. run_group() starts
the child in a session of its own and, if vmtest is stopped while it runs, stops that
whole process group (SIGTERM, then SIGKILL) before passing the interruption on.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GRACE_S = 5.0


def stop_group(proc: subprocess.Popen[Any], grace_s: float = GRACE_S) -> None:
    """Stop proc's process group (proc leads it: started with start_new_session)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            # The leader is gone; members may still be finishing their SIGTERM.
            if sig is signal.SIGTERM:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break
        except subprocess.TimeoutExpired:
            continue


# Progress of the steps that take minutes (a kernel build, the selftests' build, a source
# extraction): lines the CLI shows on stderr at its default level (cli/__init__.py).
progress = logging.getLogger("vmtest.progress")


def log_heartbeat(what: str, log_file: Path, marker: tuple[str, ...] = ("  CC ", "  LD ",
                                                                         "  AR ", "  AS ")
                  ) -> Callable[[float], None]:
    """A run_group heartbeat that says how far `what` got: the lines of its log that
    start with one of `marker` (make's quiet lines, one per file), and the time so far."""
    def beat(elapsed_s: float) -> None:
        try:
            with log_file.open(errors="replace") as log:
                done = sum(1 for line in log if line.startswith(marker))
        except OSError:
            done = 0
        progress.info("%s: %d files built, %.0f s so far (log: %s)", what, done, elapsed_s,
                      log_file)
    return beat


def run_group(argv: list[str], *, heartbeat: Callable[[float], None] | None = None,
              every_s: float = 30.0, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """subprocess.run(argv, **kwargs) in a new session; its group dies with us.
    `heartbeat(elapsed_s)` is called every `every_s` while it runs (its output must not be
    a pipe then: nothing reads it meanwhile)."""
    check = kwargs.pop("check", False)
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    started = time.monotonic()
    try:
        while heartbeat is not None:
            try:
                proc.wait(timeout=every_s)
                break
            except subprocess.TimeoutExpired:
                heartbeat(time.monotonic() - started)
        out, err = proc.communicate()
    except BaseException:
        stop_group(proc)
        raise
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, out, err)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


class SafePoints:
    """SIGINT and SIGTERM raised only where the code says (`check()`), not mid-call.

    paramiko's BufferedPipe takes its lock as `acquire(); try: ...` -- an exception from
    a signal handler (Ctrl-C, or the CLI's SIGTERM handler) between the two leaves the
    lock held, and the channel's close() then waits for it forever: `vmtest run -- CMD`
    hung on SIGTERM mid-command with QEMU alive. Within `with SafePoints() as points:`
    the signals are recorded; `points.check()` (between library calls) and the end of
    the block raise the first one through the handler that was installed. Only in the
    main thread (the only one Python runs handlers in), and only where a Python handler
    is installed (SIG_DFL and SIG_IGN keep their meaning)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: list[int] = []
        self._saved: dict[int, Any] = {}

    def _record(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def __enter__(self) -> SafePoints:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                handler = signal.getsignal(sig)
                if callable(handler):
                    self._saved[sig] = handler
                    signal.signal(sig, self._record)
        return self

    def check(self) -> None:
        if self.pending:
            signum = self.pending.pop(0)
            self._saved[signum](signum, None)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        if self.pending:  # the interruption wins over an error on its way out
            signum = self.pending.pop(0)
            handler = signal.getsignal(signum)
            if callable(handler):
                handler(signum, None)


class Beside:
    """fn(arg) worked out in a forked child while this process goes on, for a pure
    function whose result is small (the counting passes over a large log beside its
    scan: collect/dmesg.py). Used as a context manager: leaving it before result() was
    taken (an exception, an early return) kills and reaps the child, so that none
    outlives its caller. Where a fork is not safe -- a process with more than one thread
    (vmtest run's watchers, a matrix's pool) -- or fails, or the child does not return a
    result, result() works it out here."""

    def __init__(self, fn: Callable[[Any], Any], arg: Any):
        self.fn, self.arg = fn, arg
        self.pid = 0
        self.fd = -1

    def __enter__(self) -> Beside:
        if not hasattr(os, "fork") or threading.active_count() != 1:
            return self
        try:
            read_fd, write_fd = os.pipe()
        except OSError:
            return self
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            return self
        if pid == 0:  # the child: the result down the pipe, then gone (no atexit, no flush)
            status = 1
            try:
                os.close(read_fd)
                data = pickle.dumps(self.fn(self.arg), pickle.HIGHEST_PROTOCOL)
                with os.fdopen(write_fd, "wb") as out:
                    out.write(data)
                status = 0
            finally:
                os._exit(status)
        os.close(write_fd)
        self.pid, self.fd = pid, read_fd
        return self

    def result(self) -> Any:
        """fn(arg): the child's, or worked out here."""
        if self.pid:
            with os.fdopen(self.fd, "rb") as got:
                self.fd = -1
                data = got.read()
            _, status = os.waitpid(self.pid, 0)
            self.pid = 0
            if status == 0 and data:
                return pickle.loads(data)
        return self.fn(self.arg)

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.pid = 0
