"""`vmtest bisect` on real git histories made from Debian's 6.1 source
(scripts/make-history.py): real builds of every step, real guests, the hotplug-offline
scenario's drains per offline (2.0 with d479960e44f2 reverted, 1.0 with it) as the
metric. The planted commit is found in both directions, a planted build failure is
skipped, an interrupted bisection resumes without running a finished step again, and
endpoints that do not differ stop it before git is touched."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vmtest import paths

ROOT = Path(__file__).resolve().parents[2]
ACCEL = os.environ.get("VMTEST_ACCEL", "auto")
METRIC = ["--scenario", "hotplug-offline", "--profile", "quick",
          "--metric", "drains_per_offline", "--jobs", "2", "--accel", ACCEL]
# drains per offline do not vary between runs: 8 runs a side are plenty (default 16)
BUDGET = ["--max-runs", "8"]


def _history(*args: str) -> tuple[Path, dict[str, Any]]:
    """The history of these make-history.py arguments, in the cache: the same arguments
    and package give the same commits, so a history (and the kernels built from its
    commits) is made once per machine and package version (--reuse)."""
    repo = paths.cache_dir("test-histories") / "-".join(a.strip("-") for a in args)
    # the script imports vmtest: this checkout's, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make-history.py"),
                           str(repo), *args, "--reuse"], capture_output=True, text=True,
                          timeout=900, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    return repo, json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def regression():
    # 8 commits: the revert planted at 6, a build failure at 4 (fixed at 5). git bisect
    # steps onto 4 first (the middle of 2..8), so the skip is exercised.
    return _history("--commits", "8", "--position", "6", "--break-build")


def _bisect(repo: Path, log_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vmtest.cli", "bisect", "--tree",
                             str(repo), "--good", "old", "--bad", "new", *METRIC, *BUDGET,
                             "--log-dir", str(log_dir), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _log(log_dir: Path) -> list[dict[str, Any]]:
    path = log_dir / "bisect-log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _bisecting(repo: Path) -> bool:
    return subprocess.run(["git", "-C", str(repo), "bisect", "log"], capture_output=True,
                          check=False).returncode == 0


def _steps_bar(info: dict[str, Any]) -> int:
    """The issue's bar: ceil(log2 N) + 2 steps, N the commits between the endpoints."""
    return math.ceil(math.log2(info["commits"] - 1)) + 2


def test_finds_the_planted_regression_skips_the_build_failure_and_resumes(
        regression, tmp_path, descendants):
    repo, info = regression
    log_dir = tmp_path / "bisect"
    proc = _bisect(repo, log_dir)
    qemus: set[int] = set()
    try:
        # Interrupted once a commit has been classified by its runs (not only skipped).
        deadline = time.monotonic() + 2400
        while not any(e.get("exit") in (0, 1) for e in _log(log_dir)):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no step classified within 40 min"
            qemus |= {pid for pid, cmd in descendants(proc.pid).items()
                      if "qemu-system" in cmd}
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "--resume" in err, err[-3000:]
    assert not _bisecting(repo), "SIGTERM left the tree mid-bisect"
    assert all(not Path(f"/proc/{pid}").exists() for pid in qemus), "a QEMU outlived it"
    before = _log(log_dir)
    judged = {e["commit"] for e in before if e.get("final")}

    resumed = _bisect(repo, log_dir, "--resume")
    _, err = resumed.communicate(timeout=3600)
    assert resumed.returncode == 0, err[-3000:]
    report = json.loads((log_dir / "report.json").read_text())
    assert report["first"] == info["planted"], err[-3000:]
    assert "Revert" in report["subject"] and (log_dir / "report.md").exists()
    after = _log(log_dir)[len(before):]
    # no finished step was run again: the resumed steps say so, and log nothing new
    assert all(e["commit"] not in judged for e in after), after
    assert sum(c[:12] in err and "not run again" in err for c in judged) >= 1, err[-3000:]
    finals = [e for e in _log(log_dir) if e.get("final")]
    assert len(finals) <= _steps_bar(info), finals
    # the planted build failure: skipped, the reason naming the build log
    broken = subprocess.run(["git", "-C", str(repo), "log", "--format=%H",
                             "--grep=^mm/vmstat: planted build failure$"], capture_output=True,
                            text=True, check=True).stdout.split()
    skips = [e for e in finals if e["commit"] in {b[:12] for b in broken}]
    assert skips and all(e["exit"] == 125 and ".log" in e["why"] for e in skips), finals
    assert not _bisecting(repo)


def test_finds_the_commit_that_fixed_it(tmp_path):
    repo, info = _history("--commits", "6", "--direction", "fix", "--seed", "2")
    log_dir = tmp_path / "bisect"
    proc = _bisect(repo, log_dir, "--term-old", "broken", "--term-new", "fixed")
    _, err = proc.communicate(timeout=3600)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((log_dir / "report.json").read_text())
    assert report["first"] == info["planted"] and report["terms"] == ["broken", "fixed"]
    assert "first fixed commit" in err
    assert len([e for e in report["steps"] if e.get("final")]) <= _steps_bar(info)


def test_endpoints_that_do_not_differ_stop_it_before_git_is_touched(regression, tmp_path):
    repo, info = regression
    # commit 2 (noise) is as good as commit 1 (old): the same drains per offline
    second = subprocess.run(["git", "-C", str(repo), "rev-list", "--reverse",
                             f"{info['old']}..{info['new']}"], capture_output=True,
                            text=True, check=True).stdout.split()[0]
    log_dir = tmp_path / "bisect"
    proc = subprocess.run([sys.executable, "-m", "vmtest.cli", "bisect", "--tree", str(repo),
                           "--good", "old", "--bad", second, *METRIC, "--max-runs", "6",
                           "--log-dir", str(log_dir)], capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "not separated" in proc.stderr and "--max-runs" in proc.stderr
    assert not _bisecting(repo) and _log(log_dir) == []
    endpoints = json.loads((log_dir / "endpoints.json").read_text())
    assert endpoints["good"] == endpoints["bad"] == [1.0] * 6
