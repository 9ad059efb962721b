#!/bin/bash
# Idempotent host set-up for a fresh Debian 12 machine: the packages vmtest needs and
# the Python package itself (editable, so kernels/ and configs/ are found).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    qemu-system-x86            # the guests
    linux-source-6.1           # the built-in default kernel source
    linux-source-6.12          # the second base (configs/lru-migration-6.12.yaml)
    build-essential flex bison bc libelf-dev libssl-dev ccache xz-utils lz4 patch  # kernel builds
    busybox-static dropbear-bin stress-ng   # guest userland (initramfs from host binaries)
    cpio kmod python3-venv python3-pip git
    python3-dev                # Python.h: the compiled dmesg scanner (setup.py)
    libcap-dev libnuma-dev liburing-dev rsync  # the kernel's mm selftests (vmtest run --kselftest)
    # arm64 guests (--arch arm64): the cross compiler and static C library (kernel, the
    # stressor), QEMU's arm64 emulator, edk2 for pc-dimm hotplug. Their busybox and
    # dropbear come from Debian's archive at first use (vmtest/guest/sysroot.py).
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-system-arm qemu-efi-aarch64
)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "setup: all Debian packages present"
fi

# Python: $PYTHON or an active virtual environment if given, else vmtest's own virtual
# environment (Debian's python3 is "externally managed", PEP 668), made here.
VMTEST_VENV=${VMTEST_VENV:-$HOME/.local/share/vmtest/venv}
if [ -z "${PYTHON:-}" ] && [ -z "${VIRTUAL_ENV:-}" ] && [ ! -x "$VMTEST_VENV/bin/python3" ]; then
    echo "setup: making the virtual environment $VMTEST_VENV"
    python3 -m venv "$VMTEST_VENV"
fi
PYTHON=$(bash scripts/python.sh)
# (dmesg.NATIVE_MISSING: the compiled dmesg scanner is missing or older than its source)
# (and vmtest must be this checkout's: another checkout's editable install would be
# tested instead of this one; -P: not the current folder's vmtest/ by accident)
if ! "$PYTHON" -P -c 'import paramiko, qemu.qmp, pytest, pathlib, vmtest
assert pathlib.Path(vmtest.__file__).resolve().parents[1] == pathlib.Path.cwd().resolve()
from vmtest.collect import dmesg
assert not dmesg.NATIVE_MISSING' 2>/dev/null \
        || [ "${VMTEST_REINSTALL:-0}" = 1 ]; then
    pip_err=$(mktemp)
    trap 'rm -f "$pip_err"' EXIT
    # A Python given explicitly may be Debian's own: then install beside it, as root does
    # for site tools.
    # editable_mode=compat: a path in a .pth file. The default (an import hook that
    # site.py loads into every Python of the venv) costs each vmtest command ~15 ms.
    "$PYTHON" -m pip install -q -e '.[test]' --config-settings editable_mode=compat \
        2>"$pip_err" \
        || { grep -q externally-managed "$pip_err" \
             && "$PYTHON" -m pip install -q --break-system-packages -e '.[test]' \
                  --config-settings editable_mode=compat; } \
        || { cat "$pip_err" >&2; exit 1; }
fi
# Bytecode now, as a non-editable install would: where PYTHONDONTWRITEBYTECODE is set
# (some CI images), every vmtest command would otherwise compile ~50 modules (~80 ms).
"$PYTHON" -m compileall -q vmtest >/dev/null
# `vmtest` on PATH when it lives in vmtest's own environment.
if [ "$PYTHON" = "$VMTEST_VENV/bin/python3" ]; then
    bindir=/usr/local/bin
    [ "$(id -u)" = 0 ] || bindir=$HOME/.local/bin
    mkdir -p "$bindir"
    ln -sf "$VMTEST_VENV/bin/vmtest" "$bindir/vmtest"
    case ":$PATH:" in *":$bindir:"*) ;; *) echo "setup: add $bindir to PATH" ;; esac
fi
echo "setup: done; run 'vmtest doctor' to check the host"
