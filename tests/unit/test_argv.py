import json
from pathlib import Path

import pytest

from vmtest.errors import ConfigError
from vmtest.qemu.argv import MachineSpec, Share, build_argv, kernel_cmdline, parse_size_mib


def _spec(**kw):
    kernel = Path("/k/Image" if kw.get("arch") == "arm64" else "/k/bzImage")
    return MachineSpec(kernel=kernel, initrd=Path("/t/initrd.cpio"), **kw)


@pytest.mark.parametrize("name,spec", [
    ("tcg-default", _spec()),
    ("kvm-4cpu-2g", _spec(accel="kvm", cpus=4, memory_mib=2048, cma_mib=512, slots=8,
                          maxmem_mib=8192, log_buf_len="8M", sandbox=True)),
    ("tcg-nonet-extra", _spec(network=False, qemu_extra=("-S",), cmdline_extra=("nokaslr",))),
    # A comma in a path must not end the value and add options of its own.
    ("tcg-shares", _spec(shares=(Share(Path("/home/u/src,readonly=off"), 0),
                                 Share(Path("/srv/out"), 1, writable=True)))),
    # `vmtest run -- CMD`: no NIC, the command's streams on virtio-serial ports.
    ("tcg-ports", _spec(network=False, ports=("stdin", "stdout", "stderr"))),
    # arm64 on `virt`: device-tree boot by QEMU's -kernel loader (no firmware) ...
    ("arm64-tcg-ports", _spec(arch="arm64", binary="qemu-system-aarch64", network=False,
                              ports=("stdin", "stdout", "stderr"))),
    ("arm64-kvm-ssh", _spec(arch="arm64", binary="qemu-system-aarch64", accel="kvm")),
    # a virtio-mem device, empty at start
    ("tcg-virtio-mem", _spec(virtio_mem_mib=1024)),
    # ... and through UEFI firmware with ACPI, for pc-dimm hotplug.
    ("arm64-tcg-firmware", _spec(arch="arm64", binary="qemu-system-aarch64",
                                 firmware="/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")),
    # a kselftest mm guest: two NUMA nodes, 1 GiB huge pages (issue 29)
    ("tcg-numa-gbpages", _spec(cpus=3, memory_mib=8192, maxmem_mib=12288, numa_nodes=2,
                               cpu_flags=("pdpe1gb",),
                               cmdline_extra=("hugepagesz=1G", "hugepages=4"))),
])
def test_argv_golden(name, spec, data_dir, update_golden):
    argv = build_argv(spec, qmp_fd=3, console_fd=4, console_log=Path("/run/console.log"),
                      port_fds={name: 5 + i for i, name in enumerate(spec.ports)})
    golden = data_dir / "golden" / f"argv-{name}.json"
    if update_golden:
        golden.write_text(json.dumps(argv, indent=1) + "\n")
    assert argv == json.loads(golden.read_text())


def test_argv_is_list_of_str_and_loopback_only():
    argv = build_argv(_spec(), qmp_fd=3, console_fd=4, console_log=Path("/c"))
    assert all(isinstance(a, str) for a in argv)
    netdev = argv[argv.index("-netdev") + 1].split(",")
    # the guest reaches nothing through slirp; SSH in is the one forward
    assert "restrict=on" in netdev
    assert [o for o in netdev if o.startswith(("hostfwd=", "guestfwd="))] == \
        ["hostfwd=tcp:127.0.0.1:0-:22"]


def test_a_writable_share_keeps_what_the_guest_sets_off_the_host():
    argv = build_argv(_spec(shares=(Share(Path("/ro"), 0), Share(Path("/rw"), 1, True))),
                      qmp_fd=3, console_fd=4, console_log=Path("/c"))
    ro, rw = (a.split(",") for a in argv if a.startswith("local,"))
    assert "security_model=none" in ro and "readonly=on" in ro
    # mapped-xattr: setuid bits and device nodes stay attributes, never real on the host
    assert "security_model=mapped-xattr" in rw and "readonly=on" not in rw
    assert {"fmode=0644", "dmode=0755"} <= set(rw)
    assert "-no-reboot" in argv


def test_cmdline_reserves_cma_and_panics_hard():
    line = kernel_cmdline(_spec(cma_mib=128))
    assert "cma=128M" in line.split()
    assert "panic=-1" in line.split() and "oops=panic" in line.split()


@pytest.mark.parametrize("spec,message", [
    (_spec(accel="hvf"), "unknown accelerator"),
    (_spec(cma_mib=2048, memory_mib=1024), "cma"),
    (_spec(maxmem_mib=512, memory_mib=1024), "maxmem"),
    (_spec(cpus=0), "cpus"),
    (_spec(virtio_mem_mib=4096), "exceed maxmem"),
    (_spec(virtio_mem_mib=3), "2 MiB block"),
])
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_argv(spec, qmp_fd=3, console_fd=4, console_log=Path("/c"))


@pytest.mark.parametrize("text,mib", [("1G", 1024), ("256M", 256), ("512", 512), ("2GiB", 2048),
                                      ("1024K", 1)])
def test_parse_size(text, mib):
    assert parse_size_mib(text) == mib


@pytest.mark.parametrize("text", ["lots", "1.5G", "-1G", "100K"])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError):
        parse_size_mib(text)


@pytest.mark.parametrize("host,guest", [
    ("/home/u/linux", "/home/u/linux"),
    ("/root/work", "/root/work"),
    ("/work/main", "/work/main"),
    ("/root", "/mnt/share0"),          # would hide the run's authorized key
    ("/", "/mnt/share0"),
    ("/usr/src/linux", "/mnt/share0"),  # would cover the guest's own userland
    ("/tmp", "/mnt/share0"),            # the guest's own /tmp
    ("/tmp/pytest/x", "/tmp/pytest/x"),  # mounted after the init's tmpfs: fine
])
def test_share_is_mounted_at_the_host_path_unless_it_covers_the_guest(host, guest):
    assert Share(Path(host)).guest == guest


def test_share_mount_command_quotes_and_is_read_only_by_default():
    ro = Share(Path("/home/u/my dir"), 2).mount_command()
    assert "mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro vmtest2 " \
           "'/home/u/my dir'" in ro
    assert ",ro " not in Share(Path("/srv/x"), 0, writable=True).mount_command()


@pytest.mark.parametrize("word", ["a b", "", "x\ninit=/bin/sh", "tab\there"])
def test_a_command_line_word_cannot_smuggle_in_more(word):
    spec = MachineSpec(kernel=Path("/k"), initrd=Path("/i"), cmdline_extra=(word,))
    with pytest.raises(ConfigError, match="kernel command-line word"):
        spec.validate()


def test_arm64_console_and_no_x86_words():
    words = kernel_cmdline(_spec(arch="arm64")).split()
    assert "console=ttyAMA0" in words
    assert not {"acpi=noirq", "tsc=reliable", "no_timer_check", "acpi=force"} & set(words)
    # Firmware means ACPI, which arm64 uses only when told to.
    assert "acpi=force" in kernel_cmdline(_spec(arch="arm64", firmware="/f.fd")).split()
    assert "console=ttyS0,115200" in kernel_cmdline(_spec()).split()


def test_unknown_arch_is_refused():
    with pytest.raises(ConfigError, match="unknown architecture 'riscv64'"):
        build_argv(_spec(arch="riscv64"), qmp_fd=3, console_fd=4, console_log=Path("/c"))


def test_numa_nodes_split_memory_and_deal_cpus_round_robin():
    argv = build_argv(_spec(cpus=3, memory_mib=4096, numa_nodes=2), qmp_fd=3, console_fd=4,
                      console_log=Path("/r/console.log"))
    assert argv[argv.index("-m") + 2:argv.index("-m") + 10] == [
        "-object", "memory-backend-ram,id=numa0,size=2048M",
        "-numa", "node,nodeid=0,cpus=0,cpus=2,memdev=numa0",
        "-object", "memory-backend-ram,id=numa1,size=2048M",
        "-numa", "node,nodeid=1,cpus=1,memdev=numa1"]
    one = build_argv(_spec(numa_nodes=1), qmp_fd=3, console_fd=4,
                     console_log=Path("/r/console.log"))
    assert "-numa" not in one


@pytest.mark.parametrize("spec,message", [
    (_spec(cpus=1, numa_nodes=2), "numa_nodes 2"),
    (_spec(memory_mib=1025, numa_nodes=2), "numa_nodes 2"),
    (_spec(cpu_flags=("pdpe1gb,kvm=off",)), "CPU feature"),
])
def test_bad_numa_and_cpu_flags_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_argv(spec, qmp_fd=3, console_fd=4, console_log=Path("/r/console.log"))
