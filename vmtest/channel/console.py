"""The serial console: drained continuously, searched with pexpect.

QEMU's serial chardev blocks the guest's UART when nobody reads the socket, so a
reader thread drains it into memory all the time (QEMU itself writes the log file,
which survives us). pexpect runs over that buffer through a small adapter, the way
labgrid runs pexpect over any transport.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

# First lines of the kernel reports after which the guest does not go on (kernel/panic.c,
# arch/x86/mm/fault.c, lib/bug.c): guests boot with oops=panic, so every oops ends in a
# panic, and panic=-1 with -no-reboot in QEMU's exit. Reports the kernel survives --
# "BUG: soft lockup", "BUG: Bad page state", "BUG: scheduling while atomic", KASAN,
# WARNING -- do not end a run: the dmesg parser records them as splats. (A soft lockup
# under TCG on a busy host is often the host starving the vCPU, not a kernel bug.)
CRASH_PATTERNS = (
    rb"Kernel panic - not syncing[^\r\n]*",
    rb"Oops: [^\r\n]*",
    rb"general protection fault[^\r\n]*",
    rb"kernel BUG at [^\r\n]*",
    rb"BUG: (?:unable to handle|kernel NULL pointer dereference)[^\r\n]*",
)
_CRASH_RE = re.compile(b"|".join(b"(?:" + p + b")" for p in CRASH_PATTERNS))
# While the guest runs, only whole lines count: a title cut at a chunk boundary would be
# reported half.
_CRASH_LINE_RE = re.compile(b"(?:" + _CRASH_RE.pattern + b")(?=\r?\n)")


@dataclass(frozen=True)
class CrashSighting:
    title: str
    offset: int


def find_crash(data: bytes, *, complete_lines: bool = False) -> CrashSighting | None:
    """The first fatal kernel report in console output, if any; with complete_lines, only
    a report whose line has ended."""
    m = (_CRASH_LINE_RE if complete_lines else _CRASH_RE).search(data)
    if m is None:
        return None
    return CrashSighting(m.group(0).decode(errors="replace").strip(), m.start())


# What the console keeps in memory: enough for every reader (the readiness line, the
# command's markers, crash reports, tails); QEMU's logfile (console.log) keeps it all.
MAX_BUFFER_BYTES = 8 << 20


class Console:
    """Owns the host end of the serial socket and a thread that drains it.

    It keeps the last MAX_BUFFER_BYTES of output (offsets stay those of the whole
    output) and scans each line once, as it completes, for a fatal kernel report
    (`crash`), so watching the guest costs the same at any console length."""

    def __init__(self, sock: socket.socket, max_bytes: int = MAX_BUFFER_BYTES) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._base = 0  # offset of _buf[0] in the whole output
        self._scanned = 0  # offset up to which whole lines have been scanned
        self._max = max_bytes
        self._cond = threading.Condition()
        self._closed = False
        self.crash: CrashSighting | None = None  # the first fatal report, once seen
        self._thread = threading.Thread(target=self._drain, name="vmtest-console", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self._closed = True
                    self._cond.notify_all()
                    return
                self.feed(data)
                self._cond.notify_all()

    def feed(self, data: bytes) -> None:
        """Take output (the drain thread, under the lock; tests call it directly)."""
        self._buf += data
        if self.crash is None:
            start = max(self._scanned - self._base, 0)
            end = self._buf.rfind(b"\n", start) + 1
            if end > start:
                found = find_crash(bytes(self._buf[start:end]), complete_lines=True)
                if found is not None:
                    self.crash = CrashSighting(found.title, self._base + start + found.offset)
                self._scanned = self._base + end
        if len(self._buf) > self._max:
            # Drop down to 3/4 at once: the copy is amortized over a quarter of the buffer.
            drop = len(self._buf) - self._max * 3 // 4
            del self._buf[:drop]
            self._base += drop

    @property
    def end(self) -> int:
        """The offset of the end of the output so far."""
        with self._cond:
            return self._base + len(self._buf)

    def final_crash(self) -> CrashSighting | None:
        """`crash`, or a report on the last line that never ended (the guest is gone)."""
        with self._cond:
            if self.crash is not None:
                return self.crash
            start = max(self._scanned - self._base, 0)
            found = find_crash(bytes(self._buf[start:]))
            return None if found is None else \
                CrashSighting(found.title, self._base + start + found.offset)

    @property
    def closed(self) -> bool:
        return self._closed

    def snapshot(self) -> bytes:
        """The output kept in memory (all of it up to MAX_BUFFER_BYTES)."""
        with self._cond:
            return bytes(self._buf)

    def tail(self, lines: int = 30) -> str:
        with self._cond:
            recent = bytes(self._buf[-(lines + 1) * 1024:])
        text = recent.decode(errors="replace").replace("\r", "")
        return "\n".join(text.splitlines()[-lines:])

    def wait_data(self, offset: int, timeout_s: float) -> bytes:
        """Bytes past `offset`, waiting up to timeout_s for some; b'' on timeout/close.
        (A reader more than MAX_BUFFER_BYTES behind gets what is kept.)"""
        end = time.monotonic() + timeout_s
        with self._cond:
            while self._base + len(self._buf) <= offset and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return bytes(self._buf[max(offset - self._base, 0):])

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=2)
