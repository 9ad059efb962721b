#!/bin/bash
# The compiled dmesg scanner under AddressSanitizer and UndefinedBehaviorSanitizer: built
# into a copy of the package, then the parser tests (compiled scan against the regex scan,
# on recorded and randomly spliced logs) run against that build. Any out-of-bounds read,
# use-after-free or undefined behaviour in vmtest/collect/_dmesgscan.c aborts the run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r vmtest "$work/"
find "$work/vmtest" -name '*.so' -delete
include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=undefined -Wall -Wextra -Wno-unused-parameter -Werror \
    -I"$include" vmtest/collect/_dmesgscan.c -o "$work/vmtest/collect/_dmesgscan$suffix"
# PYTHONMALLOC=malloc: every object in its own malloc() block, which ASan guards; no leak
# check (CPython's own allocations are not ours to report). -P: the copy, not the
# checkout, is the vmtest imported. --capture=sys: a sanitizer report reaches the terminal.
export ASAN_OPTIONS=detect_leaks=0 PYTHONMALLOC=malloc PYTHONPATH="$work"
LD_PRELOAD=$(gcc -print-file-name=libasan.so) "$PYTHON" -P -c '
import sys
from vmtest.collect import dmesg
assert dmesg._native is not None and dmesg._native.__file__.startswith(sys.argv[1]), \
    (dmesg._native, dmesg.NATIVE_MISSING)' "$work"
LD_PRELOAD=$(gcc -print-file-name=libasan.so) "$PYTHON" -P -m pytest -q -p no:cacheprovider \
    --capture=sys tests/unit/test_dmesg_native.py tests/unit/test_dmesg.py
echo "dmesgscan: clean under ASan+UBSan"
