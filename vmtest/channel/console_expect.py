"""pexpect over the serial console's buffer, the way labgrid runs pexpect over any
transport. Its own module: pexpect is imported only by what uses it (the console
exec channel, the KVM probe's tests), not before every boot."""

from __future__ import annotations

import pexpect
from pexpect.spawnbase import SpawnBase

from vmtest.channel.console import Console


class ConsoleExpect(SpawnBase):  # type: ignore[misc]
    """pexpect over the Console's buffer (no file descriptor, no child process)."""

    def __init__(self, console: Console, start: int = 0, timeout: float = 30) -> None:
        super().__init__(timeout=timeout, maxread=65536, searchwindowsize=None)
        self._console = console
        self._offset = start

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
