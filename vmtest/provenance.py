"""What made a result: vmtest's version and commit, QEMU's and the compiler's versions, the
host's kernel. Written into every result.json and report.json (docs/result-schema.md)."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

from vmtest import __version__, hostcmd
from vmtest import arch as archs

PACKAGE = Path(__file__).resolve().parent
# Written into the wheel by build_backend/vmtest_backend.py from the checkout it was
# built in.
BAKED = PACKAGE / "_commit.txt"


@functools.cache
def commit() -> str:
    """The commit vmtest runs from: git's answer where the package is a checkout's (with
    `-dirty` for uncommitted changes), else the one baked in at build time, else
    'unknown'."""
    checkout = PACKAGE.parent
    if (checkout / ".git").exists():
        try:
            proc = subprocess.run(["git", "-C", str(checkout), "describe", "--always",
                                   "--dirty", "--abbrev=40", "--exclude=*"],
                                  capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    try:
        return BAKED.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def version_line() -> str:
    """`vmtest --version`: the version and the commit."""
    return f"vmtest {__version__} (commit {commit()})"


def _first_line(argv: list[str]) -> str:
    try:
        status, out = hostcmd.output(argv)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "not found"
    return out.splitlines()[0].strip() if status == 0 and out.strip() else "unknown"


def describe(arch: str = "x86_64") -> dict[str, Any]:
    """The provenance record of a run whose guest is `arch`: its QEMU and the compiler
    that built its kernel (the cross compiler of a foreign architecture). Each tool's
    answer is remembered until its binary changes (hostcmd), so this costs a few stat(2)
    calls after the first time."""
    target = archs.get(arch)
    return {"vmtest": __version__, "vmtest_commit": commit(),
            "qemu": _first_line([target.qemu, "--version"]),
            "gcc": _first_line([target.gcc, "--version"]),
            "host_kernel": platform.release(), "python": platform.python_version()}
