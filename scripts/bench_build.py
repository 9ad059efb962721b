#!/usr/bin/env python3
"""Build benchmark: a cold build of the default (trimmed) config with an empty ccache and a
fresh build directory, then the cache-hit time of the same `vmtest build`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmtest import paths


def main() -> int:
    real_src = paths.cache_dir("src")
    with tempfile.TemporaryDirectory(prefix="vmtest-bench-") as tmp:
        env = dict(os.environ, VMTEST_CACHE=tmp)
        # Share the extracted source (extraction is not part of a build).
        os.symlink(real_src, Path(tmp) / "src")
        argv = [sys.executable, "-m", "vmtest.cli", "build", "--base", "6.1", "--variant",
                "patched"]
        started = time.monotonic()
        cold = subprocess.run(argv, env=env, capture_output=True, text=True)
        cold_s = time.monotonic() - started
        if cold.returncode != 0:
            print(cold.stderr, file=sys.stderr)
            return 1
        metas = list((Path(tmp) / "kernels").glob("*/meta.json"))
        meta = json.loads(metas[0].read_text())
        hits = []
        for _ in range(5):
            started = time.monotonic()
            subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            hits.append(time.monotonic() - started)
    print(f"cores: {os.cpu_count()}")
    print(f"cold build (empty ccache, fresh build dir): {cold_s / 60:.1f} min wall "
          f"({meta['build_seconds']:.0f} s configure+make), ccache {meta['ccache']}")
    hits.sort()
    print(f"cache hit (`vmtest build`, whole process): median {hits[len(hits) // 2]:.2f} s, "
          f"max {hits[-1]:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
