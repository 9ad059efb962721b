"""Memory-management tests written with vmtest's pytest plugin: each runs in a real guest
(`pytest examples/`; `--vmtest-variant patched --vmtest-variant unpatched` runs each test
on both kernels of the reference experiment). One guest per module. The migration between
NUMA nodes needs a NUMA guest (`--vmtest-numa 2`, a kernel with CONFIG_NUMA) and skips
on others."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vmtest import arch as archs
from vmtest.guest import load

NUMA_MIGRATE_C = Path(__file__).with_name("numa_migrate.c")


def _vmstat(vm, *keys: str) -> dict[str, int]:
    pattern = "|".join(keys)
    out = vm.run(f"grep -E '^({pattern}) ' /proc/vmstat", check=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_hotplug_online_offline_cycles(vm):
    """A hot-added DIMM's blocks go online movable and offline again, three times."""
    blocks = vm.hotplug(256)
    assert len(blocks) == 2
    for _ in range(3):
        vm.set_state(blocks, "online_movable")
        zones = vm.run(f"cat /sys/devices/system/memory/{blocks[0]}/valid_zones",
                       check=True).stdout
        assert "Movable" in zones
        assert all(vm.offline(block, timeout_s=30) for block in blocks)
    report = vm.dmesg()
    offlines = report.op_summary().get("offline_pages", {})
    # The instrumentation (kernels/patches) logs one summary per offline_pages() call.
    assert offlines.get("count") == 6 and offlines.get("failed") == 0


def test_cma_allocation_under_load(vm):
    """CMA allocations succeed while lru-stress keeps the per-CPU LRU batches busy and a
    tmpfs fill puts movable pages in the CMA area."""
    params = load.LoadParams(fill_mib=300, stress_ops="activate,deactivate,lazyfree")
    vm.run(load.start_command(params, cpus=2), check=True, timeout_s=120)
    try:
        pages = 16 << 8  # 16 MiB
        ok = 0
        for _ in range(10):
            if vm.cma_alloc(pages):
                ok += 1
                vm.cma_free(pages)
        assert vm.run(load.RUNNING_COMMAND).status == 0, "the load died"
    finally:
        vm.run(load.STOP_COMMAND, timeout_s=60)
    assert ok == 10
    ops = vm.dmesg().ops("alloc_contig_range")
    assert len(ops) >= 10 and all(op["drains"] >= 1 for op in ops)


def test_compaction_moves_pages(vm):
    """Writing /proc/sys/vm/compact_memory runs compaction over every zone: the
    migration scanner looks at pages (and, with fragmented memory, isolates some)."""
    vm.run("dd if=/dev/urandom of=/dev/shm/frag bs=1M count=64 2>/dev/null; "
           "rm /dev/shm/frag", check=True)
    before = _vmstat(vm, "compact_migrate_scanned", "compact_free_scanned")
    vm.run("echo 1 > /proc/sys/vm/compact_memory", check=True)
    after = _vmstat(vm, "compact_migrate_scanned", "compact_free_scanned")
    assert after["compact_migrate_scanned"] > before["compact_migrate_scanned"]


def test_migration_between_numa_nodes(vm, tmp_path):
    """migrate_pages(2) moves a process's pages from node 0 to node 1: every page of a
    buffer faulted in on node 0 is on node 1 afterwards, with its contents, and the
    kernel counts the migrations. Needs a guest with two NUMA nodes: `--vmtest-numa 2`
    on a kernel with CONFIG_NUMA (the fragment numa, or kselftest-mm's)."""
    nodes = vm.run("ls -d /sys/devices/system/node/node* 2>/dev/null | wc -l").stdout.strip()
    if int(nodes or 0) < 2:
        pytest.skip(f"the guest has {nodes or 0} NUMA node(s): run with --vmtest-numa 2 "
                    "on a kernel with CONFIG_NUMA")
    # The guest has no numactl (its userland is the host's busybox and a few programs):
    # a small program of ours, static, makes the system calls (examples/numa_migrate.c).
    binary = tmp_path / "numa-migrate"
    subprocess.run([archs.get(vm.opts.arch).gcc, "-O2", "-static", "-Wall", "-o",
                    str(binary), str(NUMA_MIGRATE_C)], check=True)
    vm.run("cat > /root/numa-migrate && chmod +x /root/numa-migrate",
           input=binary.read_bytes(), check=True)
    pages = 4096  # 16 MiB of 4 KiB pages
    before = _vmstat(vm, "pgmigrate_success")["pgmigrate_success"]
    out = vm.run(f"/root/numa-migrate 0 1 {pages}", check=True).stdout
    after = _vmstat(vm, "pgmigrate_success")["pgmigrate_success"]
    assert out.splitlines() == [f"before node0={pages}", "migrate_pages 0",
                                f"after node1={pages}"], out
    assert after - before >= pages
