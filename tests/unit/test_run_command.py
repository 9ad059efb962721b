"""`vmtest run -- CMD` on the virtio-serial ports, through the real CLI, against guests
replayed from recorded transcripts (scripts/record_transcript.py --command): the
command line as the CLI sends it, stdin to its end, stdout and stderr apart, the exit
status passed through, and a guest that crashes mid-command as 124."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest

from vmtest import cli
from vmtest.qemu import accel, boot
from vmtest.qemu.fake import FakeMachine, ReplayError, Transcript

DATA = Path(__file__).resolve().parents[1] / "data" / "transcripts" / "commands"
STREAMS = 'echo "out: $(uname -r)"; echo "err: to stderr" >&2; tr a-z A-Z </dev/stdin; exit 3'


@pytest.fixture
def replay(tmp_path, monkeypatch):
    """`vmtest run` boots the fake machine replaying the named transcript; returns the
    machines it made."""
    made: list[FakeMachine] = []

    def use(name: str) -> list[FakeMachine]:
        transcript = Transcript.load(DATA / f"ports-{name}.jsonl.gz")

        def machine(*a, **kw):
            made.append(FakeMachine(*a, transcript=transcript, **kw))
            return made[-1]

        monkeypatch.setattr(boot, "boot", partial(
            boot.boot, store=accel.VerdictStore(tmp_path / "accel.json"),
            machine_class=machine, make_initramfs=lambda tmp, *_, **__: tmp / "initrd.cpio"))
        return made

    return use


def _stdin_pipe(monkeypatch, data: bytes) -> None:
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    monkeypatch.setattr("vmtest.cli.run._stdin", lambda: read)


def _run(tmp_path, *command: str) -> int:
    image = tmp_path / "bzImage"
    image.write_bytes(b"")
    return cli.main(["run", "--kernel", str(image), "--accel", "tcg", "--no-share",
                     "--output", str(tmp_path / "run"), "--", *command])


def test_streams_apart_stdin_and_the_status_pass_through(tmp_path, monkeypatch, replay,
                                                        capfdbinary):
    machines = replay("streams")
    _stdin_pipe(monkeypatch, b"line one\nline two\n")
    status = _run(tmp_path, STREAMS)
    out, err = capfdbinary.readouterr()
    assert status == 3  # CMD's own status
    assert out == b"out: 6.1.192-vmtest-patched\nLINE ONE\nLINE TWO\n"
    assert b"err: to stderr\n" in err and b"LINE" not in err
    vm = machines[0]
    # the command went to the ports (no SSH keys, no network), read stdin, ran once
    assert vm.command is not None and vm.command.stdin and vm.replayed_all
    assert not vm.spec.network and vm.spec.ports == ("stdin", "stdout", "stderr")


def test_the_words_are_joined_as_ssh_joins_them(tmp_path, monkeypatch, replay, capfdbinary):
    replay("streams")
    _stdin_pipe(monkeypatch, b"line one\nline two\n")
    words = STREAMS.split(" ")
    assert _run(tmp_path, *words) == 3


def test_another_command_is_not_what_the_guest_was_recorded_answering(tmp_path, replay,
                                                                     capfd):
    replay("streams")
    # the replay is strict (the CLI reports its assertion as vmtest's bug, 125)
    assert _run(tmp_path, "echo something else") == 125
    assert ReplayError.__name__ in capfd.readouterr().err


def test_a_crash_mid_command_is_124_with_what_came_before(tmp_path, replay, capfdbinary):
    replay("crash")
    status = _run(tmp_path, "echo before; echo c > /proc/sysrq-trigger; echo after")
    out, err = capfdbinary.readouterr()
    assert status == 124  # the kernel failed around CMD: git bisect run reads "bad"
    assert out == b"before\n"
    assert b"vmtest: kernel-crash: kernel crash in the guest: Kernel panic" in err
