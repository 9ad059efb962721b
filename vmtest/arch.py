"""The guest architectures: what differs between an x86-64 and an arm64 guest, as data.

Everything per-architecture that the kernel build, the initramfs and the QEMU command
line need is a field here, so that code below the CLI takes an `Arch` (or its name) and
never asks "is this arm64?" itself.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from vmtest.errors import ConfigError


@dataclass(frozen=True)
class Arch:
    name: str  # vmtest's name: --arch, the build spec, the cache key
    make_arch: str  # make's ARCH=
    cross_prefix: str  # make's CROSS_COMPILE= when the host is another architecture
    uname: str  # `uname -m` in the guest; also the host's platform.machine()
    debian: str  # dpkg's name (apt-get download PKG:ARCH)
    elf_machine: int  # e_machine of the guest's ELF binaries (the stressor, the sysroot)
    qemu: str  # the QEMU system emulator
    console: str  # the kernel's serial console device
    # The per-architecture kconfig fragment (kernels/fragments/NAME.config), merged after
    # the common ones; None: the common fragments are this architecture's own.
    fragment: str | None
    # Host packages a guest of this architecture needs beyond the common ones.
    packages: tuple[str, ...]

    @property
    def native(self) -> bool:
        return platform.machine() == self.uname

    @property
    def cross_compile(self) -> str:
        """CROSS_COMPILE (and the prefix of gcc, nm, readelf): empty on a native host."""
        return "" if self.native else self.cross_prefix

    @property
    def gcc(self) -> str:
        return f"{self.cross_compile}gcc"


ARCHES = {
    "x86_64": Arch(name="x86_64", make_arch="x86_64", cross_prefix="x86_64-linux-gnu-",
                   uname="x86_64", debian="amd64", elf_machine=62, qemu="qemu-system-x86_64",
                   console="ttyS0", fragment=None, packages=("qemu-system-x86",)),
    # QEMU's `virt` board: PL011 UART (ttyAMA0), PCIe generic host bridge, GICv3 with
    # the ITS for MSI-X (hw/arm/virt.c).
    "arm64": Arch(name="arm64", make_arch="arm64", cross_prefix="aarch64-linux-gnu-",
                  uname="aarch64", debian="arm64", elf_machine=183,
                  qemu="qemu-system-aarch64", console="ttyAMA0", fragment="arm64",
                  packages=("gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross",
                            "qemu-system-arm", "qemu-efi-aarch64")),
}
DEFAULT = "x86_64"
# Other names users type for the same architectures.
ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "aarch64": "arm64"}


def get(name: str) -> Arch:
    """The architecture a user names: ConfigError naming the known ones otherwise."""
    found = ARCHES.get(ALIASES.get(name, name))
    if found is None:
        raise ConfigError(f"unknown architecture {name!r}",
                          hint=f"available: {', '.join(ARCHES)}")
    return found
