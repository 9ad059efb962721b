"""Issue 26: a scenario defined as data in an experiment file (a command, metrics from
six sources, variants that are sysctls of one build) through `vmtest matrix --profile
quick --until-decided` on real guests: the sequential test stops at its first look,
once the primary metric is decided, and the report has every declared metric for both
variants."""

from __future__ import annotations

import json
import subprocess
import sys

EXPERIMENT = """\
kernels:
  "6.1":
    source: debian:6.1
    fragments: [qemu-guest, mm-migration, mm-selftests]
    patches: [6.1/vmtest-instrumentation.patch]
    variants:
      swappiness-10: {sysctl: {vm.swappiness: 10}}
      swappiness-100: {sysctl: {vm.swappiness: 100}}
scenarios:
  readback:
    run: ./work.sh
    timeout_s: 120
    machine: {memory: 512M, cpus: 1}
    metrics:
      - {name: swappiness, from: file, path: /proc/sys/vm/swappiness, better: higher}
      - {name: seen, from: stdout, pattern: 'seen=([0-9]+)', better: higher}
      - {name: marks, from: dmesg, pattern: 'vmtest-test: mark'}
      - {name: stalls, from: vmstat, counter: compact_stall}
      - {name: huge_total, from: meminfo, field: HugePages_Total, take: after}
      - {name: status, from: exit}
matrix:
  variants: [swappiness-10, swappiness-100]
  scenarios: [readback]
"""

WORK = """\
#!/bin/sh
echo "vmtest-test: mark" > /dev/kmsg
echo "vmtest-test: mark" > /dev/kmsg
echo "seen=$(cat /proc/sys/vm/swappiness)"
"""


def test_a_data_scenario_through_the_matrix_until_decided(variants, tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "exp.yaml").write_text(EXPERIMENT)
    (folder / "work.sh").write_text(WORK)
    (folder / "work.sh").chmod(0o755)
    results = tmp_path / "results"
    args = [sys.executable, "-m", "vmtest.cli", "matrix", str(folder / "exp.yaml"),
            "--profile", "quick", "--until-decided", "--alpha", "0.05",
            "--max-repetitions", "8", "--jobs", "2", "--results", str(results)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode == 3:
        # A run the host failed is not counted; --resume runs it again.
        assert "Infrastructure failures" in proc.stdout, proc.stdout + proc.stderr
        proc = subprocess.run([*args, "--resume"], capture_output=True, text=True,
                              timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    docs = [json.loads(p.read_text()) for p in results.glob("runs/*/result.json")]
    by_variant: dict[str, list[dict[str, float]]] = {}
    for d in docs:
        assert d["verdict"] == "ok", d.get("error")
        by_variant.setdefault(d["identity"]["variant"], []).append(d["metrics"])
    # alpha 0.05: the first look is at 5 + 5 (complete separation, p = 0.008); decided
    # there, nothing more is started (the budget was 8 a side; a run already in flight
    # beside the fifth, --jobs 2, is kept)
    assert sorted(by_variant) == ["swappiness-10", "swappiness-100"]
    counts = {name: len(runs) for name, runs in by_variant.items()}
    assert all(5 <= n <= 6 for n in counts.values()), counts
    for name, value in (("swappiness-10", 10), ("swappiness-100", 100)):
        assert all(m["swappiness"] == value and m["seen"] == value and m["marks"] == 2
                   and m["status"] == 0 and m["huge_total"] == 0 and "stalls" in m
                   for m in by_variant[name]), by_variant[name]
    assert "decided" in proc.stderr, proc.stderr[-3000:]
    report = (results / "report.md").read_text()
    for metric in ("swappiness", "seen", "marks", "stalls", "huge_total", "status"):
        assert f"| {metric} | {counts['swappiness-10']}+{counts['swappiness-100']} |" \
            in report, report
    row = next(line for line in report.splitlines() if line.startswith("| swappiness |"))
    assert "improved" in row, row
