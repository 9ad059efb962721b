"""Integration tier: real kernels, real QEMU. Marked `integration`."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from vmtest import config
from vmtest.kernel import build as kbuild
from vmtest.runner import BootOptions


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.integration)


def _qemu_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system-x86_64"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


@pytest.fixture(autouse=True)
def no_orphan_qemu():
    """Every test must leave no QEMU behind, whatever path it took."""
    before = _qemu_pids()
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = _qemu_pids() - before
        if not left:
            return
        time.sleep(0.1)
    for pid in left:  # do not poison the next tests
        subprocess.run(["kill", "-9", str(pid)], check=False)
    pytest.fail(f"orphan QEMU processes left behind: {sorted(left)}")


REFERENCE = Path(__file__).resolve().parents[2] / "configs" / "lru-migration.yaml"


@pytest.fixture(scope="session")
def reference() -> config.Experiment:
    return config.load(REFERENCE)


@pytest.fixture(scope="session")
def default_spec(reference) -> kbuild.BuildSpec:
    """The built-in default kernel: 6.1 as shipped, with the instrumentation."""
    k61 = reference.kernel("6.1")
    return k61.build_spec(k61.variant("patched"))


@pytest.fixture(scope="session")
def kernel(default_spec) -> kbuild.KernelArtifact:
    return kbuild.build(default_spec)


@pytest.fixture(scope="session")
def variants(reference) -> dict[str, kbuild.KernelArtifact]:
    k61 = reference.kernel("6.1")
    return {v.name: kbuild.build(k61.build_spec(v)) for v in k61.variants}


@pytest.fixture
def boot_opts() -> BootOptions:
    return BootOptions(accel=os.environ.get("VMTEST_ACCEL", "auto"), boot_timeout_s=90)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path
