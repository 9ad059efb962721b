"""An SSH connection made while the guest's init finishes, instead of after READY.

The guest's sshd has started (the init says SSHD): connecting (handshake, authentication)
in a helper thread overlaps the rest of the init, ~0.1 s of every short run under TCG.
Nothing is run before READY; `take()` hands the connection over once it is ready, else
the machine connects as before. Own module: paramiko is imported in the helper thread,
not before QEMU starts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmtest.channel.keys import KeyPair
from vmtest.deadline import Deadline
from vmtest.errors import ChannelError

if TYPE_CHECKING:
    from vmtest.channel.ssh import SSHChannel

log = logging.getLogger(__name__)


class EarlySSH:
    """One connection attempt in a helper thread; `take()` or `drop()` ends it."""

    def __init__(self, port: int, client_key: KeyPair, host_key: KeyPair,
                 deadline: Deadline) -> None:
        self._box: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._connect, args=(port, client_key, host_key, deadline),
            name="vmtest-ssh-early", daemon=True)
        self._thread.start()

    def _given_up(self) -> None:
        if self._stop.is_set():
            raise ChannelError("early SSH connection abandoned")

    def _connect(self, port: int, client_key: KeyPair, host_key: KeyPair,
                 deadline: Deadline) -> None:
        from vmtest.channel.ssh import SSHChannel
        try:
            channel = SSHChannel.connect(port, client_key, host_key,
                                         Deadline(deadline.remaining_s(30)),
                                         alive=self._given_up, retry_s=0.02)
        except Exception as exc:  # the machine connects again and reports its own error
            self._box["error"] = exc
            return
        if self._stop.is_set():  # abandoned meanwhile: nobody will take it
            channel.close()
        else:
            self._box["ssh"] = channel

    def take(self, deadline: Deadline) -> SSHChannel | None:
        """The connection, once made within the deadline; None if it failed or is still
        retrying (then it is abandoned)."""
        self._thread.join(deadline.remaining_s(10))
        if self._thread.is_alive():  # still retrying: give up on it
            self._stop.set()
            return None
        if "error" in self._box:
            log.debug("early SSH connection failed: %s", self._box["error"])
        channel: SSHChannel | None = self._box.pop("ssh", None)
        return channel

    def drop(self) -> None:
        """Stop the attempt and close a connection nobody took."""
        self._stop.set()
        self._thread.join(5)
        leftover = self._box.pop("ssh", None)
        if leftover is not None:
            leftover.close()


Connector = Callable[[int, KeyPair, KeyPair, Deadline], EarlySSH]
