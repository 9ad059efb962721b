"""Guest snapshots: the full snapshot sections and the per-step counter lines."""

import shutil
import subprocess

import pytest

from vmtest.collect import snapshot

SNAPSHOT_TEXT = """### vmstat
pgmigrate_success 120
pgmigrate_fail 3
cma_alloc_success 7
### meminfo
MemTotal:        1004256 kB
CmaFree:          262144 kB
### cma-sysfs reserved
alloc_pages_success 1792
alloc_pages_fail 0
### cma-debugfs reserved
used 0
maxchunk 65536
### end
"""


def test_parse_snapshot_sections():
    snap = snapshot.parse_snapshot(SNAPSHOT_TEXT)
    assert snap["vmstat"] == {"pgmigrate_success": 120, "pgmigrate_fail": 3,
                              "cma_alloc_success": 7}
    assert snap["meminfo_kib"] == {"MemTotal": 1004256, "CmaFree": 262144}
    assert snap["cma_sysfs"] == {"reserved": {"alloc_pages_success": 1792,
                                              "alloc_pages_fail": 0}}
    assert snap["cma_debugfs"]["reserved"]["maxchunk"] == 65536


def test_vmstat_delta_only_known_keys():
    before = {"vmstat": {"pgmigrate_success": 100, "nr_free_pages": 5}}
    after = {"vmstat": {"pgmigrate_success": 160, "pgmigrate_fail": 2, "nr_free_pages": 9}}
    assert snapshot.vmstat_delta(before, after) == {"pgmigrate_success": 60,
                                                    "pgmigrate_fail": 2}


def test_step_lines_and_delta():
    text = ("noise\n"
            "vmtest-step pre:0 pgmigrate_success=100 pgmigrate_fail=1 cma_alloc_success=4 "
            "MemFree_kib=300000 CmaFree_kib=100000 \n"
            "vmtest-step post:0 pgmigrate_success=1100 pgmigrate_fail=4 cma_alloc_success=5 "
            "MemFree_kib=200000 CmaFree_kib=0 \n")
    steps = snapshot.parse_step_lines(text)
    assert set(steps) == {"pre:0", "post:0"}
    delta = snapshot.step_delta(steps["pre:0"], steps["post:0"])
    assert delta["pgmigrate_success"] == 1000
    assert delta["pgmigrate_fail"] == 3
    assert delta["cma_alloc_success"] == 1
    assert delta["CmaFree_kib_before"] == 100000 and delta["CmaFree_kib_after"] == 0


@pytest.mark.skipif(shutil.which("awk") is None, reason="needs awk")
def test_step_command_runs_in_a_posix_shell():
    """The command is shell text run by the guest's busybox sh; the host's sh and awk
    read the host's own /proc the same way, which checks quoting and the line format."""
    out = subprocess.run(["sh", "-c", snapshot.step_snapshot_command("pre:$i")],
                         capture_output=True, text=True, check=True, env={"i": "7"}).stdout
    steps = snapshot.parse_step_lines(out)
    assert list(steps) == ["pre:7"]
    assert "pgmigrate_success" in steps["pre:7"] and "MemFree_kib" in steps["pre:7"]
