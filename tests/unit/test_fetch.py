"""Files out of the guest (SSHChannel.fetch): what the guest's tar sends is unpacked below
the run directory, and an archive that would write elsewhere is refused."""

from __future__ import annotations

import io
import tarfile

import pytest

from vmtest.errors import ChannelError
from vmtest.qemu.fake import FakeSSH, Transcript, _bytes, _Cursor, _text


def _tar(members: dict[str, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return _text(buf.getvalue())


def _guest(command: str, out: str, status: int = 0, err: str = "") -> FakeSSH:
    transcript = Transcript({}, [{"ssh": command, "status": status, "out": out, "err": err}])
    return FakeSSH(_Cursor(transcript, None))


def test_fetch_unpacks_byte_identical_below_dest(tmp_path):
    data = bytes(range(256)) * 40
    ssh = _guest("tar -C / -cf - root/results", _tar({"root/results/out.bin": data}))
    got = ssh.fetch("/root/results", tmp_path / "fetched")
    assert got == [tmp_path / "fetched" / "root/results/out.bin"]
    assert got[0].read_bytes() == data
    assert _bytes(_text(data)) == data


def test_fetch_refuses_an_archive_that_leaves_dest(tmp_path):
    ssh = _guest("tar -C / -cf - root/x", _tar({"../../escaped": b"x"}))
    with pytest.raises(ChannelError, match="not safe to unpack"):
        ssh.fetch("/root/x", tmp_path / "fetched")
    assert not (tmp_path / "escaped").exists()


def test_fetch_of_a_missing_path_names_it(tmp_path):
    ssh = _guest("tar -C / -cf - root/nope", "", status=1,
                 err="tar: root/nope: No such file or directory")
    with pytest.raises(ChannelError, match="fetching /root/nope from the guest failed: tar: "):
        ssh.fetch("/root/nope", tmp_path)
