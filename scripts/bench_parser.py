#!/usr/bin/env python3
"""dmesg parser throughput: parse a large console log built from recorded real logs, and
one built from the densest of them (an unpatched CMA run: dump_page() blocks and summary
lines), print MB/s (median of 5) for the compiled scan and for the regex scan."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from vmtest.collect import dmesg

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
LOGS = DATA / "logs"
PUBLIC = DATA / "dmesg-corpus"


def corpus(target_mb: int = 64, pattern: str = "*", folder: Path = LOGS) -> str:
    parts = [p.read_text(errors="replace") for p in sorted(folder.glob(pattern))]
    text = "\n".join(parts)
    reps = max(1, target_mb * 2**20 // max(1, len(text)))
    return "\n".join([text] * reps)


def measure(name: str, text: str) -> None:
    size_mb = len(text.encode()) / 2**20
    report = dmesg.parse(text)
    print(f"{name}: {size_mb:.1f} MiB, {report.lines} lines, {len(report.dumps)} dumps, "
          f"{len(report.summaries)} summaries")
    scans = [(True, "compiled scan"), (False, "regex scan (the fallback)")]
    if dmesg.NATIVE_MISSING:
        print(f"  compiled scan: not built ({dmesg.NATIVE_MISSING})")
        scans = scans[1:]
    for native, label in scans:
        rates = []
        for _ in range(5):
            started = time.perf_counter()
            dmesg.parse(text, native=native)
            rates.append(size_mb / (time.perf_counter() - started))
        print(f"  parser throughput, {label}: median {statistics.median(rates):.1f} MB/s "
              f"(min {min(rates):.1f}, max {max(rates):.1f}) over 5 runs")


def main() -> int:
    measure("corpus (every recorded log of vmtest's guests)", corpus())
    # Logs people published (bug reports, mailing lists, syzbot): every prefix form.
    measure("public corpus (tests/data/dmesg-corpus)", corpus(32, "*.log", PUBLIC))
    # The densest real case: an unpatched CMA run, where nearly every line after boot is
    # a summary, a migrate_fail or a dump_page() line.
    measure("dense (unpatched 6.1 cma-stress dmesg only)",
            corpus(32, "6.1-unpatched-cma.dmesg"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
