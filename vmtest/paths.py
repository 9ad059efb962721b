"""Where vmtest keeps its caches (override with VMTEST_CACHE)."""

from __future__ import annotations

import os
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
