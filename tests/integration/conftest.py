"""Integration tier: real kernels, real QEMU. Marked `integration`."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from vmtest import config, run, scenarios
from vmtest.kernel import build as kbuild
from vmtest.qemu.boot import BootOptions


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.integration)


def _descendants(root: int) -> dict[int, str]:
    """{pid: command line} of every process below root (this test session): the QEMUs
    this session started, directly or through a vmtest it ran. Never another user's."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        cmdlines[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = cmdlines.get(pid, "")
        todo += children.get(pid, [])
    return found


@pytest.fixture(scope="session")
def descendants():
    """descendants(pid) -> {pid: command line} of every process below pid."""
    return _descendants


@pytest.fixture(scope="session")
def gone():
    """gone(pid, started, timeout=10): whether that very process (not a reused pid)
    ended within timeout."""
    def wait(pid: int, started: str, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return True
            if stat[19] != started or stat[0] == "Z":
                return True
            time.sleep(0.1)
        return False
    return wait


# Every temporary file vmtest makes -- in this process and in the vmtest processes the
# tests start, which inherit TMPDIR -- lands in a folder of this session's own, so that
# what a test leaves behind can be seen (no_leftovers) without looking at anyone else's.
SESSION_TMP = Path(tempfile.mkdtemp(prefix="vmtest-itest-"))
os.environ["TMPDIR"] = str(SESSION_TMP)
tempfile.tempdir = str(SESSION_TMP)


def _leftovers() -> set[str]:
    return {p.name for p in SESSION_TMP.iterdir() if not p.name.startswith("pytest-of-")}


@pytest.fixture(autouse=True)
def no_leftovers():
    """Every test must leave no temporary file, folder, socket or key of vmtest's behind
    (the per-run keys live in a temporary folder with the run's initramfs)."""
    before = _leftovers()
    yield
    deadline = time.monotonic() + 5
    while (left := _leftovers() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    for name in left:  # ours: this session's folder
        shutil.rmtree(SESSION_TMP / name, ignore_errors=True)
        (SESSION_TMP / name).unlink(missing_ok=True)
    assert not left, f"temporary files left behind: {sorted(left)}"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_TMP, ignore_errors=True)


def _my_qemus() -> set[int]:
    return {pid for pid, cmd in _descendants(os.getpid()).items() if "qemu-system" in cmd}


@pytest.fixture(autouse=True)
def no_orphan_qemu():
    """Every test must leave no QEMU of its own behind, whatever path it took."""
    before = _my_qemus()
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = _my_qemus() - before
        if not left:
            return
        time.sleep(0.1)
    for pid in left:  # ours by descent: do not poison the next tests
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pytest.fail(f"orphan QEMU processes left behind: {sorted(left)}")


REFERENCE = Path(__file__).resolve().parents[2] / "configs" / "lru-migration.yaml"


def _debian_release(base: str) -> str:
    """The upstream version Debian's linux-source-BASE holds now (6.1.192 of 6.1.192-3):
    what `uname -r` of a kernel built from it starts with, whatever point release the
    archive has moved on to."""
    import subprocess
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", f"linux-source-{base}"],
                             capture_output=True, text=True, check=True).stdout
    return version.split("-", 1)[0]


@pytest.fixture(scope="session")
def debian_release():
    """debian_release(base) -> e.g. "6.1.192" (see _debian_release)."""
    return _debian_release


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


@pytest.fixture(scope="session")
def run_scenario(reference):
    """run_scenario(variant, scenario, out, **overrides): one quick scenario run on the
    reference's 6.1 kernel, as `vmtest run --scenario` does it."""
    def run_one(variant: str, scenario: str, out: Path, profile: str = "quick",
                **overrides) -> dict:
        kdef = reference.kernel("6.1")
        built = kbuild.build_kernel(kdef.build_spec(kdef.variant(variant)))
        return run.run_scenario(built, scenarios.make(scenario, profile, overrides), out,
                                accel=os.environ.get("VMTEST_ACCEL", "auto"))
    return run_one


@pytest.fixture
def boot_opts() -> BootOptions:
    return BootOptions(accel=os.environ.get("VMTEST_ACCEL", "auto"), boot_timeout_s=90)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path
