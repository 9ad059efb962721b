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

log = logging.getLogger(__name__)


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
            outcome = scenario.run(vm, out_dir)
            vm.check()
        doc.update({k: v for k, v in outcome.items() if k != "timings"})
        doc["timings"].update(outcome.get("timings", {}))
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
