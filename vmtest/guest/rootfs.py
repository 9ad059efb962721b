"""The guest's initramfs (cpio "newc"), assembled from host binaries.

The base image (busybox, the stressors, the init) is cached by a hash of its manifest;
optional programs (sshd, bash, stress-ng) are archives of their own. Per-run secrets
(SSH host key, authorized key) go into a small second archive; the kernel unpacks
concatenated archives in order (Documentation/driver-api/early-userspace/
buffer-format.rst), so each run writes base + layers + overlay without rebuilding any.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vmtest import arch as archs
from vmtest import hostcmd, paths
from vmtest.errors import ConfigError, MissingRequirement
from vmtest.guest import sysroot

log = logging.getLogger(__name__)

INIT_SCRIPT = Path(__file__).with_name("init.sh")
SUDO_SCRIPT = Path(__file__).with_name("sudo.sh")
FSTAB = Path(__file__).with_name("fstab")

# Host programs the guest needs, with the Debian package that provides each.
PROGRAMS = {
    "busybox": ("/bin/busybox", "busybox-static"),
    "dropbear": ("/usr/sbin/dropbear", "dropbear-bin"),
    "stress-ng": ("/usr/bin/stress-ng", "stress-ng"),
    "bash": ("/bin/bash", "bash"),
    # kselftest's runner calls /usr/bin/timeout --foreground, which busybox lacks, and
    # run_vmtests.sh draws its separators with tr's [:graph:], which busybox's tr lacks.
    "timeout": ("/usr/bin/timeout", "coreutils"),
    "tr": ("/usr/bin/tr", "coreutils"),
    # charge_reserved_hugetlb.sh ends its background writer with `killall -2 --wait`:
    # busybox's killall has no --wait, kills nothing, and the writer (which sleeps until
    # killed) holds run_vmtests.sh's output pipe open -- the whole run hung there.
    "killall": ("/usr/bin/killall", "psmisc"),
    # ...and finds it with `pgrep -f`, an applet Debian's busybox does not have: "pgrep:
    # command not found", no writer found, none killed (seen in a 6.12 run's log).
    "pgrep": ("/usr/bin/pgrep", "procps"),
}


@dataclass(frozen=True)
class Entry:
    """One archive member. `source` is a host file; `data` inline bytes; `target` a link."""

    path: str  # absolute path in the guest
    mode: int  # including the file type bits
    source: Path | None = None
    data: bytes | None = None
    target: str | None = None

    def fingerprint(self) -> str:
        if self.source is not None:
            st = self.source.stat()
            what = f"{self.source}:{st.st_size}:{st.st_mtime_ns}"
        elif self.data is not None:
            what = hashlib.sha256(self.data).hexdigest()
        else:
            what = str(self.target)
        return f"{self.path}|{self.mode:o}|{what}"


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | mode)


def file_from(path: str, source: Path, mode: int | None = None) -> Entry:
    mode = mode if mode is not None else stat.S_IMODE(source.stat().st_mode)
    return Entry(path, stat.S_IFREG | mode, source=source)


def file_data(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data=data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target=target)


_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)")


def parse_ldd(output: str) -> list[str]:
    """Library paths from `ldd` output (the loader included), in order, no duplicates."""
    seen: list[str] = []
    for line in output.splitlines():
        if "not found" in line:
            raise MissingRequirement(f"shared library missing on the host: {line.strip()}")
        m = _LDD_LINE.match(line)
        if m and m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def shared_libraries(*binaries: Path) -> list[str]:
    """The libraries the binaries load, the loader included ("not a dynamic executable":
    nothing), and what glibc loads at run time without ldd knowing: libgcc_s, without
    which pthread_cancel() aborts ("libgcc_s.so.1 must be installed")."""
    # what ldd answers changes with the binaries and with the loader's cache (ldconfig
    # rewrites it whenever a library package is installed)
    _, out = hostcmd.output(["ldd", *map(str, binaries)], [*binaries, Path("/etc/ld.so.cache")])
    libs = parse_ldd(out)
    for lib in list(libs):
        if Path(lib).name == "libc.so.6":
            gcc_s = Path(lib).parent / "libgcc_s.so.1"
            if gcc_s.exists() and str(gcc_s) not in libs:
                libs.append(str(gcc_s))
    return libs


def find_program(name: str) -> Path:
    path, package = PROGRAMS[name]
    found = Path(path) if Path(path).exists() else None
    if found is None:
        which = shutil.which(name)
        found = Path(which) if which else None
    if found is None:
        raise MissingRequirement(f"{name} not found on the host (needed in the guest)",
                                 hint=f"apt-get install {package}")
    return found


STRESSOR_DIR = Path(__file__).with_name("stressors")


def stressor_binaries(arch: str = archs.DEFAULT) -> list[Path]:
    """The framework's own stressors (C), compiled statically once per source hash (and
    architecture: cross-compiled for a foreign one)."""
    target = archs.get(arch)
    packages = "build-essential" if target.native else " ".join(target.packages)
    built = []
    for source in sorted(STRESSOR_DIR.glob("*.c")):
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        binary = paths.cache_dir("stressors", digest if arch == archs.DEFAULT
                                 else f"{digest}-{arch}") / source.stem
        if not binary.exists():
            if shutil.which(target.gcc) is None:
                raise MissingRequirement(f"{target.gcc} not found (compiles the guest "
                                         "stressors)", hint=f"apt-get install {packages}")
            # A name of this compile's own: concurrent first uses (pytest-xdist workers,
            # parallel matrix runs on a fresh cache) each compile, and the last rename wins
            # with the same bytes; a fixed name had one gcc write over another's output.
            fd, tmp_name = tempfile.mkstemp(prefix=f".{source.stem}.", suffix=".tmp",
                                            dir=binary.parent)
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                proc = subprocess.run([target.gcc, "-O2", "-static", "-Wall", "-o", str(tmp),
                                       str(source)], capture_output=True, text=True,
                                      check=False)
                if proc.returncode != 0:
                    raise MissingRequirement(
                        f"compiling {source.name} statically failed: "
                        f"{proc.stderr.strip()[-500:]}",
                        hint="apt-get install " + ("libc6-dev (static glibc)"
                                                   if target.native else packages))
                tmp.chmod(0o755)
                os.replace(tmp, binary)
            finally:
                tmp.unlink(missing_ok=True)
        built.append(binary)
    return built


def busybox_applets(busybox: Path) -> list[str]:
    _, out = hostcmd.output([str(busybox), "--list-full"], check=True)
    return [line.strip() for line in out.splitlines() if line.strip()]


# Programs shipped as optional layers: stress-ng and its libraries are 25 MiB, which
# costs ~0.35 s of every TCG boot to unpack; runs that use it get the layer appended.
# bash comes along when a run brings files or names it: scripts written for bash run
# as written (busybox sh is the guest's /bin/sh). dropbear and its libraries (2-4 MiB)
# come with every run that talks SSH (boot.initramfs): a run whose command is on the
# ports does not unpack them (under arm64 TCG every MiB unpacked shows in the boot).
OPTIONAL_PROGRAMS = ("stress-ng", "bash", "dropbear")

# Where files copied into the guest may not go: the init mounts tmpfs, proc, sysfs and
# devtmpfs over these after the archive is unpacked (init.sh), hiding what was there.
HIDDEN_BY_MOUNTS = ("/tmp", "/dev", "/proc", "/sys", "/run")


def guest_programs(names: Iterable[str], arch: str = archs.DEFAULT
                   ) -> list[tuple[str, Path]]:
    """(guest path, host file) of each program and of the libraries they load: the
    host's own programs for the host's architecture, else Debian's packages for arch
    (guest/sysroot.py)."""
    names = tuple(names)
    target = archs.get(arch)
    found: list[tuple[str, Path]] = []
    if target.native:
        binaries = [find_program(n) for n in names]
        found += [(str(b), b) for b in binaries]
        libs = shared_libraries(*binaries) if binaries else []
        return found + [(lib, Path(lib).resolve()) for lib in libs]
    root = sysroot.sysroot(target, names)
    binaries = [sysroot.program(target, n, root) for n in names]
    found += [("/" + str(b.relative_to(root)), b) for b in binaries]
    libs = sysroot.shared_libraries(target, root, binaries) if binaries else []
    return found + [(lib, sysroot.resolve_in(root, lib)) for lib in libs]


def base_manifest(extra_programs: Iterable[str] = (),
                  arch: str = archs.DEFAULT) -> list[Entry]:
    """Everything in the base image, in archive order (directories before contents)."""
    entries: dict[str, Entry] = {}

    def add(entry: Entry) -> None:
        parent = os.path.dirname(entry.path)
        if parent not in ("", "/") and parent not in entries:
            add(directory(parent))
        entries.setdefault(entry.path, entry)

    for top in ("bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "dev", "proc", "sys",
                "tmp", "run", "root", "etc", "var/log", "etc/dropbear", "mnt"):
        add(directory("/" + top, 0o1777 if top == "tmp" else 0o755))
    add(directory("/root/.ssh", 0o700))
    # The applets of a foreign busybox: the host's busybox-static lists them (the same
    # Debian version and configuration; it cannot run the guest's).
    host_busybox = find_program("busybox")
    busybox = host_busybox if archs.get(arch).native \
        else guest_programs(["busybox"], arch)[0][1]
    add(file_from("/bin/busybox", busybox, 0o755))
    for applet in busybox_applets(host_busybox):
        if applet.lstrip("/") != "bin/busybox":
            add(symlink("/" + applet.lstrip("/"), "/bin/busybox"))
    for guest, host in guest_programs(extra_programs, arch) if extra_programs else []:
        add(file_from(guest, host, 0o755))
    for binary in stressor_binaries(arch):
        add(file_from(f"/usr/bin/{binary.name}", binary, 0o755))
    add(file_from("/init", INIT_SCRIPT, 0o755))
    add(file_from("/usr/bin/sudo", SUDO_SCRIPT, 0o755))
    add(file_data("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                                 b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
    add(file_data("/etc/group", b"root:x:0:\nnogroup:x:65534:\n"))
    add(file_data("/etc/shells", b"/bin/sh\n"))
    add(file_data("/etc/hosts", b"127.0.0.1 localhost vmtest\n"))
    add(file_from("/etc/fstab", FSTAB, 0o644))
    return list(entries.values())


def run_overlay(host_key_dropbear: bytes, authorized_key: str) -> list[Entry]:
    """Per-run secrets: the guest's host key and the run's authorized key."""
    return [
        file_data("/etc/dropbear/host_key", host_key_dropbear, 0o600),
        file_data("/root/.ssh/authorized_keys", authorized_key.encode() + b"\n", 0o600),
    ]


def copy_entries(source: Path, dest: str) -> list[Entry]:
    """Archive members that put the host file or folder `source` at `dest` in the guest
    (relative: under /root, where commands run): parents first, modes kept, symlinks as
    links. For the per-run archive (`vmtest run --copy`)."""
    if not source.exists() and not source.is_symlink():
        raise ConfigError(f"--copy: {source} does not exist", hint="copy an existing file "
                                                                   "or folder")
    guest = posixpath.normpath(dest if dest.startswith("/") else posixpath.join("/root", dest))
    if guest == "/" or any(guest == top or guest.startswith(top + "/")
                           for top in HIDDEN_BY_MOUNTS):
        raise ConfigError(f"--copy: {guest} is hidden in the guest by a mount (tmpfs, proc, "
                          "sysfs, devtmpfs)", hint="copy to /root/... or another path")
    entries = [directory(parent) for parent in _parents(guest)]

    def walk(host: Path, path: str) -> None:
        if host.is_symlink():
            entries.append(symlink(path, os.readlink(host)))
        elif host.is_dir():
            entries.append(directory(path, stat.S_IMODE(host.stat().st_mode)))
            for child in sorted(host.iterdir()):
                walk(child, f"{path}/{child.name}")
        elif host.is_file():
            entries.append(file_from(path, host))

    walk(source, guest)
    return entries


def _parents(path: str) -> list[str]:
    """The folders above path, top first: the kernel creates no missing parents when it
    unpacks an archive (init/initramfs.c). A folder entry also sets the folder's mode, so
    /root and /root/.ssh, whose modes sshd checks, are left to the base image."""
    parts = path.strip("/").split("/")[:-1]
    found = ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]
    return [p for p in found if p not in ("/root", "/root/.ssh")]


def manifest_digest(entries: Iterable[Entry]) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(entry.fingerprint().encode() + b"\n")
    return digest.hexdigest()


def _pad(length: int) -> bytes:
    return b"\0" * ((4 - length % 4) % 4)


def _header(ino: int, mode: int, nlink: int, size: int, name: bytes) -> bytes:
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def write_cpio(entries: Iterable[Entry], out_path: Path) -> None:
    """Write a newc archive: owner root, mtime 0, so the same inputs give the same bytes."""
    with out_path.open("wb") as out:
        ino = 1
        for entry in entries:
            name = entry.path.lstrip("/").encode()
            if entry.target is not None:
                body = entry.target.encode()
            elif entry.data is not None:
                body = entry.data
            elif entry.source is not None:
                body = entry.source.read_bytes()
            else:
                body = b""
            nlink = 2 if stat.S_ISDIR(entry.mode) else 1
            head = _header(ino, entry.mode, nlink, len(body), name) + name + b"\0"
            out.write(head + _pad(len(head)) + body + _pad(len(body)))
            ino += 1
        trailer = _header(0, 0, 1, 0, b"TRAILER!!!") + b"TRAILER!!!\0"
        out.write(trailer + _pad(len(trailer)))


# An image not used for this long is removed when another of its name is built (every
# change to the guest's files makes new ones; other checkouts may still use older ones).
STALE_IMAGE_S = 7 * 24 * 3600


def _cached_image(name: str, entries: list[Entry]) -> Path:
    digest = manifest_digest(entries)
    image = paths.cache_dir("initramfs") / f"{name}-{digest[:16]}.cpio"
    if not image.exists():
        # One name per process and thread: the runs of a matrix build it at once.
        tmp = image.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        write_cpio(entries, tmp)
        tmp.rename(image)
        log.info("built initramfs %s (%d entries, %.1f MiB)", image, len(entries),
                 image.stat().st_size / 2**20)
        _prune(image.parent, name, keep=image)
    else:
        os.utime(image)  # in use: not stale
    return image


def _prune(folder: Path, name: str, keep: Path) -> None:
    now = time.time()
    for old in folder.glob(f"{name}-*.cpio"):
        try:
            if old != keep and now - old.stat().st_mtime > STALE_IMAGE_S:
                old.unlink()
        except OSError:  # another process pruned it first
            continue


def _image_name(name: str, arch: str) -> str:
    return name if arch == archs.DEFAULT else f"{name}-{arch}"


def base_image(arch: str = archs.DEFAULT) -> Path:
    """The cached base initramfs, built if its manifest changed."""
    return _cached_image(_image_name("base", arch), _base_entries(arch))


_BASE: dict[str, list[Entry]] = {}


def _base_entries(arch: str = archs.DEFAULT) -> list[Entry]:
    """base_manifest(), made once per process (a busybox and an ldd run, ~10 ms)."""
    if arch not in _BASE:
        _BASE[arch] = base_manifest(arch=arch)
    return _BASE[arch]


def layer_image(program: str, arch: str = archs.DEFAULT) -> Path:
    """An optional program with its libraries, as an archive appended after the base."""
    if program not in OPTIONAL_PROGRAMS:
        raise MissingRequirement(f"unknown optional guest program {program!r}",
                                 hint=f"available: {', '.join(OPTIONAL_PROGRAMS)}")
    in_base = _base_paths(arch)
    # What the base image holds already (libc, the loader) is not unpacked twice.
    files = [(guest, host) for guest, host in guest_programs([program], arch)
             if guest not in in_base]
    have = set(in_base)
    entries = []
    for guest, host in files:
        entries += [directory(d) for d in _parents(guest) if d not in have]
        have.update(_parents(guest))
        entries.append(file_from(guest, host, 0o755))
    return _cached_image(_image_name(program, arch), entries)


_BASE_PATHS: dict[str, set[str]] = {}


def _base_paths(arch: str = archs.DEFAULT) -> set[str]:
    """The guest paths of the base image (for layers to leave out)."""
    if arch not in _BASE_PATHS:
        _BASE_PATHS[arch] = {e.path for e in _base_entries(arch)}
    return _BASE_PATHS[arch]


def _is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


# ELF e_machine each guest architecture runs (elf.h): its own and its 32-bit compat
# one (EM_X86_64 and EM_386: kselftest builds *_32 programs where the host can; EM_AARCH64
# and EM_ARM).
_ELF_MACHINES = {"x86_64": (62, 3), "arm64": (183, 40)}
_ELF_MACHINE_NAMES = {62: "x86_64", 183: "arm64", 3: "i386", 40: "arm"}


def check_elf_arch(binaries: Iterable[Path], arch: str) -> None:
    """Every ELF file is built for arch or its 32-bit compat (e_machine, little-endian):
    a program built for another would fail in the guest with a loader it does not have."""
    want = _ELF_MACHINES[arch]
    for binary in binaries:
        with binary.open("rb") as handle:
            head = handle.read(20)
        machine = int.from_bytes(head[18:20], "little")
        if machine not in want:
            built = _ELF_MACHINE_NAMES.get(machine, f"machine {machine}")
            raise ConfigError(f"{binary} is built for {built}, the guest is {arch}",
                              hint="build it for the guest's architecture (selftests: "
                                   "make ARCH=... CROSS_COMPILE=...)")


def tree_layer(name: str, host_dir: Path, guest_dir: str,
               programs: Iterable[str] = (), *, libraries: bool = True,
               arch: str = archs.DEFAULT) -> Path:
    """A host folder of programs (a kselftest install) at guest_dir, with the shared
    libraries its ELF files need (unless `libraries` is False: kernel modules are ELF
    but load no libraries) and the named programs -- the host's, or for a foreign arch
    Debian's with the libraries from the same sysroot (guest/sysroot.py) --, as a
    cached archive appended after the base."""
    target = archs.get(arch)
    entries = copy_entries(host_dir, guest_dir)
    binaries = [e.source for e in entries if libraries and e.source is not None
                and _is_elf(e.source)]
    programs = tuple(programs)
    check_elf_arch(binaries, arch)
    found = guest_programs(programs, arch)  # the programs first, then their libraries
    named = {guest for guest, _ in found[:len(programs)]}
    if binaries and target.native:
        found += [(lib, Path(lib).resolve()) for lib in shared_libraries(*binaries)]
    elif binaries:
        root = sysroot.sysroot(target, programs)
        found += [(lib, sysroot.resolve_in(root, lib))
                  for lib in sysroot.shared_libraries(target, root, binaries)]
    have = {e.path for e in entries} | _base_paths(arch)
    for guest, host in found:
        # a program named replaces the base's busybox applet of that name (the archive
        # unpacked later wins): kselftest's runner needs coreutils' timeout
        if guest not in have or guest in named:
            entries += [directory(d) for d in _parents(guest) if d not in have]
            have.update(_parents(guest), [guest])
            entries.append(file_from(guest, host, 0o755))
    return _cached_image(name if target.native else f"{name}-{arch}", entries)


def _copy(src: BinaryIO, out: BinaryIO) -> None:
    """All of src onto the end of out, in the kernel where it can (copy_file_range: no
    trip through user space, a reflink on file systems that share extents)."""
    out.flush()
    left = os.fstat(src.fileno()).st_size
    try:
        while left > 0:
            done = os.copy_file_range(src.fileno(), out.fileno(), left)
            if done == 0:
                break
            left -= done
    except OSError:  # another file system or kernel without it: the portable way
        pass
    out.seek(0, os.SEEK_END)  # the file objects learn where the kernel left the offsets
    if left > 0:
        src.seek(os.fstat(src.fileno()).st_size - left)
        shutil.copyfileobj(src, out, 1 << 20)


def assemble(base: Path, overlay: list[Entry], out_path: Path,
             layers: Iterable[Path] = ()) -> Path:
    """base + layers + overlay concatenated into out_path (the run's -initrd)."""
    overlay_path = out_path.with_suffix(".overlay.cpio")
    write_cpio(overlay, overlay_path)
    with out_path.open("wb") as out:
        for part in (base, *layers):
            with part.open("rb") as src:
                _copy(src, out)
        out.write(overlay_path.read_bytes())
    overlay_path.unlink()
    return out_path
