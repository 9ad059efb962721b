"""One exception root, and the exit codes its children map to (only vmtest/cli/ turns
them into messages and exits).

Exit codes: 0 ok, 1 test or kernel failure, 2 usage or config error, 3 infrastructure
failure (build, QEMU, lost VM, or a bug in vmtest), 130 interrupted (SIGINT).

`vmtest run -- CMD` passes CMD's own exit status through, so it cannot use those: like
`docker run` (125-127) it keeps two codes for its own outcomes, chosen so that `git bisect
run vmtest run -- CMD` reads them right: 125 (git bisect: skip) when vmtest could not run
CMD at all (usage, config, infrastructure: CMD's outcome is unknown), 124 (git bisect: bad)
when the kernel under test failed around CMD (crash, hang) or CMD outran --timeout.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C (VMs stopped, finished runs kept, resumable)."""
EXIT_CMD_KERNEL, EXIT_CMD_VMTEST = 124, 125


class VmtestError(Exception):
    """Root of every error vmtest raises on purpose."""

    exit_code = EXIT_INFRA

    def __init__(self, message: str, *, hint: str | None = None, log_path: Path | None = None,
                 log_tail: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
        self.log_path = log_path
        self.log_tail = log_tail

    def render(self) -> str:
        parts = [str(self)]
        if self.log_tail:
            parts.append("--- last lines ---\n" + self.log_tail.rstrip())
        if self.log_path:
            parts.append(f"log: {self.log_path}")
        if self.hint:
            parts.append(f"fix: {self.hint}")
        return "\n".join(parts)


class ConfigError(VmtestError):
    """Bad user input: YAML, options, names."""

    exit_code = EXIT_USAGE


class InfraError(VmtestError):
    """The machinery failed: missing tools, build failure, QEMU died, lost VM."""

    exit_code = EXIT_INFRA


class MissingRequirement(InfraError):
    """A host tool or package is not installed."""


class BuildError(InfraError):
    """The kernel build (or its configuration) failed."""


class PatchError(BuildError):
    """A patch of a series does not apply to its base."""


class KconfigError(BuildError):
    """Kconfig dropped options a fragment asked for."""


class ChannelError(InfraError):
    """SSH or console channel failed (names the step)."""


class GuestFailure(VmtestError):
    """The kernel under test misbehaved: that is a test result, not infrastructure."""

    exit_code = EXIT_FAIL


class KernelCrash(GuestFailure):
    """The guest kernel panicked or oopsed."""


class GuestHang(GuestFailure):
    """The guest stopped making progress before a deadline."""


class CommandTimeout(GuestFailure):
    """The guest command did not finish within its timeout."""
