#!/usr/bin/env python3
"""Parallel throughput: the same quick matrix with --jobs 1 and --jobs N; prints both wall
times and their ratio. Kernels must be built already (the matrix builds them otherwise)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def wall(jobs: int, reps: int, results: str) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vmtest.cli", "matrix", "--profile", "quick",
                           "--repetitions", str(reps), "--jobs", str(jobs), "--results",
                           results], capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(1)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        serial = wall(1, args.repetitions, f"{tmp}/serial")
        parallel = wall(args.jobs, args.repetitions, f"{tmp}/parallel")
    runs = args.repetitions * 4
    print(f"{runs} quick runs: serial {serial:.0f} s, --jobs {args.jobs} {parallel:.0f} s, "
          f"throughput x{serial / parallel:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
