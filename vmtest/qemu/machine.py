"""One QEMU guest: launch, watch, talk to, and always shut down.

Modelled on QEMU's python/qemu/machine/machine.py: a context manager whose exit
always shuts the VM down by escalation (guest poweroff, QMP quit, SIGTERM, SIGKILL,
each with a bounded wait). QMP and the serial console travel over socketpairs
inherited by QEMU, so there are no socket paths to race on or leave behind. QEMU
gets PR_SET_PDEATHSIG (set by util-linux's setpriv, which then execs QEMU), so even a
SIGKILLed vmtest leaves no orphan.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from vmtest import arch as archs
from vmtest.channel import ports
from vmtest.channel.command import ChannelKind, CommandChannel, WatchedSSH
from vmtest.channel.console import Console
from vmtest.channel.keys import KeyPair
from vmtest.deadline import Deadline
from vmtest.errors import (
    ChannelError,
    CommandTimeout,
    GuestHang,
    InfraError,
    KernelCrash,
    MissingRequirement,
    VmtestError,
)
from vmtest.guest import words
from vmtest.qemu import symbols

if TYPE_CHECKING:
    from qemu.qmp.legacy import QEMUMonitorProtocol

    from vmtest.channel.ports import Command
    from vmtest.channel.ssh import SSHChannel
    from vmtest.channel.ssh_early import EarlySSH
from vmtest.qemu.argv import MachineSpec, Share, build_argv

log = logging.getLogger(__name__)



class State(enum.Enum):
    NEW = "new"
    LAUNCHED = "launched"
    READY = "ready"
    SHUTTING_DOWN = "shutting-down"
    STOPPED = "stopped"


def _import_ssh_meanwhile() -> None:
    """Import the SSH client (paramiko, ~0.1 s) in the background while the guest boots,
    instead of before QEMU starts: off the critical path of a short `vmtest run`."""
    if "paramiko" not in sys.modules:
        threading.Thread(target=importlib.import_module, args=("paramiko",),
                         name="vmtest-import-ssh", daemon=True).start()


SETPRIV = "/usr/bin/setpriv"  # util-linux (Essential on Debian): --pdeathsig since 2.33


def with_death_signal(argv: list[str], setpriv: str = SETPRIV) -> list[str]:
    """argv run so that it is SIGKILLed when the thread that started it dies
    (PR_SET_PDEATHSIG). Not through Popen's preexec_fn: Python code between fork and
    exec in a process with threads (paramiko's, the console's drain) can deadlock on a
    lock another thread held at fork time. setpriv is a small C program: prctl, then
    exec, nothing else; where it is missing, QEMU runs without the death signal and the
    machine's own shutdown (and kill_live) remains."""
    if not os.access(setpriv, os.X_OK):
        return argv
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


_LIVE: set[Machine] = set()
_LIVE_LOCK = threading.Lock()


def live_machines() -> list[Machine]:
    """The machines of this process that are running now."""
    with _LIVE_LOCK:
        return list(_LIVE)


def kill_live(run_dir: Path | None = None, reason: str = "interrupt") -> int:
    """Stop every live machine (or those of one run dir) at once: Ctrl-C, run timeouts.

    The owners' context managers then see a dead QEMU and unwind normally.
    """
    with _LIVE_LOCK:
        victims = [m for m in _LIVE if run_dir is None or m.run_dir == run_dir]
    for machine in victims:
        machine.abort(reason)
    return len(victims)


class Lifecycle:
    """`with machine:` launches it (unless already launched) and always shuts it down;
    shared by Machine and the fake machine of vmtest/qemu/fake.py."""

    state: State

    def launch(self) -> None:
        raise NotImplementedError

    def shutdown(self, *, graceful: bool = True) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if self.state is State.NEW:
            self.launch()
        return self

    def __exit__(self, *exc: object) -> None:
        # After an error the guest is suspect (crashed, unreachable): no poweroff
        # round trip that would wait seconds for nothing.
        self.shutdown(graceful=exc[0] is None)


class Machine(Lifecycle):
    """Use as `with Machine(spec, run_dir, ...) as vm:`; run_dir keeps the logs."""

    def __init__(self, spec: MachineSpec, run_dir: Path, *, client_key: KeyPair | None = None,
                 host_key: KeyPair | None = None) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.client_key = client_key
        self.host_key = host_key
        self.state = State.NEW
        self.console_log = run_dir / "console.log"
        self.qemu_log = run_dir / "qemu.log"
        self.argv: list[str] = []
        self.release: str | None = None
        self.boot_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self._console: Console | None = None
        self._ssh: SSHChannel | None = None
        self._stack = contextlib.ExitStack()
        self._launched_at = 0.0
        self._dimms: list[str] = []
        self.aborted = ""  # why vmtest killed the VM: "interrupt" | "timeout"
        self.shares_mounted: list[Share] = []  # boot() mounts the spec's shares
        self.command: Command | None = None  # what the init runs on the ports (boot())
        self._ports: dict[str, socket.socket] = {}  # our ends of spec.ports
        self._ports_channel: ports.PortsChannel | None = None
        self._ready_offset = 0  # console bytes up to READY
        self._early: EarlySSH | None = None  # connected while the init finishes
        self._early_tried = False

    # -- lifecycle -----------------------------------------------------------------
    def launch(self) -> None:
        if self.state is not State.NEW:
            raise InfraError(f"machine already {self.state.value}")
        if shutil.which(self.spec.binary) is None:
            raise MissingRequirement(f"{self.spec.binary} not found",
                                     hint="apt-get install "
                                          + " ".join(archs.get(self.spec.arch).packages))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._launch()
        except BaseException:
            self.shutdown()
            raise

    def _launch(self) -> None:
        qmp_local, qmp_remote = socket.socketpair()
        con_local, con_remote = socket.socketpair()
        self._stack.callback(qmp_local.close)
        self._stack.callback(con_local.close)
        remote: dict[str, socket.socket] = {}
        for name in self.spec.ports:
            self._ports[name], remote[name] = socket.socketpair()
            self._stack.callback(self._ports[name].close)
            self._stack.callback(remote[name].close)  # closed after Popen; this if not
        self.argv = build_argv(self.spec, qmp_fd=qmp_remote.fileno(),
                               console_fd=con_remote.fileno(), console_log=self.console_log,
                               port_fds={name: sock.fileno() for name, sock in remote.items()})
        (self.run_dir / "qemu.argv").write_text(shlex.join(self.argv) + "\n")
        log.debug("launching: %s", shlex.join(self.argv))
        qemu_log = self.qemu_log.open("wb")
        self._stack.callback(qemu_log.close)
        try:
            self._proc = subprocess.Popen(
                with_death_signal(self.argv), stdin=subprocess.DEVNULL, stdout=qemu_log,
                stderr=subprocess.STDOUT,
                pass_fds=(qmp_remote.fileno(), con_remote.fileno(),
                          *(sock.fileno() for sock in remote.values())),
                start_new_session=True)  # Ctrl-C reaches us, and we shut QEMU down in order
        finally:
            qmp_remote.close()
            con_remote.close()
            for sock in remote.values():
                sock.close()
        self._launched_at = time.monotonic()
        self.state = State.LAUNCHED
        if self.client_key is not None:
            _import_ssh_meanwhile()
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._console = Console(con_local)
        # Imported now, while QEMU initializes (asyncio and the QMP library: ~20 ms).
        from qemu.qmp.legacy import QEMUMonitorProtocol

        self._qmp = QEMUMonitorProtocol(qmp_local)
        try:
            self._qmp.settimeout(10)
            self._qmp.connect()
        except Exception as exc:  # the library raises several kinds
            self._raise_if_exited("connecting QMP")
            raise InfraError(f"QMP connection to QEMU failed: {exc}",
                             log_path=self.qemu_log) from exc

    @property
    def console(self) -> Console:
        assert self._console is not None, "machine not launched"
        return self._console

    def exited(self) -> bool:
        return self._proc is not None and self._proc.poll() is not None

    # -- watching ------------------------------------------------------------------
    def unusable(self) -> str:
        """Why this guest cannot take another command ('' while it can): QEMU exited,
        its console showed a fatal kernel report, or its SSH connection closed -- each
        can come first while a panic is in flight."""
        if self.exited():
            return "QEMU exited"
        if self._console is not None and self._console.crash is not None:
            return f"the kernel crashed: {self._console.crash.title}"
        if self._ssh is not None and not self._ssh.is_active():
            return "its SSH connection closed"
        return ""

    def check(self) -> None:
        """Raise KernelCrash / InfraError if the guest crashed or QEMU died."""
        crash = self.console.crash  # scanned line by line as it arrives
        if crash is not None:
            raise KernelCrash(f"kernel crash in the guest: {crash.title}",
                              log_tail=self.console.tail(40), log_path=self.console_log)
        if self.exited() and self.state is not State.SHUTTING_DOWN:
            self._raise_if_exited("running")

    def _raise_if_exited(self, step: str) -> None:
        if not self.exited():
            return
        assert self._proc is not None
        if self.aborted == "timeout":
            raise CommandTimeout(f"the run exceeded its time limit (while {step}); the VM "
                                 "was stopped", log_tail=self.console.tail(20),
                                 log_path=self.console_log)
        if self.aborted:
            raise InfraError(f"the VM was stopped by vmtest ({self.aborted}) while {step}",
                             log_path=self.console_log)
        # Give the drain thread a moment to collect the last console bytes.
        time.sleep(0.1)
        crash = self.console.final_crash() if self._console else None
        if crash is not None:
            raise KernelCrash(f"kernel crash in the guest: {crash.title}",
                              log_tail=self.console.tail(40), log_path=self.console_log)
        qemu_tail = self.qemu_log.read_text(errors="replace")[-2000:] if self.qemu_log.exists() \
            else ""
        if self._proc.returncode == 0 and self.state is State.READY:
            raise KernelCrash("the guest powered off or rebooted unexpectedly "
                              f"(while {step})", log_tail=self.console.tail(20),
                              log_path=self.console_log)
        raise InfraError(f"QEMU exited with status {self._proc.returncode} while {step}",
                         log_tail=qemu_tail or (self.console.tail(20) if self._console else ""),
                         log_path=self.qemu_log,
                         hint=f"argv in {self.run_dir / 'qemu.argv'}")

    def wait_ready(self, timeout_s: float) -> str:
        """Wait for the init's readiness line; returns the guest's kernel release."""
        deadline = Deadline(timeout_s)
        offset = 0
        seen = b""
        while True:
            self.check()
            if self.exited():
                self._raise_if_exited("booting")
            chunk = self.console.wait_data(offset, deadline.remaining_s(0.1))
            offset += len(chunk)
            seen += chunk
            if words.said(words.SSHD) in seen and not self._early_tried:
                self._connect_early(deadline)
            m = words.READY_RE.search(seen)
            if m:
                self._ready_offset = m.end()  # `seen` is the console from its start
                self.release = m.group(1).decode(errors="replace").strip()
                self.boot_s = time.monotonic() - self._launched_at
                self.state = State.READY
                self._finish_early(deadline)
                return self.release
            if words.said(words.NONET) in seen and self.spec.network:
                raise ChannelError("the guest has no network interface eth0",
                                   hint="CONFIG_VIRTIO_NET / CONFIG_VIRTIO_PCI missing?",
                                   log_path=self.console_log)
            if deadline.expired:
                last = seen.decode(errors="replace").strip().splitlines()
                where = f"last console line: {last[-1]!r}" if last else "no console output"
                cpus = self.where_are_the_vcpus()
                raise GuestHang(f"guest did not become ready within {timeout_s:.0f} s ({where})"
                                + (f"; vCPUs at {cpus}" if cpus else ""),
                                log_tail=self.console.tail(20), log_path=self.console_log)

    def where_are_the_vcpus(self) -> str:
        """'cpu0 native_safe_halt+0xb, cpu1 ...' (best effort, for hang reports); also
        written to hang-vcpus.txt in the run directory."""
        try:
            text = self.qmp_ok("human-monitor-command", **{"command-line": "info registers -a"})
        except VmtestError:
            return ""
        table = symbols.load(Path(self.spec.kernel))
        where = ", ".join(f"cpu{i} {symbols.name(pc, table)}"
                          for i, pc in enumerate(symbols.parse_rips(str(text))))
        (self.run_dir / "hang-vcpus.txt").write_text(f"{where}\n\n{text}")
        return where

    # -- channels ------------------------------------------------------------------
    def qmp(self, command: str, **args: Any) -> Any:
        if self._qmp is None:
            raise InfraError("QMP is not connected")
        try:
            return self._qmp.cmd(command, **args)
        except Exception as exc:
            self._raise_if_exited(f"QMP {command}")
            raise InfraError(f"QMP {command} failed: {exc}") from exc

    def qmp_ok(self, command: str, **args: Any) -> Any:
        reply = self.qmp(command, **args)
        if isinstance(reply, dict) and "error" in reply:
            raise InfraError(f"QMP {command} {args} failed: {reply['error'].get('desc')}")
        return reply.get("return") if isinstance(reply, dict) else reply

    def ssh_port(self) -> int:
        text = self.qmp_ok("human-monitor-command", **{"command-line": "info usernet"})
        # "  TCP[HOST_FORWARD]  12       127.0.0.1 34567       10.0.2.15    22 ..."
        m = re.search(r"HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+10\.0\.2\.15\s+22", text)
        if not m:
            raise ChannelError(f"could not read the forwarded SSH port from QEMU: {text!r}")
        return int(m.group(1))

    def _connect_early(self, deadline: Deadline) -> None:
        """The guest's sshd has started: connect while its init finishes
        (channel/ssh_early.py); ssh() takes the connection once READY."""
        self._early_tried = True
        if self.client_key is None or self.host_key is None or self._ssh is not None:
            return
        from vmtest.channel.ssh_early import EarlySSH

        self._early = EarlySSH(self.ssh_port(), self.client_key, self.host_key, deadline)

    def _finish_early(self, deadline: Deadline) -> None:
        """Take the early connection if it worked; else ssh() connects as before."""
        if self._early is not None and self._ssh is None:
            self._ssh = self._early.take(deadline)

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early.drop()

    def ssh(self, timeout_s: float = 30) -> SSHChannel:
        from vmtest.channel.ssh import SSHChannel

        if self._ssh is not None:
            return self._ssh
        if self.client_key is None or self.host_key is None:
            raise ChannelError("this machine was launched without SSH keys")
        port = self.ssh_port()
        self._ssh = SSHChannel.connect(port, self.client_key, self.host_key, Deadline(timeout_s),
                                       alive=self.check)
        return self._ssh

    def commands(self, kind: ChannelKind = ChannelKind.SSH,
                 timeout_s: float = 30) -> CommandChannel:
        """The command channel of `kind`, its commands watched by this machine's crash and
        exit checks: SSH (connected within timeout_s), the ports (the command given at
        boot, once) or the console."""
        if kind is ChannelKind.SSH:
            return WatchedSSH(self.ssh(timeout_s), self.check)
        if kind is ChannelKind.CONSOLE:
            from vmtest.channel.console_expect import ConsoleChannel  # pexpect: when used

            return ConsoleChannel(self.console, self.check, self._raise_if_exited)
        if self.command is None or not self._ports:
            raise ChannelError("this machine was launched without a command on its ports")
        if self._ports_channel is None:
            ready = self._ready_offset  # the init says NOPORTS after READY
            self._ports_channel = ports.PortsChannel(
                self._ports, self.command,
                said=lambda offset: self.console.wait_data(ready + offset, 0),
                watch=self.check, console_log=self.console_log)
        return self._ports_channel

    # -- memory hotplug ------------------------------------------------------------
    def hotplug_dimm(self, size_mib: int, dimm_id: str | None = None) -> str:
        """Hot-add a pc-dimm backed by RAM; returns its device id."""
        dimm_id = dimm_id or f"dimm{len(self._dimms)}"
        self.qmp_ok("object-add", **{"qom-type": "memory-backend-ram", "id": f"mem-{dimm_id}",
                                     "size": size_mib << 20})
        self.qmp_ok("device_add", driver="pc-dimm", id=dimm_id, memdev=f"mem-{dimm_id}")
        self._dimms.append(dimm_id)
        return dimm_id

    def unplug_dimm(self, dimm_id: str) -> None:
        """Request removal (the guest must have offlined the memory; ACPI ejects it)."""
        self.qmp_ok("device_del", id=dimm_id)

    def memory_devices(self) -> list[dict[str, Any]]:
        return list(self.qmp_ok("query-memory-devices"))

    # -- shutdown ------------------------------------------------------------------
    def cpu_seconds(self) -> float | None:
        """CPU time QEMU has used so far (user + system, all its threads), None when it
        is gone or /proc cannot say: what a guest of this scenario really costs the
        host (`vmtest matrix --jobs auto` sizes the parallelism by it)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        try:
            stat = Path(f"/proc/{proc.pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def shutdown(self, *, graceful: bool = True) -> None:
        """Escalate until QEMU is gone: poweroff, QMP quit, SIGTERM, SIGKILL."""
        if self.state is State.STOPPED:
            return
        self.state = State.SHUTTING_DOWN
        proc = self._proc
        try:
            if proc is not None and proc.poll() is None:
                steps = []
                if graceful and self._ssh is not None:
                    steps.append(("guest poweroff", lambda: self._ssh.fire("poweroff -f")
                                  if self._ssh else None, 3.0))
                steps.append(("QMP quit", self._qmp_quit, 3.0))
                steps.append(("SIGTERM", proc.terminate, 3.0))
                steps.append(("SIGKILL", proc.kill, 10.0))
                for name, action, wait_s in steps:
                    try:
                        action()
                    except Exception as exc:  # keep escalating whatever happened
                        log.debug("%s failed: %s", name, exc)
                    try:
                        proc.wait(timeout=wait_s)
                        log.debug("QEMU stopped after %s", name)
                        break
                    except subprocess.TimeoutExpired:
                        log.warning("QEMU still running after %s; escalating", name)
        finally:
            self._drop_early()
            if self._ssh is not None:
                self._ssh.close()
                self._ssh = None
            if self._qmp is not None:
                with contextlib.suppress(Exception):
                    self._qmp.close()
                self._qmp = None
            if self._console is not None:
                self._console.close()
            self._stack.close()
            if proc is not None and proc.poll() is None:  # pragma: no cover - last resort
                proc.kill()
                proc.wait(timeout=10)
            self.state = State.STOPPED
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def abort(self, reason: str = "interrupt") -> None:
        """Kill QEMU now, from any thread; the owner's shutdown() cleans up the rest."""
        self.aborted = reason
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _qmp_quit(self) -> None:
        if self._qmp is not None:
            with contextlib.suppress(Exception):
                self._qmp.cmd("quit")
