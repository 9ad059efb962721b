#!/usr/bin/env python3
"""The example suite (examples/) with one module-scoped guest per module, against what it
cannot avoid: its boots plus the sum of the guest commands its tests issue (vm.run, and
the helpers' QMP hotplug calls). Prints the wall time, both parts and their ratio
(issue 12's bar: wall <= 1.2x one boot + the sum of its commands)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytest

from vmtest import pytest_plugin
from vmtest.qemu.machine import Machine

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Timer:
    def __init__(self) -> None:
        self.boot_s = 0.0
        self.boots = 0
        self.commands_s = 0.0
        self.commands = 0
        self.plugin_s = 0.0  # the plugin's own dmesg reads around each test
        self._depth = 0
        self._in_plugin = False

    def install(self) -> None:
        guest = pytest_plugin.Guest
        boot, run, mark, delta = guest._boot, guest.run, guest.mark, guest.dmesg_delta
        timer = self

        def timed_boot(g: pytest_plugin.Guest) -> Machine:
            t0 = time.monotonic()
            try:
                return boot(g)
            finally:
                timer.boot_s += time.monotonic() - t0
                timer.boots += 1

        def timed_run(g: pytest_plugin.Guest, *a: object, **k: object) -> object:
            t0 = time.monotonic()
            try:
                return run(g, *a, **k)  # type: ignore[arg-type]
            finally:
                spent = time.monotonic() - t0
                if timer._in_plugin:
                    timer.plugin_s += spent
                else:
                    timer.commands_s += spent
                    timer.commands += 1

        def plugin_side(fn):  # type: ignore[no-untyped-def]
            def wrapped(g: pytest_plugin.Guest) -> object:
                timer._in_plugin = True
                try:
                    return fn(g)
                finally:
                    timer._in_plugin = False
            return wrapped

        guest._boot = timed_boot  # type: ignore[method-assign]
        guest.run = timed_run  # type: ignore[method-assign,assignment]
        guest.mark = plugin_side(mark)  # type: ignore[method-assign]
        guest.dmesg_delta = plugin_side(delta)  # type: ignore[method-assign]
        for name in ("hotplug_dimm", "unplug_dimm"):  # QMP: commands too
            original = getattr(Machine, name)

            def qmp_timed(m: Machine, *a: object, _orig=original, **k: object) -> object:
                t0 = time.monotonic()
                try:
                    return _orig(m, *a, **k)
                finally:
                    timer.commands_s += time.monotonic() - t0
                    timer.commands += 1
            setattr(Machine, name, qmp_timed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments")
    args = parser.parse_args()
    timer = Timer()
    timer.install()
    started = time.monotonic()
    status = pytest.main(["-q", "-p", "no:cacheprovider", str(EXAMPLES), *args.pytest_args])
    wall = time.monotonic() - started
    floor = timer.boot_s + timer.commands_s
    print(f"examples: pytest exit {int(status)}; wall {wall:.2f} s")
    print(f"  {timer.boots} boots {timer.boot_s:.2f} s + {timer.commands} guest commands "
          f"{timer.commands_s:.2f} s = {floor:.2f} s; the plugin's dmesg reads "
          f"{timer.plugin_s:.2f} s")
    print(f"  wall / (boots + commands) = {wall / floor:.2f}x")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
