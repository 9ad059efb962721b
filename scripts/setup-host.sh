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

PYTHON=${PYTHON:-python3}
# (dmesg.NATIVE_MISSING: the compiled dmesg scanner is missing or older than its source)
if ! "$PYTHON" -c 'import paramiko, qemu.qmp, pytest
from vmtest.collect import dmesg
assert not dmesg.NATIVE_MISSING' 2>/dev/null \
        || [ "${VMTEST_REINSTALL:-0}" = 1 ]; then
    # Debian's own python3 is "externally managed" (PEP 668): fall back to installing
    # beside it, as root does for site tools, when no virtual environment is active.
    pip_err=$(mktemp)
    trap 'rm -f "$pip_err"' EXIT
    "$PYTHON" -m pip install -q -e '.[test]' 2>"$pip_err" \
        || { grep -q externally-managed "$pip_err" \
             && "$PYTHON" -m pip install -q --break-system-packages -e '.[test]'; } \
        || { cat "$pip_err" >&2; exit 1; }
fi
echo "setup: done; run 'vmtest doctor' to check the host"
