"""The QEMU command line, built by a pure function from a MachineSpec.

No I/O here: golden-file tests pin the exact argv.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from vmtest.channel.ports import PORT_NAMES
from vmtest.errors import ConfigError

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
    # NUMA nodes (0 or 1: none): the boot memory split evenly over them, each a RAM
    # backend of its own, the vCPUs dealt round-robin (the kernel reads QEMU's SRAT).
    numa_nodes: int = 0
    # CPU model features turned on (+NAME), e.g. pdpe1gb for 1 GiB huge pages.
    cpu_flags: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.accel not in ("kvm", "tcg"):
            raise ConfigError(f"unknown accelerator {self.accel!r}", hint="use kvm or tcg")
        if self.cpus < 1:
            raise ConfigError(f"cpus must be >= 1, got {self.cpus}")
        if self.cma_mib >= self.memory_mib:
            raise ConfigError(f"cma ({self.cma_mib} MiB) must be smaller than the boot memory "
                              f"({self.memory_mib} MiB)")
        if self.maxmem_mib < self.memory_mib:
            raise ConfigError(f"maxmem ({self.maxmem_mib} MiB) is below memory "
                              f"({self.memory_mib} MiB)")
        if self.numa_nodes < 0 or self.numa_nodes > max(self.cpus, 1) \
                or (self.numa_nodes > 1 and self.memory_mib % self.numa_nodes):
            raise ConfigError(f"numa_nodes {self.numa_nodes} does not fit {self.cpus} vCPUs "
                              f"and {self.memory_mib} MiB",
                              hint="at most one node per vCPU, memory divisible by nodes")
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
    words = [
        "console=ttyS0,115200",
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
        "tsc=reliable",
        "no_timer_check",
        # PCI interrupt routing through the legacy PIRQ table, not ACPI link devices:
        # evaluating the _SB.LNKx methods in the AML interpreter took ~0.4 s per virtio
        # device under TCG (1.1 s of a 2.7 s boot-to-init, measured with initcall_debug).
        # The SCI, and with it ACPI memory hotplug, is unaffected.
        "acpi=noirq",
    ]
    if spec.accel == "tcg":
        # A TCG vCPU is a host thread: on a busy host (parallel VMs) it can wait tens of
        # seconds for a core, which the soft-lockup detector reports as a lockup (seen
        # with 10 VMs on 2 cores). 60 s, the maximum, makes that 120 s: real lockups
        # are still caught.
        words.append("watchdog_thresh=60")
    words += list(spec.cmdline_extra)
    return " ".join(words)


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
        "-machine", f"pc,accel={spec.accel}",
        # TCG: qemu64, not max: max brings LA57 (5-level paging) and dozens of features
        # that TCG must emulate on every page walk and boot check; measured ~0.5-1 s of
        # boot on these hosts. KVM: the host CPU.
        "-cpu", ",".join(["qemu64" if spec.accel == "tcg" else "host",
                          *(f"+{flag}" for flag in spec.cpu_flags)]),
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
    if spec.network:
        # Port 0: slirp picks a free port itself (no bind/close race); we read it back
        # with `info usernet`. Bound to 127.0.0.1 only.
        argv += ["-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:0-:22",
                 # romfile=: no iPXE option ROM, SeaBIOS skips network boot.
                 "-device", "virtio-net-pci,netdev=net0,romfile="]
    for share in spec.shares:
        # security_model=none: the guest sees the host's owners and modes and acts with
        # vmtest's own rights on the host; readonly=on unless the share is writable.
        argv += ["-fsdev", f"local,id=fs{share.index},path={qemu_opt(str(share.host))},"
                           f"security_model=none{'' if share.writable else ',readonly=on'}",
                 "-device", f"virtio-9p-pci,fsdev=fs{share.index},mount_tag={share.tag}"]
    if spec.ports:
        fds = port_fds or {}
        argv += ["-device", "virtio-serial-pci,id=ports"]
        for name in spec.ports:
            argv += ["-chardev", f"socket,id=port-{name},fd={fds[name]}",
                     "-device", f"virtserialport,bus=ports.0,chardev=port-{name},"
                                f"name=vmtest.{name}"]
    if spec.firmware:
        argv += ["-bios", spec.firmware]
    argv += list(spec.qemu_extra)
    return argv
