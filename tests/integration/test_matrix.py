"""Issue 5: a real quick matrix, interrupted in the middle and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REF = Path(__file__).resolve().parents[2] / "configs" / "lru-migration.yaml"


def _default_sigint() -> None:
    # A test run started in the background by a non-interactive shell inherits SIGINT
    # ignored, and so would the matrix: give it the default, as on a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _matrix(results: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vmtest.cli", "matrix", str(REF),
                             "--profile", "quick", "--repetitions", "1", "--results",
                             str(results), "--jobs", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


@pytest.mark.fault("SIGINT (Ctrl-C) mid-matrix, then --resume", verdict="interrupted",
                   exit="130, then 0", message="vmtest: stopped the running VMs. Finished runs "
                   "are kept: `vmtest matrix ... --resume` continues.",
                   kept="every finished run; the resume runs only the rest")
def test_quick_matrix_interrupted_and_resumed(tmp_path, variants):
    results = tmp_path / "res"
    proc = _matrix(results)
    index = results / "index.jsonl"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if index.exists() and index.read_text().strip():
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the matrix
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    done_before = [json.loads(line)["key"] for line in index.read_text().splitlines()]
    assert 1 <= len(done_before) < 4

    proc = _matrix(results, "--resume")
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode in (0, 1), err  # 1 only if the comparison found a regression
    keys = [json.loads(line)["key"] for line in index.read_text().splitlines()]
    assert sorted(keys) == sorted(set(keys)), "a run was recorded twice"
    assert len(keys) == 4 and set(done_before) <= set(keys)
    for key in keys:
        doc = json.loads((results / "runs" / key / "result.json").read_text())
        assert doc["verdict"] == "ok", doc.get("error")
    for name in ("report.md", "report.html", "report.json", "junit.xml"):
        assert (results / name).stat().st_size > 0
    assert "'fail to migrate' dumps over 30 CMA allocations" in (results / "report.md").read_text()
    # Re-rendering from stored results runs nothing and gives the same report.
    before = (results / "report.md").read_text()
    rendered = subprocess.run([sys.executable, "-m", "vmtest.cli", "report", str(results)],
                              capture_output=True, text=True, timeout=120)
    assert rendered.returncode in (0, 1) and (results / "report.md").read_text() == before


@pytest.mark.fault("results directory of another config", verdict="(no run)", exit="2",
                   message="vmtest: error: DIR holds results of another config or profile "
                           "...", kept="the other results, untouched")
def test_matrix_refuses_other_config_results(tmp_path):
    results = tmp_path / "res"
    results.mkdir()
    (results / "matrix.json").write_text(json.dumps({"fingerprint": "other", "config": "x"}))
    (results / "index.jsonl").write_text("")
    proc = subprocess.run([sys.executable, "-m", "vmtest.cli", "matrix", str(REF), "--profile",
                           "quick", "--results", str(results), "--resume"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "another config" in proc.stderr


@pytest.mark.fault("SIGKILL to `vmtest matrix` mid-run, then --resume",
                   verdict="(the killed run is not a result)", exit="-9, then 0",
                   message="(none: the process is gone)",
                   kept="every finished run; QEMU dies with its parent (PR_SET_PDEATHSIG), "
                        "the directory's lock goes with the process, --resume runs the rest")
def test_matrix_sigkilled_then_resumed(tmp_path, variants, descendants, gone):
    results = tmp_path / "res"
    proc = _matrix(results, "--scenario", "hotplug-offline", "--jobs", "1")
    deadline = time.monotonic() + 600
    qemus: dict[int, str] = {}
    while time.monotonic() < deadline and proc.poll() is None and not qemus:
        qemus = {pid: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
                 for pid, cmd in descendants(proc.pid).items() if "qemu-system" in cmd}
        time.sleep(0.2)
    assert qemus and proc.poll() is None, proc.communicate()
    time.sleep(3)  # mid-run: booted, the scenario under way
    proc.kill()  # no handler runs: PR_SET_PDEATHSIG must take QEMU along
    proc.communicate(timeout=30)
    survivors = [pid for pid, started in qemus.items() if not gone(pid, started)]
    for pid in survivors:  # ours by descent (recorded above): leave none behind
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "QEMU outlived a SIGKILLed matrix"
    resumed = _matrix(results, "--scenario", "hotplug-offline", "--jobs", "1", "--resume")
    out, err = resumed.communicate(timeout=1200)
    assert resumed.returncode in (0, 1), err
    keys = [json.loads(line)["key"] for line in (results / "index.jsonl").read_text()
            .splitlines()]
    assert len(keys) == 2 and len(set(keys)) == 2
    for key in keys:
        doc = json.loads((results / "runs" / key / "result.json").read_text())
        assert doc["verdict"] == "ok", doc.get("error")
