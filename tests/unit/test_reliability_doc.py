"""docs/reliability.md is the tests' fault marks, row for row (scripts/reliability_table.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_reliability_table_is_the_tests_fault_marks():
    proc = subprocess.run([sys.executable, "scripts/reliability_table.py", "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in (ROOT / "docs" / "reliability.md").read_text().splitlines()
            if ln.startswith("| ") and not ln.startswith("| fault")]
    assert len(rows) >= 20, f"only {len(rows)} faults"
