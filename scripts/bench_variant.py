#!/usr/bin/env python3
"""Variant rebuild bar: after building one variant, how long does the other take?

Switches the shared working tree between the reference config's variants and prints the
make time of each switch next to the cold build time recorded for the first variant.
Use after `vmtest build` (the cold build is read from the cache's metadata)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from vmtest import config
from vmtest.kernel import build as kbuild

REF = Path(__file__).resolve().parents[1] / "configs" / "lru-migration.yaml"


def main() -> int:
    k61 = config.load(REF).kernel("6.1")
    patched, unpatched = k61.variant("patched"), k61.variant("unpatched")
    cold = kbuild.build(k61.build_spec(patched))
    cold_s = float(cold.meta.get("build_seconds", 0))
    figures = []
    for variant in (unpatched, patched, unpatched):
        started = time.monotonic()
        art = kbuild.build(k61.build_spec(variant), force=True)
        figures.append((variant.name, time.monotonic() - started,
                        float(art.meta["build_seconds"])))
    print(f"cold build of 6.1/patched (recorded): {cold_s:.0f} s")
    for name, wall, make_s in figures:
        print(f"switch to {name}: {wall:.1f} s wall ({make_s:.1f} s configure+make) = "
              f"{100 * make_s / cold_s:.1f} % of cold" if cold_s else f"{name}: {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
