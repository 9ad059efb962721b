"""The one interface every way of running a command in the guest implements.

Like labgrid's CommandProtocol: code above a channel runs a shell command line with its
standard streams, a time limit and an exit status, and never asks which transport it
has. Three implement it: SSH (channel/ssh.py: any number of commands, the guest's
network up), the virtio-serial ports (channel/ports.py: the one command given at boot,
no sshd, keys or network) and the serial console (channel/console_expect.py: no
network at all, output mixed with the kernel's). `Machine.commands(kind)` hands out the
one asked for, bound to the machine's crash and exit checks; `FakeMachine` replays
recorded answers through the same interface.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vmtest.channel.ssh import SSHChannel


class ChannelKind(enum.StrEnum):
    PORTS = "ports"
    SSH = "ssh"
    CONSOLE = "console"


class CommandChannel(Protocol):
    def run(self, command: str, *, stdin: int | None = None, stdout: IO[bytes] | None = None,
            stderr: IO[bytes] | None = None, timeout_s: float | None = None,
            watch: Callable[[], None] | None = None) -> int:
        """Run a shell command line in the guest; stream its stdout and stderr (None:
        discard); `stdin`, a file descriptor, to its end as its input (None: end of file
        at once); its exit status. Raises CommandTimeout past `timeout_s`, KernelCrash
        or InfraError when the guest or QEMU goes away meanwhile. `watch`, the caller's
        own check, is called while the command runs (at least every ~0.1 s on the ports
        and SSH) and stops it by raising."""
        ...


class WatchedSSH:
    """An SSH channel whose commands are watched by the machine's checks (a crash or a
    dead QEMU ends a command with its cause, not a lost connection)."""

    def __init__(self, ssh: SSHChannel, watch: Callable[[], None]) -> None:
        self.ssh = ssh
        self._watch = watch

    def run(self, command: str, *, stdin: int | None = None, stdout: IO[bytes] | None = None,
            stderr: IO[bytes] | None = None, timeout_s: float | None = None,
            watch: Callable[[], None] | None = None) -> int:
        return self.ssh.run(command, stdout=stdout, stderr=stderr, timeout_s=timeout_s,
                            watch=both(self._watch, watch), stdin=stdin)


def both(first: Callable[[], None], second: Callable[[], None] | None) -> Callable[[], None]:
    """The machine's check, then the caller's."""
    if second is None:
        return first

    def watch() -> None:
        first()
        second()

    return watch
