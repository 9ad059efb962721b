#!/bin/bash
# Idempotent host set-up for a fresh Debian 12 machine: the packages vmtest needs and
# the Python package itself (editable, so kernels/ and configs/ are found).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian 12 (bookworm) is what the package names below and the tests are for; elsewhere
# say so plainly and go on (another Debian-like system may have the same packages).
os_id=unknown os_version=unknown
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    os_id=$(. /etc/os-release && echo "${ID:-unknown}")
    # shellcheck disable=SC1091
    os_version=$(. /etc/os-release && echo "${VERSION_ID:-unknown}")
fi
if [ "$os_id" != debian ] || [ "$os_version" != 12 ]; then
    echo "setup: WARNING: this is $os_id $os_version, not Debian 12: the package names" \
         "and versions below are Debian 12's; expect to adapt them" >&2
fi

PACKAGES=(
    qemu-system-x86            # the guests
    linux-source-6.1           # the built-in default kernel source
    linux-source-6.12          # the second base (configs/lru-migration-6.12.yaml)
    build-essential flex bison bc libelf-dev libssl-dev ccache xz-utils lz4 patch  # kernel builds
    busybox-static dropbear-bin stress-ng   # guest userland (initramfs from host binaries)
    cpio kmod python3-venv python3-pip git
    libcap-dev libnuma-dev liburing-dev rsync psmisc procps  # mm selftests (--kselftest)
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
# environment (Debian's python3 is "externally managed", PEP 668), made here from
# Debian's own /usr/bin/python3 -- what users have, not whichever python3 is first on
# PATH (a pyenv or conda one would hide what Debian's lacks). To build it from another
# Python: VMTEST_BASE_PYTHON=/path/to/python3 bash scripts/setup-host.sh (with
# VMTEST_REINSTALL=1 and a removed $VMTEST_VENV to rebuild an existing one).
VMTEST_VENV=${VMTEST_VENV:-$HOME/.local/share/vmtest/venv}
VMTEST_BASE_PYTHON=${VMTEST_BASE_PYTHON:-/usr/bin/python3}
if [ -z "${PYTHON:-}" ] && [ -z "${VIRTUAL_ENV:-}" ] && [ ! -x "$VMTEST_VENV/bin/python3" ]; then
    if ! "$VMTEST_BASE_PYTHON" -c 'import sys, venv; assert sys.version_info >= (3, 11)' \
            2>/dev/null; then
        echo "setup: $VMTEST_BASE_PYTHON is not a Python >= 3.11 with venv;" \
             "apt-get install python3-venv, or set VMTEST_BASE_PYTHON" >&2
        exit 2
    fi
    echo "setup: making the virtual environment $VMTEST_VENV from $VMTEST_BASE_PYTHON" \
         "($("$VMTEST_BASE_PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
    "$VMTEST_BASE_PYTHON" -m venv "$VMTEST_VENV"
fi
PYTHON=$(bash scripts/python.sh)
# (vmtest must be this checkout's: another checkout's editable install would be
# tested instead of this one; -P: not the current folder's vmtest/ by accident)
if ! "$PYTHON" -P -c 'import paramiko, qemu.qmp, pytest, pathlib, shtab, jsonschema, vmtest
assert pathlib.Path(vmtest.__file__).resolve().parents[1] == pathlib.Path.cwd().resolve()' 2>/dev/null \
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
    # Not over another environment's vmtest that still works (a developer's, while CI
    # runs with a VMTEST_VENV of its own): a link left dangling by a removed one, or
    # none, is (re)made.
    current=$(readlink "$bindir/vmtest" 2>/dev/null || true)
    if [ -z "$current" ] && [ ! -e "$bindir/vmtest" ] || [ "$current" = "$VMTEST_VENV/bin/vmtest" ] \
            || { [ -n "$current" ] && [ ! -e "$current" ]; }; then
        ln -sf "$VMTEST_VENV/bin/vmtest" "$bindir/vmtest"
    else
        echo "setup: $bindir/vmtest is ${current:-a file} (another environment's); left as" \
             "it is: $VMTEST_VENV/bin/vmtest is this one"
    fi
    case ":$PATH:" in *":$bindir:"*) ;; *) echo "setup: add $bindir to PATH" ;; esac
fi
echo "setup: done; run 'vmtest doctor' to check the host"
