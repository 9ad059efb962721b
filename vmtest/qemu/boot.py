"""Boot a built kernel with this run's keys and initramfs, on the right accelerator.

boot() is the one way a guest is started: `vmtest run`, every scenario run and the
integration tests go through it. The machine class and the initramfs builder are
parameters, so that unit tests drive the accelerator probe and its fallback with the
fake machine of vmtest/qemu/fake.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vmtest import arch as archs
from vmtest import hostcmd, paths
from vmtest.channel import ports
from vmtest.channel.keys import KeyPair
from vmtest.channel.ports import Command
from vmtest.deadline import file_stamp
from vmtest.errors import ConfigError, InfraError, MissingRequirement
from vmtest.guest import rootfs, words
from vmtest.qemu import accel as accel_mod
from vmtest.qemu.argv import MachineSpec, Share
from vmtest.qemu.machine import Machine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BootOptions:
    accel: str = "auto"
    cpus: int = 2
    memory_mib: int = 1024
    cma_mib: int = 256
    slots: int = 4
    maxmem_mib: int = 4096
    boot_timeout_s: float = 60.0
    qemu_extra: tuple[str, ...] = ()
    cmdline_extra: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()  # optional guest programs (rootfs.OPTIONAL_PROGRAMS)
    log_buf_len: str | None = None  # kernel ring buffer size (None: the kernel's 1 MiB)
    # Host files and folders put into the guest at boot: (host path, guest path).
    copies: tuple[tuple[Path, str], ...] = ()
    shares: tuple[Share, ...] = ()  # host folders the guest mounts (virtio-9p)
    layers: tuple[Path, ...] = ()  # prebuilt archives (rootfs.tree_layer) after the base
    # A command the init runs on virtio-serial ports (channel/ports.py) instead of SSH:
    # such a guest has no sshd, no keys and no network; Machine.commands(PORTS) relays
    # it.
    command: Command | None = None
    arch: str = archs.DEFAULT  # the guest's architecture (arch.ARCHES)
    # The run hot-plugs pc-dimms: on arm64 that needs ACPI, so the guest boots through
    # UEFI firmware (x86 guests always have ACPI).
    acpi_hotplug: bool = False
    # A virtio-mem device of up to this size, empty at start (qemu/virtio_mem.py); 0: none.
    virtio_mem_mib: int = 0
    numa_nodes: int = 0  # NUMA nodes (0, 1: none), argv.MachineSpec's
    cpu_flags: tuple[str, ...] = ()  # QEMU CPU features turned on


def with_virtio_mem(opts: BootOptions, size_mib: int) -> BootOptions:
    """opts with a virtio-mem device of up to size_mib (0: opts as they are), and room
    for it beside the boot memory: QEMU takes its memory out of maxmem (qemu/argv.py)."""
    if not size_mib:
        return opts
    return replace(opts, virtio_mem_mib=size_mib,
                   maxmem_mib=max(opts.maxmem_mib, opts.memory_mib + size_mib))


QBOOT = Path("/usr/share/qemu/qboot.rom")
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Loud, but once per process (a matrix boots many guests)."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def firmware() -> str | None:
    """qboot where QEMU ships it: a minimal firmware that boots -kernel in a fraction of
    SeaBIOS's time under TCG (measured ~0.3 s less per boot here)."""
    return str(QBOOT) if QBOOT.exists() else None


def sandbox_supported(binary: str = "qemu-system-x86_64") -> bool:
    """Whether this QEMU has -sandbox (built with seccomp: Debian's is). QEMU reads
    options in order, so `-sandbox on -version` fails at -sandbox where it is missing
    and prints the version where it is there; the answer is kept until the binary
    changes (hostcmd)."""
    try:
        status, _ = hostcmd.output([binary, "-sandbox", "on", "-version"])
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return status == 0


# edk2 for QEMU's arm64 `virt` board (Debian's qemu-efi-aarch64).
EDK2_AARCH64 = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")


def firmware_for(arch: str, acpi_hotplug: bool) -> str | None:
    """The -bios of a guest: x86's qboot; on arm64 none (QEMU's own -kernel loader and
    a device tree, the cheaper boot) unless pc-dimm hotplug is asked for, which `virt`
    signals only through ACPI's GED device, which QEMU adds only with firmware
    (hw/arm/virt.c: "missing acpi-ged device" otherwise)."""
    if arch != "arm64":
        return firmware()
    if not acpi_hotplug:
        return None
    if not EDK2_AARCH64.is_file():
        raise MissingRequirement(f"{EDK2_AARCH64} not found (UEFI firmware for arm64 guests "
                                 "that hot-plug pc-dimms)", hint="apt-get install "
                                 "qemu-efi-aarch64")
    return str(EDK2_AARCH64)


def new_run_dir(root: Path | None = None, label: str = "run") -> Path:
    root = root or paths.cache_dir("runs")
    run_dir = Path(tempfile.mkdtemp(prefix=f"{file_stamp()}-{label}-", dir=root))
    return paths.shareable(run_dir, directory=True)


# The init sources this before READY (guest/init.sh): the run's shares mounted while
# dropbear starts, each reported on the console, instead of an SSH round trip after.
MOUNTS_SCRIPT = "/etc/vmtest/mounts"


def mounts_script(shares: tuple[Share, ...], workdir_tag: str | None = None) -> bytes:
    """Shell for the init: say NO9P without 9p, else MOUNTED TAG per share mounted; the
    share tagged `workdir_tag`, once mounted, is where the run's command runs
    (init.sh's $workdir)."""
    # 9p in /proc/filesystems ("nodev<TAB>9p"), read by shell builtins: a grep would be
    # a fork and, this early under TCG, the first run (translation) of its code.
    lines = ["has9p=", "while read -r a b; do [ \"$a$b\" = nodev9p ] && has9p=1; done "
             "< /proc/filesystems",
             f"[ -n \"$has9p\" ] || {{ say {words.NO9P}; return 0; }}"]
    lines += [f"if {s.mount_command()} 2>/dev/null; then say {words.MOUNTED} {s.tag}"
              + (f"; workdir={shlex.quote(s.guest)}" if s.tag == workdir_tag else "") + "; fi"
              for s in shares]
    return ("\n".join(lines) + "\n").encode()


def initramfs(tmp: Path, host_key: KeyPair | None, client_key: KeyPair | None,
              programs: tuple[str, ...], copies: tuple[tuple[Path, str], ...] = (),
              layers: tuple[Path, ...] = (), shares: tuple[Share, ...] = (),
              command: Command | None = None, *, arch: str = archs.DEFAULT) -> Path:
    """The cached base image + optional program layers + prebuilt layers (a kselftest
    install) + this run's keys (none for a command on the ports), copies, the script
    that mounts its shares and its command."""
    overlay = rootfs.run_overlay(host_key.dropbear_private(), client_key.authorized_key()) \
        if host_key is not None and client_key is not None else []
    if shares or command:
        overlay.append(rootfs.directory("/etc/vmtest"))
    if shares:
        overlay.append(rootfs.file_data(
            MOUNTS_SCRIPT, mounts_script(shares, command.workdir_tag if command else None),
            0o644))
    if command:
        overlay += [rootfs.file_data(ports.COMMAND_PATH, command.script.encode(), 0o600),
                    rootfs.file_data(ports.NONCE_PATH, command.nonce.encode() + b"\n", 0o600)]
    for host, guest in copies:
        overlay += rootfs.copy_entries(host, guest)
    # sshd only where the run talks SSH (a run with keys)
    programs = ("dropbear", *programs) if host_key is not None else programs
    return rootfs.assemble(rootfs.base_image(arch), overlay, tmp / "initrd.cpio",
                           layers=[*(rootfs.layer_image(p, arch) for p in programs), *layers])


MachineFactory = Callable[..., Any]  # (spec, run_dir, client_key=, host_key=) -> Machine


@contextlib.contextmanager
def boot(kernel: Path, opts: BootOptions, run_dir: Path,
         store: accel_mod.VerdictStore | None = None, *,
         machine_class: MachineFactory = Machine,
         make_initramfs: Callable[..., Path] = initramfs) -> Iterator[Machine]:
    """A booted, ready guest (SSH not yet connected); always shut down on exit."""
    store = store or accel_mod.VerdictStore()
    command = opts.command
    client_key, host_key = (None, None) if command else (KeyPair.generate(), KeyPair.generate())
    # The run's initramfs holds its private keys: in a folder of this process's own,
    # removed once the guest has unpacked it (READY), and on every way out. What a
    # SIGKILL leaves before READY, the next boot removes (sweep_stale_tmp).
    sweep_stale_tmp()
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
    try:
        target = archs.get(opts.arch)
        if not target.native and opts.accel == "kvm":
            raise ConfigError(f"--accel kvm: an {target.name} guest on an "
                              f"{platform.machine()} host runs under TCG only",
                              hint="use --accel auto or tcg")
        initrd = make_initramfs(tmp, host_key, client_key, opts.programs, opts.copies,
                                opts.layers, opts.shares, command, arch=target.name)
        spec = MachineSpec(kernel=kernel, initrd=initrd, cpus=opts.cpus,
                           firmware=firmware_for(target.name, opts.acpi_hotplug),
                           arch=target.name, binary=target.qemu,
                           virtio_mem_mib=opts.virtio_mem_mib,
                           memory_mib=opts.memory_mib, cma_mib=opts.cma_mib, slots=opts.slots,
                           maxmem_mib=opts.maxmem_mib, qemu_extra=opts.qemu_extra,
                           cmdline_extra=opts.cmdline_extra, log_buf_len=opts.log_buf_len,
                           shares=opts.shares, network=command is None,
                           ports=command.ports if command else (),
                           numa_nodes=opts.numa_nodes, cpu_flags=opts.cpu_flags,
                           # a -sandbox of the user's own (--qemu-arg) is theirs
                           sandbox="-sandbox" not in opts.qemu_extra
                           and sandbox_supported(target.qemu))
        # KVM runs a guest of the host's own architecture only.
        choice = accel_mod.choose(opts.accel if target.native else "tcg", store)
        log.info("accelerator: %s (%s)", choice.accel, choice.note)
        if choice.kvm_broken and opts.accel == "auto":
            _warn_once(choice.note)
        machine = None
        if choice.probe:
            machine, reason = _probe_kvm(machine_class(replace(spec, accel="kvm"), run_dir,
                                                       client_key=client_key,
                                                       host_key=host_key), store)
            if machine is None and opts.accel == "kvm":
                raise MissingRequirement(f"--accel kvm: KVM does not boot a guest on this "
                                         f"host: {reason}",
                                         log_path=run_dir / "console-kvm-probe.log",
                                         hint="use --accel auto (falls back to TCG) or tcg")
        if machine is None:
            machine = machine_class(replace(spec, accel=choice.accel if not choice.probe
                                            else "tcg"),
                                    run_dir, client_key=client_key, host_key=host_key)
        machine.command = command
        with machine:  # launches it unless the probe already did
            machine.wait_ready(opts.boot_timeout_s)
            shutil.rmtree(tmp, ignore_errors=True)  # the guest has its files and keys
            log.info("guest ready: %s in %.2f s (%s)", machine.release, machine.boot_s or 0,
                     machine.spec.accel)
            if opts.shares:
                machine.shares_mounted = mounted_shares(machine.console.snapshot(),
                                                        opts.shares)
            yield machine
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


TMP_PREFIX = "vmtest-boot-"


def sweep_stale_tmp() -> None:
    """Remove boot folders (TMP_PREFIX + pid) of vmtest processes of this user that no
    longer exist: what a SIGKILL between starting a boot and READY left behind. Only
    vmtest's own folders, only of dead processes, never another user's."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{TMP_PREFIX}*-*"):
        pid_text = folder.name[len(TMP_PREFIX):].split("-", 1)[0]
        try:
            if not pid_text.isdigit() or folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)  # alive: its owner still needs it
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # gone meanwhile, or a pid of another user: not ours to judge
            continue


def mounted_shares(console: bytes, shares: tuple[Share, ...]) -> list[Share]:
    """The shares the init reported mounted (MOUNTED TAG on the console). A share the
    user asked for that is not mounted is an error; the default share of the current
    folder is left out with a warning (a kernel built without 9p still runs commands)."""
    said = {line.strip().encode() for line in console.decode(errors="replace").splitlines()
            if line.startswith(words.PREFIX)}
    mounted = [s for s in shares if words.said(words.MOUNTED, s.tag) in said]
    why = ("the guest kernel has no 9p file system (CONFIG_NET_9P_VIRTIO, CONFIG_9P_FS: "
           "kernels/fragments/qemu-guest.config)") if words.said(words.NO9P) in said \
        else "mount -t 9p failed in the guest"
    for share in shares:
        if share in mounted:
            continue
        if share.required:
            raise InfraError(f"cannot share {share.host} with the guest: {why}",
                             hint="build the kernel with the vmtest fragments, or copy files "
                                  "with --copy instead")
        _warn_once(f"the current folder is not shared with the guest: {why}")
    return mounted


def _probe_kvm(machine: Machine,
               store: accel_mod.VerdictStore) -> tuple[Machine | None, str]:
    """Boot under KVM watching console progress: (the machine, "") if it boots, else
    (None, why not)."""
    host = accel_mod.host_fingerprint()
    try:
        machine.launch()
    except InfraError as exc:
        # QEMU itself refused KVM (e.g. "failed to set MSR" on some nested hosts).
        first = (exc.log_tail or str(exc)).strip().splitlines()[0:1] or [str(exc)]
        reason = f"QEMU failed to start under KVM: {first[0][:200]}"
        _give_up_kvm(machine, host, store, reason)
        return None, reason
    try:
        return _watch_probe(machine, host, store)
    except BaseException:
        machine.shutdown(graceful=False)
        raise


def _watch_probe(machine: Machine, host: str,
                 store: accel_mod.VerdictStore) -> tuple[Machine | None, str]:
    offset = 0

    def read(timeout_s: float) -> bytes:
        nonlocal offset
        data = machine.console.wait_data(offset, timeout_s)
        offset += len(data)
        return data

    result = accel_mod.watch_boot(read, time.monotonic, accel_mod.PROBE_DEADLINE_S,
                                  exited=machine.exited)
    if result.booted:
        store.put(host, True, f"booted to init in {result.elapsed_s:.1f} s")
        log.info("KVM works on this host (init after %.1f s); remembered", result.elapsed_s)
        return machine, ""
    _give_up_kvm(machine, host, store, result.reason)
    return None, result.reason


def _give_up_kvm(machine: Machine, host: str, store: accel_mod.VerdictStore,
                 reason: str) -> None:
    machine.shutdown(graceful=False)
    # Keep the probe's logs next to the real ones.
    for log_path in (machine.console_log, machine.qemu_log):
        if log_path.exists():
            log_path.rename(log_path.with_name(f"{log_path.stem}-kvm-probe{log_path.suffix}"))
    store.put(host, False, reason)
    log.warning("KVM opens but does not boot a guest here (%s): falling back to TCG. "
                "The verdict is remembered in %s; `vmtest doctor --reprobe` forgets it.",
                reason, store.path)

