import shutil
import subprocess

import pytest

from vmtest.channel.keys import KeyPair


def test_authorized_key_roundtrips_through_paramiko():
    # paramiko is the SSH client (the venv of setup-host.sh has it); the rest of the unit
    # tier does not need it to import
    pytest.importorskip("paramiko")
    pair = KeyPair.generate()
    kind, blob, comment = pair.authorized_key().split()
    assert kind == "ssh-ed25519" and comment == "vmtest"
    assert pair.paramiko_key().get_base64() == blob == pair.paramiko_public().get_base64()


def test_dropbear_format_layout():
    raw = KeyPair.generate().dropbear_private()
    assert len(raw) == 4 + 11 + 4 + 64 and raw[4:15] == b"ssh-ed25519"


@pytest.mark.skipif(shutil.which("dropbearconvert") is None, reason="dropbear-bin not installed")
def test_dropbear_format_matches_dropbearconvert(tmp_path):
    pair = KeyPair.generate()
    (tmp_path / "k").write_bytes(pair.openssh_private())
    subprocess.run(["dropbearconvert", "openssh", "dropbear", str(tmp_path / "k"),
                    str(tmp_path / "k.db")], check=True, capture_output=True)
    assert (tmp_path / "k.db").read_bytes() == pair.dropbear_private()
