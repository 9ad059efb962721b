"""Guest programs of a foreign architecture (guest/sysroot.py): the parsers on recorded
real output (apt-cache and readelf on Debian 12's arm64 dropbear), the library lookup on a
folder laid out as Debian's packages lay it out."""

from pathlib import Path

import pytest

from vmtest import arch as archs
from vmtest.errors import ConfigError, MissingRequirement
from vmtest.guest import sysroot

ARM64 = archs.get("arm64")


def test_the_recursive_depends_name_each_package_once(data_dir):
    text = (data_dir / "sysroot" / "apt-cache-depends-arm64.txt").read_text()
    assert sysroot.parse_depends(text) == [
        "busybox-static", "dropbear-bin", "libgcc-s1", "libc6", "libcrypt1", "libtomcrypt1",
        "libtommath1", "zlib1g", "gcc-12-base", "libgmp10"]


def test_virtual_packages_have_nothing_to_download():
    assert sysroot.parse_depends("foo\n  Depends: <awk>\n<awk>\nbar:arm64\n") == ["foo", "bar"]


def test_readelf_gives_needed_and_interpreter(data_dir):
    text = (data_dir / "sysroot" / "readelf-dropbear-arm64.txt").read_text()
    needed, interp = sysroot.parse_readelf(text)
    assert needed == ["libtomcrypt.so.1", "libtommath.so.1", "libz.so.1", "libcrypt.so.1",
                      "libc.so.6", "ld-linux-aarch64.so.1"]
    assert interp == "/lib/ld-linux-aarch64.so.1"


def test_apt_works_on_a_private_state_for_the_one_architecture(tmp_path):
    opts = sysroot.apt_options(ARM64, tmp_path)
    assert "APT::Architectures::=arm64" in opts and "Dir::State::status=/dev/null" in opts
    assert f"Dir::State::Lists={tmp_path / 'lists'}" in opts


def _tree(root: Path) -> None:
    (root / "lib/aarch64-linux-gnu").mkdir(parents=True)
    (root / "lib/aarch64-linux-gnu/libc.so.6").write_bytes(b"libc")
    (root / "lib/aarch64-linux-gnu/libgcc_s.so.1").write_bytes(b"gcc_s")
    (root / "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1").write_bytes(b"ld")
    # Debian's links: relative for the loader, absolute ones must stay inside the root.
    (root / "lib/ld-linux-aarch64.so.1").symlink_to("aarch64-linux-gnu/ld-linux-aarch64.so.1")
    (root / "lib/aarch64-linux-gnu/libz.so.1").symlink_to("/lib/aarch64-linux-gnu/libc.so.6")


def test_links_resolve_inside_the_sysroot(tmp_path):
    _tree(tmp_path)
    assert sysroot.resolve_in(tmp_path, "/lib/ld-linux-aarch64.so.1").read_bytes() == b"ld"
    assert sysroot.resolve_in(tmp_path, "/lib/aarch64-linux-gnu/libz.so.1") \
        == tmp_path / "lib/aarch64-linux-gnu/libc.so.6"


def test_libraries_are_found_in_the_multiarch_folders(tmp_path, monkeypatch):
    _tree(tmp_path)
    binary = tmp_path / "prog"
    binary.write_bytes(b"")
    answers = {
        binary: "      [Requesting program interpreter: /lib/ld-linux-aarch64.so.1]\n"
                " 0x1 (NEEDED)             Shared library: [libz.so.1]\n",
    }
    monkeypatch.setattr(sysroot, "_run", lambda argv, what, cwd=None: answers.get(
        Path(argv[-1]), " 0x1 (NEEDED)             Shared library: [libc.so.6]\n"))
    assert sysroot.shared_libraries(ARM64, tmp_path, [binary]) == [
        "/lib/ld-linux-aarch64.so.1", "/lib/aarch64-linux-gnu/libz.so.1",
        "/lib/aarch64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libgcc_s.so.1"]


def test_a_library_no_package_holds_is_named(tmp_path, monkeypatch):
    _tree(tmp_path)
    monkeypatch.setattr(sysroot, "_run", lambda argv, what, cwd=None:
                        " 0x1 (NEEDED)             Shared library: [libmissing.so.2]\n")
    with pytest.raises(MissingRequirement, match="needs libmissing.so.2"):
        sysroot.shared_libraries(ARM64, tmp_path, [tmp_path / "prog"])


def test_architectures_by_name_and_alias():
    assert archs.get("aarch64") is ARM64 and archs.get("amd64").name == "x86_64"
    with pytest.raises(ConfigError, match="unknown architecture 'mips'") as err:
        archs.get("mips")
    assert err.value.hint == "available: x86_64, arm64"
