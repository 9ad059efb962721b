"""A scenario run as one guest script on the virtio-serial ports: no sshd, no network.

A scenario that needs nothing from the host between its steps (no DIMM hot-added over
QMP between them) gives its guest part as `Step`s. The runner wraps them with its own
(the variant's sysctls, the clock readings), `script()` makes the one shell script the
guest's init runs at boot (channel/ports.py), and `run()` relays it: each step's output
comes back on stdout between two markers, its exit status in the second, so the host
splits one stream into named `Section`s -- and knows, while the script runs, which step
is running and for how long (each step has its own time limit, as each SSH command has).

Why: a scenario over SSH is ready ~0.8 s later than a command on the ports (dropbear
starts, the network comes up, the handshake) and spends a round trip per step; that is
the difference between a data-defined scenario and `vmtest run -- CMD` on a short
command (docs/performance.md).

The markers carry a token the host makes per run and hands in through the script's
environment; the script's first line says it (so a replayed transcript splits by the
token its recording had), and no step sees it. Each step's text goes into a file by a
here-document whose delimiter is no line of the text, and runs as `sh FILE`: a step
whose shell text is broken fails alone, as it would over SSH.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from vmtest.channel.command import ChannelKind
from vmtest.channel.ports import Command
from vmtest.errors import ChannelError, CommandTimeout, InfraError, VmtestError

if TYPE_CHECKING:
    from vmtest.qemu.machine import Machine

log = logging.getLogger(__name__)

TOKEN_VAR = "VMTEST_STEP"
STEP_DIR = "/run/vmtest-steps"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


@dataclass
class Section:
    """What one step printed, its exit status (None: it never ended) and the host's
    clock when its start and end markers came."""

    name: str
    out: bytearray = field(default_factory=bytearray)
    status: int | None = None
    began: float = 0.0
    ended: float | None = None

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    def tail(self, chars: int = 1500) -> str:
        return self.text[-chars:]


def _failed(section: Section) -> VmtestError:
    return InfraError(f"the guest step {section.name} failed (exit {section.status})",
                      log_tail=section.tail())


@dataclass(frozen=True)
class Step:
    """One part of the guest script. `body`: shell text the guest's sh runs (from a
    file). A step other than the experiment's command has its stderr with its stdout and
    ends the script when it fails (`failure` makes the error it raises on the host); the
    experiment's own command (`user`) keeps its stderr apart and its status is a result.
    `save_as`: the run directory's file its output goes to (steps saved to the same file
    are joined)."""

    name: str
    body: str
    timeout_s: float = 120.0
    user: bool = False
    # vmtest's own text (not the experiment's): run in a subshell of the script, which
    # sees the script's variables; the experiment's setup commands run as `sh FILE`
    own: bool = True
    save_as: str | None = None
    failure: Callable[[Section], VmtestError] = _failed

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"step name {self.name!r}")
        if self.user and self.own:
            object.__setattr__(self, "own", False)  # the experiment's: a shell of its own


def _delimiter(body: str) -> str:
    """A here-document delimiter that is no line of body."""
    lines = set(body.splitlines())
    n = 0
    while f"VMTEST_STEP_END_{n}" in lines:
        n += 1
    return f"VMTEST_STEP_END_{n}"


def script(steps: list[Step]) -> str:
    """The guest script: every step's text into a file, then each run between its
    markers; a failed step of vmtest's own ends it."""
    if len({s.name for s in steps}) != len(steps):
        raise ValueError("step names repeat")
    lines = [f't=${TOKEN_VAR}; unset {TOKEN_VAR}', 'printf "%s\\n" "$t"',
             f"mkdir -p {STEP_DIR} || exit 125"]
    for i, step in enumerate(steps):
        end = _delimiter(step.body)
        lines += [f"cat > {STEP_DIR}/{i} <<'{end}'", step.body.rstrip("\n"), end]
    for i, step in enumerate(steps):
        lines.append(f'printf "%s begin %s\\n" "$t" {step.name}')
        if step.user:
            # The command's stdout through a fifo and a relay that ends with it -- or a
            # second later when something it left in the background holds the fifo (as
            # SSH would not wait either): later output must not land in the next step's.
            fifo = f"{STEP_DIR}/out"
            lines += [f"rm -f {fifo}; mkfifo {fifo} || exit 125",
                      f"cat {fifo} & r=$!",
                      f"sh {STEP_DIR}/{i} </dev/null >{fifo}; s=$?",
                      # (the watchdog holds none of the script's streams open)
                      '(exec >/dev/null 2>&1; sleep 1; kill "$r") & w=$!',
                      'wait "$r"; kill "$w" 2>/dev/null']
        elif step.own:
            # vmtest's own text: in a subshell of the script (a fork, no exec of a shell
            # -- each exec costs milliseconds under TCG)
            lines.append(f"( . {STEP_DIR}/{i} ) </dev/null 2>&1; s=$?")
        else:
            lines.append(f"sh {STEP_DIR}/{i} </dev/null 2>&1; s=$?")
        lines.append(f'printf "%s end %s %d\\n" "$t" {step.name} "$s"')
        if not step.user:
            lines.append('[ "$s" = 0 ] || exit 0')
    return "\n".join(lines) + "\n"


def command(steps: list[Step], workdir_tag: str | None = None) -> Command:
    """The boot-time Command that runs these steps, with a fresh token."""
    return Command.new(script(steps), workdir_tag=workdir_tag,
                       env=((TOKEN_VAR, secrets.token_hex(16)),))


class Demux:
    """stdout of the script, split into sections as it comes (a file-like sink for the
    ports' relay). The first line is the token; every marker is `TOKEN begin|end NAME
    [STATUS]\\n`, wherever it falls (a step's output need not end its line)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.token: bytes | None = None
        self.sections: dict[str, Section] = {}
        self.current: Section | None = None
        self.outside = bytearray()  # what came outside any step (the shell's own errors)
        self._buf = b""
        self._clock = clock
        self._marker: re.Pattern[bytes] | None = None

    def write(self, data: bytes) -> int:
        self._buf += data
        if self.token is None:
            line, newline, rest = self._buf.partition(b"\n")
            if not newline:
                return len(data)
            self.token, self._buf = line.strip(), rest
            self._marker = re.compile(re.escape(self.token)
                                      + rb" (begin|end) ([a-z0-9_.-]+)(?: (-?\d+))?\n")
        self._split()
        return len(data)

    def flush(self) -> None:
        pass

    def _split(self) -> None:
        assert self._marker is not None and self.token is not None
        while True:
            at = self._buf.find(self.token)
            if at < 0:
                # keep what could be the start of a token, pass on the rest
                keep = len(self.token) - 1
                self._emit(self._buf[:max(0, len(self._buf) - keep)])
                self._buf = self._buf[max(0, len(self._buf) - keep):]
                return
            match = self._marker.match(self._buf, at)
            if match is None:
                if b"\n" in self._buf[at:] or len(self._buf) - at > len(self.token) + 300:
                    # the token, but not a marker: output
                    self._emit(self._buf[:at + 1])
                    self._buf = self._buf[at + 1:]
                    continue
                self._emit(self._buf[:at])
                self._buf = self._buf[at:]
                return
            self._emit(self._buf[:at])
            self._buf = self._buf[match.end():]
            self._mark(match.group(1), match.group(2).decode(), match.group(3))

    def _mark(self, what: bytes, name: str, status: bytes | None) -> None:
        now = self._clock()
        if what == b"begin":
            self.current = self.sections[name] = Section(name, began=now)
            return
        section = self.sections.get(name)
        if section is not None:
            section.status = int(status) if status is not None else None
            section.ended = now
        self.current = None

    def _emit(self, data: bytes) -> None:
        if data:
            (self.current.out if self.current is not None else self.outside).extend(data)

    def end(self) -> None:
        """The stream ended (or the run stopped): what was held back is output too."""
        if self._buf:
            self._emit(self._buf)
            self._buf = b""


class Sections(dict[str, Section]):
    """A run's sections by step name."""

    def reading(self, name: str) -> tuple[float, float] | None:
        """(host clock, guest uptime) of a step that printed /proc/uptime."""
        section = self.get(name)
        if section is None or section.ended is None:
            return None
        try:
            return (section.began + section.ended) / 2, float(section.text.split()[0])
        except (ValueError, IndexError):
            return None


def run(vm: Machine, steps: list[Step], run_dir: Path, *,
        stderr_as: str = "stderr.txt") -> Sections:
    """Relay the script the machine was booted with (`command(steps)`); save each step's
    output where it says, the experiment's stderr as `stderr_as` (also when the run
    stops on the way: what came is kept); raise the error of the first of vmtest's own
    steps that failed, or CommandTimeout naming a step past its time limit."""
    demux = Demux()
    by_name = {s.name: s for s in steps}

    def watch() -> None:
        current = demux.current
        if current is None:
            return
        step = by_name.get(current.name)
        if step is not None and time.monotonic() - current.began > step.timeout_s:
            what = step.body.strip() if step.user else f"vmtest's step {step.name}"
            raise CommandTimeout(f"guest command did not finish within {step.timeout_s:g} s: "
                                 f"{what}")

    if vm.command is None:
        raise ChannelError("this machine was launched without the steps' script",
                           hint="boot it with BootOptions(command=onports.command(steps))")
    channel = vm.commands(ChannelKind.PORTS)
    limit = sum(s.timeout_s for s in steps) + 60
    try:
        with (run_dir / stderr_as).open("wb") as err:
            status = channel.run(vm.command.line, stdout=cast(IO[bytes], demux), stderr=err,
                                 timeout_s=limit, watch=watch)
    finally:
        demux.end()
        _save(demux.sections, steps, run_dir)
    sections = Sections(demux.sections)
    for done in sections.values():
        log.debug("guest step %s: exit %s, %.3f s, %d bytes", done.name, done.status,
                  (done.ended or done.began) - done.began, len(done.out))
    if status != 0:
        raise InfraError(f"the guest script of the run failed (exit {status})",
                         log_tail=bytes(demux.outside).decode(errors="replace")[-1500:])
    for step in steps:
        section = sections.get(step.name)
        if section is None or section.ended is None:
            raise ChannelError(f"the guest script ended before its step {step.name}",
                               log_tail=bytes(demux.outside).decode(errors="replace")[-1500:])
        if not step.user and section.status != 0:
            raise step.failure(section)
    return sections


def run_over_ssh(vm: Machine, steps: list[Step], run_dir: Path, *,
                 before: Callable[[str], None] | None = None,
                 stderr_as: str = "stderr.txt") -> Sections:
    """The same steps, one SSH command each, for a scenario whose host has work between
    them (`before(NAME)` is called before each step: a DIMM hot-added over QMP): the same
    sections, files and errors as run()."""
    sections = Sections()
    ssh = vm.ssh()
    try:
        with (run_dir / stderr_as).open("wb") as err:
            for step in steps:
                if before is not None:
                    before(step.name)
                section = sections[step.name] = Section(step.name, began=time.monotonic())
                out = _Into(section.out)
                section.status = ssh.run(step.body, stdout=cast(IO[bytes], out),
                                         stderr=err if step.user else cast(IO[bytes], out),
                                         timeout_s=step.timeout_s, watch=vm.check)
                section.ended = time.monotonic()
                if not step.user and section.status != 0:
                    raise step.failure(section)
    finally:
        _save(sections, steps, run_dir)
    return sections


class _Into:
    """A file-like sink that appends to a bytearray."""

    def __init__(self, into: bytearray) -> None:
        self.into = into

    def write(self, data: bytes) -> int:
        self.into.extend(data)
        return len(data)

    def flush(self) -> None:
        pass


def _save(sections: dict[str, Section], steps: list[Step], run_dir: Path) -> None:
    files: dict[str, bytearray] = {}
    for step in steps:
        if step.save_as is not None:
            part = files.setdefault(step.save_as, bytearray())
            if step.name in sections:
                part.extend(sections[step.name].out)
    for name, data in files.items():
        (run_dir / name).write_bytes(data)
