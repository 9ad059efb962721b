"""The CI workflow's seed jobs, run here on the quick profile (scripts/ci_local.py):
paired shards, a merge equal to one directory, a missing shard refused (issue 15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ci_local.py"


def test_shards_merge_like_one_directory(variants, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=1800, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.count("both variants in each: True") == 2
    assert "merged == one directory: True" in proc.stdout
    assert "merge without shard 2: exit 3" in proc.stdout
