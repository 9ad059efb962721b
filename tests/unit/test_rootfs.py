import shutil
import stat
import subprocess

import pytest

from vmtest.errors import ConfigError, MissingRequirement
from vmtest.guest import rootfs

LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd4a5f2000)
\tlibcrypt.so.1 => /lib/x86_64-linux-gnu/libcrypt.so.1 (0x00007f0e1c3a0000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f0e1c380000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c19f000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1c4d9000)
"""


def test_parse_ldd_keeps_libraries_and_loader_skips_vdso():
    assert rootfs.parse_ldd(LDD_OUTPUT) == [
        "/lib/x86_64-linux-gnu/libcrypt.so.1", "/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]


def test_parse_ldd_missing_library_is_an_error():
    with pytest.raises(MissingRequirement, match="libfoo"):
        rootfs.parse_ldd("\tlibfoo.so.1 => not found\n")


def _read_newc(data: bytes):
    """Minimal independent newc reader: [(name, mode, body)]."""
    out, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize, mode = fields[11], fields[6], fields[1]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        body = data[pos: pos + filesize]
        pos = (pos + filesize + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, body))


def test_cpio_roundtrip_and_determinism(tmp_path):
    src = tmp_path / "hello"
    src.write_bytes(b"abc")
    entries = [rootfs.directory("/etc"), rootfs.file_data("/etc/x", b"12345", 0o600),
               rootfs.symlink("/bin/sh", "/bin/busybox"), rootfs.file_from("/h", src, 0o755)]
    a, b = tmp_path / "a.cpio", tmp_path / "b.cpio"
    rootfs.write_cpio(entries, a)
    rootfs.write_cpio(entries, b)
    assert a.read_bytes() == b.read_bytes()
    members = _read_newc(a.read_bytes())
    assert [(n, stat.S_IFMT(m), body) for n, m, body in members] == [
        ("etc", stat.S_IFDIR, b""), ("etc/x", stat.S_IFREG, b"12345"),
        ("bin/sh", stat.S_IFLNK, b"/bin/busybox"), ("h", stat.S_IFREG, b"abc")]
    assert stat.S_IMODE(members[1][1]) == 0o600


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not installed")
def test_cpio_readable_by_gnu_cpio(tmp_path):
    rootfs.write_cpio([rootfs.directory("/d"), rootfs.file_data("/d/f", b"x" * 5)],
                      tmp_path / "a.cpio")
    listing = subprocess.run(["cpio", "-t"], stdin=(tmp_path / "a.cpio").open("rb"),
                             capture_output=True, text=True, check=True).stdout.split()
    assert listing == ["d", "d/f"]


@pytest.mark.skipif(not all(shutil.which(p) for p in ("busybox", "stress-ng", "cpio"))
                    or not shutil.os.path.exists("/usr/sbin/dropbear"),
                    reason="guest programs not installed")
def test_base_manifest_has_init_busybox_and_parents_first_sshd_in_a_layer(tmp_path):
    entries = rootfs.base_manifest()
    paths = [e.path for e in entries]
    assert "/init" in paths and "/bin/busybox" in paths
    assert "/bin/sh" in paths and "/sbin/poweroff" in paths
    assert "/usr/bin/lru-stress" in paths and "/usr/bin/stress-ng" not in paths
    # sshd and the libraries it loads are a layer of their own (runs that talk SSH)
    assert "/usr/sbin/dropbear" not in paths
    assert not any(p.endswith("/libc.so.6") for p in paths)
    sshd = subprocess.run(["cpio", "-t"], stdin=rootfs.layer_image("dropbear").open("rb"),
                          capture_output=True, text=True, check=True).stdout.split()
    assert "usr/sbin/dropbear" in sshd and any(p.endswith("/libc.so.6") for p in sshd)
    assert any(p.startswith("lib64/ld-linux") for p in sshd)
    layer = rootfs.layer_image("stress-ng")
    assert layer.stat().st_size > 5_000_000
    seen = set()
    for path in paths:  # every parent directory comes before its children
        parent = path.rsplit("/", 1)[0]
        assert parent in ("",) or parent in seen, path
        seen.add(path)
    assert len(paths) == len(set(paths))


def test_manifest_digest_changes_with_content(tmp_path):
    one = [rootfs.file_data("/a", b"1")]
    two = [rootfs.file_data("/a", b"2")]
    assert rootfs.manifest_digest(one) != rootfs.manifest_digest(two)
    assert rootfs.manifest_digest(one) == rootfs.manifest_digest(list(one))


def test_overlay_carries_keys_with_private_modes():
    overlay = rootfs.run_overlay(b"KEY", "ssh-ed25519 AAAA test")
    modes = {e.path: stat.S_IMODE(e.mode) for e in overlay}
    assert modes == {"/etc/dropbear/host_key": 0o600, "/root/.ssh/authorized_keys": 0o600}


def test_copy_entries_put_a_tree_where_asked(tmp_path):
    src = tmp_path / "mytest"
    (src / "sub").mkdir(parents=True)
    (src / "run.sh").write_text("#!/bin/bash\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "sub" / "data").write_bytes(b"\x00\x01")
    (src / "link").symlink_to("run.sh")
    entries = rootfs.copy_entries(src, "tests/mytest")
    by_path = {e.path: e for e in entries}
    assert list(by_path)[:3] == ["/root/tests", "/root/tests/mytest", "/root/tests/mytest/link"]
    assert stat.S_IMODE(by_path["/root/tests/mytest/run.sh"].mode) == 0o755
    assert by_path["/root/tests/mytest/sub/data"].source == src / "sub" / "data"
    assert by_path["/root/tests/mytest/link"].target == "run.sh"
    assert "/root" not in by_path  # the base image's /root keeps its mode
    # Written and read back, the archive holds the same files.
    out = tmp_path / "copy.cpio"
    rootfs.write_cpio(entries, out)
    listing = subprocess.run(["cpio", "-it"], stdin=out.open("rb"), capture_output=True,
                             text=True, check=True).stdout.split()
    assert "root/tests/mytest/sub/data" in listing


@pytest.mark.parametrize("dest", ["/tmp/x", "/dev/shm/x", "/proc/x", "/"])
def test_copy_into_a_mounted_over_path_is_refused(tmp_path, dest):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="hidden in the guest"):
        rootfs.copy_entries(tmp_path / "f", dest)


def test_copy_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nope does not exist"):
        rootfs.copy_entries(tmp_path / "nope", "x")


def test_stale_images_of_a_name_are_pruned_when_a_new_one_is_built(tmp_path, monkeypatch):
    import os
    import time

    monkeypatch.setenv("VMTEST_CACHE", str(tmp_path))
    folder = tmp_path / "initramfs"
    folder.mkdir()
    old = folder / "layer-0000000000000000.cpio"
    recent = folder / "layer-1111111111111111.cpio"
    other = folder / "other-0000000000000000.cpio"
    for path in (old, recent, other):
        path.write_bytes(b"x")
    week_ago = time.time() - rootfs.STALE_IMAGE_S - 60
    os.utime(old, (week_ago, week_ago))
    os.utime(other, (week_ago, week_ago))
    image = rootfs._cached_image("layer", [rootfs.file_data("/x", b"1")])
    assert image.exists() and recent.exists() and other.exists()  # not stale / not its name
    assert not old.exists()


def test_images_built_at_once_by_threads_of_one_process(tmp_path, monkeypatch):
    """A matrix's parallel runs miss the image cache together: each thread writes its own
    temporary file (one per process was shared, and a rename failed: CI, session 7)."""
    import threading

    from vmtest.guest import rootfs

    monkeypatch.setenv("VMTEST_CACHE", str(tmp_path / "cache"))
    entries = [rootfs.file_data("/init", b"#!/bin/sh\n" * 20000, 0o755)]
    real = rootfs.write_cpio
    barrier = threading.Barrier(4)

    def slow_write(items, path):  # all four threads inside the write at the same time
        barrier.wait(timeout=10)
        real(items, path)

    monkeypatch.setattr(rootfs, "write_cpio", slow_write)
    errors: list[BaseException] = []
    images: list[object] = []

    def build():
        try:
            images.append(rootfs._cached_image("base", entries))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(images)) == 1
    assert not list((tmp_path / "cache").rglob("*.tmp"))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_concurrent_first_use_of_the_stressors_compiles_without_collisions():
    """Issue 28: the stressor compiled into a fixed `.tmp` name, so the first run of
    several pytest-xdist workers on a fresh cache collided. Each compile now has a name
    of its own; all callers get the same working binary and no temporary is left."""
    import threading

    got, errors = [], []

    def use():
        try:
            got.append(rootfs.stressor_binaries())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len({tuple(g) for g in got}) == 1
    binary = got[0][0]
    assert binary.stat().st_mode & stat.S_IXUSR
    assert sorted(p.name for p in binary.parent.iterdir()) == [binary.name]
    proc = subprocess.run([str(binary), "-h"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: lru-stress")
