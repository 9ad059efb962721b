"""Memory-management tests written with vmtest's pytest plugin: each runs in a real guest
(`pytest examples/`; `--vmtest-variant patched --vmtest-variant unpatched` runs each test
on both kernels of the reference experiment). One guest per module."""

from __future__ import annotations

import pytest

from vmtest.guest import load


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


def test_migration_between_numa_nodes(vm):
    """migrate_pages(2) between two nodes; needs a guest with two NUMA nodes."""
    nodes = vm.run("ls -d /sys/devices/system/node/node* 2>/dev/null | wc -l").stdout.strip()
    if int(nodes or 0) < 2:
        pytest.skip(f"the guest has {nodes or 0} NUMA node(s): migration between nodes needs "
                    "CONFIG_NUMA and two QEMU -numa nodes")
    result = vm.run("migratepages 1 0 1", check=False)
    assert result.status == 0, result.stderr
