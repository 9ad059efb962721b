"""The QEMU command line, built by a pure function from a MachineSpec.

No I/O here: golden-file tests pin the exact argv.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from vmtest import arch as archs
from vmtest.channel.ports import PORT_NAMES
from vmtest.errors import ConfigError

# The most NUMA nodes a guest gets (`vmtest run --numa`, the plugin's --vmtest-numa, an
# experiment's `machine: {numa: N}`): one per vCPU at most, and TCG guests here use few.
MAX_NUMA_NODES = 8

_SIZE = re.compile(r"^(\d+)([KMGT]?)(?:i?B)?$", re.IGNORECASE)
_UNIT = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size_mib(text: str, what: str = "size") -> int:
    """'1G', '256M', '512' (MiB) -> MiB."""
    m = _SIZE.match(str(text).strip())
    if not m:
        raise ConfigError(f"bad {what} {text!r}", hint="use a size such as 512M or 1G")
    size = int(m.group(1)) * _UNIT[m.group(2).upper()]
    if size % (1 << 20):
        raise ConfigError(f"{what} {text!r} is not a whole number of MiB")
    return size // (1 << 20)


def qemu_opt(value: str) -> str:
    """A value inside QEMU's key=value,key=value syntax: a comma is written twice, so a
    path cannot end the value and add options of its own."""
    return value.replace(",", ",,")


# Guest folders a share may not be mounted in (the guest's own userland, the kernel's
# file systems) and folders it may not be mounted over (the guest needs what is in them:
# /root holds the run's authorized key); such a share goes under /mnt instead. Below
# /tmp or /run is fine: the share is mounted after the init's tmpfs.
GUEST_SYSTEM = ("bin", "sbin", "usr", "lib", "lib64", "etc", "dev", "proc", "sys", "init")
GUEST_KEEP = ("/", "/root", "/tmp", "/run", "/var", "/mnt")


@dataclass(frozen=True)
class Share:
    """A host folder the guest mounts over virtio-9p (QEMU's built-in server: no daemon)."""

    host: Path  # absolute, an existing folder
    index: int = 0
    writable: bool = False
    required: bool = True  # False: the default share of the current folder

    @property
    def tag(self) -> str:
        return f"vmtest{self.index}"

    @property
    def guest(self) -> str:
        """Where the guest mounts it: the same path, so commands and scripts that name
        host paths work unchanged, unless that would cover the guest's own folders."""
        parts = self.host.parts
        if str(self.host) in GUEST_KEEP or parts[1] in GUEST_SYSTEM:
            return f"/mnt/share{self.index}"
        return str(self.host)

    def mount_command(self) -> str:
        # msize: 9p's default of 8 KiB makes every read a round trip per 8 KiB.
        options = f"trans=virtio,version=9p2000.L,msize=262144{'' if self.writable else ',ro'}"
        return f"mkdir -p {shlex.quote(self.guest)} && mount -t 9p -o {options} " \
               f"{self.tag} {shlex.quote(self.guest)}"


@dataclass(frozen=True)
class MachineSpec:
    kernel: Path
    initrd: Path
    accel: str = "tcg"  # "kvm" | "tcg"
    cpus: int = 2
    memory_mib: int = 1024
    slots: int = 4
    maxmem_mib: int = 4096
    cma_mib: int = 256
    cmdline_extra: tuple[str, ...] = ()
    qemu_extra: tuple[str, ...] = ()
    network: bool = True
    binary: str = "qemu-system-x86_64"
    # None: the kernel's static ring (CONFIG_LOG_BUF_SHIFT=20, 1 MiB). A bigger one is
    # for runs that print many dump_page()s: log_buf_len=8M costs ~0.5 s of every TCG
    # boot (memblock allocation and zeroing of the ring and its descriptors).
    log_buf_len: str | None = None
    loglevel: int = 4
    firmware: str | None = None  # -bios (e.g. qboot); None: QEMU's default SeaBIOS
    shares: tuple[Share, ...] = ()
    # The command's standard streams as virtio-serial ports (channel/ports.py), for a
    # `vmtest run -- CMD` that needs no SSH: names from ports.PORT_NAMES.
    ports: tuple[str, ...] = ()
    # QEMU's seccomp filter (-sandbox), where this QEMU was built with it
    # (boot.sandbox_supported()).
    sandbox: bool = False
    # The guest's architecture (arch.ARCHES). arm64: QEMU's `virt` board, started by
    # the -kernel loader with a device tree unless `firmware` is given (UEFI and ACPI,
    # which pc-dimm hotplug needs there).
    arch: str = archs.DEFAULT
    # A virtio-mem device of up to this size (0: none), empty at start; resized over QMP
    # (qemu/virtio_mem.py). Its memory comes out of maxmem, beside the pc-dimm slots.
    virtio_mem_mib: int = 0
    # NUMA nodes (0 or 1: none): the boot memory split evenly over them, each a RAM
    # backend of its own, the vCPUs dealt round-robin (the kernel reads QEMU's SRAT).
    numa_nodes: int = 0
    # CPU model features turned on (+NAME), e.g. pdpe1gb for 1 GiB huge pages.
    cpu_flags: tuple[str, ...] = ()

    def validate(self) -> None:
        archs.get(self.arch)
        if self.accel not in ("kvm", "tcg"):
            raise ConfigError(f"unknown accelerator {self.accel!r}", hint="use kvm or tcg")
        if self.cpus < 1:
            raise ConfigError(f"cpus must be >= 1, got {self.cpus}")
        if self.cma_mib >= self.memory_mib:
            raise ConfigError(f"cma ({self.cma_mib} MiB) must be smaller than the boot memory "
                              f"({self.memory_mib} MiB)")
        if self.virtio_mem_mib < 0 or self.virtio_mem_mib % 2:
            raise ConfigError(f"virtio-mem size {self.virtio_mem_mib} MiB is not a multiple of "
                              "its 2 MiB block")
        if self.memory_mib + self.virtio_mem_mib > self.maxmem_mib:
            raise ConfigError(f"memory ({self.memory_mib} MiB) + virtio-mem "
                              f"({self.virtio_mem_mib} MiB) exceed maxmem "
                              f"({self.maxmem_mib} MiB)")
        if self.maxmem_mib < self.memory_mib:
            raise ConfigError(f"maxmem ({self.maxmem_mib} MiB) is below memory "
                              f"({self.memory_mib} MiB)")
        if self.numa_nodes < 0 or self.numa_nodes > min(max(self.cpus, 1), MAX_NUMA_NODES) \
                or (self.numa_nodes > 1 and self.memory_mib % self.numa_nodes):
            raise ConfigError(f"numa_nodes {self.numa_nodes} does not fit {self.cpus} vCPUs "
                              f"and {self.memory_mib} MiB",
                              hint=f"at most one node per vCPU and {MAX_NUMA_NODES} in all, "
                                   "memory divisible by nodes")
        for flag in self.cpu_flags:
            if not flag or not all(c.isalnum() or c in "-_." for c in flag):
                raise ConfigError(f"CPU feature {flag!r} is not a QEMU feature name")
        for name in self.ports:
            if name not in PORT_NAMES:
                raise ConfigError(f"unknown command port {name!r}")
        for share in self.shares:
            if not share.host.is_absolute():
                raise ConfigError(f"share {share.host} is not an absolute path")
        for word in self.cmdline_extra:
            # One word each: a blank or control character would smuggle in more of them.
            if not word or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in word):
                raise ConfigError(f"kernel command-line word {word!r} is empty or holds "
                                  "blanks or control characters",
                                  hint="give each word its own --append")
        if self.log_buf_len is not None and not (self.log_buf_len[:-1].isdigit()
                                                  and self.log_buf_len[-1] in "KMG0123456789"):
            raise ConfigError(f"log_buf_len {self.log_buf_len!r} is not a size like 8M")


def kernel_cmdline(spec: MachineSpec) -> str:
    arm64 = spec.arch == "arm64"
    words = [
        "console=ttyAMA0" if arm64 else "console=ttyS0,115200",
        # Quiet console: printing to a UART under TCG is slow; dmesg keeps everything,
        # and oops/panic raise the console loglevel themselves (console_verbose()).
        f"loglevel={spec.loglevel}",
        *([f"log_buf_len={spec.log_buf_len}"] if spec.log_buf_len else []),
        # A crash must end the VM at once: panic=-1 reboots, -no-reboot turns that into exit.
        "panic=-1", "oops=panic", "panic_on_warn=0",
        "rdinit=/init",
        f"cma={spec.cma_mib}M",
        # Hot-added memory stays offline until the test onlines it (movable or not).
        "memhp_default_state=offline",
        "random.trust_cpu=on",
        # A disposable test VM: speculative-execution mitigations only cost boot time
        # (alternatives patching, retpolines) and do not change mm behaviour.
        "mitigations=off",
    ]
    if arm64 and spec.firmware:
        # pc-dimm hotplug is ACPI's (the GED device). Debian's edk2 hands the kernel ACPI
        # tables and no device tree, so it uses ACPI anyway (checked: docs/findings.md);
        # a firmware that passed both would get the device tree preferred
        # (arch/arm64/kernel/acpi.c, acpi_boot_table_init) unless told otherwise.
        words.append("acpi=force")
    elif not arm64:
        words += ["tsc=reliable", "no_timer_check"]
        # PCI interrupt routing through the legacy PIRQ table, not ACPI link devices:
        # evaluating the _SB.LNKx methods in the AML interpreter took ~0.4 s per virtio
        # device under TCG (1.1 s of a 2.7 s boot-to-init, measured with
        # initcall_debug). The SCI, and with it ACPI memory hotplug, is unaffected. Not
        # with a virtio-mem device: QEMU 7.2's virtio-mem-pci has no MSI-X (no `vectors`
        # property), so its config interrupt -- how the guest hears of a resize -- is
        # INTx, which the PIRQ table does not route here ("can't find IRQ for PCI INT A";
        # the device then never plugs a byte).
        if not spec.virtio_mem_mib:
            words.append("acpi=noirq")
    if spec.accel == "tcg":
        # A TCG vCPU is a host thread: on a busy host (parallel VMs) it can wait tens of
        # seconds for a core, which the soft-lockup detector reports as a lockup (seen
        # with 10 VMs on 2 cores). 60 s, the maximum, makes that 120 s: real lockups
        # are still caught.
        words.append("watchdog_thresh=60")
    words += list(spec.cmdline_extra)
    return " ".join(words)


def _board(spec: MachineSpec) -> list[str]:
    """-machine and -cpu for spec's architecture."""
    if spec.arch == "arm64":
        # gic-version=3: QEMU 7.2's `virt` defaults to a GICv2; the v3 and its ITS give
        # the virtio-pci devices MSI-X without GICv2m.
        # TCG: `max` with the implementation-defined pointer-authentication algorithm:
        # the architected QARMA5 is costly to emulate on every function return
        # (docs/system/arm/cpu-features.rst). KVM: the host CPU.
        return ["-machine", f"virt,gic-version=3,accel={spec.accel}",
                "-cpu", "max,pauth-impdef=on" if spec.accel == "tcg" else "host"]
    # TCG: qemu64, not max: max brings LA57 (5-level paging) and dozens of features
    # that TCG must emulate on every page walk and boot check; measured ~0.5-1 s of
    # boot on these hosts. KVM: the host CPU.
    return ["-machine", f"pc,accel={spec.accel}",
            "-cpu", ",".join(["qemu64" if spec.accel == "tcg" else "host",
                              *(f"+{flag}" for flag in spec.cpu_flags)])]


def numa_args(spec: MachineSpec) -> list[str]:
    """-object/-numa pairs for spec.numa_nodes nodes (none for 0 or 1): QEMU wants the
    nodes' backends to add up to -m exactly; the hot-added DIMMs go to node 0."""
    if spec.numa_nodes <= 1:
        return []
    size = spec.memory_mib // spec.numa_nodes
    out: list[str] = []
    for node in range(spec.numa_nodes):
        cpus = [f"cpus={cpu}" for cpu in range(node, spec.cpus, spec.numa_nodes)]
        out += ["-object", f"memory-backend-ram,id=numa{node},size={size}M",
                "-numa", ",".join(["node", f"nodeid={node}", *cpus, f"memdev=numa{node}"])]
    return out


def build_argv(spec: MachineSpec, *, qmp_fd: int, console_fd: int, console_log: Path,
               port_fds: dict[str, int] | None = None) -> list[str]:
    """The full argv. QMP, the serial console and the command ports (spec.ports, one fd
    each in port_fds) travel over inherited socket fds."""
    spec.validate()
    argv = [
        spec.binary,
        *_board(spec),
        "-smp", str(spec.cpus),
        "-m", f"{spec.memory_mib}M,slots={spec.slots},maxmem={spec.maxmem_mib}M",
        *numa_args(spec),
        "-kernel", str(spec.kernel),
        "-initrd", str(spec.initrd),
        "-append", kernel_cmdline(spec),
        "-nodefaults", "-nographic", "-no-user-config",
        "-no-reboot",
        "-chardev", f"socket,id=qmp,fd={qmp_fd}",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"socket,id=con0,fd={console_fd},logfile={qemu_opt(str(console_log))}",
        "-serial", "chardev:con0",
        "-device", "virtio-rng-pci",
    ]
    if spec.sandbox:
        # No obsolete or privilege-raising system calls, no fork/exec, no changes to
        # scheduling or resource limits: what a compromised device model could use on
        # the host (QEMU's own -sandbox categories, docs/system/invocation).
        argv += ["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,"
                             "resourcecontrol=deny"]
    if spec.network:
        # Port 0: slirp picks a free port itself (no bind/close race); we read it back
        # with `info usernet`. Bound to 127.0.0.1 only. restrict=on: the guest reaches
        # nothing through slirp -- not the host's loopback (10.0.2.2), not the outside --
        # but the forwarded SSH port still reaches the guest (QEMU: "This option does not
        # affect any explicitly set forwarding rules").
        argv += ["-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22",
                 # romfile=: no iPXE option ROM, SeaBIOS skips network boot.
                 "-device", "virtio-net-pci,netdev=net0,romfile="]
    for share in spec.shares:
        # Read-only: security_model=none, the guest sees the host's owners and modes.
        # Writable: mapped-xattr, so what the guest sets as owner, mode or file type
        # (setuid bits, device nodes: mknod) is kept in the file's user.virtfs.*
        # attributes, never applied on the host, where the guest only ever makes plain
        # files (0644) and folders (0755) owned by vmtest's user.
        model = "security_model=mapped-xattr,fmode=0644,dmode=0755" if share.writable \
            else "security_model=none,readonly=on"
        argv += ["-fsdev", f"local,id=fs{share.index},path={qemu_opt(str(share.host))},"
                           f"{model}",
                 "-device", f"virtio-9p-pci,fsdev=fs{share.index},mount_tag={share.tag}"]
    if spec.ports:
        fds = port_fds or {}
        argv += ["-device", "virtio-serial-pci,id=ports"]
        for name in spec.ports:
            argv += ["-chardev", f"socket,id=port-{name},fd={fds[name]}",
                     "-device", f"virtserialport,bus=ports.0,chardev=port-{name},"
                                f"name=vmtest.{name}"]
    if spec.virtio_mem_mib:
        # The id is what virtio_mem.resize() names in qom-set; requested-size=0: the
        # guest starts without it (hot-plugged when resized).
        argv += ["-object", f"memory-backend-ram,id=vmem0-mem,size={spec.virtio_mem_mib}M",
                 "-device", "virtio-mem-pci,id=vmem0,memdev=vmem0-mem,requested-size=0"]
    if spec.firmware:
        argv += ["-bios", spec.firmware]
    argv += list(spec.qemu_extra)
    return argv
