"""One deadline per step: every blocking call takes its timeout from it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


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

    def elapsed_s(self) -> float:
        return self.clock() - self.start_s

    @property
    def expired(self) -> bool:
        return self.clock() >= self.expires_s
