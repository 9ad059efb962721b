"""Which file of a built kernel QEMU boots: without the build machinery, so that a run of
an image the user names (`vmtest run --kernel`) loads none of it."""

from __future__ import annotations

from pathlib import Path

# Preferred first. vmlinux through the PVH entry point boots ~0.2 s faster under TCG
# than a bzImage (no decompressor, no real-mode setup), and `make vmlinux` skips
# arch/x86/boot. Both work under KVM; kernels without CONFIG_PVH get a bzImage.
IMAGES = ("vmlinux", "bzImage")


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
