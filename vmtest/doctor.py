"""`vmtest doctor`: what the host has, what it lacks, and the command that fixes it."""

from __future__ import annotations

import importlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from vmtest import arch as archs
from vmtest import paths
from vmtest.qemu import accel


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    optional: bool = False


def _tool(name: str, package: str, why: str) -> Check:
    path = shutil.which(name)
    return Check(name, path is not None, path or f"missing ({why})", f"apt-get install {package}")


def python_checks() -> list[Check]:
    """What the code needs of the Python it runs on: 3.11 (hashlib.file_digest,
    `X | Y` types at run time), fcntl (locks), venv (setup-host.sh), and whether tarfile
    has the 'data' filter (3.11.4; Debian 12 ships 3.11.2, where vmtest.untar checks each
    member itself)."""
    version = sys.version.split()[0]
    checks = [Check("python", sys.version_info >= (3, 11), f"{version} ({sys.executable})",
                    "install Python >= 3.11 (Debian 12: apt-get install python3-venv; "
                    "bash scripts/setup-host.sh)")]
    for module, why in (("fcntl", "build and cache locks"), ("venv", "setup-host.sh's venv")):
        try:
            importlib.import_module(module)
            checks.append(Check(f"python:{module}", True, f"importable ({why})",
                                optional=module == "venv"))
        except ImportError:
            checks.append(Check(f"python:{module}", False, f"not importable ({why})",
                                f"use Debian's own /usr/bin/python3 (apt-get install "
                                f"python3-venv), or a Python built with {module}",
                                optional=module == "venv"))
    from vmtest import untar
    checks.append(Check("python:tarfile", True,
                        "'data' filter" if untar.HAS_DATA_FILTER
                        else "no 'data' filter (< 3.11.4): members checked by vmtest.untar"))
    return checks
def arm64_checks() -> list[Check]:
    """What arm64 guests need (`--arch arm64`), optional: the cross compiler and static
    C library (kernel, stressor), QEMU's arm64 emulator, edk2 (pc-dimm hotplug), and
    apt-get/dpkg-deb, which fetch Debian's arm64 busybox and dropbear (guest/sysroot.py).
    Each missing part's fix is the one apt-get line for all that is missing."""
    from vmtest.qemu.boot import EDK2_AARCH64

    arm64 = archs.get("arm64")
    parts = [  # (name, present, detail, package)
        (arm64.gcc, shutil.which(arm64.gcc), "cross-builds arm64 kernels",
         "gcc-aarch64-linux-gnu"),
        ("arm64 static libc", Path("/usr/aarch64-linux-gnu/lib/libc.a").is_file() and
         "/usr/aarch64-linux-gnu/lib/libc.a", "the guest stressor", "libc6-dev-arm64-cross"),
        (arm64.qemu, shutil.which(arm64.qemu), "boots arm64 guests", "qemu-system-arm"),
        ("arm64 UEFI firmware", EDK2_AARCH64.is_file() and str(EDK2_AARCH64),
         "pc-dimm hotplug on arm64", "qemu-efi-aarch64"),
        ("dpkg-deb", shutil.which("dpkg-deb"), "unpacks arm64 guest programs", "dpkg"),
    ]
    missing = [package for _, found, _, package in parts if not found]
    fix = f"apt-get install --no-install-recommends {' '.join(missing)}"
    return [Check(name, bool(found), str(found) if found else f"missing ({why}; --arch arm64)",
                  fix, optional=True) for name, found, why, _ in parts]


def run_checks() -> list[Check]:
    checks = python_checks()
    for module in ("paramiko", "pexpect", "yaml", "qemu.qmp", "rich"):
        try:
            importlib.import_module(module)
            checks.append(Check(f"python:{module}", True, "importable"))
        except ImportError:
            checks.append(Check(f"python:{module}", False, "not importable",
                                "pip install -e . (from the vmtest checkout)"))
    missing = paths.missing_data()
    checks.append(Check("vmtest data files", not missing,
                        f"in {paths.package_data()}" if not missing
                        else f"missing from the installed package: {', '.join(missing)}",
                        "reinstall vmtest (pip install . from the checkout, or its wheel)"))
    checks.append(_tool("qemu-system-x86_64", "qemu-system-x86", "boots the guests"))
    setpriv = Path("/usr/bin/setpriv")
    checks.append(Check("setpriv", setpriv.exists(), str(setpriv) if setpriv.exists() else
                        "missing: QEMU would outlive a killed vmtest (no death signal)",
                        "apt-get install util-linux", optional=True))
    for tool in ("make", "gcc", "flex", "bison", "bc", "lz4"):
        checks.append(_tool(tool, "build-essential flex bison bc lz4", "kernel build"))
    checks.append(_tool("ccache", "ccache", "kernel build cache"))
    for name, (path, package) in {"busybox (static)": ("/bin/busybox", "busybox-static"),
                                  "dropbear": ("/usr/sbin/dropbear", "dropbear-bin"),
                                  "stress-ng": ("/usr/bin/stress-ng", "stress-ng")}.items():
        ok = Path(path).exists()
        checks.append(Check(name, ok, path if ok else "missing (guest userland)",
                            f"apt-get install {package}"))
    checks += arm64_checks()
    for series in ("6.1", "6.12"):
        tarball = Path(f"/usr/src/linux-source-{series}.tar.xz")
        checks.append(Check(f"linux-source-{series}", tarball.exists(),
                            str(tarball) if tarball.exists() else "not installed",
                            f"apt-get install linux-source-{series}", optional=series != "6.1"))
    ok, why = accel.kvm_openable()
    verdict = accel.VerdictStore().get(accel.host_fingerprint()) if ok else None
    if not ok:
        checks.append(Check("kvm", False, f"{why}: guests run under TCG (slower)",
                            "enable virtualization / load kvm_intel or kvm_amd", optional=True))
    elif verdict is None:
        checks.append(Check("kvm", True, f"{why}; not yet probed: the first `vmtest run "
                                         "--accel auto` checks that it boots a guest"))
    elif verdict.get("kvm_works"):
        checks.append(Check("kvm", True,
                            f"usable: {verdict.get('reason')} ({verdict.get('when')})"))
    else:
        checks.append(Check("kvm", False, f"opens but does NOT boot guests: {verdict.get('reason')}"
                                          f"; using TCG", "nothing to do (TCG is used); "
                                          "`vmtest doctor --reprobe` retries", optional=True))
    usage = shutil.disk_usage(paths.cache_root() if paths.cache_root().exists() else Path.home())
    free_gib = usage.free / 2**30
    checks.append(Check("disk", free_gib > 5, f"{free_gib:.0f} GiB free for {paths.cache_root()}",
                        "free space: a kernel tree and its build take ~3 GiB"))
    return checks
