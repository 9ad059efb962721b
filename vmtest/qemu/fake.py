"""A fake Machine for unit tests, and the recorder that makes its scripts from real runs.

Like QEMU's null QMP or labgrid's fake drivers, it ships in the package: unit tests run
the upper stages (boot's accelerator probe, a scenario, a whole run and its verdict)
against it instead of patching subprocess or paramiko.

A *transcript* is what a real guest answered during one real run: every SSH command with
its exit status and output, and every QMP-backed call (hotplug) with its reply, in order.
RecordingMachine writes one while a real run goes on (scripts/record_transcript.py);
FakeMachine replays it, refusing any command the recording did not see at that point, so
a scenario replayed against it computes its metrics from real guest output.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vmtest import errors
from vmtest.channel.command import ChannelKind, CommandChannel, WatchedSSH
from vmtest.channel.console import CrashSighting, find_crash
from vmtest.channel.ssh import SSHChannel
from vmtest.errors import ChannelError, InfraError, KernelCrash, VmtestError
from vmtest.guest import words
from vmtest.qemu.argv import MachineSpec
from vmtest.qemu.machine import Lifecycle, Machine, State

# What a guest's console shows once the init is ready.
READY_CONSOLE = words.said(words.INIT) + b"\n" + words.said(words.READY, "6.1.0-fake") + b"\n"


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


@dataclass
class Transcript:
    """The recorded exchanges of one run, in order."""

    header: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: Path) -> None:
        with gzip.open(path, "wt") as out:
            out.write(json.dumps({"header": self.header}) + "\n")
            for step in self.steps:
                out.write(json.dumps(step) + "\n")

    @classmethod
    def load(cls, path: Path) -> Transcript:
        with gzip.open(path, "rt") as src:
            lines = [json.loads(line) for line in src]
        return cls(lines[0]["header"], lines[1:])


# QMP commands a scenario sends itself (qemu/virtio_mem.py's resize), recorded as sent;
# the machine's own (the SSH port, a DIMM's object-add) stay inside its methods.
RECORDED_QMP = ("qom-set",)

# vmtest's errors a recorded command may have ended with, by name.
_ERRORS: dict[str, type[VmtestError]] = {
    name: kind for name, kind in vars(errors).items()
    if isinstance(kind, type) and issubclass(kind, VmtestError)}


class ReplayError(AssertionError):
    """The code under test asked the fake guest something the recording did not."""


class _Cursor:
    def __init__(self, transcript: Transcript, end: VmtestError | None) -> None:
        self.steps = transcript.steps
        self.pos = 0
        self.end = end

    def next(self, kind: str, what: str) -> dict[str, Any]:
        if self.pos >= len(self.steps):
            if self.end is not None:
                raise self.end
            raise ReplayError(f"the recording ends before {kind} {what!r}")
        step = self.steps[self.pos]
        if step.get(kind) != what:
            asked = {k: v for k, v in step.items() if k in ("ssh", "qmp", "ports", "console")}
            raise ReplayError(f"step {self.pos}: expected {kind} {what!r}, the recording has "
                              f"{asked}")
        self.pos += 1
        return step


class FakeSSH(SSHChannel):
    """Answers each command with the recorded status and output."""

    def __init__(self, cursor: _Cursor) -> None:  # no client, no port: nothing to connect
        self._cursor = cursor

    def run(self, command: str, *, stdout: IO[bytes] | None = None,
            stderr: IO[bytes] | None = None, timeout_s: float | None = None,
            watch: Callable[[], None] | None = None, stdin: int | None = None) -> int:
        step = self._cursor.next("ssh", command)
        if stdout is not None:
            stdout.write(_bytes(step.get("out", "")))
        if stderr is not None:
            stderr.write(_bytes(step.get("err", "")))
        if watch is not None:
            watch()
        return int(step["status"])

    def fire(self, command: str) -> None:
        pass

    def close(self) -> None:
        pass


class FakeCommands:
    """A ports or console channel answering the command it is given with the recorded
    status, stdout and stderr (the step `{kind: command, ...}`); stdin, when given, is
    read to its end, as the real channels do."""

    def __init__(self, cursor: _Cursor, kind: str, watch: Callable[[], None]) -> None:
        self._cursor = cursor
        self._kind = kind
        self._watch = watch

    def run(self, command: str, *, stdin: int | None = None, stdout: IO[bytes] | None = None,
            stderr: IO[bytes] | None = None, timeout_s: float | None = None,
            watch: Callable[[], None] | None = None) -> int:
        step = self._cursor.next(self._kind, command)
        if stdin is not None:
            while os.read(stdin, 65536):
                pass
        self._watch()
        if watch is not None:
            watch()
        if stdout is not None:
            stdout.write(_bytes(step.get("out", "")))
        if stderr is not None:
            stderr.write(_bytes(step.get("err", "")))
        if "raise" in step:  # the recorded run ended with vmtest's error
            raise _ERRORS[step["raise"]](step.get("message", ""))
        return int(step["status"])


class _RecordingCommands:
    def __init__(self, inner: CommandChannel, kind: str, transcript: Transcript) -> None:
        self._inner = inner
        self._kind = kind
        self._transcript = transcript

    def run(self, command: str, *, stdin: int | None = None, stdout: IO[bytes] | None = None,
            stderr: IO[bytes] | None = None, timeout_s: float | None = None,
            watch: Callable[[], None] | None = None) -> int:
        out, err = io.BytesIO(), io.BytesIO()
        step: dict[str, Any] = {self._kind: command}
        try:
            status = self._inner.run(command, stdin=stdin, stdout=out, stderr=err,
                                     timeout_s=timeout_s, watch=watch)
            step["status"] = status
        except VmtestError as exc:
            step |= {"raise": type(exc).__name__, "message": str(exc)}
            raise
        finally:
            step |= {"out": _text(out.getvalue()), "err": _text(err.getvalue())}
            self._transcript.steps.append(step)
            if stdout is not None:
                stdout.write(out.getvalue())
            if stderr is not None:
                stderr.write(err.getvalue())
        return status


class FakeConsole:
    """The serial console: bytes the fake guest printed, all at once."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def crash(self) -> CrashSighting | None:
        return find_crash(self.data, complete_lines=True)

    def final_crash(self) -> CrashSighting | None:
        return find_crash(self.data)

    @property
    def end(self) -> int:
        return len(self.data)

    def wait_data(self, offset: int, timeout_s: float) -> bytes:
        return self.data[offset:]

    def snapshot(self) -> bytes:
        return self.data

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.data.decode(errors="replace").splitlines()[-lines:])


class FakeMachine(Lifecycle):
    """Duck-types Machine for everything above qemu/: boot(), run, scenarios.

    `transcript`: what the guest answers (none: every SSH command fails the test).
    `console`: what the console shows (the probe watches it for the init marker).
    `launch_error` / `exits`: QEMU refuses to start / the VM dies at once (probe paths).
    `end`: raised once the transcript is used up (a guest that crashes or hangs there);
    without it, asking past the end is a test failure.
    """

    def __init__(self, spec: MachineSpec, run_dir: Path, *, client_key: Any = None,
                 host_key: Any = None, transcript: Transcript | None = None,
                 console: bytes = READY_CONSOLE,
                 launch_error: InfraError | None = None, exits: bool = False,
                 end: VmtestError | None = None) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.transcript = transcript or Transcript()
        self.state = State.NEW
        self.console_log = run_dir / "console.log"
        self.qemu_log = run_dir / "qemu.log"
        self.release: str | None = None
        self.boot_s: float | None = None
        self.console = FakeConsole(console)
        self._launch_error = launch_error
        self._exits = exits
        self._cursor = _Cursor(self.transcript, end)
        self.shares_mounted: list[Any] = []
        self.command: Any = None  # boot() sets it (a command on the ports)

    def cpu_seconds(self) -> float | None:
        return None  # no QEMU: nothing measured

    def where_are_the_vcpus(self) -> str:
        return ""  # no QEMU: no registers

    def launch(self) -> None:
        if self._launch_error is not None:
            raise self._launch_error
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.console_log.write_bytes(self.console.data)
        self.qemu_log.write_text("")
        self.state = State.LAUNCHED

    def exited(self) -> bool:
        return self._exits or self.state is State.STOPPED

    def unusable(self) -> str:
        if self.exited():
            return "QEMU exited"
        crash = self.console.crash
        return f"the kernel crashed: {crash.title}" if crash is not None else ""

    def check(self) -> None:
        if self._exits:
            raise InfraError("QEMU exited (fake)")
        crash = self.console.crash
        if crash is not None:
            raise KernelCrash(f"kernel crash in the guest: {crash.title}")

    def wait_ready(self, timeout_s: float) -> str:
        self.check()
        header = self.transcript.header
        self.release = str(header.get("release", "6.1.0-fake"))
        self.boot_s = float(header.get("boot_s", 0.5))
        self.state = State.READY
        return self.release

    def ssh(self, timeout_s: float = 30) -> SSHChannel:
        if self.state is not State.READY:
            raise ChannelError("the fake guest is not ready")
        return FakeSSH(self._cursor)

    def commands(self, kind: ChannelKind = ChannelKind.SSH,
                 timeout_s: float = 30) -> CommandChannel:
        if kind is ChannelKind.SSH:
            return WatchedSSH(self.ssh(timeout_s), self.check)
        if kind is ChannelKind.PORTS and self.command is None:
            raise ChannelError("this machine was launched without a command on its ports")
        return FakeCommands(self._cursor, str(kind), self.check)

    def _qmp_step(self, what: str, args: list[Any]) -> Any:
        step = self._cursor.next("qmp", what)
        if step.get("args") != args:
            raise ReplayError(f"{what}{tuple(args)}: the recording has {step.get('args')}")
        return step.get("return")

    def hotplug_dimm(self, size_mib: int, dimm_id: str | None = None) -> str:
        return str(self._qmp_step("hotplug_dimm", [size_mib, dimm_id]))

    def unplug_dimm(self, dimm_id: str) -> None:
        self._qmp_step("unplug_dimm", [dimm_id])

    def memory_devices(self) -> list[dict[str, Any]]:
        return list(self._qmp_step("memory_devices", []))

    def qmp_ok(self, command: str, **args: Any) -> Any:
        """The QMP commands a transcript holds (RECORDED_QMP: a virtio-mem resize's)."""
        return self._qmp_step(command, [args])

    def shutdown(self, *, graceful: bool = True) -> None:
        self.state = State.STOPPED

    @property
    def replayed_all(self) -> bool:
        return self._cursor.pos == len(self.transcript.steps)


class _RecordingSSH(SSHChannel):
    def __init__(self, inner: SSHChannel, transcript: Transcript) -> None:
        self._inner = inner
        self._transcript = transcript

    def run(self, command: str, *, stdout: IO[bytes] | None = None,
            stderr: IO[bytes] | None = None, timeout_s: float | None = None,
            watch: Callable[[], None] | None = None, stdin: int | None = None) -> int:
        out, err = io.BytesIO(), io.BytesIO()
        status = self._inner.run(command, stdout=out, stderr=err, timeout_s=timeout_s,
                                 watch=watch, stdin=stdin)
        self._transcript.steps.append({"ssh": command, "status": status,
                                       "out": _text(out.getvalue()),
                                       "err": _text(err.getvalue())})
        if stdout is not None:
            stdout.write(out.getvalue())
        if stderr is not None:
            stderr.write(err.getvalue())
        return status

    def fire(self, command: str) -> None:
        self._inner.fire(command)

    def close(self) -> None:
        pass  # the machine owns the real channel


class RecordingMachine(Machine):
    """A real Machine that writes down what its guest answered (a transcript)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transcript = Transcript()

    def wait_ready(self, timeout_s: float) -> str:
        release = super().wait_ready(timeout_s)
        self.transcript.header = {"release": release, "boot_s": self.boot_s,
                                  "accel": self.spec.accel}
        return release

    def ssh(self, timeout_s: float = 30) -> SSHChannel:
        return _RecordingSSH(super().ssh(timeout_s), self.transcript)

    def commands(self, kind: ChannelKind = ChannelKind.SSH,
                 timeout_s: float = 30) -> CommandChannel:
        if kind is ChannelKind.SSH:  # ssh() records
            return super().commands(kind, timeout_s)
        return _RecordingCommands(super().commands(kind, timeout_s), str(kind),
                                  self.transcript)

    def hotplug_dimm(self, size_mib: int, dimm_id: str | None = None) -> str:
        result = super().hotplug_dimm(size_mib, dimm_id)
        self.transcript.steps.append({"qmp": "hotplug_dimm", "args": [size_mib, dimm_id],
                                      "return": result})
        return result

    def unplug_dimm(self, dimm_id: str) -> None:
        super().unplug_dimm(dimm_id)
        self.transcript.steps.append({"qmp": "unplug_dimm", "args": [dimm_id], "return": None})

    def memory_devices(self) -> list[dict[str, Any]]:
        result = super().memory_devices()
        self.transcript.steps.append({"qmp": "memory_devices", "args": [], "return": result})
        return result

    def qmp_ok(self, command: str, **args: Any) -> Any:
        result = super().qmp_ok(command, **args)
        if command in RECORDED_QMP:
            self.transcript.steps.append({"qmp": command, "args": [args], "return": result})
        return result
