"""The kernel's own selftests in a real guest (issue 12, part 3): built from the 6.1 tree,
run by kselftest's runner, one result per test, and kselftest's conventions (exit 4 =
skip with its reason, a `settings`/--kselftest-timeout limit = TIMEOUT) kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from vmtest.kernel import build as kbuild
from vmtest.kernel import selftests


def _vmtest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=1500,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_mm_selftests_on_6_1_with_a_per_test_table(tmp_path):
    """The kselftest kernel of the default 6.1 (its fragments + kselftest-mm: built by
    this test, the reference kernel untouched) in the guest the collections ask for
    (issue 29): two NUMA nodes, the memory notifier error injection
    module for mem-on-off-test.sh, a DIMM hot-added offline before it."""
    out = tmp_path / "run"
    # (mm:migration on the two nodes is left out here: with 3 vCPUs it ran for minutes
    # under TCG without finishing in this session's one try -- issue 29, not yet measured)
    proc = _vmtest("run", "--kselftest",
                   "mm:madv_populate,mm:soft-dirty,memory-hotplug",
                   "--output", str(out), "--accel", os.environ.get("VMTEST_ACCEL", "auto"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout
    # 6.1 calls the collection vm; the table nests each test's KTAP subtests under it.
    assert "vm:madv_populate" in table and "    MADV_POPULATE_READ with PROT_READ" in table
    assert "memory-hotplug:mem-on-off-test.sh" in table
    doc = json.loads((out / "result.json").read_text())
    assert doc["verdict"] == "ok" and doc["identity"]["scenario"] == "kselftest"
    assert doc["metrics"]["tests_pass"] >= 30 and doc["metrics"]["tests_fail"] == 0
    assert doc["tests"]["vm:soft-dirty"]["status"] == "pass"
    # mem-on-off-test.sh onlined the hot-added memory and loaded the injection module
    log = (out / "kselftest.log").read_text()
    assert "no hot-pluggable memory in offline state" not in log
    assert "memory-notifier-error-inject module is not available" not in log
    guest = doc["kselftest"]["guest"]
    assert guest["not_given"] == {} and guest["given"]["numa_nodes"] == 2
    assert doc["kselftest"]["config_missing"] == {}
    assert log.startswith("# vmtest: vm per-test timeout")


def test_runner_conventions_skip_reason_and_timeout(default_spec, tmp_path):
    """A user's own kselftest install (--kselftest-dir): kselftest's runner from the
    6.1 tree's install and a collection of their own whose tests skip, time out, pass."""
    built = kbuild.build_kernel(default_spec)
    tree_install = selftests.build_selftests(built, "mm")
    mine = tmp_path / "install"
    mine.mkdir()
    shutil.copytree(tree_install.directory / "kselftest", mine / "kselftest")
    shutil.copy(tree_install.directory / "run_kselftest.sh", mine)
    coll = mine / "mine"
    coll.mkdir()
    scripts = {
        "needs-thing.sh": "#!/bin/sh\necho 'SKIP: /dev/thing is missing'\nexit 4\n",
        "slow.sh": "#!/bin/sh\necho started\nsleep 60\n",
        "fine.sh": "#!/bin/sh\necho fine\n",
    }
    for name, text in scripts.items():
        (coll / name).write_text(text)
        (coll / name).chmod(0o755)
    (mine / "kselftest-list.txt").write_text("".join(f"mine:{n}\n" for n in scripts))
    out = tmp_path / "run"
    proc = _vmtest("run", "--kselftest", "mine", "--kselftest-dir", str(mine),
                   "--kselftest-timeout", "3", "--output", str(out),
                   "--accel", os.environ.get("VMTEST_ACCEL", "auto"), cwd=tmp_path)
    # A timeout is a failure of the tests: exit 1, and the table says which and why.
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "result.json").read_text())
    assert doc["tests"]["mine:needs-thing.sh"] == {"status": "skip",
                                                   "reason": "/dev/thing is missing"}
    assert doc["tests"]["mine:slow.sh"]["status"] == "timeout"
    assert "TIMEOUT 3 seconds" in doc["tests"]["mine:slow.sh"]["reason"]
    assert doc["tests"]["mine:fine.sh"] == {"status": "pass"}
    assert "SKIP     /dev/thing is missing" in proc.stdout
