"""Files in and out of a real guest (issue 12, part 1): shares, copies, fetches, stdin,
and bash scripts run as written -- through the command line a user types."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _vmtest(kernel, *args: str, cwd: Path, stdin: bytes = b"",
            timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", "run", "--kernel",
                           str(kernel.directory), *args], cwd=cwd, input=stdin,
                          capture_output=True, timeout=timeout)


def test_current_folder_is_shared_read_only_and_cmd_runs_there(kernel, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mytest.sh").write_text(
        "#!/bin/bash\n"
        "# bash-isms: arrays, [[ ]], process substitution\n"
        "a=(one two three)\n"
        "[[ ${#a[@]} -eq 3 ]] && echo \"bash ${BASH_VERSINFO[0]} ok in $PWD\"\n"
        "if touch written 2>/dev/null; then echo WROTE; else echo read-only; fi\n")
    (work / "mytest.sh").chmod(0o755)
    proc = _vmtest(kernel, "--output", str(tmp_path / "run"), "--", "./mytest.sh", cwd=work)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert lines[0].startswith("bash ") and lines[0].endswith(f" ok in {work}")
    assert lines[1] == "read-only" and not (work / "written").exists()


def test_writable_share_round_trip_is_byte_identical(kernel, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    data = os.urandom(300_000)
    (out / "in.bin").write_bytes(data)
    proc = _vmtest(kernel, "--no-share", "--share-rw", str(out), "--output",
                   str(tmp_path / "run"), "--",
                   f"cp {out}/in.bin {out}/back.bin && sha256sum {out}/in.bin", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split()[0] == hashlib.sha256(data).hexdigest()
    assert (out / "back.bin").read_bytes() == data


def test_copy_in_fetch_out_and_stdin(kernel, tmp_path):
    data = os.urandom(100_000)
    (tmp_path / "blob").write_bytes(data)
    piped = os.urandom(50_000)
    run_dir = tmp_path / "run"
    proc = _vmtest(kernel, "--no-share", "--copy", f"{tmp_path / 'blob'}:/root/in/blob",
                   "--fetch", "/root/out", "--output", str(run_dir), "--",
                   "mkdir -p out && cp in/blob out/blob && cat > out/stdin && wc -c < out/stdin",
                   cwd=tmp_path, stdin=piped)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == str(len(piped))
    assert (run_dir / "fetched" / "root/out/blob").read_bytes() == data
    assert (run_dir / "fetched" / "root/out/stdin").read_bytes() == piped
    assert "fetched: " in proc.stderr.decode()


def test_stdin_to_stdout_on_the_ports_is_byte_identical(kernel, tmp_path):
    """The default channel (the init's virtio-serial ports): binary stdin through CMD to
    stdout unchanged, stderr apart, the end of stdin seen."""
    data = os.urandom(1 << 20)
    proc = _vmtest(kernel, "--no-share", "--output", str(tmp_path / "run"), "--",
                   "cat; echo done >&2", cwd=tmp_path, stdin=data)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == data
    assert proc.stderr.decode().splitlines().count("done") == 1


@pytest.mark.fault("--fetch of a path the guest does not have", verdict="infrastructure",
                   exit="125", message="vmtest: error: fetching P from the guest failed: ...",
                   kept="CMD's output (already streamed)")
def test_cmd_status_passes_through_and_a_missing_fetch_is_125(kernel, tmp_path):
    proc = _vmtest(kernel, "--no-share", "--output", str(tmp_path / "a"), "--", "exit 3",
                   cwd=tmp_path)
    assert proc.returncode == 3
    proc = _vmtest(kernel, "--no-share", "--fetch", "/root/nope", "--output",
                   str(tmp_path / "b"), "--", "true", cwd=tmp_path)
    assert proc.returncode == 125
    assert b"fetching /root/nope from the guest failed" in proc.stderr
