"""Ways to talk to a guest: SSH (paramiko), the serial console (pexpect), and a
command's standard streams on virtio-serial ports (`vmtest run -- CMD`)."""

from __future__ import annotations

import time
from collections.abc import Callable

# PATH of a command in the guest, whichever way it runs.
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def let_watch_name_it(watch: Callable[[], None] | None, grace_s: float = 3.0) -> None:
    """A channel to the guest dropped mid-command: give `watch` (the machine's crash and
    exit check, whose console and process state lag the socket) a moment to raise with
    the cause. Returns if it does not; the caller then raises its own error."""
    deadline = time.monotonic() + grace_s
    while watch is not None and time.monotonic() < deadline:
        watch()
        time.sleep(0.05)
