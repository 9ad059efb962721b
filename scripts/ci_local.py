#!/usr/bin/env python3
"""What the CI workflow's seed jobs do, run here on the quick profile: shard 1/2 and 2/2
of a matrix into their own results directories, then merge them and render the report.
Checks what the workflow relies on (issue 15) and prints it:

- every shard holds both variants of each of its repetition blocks;
- the merged report equals the report of the same run documents put in one directory;
- merging with a shard missing exits 3.

Exit 0 when all hold."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def vmtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True)


def report(directory: Path) -> dict[str, object]:
    data = json.loads((directory / "report.json").read_text())
    data.pop("config", None)
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "lru-migration.yaml"))
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--jobs", default="2")
    parser.add_argument("--accel", default="auto")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="vmtest-ci-local-") as tmp:
        work = Path(tmp)
        shards = []
        for index in (1, 2):  # the seed-shards job, once per matrix entry
            out = work / f"shard-{index}"
            proc = vmtest("matrix", args.config, "--profile", "quick", "--repetitions",
                          str(args.repetitions), "--jobs", args.jobs, "--accel", args.accel,
                          "--shard", f"{index}/2", "--results", str(out))
            print(f"shard {index}/2: exit {proc.returncode}")
            if proc.returncode not in (0, 1):
                print(proc.stderr[-2000:])
                return 1
            shards.append(out)
            blocks: dict[str, set[str]] = {}
            for line in (out / "index.jsonl").read_text().splitlines():
                run = json.loads(line)
                blocks.setdefault(f"{run['kernel']}/{run['scenario']}/r{run['repetition']}",
                                  set()).add(run["variant"])
            paired = all(len(variants) == 2 for variants in blocks.values())
            print(f"  {len(blocks)} blocks, both variants in each: {paired}")
            ok &= paired
        merged = work / "merged"  # the merge job
        proc = vmtest("merge", str(merged), *map(str, shards))
        print(f"merge: exit {proc.returncode}")
        ok &= proc.returncode == 0
        rendered = vmtest("report", str(merged))
        whole = work / "whole"  # the same documents, one directory
        (whole / "runs").mkdir(parents=True)
        shutil.copy(shards[0] / "matrix.json", whole / "matrix.json")
        for shard in shards:
            for run_dir in (shard / "runs").iterdir():
                shutil.copytree(run_dir, whole / "runs" / run_dir.name)
        vmtest("report", str(whole))
        same = report(merged) == report(whole)
        print(f"report: exit {rendered.returncode}; merged == one directory: {same}")
        ok &= same
        missing = vmtest("merge", str(work / "half"), str(shards[0]))
        first = next((ln for ln in missing.stderr.splitlines() if "error" in ln), "")
        print(f"merge without shard 2: exit {missing.returncode}: {first}")
        ok &= missing.returncode == 3
    print("ci-local: " + ("all checks hold" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
