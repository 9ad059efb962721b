#!/usr/bin/env python3
"""Does `vmtest dmesg` say the same as another checkout? For a change to the parser that
must not change what it reports (speed work): runs `vmtest dmesg --json` and the text
view of this checkout and of `--tree DIR` (e.g. `git archive` of the commit before) on
every file of tests/data/logs, tests/data/dmesg-corpus and tests/data/dmesg-heldout, one
by one, and on the texts scripts/bench_parser.py measures (the recorded logs repeated to
--mib MiB, the public corpus and the densest recorded log repeated), and compares the
outputs byte for byte. Prints each difference (file and first differing line) and exits
1 on any.

    python3 scripts/dmesg_same.py --tree DIR [--mib N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_parser import PUBLIC, corpus  # noqa: E402

DATA = ROOT / "tests" / "data"
FOLDERS = ("logs", "dmesg-corpus", "dmesg-heldout")


def _output(tree: Path, files: list[Path], *options: str) -> list[str]:
    """One output per file (the command run once per file: its exit code may differ)."""
    out = []
    for path in files:
        done = subprocess.run([sys.executable, "-m", "vmtest.cli", "dmesg", str(path),
                               *options], cwd=tree, capture_output=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(tree)})
        out.append(f"exit {done.returncode}\n{done.stdout.decode(errors='replace')}"
                   f"{done.stderr.decode(errors='replace')}")
    return out


def _first_difference(a: str, b: str) -> str:
    for number, (x, y) in enumerate(zip(a.split("\n"), b.split("\n"), strict=False), 1):
        if x != y:
            return f"line {number}: {x[:300]!r}\n    vs {y[:300]!r}"
    return f"lengths {len(a)} vs {len(b)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, required=True, help="the other checkout")
    ap.add_argument("--mib", type=int, default=64, help="size of the built texts (MiB)")
    args = ap.parse_args()
    files = sorted(p for folder in FOLDERS for p in (DATA / folder).iterdir()
                   if p.is_file() and p.suffix not in (".yaml", ".md"))
    differ = 0
    with tempfile.TemporaryDirectory(prefix="vmtest-dmesg-same-") as tmp:
        built = []
        for name, text in (("recorded logs repeated", corpus(args.mib)),
                           ("public corpus repeated", corpus(args.mib // 2, "*.log", PUBLIC)),
                           ("densest log repeated",
                            corpus(args.mib // 2, "6.1-unpatched-cma.dmesg"))):
            path = Path(tmp) / (name.replace(" ", "-") + ".log")
            path.write_text(text)
            built.append(path)
        every = files + built
        compared = 0
        for options in (("--json", "--fail-on-splat"), ("--top", "1000")):
            mine = _output(ROOT, every, *options)
            theirs = _output(args.tree, every, *options)
            for path, a, b in zip(every, mine, theirs, strict=True):
                compared += 1
                if a != b:
                    differ += 1
                    print(f"DIFFERENT {' '.join(options)} {path.name}: "
                          f"{_first_difference(b, a)}")
            digest = hashlib.sha256("".join(mine).encode()).hexdigest()[:16]
            print(f"{' '.join(options)}: {len(every)} files, outputs sha256 {digest}")
    print(f"{compared} outputs compared ({len(files)} files, {len(built)} built texts, "
          f"JSON and text), {differ} different")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
