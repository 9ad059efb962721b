"""A command's standard streams over virtio-serial ports: `vmtest run -- CMD` without SSH.

The run's command goes into its initramfs (COMMAND_PATH) with a random per-run nonce
(NONCE_PATH). The guest's init (guest/init.sh) runs it once it is ready, in SSH's
environment, with its stdin, stdout and stderr relayed through pipes from and to the
virtio-serial ports vmtest.stdin, vmtest.stdout and vmtest.stderr (QEMU's ends are
socket pairs whose other ends vmtest holds; a port opens only once, so the command must
not hold the port itself, or /dev/stdout would not open). When it ends, the init writes
"NONCE STATUS\n" on stdout and "NONCE\n" on stderr through the same open ports: each
stream's marker comes after everything the command wrote to it. relay() copies the
streams out, and the host's stdin in, until both markers came.

Why not SSH for this: under TCG, dropbear takes ~0.16 s to start (dynamic linking) and
its handshake ~0.2 s (curve25519 and ed25519 in portable C) -- more than a third of a
short `vmtest run`. The ports need no daemon, no keys and no network, and are reachable
only through this process's file descriptors. Everything else (the pytest plugin,
scenarios, --fetch) talks SSH.

A guest port's end of file is not seen by the host (virtio-serial keeps the chardev
connected), hence the markers; the host's end of file is: shutdown(SHUT_WR) on the stdin
socket makes QEMU close the port, and the guest reads end of file after the data.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vmtest.channel import GUEST_PATH, let_watch_name_it
from vmtest.deadline import Deadline
from vmtest.errors import ChannelError, CommandTimeout
from vmtest.guest import words

COMMAND_PATH = "/etc/vmtest/command"
NONCE_PATH = "/etc/vmtest/nonce"
# The guest sees each as /sys/class/virtio-ports/vportNpM/name = vmtest.NAME.
PORT_NAMES = ("stdin", "stdout", "stderr")


@dataclass(frozen=True)
class Command:
    """What the init runs: a shell command line, the nonce that ends its streams, and
    whether it reads the host's stdin (else /dev/null)."""

    line: str
    nonce: str
    stdin: bool = False
    # The share it runs in, once mounted (the current folder's); else /root.
    workdir_tag: str | None = None
    # Variables for the line itself, not part of it (scenarios/onports.py's token).
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def new(cls, line: str, stdin: bool = False, workdir_tag: str | None = None,
            env: tuple[tuple[str, str], ...] = ()) -> Command:
        return cls(line, secrets.token_hex(16), stdin, workdir_tag, env)

    @property
    def script(self) -> str:
        """What the init runs: the line with the PATH every channel gives a command."""
        env = "".join(f"export {k}={shlex.quote(v)}; " for k, v in self.env)
        return f"export PATH={GUEST_PATH}; {env}{self.line}\n"

    @property
    def ports(self) -> tuple[str, ...]:
        return PORT_NAMES if self.stdin else PORT_NAMES[1:]


class _Stream:
    """One guest-to-host stream: passed on as it comes, up to its marker. The bytes that
    could be the start of the marker are held back until the next read decides."""

    def __init__(self, marker: bytes, out: IO[bytes] | None, with_status: bool) -> None:
        self.marker = marker
        self.out = out
        self.with_status = with_status
        self.pending = b""
        self.marked = False
        self.tail = b""  # after the marker: " STATUS\n" on stdout
        self.done = False
        self.status: int | None = None

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        if self.marked:
            self._finish(self.tail + data)
            return
        self.pending += data
        at = self.pending.find(self.marker)
        if at >= 0:
            self._write(self.pending[:at])
            rest, self.pending = self.pending[at + len(self.marker):], b""
            self._finish(rest)
            return
        keep = self._marker_start(self.pending)
        self._write(self.pending[:len(self.pending) - keep])
        self.pending = self.pending[len(self.pending) - keep:]

    def _marker_start(self, data: bytes) -> int:
        """How many bytes at data's end could begin the marker (almost always none: a
        line waiting for the next one is not held back)."""
        for size in range(min(len(data), len(self.marker) - 1), 0, -1):
            if data.endswith(self.marker[:size]):
                return size
        return 0

    def flush(self) -> None:
        """The run ends without the marker (timeout, crash): what was held back is
        output too."""
        if not self.marked:
            with contextlib.suppress(OSError):  # an error on its way out wins
                self._write(self.pending)
            self.pending = b""

    def _finish(self, rest: bytes) -> None:
        """After the marker: stderr is done; stdout waits for " STATUS\\n"."""
        self.marked = True
        if not self.with_status:
            self.done = True
            return
        self.tail = rest
        line, newline, _ = rest.partition(b"\n")
        if not newline:
            return
        try:
            self.status = int(line.strip())
        except ValueError as exc:
            raise ChannelError(f"the guest's exit status line is garbled: {line[:40]!r}") \
                from exc
        self.done = True

    def _write(self, data: bytes) -> None:
        if data and self.out is not None:
            self.out.write(data)
            self.out.flush()


def relay(socks: dict[str, socket.socket], command: Command, *,
          stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None,
          stdin: int | None = None, timeout_s: float | None = None,
          watch: Callable[[], None] | None = None, poll_s: float = 0.1) -> int:
    """Copy the command's output to stdout/stderr (and the fd `stdin` to its input)
    until both markers came; return its exit status.

    `watch` is called at least every `poll_s` and raises if the guest crashed or QEMU
    died. CommandTimeout after `timeout_s`."""
    marker = command.nonce.encode()
    streams = {"stdout": _Stream(marker, stdout, True), "stderr": _Stream(marker, stderr, False)}
    deadline = Deadline(timeout_s) if timeout_s else None
    watched = 0.0
    with selectors.DefaultSelector() as sel:
        for name, stream in streams.items():
            sel.register(socks[name], selectors.EVENT_READ, stream)
        if "stdin" in socks:
            _feed(socks["stdin"], stdin)
        try:
            while not all(s.done for s in streams.values()):
                for key, _ in sel.select(poll_s):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:  # QEMU closed its end: it is going away
                        sel.unregister(key.fileobj)
                        let_watch_name_it(watch)
                        raise ChannelError("the guest's command ports closed mid-command",
                                           hint="the console log shows what the guest did")
                    key.data.feed(data)
                if deadline is not None and deadline.expired:
                    raise CommandTimeout(f"guest command did not finish within {timeout_s} s: "
                                         f"{command.line}")
                # the guest's health, at most every poll_s however fast output comes
                if watch is not None and time.monotonic() - watched >= poll_s:
                    watched = time.monotonic()
                    watch()
        except BaseException:
            for stream in streams.values():
                stream.flush()
            raise
    status = streams["stdout"].status
    assert status is not None
    return status


def _feed(sock: socket.socket, source: int | None) -> None:
    """The host's stdin into the guest's stdin port, in a thread (a pipe that has
    nothing yet must not hold up the output; a regular file cannot be polled); its end
    of file passed on as shutdown(SHUT_WR)."""
    def pump() -> None:
        try:
            while source is not None and (data := os.read(source, 65536)):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # QEMU closed the port: the command did not read it all
            pass

    if source is None:
        pump()
    else:
        threading.Thread(target=pump, name="vmtest-stdin", daemon=True).start()


class PortsChannel:
    """The command given at boot (`Command`), run by the init on the ports: a
    CommandChannel for that one command, once per boot. `said` reads the console from
    READY on (the init says NOPORTS there when the kernel has no ports); `watch` is the
    machine's crash and exit check."""

    def __init__(self, socks: dict[str, socket.socket], command: Command,
                 said: Callable[[int], bytes], watch: Callable[[], None],
                 console_log: Path | None = None) -> None:
        self._socks = socks
        self.command = command
        self._said = said
        self._watch = watch
        self._console_log = console_log
        self._used = False

    def run(self, command: str, *, stdin: int | None = None, stdout: IO[bytes] | None = None,
            stderr: IO[bytes] | None = None, timeout_s: float | None = None,
            watch: Callable[[], None] | None = None) -> int:
        if command != self.command.line:
            raise ChannelError("the ports run the command given at boot, not another",
                               hint="boot with BootOptions(command=Command.new(LINE)), or "
                                    "run further commands over SSH")
        if self._used:
            raise ChannelError("the command on the ports runs once per boot")
        self._used = True
        said_from = 0
        word = words.said(words.NOPORTS)

        def check() -> None:
            nonlocal said_from
            self._watch()
            if watch is not None:
                watch()
            said = self._said(said_from)
            said_from += max(0, len(said) - len(word))
            if word in said:
                raise ChannelError("the guest found no virtio-serial ports for the command "
                                   "(a kernel without CONFIG_VIRTIO_CONSOLE)",
                                   hint="build it with vmtest's fragments "
                                        "(kernels/fragments/qemu-guest.config), or pass --ssh",
                                   log_path=self._console_log)

        return relay(self._socks, self.command, stdout=stdout, stderr=stderr, stdin=stdin,
                     timeout_s=timeout_s, watch=check)
