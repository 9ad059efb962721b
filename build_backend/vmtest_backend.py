"""vmtest's PEP 517 build backend: setuptools' own, plus the commit a wheel or sdist is
built from, baked into it as vmtest/_commit.txt (vmtest/provenance.py asks git in a
checkout and reads this file elsewhere, so `vmtest --version` names the commit of an
installed wheel too). No setup.py and nothing compiled: the wheel is py3-none-any."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401 - the hooks pip calls, unchanged
    build_editable,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

ROOT = Path(__file__).resolve().parents[1]
BAKED = ROOT / "vmtest" / "_commit.txt"


def _bake() -> None:
    """`git describe` of the checkout into vmtest/_commit.txt; without git (a build from
    an sdist, which carries the file) the file stays as it is."""
    try:
        proc = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40",
                               "--exclude=*"], cwd=ROOT, capture_output=True, text=True,
                              timeout=30, check=False)
    except OSError:
        return
    if proc.returncode == 0 and proc.stdout.strip():
        BAKED.write_text(proc.stdout.strip() + "\n")


def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                metadata_directory: str | None = None) -> str:
    _bake()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    _bake()
    return _setuptools.build_sdist(sdist_directory, config_settings)
