"""Tests of a guest's transparent hugepages, run by thp.yaml as a scenario (named so that
`pytest examples` does not collect them; `pytest thp_checks.py --vmtest-...` runs them
as plain plugin tests, the values in --junitxml's properties)."""

import time

# 64 MiB of anonymous memory, faulted in and held while the meminfo is read
# (busybox dd's buffer is one malloc: an mmap'd range THP can back with 2 MiB pages).
HOLD = "dd if=/dev/zero bs=64M count=1 2>/dev/null | (sleep 1; cat >/dev/null) & "


def test_thp_knob_says_the_boot_parameter(vm):
    enabled = vm.run("cat /sys/kernel/mm/transparent_hugepage/enabled", check=True).stdout
    cmdline = vm.run("cat /proc/cmdline", check=True).stdout
    chosen = enabled[enabled.index("[") + 1:enabled.index("]")]
    if "transparent_hugepage=" in cmdline:
        assert f"transparent_hugepage={chosen}" in cmdline


def test_khugepaged_runs(vm):
    # khugepaged runs only while THP is enabled (always or madvise: mm/khugepaged.c
    # start_stop_khugepaged), so this fails on thp-never: the outcome is the metric.
    assert vm.run("ps | grep -v grep | grep -q khugepaged").status == 0


def test_anon_fault(vm):
    started = time.monotonic()
    vm.run("dd if=/dev/zero of=/dev/null bs=64M count=1", check=True)
    vm.record("fault_ms", round((time.monotonic() - started) * 1000, 1))
    out = vm.run(HOLD + "sleep 0.5; grep AnonHugePages /proc/meminfo; wait", check=True)
    vm.record("anon_huge_kib", int(out.stdout.split()[1]))
