"""Where are the vCPUs? Program counters read over QMP, named from the kernel's own
symbol table (`nm` on the ELF vmlinux, or the System.map a build keeps beside an image
that is no ELF file: arm64's Image, a bzImage), for hangs that print nothing."""

from __future__ import annotations

import bisect
import re
import subprocess
from pathlib import Path

_NM_LINE = re.compile(r"^([0-9a-f]+) ([tTwW]) (\S+)$")
# x86-64's "RIP=" (target/i386/cpu-dump.c), arm64's " PC=" (target/arm/cpu.c,
# aarch64_cpu_dump_state), one per vCPU in HMP `info registers -a`.
_PC = re.compile(r"(?:\bRIP=|(?<![A-Z])PC=)([0-9a-f]{16})\b")


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
    """The text symbols of an ELF vmlinux, else of the System.map beside the image; []
    when there is neither (or nm is missing)."""
    try:
        with image.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                system_map = image.with_name("System.map")
                return parse_nm(system_map.read_text()) if system_map.is_file() else []
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
    """The program counter (x86-64's RIP, arm64's PC) of each vCPU from HMP
    `info registers -a`."""
    return [int(m.group(1), 16) for m in _PC.finditer(info_registers)]
