#!/usr/bin/env python3
"""docs/reliability.md from the tests: every test marked @pytest.mark.fault(...) is a row
(fault, verdict, exit code, message, what is kept, the test). `--check` exits 1 when the
document and the tests disagree (the unit tier runs it)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
HEAD = """# Reliability: faults and what vmtest does about them

Every row is a test that injects the fault and checks the outcome; CI runs them all
(`tests/unit` without a guest, `tests/integration` on real guests). Made by
`python3 scripts/reliability_table.py` from the tests' `@pytest.mark.fault(...)`; the unit
tier fails when this file and the tests disagree. Exit codes: docs in `vmtest/errors.py`
(0 ok, 1 kernel failure, 2 usage, 3 infrastructure, 130/143 interrupted; `vmtest run --
CMD` passes CMD's status and keeps 124 for a kernel failure, 125 for its own). No row
leaves a process, socket, temporary folder or key behind: the integration tier's
`no_orphan_qemu` fixture checks every test for processes, by descent, and `no_leftovers`
for temporary files, folders and keys in the session's own TMPDIR.

| fault | verdict | exit | message | kept | test |
|---|---|---|---|---|---|
"""


def rows() -> list[dict[str, str]]:
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as out:
        env = dict(os.environ, VMTEST_FAULT_TABLE=out.name)
        proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                               "-p", "no:cacheprovider", "tests/unit", "tests/integration"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"collecting the tests failed:\n{proc.stdout[-2000:]}")
        found = [json.loads(line) for line in Path(out.name).read_text().splitlines()]
    by_test: dict[str, dict[str, str]] = {}
    for row in found:  # a parametrized test is one row
        by_test.setdefault(row["test"].split("[", 1)[0], row)
    return sorted(by_test.values(), key=lambda r: r["fault"].lower())


def render(found: list[dict[str, str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"| {cell(r['fault'])} | {cell(r.get('verdict', ''))} | {cell(r.get('exit', ''))} | "
             f"{cell(r.get('message', ''))} | {cell(r.get('kept', ''))} | "
             f"`{r['test'].split('[', 1)[0]}` |" for r in found]
    return HEAD + "\n".join(lines) + f"\n\n{len(found)} faults.\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    text = render(rows())
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} disagrees with the tests' fault marks: run "
                  "python3 scripts/reliability_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
