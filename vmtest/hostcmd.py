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


def stamp(path: Path) -> list[int] | None:
    """What changes when the file is replaced or rewritten; None if it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def stamps(files: Iterable[Path]) -> list[list[object]]:
    return [[str(f), stamp(Path(f))] for f in files]


class StampedStore:
    """A JSON file of answers, each kept with the stamps of the files it was made from
    and given out only while every one of them is unchanged; the `keep` most recently
    stored. Shared by the host commands here and kernel/resolved.py."""

    def __init__(self, name: str, keep: int) -> None:
        self.name, self.keep = name, keep
        self._lock = threading.Lock()  # the matrix resolves kernels from several threads

    @property
    def path(self) -> Path:
        return paths.cache_root() / self.name

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> dict[str, object] | None:
        """The entry for key, if the files it was made from are all as they were."""
        with self._lock:
            entry = self._load().get(key)
        recorded = entry.get("stamps") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(recorded, list):
            return None
        if any(stamp(Path(name)) != old for name, old in recorded):
            return None
        return entry

    def put(self, key: str, recorded: list[list[object]], **fields: object) -> None:
        """Store an answer with the stamps taken *before* it was made: a file that
        changed meanwhile makes the next get() miss rather than trust the old answer."""
        with self._lock:
            data = self._load()
            data.pop(key, None)  # re-inserted last: the dict's order is the order of use
            data[key] = {**fields, "stamps": recorded}
            for old in list(data)[:-self.keep]:
                del data[old]
            try:
                paths.cache_dir()
                paths.write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
            except (OSError, MissingRequirement):
                pass  # a store that cannot be written only costs the next call its work


STORE = StampedStore("hostcmd.json", keep=256)


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
    recorded = stamps(files)
    entry = STORE.get(key)
    if entry is not None and isinstance(entry.get("stdout"), str):
        return 0, str(entry["stdout"])
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout_s)
    if proc.returncode != 0:
        if check:
            raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc.returncode, proc.stdout
    STORE.put(key, recorded, stdout=proc.stdout)
    return 0, proc.stdout

