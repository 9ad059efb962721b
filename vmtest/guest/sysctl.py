"""A variant's sysctls in the guest: names and values checked (they reach a guest shell),
the command that writes them and reads them back, and the parser of its answer. Pure;
vmtest/collect/guest.py runs it."""

from __future__ import annotations

import re
import shlex

# vm.compaction_proactiveness, kernel.numa_balancing, net.ipv4.conf.all.rp_filter: dotted
# segments as /proc/sys names them (kernel/sysctl.c), at least two.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)+")
# One value or several separated by single spaces ("4 4 1 7"): nothing a shell or the
# kernel's parser would read as more than the value.
VALUE = re.compile(r"[A-Za-z0-9_.:,+-]+(?: [A-Za-z0-9_.:,+-]+)*")


def path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def write_command(settings: tuple[tuple[str, str], ...]) -> str:
    """Write each value, then print 'SYSCTL NAME VALUE' as read back ('SYSCTL-MISSING NAME'
    for a name the guest kernel lacks, 'SYSCTL-REFUSED NAME' for a write it refused)."""
    parts = []
    for name, value in settings:
        p = shlex.quote(path(name))
        parts.append(f"if [ -f {p} ]; then printf '%s\\n' {shlex.quote(value)} > {p} "
                     f"2>/dev/null || echo SYSCTL-REFUSED {name}; "
                     f"echo \"SYSCTL {name} $(tr '\\t\\n' '  ' < {p})\"; "
                     f"else echo SYSCTL-MISSING {name}; fi")
    return "\n".join(parts)


def parse_readback(text: str) -> tuple[dict[str, str], list[str], list[str]]:
    """(name -> value read back, names missing, names whose write was refused)."""
    values: dict[str, str] = {}
    missing: list[str] = []
    refused: list[str] = []
    for line in text.splitlines():
        words = line.split(" ", 2)
        if words[0] == "SYSCTL" and len(words) >= 2:
            values[words[1]] = " ".join((words[2] if len(words) > 2 else "").split())
        elif words[0] == "SYSCTL-MISSING" and len(words) == 2:
            missing.append(words[1])
        elif words[0] == "SYSCTL-REFUSED" and len(words) == 2:
            refused.append(words[1])
    return values, missing, refused
