"""Choosing the accelerator: KVM only where it really boots a guest.

On nested hosts /dev/kvm can open fine while every Linux guest stalls right after
"Decompressing Linux..." (measured on the project's CI machines: still spinning in
the decompressor after 150 s, where TCG is past it in under a second). So `auto`
trusts KVM only after a guest has booted under it; a stall within the probe's
deadline makes it fall back to TCG, loudly, and the verdict is remembered per host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmtest import hostcmd, paths
from vmtest.deadline import Clock, utc_now
from vmtest.errors import MissingRequirement
from vmtest.guest import words

log = logging.getLogger(__name__)

# What --accel accepts (the command line offers exactly these).
ACCELS = ("auto", "kvm", "tcg")
# Under a working KVM our guests reach init in well under a second; 10 s is generous
# yet bounds the cost of a broken KVM to one short wait per host.
PROBE_DEADLINE_S = 10.0
# The guest init's first line; reaching it means the kernel booted.
BOOTED_MARKER = words.said(words.INIT)


def kvm_openable(dev: str = "/dev/kvm") -> tuple[bool, str]:
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, f"{dev} does not exist (no KVM module, or not a VM host)"
    except PermissionError:
        return False, f"{dev} is not accessible (add yourself to group kvm)"
    except OSError as exc:
        return False, f"{dev}: {exc.strerror}"
    os.close(fd)
    return True, f"{dev} opens"


@dataclass(frozen=True)
class ProbeResult:
    booted: bool
    elapsed_s: float
    reason: str


def watch_boot(read: Callable[[float], bytes], clock: Clock, deadline_s: float,
               exited: Callable[[], bool] = lambda: False) -> ProbeResult:
    """Watch console output until the booted marker or the deadline.

    `read(timeout_s)` returns new console bytes (b'' if none came). Pure apart from
    its arguments, so tests drive it with a fake console and a fake clock.
    """
    start = clock()
    seen = b""
    while True:
        elapsed = clock() - start
        if BOOTED_MARKER in seen:
            return ProbeResult(True, elapsed, "guest reached init")
        if exited():
            return ProbeResult(False, elapsed, "QEMU exited during the probe")
        if elapsed >= deadline_s:
            last = seen.decode(errors="replace").strip().splitlines()
            where = f"last console line: {last[-1]!r}" if last else "no console output at all"
            return ProbeResult(False, elapsed,
                               f"no init after {deadline_s:.0f} s under KVM ({where})")
        seen += read(min(0.2, deadline_s - elapsed))


def host_fingerprint() -> str:
    """What the verdict depends on: host kernel, CPU model, QEMU version."""
    try:
        qemu = hostcmd.output(["qemu-system-x86_64", "--version"])[1].split("\n")[0]
    except FileNotFoundError:
        qemu = "none"
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{os.uname().release}|{cpu}|{qemu}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class VerdictStore:
    """Remembers per host whether KVM boots guests (~/.cache/vmtest/accel.json)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.cache_root() / "accel.json"

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, host: str) -> dict[str, object] | None:
        return self._load().get(host)

    def put(self, host: str, kvm_works: bool, reason: str) -> None:
        data = self._load()
        data[host] = {"kvm_works": kvm_works, "reason": reason,
                      "when": utc_now()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        paths.write_atomic(self.path, json.dumps(data, indent=2) + "\n")

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class AccelChoice:
    """What to try first, and whether a KVM boot must be watched as a probe."""

    accel: str
    probe: bool
    note: str
    # KVM opens but was found not to boot guests here: a fallback worth one warning.
    kvm_broken: bool = False


def choose(requested: str, store: VerdictStore, host: str | None = None,
           openable: Callable[[], tuple[bool, str]] | None = None) -> AccelChoice:
    """What to boot under. `kvm` asked for is probed like `auto` (a KVM that does not
    boot guests must fail loudly, not hang into a "kernel hang" verdict); a remembered
    failure fails it at once (MissingRequirement), `vmtest doctor --reprobe` forgets it."""
    if requested == "tcg":
        return AccelChoice("tcg", False, "TCG requested")
    ok, why = (openable or kvm_openable)()
    if requested == "kvm" and not ok:
        raise MissingRequirement(f"--accel kvm: {why}",
                                 hint="use --accel auto (TCG where KVM is not usable)")
    if not ok:
        return AccelChoice("tcg", False, f"KVM not usable: {why}; using TCG")
    verdict = store.get(host or host_fingerprint())
    if verdict is None:
        return AccelChoice("kvm", True, "KVM opens; probing whether it boots a guest")
    if verdict.get("kvm_works"):
        return AccelChoice("kvm", False, "KVM boots guests on this host (remembered)")
    if requested == "kvm":
        raise MissingRequirement(f"--accel kvm: KVM does not boot guests on this host "
                                 f"({verdict.get('reason')}, remembered in {store.path})",
                                 hint="use --accel auto or tcg; `vmtest doctor --reprobe` "
                                      "probes again")
    return AccelChoice("tcg", False,
                       f"KVM opens but does not boot guests on this host ({verdict.get('reason')}, "
                       f"remembered in {store.path}); using TCG", kvm_broken=True)
