#!/usr/bin/env python3
"""Command latency on a running guest, as the pytest plugin's `vm` gives it: one boot,
then N x vm.run("true"); prints the boot time and min/median/p90/max of the latency
(issue 12's bar: median <= 20 ms)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vmtest import kernel_choice
from vmtest.kernel import build as kbuild
from vmtest.pytest_plugin import Guest
from vmtest.qemu import boot


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=100)
    parser.add_argument("--accel", default="tcg")
    args = parser.parse_args()
    image = kbuild.build(kernel_choice.default_build_spec()).image
    with tempfile.TemporaryDirectory(prefix="vmtest-bench-") as tmp:
        started = time.monotonic()
        guest = Guest(image, "patched", boot.BootOptions(accel=args.accel, programs=("bash",)),
                      Path(tmp))
        boot_s = time.monotonic() - started
        try:
            guest.run("true", check=True)  # the first channel: not counted
            latencies = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                guest.run("true", check=True)
                latencies.append((time.perf_counter() - t0) * 1000)
        finally:
            guest.close()
    latencies.sort()
    print(f"boot to ready: {boot_s:.2f} s ({args.accel})")
    print(f"vm.run('true') x {args.runs}: min {latencies[0]:.1f} ms, median "
          f"{statistics.median(latencies):.1f} ms, p90 {latencies[int(0.9 * len(latencies))]:.1f} "
          f"ms, max {latencies[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
