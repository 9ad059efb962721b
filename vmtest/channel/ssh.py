"""SSH to the guest through paramiko: per-run key, pinned host key, bounded retries."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import shlex
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from vmtest import procs, untar
from vmtest.channel import GUEST_PATH, let_watch_name_it
from vmtest.channel.keys import KeyPair
from vmtest.deadline import Deadline
from vmtest.errors import ChannelError, CommandTimeout

if TYPE_CHECKING:  # imported where a connection is made (keys.py says why)
    import paramiko

log = logging.getLogger(__name__)

def _pinned_host_key() -> paramiko.MissingHostKeyPolicy:
    """A policy that never auto-accepts: the only key we know is the one we put in the
    guest."""
    import paramiko

    class PinnedHostKey(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                             key: paramiko.PKey) -> None:
            raise paramiko.BadHostKeyException(hostname, key, key)

    return PinnedHostKey()


def _feed(chan: paramiko.Channel, fd: int) -> None:
    """Copy fd to the channel's stdin in a thread (a pipe that has nothing yet must not
    stop the output from being read), then send end of file."""
    def pump() -> None:
        try:
            while data := os.read(fd, 65536):
                while data:  # the channel is non-blocking: send what its window takes
                    if chan.closed:
                        return
                    if not chan.send_ready():
                        time.sleep(0.005)
                        continue
                    data = data[chan.send(data):]
            chan.shutdown_write()
        except (OSError, EOFError):  # the channel closed first (CMD did not read it all)
            pass

    threading.Thread(target=pump, name="vmtest-stdin", daemon=True).start()


# paramiko logs every refused connection attempt as an error with its traceback; while
# the guest's sshd starts (vmtest connects as early as it can) they are expected. Its
# transports log here, silent unless someone asks (`vmtest -vvv` does).
PARAMIKO_LOG = "vmtest.channel.paramiko"
logging.getLogger(PARAMIKO_LOG).addHandler(logging.NullHandler())
logging.getLogger(PARAMIKO_LOG).propagate = False


class SSHChannel:
    """A connected SSH session to the guest; close() it (or use `with`)."""

    def __init__(self, client: paramiko.SSHClient, port: int) -> None:
        self._client = client
        self.port = port

    @classmethod
    def connect(cls, port: int, client_key: KeyPair, host_key: KeyPair, deadline: Deadline,
                alive: Callable[[], None] | None = None,
                retry_s: float = 0.1) -> SSHChannel:
        """Retry until the guest's sshd answers with the pinned key, or the deadline.

        `alive` is called between attempts and raises if the guest died meanwhile (or
        the caller gave up); `retry_s` is the pause after a failed attempt.
        """
        import paramiko

        last: Exception | None = None
        attempts = 0
        while True:
            if alive is not None:
                alive()
            if deadline.expired:
                raise ChannelError(
                    f"SSH to 127.0.0.1:{port} did not come up within {deadline.timeout_s:.0f} s "
                    f"after {attempts} attempts (last error: {last})",
                    hint="the console log shows whether the guest started dropbear")
            attempts += 1
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[127.0.0.1]:{port}", "ssh-ed25519",
                                       host_key.paramiko_public())
            client.set_missing_host_key_policy(_pinned_host_key())
            client.set_log_channel(PARAMIKO_LOG)
            sock: socket.socket | None = None
            try:
                sock = socket.create_connection(("127.0.0.1", port),
                                                timeout=deadline.remaining_s(5))
                # No Nagle: a command is a few small packets each way, and Nagle held
                # each channel open until the guest's delayed ACK (~40 ms of a 60 ms
                # vm.run("true") under TCG; 12 ms without).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client.connect("127.0.0.1", port=port, username="root",
                               pkey=client_key.paramiko_key(), look_for_keys=False,
                               allow_agent=False, timeout=deadline.remaining_s(5),
                               banner_timeout=deadline.remaining_s(5),
                               auth_timeout=deadline.remaining_s(5), sock=sock)
                return cls(client, port)
            except paramiko.BadHostKeyException as exc:
                client.close()
                if sock is not None:
                    sock.close()
                raise ChannelError(f"guest presented an unexpected SSH host key: {exc}",
                                   hint="something else answers on the forwarded port") from exc
            except paramiko.AuthenticationException as exc:
                client.close()
                if sock is not None:
                    sock.close()
                raise ChannelError(f"SSH authentication to the guest failed: {exc}",
                                   hint="the guest did not take the run's authorized key; "
                                        "check /root/.ssh in the initramfs") from exc
            except (OSError, paramiko.SSHException, EOFError) as exc:
                client.close()
                if sock is not None:
                    sock.close()
                last = exc
                time.sleep(min(retry_s, deadline.remaining_s()))

    def is_active(self) -> bool:
        """Whether the connection still stands (paramiko's transport is up)."""
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def run(self, command: str, *, stdout: IO[bytes] | None = None,
            stderr: IO[bytes] | None = None, timeout_s: float | None = None,
            watch: Callable[[], None] | None = None, stdin: int | None = None) -> int:
        """Run a shell command line; stream its output; return its exit status.

        `watch` is called while waiting and may raise (e.g. the guest crashed). `stdin`:
        a file descriptor whose data, to its end, is the command's standard input (none:
        the command reads end of file at once).
        """
        import paramiko

        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise ChannelError("SSH transport to the guest is closed")
        # Ctrl-C and SIGTERM take effect at points.check() (procs.SafePoints), never
        # inside paramiko, whose channel would then hang in close().
        with procs.SafePoints() as points:
            try:
                chan = transport.open_session(timeout=10)
                chan.settimeout(0.0)
                chan.exec_command(f"export PATH={GUEST_PATH}; cd /root; {command}")
            except (EOFError, OSError, paramiko.SSHException):
                # The connection dropped before the command started (QEMU killed, guest
                # gone): the machine's check says why, else it is a lost connection.
                self._lost(command, watch)
                raise  # pragma: no cover - _lost always raises
            if stdin is None:
                chan.shutdown_write()
            else:
                _feed(chan, stdin)
            deadline = Deadline(timeout_s) if timeout_s else None
            with contextlib.closing(chan):
                while True:
                    points.check()  # Ctrl-C / SIGTERM here, never inside paramiko
                    progressed = False
                    for ready, recv, out in ((chan.recv_ready, chan.recv, stdout),
                                             (chan.recv_stderr_ready, chan.recv_stderr, stderr)):
                        if ready():
                            data = recv(65536)
                            if out is not None:
                                out.write(data)
                                out.flush()
                            progressed = True
                    if chan.exit_status_ready() and not chan.recv_ready() \
                            and not chan.recv_stderr_ready():
                        status = chan.recv_exit_status()
                        if status == -1 and not transport.is_active():
                            # Closed with the connection, no status: the guest went away
                            # (a panic reboots it, QEMU exits). Let `watch` say why.
                            self._lost(command, watch)
                        return status
                    if deadline is not None and deadline.expired:
                        raise CommandTimeout(f"guest command did not finish within {timeout_s} s: "
                                             f"{command}")
                    if watch is not None:
                        watch()
                    if not transport.is_active():
                        raise ChannelError("SSH connection to the guest was lost mid-command")
                    if not progressed:
                        # Wake on data or the channel's close (paramiko sets the channel's
                        # pipe for both), not after a fixed sleep: a short command's
                        # latency is its own, not the poll period's.
                        select.select([chan], [], [], 0.01)

    @staticmethod
    def _lost(command: str, watch: Callable[[], None] | None, grace_s: float = 3.0) -> None:
        """The connection dropped mid-command: the machine's watch names the cause, else
        ChannelError."""
        let_watch_name_it(watch, grace_s)
        raise ChannelError(f"SSH connection to the guest was lost mid-command: {command}",
                           hint="the console log shows what the guest did")

    def fetch(self, guest_path: str, dest: Path, timeout_s: float = 600) -> list[Path]:
        """Copy a guest file or folder into dest (keeping its path below /): tar in the
        guest, extracted here as tarfile's 'data' filter would (no absolute names, no
        links or names that leave dest, no device files: vmtest.untar)."""
        with tempfile.TemporaryFile() as archive:
            err = io.BytesIO()
            rel = guest_path.lstrip("/") or "."
            status = self.run(f"tar -C / -cf - {shlex.quote(rel)}", stdout=archive,
                              stderr=err, timeout_s=timeout_s)
            if status != 0:
                raise ChannelError(f"fetching {guest_path} from the guest failed: "
                                   f"{err.getvalue().decode(errors='replace').strip()}",
                                   hint="does the path exist in the guest?")
            archive.seek(0)
            dest.mkdir(parents=True, exist_ok=True)
            try:
                with tarfile.open(fileobj=archive) as tar:
                    names = tar.getnames()
                    untar.extract_all(tar, dest)
            except tarfile.TarError as exc:
                raise ChannelError(f"fetching {guest_path}: the guest sent an archive that "
                                   f"is not safe to unpack: {exc}") from exc
        return [dest / name for name in names]

    def check_output(self, command: str, timeout_s: float = 60) -> str:
        out = io.BytesIO()
        err = io.BytesIO()
        status = self.run(command, stdout=out, stderr=err, timeout_s=timeout_s)
        if status != 0:
            raise ChannelError(f"guest command failed ({status}): {command}: "
                               f"{err.getvalue().decode(errors='replace').strip()}")
        return out.getvalue().decode(errors="replace")

    def fire(self, command: str) -> None:
        """Start a command and do not wait (poweroff)."""
        import paramiko

        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            return
        try:
            chan = transport.open_session(timeout=2)
            chan.exec_command(f"export PATH={GUEST_PATH}; {command}")
        except (paramiko.SSHException, OSError, EOFError):
            pass

    def close(self) -> None:
        try:
            self._client.close()
        except OSError:
            pass

    def __enter__(self) -> SSHChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
