#!/usr/bin/env python3
"""Boot benchmark: N x `vmtest run -- true`; prints min/median/max of the total wall time
(process start to exit, as a user sees it) and of boot-to-SSH-ready."""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--runs", type=int, default=10)
    parser.add_argument("--accel", default="auto")
    parser.add_argument("--kernel", help="vmlinux, bzImage or build dir (default: default build)")
    args = parser.parse_args()
    base = [sys.executable, "-m", "vmtest.cli", "run", "--timings", "--accel", args.accel]
    if args.kernel:
        base += ["--kernel", args.kernel]
    totals, readies, accels = [], [], set()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            started = time.monotonic()
            proc = subprocess.run([*base, "--output", f"{tmp}/{i}", "--", "true"],
                                  capture_output=True, text=True)
            wall = time.monotonic() - started
            m = re.search(r"vmtest-timings ready_s=([\d.]+) total_s=([\d.]+) accel=(\w+)",
                          proc.stderr)
            if proc.returncode != 0 or not m:
                print(f"run {i} failed ({proc.returncode}):\n{proc.stderr}", file=sys.stderr)
                return 1
            totals.append(wall)
            readies.append(float(m.group(1)))
            accels.add(m.group(3))
            print(f"run {i}: total {wall:.2f} s, ready {float(m.group(1)):.2f} s", flush=True)

    def line(name: str, values: list[float]) -> str:
        return (f"{name}: min {min(values):.2f} s, median {statistics.median(values):.2f} s, "
                f"max {max(values):.2f} s")

    print(f"accelerator: {', '.join(sorted(accels))}; runs: {args.runs}")
    print(line("total wall (vmtest run -- true)", totals))
    print(line("boot to SSH-ready            ", readies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
