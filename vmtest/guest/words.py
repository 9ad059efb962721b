"""What the guest's init says on the console: one word a line, `VMTEST-WORD [ARG]`.

guest/init.sh says them through its `say` function, the share script qemu/boot.py
writes says MOUNTED and NO9P, and the console exec channel ends a command with EXIT;
the host reads them here and nowhere else by another spelling
(tests/unit/test_words.py checks init.sh and the share script against this list).
"""

from __future__ import annotations

import re

PREFIX = "VMTEST-"

INIT = "INIT"  # PID 1 runs: the kernel booted (the KVM probe's sign)
SSHD = "SSHD"  # dropbear started (the host may connect early)
NONET = "NONET"  # no eth0: a kernel without virtio-net
READY = "READY"  # READY RELEASE: the guest is ready; the kernel's release follows
NOPORTS = "NOPORTS"  # no virtio-serial ports for the run's command
MOUNTED = "MOUNTED"  # MOUNTED TAG: a shared folder is mounted
NO9P = "NO9P"  # the kernel has no 9p file system
EXIT = "EXIT"  # EXIT-NONCE:STATUS: a console command's end (channel/console_expect.py)

WORDS = (INIT, SSHD, NONET, READY, NOPORTS, MOUNTED, NO9P, EXIT)


def said(word: str, arg: str = "") -> bytes:
    """The console bytes of `word` (with its argument, when given)."""
    return f"{PREFIX}{word}{' ' + arg if arg else ''}".encode()


READY_RE = re.compile(re.escape(said(READY)) + rb" ([^\r\n]+)\r?\n")
