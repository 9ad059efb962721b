"""pexpect over the serial console's buffer, the way labgrid runs pexpect over any
transport, and the console's command channel built on it. Its own module: pexpect is
imported only by what uses it (the console exec channel, the KVM probe's tests), not
before every boot."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

import pexpect
from pexpect.spawnbase import SpawnBase

from vmtest.channel.console import Console
from vmtest.deadline import Deadline
from vmtest.errors import ChannelError, CommandTimeout
from vmtest.guest import words


class ConsoleExpect(SpawnBase):  # type: ignore[misc]
    """pexpect over the Console's buffer (no file descriptor, no child process)."""

    def __init__(self, console: Console, start: int = 0, timeout: float = 30) -> None:
        super().__init__(timeout=timeout, maxread=65536, searchwindowsize=None)
        self._console = console
        self._offset = start

    @classmethod
    def from_now(cls, console: Console) -> ConsoleExpect:
        """A session reading from the current end of the console output."""
        return cls(console, start=console.end)

    def read_nonblocking(self, size: int = 1, timeout: float | None = None) -> bytes:
        data = self._console.wait_data(self._offset, 0.05 if timeout is None else max(0, timeout))
        data = data[:size]
        if not data:
            if self._console.closed:
                self.flag_eof = True
                raise pexpect.EOF("console closed")
            raise pexpect.TIMEOUT("no console output")
        self._offset += len(data)
        return data

    def send(self, s: bytes | str) -> int:
        data = s.encode() if isinstance(s, str) else s
        self._console.write(data)
        return len(data)

    def sendline(self, s: bytes | str = b"") -> int:
        data = s.encode() if isinstance(s, str) else s
        return self.send(data + b"\n")

    @property
    def offset(self) -> int:
        return self._offset


class ConsoleChannel:
    """Commands on the init's console shell (guest/init.sh's fallback loop): no network
    needed. Its output is the console's, the kernel's messages mixed in, written to
    stdout when the command ends; it has no stdin and no stderr of its own.
    `watch` is the machine's crash check, `gone` raises when QEMU has exited."""

    DEFAULT_TIMEOUT_S = 3600.0

    def __init__(self, console: Console, watch: Callable[[], None],
                 gone: Callable[[str], None]) -> None:
        self._console = console
        self._watch = watch
        self._gone = gone

    def run(self, command: str, *, stdin: int | None = None, stdout: IO[bytes] | None = None,
            stderr: IO[bytes] | None = None, timeout_s: float | None = None,
            watch: Callable[[], None] | None = None) -> int:
        if stdin is not None:
            raise ChannelError("the console channel has no standard input for the command",
                               hint="run it on the ports (the default) or over --ssh")
        timeout_s = timeout_s or self.DEFAULT_TIMEOUT_S
        nonce = f"{time.monotonic_ns():x}"
        session = ConsoleExpect.from_now(self._console)
        end = f"{words.PREFIX}{words.EXIT}-{nonce}"
        # In a subshell: an `exit` in the command ends it, not the console's shell loop.
        session.sendline(f"( {command} ); echo {words.PREFIX}{words.EXIT}-{nonce}:$?")
        deadline = Deadline(timeout_s)
        pattern = f"{end}:(\\d+)".encode()
        while True:
            self._watch()
            if watch is not None:
                watch()
            idx = session.expect([pattern, pexpect.TIMEOUT, pexpect.EOF],
                                 timeout=deadline.remaining_s(0.5))
            if idx == 0:
                if stdout is not None:
                    stdout.write(session.before.replace(b"\r", b""))
                    stdout.flush()
                return int(session.match.group(1))
            if idx == 2:
                self._gone("running a console command")
                raise ChannelError("console closed while running a command")
            if deadline.expired:
                raise CommandTimeout(f"console command did not finish in {timeout_s} s: "
                                     f"{command}", log_tail=self._console.tail(10))
