"""Time: one deadline per step (every blocking call takes its timeout from it), and the
one timestamp format of result documents, build metadata and verdicts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> str:
    """Now, as the documents record it: 2026-11-29T15:08:55Z."""
    return time.strftime(UTC_FORMAT, time.gmtime())


def file_stamp() -> str:
    """Now, for names of files and folders that sort by time: 20261129-150855 (local)."""
    return time.strftime("%Y%m%d-%H%M%S")


def utc_epoch(stamp: object) -> float | None:
    """Seconds since the epoch of a utc_now() stamp; None if it is not one."""
    import calendar  # with datetime, ~3 ms of every command that never reads a stamp

    try:
        return float(calendar.timegm(time.strptime(str(stamp), UTC_FORMAT)))
    except ValueError:
        return None


@dataclass
class Deadline:
    """A point in time on a monotonic clock (injectable for tests)."""

    timeout_s: float
    clock: Clock = time.monotonic
    start_s: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.start_s < 0:
            self.start_s = self.clock()

    @property
    def expires_s(self) -> float:
        return self.start_s + self.timeout_s

    def remaining_s(self, cap_s: float | None = None) -> float:
        left = max(0.0, self.expires_s - self.clock())
        return left if cap_s is None else min(left, cap_s)

    @property
    def expired(self) -> bool:
        return self.clock() >= self.expires_s
