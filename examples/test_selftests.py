"""The kernel's own mm selftests from a pytest suite: `vm.kselftest()` builds them from
the tree the kernel was built from (cached), unpacks them into the guest on first use and
runs them with kselftest's runner; one result per test and subtest."""

from __future__ import annotations


def test_madv_populate_selftest(vm):
    run = vm.kselftest("mm:madv_populate")
    assert run.failed == [], run.log[-3000:]
    # Its KTAP: every MADV_POPULATE_(READ|WRITE) case is a subtest of its own.
    subtests = [t for t in run.tests if t.startswith("vm:madv_populate::")
                or t.startswith("mm:madv_populate::")]
    assert len(subtests) >= 10 and run.totals["pass"] == len(subtests)


def test_soft_dirty_selftest_after_hotplug(vm):
    """Selftests see the guest as the test left it: soft-dirty tracking still works on
    a guest whose memory was just hot-added and onlined movable."""
    blocks = vm.hotplug(256)
    vm.set_state(blocks, "online_movable")
    run = vm.kselftest("mm:soft-dirty")
    assert run.failed == [], run.log[-3000:]
