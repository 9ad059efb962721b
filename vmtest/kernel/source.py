"""Kernel source trees: Debian's linux-source-X.Y package or a local tree.

A source has an *identity* (a short string that changes whenever the code does)
and a *tree* (a directory ready for `make O=...`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vmtest import paths
from vmtest.errors import ConfigError, InfraError, MissingRequirement

log = logging.getLogger(__name__)

DEBIAN_SERIES = ("6.1", "6.12")


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
            out = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", self.package],
                capture_output=True, text=True, check=False, timeout=30,
            )
        except FileNotFoundError as exc:
            raise MissingRequirement("dpkg-query not found: a Debian source needs a Debian host",
                                     hint="use a local tree: --tree PATH") from exc
        if out.returncode != 0 or not out.stdout.strip() or not self.tarball.exists():
            raise MissingRequirement(
                f"kernel source package {self.package} is not installed ({self.tarball} missing)",
                hint=f"apt-get install {self.package}",
            )
        return out.stdout.strip()

    def identity(self) -> str:
        return f"debian:{self.package}={self.package_version()}"

    def describe(self) -> str:
        return f"Debian {self.package}"

    def tree(self) -> Path:
        """Extract the tarball once into the cache and return the tree."""
        version = self.package_version()
        root = paths.cache_dir("src")
        dest = root / f"{self.package}_{version}"
        stamp = dest / ".vmtest-extracted"
        if stamp.exists():
            return dest / self.package
        tmp = root / f".{dest.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log.info("extracting %s into %s", self.tarball, dest)
        proc = subprocess.run(["tar", "-xf", str(self.tarball), "-C", str(tmp)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InfraError(f"extracting {self.tarball} failed: {proc.stderr.strip()}",
                             hint=f"apt-get install --reinstall {self.package}")
        (tmp / ".vmtest-extracted").write_text(version + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
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
        self.check()
        if self.is_git():
            rev = self._git("rev-parse", self.ref or "HEAD").strip()
            if self.ref:
                return f"git:{rev}"
            # Uncommitted changes are part of what gets built.
            diff = self._git("diff", "HEAD")
            dirty = hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else "clean"
            return f"git:{rev}+{dirty}"
        # Not a git tree: identify by the top Makefile's version and the tree's mtime
        # signature is too weak, so hash mm/ and include/ file metadata.
        digest = hashlib.sha256()
        for sub in ("Makefile", "mm", "include/linux", "kernel"):
            for file in sorted((self.path / sub).rglob("*") if (self.path / sub).is_dir()
                               else [self.path / sub]):
                if file.is_file():
                    st = file.stat()
                    digest.update(f"{file}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return f"tree:{self.path}:{digest.hexdigest()[:16]}"

    def describe(self) -> str:
        return f"{self.path}" + (f" @ {self.ref}" if self.ref else "")

    def tree(self) -> Path:
        self.check()
        if not self.ref:
            return self.path
        # A ref: export that commit into the cache, leaving the user's checkout alone.
        rev = self._git("rev-parse", self.ref).strip()
        dest = paths.cache_dir("src") / f"git-{rev[:16]}"
        if (dest / ".vmtest-extracted").exists():
            return dest
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.Popen(["git", "-C", str(self.path), "archive", rev],
                                   stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout, check=False)
        assert archive.stdout is not None
        archive.stdout.close()
        if archive.wait() != 0 or untar.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InfraError(f"git archive {rev} of {self.path} failed")
        (tmp / ".vmtest-extracted").write_text(rev + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return dest


KernelSource = DebianSource | LocalTree


def parse_source(spec: str) -> KernelSource:
    """`debian:6.1`, `6.1`, `PATH` or `PATH@REF`."""
    match = re.fullmatch(r"(?:debian:|linux-source-)?(\d+\.\d+)", spec)
    if match:
        series = match.group(1)
        if series not in DEBIAN_SERIES:
            raise ConfigError(f"unknown Debian kernel source {spec!r}",
                              hint=f"available: {', '.join(DEBIAN_SERIES)}")
        return DebianSource(series)
    path, _, ref = spec.partition("@")
    tree = LocalTree(Path(path).expanduser().resolve(), ref or None)
    if not tree.path.is_dir():
        raise ConfigError(f"kernel source {spec!r}: no such directory",
                          hint="use debian:6.1, debian:6.12, a kernel tree path, or PATH@GITREF")
    return tree
