"""Host commands whose answer changes only when files change: the package database
(`dpkg-query`), a binary (`gcc --version`, `qemu-system-x86_64 --version`, busybox's
applet list) or the loader's view of a binary (`ldd`).

`vmtest run` asks five of them before QEMU can start, 10-30 ms of process start each
(~90 ms of a ~0.5 s overhead over a bare boot). Their output is remembered in
~/.cache/vmtest/hostcmd.json, keyed by the argv and checked against the identity (device,
inode, size, mtime, ctime) of every file the answer depends on -- the program itself,
resolved through PATH and symlinks, plus what the caller names. An upgrade rewrites one of
them (dpkg's status file, the binary, /etc/ld.so.cache) and the command runs again; a
failed command is never remembered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path

from vmtest import paths
from vmtest.errors import MissingRequirement

KEEP = 256  # answers remembered, the most recently made
_LOCK = threading.Lock()  # the matrix resolves kernels from several threads


def stamp(path: Path) -> list[int] | None:
    """What changes when the file is replaced or rewritten; None if it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _store() -> Path:
    return paths.cache_root() / "hostcmd.json"


def _load(store: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(store.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def output(argv: list[str], depends: Iterable[Path] = (), *, timeout_s: float = 30,
           check: bool = False) -> tuple[int, str]:
    """(exit status, stdout) of argv, from the store when nothing it depends on changed.

    Raises FileNotFoundError when the program is not found, as subprocess does, and
    CalledProcessError on a non-zero exit when `check`."""
    found = shutil.which(argv[0])
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", argv[0])
    files = [Path(os.path.realpath(found)), *(Path(p) for p in depends)]
    key = json.dumps([argv, os.environ.get("PATH", ""), os.environ.get("LD_LIBRARY_PATH", "")])
    stamps = [[str(f), stamp(f)] for f in files]
    store = _store()
    with _LOCK:
        entry = _load(store).get(key)
    if entry is not None and entry.get("stamps") == stamps and isinstance(entry.get("stdout"), str):
        return 0, str(entry["stdout"])
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout_s)
    if proc.returncode != 0:
        if check:
            raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc.returncode, proc.stdout
    # stamped before the run's answer is stored: a file that changed meanwhile makes the
    # next call run it again rather than trust an answer about the old file
    with _LOCK:
        data = _load(store)
        data.pop(key, None)  # re-inserted last: the dict's order is the order of use
        data[key] = {"stamps": stamps, "stdout": proc.stdout}
        for old in list(data)[:-KEEP]:
            del data[old]
        try:
            paths.cache_dir()
            paths.write_atomic(store, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except (OSError, MissingRequirement):
            pass  # a cache that cannot be written only costs the next call its process
    return 0, proc.stdout

