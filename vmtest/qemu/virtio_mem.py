"""virtio-mem: memory a running guest gains and gives back in 2 MiB device blocks, the
way virtual machines resize today -- and whose shrinking runs `alloc_contig_range()` and
`offline_and_remove_memory()` in the guest (drivers/virtio/virtio_mem.c), the paths the
reference change touched.

The device is given at start (`MachineSpec.virtio_mem_mib`: argv.py adds
`-object memory-backend-ram` and `-device virtio-mem-pci,requested-size=0`); `resize()`
asks for a size with QMP `qom-set requested-size` and waits, reading
`query-memory-devices`, until the guest's driver has plugged or unplugged that much, or
the time is up (a guest that cannot unplug -- unmovable pages -- stays above the request,
and says so). No ACPI and no firmware: it works on arm64's device-tree boot too
(docs/findings.md).

A guest that could not unplug all it was asked to retries on its own only after its
retry timer, 50 s doubling up to 5 min (drivers/virtio/virtio_mem.c,
VIRTIO_MEM_RETRY_TIMER_MIN_MS); asked again (QEMU notifies the guest of a `qom-set` even
of the same size, hw/virtio/virtio-mem.c), its config-changed handler runs the work at
once. `resize(stall_s=...)` asks again each time the size has stood still, short of
the request, that long, and counts those retries."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vmtest.errors import InfraError

DEVICE_ID = "vmem0"  # the device argv.py adds (its memory backend: DEVICE_ID + "-mem")
# QEMU's default device block: the host's THP size, 2 MiB on x86-64 hosts
# (hw/virtio/virtio-mem.c, virtio_mem_default_block_size(); query-memory-devices said
# block-size 2097152): sizes are multiples of it.
BLOCK_MIB = 2


class QMPMachine(Protocol):
    def qmp_ok(self, command: str, **args: Any) -> Any: ...

    def memory_devices(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Resize:
    """One resize: what was asked, what the guest reached, how long it took."""

    requested_mib: int
    reached_mib: int
    seconds: float
    # How often the size stood still short of the request for stall_s and the request
    # was made again (the guest's driver woken to retry).
    retries: int = 0

    @property
    def done(self) -> bool:
        return self.reached_mib == self.requested_mib


def state(devices: list[dict[str, Any]], device_id: str = DEVICE_ID) -> tuple[int, int]:
    """(size, requested-size) in MiB of the virtio-mem device in query-memory-devices."""
    for device in devices:
        data = device.get("data", {})
        if device.get("type") == "virtio-mem" and data.get("id") == device_id:
            return int(data["size"]) >> 20, int(data["requested-size"]) >> 20
    raise InfraError(f"no virtio-mem device {device_id!r} in the guest",
                     hint="boot with BootOptions(virtio_mem_mib=...)")


def region(devices: list[dict[str, Any]], device_id: str = DEVICE_ID) -> tuple[int, int]:
    """(first byte, bytes) of the guest-physical range the virtio-mem device's memory
    lies in (query-memory-devices' memaddr and max-size): the memory blocks the guest
    adds for it are the ones in this range."""
    for device in devices:
        data = device.get("data", {})
        if device.get("type") == "virtio-mem" and data.get("id") == device_id:
            return int(data["memaddr"]), int(data["max-size"])
    raise InfraError(f"no virtio-mem device {device_id!r} in the guest",
                     hint="boot with BootOptions(virtio_mem_mib=...)")


def resize(vm: QMPMachine, size_mib: int, timeout_s: float, *,
           device_id: str = DEVICE_ID, poll_s: float = 0.2, stall_s: float | None = None,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> Resize:
    """Ask for size_mib and wait until the guest has it (or timeout_s has passed); with
    stall_s, ask again whenever the size has not moved for that long (a retry)."""
    if size_mib < 0 or size_mib % BLOCK_MIB:
        raise InfraError(f"virtio-mem size {size_mib} MiB is not a multiple of "
                         f"{BLOCK_MIB} MiB")

    def ask() -> None:
        vm.qmp_ok("qom-set", path=f"/machine/peripheral/{device_id}",
                  property="requested-size", value=size_mib << 20)

    started = clock()
    ask()
    retries, last, moved = 0, None, started
    while True:
        reached, requested = state(vm.memory_devices(), device_id)
        now = clock()
        if reached == requested == size_mib or now - started >= timeout_s:
            return Resize(size_mib, reached, round(now - started, 3), retries)
        if reached != last:
            last, moved = reached, now
        elif stall_s is not None and now - moved >= stall_s:
            ask()
            retries, moved = retries + 1, now
        sleep(poll_s)
