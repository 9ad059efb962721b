"""Build (cached), boot, and drive real guests."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from vmtest.channel.command import ChannelKind
from vmtest.channel.keys import KeyPair
from vmtest.channel.ssh import SSHChannel
from vmtest.deadline import Deadline
from vmtest.errors import ChannelError, GuestHang, KernelCrash
from vmtest.kernel import build as kbuild
from vmtest.qemu import accel
from vmtest.qemu.boot import boot


def _vmtest(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_build_is_cached(default_spec, kernel):
    key, cached = kbuild.lookup(default_spec)
    assert cached is not None and cached.key == key == kernel.key
    assert kernel.image.stat().st_size > 1_000_000
    config = kernel.config.read_text().splitlines()
    for option in ("CONFIG_CMA=y", "CONFIG_MEMORY_HOTREMOVE=y", "CONFIG_CMA_SYSFS=y"):
        assert option in config
    # Asked again, the build says it is a cache hit (and make does not run).
    started = time.monotonic()
    again = kbuild.build(default_spec)
    assert again.cached and again.key == kernel.key
    assert time.monotonic() - started < 5
    proc = _vmtest("build", "--base", "6.1", "--variant", "patched")
    assert proc.returncode == 0 and "cache hit in" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("channel", [[], ["--ssh"]], ids=["ports", "ssh"])
def test_uname_and_exit_status(kernel, tmp_path, channel):
    """`vmtest run -- CMD` on the init's virtio-serial ports (the default) and over SSH:
    the same output, streams and exit status."""
    proc = _vmtest("run", *channel, "--kernel", str(kernel.directory), "--output",
                   str(tmp_path / "a"), "--", "uname", "-r")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == kernel.release
    assert kernel.release.endswith("-vmtest-patched")
    assert "console log:" in proc.stderr

    proc = _vmtest("run", *channel, "--kernel", str(kernel.directory), "--output",
                   str(tmp_path / "b"), "--", "false")
    assert proc.returncode == 1, proc.stderr

    proc = _vmtest("run", *channel, "--kernel", str(kernel.directory), "--output",
                   str(tmp_path / "c"), "--", "echo out; echo err >&2; printf tail; exit 7")
    assert (proc.returncode, proc.stdout) == (7, "out\ntail")
    assert proc.stderr.splitlines().count("err") == 1
    # Only the SSH guest has a network (and an sshd on it).
    proc = _vmtest("run", *channel, "--kernel", str(kernel.directory), "--output",
                   str(tmp_path / "d"), "--", "ls /sys/class/net; pidof dropbear || true")
    assert proc.returncode == 0, proc.stderr
    assert ("eth0" in proc.stdout.split()) == bool(channel)


@pytest.mark.fault("a guest kernel without CONFIG_VIRTIO_CONSOLE, CMD on the ports",
                   verdict="infrastructure", exit="125",
                   message="vmtest: error: the guest found no virtio-serial ports for the "
                           "command ... fix: ... or pass --ssh", kept="console.log")
def test_a_guest_without_the_ports_says_so(kernel, tmp_path):
    """A kernel without the virtio console driver (this one with its initcall blacklisted):
    one clear error naming the option and --ssh, not a hang."""
    proc = _vmtest("run", "--kernel", str(kernel.directory), "--output", str(tmp_path),
                   "--append", "initcall_blacklist=virtio_console_init", "--", "echo never")
    assert proc.returncode == 125, proc.stderr
    assert "vmtest: error: the guest found no virtio-serial ports" in proc.stderr
    assert "CONFIG_VIRTIO_CONSOLE" in proc.stderr and "--ssh" in proc.stderr
    assert "never" not in proc.stdout and "Traceback" not in proc.stderr
    assert (tmp_path / "console.log").exists()


def test_identity_in_proc_version(kernel, boot_opts, run_dir):
    with boot(kernel.image, boot_opts, run_dir) as vm:
        version = vm.ssh().check_output("cat /proc/version")
    assert f"vmtest@{kernel.key[:16]}" in version


def test_cma_reserved_and_visible(kernel, boot_opts, run_dir):
    with boot(kernel.image, replace(boot_opts, cma_mib=128), run_dir) as vm:
        ssh = vm.ssh()
        dmesg = ssh.check_output("dmesg")
        assert re.search(r"cma: Reserved 128 MiB at", dmesg), dmesg[-2000:]
        listing = ssh.check_output("ls /sys/kernel/debug/cma/ /sys/kernel/mm/cma/")
        assert "reserved" in listing
        count = ssh.check_output("cat /sys/kernel/debug/cma/reserved/count").strip()
        assert int(count) == 128 * 256  # pages of 4 KiB
        # A real allocation through debugfs moves the used counter.
        ssh.check_output("echo 256 > /sys/kernel/debug/cma/reserved/alloc")
        used = int(ssh.check_output("cat /sys/kernel/debug/cma/reserved/used"))
        assert used >= 256
        ok = int(ssh.check_output("cat /sys/kernel/mm/cma/reserved/alloc_pages_success"))
        assert ok >= 256


def test_hotplug_dimm_online_movable_and_offline(kernel, boot_opts, run_dir):
    with boot(kernel.image, boot_opts, run_dir) as vm:
        ssh = vm.ssh()
        offline_before = ssh.check_output(
            "grep -l offline /sys/devices/system/memory/memory*/state || true").split()
        vm.hotplug_dimm(256)
        devices = vm.memory_devices()
        assert devices and devices[0]["data"]["size"] == 256 << 20
        # ACPI hotplug is asynchronous in the guest: wait for the new blocks.
        deadline = Deadline(30)
        new: list[str] = []
        while not deadline.expired:
            offline = ssh.check_output(
                "grep -l offline /sys/devices/system/memory/memory*/state || true").split()
            new = sorted(set(offline) - set(offline_before))
            if new:
                break
            time.sleep(0.2)
        assert new, "hot-added DIMM did not appear as offline memory blocks"
        block = new[0].rsplit("/", 1)[0]
        zones = ssh.check_output(f"cat {block}/valid_zones")
        assert "Movable" in zones
        ssh.check_output(f"echo online_movable > {block}/state")
        assert ssh.check_output(f"cat {block}/state").strip() == "online"
        assert "Movable" in ssh.check_output(f"cat {block}/valid_zones")
        # offline_pages() retries forever on a busy block: bound it.
        status = ssh.run(f"timeout 20 sh -c 'echo offline > {block}/state'", timeout_s=30)
        assert status == 0
        assert ssh.check_output(f"cat {block}/state").strip() == "offline"


def test_kernel_panic_is_reported_as_crash(kernel, boot_opts, run_dir):
    started = time.monotonic()
    with pytest.raises(KernelCrash) as exc:
        with boot(kernel.image, boot_opts, run_dir) as vm:
            vm.ssh().run("echo c > /proc/sysrq-trigger", timeout_s=60, watch=vm.check)
    assert time.monotonic() - started < 60
    assert "sysrq" in (exc.value.log_tail or "").lower()
    assert exc.value.log_path == run_dir / "console.log"
    assert "Kernel panic" in (run_dir / "console.log").read_text(errors="replace")


def test_warning_is_caught_and_the_guest_goes_on(kernel, boot_opts, run_dir):
    """A WARN (LKDTM, CONFIG_LKDTM) does not end the run (panic_on_warn=0); the parser
    finds it in the guest's real dmesg with its title and call trace."""
    from vmtest.collect import dmesg

    with boot(kernel.image, boot_opts, run_dir) as vm:
        ssh = vm.ssh()
        ssh.check_output("echo WARNING > /sys/kernel/debug/provoke-crash/DIRECT")
        assert ssh.check_output("echo alive").strip() == "alive"
        text = ssh.check_output("dmesg")
    splats = dmesg.parse(text).splats
    assert [s.kind for s in splats] == ["warning"], splats
    assert "lkdtm" in splats[0].title
    assert splats[0].stack[0].startswith("lkdtm_WARNING+"), splats[0].stack


@pytest.mark.fault("guest panic during CMD", verdict="kernel-crash", exit="124",
                   message="vmtest: kernel-crash: kernel crash in the guest: sysrq triggered "
                           "crash ... log: console.log", kept="console.log")
def test_panic_exit_code_from_cli(kernel, tmp_path):
    proc = _vmtest("run", "--kernel", str(kernel.directory), "--output", str(tmp_path),
                   "--", "echo c > /proc/sysrq-trigger")
    assert proc.returncode == 124  # the kernel failed around CMD (git bisect: bad)
    assert "kernel-crash" in proc.stderr and "console.log" in proc.stderr


@pytest.mark.fault("silent guest hang before SSH (vCPUs never run)", verdict="hang",
                   exit="124 (run -- CMD), 1",
                   message="guest did not become ready within N s (last console line ...); "
                           "vCPUs at <symbol>", kept="console.log, hang-vcpus.txt")
def test_hang_detected_within_deadline(kernel, boot_opts, run_dir):
    # -S: the vCPUs never start, exactly what a stalled guest looks like from outside.
    opts = replace(boot_opts, accel="tcg", qemu_extra=("-S",), boot_timeout_s=4)
    started = time.monotonic()
    with pytest.raises(GuestHang, match="within 4 s"):
        with boot(kernel.image, opts, run_dir):
            pass
    assert time.monotonic() - started < 4 + 15  # deadline + bounded shutdown


@pytest.mark.fault("guest hang after SSH is up (CMD never returns)", verdict="timeout",
                   exit="124", message="vmtest: timeout: guest command did not finish within "
                                       "3.0 s: sleep 600", kept="console.log")
def test_command_timeout(kernel, tmp_path):
    proc = _vmtest("run", "--kernel", str(kernel.directory), "--output", str(tmp_path),
                   "--timeout", "3", "--", "sleep 600")
    assert proc.returncode == 124 and "timeout" in proc.stderr


def test_console_exec_channel(kernel, boot_opts, run_dir):
    out = io.BytesIO()
    with boot(kernel.image, boot_opts, run_dir) as vm:
        status = vm.commands(ChannelKind.CONSOLE).run(
            "echo hello; cat /proc/sys/kernel/osrelease; false", stdout=out)
    assert status == 1
    assert out.getvalue().decode().splitlines()[:2] == ["hello", kernel.release]


@pytest.mark.fault("something else answers on the SSH port (wrong host key)",
                   verdict="infrastructure", exit="125 (run -- CMD), 3",
                   message="guest presented an unexpected SSH host key ...",
                   kept="nothing is sent to it")
def test_wrong_host_key_is_refused(kernel, boot_opts, run_dir):
    with boot(kernel.image, boot_opts, run_dir) as vm:
        assert vm.client_key is not None
        with pytest.raises(ChannelError, match="unexpected SSH host key"):
            SSHChannel.connect(vm.ssh_port(), vm.client_key, KeyPair.generate(), Deadline(20))


def test_auto_accel_probe_gives_a_working_guest(kernel, boot_opts, run_dir, tmp_path):
    store = accel.VerdictStore(tmp_path / "accel.json")
    with boot(kernel.image, replace(boot_opts, accel="auto"), run_dir, store=store) as vm:
        assert vm.ssh().check_output("echo ok").strip() == "ok"
        used = vm.spec.accel
    ok, _ = accel.kvm_openable()
    if ok:  # a verdict was recorded, and it matches what was used
        verdict = store.get(accel.host_fingerprint())
        assert verdict is not None and verdict["kvm_works"] == (used == "kvm")
    else:
        assert used == "tcg"


def _host_addresses() -> list[str]:
    """This host's IPv4 addresses other than 127.0.0.1 (127.0.0.2 is always one)."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    found = [f.split("/")[0] for line in out.splitlines() for f in line.split()[3:4]]
    return ["127.0.0.2"] + [a for a in found if not a.startswith("127.")]


def test_ssh_listens_on_127_0_0_1_only(kernel, boot_opts, run_dir):
    import socket

    with boot(kernel.image, boot_opts, run_dir) as vm:
        port = vm.ssh_port()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the one address it serves
        for address in _host_addresses():
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=5).close()


def test_a_command_asleep_is_described_while_it_sleeps(kernel, boot_opts, run_dir):
    """StallWatch on a real guest: a command that prints, then sleeps in the kernel with
    the vCPUs idle, is described (its task, state and kernel stack) and goes on."""
    from vmtest.scenarios.base import StallWatch, guest_run

    stall = StallWatch(run_dir, after_s=3)
    with boot(kernel.image, boot_opts, run_dir) as vm:
        status = guest_run(vm, "echo start; sleep 9; echo end", run_dir / "out.txt",
                           timeout_s=60, stall=stall)
    assert status == 0 and (run_dir / "out.txt").read_text() == "start\nend\n"
    assert len(stall.stalls) == 1, stall.stalls
    report = (run_dir / "stall-1.txt").read_text()
    sleeping = [line for line in report.splitlines() if line.endswith(": sleep 9 ")]
    assert sleeping and " state S " in sleeping[0], report
    assert "nanosleep" in report  # its kernel stack


def test_a_process_left_behind_holding_the_output_is_ended(kernel, boot_opts, run_dir):
    """What a test script leaves behind (an orphan holding its output pipe: the command
    would never end) is ended once the output stood still, and named; the command then
    ends by itself."""
    from vmtest.scenarios.base import StallWatch, guest_run

    stall = StallWatch(run_dir, after_s=3, reap=("vmtest-test-runner",))
    started = time.monotonic()
    with boot(kernel.image, boot_opts, run_dir) as vm:
        status = guest_run(vm, ": vmtest-test-runner; sh -c '(sleep 600 &); echo started' "
                               "| cat; echo finished", run_dir / "out.txt",
                           timeout_s=120, stall=stall)
    assert status == 0 and (run_dir / "out.txt").read_text() == "started\nfinished\n"
    assert [r for s in stall.stalls for r in s.get("reaped", [])] == \
        [r for r in stall.stalls[0]["reaped"] if r.endswith(": sleep 600 ")] != []
    assert time.monotonic() - started < 100
