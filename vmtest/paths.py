"""Where vmtest keeps its caches (override with VMTEST_CACHE), where the checkout's
kernels/ and configs/ are, and the one way vmtest writes a file others may read."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("VMTEST_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vmtest"


def cache_dir(*parts: str) -> Path:
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied", str(path))
    except OSError as exc:
        from vmtest.errors import MissingRequirement

        raise MissingRequirement(f"the cache folder {path} is not writable "
                                 f"({exc.strerror or exc})",
                                 hint="set VMTEST_CACHE to a writable folder") from exc
    return path


def repo_root() -> Path:
    """The checkout's root (scripts/, tests/): only for tools that run from a checkout."""
    return Path(__file__).resolve().parent.parent


def package_data(*parts: str) -> Path:
    """A file or folder shipped inside the package (configs/, kernels/, the guest's
    sources), found through importlib.resources: the same in a checkout (where
    ./configs and ./kernels link to them) and in an installed wheel."""
    import importlib.resources  # ~10 ms: only when a data file is asked for

    return Path(str(importlib.resources.files("vmtest"))).joinpath(*parts)


def kernels_dir() -> Path:
    env = os.environ.get("VMTEST_KERNELS_DIR")
    return Path(env) if env else package_data("kernels")


def configs_dir() -> Path:
    return package_data("configs")


def default_config() -> Path:
    """The built-in default experiment: the reference experiment on Debian's 6.1."""
    return configs_dir() / "lru-migration.yaml"


# What an installed vmtest cannot work without (`vmtest doctor` checks them).
DATA_FILES = ("configs/lru-migration.yaml", "configs/lru-migration-6.12.yaml",
              "configs/kselftest-mm.yaml", "kernels/fragments/qemu-guest.config",
              "kernels/fragments/mm-migration.config", "kernels/fragments/mm-selftests.config",
              "kernels/patches/6.1/vmtest-instrumentation.patch",
              "kernels/patches/6.12/vmtest-instrumentation.patch",
              "guest/init.sh", "guest/sudo.sh", "guest/fstab", "guest/stressors/lru-stress.c")


def missing_data() -> list[str]:
    return [name for name in DATA_FILES if not package_data(name).is_file()]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file at path (fcntl: released if the holder dies), held
    for the block: one build at a time per working tree, one fetch per sysroot."""
    import fcntl

    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def publishing(final: Path) -> Iterator[Path]:
    """A fresh staging folder beside `final`, of its own (mkdtemp);
    when the block ends without an error it becomes `final` at once (rename(2); what was
    there is replaced), else it is removed and `final` is untouched: a reader of the
    cache never sees half a folder. When another process published `final` meanwhile
    (the cache is content-addressed: the same content), theirs is kept."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = shareable(Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.",
                                              suffix=".tmp", dir=final.parent)),
                        directory=True)
    try:
        yield staging
        shutil.rmtree(final, ignore_errors=True)
        try:
            staging.rename(final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
@functools.cache
def umask() -> int:
    """This process's umask, read without setting it (os.umask would change it for every
    thread for a moment): /proc/self/status, Linux >= 4.7; else the usual 022."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def shareable(path: Path, *, directory: bool = False) -> Path:
    """Give path the mode a plain open()/mkdir() would (0666/0777 less the umask):
    mkstemp and mkdtemp make 0600/0700, which left results unreadable to others."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())
    return path


def write_atomic(path: Path, text: str) -> Path:
    """Write text so that a reader sees the old file or the new one, never half of one
    (a temporary file in the same directory, then rename(2)), with a plain file's mode."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
