"""The pytest plugin's guest after a crash, on fake machines: a guest that an earlier test
crashed is never handed to the next test, whichever sign of the crash comes first (the
failed command, the console, QEMU's exit), nor one that went down between tests."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from vmtest import pytest_plugin
from vmtest.errors import ChannelError, ConfigError
from vmtest.pytest_plugin import Guest, with_numa
from vmtest.qemu import accel, boot
from vmtest.qemu.argv import MachineSpec, numa_args
from vmtest.qemu.fake import FakeMachine, Transcript

MARK = {"ssh": "dmesg", "status": 0, "out": "[    0.000000] Linux version 6.1.0-fake\n"}
PANIC = b"[   12.3] Kernel panic - not syncing: sysrq triggered crash\n"
LOST = ChannelError("SSH connection to the guest was lost mid-command: echo c")


def _no_initramfs(tmp: Path, *_, **__) -> Path:
    path = tmp / "initrd.cpio"
    path.write_bytes(b"")
    return path


class Guests:
    """Boots the next fake machine of a list each time the Guest boots."""

    def __init__(self, tmp_path: Path, *machines: dict) -> None:
        self.plans = list(machines)
        self.made: list[FakeMachine] = []
        self.tmp_path = tmp_path

    def factory(self, spec, run_dir, **kw) -> FakeMachine:
        plan = self.plans[len(self.made)]
        machine = FakeMachine(spec, run_dir, transcript=Transcript({}, plan["steps"]),
                              end=plan.get("end"), **kw)
        self.made.append(machine)
        return machine

    def guest(self, opts: boot.BootOptions | None = None) -> Guest:
        boot_fn = functools.partial(boot.boot, store=accel.VerdictStore(
            self.tmp_path / "accel.json"), machine_class=self.factory,
            make_initramfs=_no_initramfs)
        return Guest(Path("/k/vmlinux"), "patched", opts or boot.BootOptions(accel="tcg"),
                     self.tmp_path / "runs", boot_fn=boot_fn)


@pytest.fixture(autouse=True)
def _no_sandbox_probe(monkeypatch):
    monkeypatch.setattr(boot, "sandbox_supported", lambda binary="": False)


@pytest.mark.fault("pytest plugin: a test panics the guest (echo c > /proc/sysrq-trigger), "
                   "the next test starts while the panic is in flight",
                   verdict="that test fails (KernelCrash or lost connection); the next gets "
                           "a fresh guest", exit="pytest 1 (or 0 when marked xfail)",
                   message="the test's error: kernel crash in the guest: ... / SSH "
                           "connection to the guest was lost mid-command",
                   kept="the crashed boot's console.log (bootN/ in the guest's folder)")
def test_a_test_that_panics_the_guest_hands_the_next_one_a_fresh_guest(tmp_path):
    # The race of issue 28: the panicking command's connection is gone, but QEMU has not
    # exited yet and the console has not shown the panic.
    guests = Guests(tmp_path, {"steps": [MARK], "end": LOST},
                    {"steps": [MARK, {"ssh": "echo hello", "status": 0, "out": "hello\n"}]})
    guest = guests.guest()
    guest.begin_test()
    with pytest.raises(ChannelError):
        guest.run("echo c > /proc/sysrq-trigger")
    first = guests.made[0]
    assert not first.exited() and first.unusable() == ""  # no outside sign yet
    assert guest.suspect.startswith("a command of an earlier test failed: SSH connection")
    guest.begin_test()  # the next test's setup
    assert guest.boots == 2 and first.exited()
    assert guest.run("echo hello").stdout == "hello\n"
    assert guests.made[1].replayed_all


def test_a_crash_on_the_console_alone_is_enough(tmp_path):
    guests = Guests(tmp_path, {"steps": [MARK]}, {"steps": [MARK]})
    guest = guests.guest()
    guest.begin_test()
    guests.made[0].console.data += PANIC
    assert guests.made[0].unusable().startswith("the kernel crashed: Kernel panic")
    guest.begin_test()
    assert guest.boots == 2 and guests.made[1].replayed_all


def test_a_guest_that_went_down_between_tests_is_replaced(tmp_path):
    # A background command crashed it after its test passed: no command failed, nothing
    # shows yet; the next test's mark (dmesg) is the probe that finds out.
    guests = Guests(tmp_path,
                    {"steps": [MARK, {"ssh": "(echo c > /proc/sysrq-trigger) &",
                                      "status": 0}], "end": LOST},
                    {"steps": [MARK]})
    guest = guests.guest()
    guest.begin_test()
    assert guest.run("(echo c > /proc/sysrq-trigger) &").status == 0
    assert guest.suspect == ""
    guest.begin_test()
    assert guest.boots == 2 and guests.made[1].replayed_all


def test_a_healthy_guest_is_kept(tmp_path):
    guests = Guests(tmp_path, {"steps": [MARK, {"ssh": "true", "status": 0}, MARK]})
    guest = guests.guest()
    guest.begin_test()
    guest.run("true")
    guest.begin_test()
    assert guest.boots == 1 and guests.made[0].replayed_all


# -- --vmtest-numa N ---------------------------------------------------------------------
NODES = "ls -d /sys/devices/system/node/node* 2>/dev/null | wc -l"


@pytest.mark.parametrize("nodes", range(2, 9))
def test_every_number_of_numa_nodes_the_option_takes_gives_a_machine_that_boots(nodes):
    opts = with_numa(boot.BootOptions(accel="tcg"), nodes)
    assert opts.numa_nodes == nodes and opts.cpus >= nodes
    MachineSpec(kernel=Path("/k/vmlinux"), initrd=Path("/i"), cpus=opts.cpus,
                memory_mib=opts.memory_mib, numa_nodes=opts.numa_nodes).validate()
    assert opts.memory_mib > 1000 and numa_args(MachineSpec(
        kernel=Path("/k"), initrd=Path("/i"), cpus=opts.cpus, memory_mib=opts.memory_mib,
        numa_nodes=nodes)).count("-numa") == nodes


def test_no_numa_nodes_leave_the_plain_guest():
    plain = boot.BootOptions(accel="tcg")
    assert with_numa(plain, 0) == plain and with_numa(plain, 1) == plain


def test_a_numa_guest_that_boots_with_the_nodes_asked_for_is_used(tmp_path):
    guests = Guests(tmp_path, {"steps": [{"ssh": NODES, "status": 0, "out": "2\n"}, MARK]})
    guest = guests.guest(with_numa(boot.BootOptions(accel="tcg"), 2))
    guest.begin_test()
    assert guests.made[0].spec.numa_nodes == 2 and guests.made[0].replayed_all


@pytest.mark.fault("pytest plugin: --vmtest-numa 2 on a kernel that boots one node (no "
                   "config beside the image to tell before the boot)",
                   verdict="the tests that take `vm` error in their set-up", exit="pytest 1",
                   message="vmtest could not boot the guest: --vmtest-numa 2: the guest of "
                           "IMAGE booted with 1 NUMA node(s)",
                   kept="the boot's console.log")
def test_a_numa_guest_that_boots_fewer_nodes_is_refused_and_stopped(tmp_path):
    guests = Guests(tmp_path, {"steps": [{"ssh": NODES, "status": 0, "out": "1\n"}]})
    with pytest.raises(ConfigError, match=r"--vmtest-numa 2: the guest of /k/vmlinux booted "
                                          r"with 1 NUMA node\(s\)"):
        guests.guest(with_numa(boot.BootOptions(accel="tcg"), 2))
    assert guests.made[0].replayed_all and guests.made[0].unusable()  # not left running


pytest_plugins = ["pytester"]

CONFTEST = '''
import functools
from pathlib import Path

import pytest

from vmtest.pytest_plugin import Guest
from vmtest.qemu import accel, boot
from vmtest.qemu.fake import FakeMachine, Transcript

LOG = "[    0.000000] Linux version 6.1.0-fake\\n"
DELTA = "[   12.000000] oom-kill: a line with ESC \\x1b[31m and NUL \\x00 in it\\n"
STEPS = [{"ssh": "dmesg", "status": 0, "out": LOG},
         {"ssh": "uname -r", "status": 0, "out": "6.1.0-fake\\n"},
         {"ssh": "dmesg", "status": 0, "out": LOG + DELTA}]


def _no_initramfs(tmp, *_, **__):
    (tmp / "initrd.cpio").write_bytes(b"")
    return tmp / "initrd.cpio"


@pytest.fixture(scope="module")
def vmtest_guest(tmp_path_factory):
    boot.sandbox_supported = lambda binary="": False
    tmp = tmp_path_factory.mktemp("fake")
    factory = lambda spec, run_dir, **kw: FakeMachine(spec, run_dir,
                                                      transcript=Transcript({}, STEPS), **kw)
    boot_fn = functools.partial(boot.boot, store=accel.VerdictStore(tmp / "accel.json"),
                                machine_class=factory, make_initramfs=_no_initramfs)
    guest = Guest(Path("/k/vmlinux"), "patched", boot.BootOptions(accel="tcg"), tmp / "runs",
                  boot_fn=boot_fn)
    yield guest
    guest.close()
'''


def test_a_failed_tests_kernel_log_reaches_junitxml(pytester):
    """The plugin's kernel log used to be a report section that --junitxml never writes
    (only "Captured stdout/stderr/log" ones, and only with junit_logging): it is now part
    of the failure, which junit.xml always holds (XML-illegal characters escaped)."""
    import xml.etree.ElementTree as ET

    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_k="def test_release(vm):\n"
                               "    assert vm.run('uname -r').stdout == '6.2\\n'\n")
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_inprocess(f"--junitxml={junit}", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    failure = ET.parse(junit).getroot().find(".//failure")
    assert failure is not None
    assert "vmtest: kernel log since the test began" in failure.text
    assert "oom-kill: a line with ESC" in failure.text
    result.stdout.fnmatch_lines(["*vmtest: kernel log since the test began*"])


def test_the_plugin_refuses_numa_nodes_of_a_kernel_without_them_before_booting(
        pytester, monkeypatch):
    build = pytester.mkdir("build")
    (build / "vmlinux").write_bytes(b"")
    (build / "config").write_text("# CONFIG_NUMA is not set\n")

    class NoBoot(Guest):
        def __init__(self, *args, **kwargs) -> None:
            raise AssertionError("booted")

    # the session runs in this process: the fixture's Guest (which boots) is this
    monkeypatch.setattr(pytest_plugin, "Guest", NoBoot)
    pytester.makepyfile(test_n="def test_nodes(vm):\n    pass\n")
    result = pytester.runpytest_inprocess("--vmtest-kernel", str(build), "--vmtest-numa", "2",
                                          "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*vmtest could not boot the guest: --vmtest-numa 2: the "
                                 "kernel * is built without CONFIG_NUMA*"])
    out = result.stdout.str()
    assert "booted" not in out and "During handling" not in out  # said once, no traceback


def test_the_plugin_refuses_a_number_of_numa_nodes_out_of_range(pytester):
    pytester.makepyfile(test_n="def test_nodes(vm):\n    pass\n")
    result = pytester.runpytest_inprocess("--vmtest-numa", "9", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --vmtest-numa: '9' is not a number of NUMA "
                                 "nodes from 0 to 8"])


# -- --vmtest-virtio-mem SIZE, vm.resize_memory() ------------------------------------------
def _devices(size_mib: int, requested_mib: int) -> dict:
    return {"qmp": "memory_devices", "args": [], "return": [
        {"type": "virtio-mem", "data": {"id": "vmem0", "size": size_mib << 20,
                                        "requested-size": requested_mib << 20}}]}


def _ask(size_mib: int) -> dict:
    return {"qmp": "qom-set", "args": [{"path": "/machine/peripheral/vmem0",
                                        "property": "requested-size",
                                        "value": size_mib << 20}]}


def test_resize_memory_waits_for_the_guest_and_says_what_it_reached(tmp_path):
    guests = Guests(tmp_path, {"steps": [
        _ask(512), _devices(128, 512), _devices(512, 512),
        _ask(0), _devices(0, 0)]})
    opts = boot.with_virtio_mem(boot.BootOptions(accel="tcg"), 1024)
    assert (opts.virtio_mem_mib, opts.maxmem_mib) == (1024, 4096)
    assert boot.with_virtio_mem(boot.BootOptions(accel="tcg", maxmem_mib=1024),
                                512).maxmem_mib == 1536  # room beside the boot memory
    guest = guests.guest(opts)
    assert guests.made[0].spec.virtio_mem_mib == 1024
    assert guest.resize_memory(512) == 512
    assert guest.resize_memory(0) == 0
    assert guests.made[0].replayed_all


def test_resize_memory_without_a_device_is_a_usage_error(tmp_path):
    guest = Guests(tmp_path, {"steps": []}).guest()
    with pytest.raises(pytest.UsageError, match="--vmtest-virtio-mem SIZE"):
        guest.resize_memory(256)
