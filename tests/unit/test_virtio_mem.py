"""virtio-mem resizing over QMP (qemu/virtio_mem.py) against a machine that answers as
QEMU 7.2 did for a real arm64 guest (tests/data/virtio_mem: its query-memory-devices
before the first resize; the guest's driver then plugs the request in steps)."""

import copy
import json

import pytest

from vmtest.errors import InfraError
from vmtest.qemu import virtio_mem


class GuestLike:
    """qom-set sets requested-size; each query after it moves `size` one step (of
    step_mib) toward it, up to `floor_mib` when shrinking (unmovable pages)."""

    def __init__(self, devices, step_mib=128, floor_mib=0):
        self.devices = devices
        self.step, self.floor = step_mib << 20, floor_mib << 20
        self.calls = []

    def qmp_ok(self, command, **args):
        self.calls.append((command, args))
        assert command == "qom-set" and args["property"] == "requested-size"
        data = self._data(args["path"].rsplit("/", 1)[1])
        data["requested-size"] = args["value"]

    def _data(self, device_id):
        return next(d["data"] for d in self.devices if d["data"]["id"] == device_id)

    def memory_devices(self):
        self.calls.append(("query-memory-devices", {}))
        for device in self.devices:
            data = device["data"]
            want = max(data["requested-size"], min(self.floor, data["size"]))
            if data["size"] < want:
                data["size"] = min(want, data["size"] + self.step)
            elif data["size"] > want:
                data["size"] = max(want, data["size"] - self.step)
        return copy.deepcopy(self.devices)


@pytest.fixture
def recorded(data_dir):
    return json.loads((data_dir / "virtio_mem" / "query-memory-devices-arm64.json").read_text())


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_grow_then_shrink_reaches_the_request(recorded):
    vm, clock = GuestLike(recorded), Clock()
    grown = virtio_mem.resize(vm, 256, 10, device_id="vm0", clock=clock, sleep=clock.sleep)
    assert grown == virtio_mem.Resize(256, 256, 0.2) and grown.done
    assert vm.calls[0] == ("qom-set", {"path": "/machine/peripheral/vm0",
                                       "property": "requested-size", "value": 256 << 20})
    shrunk = virtio_mem.resize(vm, 0, 10, device_id="vm0", clock=clock, sleep=clock.sleep)
    assert shrunk.done and shrunk.reached_mib == 0


def test_a_shrink_the_guest_cannot_finish_says_how_far_it_got(recorded):
    vm, clock = GuestLike(recorded, floor_mib=128), Clock()
    virtio_mem.resize(vm, 512, 10, device_id="vm0", clock=clock, sleep=clock.sleep)
    stuck = virtio_mem.resize(vm, 0, 5, device_id="vm0", clock=clock, sleep=clock.sleep)
    assert (stuck.requested_mib, stuck.reached_mib, stuck.done) == (0, 128, False)
    assert stuck.seconds >= 5


def test_no_device_and_bad_sizes_are_named(recorded):
    with pytest.raises(InfraError, match="no virtio-mem device 'vmem0'"):
        virtio_mem.state(recorded)
    assert virtio_mem.state(recorded, "vm0") == (0, 0)
    with pytest.raises(InfraError, match="not a multiple of 2 MiB"):
        virtio_mem.resize(GuestLike(recorded), 3, 1, device_id="vm0")


class StuckUntilAskedAgain(GuestLike):
    """A guest whose driver gives up a shrink at floor_mib (-EBUSY: its retry timer,
    50 s) and finishes it once asked again (the config-changed handler runs at once)."""

    def qmp_ok(self, command, **args):
        super().qmp_ok(command, **args)
        asks = sum(1 for c, a in self.calls if c == "qom-set" and a["value"] == 0)
        if asks >= 2:
            self.floor = 0


def test_a_shrink_that_stands_still_is_asked_for_again_and_counted(recorded):
    vm, clock = StuckUntilAskedAgain(recorded), Clock()
    virtio_mem.resize(vm, 512, 10, device_id="vm0", clock=clock, sleep=clock.sleep)
    vm.floor = 256 << 20
    shrunk = virtio_mem.resize(vm, 0, 60, device_id="vm0", stall_s=5, clock=clock,
                               sleep=clock.sleep)
    assert shrunk.done and shrunk.retries == 1
    # the second qom-set came once the size had stood at 256 MiB for stall_s
    assert [a["value"] for c, a in vm.calls if c == "qom-set"] == [512 << 20, 0, 0]
    # without stall_s, nothing is asked again: the guest stays where it stopped
    vm2, clock2 = StuckUntilAskedAgain(recorded), Clock()
    virtio_mem.resize(vm2, 512, 10, device_id="vm0", clock=clock2, sleep=clock2.sleep)
    vm2.floor = 256 << 20
    stuck = virtio_mem.resize(vm2, 0, 20, device_id="vm0", clock=clock2, sleep=clock2.sleep)
    assert (stuck.reached_mib, stuck.retries, stuck.done) == (256, 0, False)


def test_the_devices_memory_blocks_are_those_in_its_address_range():
    """The blocks the guest adds for the device lie in [memaddr, memaddr + max-size): on
    the recorded arm64 guest 2 GiB + 1 GiB, i.e. memory16..memory23 of 128 MiB."""
    from pathlib import Path

    from vmtest.collect import guest

    path = Path(__file__).parents[1] / "data" / "virtio_mem" / "query-memory-devices-arm64.json"
    devices = json.loads(path.read_text())
    first, span = virtio_mem.region(devices, "vm0")
    assert (first, span) == (2 << 30, 1 << 30)
    present = {f"memory{i}" for i in range(0, 40)}
    assert guest.device_blocks(present, first, span) == {f"memory{i}" for i in range(16, 24)}
    with pytest.raises(InfraError, match="no virtio-mem device 'vmem0'"):
        virtio_mem.region(devices)


class _Removing:
    """A guest whose driver removes the emptied blocks one SSH command after another."""

    def __init__(self, present):
        self.present = list(present)
        self.commands = 0

    def ssh(self):
        return self

    def check_output(self, command):
        self.commands += 1
        out = "\n".join(f"/sys/devices/system/memory/{b}" for b in self.present)
        self.present = self.present[1:]
        return out


def test_a_shrink_waits_for_the_guest_to_remove_what_it_emptied():
    from vmtest.collect import guest

    vm = _Removing(["memory32", "memory33"])
    assert guest.wait_removed(vm, ["memory32", "memory33"], timeout_s=30) == set()
    assert vm.commands == 3
    stuck = _Removing(["memory32"] * 1000)  # never removed: said, once the time is up
    assert guest.wait_removed(stuck, ["memory32", "memory40"], timeout_s=0.5) == {"memory32"}
