#!/usr/bin/env python3
"""dmesg parser throughput, printed as MB/s (median of 5 runs each):

- end to end: `vmtest dmesg FILE --json` (`python -m vmtest.cli`, a new process each
  run: start, read, parse, JSON out to /dev/null) on a 64 MiB concatenation of the
  recorded guest logs (tests/data/logs, repeated), written to a temp dir;
- the scan alone (dmesg.parse() in this process) on the same text, on the public
  corpus (tests/data/dmesg-corpus, repeated) and on the densest recorded log (an
  unpatched CMA run: dump_page() blocks and summary lines);
- what follows the scan for the JSON output (summary_dict() and json.dumps()).

    python3 scripts/bench_parser.py [--mib N] [--runs N] [--skip-e2e] [--tree DIR...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vmtest.collect import dmesg  # noqa: E402

DATA = ROOT / "tests" / "data"
LOGS = DATA / "logs"
PUBLIC = DATA / "dmesg-corpus"


def corpus(target_mib: int = 64, pattern: str = "*", folder: Path = LOGS) -> str:
    """The files of `folder` matching `pattern`, joined, repeated to about target_mib."""
    parts = [p.read_text(errors="replace") for p in sorted(folder.glob(pattern))]
    text = "\n".join(parts)
    reps = max(1, target_mib * 2**20 // max(1, len(text.encode())))
    return "\n".join([text] * reps)


def _median_rate(size_mb: float, runs: int, work: Callable[[], object]) -> str:
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        rates.append(size_mb / (time.perf_counter() - started))
    return (f"median {statistics.median(rates):.1f} MB/s "
            f"(min {min(rates):.1f}, max {max(rates):.1f}) over {runs} runs")


def scan_alone(name: str, text: str, runs: int) -> None:
    size_mb = len(text.encode()) / 1e6
    report = dmesg.parse(text)
    print(f"{name}: {size_mb:.1f} MB, {report.lines} lines, {len(report.dumps)} dumps, "
          f"{len(report.summaries)} summaries, {len(report.splats)} splats")
    print(f"  parse (the scan alone): {_median_rate(size_mb, runs, lambda: dmesg.parse(text))}")


def after_scan(text: str, runs: int) -> None:
    """The JSON output's share: summary_dict() and json.dumps() of a parsed report, with
    the cyclic GC off as `vmtest dmesg` has it."""
    size_mb = len(text.encode()) / 1e6
    report = dmesg.parse(text)
    gc.disable()
    try:
        rate = _median_rate(size_mb, runs, lambda: json.dumps(report.summary_dict()))
    finally:
        gc.enable()
    print(f"  summary_dict + json.dumps (after the scan): {rate}")


def end_to_end(text: str, runs: int, trees: list[Path]) -> None:
    """`vmtest dmesg FILE --json` in a new process per run, on a file of `text`, for each
    checkout in `trees` (runs interleaved, so that every tree sees the same load)."""
    with tempfile.TemporaryDirectory(prefix="vmtest-bench-parser-") as tmp:
        path = Path(tmp) / "corpus.log"
        path.write_text(text)
        size_mb = path.stat().st_size / 1e6
        argv = [sys.executable, "-m", "vmtest.cli", "dmesg", str(path), "--json"]
        rates: dict[Path, list[float]] = {tree: [] for tree in trees}
        cpu_rates: dict[Path, list[float]] = {tree: [] for tree in trees}
        for _ in range(runs):
            for tree in trees:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                subprocess.run(argv, check=True, cwd=tree, stdout=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(tree)})
                rates[tree].append(size_mb / (time.perf_counter() - started))
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                cpu_rates[tree].append(size_mb / cpu_s)
        for tree, got in rates.items():
            cpu = cpu_rates[tree]
            print(f"end to end, `vmtest dmesg FILE --json` on {size_mb:.1f} MB, {tree} "
                  f"({sys.executable}): median {statistics.median(got):.1f} MB/s "
                  f"(min {min(got):.1f}, max {max(got):.1f}) over {runs} runs; per CPU "
                  f"second (user + sys, what a loaded host does not change much): median "
                  f"{statistics.median(cpu):.1f} MB/s (min {min(cpu):.1f}, max {max(cpu):.1f})"
                  f"; load average {os.getloadavg()[0]:.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=64, help="size of the built log (MiB)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--skip-e2e", action="store_true", help="only the in-process figures")
    ap.add_argument("--tree", type=Path, action="append", default=[],
                    help="another vmtest checkout to run end to end beside this one (e.g. "
                         "`git archive` of an older commit; repeatable)")
    args = ap.parse_args()
    text = corpus(args.mib)
    if not args.skip_e2e:
        end_to_end(text, args.runs, [ROOT, *args.tree])
    scan_alone("recorded guest logs (tests/data/logs)", text, args.runs)
    after_scan(text, args.runs)
    del text
    # Logs people published (bug reports, mailing lists, syzbot): every prefix form.
    scan_alone("public corpus (tests/data/dmesg-corpus)", corpus(32, "*.log", PUBLIC),
               args.runs)
    # The densest real case: nearly every line after boot is a summary, a migrate_fail
    # or a dump_page() line.
    scan_alone("dense (unpatched 6.1 cma-stress dmesg only)",
               corpus(32, "6.1-unpatched-cma.dmesg"), args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
