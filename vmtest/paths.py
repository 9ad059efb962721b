"""Where vmtest keeps its caches (override with VMTEST_CACHE), where the checkout's
kernels/ and configs/ are, and the one way vmtest writes a file others may read."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("VMTEST_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vmtest"


def cache_dir(*parts: str) -> Path:
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The checkout's root (kernels/ and configs/ live there)."""
    return Path(__file__).resolve().parent.parent


def kernels_dir() -> Path:
    env = os.environ.get("VMTEST_KERNELS_DIR")
    return Path(env) if env else repo_root() / "kernels"


def default_config() -> Path:
    """The built-in default experiment: the reference experiment on Debian's 6.1."""
    return repo_root() / "configs" / "lru-migration.yaml"


def write_atomic(path: Path, text: str) -> Path:
    """Write text so that a reader sees the old file or the new one, never half of one
    (a temporary file in the same directory, then rename(2))."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
