#!/usr/bin/env python3
"""The bisection bar: `vmtest bisect` on generated histories (scripts/make-history.py),
one per seed, and whether it names the planted commit, in how many steps, how long.

    python3 scripts/bench_bisect.py [--seeds 1 2 3] [--direction regression|fix]
        [--commits 16] [--scenario hotplug-offline] [--profile quick]
        [--metric drains_per_offline] [--max-runs 8] [--jobs auto]

Prints one line per step (build and runs apart) as vmtest bisect does, then per
bisection: found or not, steps against the bar ceil(log2 N) + 2 (N: the commits after
the good endpoint), the endpoints' runs, the wall time; then the summary. Histories and
their kernels stay in the cache (~/.cache/vmtest/bench-histories): a second run of the
same seeds builds nothing and measures the runs again.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vmtest import paths  # noqa: E402


def history(seed: int, direction: str, commits: int) -> tuple[Path, dict]:
    repo = paths.cache_dir("bench-histories") / f"{direction}-{commits}-seed{seed}"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make-history.py"),
                           str(repo), "--seed", str(seed), "--direction", direction,
                           "--commits", str(commits), "--reuse"], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"bench_bisect: make-history failed: {proc.stderr.strip()}")
    return repo, json.loads(proc.stdout.splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--direction", choices=("regression", "fix"), default="regression")
    ap.add_argument("--commits", type=int, default=16)
    # The defaults: what the bar was measured with (README). cma-stress --profile quick
    # is refused on a quiet host: its 30 allocations show the reverted kernel's failures
    # in ~40 % of runs (docs/findings.md); bisect cma-stress with --profile verdict.
    ap.add_argument("--scenario", default="hotplug-offline")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--metric", default="drains_per_offline")
    ap.add_argument("--max-runs", default="8")
    ap.add_argument("--jobs", default="auto")
    ap.add_argument("--out", type=Path, default=Path("bench-bisect"),
                    help="the bisections' log folders (default: ./bench-bisect)")
    args = ap.parse_args()
    # SIGTERM as Ctrl-C: the running bisection is stopped, not left behind
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bar = math.ceil(math.log2(args.commits - 1)) + 2  # N: the commits after old
    rows = []
    for seed in args.seeds:
        repo, info = history(seed, args.direction, args.commits)
        log_dir = (args.out / f"{args.direction}-seed{seed}-{int(time.time())}").resolve()
        terms = ["--term-old", "broken", "--term-new", "fixed"] \
            if args.direction == "fix" else []
        argv = [sys.executable, "-m", "vmtest.cli", "bisect", "--tree", str(repo),
                "--good", "old", "--bad", "new", "--scenario", args.scenario,
                "--profile", args.profile, "--metric", args.metric,
                "--max-runs", args.max_runs, "--jobs", args.jobs, "--log-dir", str(log_dir),
                *terms]
        print(f"== seed {seed}: {args.direction}, planted at commit {info['position']} of "
              f"{args.commits} ({info['planted'][:12]})", flush=True)
        started = time.monotonic()
        proc = subprocess.Popen(argv)
        try:
            proc.wait()
        except BaseException:  # Ctrl-C, SIGTERM: the bisection resets its tree and stops
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            raise
        wall = time.monotonic() - started
        report_path = log_dir / "report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        steps = [s for s in report.get("steps", []) if s.get("final")]
        endpoints = report.get("endpoints") or {}
        found = report.get("first") == info["planted"]
        row = {"seed": seed, "exit": proc.returncode, "found": found, "steps": len(steps),
               "wall_s": round(wall), "endpoint_runs": len(endpoints.get("good", [])),
               "endpoints_s": endpoints.get("wall_s"),
               "build_s": report.get("build_s"), "runs_s": report.get("runs_s")}
        rows.append(row)
        if proc.returncode in (130, 143, -signal.SIGINT, -signal.SIGTERM):
            print(f"bench_bisect: seed {seed}'s bisection was interrupted: stopping",
                  file=sys.stderr)
            break
        print(f"== seed {seed}: {'FOUND' if found else 'NOT found'} "
              f"({report.get('first', '-')[:12]}), exit {proc.returncode}, {len(steps)} steps "
              f"(bar {bar}), endpoints {row['endpoint_runs']} runs a side in "
              f"{row['endpoints_s']} s, steps' builds {row['build_s']} s and runs "
              f"{row['runs_s']} s, wall {wall:.0f} s", flush=True)
    walls = sorted(r["wall_s"] for r in rows)
    print(f"bench_bisect: found {sum(r['found'] for r in rows)}/{len(rows)}, steps "
          f"{[r['steps'] for r in rows]} (bar {bar}), wall median {walls[len(walls) // 2]} s "
          f"({args.scenario} {args.profile}, --max-runs {args.max_runs}, --jobs {args.jobs})")
    print(json.dumps(rows))
    return 0 if all(r["found"] and r["steps"] <= bar for r in rows) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("bench_bisect: interrupted")
