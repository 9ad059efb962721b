"""Which file of a built kernel QEMU boots: without the build machinery, so that a run of
an image the user names (`vmtest run --kernel`) loads none of it."""

from __future__ import annotations

from pathlib import Path

# Preferred first. vmlinux through the PVH entry point boots ~0.2 s faster under TCG
# than a bzImage (no decompressor, no real-mode setup), and `make vmlinux` skips
# arch/x86/boot. Both work under KVM; kernels without CONFIG_PVH get a bzImage.
# arm64 builds give Image (arch/arm64/boot/Image, uncompressed; see build.py).
IMAGES = ("vmlinux", "Image", "bzImage")

# Documentation/arm64/booting.rst: the arm64 Image header's magic, at offset 56.
_ARM64_MAGIC = (56, b"ARM\x64")
# ELF e_machine (offset 18, little-endian) of an x86-64 vmlinux.
_ELF_X86_64, _ELF_AARCH64 = 62, 183


def image_in(directory: Path) -> Path:
    """The image in a build directory (the last candidate when there is none)."""
    for name in IMAGES:
        if (directory / name).is_file():
            return directory / name
    return directory / IMAGES[-1]


def image_at(path: Path) -> Path:
    """The kernel a user names: an image file itself (vmlinux with CONFIG_PVH, bzImage),
    or the image in a `vmtest build` directory."""
    return image_in(path) if path.is_dir() else path


def arch_of(image: Path) -> str | None:
    """The architecture (a name of arch.ARCHES) a kernel image is for, read from its
    header: an ELF vmlinux's machine, the arm64 Image magic, the bzImage's "HdrS";
    None when it is none of those (or cannot be read)."""
    try:
        with image.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head[:4] == b"\x7fELF" and len(head) >= 20:
        machine = int.from_bytes(head[18:20], "little")
        return {_ELF_X86_64: "x86_64", _ELF_AARCH64: "arm64"}.get(machine)
    offset, magic = _ARM64_MAGIC
    if head[offset:offset + len(magic)] == magic:
        return "arm64"
    # Documentation/x86/boot.rst: the setup header's signature at 0x202.
    if head[0x202:0x206] == b"HdrS":
        return "x86_64"
    return None


def config_of(image: Path) -> Path | None:
    """The kernel config an image was built with, where it lies beside it: `config` in a
    `vmtest build` directory, `.config` in a build directory (O=) holding vmlinux, or
    the tree's `.config` of an arch/*/boot image; None where there is none."""
    folder = image.parent
    candidates = [folder / "config", folder / ".config"]
    if folder.name == "boot" and folder.parent.parent.name == "arch":
        candidates.append(folder.parent.parent.parent / ".config")
    return next((path for path in candidates if path.is_file()), None)
