"""The kernel build per architecture: the cache key, make's arguments, the image."""

import dataclasses

import pytest

from vmtest.errors import ConfigError
from vmtest.kernel import build as kbuild
from vmtest.kernel import images


def _spec(arch="x86_64"):
    return kbuild.spec_for_source("debian:6.1", arch=arch)


def test_the_architecture_and_its_compiler_are_in_the_key():
    x86 = kbuild.cache_key(_spec(), "src", "gcc (Debian 12.2.0-14) 12.2.0")
    arm64 = kbuild.cache_key(_spec("arm64"), "src", "gcc (Debian 12.2.0-14) 12.2.0")
    assert x86 != arm64
    assert arm64 != kbuild.cache_key(_spec("arm64"), "src",
                                     "aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0")


def test_arm64_builds_with_its_own_fragment_last():
    names = [f.name for f in kbuild.all_fragments(_spec("arm64"))]
    assert names == ["qemu-guest", "mm-migration", "mm-selftests", "arm64"]
    assert [f.name for f in kbuild.all_fragments(_spec())] == names[:-1]


def test_arm64_is_cross_compiled():
    args = kbuild.make_args("k" * 64, "patched", "arm64")
    assert args[:3] == ["ARCH=arm64", "CC=ccache aarch64-linux-gnu-gcc",
                        "CROSS_COMPILE=aarch64-linux-gnu-"]
    assert kbuild.make_args("k" * 64, "patched")[:2] == ["ARCH=x86_64", "CC=ccache gcc"]


def test_each_architecture_has_its_own_build_dir(tmp_path):
    assert kbuild.build_dir_of(tmp_path, "x86_64") == tmp_path / "out"
    assert kbuild.build_dir_of(tmp_path, "arm64") == tmp_path / "out-arm64"


def test_an_unknown_architecture_is_a_usage_error():
    with pytest.raises(ConfigError, match="unknown architecture"):
        kbuild.make_args("k" * 64, "v", dataclasses.replace(_spec(), arch="sparc").arch)


@pytest.mark.parametrize("head,arch", [
    # Documentation/arm64/booting.rst: code0, code1, text_offset, image_size, flags,
    # res2-4, magic "ARM\x64" at 56.
    (bytes(56) + b"ARM\x64" + bytes(4), "arm64"),
    (b"\x7fELF" + bytes(14) + (183).to_bytes(2, "little"), "arm64"),
    (b"\x7fELF" + bytes(14) + (62).to_bytes(2, "little"), "x86_64"),
    (bytes(0x202) + b"HdrS", "x86_64"),
    (b"not a kernel", None),
])
def test_the_image_header_names_the_architecture(tmp_path, head, arch):
    image = tmp_path / "image"
    image.write_bytes(head)
    assert images.arch_of(image) == arch


@pytest.mark.parametrize("name,arch", [("arm64-Image.head", "arm64"),
                                       ("x86_64-vmlinux.head", "x86_64")])
def test_real_images_say_their_architecture(data_dir, tmp_path, name, arch):
    """The first 4 KiB of the images vmtest built from Debian's 6.1 (arm64 Image,
    x86-64 PVH vmlinux)."""
    assert images.arch_of(data_dir / "images" / name) == arch
