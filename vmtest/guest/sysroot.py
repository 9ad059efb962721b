"""Guest programs of a foreign architecture: Debian's own packages for it, unpacked into
a cache folder (a "sysroot") that the initramfs takes its binaries and libraries from.

How, on a stock Debian 12 host, without changing the host's package set: apt-get with a
private state (its own package lists for the one foreign architecture, no dpkg status),
`apt-cache depends --recurse` for the packages a program needs, `apt-get download`, and
`dpkg-deb -x` of each into the sysroot. `dpkg --add-architecture` is not needed (nor
root: the lists and the downloads are vmtest's cache). A sysroot is keyed by the
architecture and the programs asked for; remove ~/.cache/vmtest/sysroot to refetch.

Shared libraries are found the way the guest's loader will find them, without running
anything of the guest's: each ELF file's DT_NEEDED and PT_INTERP (readelf, which reads
every ELF machine), looked up in the sysroot's multiarch folders.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
from pathlib import Path

from vmtest import paths
from vmtest.arch import Arch
from vmtest.errors import MissingRequirement

log = logging.getLogger(__name__)

# The Debian package of each guest program (as rootfs.PROGRAMS has for the host), and
# where the package puts it.
PACKAGES = {
    "busybox": ("busybox-static", "bin/busybox"),
    "dropbear": ("dropbear-bin", "usr/sbin/dropbear"),
    "stress-ng": ("stress-ng", "usr/bin/stress-ng"),
    "bash": ("bash", "bin/bash"),
    "timeout": ("coreutils", "usr/bin/timeout"),
    "tr": ("coreutils", "usr/bin/tr"),
    "killall": ("psmisc", "usr/bin/killall"),
    "pgrep": ("procps", "usr/bin/pgrep"),
}
# In every sysroot: the base image's programs (one fetch for them), and libgcc_s, which
# glibc loads at run time without a DT_NEEDED (pthread_cancel() aborts without it).
BASE_PROGRAMS = ("busybox", "dropbear")
ALWAYS = ("libgcc-s1",)

_FETCH_TIMEOUT_S = 600


def apt_options(arch: Arch, state: Path) -> list[str]:
    """apt-get/apt-cache options for a private state holding only arch's package lists."""
    return ["-q", "-o", f"APT::Architecture={arch.debian}",
            "-o", f"APT::Architectures::={arch.debian}",
            "-o", f"Dir::State::Lists={state / 'lists'}",
            "-o", f"Dir::Cache={state / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
            # The downloads land in vmtest's cache, which apt's sandbox user cannot write.
            "-o", "APT::Sandbox::User=root"]


def parse_depends(text: str) -> list[str]:
    """The package names of `apt-cache depends --recurse` output (its unindented lines;
    virtual packages are shown in <angle brackets> and have no file to download)."""
    names = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("<"):
            name = line.strip().split(":")[0]
            if name not in names:
                names.append(name)
    return names


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd,
                              timeout=_FETCH_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise MissingRequirement(f"{argv[0]} not found ({what})",
                                 hint="run on Debian or Ubuntu (apt-get, dpkg-deb)") from exc
    except subprocess.TimeoutExpired as exc:
        raise MissingRequirement(f"{what}: {argv[0]} took more than {_FETCH_TIMEOUT_S} s",
                                 hint="check the network access to the Debian archive") from exc
    if proc.returncode != 0:
        raise MissingRequirement(f"{what} failed: {proc.stderr.strip()[-400:]}",
                                 hint="check the network access to the Debian archive "
                                      "(apt-get download)")
    return proc.stdout


def sysroot(arch: Arch, programs: tuple[str, ...]) -> Path:
    """The unpacked packages of programs (and their dependencies) for arch, fetched once."""
    packages = sorted({PACKAGES[p][0] for p in (*BASE_PROGRAMS, *programs)} | set(ALWAYS))
    digest = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:16]
    root = paths.cache_dir("sysroot", arch.debian) / digest
    if (root / ".complete").exists():
        return root
    state = paths.cache_dir("apt", arch.debian)
    with paths.locked(state / "lock"):
        if (root / ".complete").exists():
            return root
        opts = apt_options(arch, state)
        (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        if not any((state / "lists").glob("*_Packages*")):
            log.info("fetching Debian's %s package lists", arch.debian)
            _run(["apt-get", *opts, "update"], f"apt-get update for {arch.debian}")
        closure = parse_depends(_run(
            ["apt-cache", *opts, "depends", "--recurse", "--no-recommends", "--no-suggests",
             "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
            f"resolving {', '.join(packages)} for {arch.debian}"))
        debs = state / "debs"
        debs.mkdir(exist_ok=True)
        log.info("downloading %d %s packages", len(closure), arch.debian)
        _run(["apt-get", *opts, "download", *[f"{n}:{arch.debian}" for n in closure]],
             f"apt-get download for {arch.debian}", cwd=debs)
        staging = root.with_name(root.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in closure:
            found = sorted(debs.glob(f"{name}_*_{arch.debian}.deb")) \
                or sorted(debs.glob(f"{name}_*_all.deb"))
            if not found:
                raise MissingRequirement(f"{name}:{arch.debian} was not downloaded")
            _run(["dpkg-deb", "-x", str(found[-1]), str(staging)], f"unpacking {found[-1]}")
        (staging / ".complete").write_text("\n".join(closure) + "\n")
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    return root


def program(arch: Arch, name: str, root: Path) -> Path:
    """A program's file in the sysroot."""
    path = root / PACKAGES[name][1]
    if not path.is_file():
        raise MissingRequirement(f"{name} missing from the {arch.debian} packages ({path})",
                                 hint=f"remove {root} to fetch them again")
    return path


_NEEDED = re.compile(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]")
_INTERP = re.compile(r"\[Requesting program interpreter: ([^\]]+)\]")


def parse_readelf(text: str) -> tuple[list[str], str | None]:
    """(DT_NEEDED names, PT_INTERP path) from `readelf -d -l` output."""
    interp = _INTERP.search(text)
    return _NEEDED.findall(text), interp.group(1) if interp else None


def library_dirs(arch: Arch) -> tuple[str, ...]:
    """Where the guest's loader looks (Debian's multiarch folders), in its order."""
    triplet = arch.cross_prefix.rstrip("-")
    return (f"lib/{triplet}", f"usr/lib/{triplet}", "lib", "usr/lib")


def resolve_in(root: Path, guest_path: str) -> Path:
    """The host file behind guest_path in the sysroot, its symbolic links followed as
    the guest would (an absolute target is inside root too)."""
    current = root
    parts = [p for p in guest_path.split("/") if p]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise MissingRequirement(f"{guest_path}: too many symbolic links in {root}")
            target = str(candidate.readlink())
            parts = [p for p in target.split("/") if p] + parts
            current = root if target.startswith("/") else current
            continue
        current = candidate
    return current


def shared_libraries(arch: Arch, root: Path, binaries: list[Path]) -> list[str]:
    """Guest paths of the libraries (and loader) the binaries load, found in root, in
    order, each once (the closure: libraries' own DT_NEEDED too)."""
    found: list[str] = []
    queue = list(binaries)
    seen: set[Path] = set()
    while queue:
        binary = queue.pop(0)
        if binary in seen:
            continue
        seen.add(binary)
        out = _run(["readelf", "-d", "-l", "-W", str(binary)], f"reading {binary}")
        needed, interp = parse_readelf(out)
        wanted = ([interp.lstrip("/")] if interp else []) + [
            next((f"{d}/{n}" for d in library_dirs(arch)
                  if resolve_in(root, f"{d}/{n}").is_file()), n)
            for n in needed]
        for rel in wanted:
            host = resolve_in(root, rel)
            if not host.is_file():
                raise MissingRequirement(f"{binary.name} needs {rel}, which no {arch.debian} "
                                         f"package fetched holds", hint=f"remove {root} "
                                         "to fetch the packages again")
            if "/" + rel not in found:
                found.append("/" + rel)
                queue.append(host)
    for lib in list(found):
        gcc_s = lib.rsplit("/", 1)[0] + "/libgcc_s.so.1"
        if lib.endswith("/libc.so.6") and gcc_s not in found \
                and resolve_in(root, gcc_s).is_file():
            found.append(gcc_s)
    return found
