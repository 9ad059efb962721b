"""cma-stress: the original experiment. CMA allocations through debugfs, one every
period_s, while lru-stress keeps every per-CPU LRU batch busy and a tmpfs fill pushes
movable pages into the CMA area."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

from vmtest.collect import dmesg as dmesg_parser
from vmtest.collect import snapshot, tracefs
from vmtest.errors import ConfigError, InfraError
from vmtest.qemu.machine import Machine
from vmtest.scenarios.base import Scenario, ScenarioParams, elapsed_since, guest_run

_ALLOC_LINE = re.compile(r"^vmtest-alloc i=(\d+) ok=(\d)")


@dataclasses.dataclass(frozen=True)
class CmaStressParams(ScenarioParams):
    count: int = 500
    period_s: float = 5.0
    warmup_s: float = 5.0
    # After each allocation is freed, the load re-faults its working set (SIGUSR1), so the
    # next allocation again finds the load's pages in the CMA area -- without the zap
    # of that refault (mmu_gather references) overlapping the allocation.
    refault_between: bool = True
    stress_ops: str = "activate,deactivate,lazyfree,invalidate,mlock"
    # Sparse bursts with long pauses leave per-CPU batches partly filled for a long
    # time -- the references d479960e44f2 is about (see docs/findings.md).
    stress_pause_us: int = 200000
    fill_mib: int = 560
    alloc_mib: int = 128


class CmaStress(Scenario):
    name = "cma-stress"
    Params = CmaStressParams
    PROFILES = {
        # The original report: ~500 allocations, one every 5 s, under app load.
        "seed": {"count": 500, "period_s": 5.0},
        # CI: the same load, 30 allocations half a second apart.
        "quick": {"count": 30, "period_s": 0.5, "warmup_s": 3.0},
    }

    @classmethod
    def validate(cls, p: CmaStressParams) -> None:
        if p.count < 1:
            raise ConfigError(f"cma-stress: count must be >= 1, got {p.count}")
        if p.period_s <= 0:
            raise ConfigError(f"cma-stress: period_s must be > 0, got {p.period_s}")
        if not 0 < p.alloc_mib <= p.cma_mib:
            raise ConfigError(f"cma-stress: alloc_mib {p.alloc_mib} must be in 1..cma_mib "
                              f"({p.cma_mib})", hint="a CMA allocation cannot exceed the area")
        if p.cma_mib >= p.memory_mib:
            raise ConfigError(f"cma-stress: cma_mib {p.cma_mib} must be below memory_mib "
                              f"{p.memory_mib}")

    def run(self, vm: Machine, run_dir: Path) -> dict[str, Any]:
        p: CmaStressParams = self.params
        self.check_guest(vm, {"/sys/kernel/debug/cma": "CONFIG_CMA_DEBUGFS",
                              "/sys/kernel/mm/cma": "CONFIG_CMA_SYSFS",
                              "/sys/kernel/tracing/events/migrate": "CONFIG_FTRACE"})
        area = vm.ssh().check_output("ls /sys/kernel/debug/cma | head -1").strip()
        if not area:
            raise InfraError("no CMA area in the guest", hint="boot with cma=SIZE")
        timings: dict[str, float] = {}
        before = self.snapshot(vm)
        self.start_tracing(vm)
        started = time.monotonic()
        self.start_load(vm, p, p.cpus)
        time.sleep(p.warmup_s)
        timings["load_start_s"] = elapsed_since(started)
        pages = p.alloc_mib * 256
        script = (
            f"A=/sys/kernel/debug/cma/{area}; i=0; "
            f"while [ $i -lt {p.count} ]; do "
            # Counters and free memory (CmaFree: the occupancy) before and after each.
            + snapshot.step_snapshot_command("pre:$i") + "; "
            f"if echo {pages} > $A/alloc 2>/dev/null; then ok=1; else ok=0; fi; "
            + snapshot.step_snapshot_command("post:$i") + "; "
            f"if [ $ok = 1 ]; then echo {pages} > $A/free; fi; "
            'echo "vmtest-alloc i=$i ok=$ok"; '
            + ("killall -USR1 lru-stress 2>/dev/null; " if p.refault_between else "")
            + f"i=$((i+1)); sleep {p.period_s}; done")
        alloc_log = run_dir / "allocations.log"
        status = guest_run(vm, script, alloc_log,
                           timeout_s=p.count * (p.period_s + 30) + 60)
        timings["allocations_s"] = elapsed_since(started) - timings["load_start_s"]
        self.check_load(vm)
        stressor_log = self.stop_load(vm)
        (run_dir / "lru-stress.log").write_text(stressor_log)
        after = self.snapshot(vm)
        artifacts = self.collect(vm, run_dir)
        if status != 0:
            raise InfraError(f"the allocation loop failed in the guest (exit {status})",
                             log_path=alloc_log)
        alloc_text = alloc_log.read_text()
        allocs = [m for m in (_ALLOC_LINE.match(x) for x in alloc_text.splitlines()) if m]
        report = dmesg_parser.parse(artifacts["dmesg"].read_text(errors="replace"))
        trace = tracefs.parse_trace(artifacts["trace"].read_text(errors="replace"))
        ops = report.ops("alloc_contig_range")
        dumps = report.dumps_by_reason()
        steps = _steps(alloc_text, allocs)
        cma_total_kib = before["meminfo_kib"].get("CmaTotal", p.cma_mib * 1024)
        cma_free = [s["CmaFree_kib_before"] for s in steps if "CmaFree_kib_before" in s]
        metrics = {
            "fail_to_migrate_dumps": dumps.get("fail to migrate", 0),
            "allocations": len(allocs),
            "allocations_ok": sum(1 for m in allocs if m.group(2) == "1"),
            "allocations_failed": sum(1 for m in allocs if m.group(2) == "0"),
            "alloc_contig_range_calls": len(ops),
            "alloc_contig_range_failed": sum(1 for o in ops if o.get("ret") != 0),
            "drains": sum(int(o.get("drains", 0)) for o in ops),
            "migrate_calls": sum(int(o.get("migrate_calls", 0)) for o in ops),
            "migrate_passes": sum(int(o.get("passes", 0)) for o in ops),
            "failed_pages": sum(int(o.get("failed_pages", 0)) for o in ops),
            "distinct_failed_pfns": len({d.pfn for d in report.dumps}),
            "alloc_us_median": _median([int(o.get("us", 0)) for o in ops]),
            # one cma_alloc() call, every range and retry in it (tracefs)
            "cma_alloc_ms_median": (trace.get("cma_alloc_ms") or {}).get("median"),
            "cma_occupancy_median": round(1 - _median(cma_free) / cma_total_kib, 3)
            if cma_free and cma_total_kib else None,
            "cma_alloc_failures_logged": len(report.cma_failures),
            "pages_migrated_per_alloc_median": _median(
                [s["pgmigrate_success"] for s in steps if "pgmigrate_success" in s]),
            "allocations_with_migrate_fail": sum(1 for s in steps
                                                 if s.get("pgmigrate_fail", 0) > 0),
            "vmstat": snapshot.vmstat_delta(before, after),
            "trace": trace,
        }
        return {
            "metrics": metrics,
            "timings": timings,
            "attribution": report.attribution_table(),
            "operations": ops,
            "loss": report.to_dict()["loss"],
            "splats": report.to_dict()["splats"],
            "snapshots": {"before": _slim(before), "after": _slim(after)},
            # One record per allocation: vmstat deltas across it, free memory around it.
            "steps": steps,
            "artifacts": {k: str(v) for k, v in artifacts.items()}
            | {"allocations": str(alloc_log)},
        }


def _steps(alloc_text: str, allocs: list[re.Match[str]]) -> list[dict[str, Any]]:
    snaps = snapshot.parse_step_lines(alloc_text)
    steps = []
    for m in allocs:
        i = m.group(1)
        pre, post = snaps.get(f"pre:{i}"), snaps.get(f"post:{i}")
        step: dict[str, Any] = {"i": int(i), "ok": m.group(2) == "1"}
        if pre and post:
            step |= snapshot.step_delta(pre, post)
        steps.append(step)
    return steps


def _median(values: list[int]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _slim(snap: dict[str, Any]) -> dict[str, Any]:
    keep = ("MemTotal", "MemFree", "CmaTotal", "CmaFree", "Shmem", "AnonPages", "Mlocked")
    return {"meminfo_kib": {k: v for k, v in snap["meminfo_kib"].items() if k in keep},
            "cma_sysfs": snap["cma_sysfs"], "cma_debugfs": snap["cma_debugfs"]}
