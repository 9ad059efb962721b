"""Issue 26, item 3: pytest tests as a scenario, on real guests: `vmtest run --config FILE
--scenario NAME` and a quick matrix of two variants that differ in a kernel parameter
(one build), each run one pytest session whose `vm` is that run's guest."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

EXPERIMENT = """\
kernels:
  "6.1":
    source: debian:6.1
    fragments: [qemu-guest, mm-migration, mm-selftests]
    patches: [6.1/vmtest-instrumentation.patch]
    variants:
      patched: {}
      thp-never: {cmdline: "transparent_hugepage=never"}
scenarios:
  guest-tests:
    pytest: tests/test_guest.py
    timeout_s: 120
    metrics:
      - {name: passed, from: pytest, outcome: passed, better: higher}
      - {name: failed, from: pytest, outcome: failed}
      - {name: thp_never, from: record, key: thp_never}
matrix:
  variants: [patched, thp-never]
  scenarios: [guest-tests]
"""

TESTS = """\
import pytest


def test_the_runs_kernel(vm):
    assert vm.run("uname -r", check=True).stdout.strip().endswith("-vmtest-patched")


def test_thp_mode(vm):
    enabled = vm.run("cat /sys/kernel/mm/transparent_hugepage/enabled", check=True).stdout
    vm.record("thp_never", int("[never]" in enabled))


def test_fails(vm):
    assert vm.run("false").status == 0


def test_skipped(vm):
    pytest.skip("counted as skipped")
"""


def _experiment(tmp_path: Path) -> Path:
    folder = tmp_path / "exp"
    (folder / "tests").mkdir(parents=True)
    (folder / "tests" / "test_guest.py").write_text(TESTS)
    (folder / "exp.yaml").write_text(EXPERIMENT)
    return folder / "exp.yaml"


def _vmtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True, timeout=1200)


def test_vmtest_run_scenario_is_one_session_on_the_runs_guest(variants, tmp_path):
    path = _experiment(tmp_path)
    out = tmp_path / "run"
    proc = _vmtest("run", "--config", str(path), "--scenario", "guest-tests",
                   "--variant", "thp-never", "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed: 2" in proc.stdout and "failed: 1" in proc.stdout
    doc = json.loads((out / "result.json").read_text())
    assert doc["verdict"] == "ok"
    assert doc["metrics"] == {"passed": 2, "failed": 1, "thp_never": 1}
    assert doc["pytest"]["skipped"] == 1 and doc["pytest"]["total"] == 4
    assert doc["identity"]["boot"]["cmdline"] == ["transparent_hugepage=never"]
    assert "assert 1 == 0" in doc["tests"]["tests/test_guest.py::test_fails"]["longrepr"]
    # one boot: the init said it was ready once, and no boot folder of the fixture's
    assert (out / "console.log").read_text().count("VMTEST-READY") == 1
    assert not list(out.rglob("boot1"))
    props = {p.get("name"): p.get("value")
             for p in ET.parse(out / "junit.xml").getroot().iter("property")}
    assert props == {"thp_never": "1"}


def test_a_quick_matrix_compares_the_tests_metrics(variants, tmp_path):
    results = tmp_path / "results"
    args = ("matrix", str(_experiment(tmp_path)), "--profile", "quick", "--repetitions", "2",
            "--jobs", "1", "--results", str(results))
    proc = _vmtest(*args)
    if proc.returncode == 3:
        # A run the host failed (a guest clock calibrated wrong under load, say) is not
        # counted; --resume runs it again, as the report says.
        assert "Infrastructure failures" in proc.stdout, proc.stdout + proc.stderr
        proc = _vmtest(*args, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = [json.loads(p.read_text()) for p in results.glob("runs/*/result.json")]
    assert len(docs) == 4 and all(d["verdict"] == "ok" for d in docs)
    by_variant = {}
    for d in docs:
        by_variant.setdefault(d["identity"]["variant"], []).append(d["metrics"])
    assert by_variant["patched"] == [{"passed": 2, "failed": 1, "thp_never": 0}] * 2
    assert by_variant["thp-never"] == [{"passed": 2, "failed": 1, "thp_never": 1}] * 2
    report = (results / "report.md").read_text()
    for metric in ("passed", "failed", "thp_never"):
        assert f"| {metric} | 2+2 |" in report
