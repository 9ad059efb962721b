"""Faults injected into real guests and real vmtest processes (issue 16): each ends with
its verdict, exit code and one-line message, keeps what was measured, and leaves no
process of its own behind (the autouse orphan check, by descent). The `fault` marks
make docs/reliability.md (scripts/reliability_table.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmtest.kernel.source import DebianSource

ACCEL = os.environ.get("VMTEST_ACCEL", "auto")


def _start(*args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vmtest.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)  # type: ignore[call-overload]


def _run(*args: str, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _wait_ready(out: Path, timeout: float = 120) -> None:
    """Until the guest in run directory `out` said READY on its console."""
    deadline = time.monotonic() + timeout
    log = out / "console.log"
    while time.monotonic() < deadline:
        if log.exists() and b"VMTEST-READY" in log.read_bytes():
            return
        time.sleep(0.1)
    raise AssertionError(f"no READY in {log}")


def _started(pid: int) -> str:
    """The process's start time: with its pid, who it is (a pid can be reused)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


@contextlib.contextmanager
def _sleeping_run(kernel, out: Path,
                  descendants) -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    """`vmtest run -- sleep 60` with its guest ready: (the process, its QEMU's pid and
    start time, found by descent). Whatever the test does to them, the process is gone
    afterwards."""
    proc = _start("run", "--kernel", str(kernel.directory), "--accel", ACCEL, "--no-share",
                  "--output", str(out), "--", "sleep 60")
    try:
        _wait_ready(out)
        # vmtest itself has seen READY once its boot folder (the initramfs with the run's
        # keys) is gone: from here nothing may be left behind, whatever happens.
        tmp = Path(os.environ.get("TMPDIR", "/tmp"))
        deadline = time.monotonic() + 30
        while list(tmp.glob(f"vmtest-boot-{proc.pid}-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        qemu = next((pid for pid, cmd in descendants(proc.pid).items()
                     if "qemu-system" in cmd), None)
        assert qemu is not None, "no QEMU below the vmtest process"
        yield proc, qemu, _started(qemu)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.fault("QEMU SIGKILLed while CMD runs", verdict="infrastructure", exit="125",
                   message="vmtest: error: QEMU exited unexpectedly while running ...",
                   kept="console.log and qemu.log in the run directory")
def test_qemu_killed_mid_run(kernel, tmp_path, descendants):
    out = tmp_path / "run"
    with _sleeping_run(kernel, out, descendants) as (proc, qemu, _):
        os.kill(qemu, signal.SIGKILL)  # ours: found below our vmtest
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 125, err
    assert "QEMU exited" in err or "SSH connection to the guest was lost" in err, err
    # One error line (then the console's last lines, the log and the fix), no traceback.
    assert err.count("vmtest: error:") == 1 and "Traceback" not in err
    assert (out / "console.log").exists()


@pytest.mark.fault("sshd killed in the guest during CMD", verdict="infrastructure",
                   exit="125", message="vmtest: error: SSH connection to the guest was lost "
                   "mid-command: ...", kept="console.log")
def test_sshd_killed_in_the_guest(kernel, tmp_path):
    proc = _run("run", "--ssh", "--kernel", str(kernel.directory), "--accel", ACCEL,
                "--no-share", "--output", str(tmp_path / "run"), "--",
                "killall dropbear; sleep 10")
    assert proc.returncode == 125, proc.stderr
    assert "SSH connection to the guest was lost mid-command" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.fault("guest network down during CMD", verdict="timeout", exit="124",
                   message="vmtest: timeout: guest command did not finish within 8.0 s: ...",
                   kept="console.log")
def test_guest_network_down(kernel, tmp_path):
    started = time.monotonic()
    proc = _run("run", "--ssh", "--kernel", str(kernel.directory), "--accel", ACCEL,
                "--no-share", "--timeout", "8", "--output", str(tmp_path / "run"), "--",
                "ip link set eth0 down; sleep 60")
    assert proc.returncode == 124, proc.stderr
    assert "did not finish within 8.0 s" in proc.stderr
    assert "escalating" not in proc.stderr  # no poweroff attempt through a dead network
    assert time.monotonic() - started < 60


@pytest.mark.fault("SIGTERM to `vmtest run`", verdict="interrupted", exit="143",
                   message="vmtest: terminated (SIGTERM)", kept="the run directory")
def test_sigterm_to_vmtest_run(kernel, tmp_path, descendants, gone):
    with _sleeping_run(kernel, tmp_path / "run", descendants) as (proc, qemu, started):
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err, err
    assert gone(qemu, started), "QEMU outlived vmtest's SIGTERM"


@pytest.mark.fault("SIGKILL to `vmtest run`", verdict="(none: vmtest is gone)",
                   exit="-9", message="(none)",
                   kept="the run directory; QEMU dies with its parent (PR_SET_PDEATHSIG)")
def test_sigkill_to_vmtest_run_takes_qemu_along(kernel, tmp_path, descendants, gone):
    out = tmp_path / "run"
    with _sleeping_run(kernel, out, descendants) as (proc, qemu, started):
        proc.kill()
        proc.wait(timeout=30)
    ended = gone(qemu, started)
    if not ended:  # ours by descent (recorded above): do not leave it to the next test
        os.kill(qemu, signal.SIGKILL)
    assert ended, "QEMU outlived a SIGKILLed vmtest"
    assert (out / "console.log").exists()


@pytest.mark.fault("QEMU missing", verdict="infrastructure", exit="125 (run -- CMD), 3",
                   message="vmtest: error: qemu-system-x86_64 not found ... fix: apt-get "
                   "install qemu-system-x86", kept="nothing to keep: nothing started")
def test_missing_qemu(kernel, tmp_path):
    # A PATH with every program of the host but QEMU.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "").split(":"):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if not name.startswith("qemu-system") and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(Path(folder) / name)
    env = dict(os.environ, PATH=str(bin_dir))
    proc = _run("run", "--kernel", str(kernel.directory), "--no-share", "--output",
                str(tmp_path / "run"), "--", "true", env=env)
    assert proc.returncode == 125, proc.stderr
    assert "qemu-system-x86_64 not found" in proc.stderr
    assert "apt-get install qemu-system-x86" in proc.stderr


@pytest.mark.fault("KVM broken (opens, boots nothing) with --accel kvm",
                   verdict="infrastructure", exit="125 (run -- CMD), 3",
                   message="vmtest: error: --accel kvm: KVM does not boot guests on this "
                           "host (<the probe's reason>)",
                   kept="console-kvm-probe.log in the run directory")
def test_accel_kvm_where_kvm_does_not_boot(kernel, tmp_path):
    from vmtest.qemu import accel

    host = accel.host_fingerprint()
    verdict = accel.VerdictStore().get(host) or {}
    if verdict.get("kvm_works") or not os.path.exists("/dev/kvm"):
        pytest.skip("KVM boots guests here (or there is none): nothing to break")
    proc = _run("run", "--kernel", str(kernel.directory), "--accel", "kvm", "--no-share",
                "--output", str(tmp_path / "run"), "--", "true")
    assert proc.returncode == 125, proc.stderr
    assert "--accel kvm: KVM does not boot guests on this host" in proc.stderr


@pytest.mark.fault("results disk full while fetching", verdict="infrastructure",
                   exit="125 (run -- CMD), 3",
                   message="vmtest: error: No space left on device: <file>",
                   kept="what was written before; the guest is stopped")
def test_disk_full(kernel, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(tiny)],
                   check=True)
    try:
        proc = _run("run", "--kernel", str(kernel.directory), "--accel", ACCEL, "--no-share",
                    "--output", str(tiny / "run"), "--fetch", "/root/big", "--",
                    "head -c 2000000 /dev/urandom > /root/big")
    finally:
        subprocess.run(["umount", str(tiny)], check=True)
    assert proc.returncode == 125, proc.stderr
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.fault("kernel build failure (a patch that applies and does not compile)",
                   verdict="(no run)", exit="3",
                   message="vmtest: error: kernel build failed (make exit 2) ... log: "
                           "<build log>", kept="the log; the working tree is restored on the "
                                              "next build")
def test_build_failure(tmp_path, kernel):
    patch = tmp_path / "broken.patch"
    # An #error before mm/cma.c's first three lines (the hunk's context).
    first = (DebianSource("6.1").tree() / "mm/cma.c").read_text().splitlines()[:3]
    patch.write_text("--- a/mm/cma.c\n+++ b/mm/cma.c\n@@ -1,3 +1,4 @@\n"
                     "+#error vmtest fault injection\n" + "".join(f" {ln}\n" for ln in first))
    proc = _run("build", "--source", "debian:6.1", "--patch", str(patch), "--variant",
                "fault", timeout=1200)
    assert proc.returncode == 3, proc.stderr
    assert "kernel build failed" in proc.stderr and "vmtest fault injection" in proc.stderr
    assert "Traceback" not in proc.stderr
