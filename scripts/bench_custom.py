#!/usr/bin/env python3
"""Overhead of a data-defined scenario over the same command run by `vmtest run -- CMD`
(issue 26's bar: <= 1.1x wall time per run). Alternates the two, N times each, on the
default kernel, and prints each run's wall time, the medians and their ratio.

    python3 scripts/bench_custom.py -n 3

The work: examples/experiments/sources/compact.sh (ROUNDS compactions of all memory,
a second apart) in a 1 GiB, 2-vCPU guest; the scenario reads one metric from its stdout
(the least a scenario does: snapshots, dmesg and the trace are read whatever the
metrics). Both are `vmtest` processes as a user types them; wall time includes boot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "examples" / "experiments" / "sources"
EXPERIMENT = """\
kernels:
  "6.1":
    source: debian:6.1
    patches: [6.1/vmtest-instrumentation.patch]
scenarios:
  bench:
    run: ./compact.sh
    env: {{ROUNDS: {rounds}}}
    machine: {{memory: 1G, cpus: 2}}
    metrics:
      - {{name: rounds_ms, from: stdout, pattern: 'round_ms=([0-9.]+)', reduce: sum}}
"""


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"bench_custom: {argv[3:6]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    vmtest = [sys.executable, "-m", "vmtest.cli", "run"]
    with tempfile.TemporaryDirectory(prefix="vmtest-bench-custom-") as tmp:
        folder = Path(tmp) / "exp"
        folder.mkdir()
        (folder / "compact.sh").write_bytes((SOURCES / "compact.sh").read_bytes())
        (folder / "compact.sh").chmod(0o755)
        (folder / "bench.yaml").write_text(EXPERIMENT.format(rounds=args.rounds))
        scenario = [*vmtest, "--config", str(folder / "bench.yaml"), "--scenario", "bench",
                    "--variant", "default", "--output"]
        command = [*vmtest, "--memory", "1G", "--cpus", "2", "--no-share",
                   "--copy", f"{folder}:/root/experiment", "--",
                   # ssh semantics: the words are joined and run by the guest's shell
                   f"cd /root/experiment && ROUNDS={args.rounds} ./compact.sh"]
        walls: dict[str, list[float]] = {"scenario": [], "command": []}
        for i in range(args.runs):
            walls["command"].append(timed(command))
            walls["scenario"].append(timed([*scenario, str(Path(tmp) / f"run{i}")]))
            print(f"run {i + 1}: command {walls['command'][-1]:.2f} s, scenario "
                  f"{walls['scenario'][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"median wall: vmtest run -- CMD {med['command']:.2f} s, data-defined scenario "
          f"{med['scenario']:.2f} s: {med['scenario'] / med['command']:.2f}x")
    # each scenario run beside the command run just before it
    pairs = sorted(sc / cmd for sc, cmd in zip(walls["scenario"], walls["command"],
                                                strict=True))
    print(f"per pair (scenario / the command run before it): median "
          f"{statistics.median(pairs):.2f}x, range {pairs[0]:.2f}-{pairs[-1]:.2f}x; "
          f"load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
