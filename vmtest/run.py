"""One run: (built kernel, scenario, run directory) -> one result document.

Boot, let the scenario drive the guest, map what happened to a verdict, write the
document (vmtest/results/document.py) whatever happened. Builds nothing: the caller hands
in a built kernel (vmtest/kernel/build.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from vmtest.errors import GuestFailure, VmtestError
from vmtest.kernel.build import BuiltKernel
from vmtest.qemu import boot as boot_mod
from vmtest.qemu.machine import Machine
from vmtest.results import document
from vmtest.scenarios.base import Scenario

log = logging.getLogger(__name__)

# How far the guest's clock may drift from the host's over a run before the run is not
# trusted (a TSC calibrated against a starved PIT made one guest's clock run 2x fast).
CLOCK_TOLERANCE = 0.05

Reading = tuple[float, float]  # (host monotonic s, guest uptime s)


def _guest_uptime(vm: Machine) -> Reading | None:
    """(host monotonic, guest uptime) read together; None if the guest cannot say."""
    try:
        before = time.monotonic()
        text = vm.ssh().check_output("cat /proc/uptime", timeout_s=30)
        after = time.monotonic()
        return (before + after) / 2, float(text.split()[0])
    except (VmtestError, ValueError, IndexError):
        return None


def clock_ratio(start: Reading | None, end: Reading | None) -> float | None:
    """Guest seconds per host second between two (host, guest) readings."""
    if start is None or end is None or end[0] - start[0] < 5:
        return None
    return round((end[1] - start[1]) / (end[0] - start[0]), 3)


def clock_problem(ratio: float | None) -> str | None:
    """Why a run whose guest clock ran at `ratio` x host time is not counted, or None."""
    if ratio is None or abs(ratio - 1) <= CLOCK_TOLERANCE:
        return None
    # The scenario's periods and timeouts ran on the guest's clock: not the experiment
    # that was asked for. What was measured is kept, but not as a result.
    return (f"the guest's clock ran at {ratio:.2f}x host time (TSC calibrated wrong at "
            "boot, see 'tsc: Detected' in dmesg.txt): its periods did not hold, so this "
            "run is not counted\nhint: fewer parallel VMs (--jobs) or a --stagger; "
            "`vmtest matrix --resume` runs it again")


def verdict_for(exc: BaseException) -> tuple[str, str]:
    """(verdict, error) of a run that ended with exc: the kernel's fault (its verdict:
    kernel-crash, hang, timeout) or the machinery's (infrastructure)."""
    if isinstance(exc, GuestFailure):
        return exc.verdict, exc.render()
    if isinstance(exc, VmtestError):
        return "infrastructure", exc.render()
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "interrupted (SIGINT) before the run finished"
    return "infrastructure", f"vmtest failed: {type(exc).__name__}: {exc}"


def new_document(kernel: BuiltKernel, scenario: Scenario, accel: str) -> dict[str, Any]:
    spec = kernel.spec
    return document.new(base=spec.base, variant=spec.variant,
                        patches=[p.name for p in spec.patches], scenario=scenario.name,
                        profile=scenario.profile, parameters=scenario.parameters(),
                        accel=accel, kernel_release=kernel.artifact.release,
                        build_key=kernel.artifact.key)


def run_scenario(kernel: BuiltKernel, scenario: Scenario, out_dir: Path, *,
                 accel: str = "auto", boot_timeout_s: float = 120.0,
                 boot: Callable[..., Any] = boot_mod.boot) -> dict[str, Any]:
    """Boot, run, collect; always returns (and writes out_dir/result.json) a document.
    KeyboardInterrupt is re-raised after the document says `interrupted`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = new_document(kernel, scenario, accel)
    doc["artifacts"]["console"] = str(out_dir / "console.log")
    started = time.monotonic()
    try:
        scenario.prepare(kernel)  # a build failure here is this run's, recorded below
        opts = replace(boot_mod.BootOptions(accel=accel, boot_timeout_s=boot_timeout_s,
                                            arch=kernel.spec.arch),
                       **scenario.boot_overrides())
        with boot(kernel.artifact.image, opts, out_dir) as vm:
            doc["identity"]["accel"] = vm.spec.accel
            doc["timings"]["boot_s"] = round(vm.boot_s or 0, 3)
            clock_start = _guest_uptime(vm)
            outcome = scenario.run(vm, out_dir)
            vm.check()
            clock_end = _guest_uptime(vm)
            if (cpu := vm.cpu_seconds()) is not None:
                doc["timings"]["qemu_cpu_s"] = round(cpu, 2)
                doc["timings"]["qemu_wall_s"] = round(time.monotonic() - started, 2)
        doc.update({k: v for k, v in outcome.items() if k not in ("timings", "artifacts")})
        doc["timings"].update(outcome.get("timings", {}))
        doc["artifacts"].update(outcome.get("artifacts", {}))
        ratio = clock_ratio(clock_start, clock_end)
        doc["timings"]["guest_clock_ratio"] = ratio
        problem = clock_problem(ratio)
        if problem:
            document.fail(doc, "infrastructure", problem)
    except KeyboardInterrupt as exc:
        document.fail(doc, *verdict_for(exc))
        raise  # not a measurement: `--resume` runs it again
    except VmtestError as exc:
        document.fail(doc, *verdict_for(exc))
        log.debug("%s: %s", doc["verdict"], exc)
    except Exception as exc:  # a bug of vmtest's: this run is lost, the others are not
        document.fail(doc, *verdict_for(exc))
        log.error("run in %s failed inside vmtest", out_dir, exc_info=True)
    finally:
        doc["timings"]["total_s"] = round(time.monotonic() - started, 3)
        document.write(doc, out_dir / "result.json")
    return doc
