"""arm64 guests (issue 27): the default kernel cross-built for arm64, booted on QEMU's
`virt` board under TCG, a command run on each channel; a hang's vCPUs named from the
arm64 System.map."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmtest import arch as archs
from vmtest.errors import GuestHang
from vmtest.kernel import build as kbuild
from vmtest.qemu.boot import boot

ARM64 = archs.get("arm64")
# An arm64 guest on another host runs under TCG: VMTEST_ACCEL=kvm (the GitHub workflow's,
# for the x86-64 guests) would be refused for it.
FOREIGN_ACCEL = "auto" if not ARM64.native else os.environ.get("VMTEST_ACCEL", "auto")


def _vmtest(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def arm64_kernel(default_spec) -> kbuild.KernelArtifact:
    import shutil

    missing = [t for t in (ARM64.gcc, ARM64.qemu) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"arm64 guests need {', '.join(missing)}: "
                    f"apt-get install {' '.join(ARM64.packages)}")
    return kbuild.build(dataclasses.replace(default_spec, arch="arm64"))


def test_the_arm64_build_is_an_arm64_image(arm64_kernel):
    assert arm64_kernel.image.name == "Image"
    assert arm64_kernel.meta["arch"] == "arm64"
    assert (arm64_kernel.directory / "System.map").is_file()
    assert "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y" in arm64_kernel.config.read_text().splitlines()


@pytest.mark.parametrize("channel", [[], ["--ssh"]], ids=["ports", "ssh"])
def test_a_command_runs_in_an_arm64_guest(arm64_kernel, tmp_path, channel):
    proc = _vmtest("run", "--arch", "arm64", *channel, "--kernel", str(arm64_kernel.directory),
                   "--output", str(tmp_path / "a"), "--", "uname -m; uname -r; lru-stress "
                   "--help >/dev/null 2>&1; echo stressor $?; exit 3")
    assert proc.returncode == 3, proc.stderr
    lines = proc.stdout.split()
    assert lines[:2] == ["aarch64", arm64_kernel.release]
    # The stressor runs (cross-compiled statically): not 126/127 (not executable/found).
    assert lines[2] == "stressor" and lines[3] not in ("126", "127")
    # The init's reports reach the host on the console (console=ttyAMA0, the PL011).
    assert "VMTEST-READY" in (tmp_path / "a" / "console.log").read_text(errors="replace")


def test_an_x86_kernel_is_refused_for_arm64(kernel, tmp_path):
    proc = _vmtest("run", "--arch", "arm64", "--kernel", str(kernel.directory), "--", "true")
    assert proc.returncode == 125
    assert "is an x86_64 kernel" in proc.stderr


def test_an_arm64_hang_names_the_vcpus(arm64_kernel, boot_opts, run_dir):
    """A guest that never becomes ready (its init is cat, reading the console forever):
    the hang error names where the vCPUs are, from the Image's System.map
    (qemu/symbols.py)."""
    opts = dataclasses.replace(boot_opts, arch="arm64", accel=FOREIGN_ACCEL,
                               boot_timeout_s=40, cmdline_extra=("rdinit=/bin/cat",))
    with pytest.raises(GuestHang) as err:
        with boot(arm64_kernel.image, opts, run_dir):
            pass
    where = (run_dir / "hang-vcpus.txt").read_text().splitlines()[0]
    print(where)
    assert where.startswith("cpu0 ") and "+0x" in where, where
    assert Path(run_dir / "console.log").exists()
    assert "vCPUs at cpu0" in str(err.value)


def test_virtio_mem_grows_and_shrinks_an_arm64_guest(arm64_kernel, boot_opts, run_dir):
    """virtio-mem on the device-tree boot (no firmware): grow, online movable, shrink;
    the shrink runs alloc_contig_range() and offline_pages() in the guest (the
    instrumentation's vmtest-mm lines)."""
    from vmtest.qemu import virtio_mem

    opts = dataclasses.replace(boot_opts, arch="arm64", accel=FOREIGN_ACCEL,
                               virtio_mem_mib=1024, boot_timeout_s=120)
    with boot(arm64_kernel.image, opts, run_dir) as vm:
        ssh = vm.ssh()
        assert virtio_mem.resize(vm, 512, 60).done
        total = ssh.check_output(
            "for b in /sys/devices/system/memory/memory*; do [ $(cat $b/state) = offline ] "
            "&& echo online_movable > $b/state; done; grep MemTotal /proc/meminfo")
        assert int(total.split()[1]) > 1400 * 1024
        assert virtio_mem.resize(vm, 0, 120).done
        log = ssh.check_output("dmesg | grep vmtest-mm")
        assert "op=alloc_contig_range" in log and "op=offline_pages" in log


def test_hotplug_offline_on_virtio_mem_reports_drains_per_offline_on_arm64(
        arm64_kernel, default_spec, tmp_path):
    """The hotplug-offline scenario with `backend: virtio-mem` on the cached arm64 kernel
    (its own fragment has CONFIG_VIRTIO_MEM: the same build, a cache hit), quick profile:
    each iteration's shrink runs alloc_contig_range() and offline_pages() in the guest,
    whose summaries give the same metrics as the pc-dimm backend."""
    from vmtest import run, scenarios

    spec = dataclasses.replace(default_spec, arch="arm64")
    scenario = scenarios.make("hotplug-offline", "quick", {"backend": "virtio-mem"})
    assert kbuild.with_config(spec, scenario.kernel_needs()) is spec  # nothing to add
    doc = run.run_scenario(kbuild.BuiltKernel(spec, arm64_kernel), scenario, tmp_path / "run",
                           accel=FOREIGN_ACCEL)
    assert doc["verdict"] == "ok", doc.get("error")
    m, vmem = doc["metrics"], doc["virtio_mem"]
    print({k: v for k, v in m.items() if k != "vmstat"}, vmem)
    assert m["blocks"] == 4 and m["blocks_offlined"] == 4 and m["blocks_timed_out"] == 0
    assert vmem["shrinks_done"] == vmem["shrinks"] == 2
    assert vmem["offline_pages_calls"] >= 4 and m["drains"] >= vmem["offline_pages_calls"]
    assert m["drains_per_offline"] == round(m["drains"] / vmem["offline_pages_calls"], 2)
    shrinks = [r for r in doc["resizes"] if r["direction"] == "shrink"]
    assert all(r["marked"] and r["reached_mib"] == 0 for r in shrinks)
    assert doc["identity"]["parameters"]["backend"] == "virtio-mem"
    argv = (tmp_path / "run" / "qemu.argv").read_text()
    assert argv.startswith("qemu-system-aarch64 ") and "virtio-mem-pci" in argv
    assert "-bios" not in argv  # the device-tree boot: no edk2, no ACPI
