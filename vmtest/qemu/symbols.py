"""Where are the vCPUs? Program counters read over QMP, named from the kernel's own
symbol table (`nm` on the ELF vmlinux), for hangs that print nothing."""

from __future__ import annotations

import bisect
import re
import subprocess
from pathlib import Path

_NM_LINE = re.compile(r"^([0-9a-f]+) ([tTwW]) (\S+)$")
_RIP = re.compile(r"\bRIP=([0-9a-f]{16})\b")


def parse_nm(text: str) -> list[tuple[int, str]]:
    """Text symbols from `nm -n` output, sorted by address."""
    symbols = []
    for line in text.splitlines():
        m = _NM_LINE.match(line.strip())
        if m:
            symbols.append((int(m.group(1), 16), m.group(3)))
    symbols.sort()
    return symbols


def load(image: Path) -> list[tuple[int, str]]:
    """The text symbols of an ELF vmlinux; [] for a bzImage or when nm is missing."""
    try:
        with image.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                return []
        out = subprocess.run(["nm", "-n", str(image)], capture_output=True, text=True,
                             timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nm(out)


def name(address: int, symbols: list[tuple[int, str]]) -> str:
    """'func+0xoff' for an address inside the kernel's text, else the hex address."""
    if symbols:
        i = bisect.bisect_right(symbols, (address, "\uffff")) - 1
        if i >= 0 and address - symbols[i][0] < 0x100000:
            return f"{symbols[i][1]}+{address - symbols[i][0]:#x}"
    return f"{address:#x}"


def parse_rips(info_registers: str) -> list[int]:
    """The RIP of each vCPU from HMP `info registers -a`."""
    return [int(m.group(1), 16) for m in _RIP.finditer(info_registers)]
