"""SSH to the guest through paramiko: per-run key, pinned host key, bounded retries."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import IO

import paramiko

from vmtest.channel.keys import KeyPair
from vmtest.deadline import Deadline
from vmtest.errors import ChannelError, CommandTimeout

log = logging.getLogger(__name__)

GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class _PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Never auto-accept: the only key we know is the one we put in the guest."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise paramiko.BadHostKeyException(hostname, key, key)


class SSHChannel:
    """A connected SSH session to the guest; close() it (or use `with`)."""

    def __init__(self, client: paramiko.SSHClient, port: int) -> None:
        self._client = client
        self.port = port

    @classmethod
    def connect(cls, port: int, client_key: KeyPair, host_key: KeyPair, deadline: Deadline,
                alive: Callable[[], None] | None = None) -> SSHChannel:
        """Retry until the guest's sshd answers with the pinned key, or the deadline.

        `alive` is called between attempts and raises if the guest died meanwhile.
        """
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
            client.set_missing_host_key_policy(_PinnedHostKey())
            try:
                client.connect("127.0.0.1", port=port, username="root",
                               pkey=client_key.paramiko_key(), look_for_keys=False,
                               allow_agent=False, timeout=deadline.remaining_s(5),
                               banner_timeout=deadline.remaining_s(5),
                               auth_timeout=deadline.remaining_s(5))
                return cls(client, port)
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise ChannelError(f"guest presented an unexpected SSH host key: {exc}",
                                   hint="something else answers on the forwarded port") from exc
            except paramiko.AuthenticationException as exc:
                client.close()
                raise ChannelError(f"SSH authentication to the guest failed: {exc}",
                                   hint="the guest did not take the run's authorized key; "
                                        "check /root/.ssh in the initramfs") from exc
            except (OSError, paramiko.SSHException, EOFError) as exc:
                client.close()
                last = exc
                time.sleep(min(0.1, deadline.remaining_s()))

    def run(self, command: str, *, stdout: IO[bytes] | None = None,
            stderr: IO[bytes] | None = None, timeout_s: float | None = None,
            watch: Callable[[], None] | None = None) -> int:
        """Run a shell command line; stream its output; return its exit status.

        `watch` is called while waiting and may raise (e.g. the guest crashed).
        """
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise ChannelError("SSH transport to the guest is closed")
        chan = transport.open_session(timeout=10)
        chan.settimeout(0.0)
        chan.exec_command(f"export PATH={GUEST_PATH}; cd /root; {command}")
        deadline = Deadline(timeout_s) if timeout_s else None
        try:
            while True:
                progressed = False
                if chan.recv_ready():
                    data = chan.recv(65536)
                    if stdout is not None:
                        stdout.write(data)
                        stdout.flush()
                    progressed = True
                if chan.recv_stderr_ready():
                    data = chan.recv_stderr(65536)
                    if stderr is not None:
                        stderr.write(data)
                        stderr.flush()
                    progressed = True
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    return chan.recv_exit_status()
                if deadline is not None and deadline.expired:
                    raise CommandTimeout(f"guest command did not finish within {timeout_s} s: "
                                         f"{command}")
                if watch is not None:
                    watch()
                if not transport.is_active():
                    raise ChannelError("SSH connection to the guest was lost mid-command")
                if not progressed:
                    time.sleep(0.01)
        finally:
            chan.close()

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
