"""`vmtest bisect` on real git histories made from Debian's 6.1 source
(scripts/make-history.py): real builds of every step, real guests, the hotplug-offline
scenario's drains per offline (2.0 with d479960e44f2 reverted, 1.0 with it) as the
metric. The planted commit is found in both directions, a planted build failure is
skipped, an interrupted bisection resumes without running a finished step again,
endpoints that do not differ stop it before git is touched, and a scenario defined as
data in an experiment file (no Python) finds it by its own metric."""

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
    if _bisecting(repo):
        # an earlier run of these tests was killed mid-bisect (its checkout half done):
        # this cached history is the tests' own, put back as it was made
        (repo / ".git" / "index.lock").unlink(missing_ok=True)
        subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard"], check=True)
        subprocess.run(["git", "-C", str(repo), "bisect", "reset"], capture_output=True,
                       check=True)
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


# A scenario defined as data (docs/experiments.md), measuring what the planted commit
# changes. The built-in load hot-adds a DIMM of one memory block, onlines it movable and
# fills tmpfs, whose pages land in it (a movable allocation's zonelist starts at
# ZONE_MOVABLE: gfp_zone(), include/linux/gfp.h); after the command it offlines the block.
# offline_pages() (mm/memory_hotplug.c) on a block holding pages drains the LRU caches
# twice with d479960e44f2 reverted (lru_add_drain_all() on every pass of its migration
# loop: the one that migrates, the one that finds the block empty), once with it
# (lru_cache_disable() before the loop); an empty block would drain once either way, so
# the fill sees to it that there are pages. The metric: the instrumentation's
# offline_pages summary lines (kernels/patches/README.md).
DRAINS_EXPERIMENT = """\
kernels:  # the format needs one; vmtest bisect builds --tree's commits instead
  "6.1": {source: debian:6.1}
scenarios:
  offline-drains:
    description: a hot-added block filled with tmpfs pages, offlined
    run: "true"
    machine: {slots: 2, maxmem: 2G}
    load:
      hotplug: {dimm: 128M, dimms: 1}
      fill: 64M
    metrics:
      - name: offline_drains
        from: dmesg
        summary: {op: offline_pages, field: drains, reduce: mean}
        description: all-CPU LRU drains per offline_pages()
"""


def test_finds_it_by_a_scenario_defined_in_an_experiment_file(tmp_path):
    # test_finds_the_commit_that_fixed_it's history, with the same fragments and no patch:
    # the kernels of the endpoints and of the steps are in the build cache after it
    repo, info = _history("--commits", "6", "--direction", "fix", "--seed", "2")
    folder = tmp_path / "experiment"  # copied into every guest: the file alone
    folder.mkdir()
    config = folder / "drains.yaml"
    config.write_text(DRAINS_EXPERIMENT)
    log_dir = tmp_path / "bisect"
    # 6 runs a side separate constant endpoints at alpha 0.01; a step decides in 4
    proc = subprocess.run([sys.executable, "-m", "vmtest.cli", "bisect", "--tree", str(repo),
                           "--good", "old", "--bad", "new", "--term-old", "broken",
                           "--term-new", "fixed", "--config", str(config),
                           "--scenario", "offline-drains", "--metric", "offline_drains",
                           "--max-runs", "6", "--jobs", "2", "--accel", ACCEL,
                           "--log-dir", str(log_dir)],
                          capture_output=True, text=True, timeout=3600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((log_dir / "report.json").read_text())
    assert report["first"] == info["planted"], proc.stderr[-3000:]
    endpoints = report["endpoints"]
    assert (endpoints["scenario"], endpoints["metric"], endpoints["config"]) == (
        "offline-drains", "offline_drains", str(config))
    # the file's metric separates them: two drains per offline broken, one fixed
    assert min(endpoints["good"]) >= 2.0 and endpoints["bad"] == [1.0] * 6, endpoints
    steps = [e for e in report["steps"] if e.get("final")]
    # every step judged by its runs of the file's scenario (none skipped, none unlogged)
    assert steps and all(e["exit"] in (0, 1) and "offline_drains" in e["why"]
                         for e in steps), steps
    assert len(steps) <= _steps_bar(info)
    text = (log_dir / "report.md").read_text()
    assert f"Scenario offline-drains (from {config}, profile quick), metric offline_drains" \
        in text, text


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
