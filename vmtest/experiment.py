"""One scenario run on one kernel variant -> one result document."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from vmtest import results, runner, scenarios
from vmtest.config import KernelDef, Variant
from vmtest.errors import GuestFailure, VmtestError
from vmtest.kernel import build as kbuild
from vmtest.qemu.machine import Machine

log = logging.getLogger(__name__)


# How far the guest's clock may drift from the host's over a run before the run is not
# trusted (a TSC calibrated against a starved PIT made one guest's clock run 2x fast).
CLOCK_TOLERANCE = 0.05


def _guest_uptime(vm: Machine) -> tuple[float, float] | None:
    """(host monotonic, guest uptime) read together; None if the guest cannot say."""
    try:
        before = time.monotonic()
        text = vm.ssh().check_output("cat /proc/uptime", timeout_s=30)
        after = time.monotonic()
        return (before + after) / 2, float(text.split()[0])
    except (VmtestError, ValueError, IndexError):
        return None


def clock_ratio(start: tuple[float, float] | None,
                end: tuple[float, float] | None) -> float | None:
    """Guest seconds per host second between two (host, guest) readings."""
    if start is None or end is None or end[0] - start[0] < 5:
        return None
    return round((end[1] - start[1]) / (end[0] - start[0]), 3)


def run_scenario(kernel: KernelDef, variant: Variant, scenario_name: str, profile: str,
                 overrides: dict[str, Any], out_dir: Path, accel: str = "auto",
                 boot_timeout_s: float = 120.0) -> dict[str, Any]:
    """Build (cached), boot, run, collect; always returns (and writes) a document."""
    scenario = scenarios.make(scenario_name, profile, overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = kbuild.build(kernel.build_spec(variant))
    params = dataclasses.asdict(scenario.params)
    doc: dict[str, Any] = {
        "schema": results.SCHEMA,
        "run_id": uuid.uuid4().hex[:12],
        "verdict": "ok",
        "identity": {
            "base": kernel.name, "variant": variant.name,
            "kernel_release": artifact.release, "build_key": artifact.key[:24],
            "patches": [p.name for p in variant.series],
            "scenario": scenario_name, "profile": profile, "parameters": params,
            "seed": int(params.get("seed", 0)), "accel": accel,
        },
        "host": results.host_info(),
        "started_at": results.now(),
        "timings": {}, "metrics": {}, "attribution": [], "splats": [],
        "artifacts": {"console": str(out_dir / "console.log")},
    }
    opts = dataclasses.replace(runner.BootOptions(accel=accel, boot_timeout_s=boot_timeout_s),
                               **scenario.boot_overrides())
    if params.get("stress_ng"):
        opts = dataclasses.replace(opts, programs=("stress-ng",))
    started = time.monotonic()
    try:
        with runner.boot(artifact.image, opts, out_dir) as vm:
            doc["identity"]["accel"] = vm.spec.accel
            doc["timings"]["boot_s"] = round(vm.boot_s or 0, 3)
            clock_start = _guest_uptime(vm)
            outcome = scenario.run(vm, out_dir)
            vm.check()
            clock_end = _guest_uptime(vm)
        doc.update({k: v for k, v in outcome.items() if k != "timings"})
        doc["timings"].update(outcome.get("timings", {}))
        ratio = clock_ratio(clock_start, clock_end)
        doc["timings"]["guest_clock_ratio"] = ratio
        if ratio is not None and abs(ratio - 1) > CLOCK_TOLERANCE:
            # The scenario's periods and timeouts ran on the guest's clock: not the
            # experiment that was asked for. Keep what was measured, but not as a result.
            doc["verdict"] = "infrastructure"
            doc["error"] = (
                f"the guest's clock ran at {ratio:.2f}x host time (TSC calibrated wrong at "
                "boot, see 'tsc: Detected' in dmesg.txt): its periods did not hold, so this "
                "run is not counted\nhint: fewer parallel VMs (--jobs) or a --stagger; "
                "`vmtest matrix --resume` runs it again")
    except GuestFailure as exc:
        doc["verdict"] = exc.verdict
        doc["error"] = exc.render()
        log.debug("%s: %s", exc.verdict, exc)
    except VmtestError as exc:
        doc["verdict"] = "infrastructure"
        doc["error"] = exc.render()
        log.debug("infrastructure failure: %s", exc)
    except KeyboardInterrupt:
        # Not a measurement: the document says so, and `--resume` runs it again.
        doc["verdict"] = "interrupted"
        doc["error"] = "interrupted (SIGINT) before the run finished"
        raise
    finally:
        doc["timings"]["total_s"] = round(time.monotonic() - started, 3)
        doc["finished_at"] = results.now()
        results.write(doc, out_dir / "result.json")
    return doc
