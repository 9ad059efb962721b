"""The outcomes vmtest decides, as types that know what follows from them.

Three things are decided: how one run ended (`RunVerdict`), what a comparison of two
variants' runs shows on one metric (`Change`), and how a bisection step judges a commit
(`Judgement`). Each knows its exit code and (for the first two) its JUnit element, so no
caller works either out again, and no decision reads a message. They are `StrEnum`s
whose values are the strings of the result documents (docs/result-schema.md): a stored
document reads back into the same member, and JSON writes the value unchanged.
"""

from __future__ import annotations

import enum

from vmtest.errors import (
    EXIT_FAIL,
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandTimeout,
    GuestFailure,
    GuestHang,
    KernelCrash,
)


class RunVerdict(enum.StrEnum):
    """How one run ended."""

    OK = "ok"
    KERNEL_CRASH = "kernel-crash"  # a panic, Oops or BUG in the guest
    HANG = "hang"  # the guest stopped making progress
    TIMEOUT = "timeout"  # the guest's command outran its limit
    FAILURE = "failure"  # another failure of the kernel under test
    INFRASTRUCTURE = "infrastructure"  # the machinery failed: nothing was measured
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: not a measurement

    @classmethod
    def of(cls, value: object) -> RunVerdict:
        """The verdict a stored document holds; an unknown one counts as the
        machinery's failure (a document vmtest did not write cannot be trusted)."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.INFRASTRUCTURE

    @classmethod
    def for_exception(cls, exc: BaseException) -> RunVerdict:
        """The verdict of a run that ended with exc: the kernel's fault (a crash, hang,
        timeout or other failure) or the machinery's (infrastructure)."""
        for kind, verdict in ((KernelCrash, cls.KERNEL_CRASH), (GuestHang, cls.HANG),
                              (CommandTimeout, cls.TIMEOUT), (GuestFailure, cls.FAILURE)):
            if isinstance(exc, kind):
                return verdict
        if isinstance(exc, KeyboardInterrupt):  # also SIGTERM (errors.Terminated)
            return cls.INTERRUPTED
        return cls.INFRASTRUCTURE

    @property
    def is_result(self) -> bool:
        """Whether the run is a measurement: a resume runs the others again and reports
        leave them out of the statistics."""
        return self not in (RunVerdict.INFRASTRUCTURE, RunVerdict.INTERRUPTED)

    @property
    def is_kernel_failure(self) -> bool:
        """The kernel under test's doing (bisect: bad only with --crash-is bad)."""
        return self in (RunVerdict.KERNEL_CRASH, RunVerdict.HANG, RunVerdict.TIMEOUT,
                        RunVerdict.FAILURE)

    @property
    def exit_code(self) -> int:
        if self is RunVerdict.OK:
            return EXIT_OK
        if self is RunVerdict.INFRASTRUCTURE:
            return EXIT_INFRA
        if self is RunVerdict.INTERRUPTED:
            return EXIT_INTERRUPTED
        return EXIT_FAIL

    @property
    def junit(self) -> str | None:
        """The JUnit element of a run's test case: the kernel's failures fail it, the
        machinery's are errors, an interrupted run is skipped."""
        if self is RunVerdict.OK:
            return None
        if self is RunVerdict.INFRASTRUCTURE:
            return "error"
        if self is RunVerdict.INTERRUPTED:
            return "skipped"
        return "failure"


class Change(enum.StrEnum):
    """What a comparison of a variant with the baseline shows on one metric."""

    IMPROVED = "improved"
    REGRESSED = "regressed"
    NO_CHANGE = "no significant change"
    # Too few runs for any result to reach alpha, whatever they show: no evidence either way.
    UNDECIDED = "undecided"
    INSUFFICIENT = "insufficient data"  # fewer than 2 runs with a value on a side

    @property
    def decided(self) -> bool:
        return self not in (Change.UNDECIDED, Change.INSUFFICIENT)

    @property
    def exit_code(self) -> int:
        return EXIT_FAIL if self is Change.REGRESSED else EXIT_OK

    @property
    def junit(self) -> str | None:
        if self is Change.REGRESSED:
            return "failure"
        return None if self.decided else "skipped"  # not a pass


class Judgement(enum.IntEnum):
    """A bisection step's answer to `git bisect run`, as its exit code."""

    GOOD = 0
    BAD = 1
    SKIP = 125

    @property
    def exit_code(self) -> int:
        return int(self)
