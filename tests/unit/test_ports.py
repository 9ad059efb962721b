"""The command's streams on virtio-serial ports (channel/ports.py), host side, with the
guest's side played by the other ends of real socket pairs (QEMU's ends in a run)."""

from __future__ import annotations

import io
import os
import socket
import threading
import time

import pytest

from vmtest.channel.ports import Command, relay
from vmtest.errors import ChannelError, CommandTimeout


@pytest.fixture
def pairs():
    made = {name: socket.socketpair() for name in ("stdin", "stdout", "stderr")}
    yield {name: pair[0] for name, pair in made.items()}, \
        {name: pair[1] for name, pair in made.items()}
    for a, b in made.values():
        a.close()
        b.close()


def _guest(remote, writes, delay_s=0.0):
    """Play the guest: send (port, bytes) in order, in a thread."""
    def play():
        for name, data in writes:
            if delay_s:
                time.sleep(delay_s)
            remote[name].sendall(data)
    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


def test_output_up_to_the_markers_and_the_status(pairs):
    local, remote = pairs
    cmd = Command.new("true")
    nonce = cmd.nonce.encode()
    _guest(remote, [("stdout", b"hello\n"), ("stderr", b"oops"), ("stdout", b"no newline"),
                    ("stdout", nonce + b" 7\n"), ("stderr", nonce + b"\n"),
                    ("stdout", b"after the marker: dropped")])
    out, err = io.BytesIO(), io.BytesIO()
    assert relay(local, cmd, stdout=out, stderr=err, timeout_s=10) == 7
    assert out.getvalue() == b"hello\nno newline"
    assert err.getvalue() == b"oops"


def test_a_marker_split_across_reads_and_a_near_miss(pairs):
    local, remote = pairs
    cmd = Command.new("true")
    nonce = cmd.nonce.encode()
    near = nonce[:-1] + b"!"  # all of the marker but its last byte: output
    writes = [("stdout", b"a" + near)]
    writes += [("stdout", bytes([byte])) for byte in nonce + b" 0\n"]  # a byte a read
    writes += [("stderr", nonce[:5]), ("stderr", nonce[5:] + b"\n")]
    _guest(remote, writes, delay_s=0.001)
    out, err = io.BytesIO(), io.BytesIO()
    assert relay(local, cmd, stdout=out, stderr=err, timeout_s=10) == 0
    assert out.getvalue() == b"a" + near and err.getvalue() == b""


def test_binary_output_is_byte_identical(pairs):
    local, remote = pairs
    cmd = Command.new("cat")
    data = os.urandom(1 << 20)
    _guest(remote, [("stdout", data), ("stdout", cmd.nonce.encode() + b" 0\n"),
                    ("stderr", cmd.nonce.encode() + b"\n")])
    out = io.BytesIO()
    assert relay(local, cmd, stdout=out, timeout_s=10) == 0
    assert out.getvalue() == data


def test_stdin_reaches_the_port_and_its_end_is_passed_on(pairs):
    local, remote = pairs
    cmd = Command.new("cat", stdin=True)
    data = os.urandom(300_000)
    read_fd, write_fd = os.pipe()

    def host_stdin():
        os.write(write_fd, data[:1000])
        time.sleep(0.05)  # a pipe with nothing for a while must not hold up the relay
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(data[1000:])

    def guest():  # read the port to its end, then answer with its length
        got = b""
        while chunk := remote["stdin"].recv(65536):
            got += chunk
        remote["stdout"].sendall(str(len(got)).encode() + cmd.nonce.encode() + b" 0\n")
        remote["stderr"].sendall(cmd.nonce.encode() + b"\n")
        box.append(got)

    box: list[bytes] = []
    threading.Thread(target=host_stdin, daemon=True).start()
    threading.Thread(target=guest, daemon=True).start()
    out = io.BytesIO()
    try:
        assert relay(local, cmd, stdout=out, stdin=read_fd, timeout_s=20) == 0
    finally:
        os.close(read_fd)
    assert out.getvalue() == str(len(data)).encode() and box == [data]


def test_timeout_and_watch_and_a_closed_port(pairs):
    local, remote = pairs
    cmd = Command.new("sleep 60")
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="did not finish within 0.3 s: sleep 60"):
        relay(local, cmd, timeout_s=0.3, poll_s=0.05)
    assert time.monotonic() - started < 2

    calls = []

    def watch():
        calls.append(1)
        if len(calls) == 3:
            raise ChannelError("the guest crashed")

    with pytest.raises(ChannelError, match="crashed"):
        relay(local, cmd, watch=watch, poll_s=0.01, timeout_s=10)

    remote["stdout"].close()  # QEMU went away
    with pytest.raises(ChannelError, match="ports closed mid-command"):
        relay(local, cmd, poll_s=0.05, timeout_s=10)


def test_a_garbled_status_is_an_error_not_a_number(pairs):
    local, remote = pairs
    cmd = Command.new("true")
    _guest(remote, [("stdout", cmd.nonce.encode() + b" x\n")])
    with pytest.raises(ChannelError, match="garbled"):
        relay(local, cmd, timeout_s=10)


def test_commands_and_their_ports():
    a, b = Command.new("x"), Command.new("x", stdin=True, workdir_tag="vmtest0")
    assert a.nonce != b.nonce and len(a.nonce) == 32
    assert a.ports == ("stdout", "stderr") and b.ports == ("stdin", "stdout", "stderr")


def test_only_what_could_start_the_marker_is_held_back():
    from vmtest.channel.ports import _Stream

    marker = b"0123456789abcdef"
    out = io.BytesIO()
    stream = _Stream(marker, out, True)
    stream.feed(b"waiting for the device...\n")  # a line then silence: shown at once
    assert out.getvalue() == b"waiting for the device...\n"
    stream.feed(b"x" + marker[:5])
    assert out.getvalue().endswith(b"\nx") and stream.pending == marker[:5]
    stream.feed(b"!")  # not the marker after all
    assert out.getvalue().endswith(b"x" + marker[:5] + b"!") and stream.pending == b""


def test_held_back_bytes_are_not_lost_when_the_run_ends_without_a_marker(pairs):
    local, remote = pairs
    cmd = Command.new("sleep 60")
    _guest(remote, [("stdout", b"last words " + cmd.nonce.encode()[:3])])
    out = io.BytesIO()
    with pytest.raises(CommandTimeout):
        relay(local, cmd, stdout=out, timeout_s=0.5, poll_s=0.05)
    assert out.getvalue() == b"last words " + cmd.nonce.encode()[:3]


def test_the_guest_is_watched_at_most_every_poll_however_fast_output_comes(pairs):
    local, remote = pairs
    cmd = Command.new("yes")
    chunks = [("stdout", b"y\n" * 100)] * 300
    _guest(remote, [*chunks, ("stdout", cmd.nonce.encode() + b" 0\n"),
                    ("stderr", cmd.nonce.encode() + b"\n")])
    calls = []
    started = time.monotonic()
    relay(local, cmd, stdout=io.BytesIO(), watch=lambda: calls.append(1), poll_s=0.05,
          timeout_s=20)
    elapsed = time.monotonic() - started
    assert len(calls) <= elapsed / 0.05 + 2
