"""cma-stress: the original experiment. CMA allocations through debugfs, one every
period_s, while lru-stress keeps every per-CPU LRU batch busy and a tmpfs fill pushes
movable pages into the CMA area."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.collect import guest, snapshot, tracefs
from vmtest.errors import ConfigError, InfraError
from vmtest.guest import load, memory
from vmtest.scenarios.base import (
    Scenario,
    ScenarioParams,
    change,
    elapsed_since,
    guest_run,
    median,
)

if TYPE_CHECKING:  # annotations only: loading a scenario needs no SSH or QMP
    from vmtest.qemu.machine import Machine

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
    PROGRESS_METRICS = ("fail_to_migrate_dumps",)
    METRICS = ("fail_to_migrate_dumps", "allocations", "allocations_ok", "allocations_failed",
               "alloc_contig_range_calls", "alloc_contig_range_failed", "drains",
               "migrate_calls", "migrate_passes", "failed_pages", "distinct_failed_pfns",
               "alloc_us_median", "cma_alloc_ms_median", "cma_occupancy_median",
               "cma_alloc_failures_logged", "pages_migrated_per_alloc_median",
               "allocations_with_migrate_fail")
    PROFILES = {
        # The original report: ~500 allocations, one every 5 s, under app load.
        "seed": {"count": 500, "period_s": 5.0},
        # CI: the same load, 30 allocations half a second apart.
        "quick": {"count": 30, "period_s": 0.5, "warmup_s": 3.0},
        # Between them, for `vmtest matrix --until-decided`: three times quick's
        # allocations, so that an unpatched run rarely shows no failed migration at all.
        "verdict": {"count": 90, "period_s": 0.5, "warmup_s": 3.0},
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

    def time_limit_s(self) -> float:
        p = self.params
        return 300 + p.count * (p.period_s + 10)

    @classmethod
    def headline(cls, comparisons: list[dict[str, Any]], docs: list[dict[str, Any]],
                 baseline: str, candidate: str) -> str:
        primary = comparisons[0]
        if primary["metric"] != "fail_to_migrate_dumps":
            return super().headline(comparisons, docs, baseline, candidate)
        allocs = [d["metrics"]["allocations"] for d in docs if d.get("verdict") == "ok"
                  and isinstance(d.get("metrics", {}).get("allocations"), int)]
        per_run = allocs[0] if allocs else 0
        text = change(primary, baseline, candidate, f"'fail to migrate' dumps over {per_run} "
                      "CMA allocations (median per run)", with_n=True)
        busy = next((c for c in comparisons if c["metric"] == "alloc_contig_range_failed"), None)
        if busy is not None:
            text += "; " + change(busy, baseline, candidate,
                                  "alloc_contig_range() EBUSY retries")
        return text

    def run(self, vm: Machine, run_dir: Path) -> dict[str, Any]:
        p: CmaStressParams = self.params
        guest.check_paths(vm, {memory.CMA_DEBUGFS: "CONFIG_CMA_DEBUGFS",
                               memory.CMA_SYSFS: "CONFIG_CMA_SYSFS",
                               "/sys/kernel/tracing/events/migrate": "CONFIG_FTRACE"})
        area = guest.cma_area(vm)
        timings: dict[str, float] = {}
        before = guest.snapshot(vm)
        guest.start_tracing(vm)
        started = time.monotonic()
        self.start_load(vm)
        self.sleep(p.warmup_s)
        timings["load_start_s"] = elapsed_since(started)
        alloc_log = run_dir / "allocations.log"
        status = guest_run(vm, self.allocation_script(area), alloc_log,
                           timeout_s=p.count * (p.period_s + 30) + 60)
        timings["allocations_s"] = elapsed_since(started) - timings["load_start_s"]
        self.check_load(vm)
        stressor_log = self.stop_load(vm, run_dir)
        after = guest.snapshot(vm)
        artifacts = guest.save_logs(vm, run_dir)
        if status != 0:
            raise InfraError(f"the allocation loop failed in the guest (exit {status})",
                             log_path=alloc_log)
        outcome = self.outcome(before, after, alloc_log.read_text(),
                               artifacts["dmesg"].read_text(errors="replace"),
                               artifacts["trace"].read_text(errors="replace"))
        outcome["timings"] = timings
        outcome["artifacts"] = {k: str(v) for k, v in artifacts.items()} | {
            "allocations": str(alloc_log), "lru_stress": str(stressor_log)}
        return outcome

    def allocation_script(self, area: str) -> str:
        """The guest loop: an allocation through CMA debugfs every period_s, counters
        and free memory (CmaFree: the occupancy) printed before and after each."""
        p: CmaStressParams = self.params
        pages = p.alloc_mib * 256
        return (
            f"A={memory.CMA_DEBUGFS}/{area}; i=0; "
            f"while [ $i -lt {p.count} ]; do "
            + snapshot.step_snapshot_command("pre:$i") + "; "
            f"if echo {pages} > $A/alloc 2>/dev/null; then ok=1; else ok=0; fi; "
            + snapshot.step_snapshot_command("post:$i") + "; "
            f"if [ $ok = 1 ]; then echo {pages} > $A/free; fi; "
            'echo "vmtest-alloc i=$i ok=$ok"; '
            + (f"{load.REFAULT_COMMAND}; " if p.refault_between else "")
            + f"i=$((i+1)); sleep {p.period_s}; done")

    def outcome(self, before: dict[str, Any], after: dict[str, Any], alloc_text: str,
                dmesg_text: str, trace_text: str) -> dict[str, Any]:
        """The scenario's part of the result document from what the guest printed
        (pure: recorded guest output in, metrics out)."""
        p: CmaStressParams = self.params
        allocs = [m for m in (_ALLOC_LINE.match(x) for x in alloc_text.splitlines()) if m]
        # imported here: its ~100 patterns compile at import, which every `vmtest run`
        # would pay before QEMU starts when the config names this scenario
        from vmtest.collect import dmesg as dmesg_parser

        report = dmesg_parser.parse(dmesg_text)
        trace = tracefs.parse_trace(trace_text)
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
            "alloc_us_median": median([int(o.get("us", 0)) for o in ops]),
            # one cma_alloc() call, every range and retry in it (tracefs)
            "cma_alloc_ms_median": (trace.get("cma_alloc_ms") or {}).get("median"),
            "cma_occupancy_median": round(1 - median(cma_free) / cma_total_kib, 3)
            if cma_free and cma_total_kib else None,
            "cma_alloc_failures_logged": len(report.cma_failures),
            "pages_migrated_per_alloc_median": median(
                [s["pgmigrate_success"] for s in steps if "pgmigrate_success" in s]),
            "allocations_with_migrate_fail": sum(1 for s in steps
                                                 if s.get("pgmigrate_fail", 0) > 0),
            "vmstat": snapshot.vmstat_delta(before, after),
            "trace": trace,
        }
        loss_and_splats = report.to_dict()
        return {
            "metrics": metrics,
            "attribution": report.attribution_table(),
            "operations": ops,
            "loss": loss_and_splats["loss"],
            "splats": loss_and_splats["splats"],
            "snapshots": {"before": _slim(before), "after": _slim(after)},
            # One record per allocation: vmstat deltas across it, free memory around it.
            "steps": steps,
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


def _slim(snap: dict[str, Any]) -> dict[str, Any]:
    keep = ("MemTotal", "MemFree", "CmaTotal", "CmaFree", "Shmem", "AnonPages", "Mlocked")
    return {"meminfo_kib": {k: v for k, v in snap["meminfo_kib"].items() if k in keep},
            "cma_sysfs": snap["cma_sysfs"], "cma_debugfs": snap["cma_debugfs"]}
