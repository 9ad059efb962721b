"""Gathering from a running guest: state snapshots, tracing, the kernel log and the
trace as artifacts. The parsers (dmesg, tracefs, snapshot) are pure; this module is
the part that talks to the guest."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.collect import snapshot as snapshot_parser
from vmtest.collect import tracefs
from vmtest.deadline import Deadline
from vmtest.errors import InfraError
from vmtest.guest import memory, sysctl
from vmtest.qemu import virtio_mem

if TYPE_CHECKING:  # annotations only: loading a scenario needs no SSH or QMP
    from vmtest.qemu.machine import Machine


def check_paths(vm: Machine, need: dict[str, str]) -> None:
    """Each path must exist in the guest, else say which kernel option is missing."""
    script = "; ".join(f"[ -e {shlex.quote(p)} ] || echo MISSING {shlex.quote(p)}"
                       for p in need)
    missing = [line.split(" ", 1)[1] for line in vm.ssh().check_output(script).splitlines()
               if line.startswith("MISSING ")]
    if missing:
        options = ", ".join(sorted({need[p] for p in missing}))
        raise InfraError(f"the guest kernel lacks {', '.join(missing)}",
                         hint=f"build it with {options} (kernels/fragments/mm-migration.config)")


def snapshot(vm: Machine) -> dict[str, Any]:
    """vmstat, meminfo, CMA sysfs and debugfs in one round trip."""
    return snapshot_parser.parse_snapshot(vm.ssh().check_output(snapshot_parser.SNAPSHOT_SCRIPT))


def offline_blocks(vm: Machine) -> set[str]:
    """The guest's memory blocks that are offline."""
    return memory.parse_blocks(vm.ssh().check_output(memory.OFFLINE_BLOCKS_COMMAND))


def hot_add(vm: Machine, dimms: list[tuple[int, str | None]],
            timeout_s: float = 30) -> tuple[list[str], list[str]]:
    """Hot-add pc-dimms ((size MiB, id or None) each) and wait until the guest shows
    all their memory blocks, offline: (the DIMMs' ids, the new blocks in address
    order). The scenario and the pytest plugin hot-add through this."""
    known = offline_blocks(vm)
    ids = [vm.hotplug_dimm(size_mib, dimm_id) for size_mib, dimm_id in dimms]
    expect = sum(size_mib // memory.BLOCK_MIB for size_mib, _ in dimms)
    deadline = Deadline(timeout_s)
    while True:
        new = sorted(offline_blocks(vm) - known, key=memory.block_start_pfn)
        if len(new) >= expect:
            return ids, new
        if deadline.expired:
            raise InfraError(f"hot-added memory did not appear in the guest ({len(new)} of "
                             f"{expect} blocks after {timeout_s:.0f} s)",
                             hint="CONFIG_ACPI_HOTPLUG_MEMORY / CONFIG_MEMORY_HOTPLUG?")
        time.sleep(0.2)


def grow_virtio_mem(vm: Machine, size_mib: int, timeout_s: float = 60
                    ) -> tuple[virtio_mem.Resize, list[str]]:
    """Resize the guest's virtio-mem device up to size_mib and wait until the guest
    shows the memory blocks its driver added, offline (vmtest's kernels do not online
    new memory on their own): (the resize, the device's offline blocks in address order
    -- found by the device's address range, so that a block an earlier shrink had
    emptied but the guest had not yet removed, which the driver plugs again, counts). A
    device that does not reach the size is an infrastructure error (no driver, or no
    room)."""
    devices = vm.memory_devices()
    before_mib, _ = virtio_mem.state(devices)
    first, span = virtio_mem.region(devices)
    grown = virtio_mem.resize(vm, size_mib, timeout_s)
    if not grown.done:
        raise InfraError(f"the guest's virtio-mem device reached {grown.reached_mib} of "
                         f"{size_mib} MiB in {grown.seconds:.0f} s",
                         hint="the kernel needs CONFIG_VIRTIO_MEM (the fragment virtio-mem "
                              "on x86_64); the driver keeps at most 1 GiB offline "
                              "(drivers/virtio/virtio_mem.c, offline_threshold)")
    expect = (size_mib - before_mib) // memory.BLOCK_MIB
    deadline = Deadline(timeout_s)
    while True:
        new = sorted(device_blocks(offline_blocks(vm), first, span),
                     key=memory.block_start_pfn)
        if len(new) >= expect:
            return grown, new
        if deadline.expired:
            raise InfraError(f"virtio-mem memory did not appear in the guest ({len(new)} of "
                             f"{expect} blocks after {timeout_s:.0f} s)")
        time.sleep(0.2)


def device_blocks(blocks: set[str], first: int, span: int) -> set[str]:
    """The memory blocks of `blocks` that lie in [first, first + span) (bytes)."""
    page = memory.PAGE_SIZE
    return {b for b in blocks if first <= memory.block_start_pfn(b) * page < first + span}


def wait_removed(vm: Machine, blocks: list[str], timeout_s: float = 10) -> set[str]:
    """After a virtio-mem shrink reached its size: the device's plugged size drops as
    its blocks are unplugged, and the guest's driver offlines and removes each emptied
    memory block right after (virtio_mem_sbm_offline_and_remove_mb()). Waits until none
    of `blocks` is present or timeout_s has passed: those still present."""
    deadline = Deadline(timeout_s)
    while True:
        left = memory.parse_present_blocks(
            vm.ssh().check_output(memory.PRESENT_BLOCKS_COMMAND)) & set(blocks)
        if not left or deadline.expired:
            return left
        time.sleep(0.2)


def cma_area(vm: Machine) -> str:
    """The guest's first CMA area (its debugfs folder's name)."""
    area = vm.ssh().check_output(memory.FIRST_CMA_AREA_COMMAND).strip()
    if not area:
        raise InfraError("no CMA area in the guest", hint="boot with cma=SIZE")
    return area


def start_tracing(vm: Machine) -> None:
    vm.ssh().check_output(tracefs.START_COMMAND)


def save_logs(vm: Machine, run_dir: Path) -> dict[str, Path]:
    """The guest's dmesg and trace, saved as artifacts: {"dmesg": path, "trace": path}."""
    ssh = vm.ssh()
    dmesg = run_dir / "dmesg.txt"
    with dmesg.open("wb") as out:
        if ssh.run("dmesg", stdout=out, timeout_s=120) != 0:
            raise InfraError("reading dmesg in the guest failed")
    trace = run_dir / "trace.txt"
    with trace.open("wb") as out:
        ssh.run(f"cat {tracefs.TRACE_FILE} 2>/dev/null", stdout=out, timeout_s=120)
    return {"dmesg": dmesg, "trace": trace}


def apply_sysctl(vm: Machine, settings: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Write a variant's sysctls, read them back: {name: value as the guest reads it}, for
    the result document. A name the guest kernel lacks, a write it refuses or a value it
    reads back otherwise (clamped) is an infrastructure error naming the sysctl."""
    if not settings:
        return {}
    return check_sysctl(settings, vm.ssh().check_output(sysctl.write_command(settings)))


def check_sysctl(settings: tuple[tuple[str, str], ...], readback: str) -> dict[str, str]:
    """apply_sysctl's verdict on what sysctl.write_command printed (over SSH, or as a
    step of a run on the ports)."""
    values, missing, refused = sysctl.parse_readback(readback)
    if missing:
        raise InfraError(f"the guest kernel has no sysctl {', '.join(missing)}",
                         hint="check the name (sysctl -a in the guest); some need a kernel "
                              "option")
    wrong = [f"{name} = {value!r} reads back {values.get(name)!r}"
             for name, value in settings
             if name in refused or values.get(name) != " ".join(value.split())]
    if wrong:
        raise InfraError(f"the guest kernel did not take sysctl {'; '.join(wrong)}",
                         hint="a value out of the sysctl's range is refused or clamped")
    return values
