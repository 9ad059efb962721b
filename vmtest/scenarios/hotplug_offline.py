"""hotplug-offline: hot-add pc-dimms over QMP, online them movable, fill them under the
stressors, offline every block with a time bound (offline_pages() retries forever),
then device_del and re-add across iterations. Per block: success, duration, and the
instrumentation's drains, migration calls (retries) and failed pages."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.collect import guest, snapshot
from vmtest.deadline import Deadline
from vmtest.errors import ConfigError, InfraError
from vmtest.guest import memory
from vmtest.guest.memory import BLOCK_MIB, MEMORY_SYSFS, block_start_pfn
from vmtest.scenarios.base import Scenario, ScenarioParams

if TYPE_CHECKING:  # annotations only: loading a scenario needs no SSH or QMP
    from vmtest.qemu.machine import Machine


@dataclasses.dataclass(frozen=True)
class HotplugParams(ScenarioParams):
    iterations: int = 3
    dimms: int = 1
    dimm_mib: int = 256
    offline_timeout_s: float = 20.0
    settle_s: float = 3.0  # load runs this long on the new blocks before offlining
    cma_mib: int = 64
    stress_anon_mib: int = 48
    stress_file_mib: int = 48
    fill_mib: int = 128


class HotplugOffline(Scenario):
    name = "hotplug-offline"
    Params = HotplugParams
    PROFILES = {
        "seed": {"iterations": 10, "dimms": 2},
        "quick": {"iterations": 2, "dimms": 1, "settle_s": 2.0},
        # `--profile verdict` of the whole matrix: hotplug's drains are not noisy, quick's
        # runs decide it.
        "verdict": {"iterations": 2, "dimms": 1, "settle_s": 2.0},
    }
    PROGRESS_METRICS = ("drains_per_offline",)
    METRICS = ("blocks", "blocks_offlined", "blocks_timed_out", "offline_seconds_total",
               "drains", "migrate_calls", "drains_per_offline", "drains_all", "failed_pages",
               "hotplug_dumps", "migration_failure_lines")

    @classmethod
    def validate(cls, p: HotplugParams) -> None:
        if p.iterations < 1 or p.dimms < 1:
            raise ConfigError("hotplug-offline: iterations and dimms must be >= 1")
        if p.dimm_mib % BLOCK_MIB or p.dimm_mib <= 0:
            raise ConfigError(f"hotplug-offline: dimm_mib {p.dimm_mib} must be a positive "
                              f"multiple of {BLOCK_MIB} (the x86 memory block size)")
        if p.offline_timeout_s <= 0:
            raise ConfigError("hotplug-offline: offline_timeout_s must be > 0")

    @property
    def blocks_per_dimm(self) -> int:
        return self.params.dimm_mib // BLOCK_MIB

    def boot_overrides(self) -> dict[str, Any]:
        p = self.params
        return super().boot_overrides() | {
                # pc-dimms: on arm64 ACPI's, so the guest boots through UEFI (qemu/boot.py)
                "acpi_hotplug": True,
                "slots": max(4, p.dimms * 2),
                "maxmem_mib": p.memory_mib + p.dimm_mib * p.dimms * 2}

    def time_limit_s(self) -> float:
        p = self.params
        return 300 + p.iterations * p.dimms * self.blocks_per_dimm * (p.offline_timeout_s + 30)

    # -- the guest part ------------------------------------------------------------
    def run(self, vm: Machine, run_dir: Path) -> dict[str, Any]:
        p: HotplugParams = self.params
        guest.check_paths(vm, {MEMORY_SYSFS: "CONFIG_MEMORY_HOTPLUG",
                               "/sys/kernel/tracing/events/migrate": "CONFIG_FTRACE"})
        before = guest.snapshot(vm)
        guest.start_tracing(vm)
        blocks: list[dict[str, Any]] = []
        offline_log = run_dir / "offline.log"
        with offline_log.open("w") as log_out:
            for it in range(p.iterations):
                blocks += self._iteration(vm, it, log_out, start_load=it == 0)
        self.check_load(vm)
        stressor_log = self.stop_load(vm, run_dir)
        after = guest.snapshot(vm)
        artifacts = guest.save_logs(vm, run_dir)
        outcome = self.outcome(blocks, before, after,
                               artifacts["dmesg"].read_text(errors="replace"))
        outcome["artifacts"] = {k: str(v) for k, v in artifacts.items()} | {
            "offline_log": str(offline_log), "lru_stress": str(stressor_log)}
        return outcome

    def _iteration(self, vm: Machine, it: int, log_out: Any,
                   start_load: bool) -> list[dict[str, Any]]:
        """Hot-add, online movable, (start the load,) offline every block, remove what
        went fully offline. Returns one record per block."""
        p: HotplugParams = self.params
        ssh = vm.ssh()
        dimm_ids, new = guest.hot_add(vm, [(p.dimm_mib, f"it{it}d{d}") for d in range(p.dimms)])
        ssh.check_output(memory.set_state_command(new, "online_movable"))
        if start_load:
            self.start_load(vm)
        self.sleep(p.settle_s)
        records = []
        for block in new:
            out = ssh.check_output(self.offline_script(block),
                                   timeout_s=p.offline_timeout_s + 30).strip()
            log_out.write("".join(f"iteration={it} block={block} {line}\n"
                                  for line in out.splitlines()))
            records.append(parse_offline(out, it, block))
        # Remove what went fully offline; a DIMM with an online block stays.
        for d, dimm_id in enumerate(dimm_ids):
            mine = new[d * self.blocks_per_dimm:(d + 1) * self.blocks_per_dimm]
            if all(r["offlined"] for r in records if r["block"] in mine):
                vm.unplug_dimm(dimm_id)
                self._wait_removed(vm, dimm_id)
        return records

    def offline_script(self, block: str) -> str:
        """Offline one block with a time bound, saying how it went and what it cost."""
        p: HotplugParams = self.params
        return (snapshot.step_snapshot_command("pre") + "; "
                + memory.offline_command(block, p.offline_timeout_s) + "; "
                + snapshot.step_snapshot_command("post"))

    @staticmethod
    def _wait_removed(vm: Machine, dimm_id: str, timeout_s: float = 20) -> None:
        deadline = Deadline(timeout_s)
        while not deadline.expired:
            ids = [d.get("data", {}).get("id") for d in vm.memory_devices()]
            if dimm_id not in ids:
                return
            time.sleep(0.2)
        raise InfraError(f"DIMM {dimm_id} was not ejected within {timeout_s} s of device_del",
                         hint="the guest must have offlined all its blocks")

    # -- the pure part -------------------------------------------------------------
    def outcome(self, blocks: list[dict[str, Any]], before: dict[str, Any],
                after: dict[str, Any], dmesg_text: str) -> dict[str, Any]:
        """The scenario's part of the result document: each block's record joined with
        the instrumentation's summary of its offline_pages() call (pure)."""
        # imported here: its ~100 patterns compile at import, which every `vmtest run`
        # would pay before QEMU starts when the config names this scenario
        from vmtest.collect import dmesg as dmesg_parser

        report = dmesg_parser.parse(dmesg_text)
        attach_summaries(blocks, report.ops("offline_pages"))
        done = [r for r in blocks if r.get("summary")]
        metrics = {
            "blocks": len(blocks),
            "blocks_offlined": sum(1 for r in blocks if r["offlined"]),
            "blocks_timed_out": sum(1 for r in blocks if r["timed_out"]),
            "offline_seconds_total": round(sum(r["seconds"] for r in blocks), 2),
            "drains": sum(int(r.get("drains") or 0) for r in done),
            "migrate_calls": sum(int(r.get("migrate_calls") or 0) for r in done),
            "drains_per_offline": round(sum(int(r.get("drains") or 0) for r in done)
                                        / len(done), 2) if done else None,
            # Every task's drains meanwhile (the load's mlock() ones too); absent in logs
            # of kernels built before the instrumentation counted them apart.
            "drains_all": sum(int(r.get("drains_all") or 0) for r in done)
            if any("drains_all" in r for r in done) else None,
            "failed_pages": sum(int(r.get("failed_pages") or 0) for r in done),
            "hotplug_dumps": report.dumps_by_reason().get("fail to migrate (hotplug)", 0),
            "migration_failure_lines": len(report.hotplug_migrate_failures),
            "vmstat": snapshot.vmstat_delta(before, after),
        }
        loss_and_splats = report.to_dict()
        return {
            "metrics": metrics,
            "blocks": blocks,
            "attribution": report.attribution_table(),
            "loss": loss_and_splats["loss"],
            "splats": loss_and_splats["splats"],
        }


def parse_offline(out: str, iteration: int, block: str) -> dict[str, Any]:
    """One block's record from the output of offline_script()."""
    fields = memory.parse_offline_result(out)
    snaps = snapshot.parse_step_lines(out)
    return {
        "iteration": iteration, "block": block,
        "offlined": fields.get("state") == "offline",
        "timed_out": fields.get("rc") == "124",  # timeout(1)'s status
        "seconds": round(float(fields.get("end", 0)) - float(fields.get("start", 0)), 2),
        # vmstat deltas across this block's offlining, free memory around it
        "step": snapshot.step_delta(snaps.get("pre", {}), snaps.get("post", {})),
    }


def attach_summaries(blocks: list[dict[str, Any]], ops: list[dict[str, Any]]) -> None:
    """Match each offline attempt to its offline_pages() summary by pfn range, in order."""
    by_start: dict[int, list[dict[str, Any]]] = {}
    for op in ops:
        by_start.setdefault(int(op["start_pfn"]), []).append(op)
    for r in blocks:
        calls = by_start.get(block_start_pfn(r["block"]), [])
        summary = calls.pop(0) if calls else None
        r["summary"] = summary
        if summary:
            for key in ("drains", "drains_all", "migrate_calls", "passes", "failed_pages",
                        "dumps", "ret"):
                r[key] = summary.get(key)
