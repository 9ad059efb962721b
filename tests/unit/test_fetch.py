"""Files out of the guest (SSHChannel.fetch): what the guest's tar sends is unpacked below
the run directory, and an archive that would write elsewhere is refused."""

from __future__ import annotations

import io
import stat
import tarfile

import pytest

from vmtest import untar
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


@pytest.mark.fault("--fetch: the guest's archive has an absolute name, '..', a link leaving "
                   "the folder or a device file (either Python: with or without tarfile's "
                   "'data' filter)", verdict="infrastructure", exit="125 (run -- CMD), 3",
                   message="vmtest: error: fetching P: the guest sent an archive that is not "
                           "safe to unpack: ...",
                   kept="the members before it, below RUN_DIR/fetched/; nothing outside")
@pytest.mark.parametrize("has_filter", [False, True], ids=["checked", "data-filter"])
def test_fetch_refuses_an_archive_that_leaves_dest(tmp_path, monkeypatch, has_filter):
    if has_filter and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no 'data' filter (< 3.11.4)")
    monkeypatch.setattr(untar, "HAS_DATA_FILTER", has_filter)
    ssh = _guest("tar -C / -cf - root/x", _tar({"../../escaped": b"x"}))
    with pytest.raises(ChannelError, match="not safe to unpack"):
        ssh.fetch("/root/x", tmp_path / "fetched")
    assert not (tmp_path / "escaped").exists()


def test_fetch_of_a_missing_path_names_it(tmp_path):
    ssh = _guest("tar -C / -cf - root/nope", "", status=1,
                 err="tar: root/nope: No such file or directory")
    with pytest.raises(ChannelError, match="fetching /root/nope from the guest failed: tar: "):
        ssh.fetch("/root/nope", tmp_path)


# --- vmtest.untar on its own, both ways: tarfile's 'data' filter where this Python has
# it (>= 3.11.4), and the member-by-member check Debian 12's 3.11.2 runs.

_WAYS = [pytest.param(False, id="checked")] + (
    [pytest.param(True, id="data-filter")] if untar.HAS_DATA_FILTER else [])


def _archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf)


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
            linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    return info


@pytest.mark.parametrize("use_filter", _WAYS)
def test_untar_keeps_files_dirs_and_inner_links(tmp_path, use_filter):
    tar = _archive((_member("d", tarfile.DIRTYPE, 0o777), None),
                   (_member("d/run.sh", mode=0o4755), b"#!/bin/sh\n"),
                   (_member("d/data", mode=0o666), b"x"),
                   (_member("d/alias", tarfile.SYMTYPE, linkname="data"), None),
                   (_member("hard", tarfile.LNKTYPE, linkname="d/data"), None))
    untar.extract_all(tar, tmp_path, use_filter=use_filter)
    run = (tmp_path / "d/run.sh").stat().st_mode
    assert run & 0o100 and not run & (stat.S_ISUID | stat.S_ISGID)
    assert not (tmp_path / "d/data").stat().st_mode & 0o022
    assert not (tmp_path / "d").stat().st_mode & 0o022
    assert (tmp_path / "d/alias").read_bytes() == b"x"
    assert (tmp_path / "hard").read_bytes() == b"x"


_UNSAFE = {
    "absolute": [(_member("/etc/evil"), b"x")],
    "dotdot": [(_member("a/../../evil"), b"x")],
    "symlink-absolute": [(_member("l", tarfile.SYMTYPE, linkname="/etc"), None)],
    "symlink-out": [(_member("l", tarfile.SYMTYPE, linkname="../.."), None)],
    # Each link looks inside on its own; through the first, the second leaves.
    "symlink-chain": [(_member("l1", tarfile.SYMTYPE, linkname="."), None),
                      (_member("l1/l2", tarfile.SYMTYPE, linkname=".."), None)],
    "through-symlink": [(_member("sub", tarfile.DIRTYPE, 0o755), None),
                        (_member("sub/up", tarfile.SYMTYPE, linkname=".."), None),
                        (_member("sub/up/up2", tarfile.SYMTYPE, linkname=".."), None)],
    "hardlink-out": [(_member("h", tarfile.LNKTYPE, linkname="../outside"), None)],
    "chardev": [(_member("null", tarfile.CHRTYPE), None)],
    "blockdev": [(_member("sda", tarfile.BLKTYPE), None)],
    "fifo": [(_member("pipe", tarfile.FIFOTYPE), None)],
}


@pytest.mark.parametrize("use_filter", _WAYS)
@pytest.mark.parametrize("case", sorted(_UNSAFE))
def test_untar_refuses_what_leaves_dest_or_is_a_device(tmp_path, case, use_filter):
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "outside").write_text("host file")
    with pytest.raises(tarfile.TarError):
        untar.extract_all(_archive(*_UNSAFE[case]), dest, use_filter=use_filter)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "outside"]
    assert not [p for p in dest.rglob("*") if not (p.is_symlink() or p.is_dir())]
