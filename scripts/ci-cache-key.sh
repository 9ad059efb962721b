#!/bin/bash
# The CI cache key: what vmtest's own build key depends on and the CI cannot hash from
# the checkout -- the compiler and the kernel source packages' versions -- with what it
# can (fragments, patches, the build code). A Debian point release or a new gcc makes a
# new key, so a cache that no longer matches is not restored as if it did.
set -euo pipefail
cd "$(dirname "$0")/.."
{
    gcc --version | head -1
    # the cross compiler of arm64 guests (vmtest's key has it too)
    aarch64-linux-gnu-gcc --version 2>/dev/null | head -1 || true
    dpkg-query -W -f='${Package}=${Version}\n' linux-source-6.1 linux-source-6.12 ccache
    find kernels vmtest/kernel -type f -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-16
