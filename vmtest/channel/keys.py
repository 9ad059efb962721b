"""Per-run ed25519 keys: the client's, and the guest's host key, which is pinned."""

from __future__ import annotations

import base64
import io
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # paramiko is imported when a key is used, not to make one: it costs
    import paramiko  # ~0.1 s, which the CLI spends while the guest boots (machine.py)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@dataclass(frozen=True)
class KeyPair:
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        # cryptography (~10 ms) only where a key is made: a command on the ports has none
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @property
    def seed(self) -> bytes:
        return self.private.private_bytes_raw()

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes_raw()

    def public_blob(self) -> bytes:
        """The SSH wire form of the public key."""
        return _ssh_string(b"ssh-ed25519") + _ssh_string(self.public_raw)

    def authorized_key(self, comment: str = "vmtest") -> str:
        return f"ssh-ed25519 {base64.b64encode(self.public_blob()).decode()} {comment}"

    def dropbear_private(self) -> bytes:
        """Dropbear's own key file format (signkey.c / ed25519.c in dropbear 2022.83):
        string "ssh-ed25519", string (32-byte seed || 32-byte public key)."""
        return _ssh_string(b"ssh-ed25519") + _ssh_string(self.seed + self.public_raw)

    def openssh_private(self) -> bytes:
        from cryptography.hazmat.primitives import serialization  # ~15 ms: when needed

        return self.private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption())

    def paramiko_key(self) -> paramiko.PKey:
        import paramiko

        return paramiko.Ed25519Key(file_obj=io.StringIO(self.openssh_private().decode()))

    def paramiko_public(self) -> paramiko.PKey:
        import paramiko

        return paramiko.Ed25519Key(data=self.public_blob())
