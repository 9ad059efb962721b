"""The pytest plugin on real guests (issue 12, part 2): the examples/ suite on both 6.1
variants, JUnit ids per variant, a WARN that fails a test with the splat in its report,
and the NUMA example on a two-node guest (--vmtest-numa)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vmtest.kernel import build as kbuild
from vmtest.kernel import kconfig, selftest_needs
from vmtest.kernel_choice import KernelChoice

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=1200)


def test_examples_pass_on_both_variants_with_variant_ids(variants, tmp_path):
    junit = tmp_path / "junit.xml"
    proc = _pytest(str(EXAMPLES), "--vmtest-variant", "patched", "--vmtest-variant",
                   "unpatched", f"--junitxml={junit}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    for variant in ("patched", "unpatched"):
        for test in ("test_hotplug_online_offline_cycles", "test_cma_allocation_under_load",
                     "test_compaction_moves_pages", "test_lkdtm_warning_is_reported",
                     "test_madv_populate_selftest", "test_soft_dirty_selftest_after_hotplug"):
            case = cases[f"{test}[{variant}]"]
            assert case.find("failure") is None and case.find("skipped") is None, test


@pytest.mark.fault("kernel WARN during a pytest test", verdict="test failed",
                   exit="pytest 1", message="kernel splat during the test: WARNING: ... "
                                             "[lkdtm_WARNING...]",
                   kept="the kernel log since the test began, the console tail")
def test_an_unexpected_warning_fails_the_test_with_the_splat(kernel, tmp_path):
    (tmp_path / "test_warn.py").write_text(
        "def test_warns(vm):\n"
        "    vm.run('echo WARNING > /sys/kernel/debug/provoke-crash/DIRECT')\n"
        "\n"
        "def test_quiet(vm):\n"
        "    assert vm.run('echo hello').stdout == 'hello\\n'\n")
    proc = _pytest("test_warn.py", "--vmtest-kernel", str(kernel.directory), "-rA",
                   cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    out = proc.stdout
    assert "1 failed, 1 passed" in out
    assert "kernel splat during the test:" in out and "lkdtm_WARNING" in out
    assert "vmtest: kernel log since the test began" in out


def test_a_test_that_panics_the_guest_leaves_a_fresh_guest_for_the_next(kernel, tmp_path):
    """Issue 28: the test after a panicking one errored once in eight runs ("SSH transport
    to the guest is closed") when it was handed the guest going down. Several rounds of
    panic-then-use in one session, each next test on a fresh guest (its boot id)."""
    rounds = 3
    body = ["import pytest\n"]
    for i in range(rounds):
        body.append(
            f"@pytest.mark.xfail(strict=True, reason='panics the guest')\n"
            f"def test_{i}a_panics(vm):\n"
            f"    vm.run('echo c > /proc/sysrq-trigger')\n\n"
            f"def test_{i}b_next(vm):\n"
            f"    boot_id = vm.run('cat /proc/sys/kernel/random/boot_id', check=True)\n"
            f"    print('BOOT', boot_id.stdout.strip())\n"
            f"    assert vm.run('echo hello').stdout == 'hello\\n'\n\n")
    (tmp_path / "test_panic.py").write_text("".join(body))
    proc = _pytest("test_panic.py", "--vmtest-kernel", str(kernel.directory), "-s",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert f"{rounds} passed, {rounds} xfailed" in proc.stdout
    boots = re.findall(r"BOOT ([0-9a-f-]{36})", proc.stdout)
    assert len(boots) == rounds and len(set(boots)) == rounds, boots


def test_the_numa_example_passes_on_a_two_node_guest(default_spec, tmp_path):
    """--vmtest-numa 2 on a kernel with CONFIG_NUMA: the example migrates its pages
    between the nodes (passed, not skipped). The kernel is named ad hoc the way a user
    names it, and is the kselftest kernel of the default 6.1 (its fragments, kselftest-mm's
    CONFIG_NUMA, its patch): test_kselftest.py builds it, so this test builds nothing."""
    patch = default_spec.patches[0]
    fragments = [f.name for f in default_spec.fragments]
    options = ["--vmtest-source", "debian:6.1", "--vmtest-patch", str(patch)]
    for name in (*fragments, "kselftest-mm"):
        options += ["--vmtest-fragment", name]
    ad_hoc = KernelChoice(source="debian:6.1", patches=(patch,),
                          fragments=(*fragments, "kselftest-mm")).spec()
    kselftest_kernel = selftest_needs.with_fragments(default_spec,
                                                     selftest_needs.needs_for(["mm"]))
    assert ad_hoc.patches == default_spec.patches and len(ad_hoc.patches) == 1
    key, cached = kbuild.lookup(ad_hoc)
    assert key == kbuild.lookup(kselftest_kernel)[0]
    assert any(("CONFIG_NUMA", "y") in f.options for f in kselftest_kernel.fragments)
    assert "CONFIG_NUMA" not in kconfig.parse_config("".join(
        f.path.read_text() for f in default_spec.fragments))  # the default one-node kernel

    proc = _pytest(f"{EXAMPLES}/test_mm.py::test_migration_between_numa_nodes", "-v", "-rA",
                   "--log-level=INFO", "--vmtest-numa", "2", *options,
                   "--vmtest-accel", os.environ.get("VMTEST_ACCEL", "auto"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "test_migration_between_numa_nodes PASSED" in proc.stdout, proc.stdout[-4000:]
    assert "1 passed" in proc.stdout and "skipped" not in proc.stdout
    if cached is not None:  # the plugin booted that cache entry and built nothing
        assert f"kernel cache hit: {cached.release} ({cached.directory})" in proc.stdout
        assert "building " not in proc.stdout
