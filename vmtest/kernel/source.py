"""Kernel source trees: Debian's linux-source-X.Y package or a local tree.

A source has an *identity* (a short string that changes whenever the code does)
and a *tree* (a directory ready for `make O=...`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmtest import hostcmd, paths, procs
from vmtest.errors import ConfigError, InfraError, MissingRequirement

log = logging.getLogger(__name__)

DEBIAN_SERIES = ("6.1", "6.12")
DPKG_STATUS = Path("/var/lib/dpkg/status")  # dpkg rewrites it on every install


@dataclass(frozen=True)
class DebianSource:
    """Debian's linux-source-X.Y package: /usr/src/linux-source-X.Y.tar.xz."""

    series: str = "6.1"

    @property
    def package(self) -> str:
        return f"linux-source-{self.series}"

    @property
    def tarball(self) -> Path:
        return Path("/usr/src") / f"{self.package}.tar.xz"

    def package_version(self) -> str:
        try:
            status, version = hostcmd.output(["dpkg-query", "-W", "-f=${Version}", self.package],
                                             [DPKG_STATUS])
        except FileNotFoundError as exc:
            raise MissingRequirement("dpkg-query not found: a Debian source needs a Debian host",
                                     hint="use a local tree: --tree PATH") from exc
        if status != 0 or not version.strip() or not self.tarball.exists():
            raise MissingRequirement(
                f"kernel source package {self.package} is not installed ({self.tarball} missing)",
                hint=f"apt-get install {self.package}",
            )
        return version.strip()

    def identity(self) -> str:
        return f"debian:{self.package}={self.package_version()}"

    def describe(self) -> str:
        return f"Debian {self.package}"

    def tree(self) -> Path:
        """Extract the tarball once into the cache and return the tree."""
        version = self.package_version()
        dest = paths.cache_dir("src") / f"{self.package}_{version}"
        with _extracting(dest) as tmp:
            if tmp is not None:
                procs.progress.info("extracting %s into %s (once; a minute or two)",
                                    self.tarball, dest)
                proc = subprocess.run(["tar", "-xf", str(self.tarball), "-C", str(tmp)],
                                      capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise InfraError(f"extracting {self.tarball} failed: "
                                     f"{proc.stderr.strip()}",
                                     hint=f"apt-get install --reinstall {self.package}")
        return dest / self.package


@dataclass(frozen=True)
class LocalTree:
    """A kernel tree on disk; if it is a git repository, `ref` may name a commit."""

    path: Path
    ref: str | None = None

    def _git(self, *args: str) -> str:
        proc = subprocess.run(["git", "-C", str(self.path), *args], capture_output=True,
                              text=True, check=False, timeout=120)
        if proc.returncode != 0:
            raise ConfigError(f"git {' '.join(args)} in {self.path} failed: {proc.stderr.strip()}")
        return proc.stdout

    def is_git(self) -> bool:
        return (self.path / ".git").exists()

    def check(self) -> None:
        if not (self.path / "Makefile").is_file() or not (self.path / "mm").is_dir():
            raise ConfigError(f"{self.path} is not a kernel tree (no Makefile or mm/)",
                              hint="pass the top directory of a Linux source tree")

    def identity(self) -> str:
        """What goes into a build from this tree, as one string: a kernel cached under
        it can only come from these exact sources."""
        self.check()
        if self.is_git():
            if self.ref:
                return f"git:{self.commit(self.ref)}"
            rev = self.commit("HEAD")
            # Uncommitted changes and untracked files that are not ignored (a new .c
            # file) are part of what gets built.
            dirty = self.dirty_digest()
            return f"git:{rev}+{dirty or 'clean'}"
        return f"tree:{self.path}:{content_digest(self.path)}"

    def commit(self, ref: str) -> str:
        """The commit `ref` names, or a ConfigError saying it names none."""
        proc = subprocess.run(["git", "-C", str(self.path), "rev-parse", "--verify", "--quiet",
                               f"{ref}^{{commit}}"], capture_output=True, text=True,
                              check=False, timeout=60)
        if proc.returncode != 0:
            raise ConfigError(f"{ref!r} is not a commit of {self.path}",
                              hint="check the spelling; `git -C TREE log --oneline` lists "
                                   "commits, fetch the ref if it is remote")
        return proc.stdout.strip()

    def dirty_digest(self) -> str:
        """'' for a clean work tree, else a digest of its tracked changes and its
        untracked, not ignored files."""
        diff = self._git("diff", "HEAD", "--binary")
        untracked = [name for name in self._git("ls-files", "--others", "--exclude-standard",
                                                "-z").split("\0") if name]
        if not diff and not untracked:
            return ""
        digest = hashlib.sha256(diff.encode())
        for name in sorted(untracked):
            path = self.path / name
            digest.update(f"\0{name}\0".encode())
            if path.is_file():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()[:12]

    def describe(self) -> str:
        return f"{self.path}" + (f" @ {self.ref}" if self.ref else "")

    def tree(self) -> Path:
        self.check()
        if not self.ref:
            return self.path
        # A ref: export that commit into the cache, leaving the user's checkout alone.
        rev = self.commit(self.ref)
        dest = paths.cache_dir("src") / f"git-{rev[:16]}"
        with _extracting(dest) as tmp:
            if tmp is not None:
                archive = subprocess.Popen(["git", "-C", str(self.path), "archive", rev],
                                           stdout=subprocess.PIPE)
                untar = subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout,
                                       check=False)
                assert archive.stdout is not None
                archive.stdout.close()
                if archive.wait() != 0 or untar.returncode != 0:
                    raise InfraError(f"git archive {rev} of {self.path} failed")
        return dest


KernelSource = DebianSource | LocalTree

STAMP = ".vmtest-extracted"


@contextlib.contextmanager
def _extracting(dest: Path) -> Iterator[Path | None]:
    """Fill dest once, whoever else asks at the same time: yields None when dest is
    complete already, else a fresh folder to fill, which becomes dest (with its stamp)
    when the block ends without an error. Concurrent callers wait on a lock beside dest
    (fcntl: released if the holder dies), so a first use from several processes at once
    (pytest-xdist workers, parallel builds of two variants) extracts once, and nobody
    removes a folder another is filling."""
    if (dest / STAMP).exists():
        yield None
        return
    with paths.locked(dest.with_name(f".{dest.name}.lock")):
        if (dest / STAMP).exists():  # filled while we waited
            yield None
            return
        # What a killed extraction left: no one else can be filling it (we hold the lock).
        for stale in dest.parent.glob(f".{dest.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        with paths.publishing(dest) as tmp:
            yield tmp
            (tmp / STAMP).write_text("done\n")


def parse_source(spec: str) -> KernelSource:
    """`debian:6.1`, `6.1`, `PATH` or `PATH@REF`."""
    match = re.fullmatch(r"(?:debian:|linux-source-)?(\d+\.\d+)", spec)
    if match:
        series = match.group(1)
        if series not in DEBIAN_SERIES:
            raise ConfigError(f"unknown Debian kernel source {spec!r}",
                              hint=f"available: {', '.join(DEBIAN_SERIES)}")
        return DebianSource(series)
    # a folder whose name holds "@" is that folder; else PATH@REF
    path, _, ref = (spec, "", "") if Path(spec).expanduser().is_dir() else spec.partition("@")
    tree = LocalTree(Path(path).expanduser().resolve(), ref or None)
    if not tree.path.is_dir():
        raise ConfigError(f"kernel source {spec!r}: no such directory",
                          hint="use debian:6.1, debian:6.12, a kernel tree path, or PATH@GITREF")
    return tree


# Build outputs (in-tree builds) and what no build reads: left out of a tree's digest.
_OUTPUT_SUFFIXES = (".o", ".ko", ".a", ".cmd", ".d", ".mod", ".order", ".symvers", ".tmp",
                    ".orig", ".rej", ".swp")
_OUTPUT_NAMES = ("vmlinux", "vmlinux.a", "vmlinux.o", "System.map", "Module.symvers",
                 "modules.order", "modules.builtin", "bzImage", ".config", ".config.old")


def content_digest(root: Path) -> str:
    """A digest of the content of every source file under root (a tree without git).
    Each file is hashed once per (size, mtime): later calls stat the tree and hash only
    what changed (the cache is in ~/.cache/vmtest/treehash)."""
    cache_path = paths.cache_dir("treehash") / (
        hashlib.sha256(str(root).encode()).hexdigest()[:16] + ".json")
    try:
        known: dict[str, list[Any]] = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        known = {}
    fresh: dict[str, list[Any]] = {}
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".git", ".tmp")))
        for name in sorted(filenames):
            if name.endswith(_OUTPUT_SUFFIXES) or name in _OUTPUT_NAMES:
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            rel = os.path.relpath(path, root)
            entry = known.get(rel)
            if entry is None or entry[0] != st.st_size or entry[1] != st.st_mtime_ns:
                with open(path, "rb") as handle:
                    entry = [st.st_size, st.st_mtime_ns,
                             hashlib.file_digest(handle, "sha256").hexdigest()]
            fresh[rel] = entry
            digest.update(f"{rel}\0{entry[2]}\n".encode())
    paths.write_atomic(cache_path, json.dumps(fresh))
    return digest.hexdigest()[:16]
