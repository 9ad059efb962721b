"""procs.Beside: a pure function worked out in a forked child beside the caller."""

from __future__ import annotations

import os
import threading
import time

from vmtest.procs import Beside


def _pid_and_square(n: int) -> tuple[int, int]:
    return os.getpid(), n * n


def test_result_comes_from_a_child_and_the_child_is_reaped():
    with Beside(_pid_and_square, 7) as side:
        pid = side.pid
        assert pid > 0
        child_pid, square = side.result()
    assert square == 49 and child_pid == pid != os.getpid()
    assert not os.path.exists(f"/proc/{pid}")  # reaped: no zombie left


def _fails(_: object) -> int:
    if os.getpid() != PARENT:
        raise RuntimeError("the child's failure")
    return 5


PARENT = os.getpid()


def test_a_child_that_fails_is_worked_out_here():
    with Beside(_fails, None) as side:
        assert side.pid > 0
        assert side.result() == 5


def _sleeps(_: object) -> int:
    time.sleep(60)
    return 1


def test_leaving_early_kills_and_reaps_the_child():
    started = time.monotonic()
    try:
        with Beside(_sleeps, None) as side:
            pid = side.pid
            raise KeyError("the caller's own error")
    except KeyError:
        pass
    assert time.monotonic() - started < 10
    assert not os.path.exists(f"/proc/{pid}")


def test_no_fork_beside_other_threads():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with Beside(_pid_and_square, 3) as side:
            assert side.pid == 0
            assert side.result() == (os.getpid(), 9)
    finally:
        stop.set()
        thread.join()
