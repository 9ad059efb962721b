"""A scenario's steps as one guest script (vmtest/scenarios/onports.py): the script runs
here under the host's own sh (dash on Debian; the guest's is busybox ash), its stdout
split by the Demux as the host splits the ports' stream."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vmtest.errors import CommandTimeout, InfraError
from vmtest.scenarios import onports
from vmtest.scenarios.onports import Demux, Step

TOKEN = "feedc0de" * 4


def run_here(steps: list[Step], tmp_path: Path, chunk: int = 0) -> tuple[Demux, bytes, int]:
    """The script as the guest's init runs it (its environment cleared but for the
    token), in a scratch folder instead of /run; stdout fed to a Demux in chunks of
    `chunk` bytes (0: at once)."""
    text = onports.script(steps).replace(onports.STEP_DIR, str(tmp_path / "steps"))
    proc = subprocess.run(["sh", "-c", text], capture_output=True, check=False,
                          env={"PATH": os.environ["PATH"], onports.TOKEN_VAR: TOKEN})
    demux = Demux()
    out = proc.stdout
    size = chunk or len(out) or 1
    for at in range(0, len(out), size):
        demux.write(out[at:at + size])
    demux.end()
    return demux, proc.stderr, proc.returncode


def test_each_steps_output_status_and_stderr(tmp_path):
    steps = [Step("one", "echo hello"), Step("two", "printf 'no newline'; echo oops >&2"),
             Step("cmd", "printf 'partial'; echo to-stderr >&2; exit 3", user=True),
             Step("three", "echo after")]
    for chunk in (0, 1, 7):  # markers cut anywhere between two reads
        demux, err, status = run_here(steps, tmp_path, chunk)
        assert status == 0 and demux.token == TOKEN.encode()
        s = demux.sections
        assert list(s) == ["one", "two", "cmd", "three"]
        assert bytes(s["one"].out) == b"hello\n" and s["one"].status == 0
        # vmtest's own steps have their stderr with their stdout; the command's is apart
        assert bytes(s["two"].out) == b"no newlineoops\n"
        assert bytes(s["cmd"].out) == b"partial" and s["cmd"].status == 3
        assert err == b"to-stderr\n"
        assert bytes(s["three"].out) == b"after\n" and not demux.outside


def test_what_the_command_left_running_prints_later_is_not_the_next_steps(tmp_path):
    """...for a second at most: then its relay stops (its writes fail, as over SSH)."""
    steps = [Step("cmd", "echo now; (sleep 1.3; echo late) &", user=True),
             Step("after", "sleep 0.5; echo after")]
    demux, _, _ = run_here(steps, tmp_path)
    assert bytes(demux.sections["cmd"].out) == b"now\n"
    assert bytes(demux.sections["after"].out) == b"after\n"


def test_a_failed_step_of_vmtests_own_ends_the_script(tmp_path):
    demux, _, status = run_here([Step("setup0", "echo no; exit 4"), Step("cmd", "echo x",
                                                                           user=True)],
                                tmp_path)
    assert status == 0 and list(demux.sections) == ["setup0"]
    assert demux.sections["setup0"].status == 4


def test_step_text_that_looks_like_the_script(tmp_path):
    """A step's text is data: quotes, a here-document delimiter the script would use, $t,
    a broken line -- each stays in its own step."""
    tricky = "echo \"$t\" 'VMTEST_STEP_END_0'\ncat <<'VMTEST_STEP_END_0'\ninside\nVMTEST_STEP_END_0"
    steps = [Step("a", tricky, own=False), Step("b", "echo 'unterminated", user=True),
             Step("c", f"echo {TOKEN} not a marker")]
    demux, _, _ = run_here(steps, tmp_path)
    s = demux.sections
    # $t is the script's own variable: the token never reaches the experiment's steps
    assert bytes(s["a"].out) == b" VMTEST_STEP_END_0\ninside\n"
    assert s["b"].status == 2  # a shell syntax error fails that step alone
    assert bytes(s["c"].out) == f"{TOKEN} not a marker\n".encode()


def test_names_and_repeats_are_refused():
    with pytest.raises(ValueError):
        Step("no spaces", "true")
    with pytest.raises(ValueError):
        onports.script([Step("a", "true"), Step("a", "true")])


def test_the_delimiter_is_no_line_of_the_step():
    assert onports._delimiter("VMTEST_STEP_END_0\nVMTEST_STEP_END_1") == "VMTEST_STEP_END_2"


class _Vm:
    """What onports.run asks of a machine: its command and its ports channel."""

    def __init__(self, steps: list[Step], output: bytes, status: int = 0) -> None:
        self.command = onports.command(steps)
        self.output = output
        self.status = status

    def commands(self, kind):
        vm = self

        class Channel:
            def run(self, line, *, stdout, stderr, timeout_s, watch, stdin=None):
                assert line == vm.command.line
                stdout.write(vm.output)
                watch()
                return vm.status

        return Channel()


def _out(*parts: tuple[str, bytes, int | None]) -> bytes:
    data = [TOKEN.encode() + b"\n"]
    for name, text, status in parts:
        data += [f"{TOKEN} begin {name}\n".encode(), text]
        if status is not None:
            data.append(f"{TOKEN} end {name} {status}\n".encode())
    return b"".join(data)


def test_run_saves_each_steps_file_and_raises_the_steps_own_error(tmp_path):
    steps = [Step("setup0", "a", save_as="setup.log",
                  failure=lambda s: InfraError(f"setup failed ({s.status})")),
             Step("setup1", "b", save_as="setup.log"), Step("cmd", "c", user=True)]
    vm = _Vm(steps, _out(("setup0", b"first\n", 0), ("setup1", b"second\n", 5)))
    with pytest.raises(InfraError, match="the guest step setup1 failed .exit 5."):
        onports.run(vm, steps, tmp_path)  # type: ignore[arg-type]
    assert (tmp_path / "setup.log").read_bytes() == b"first\nsecond\n"
    vm = _Vm(steps, _out(("setup0", b"x", 1)))
    with pytest.raises(InfraError, match=r"setup failed \(1\)"):
        onports.run(vm, steps, tmp_path)  # type: ignore[arg-type]


def test_a_step_past_its_time_limit_is_named(tmp_path):
    steps = [Step("cmd", "sleep 100", timeout_s=0.0, user=True, save_as="stdout.txt")]
    vm = _Vm(steps, _out(("cmd", b"half a line", None)))
    with pytest.raises(CommandTimeout, match="within 0 s: sleep 100"):
        onports.run(vm, steps, tmp_path)  # type: ignore[arg-type]
    # what came before the time ran out is kept
    assert (tmp_path / "stdout.txt").read_bytes() == b"half a line"


def test_a_script_that_stops_early_is_an_error(tmp_path):
    steps = [Step("a", "true"), Step("b", "true")]
    vm = _Vm(steps, _out(("a", b"", 0)))
    with pytest.raises(Exception, match="ended before its step b"):
        onports.run(vm, steps, tmp_path)  # type: ignore[arg-type]


def test_clock_readings():
    sections = onports.Sections(up=onports.Section("up", bytearray(b"12.50 3.00\n"),
                                                   status=0, began=100.0, ended=100.2))
    assert sections.reading("up") == (pytest.approx(100.1), 12.5)
    assert sections.reading("missing") is None


def test_the_same_steps_over_ssh_with_the_hosts_work_between(tmp_path):
    answers = {"a": (b"first\n", 0), "cmd": (b"out", 3), "b": (b"late\n", 7)}
    ran: list[str] = []

    class Ssh:
        def run(self, body, *, stdout, stderr, timeout_s, watch):
            out, status = answers[body]
            stdout.write(out)
            stderr.write(b"e:" + body.encode())
            ran.append(body)
            return status

    class Vm:
        def ssh(self):
            return Ssh()

        def check(self):
            pass

    steps = [Step("a", "a", save_as="setup.log"), Step("cmd", "cmd", user=True,
                                                          save_as="stdout.txt"),
             Step("b", "b", failure=lambda s: InfraError(f"b failed ({s.status})"))]
    with pytest.raises(InfraError, match=r"b failed \(7\)"):
        onports.run_over_ssh(Vm(), steps, tmp_path,  # type: ignore[arg-type]
                             before=lambda name: ran.append(f"host before {name}"))
    assert ran == ["host before a", "a", "host before cmd", "cmd", "host before b", "b"]
    # the command's stderr apart, the others' with their stdout; files saved on the way out
    assert (tmp_path / "stderr.txt").read_bytes() == b"e:cmd"
    assert (tmp_path / "stdout.txt").read_bytes() == b"out"
    assert (tmp_path / "setup.log").read_bytes() == b"first\ne:a"
