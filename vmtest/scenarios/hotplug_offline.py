"""hotplug-offline: hot-add pc-dimms over QMP, online them movable, fill them under the
stressors, offline every block with a time bound (offline_pages() retries forever),
then device_del and re-add across iterations. Per block: success, duration, and the
instrumentation's drains, migration calls (retries) and failed pages."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from vmtest.collect import dmesg as dmesg_parser
from vmtest.collect import snapshot
from vmtest.deadline import Deadline
from vmtest.errors import ConfigError, InfraError
from vmtest.qemu.machine import Machine
from vmtest.scenarios.base import Scenario, ScenarioParams

MEMORY_SYSFS = "/sys/devices/system/memory"


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
    }

    @classmethod
    def validate(cls, p: HotplugParams) -> None:
        if p.iterations < 1 or p.dimms < 1:
            raise ConfigError("hotplug-offline: iterations and dimms must be >= 1")
        if p.dimm_mib % 128:
            raise ConfigError(f"hotplug-offline: dimm_mib {p.dimm_mib} must be a multiple of "
                              "128 (the x86 memory block size)")
        if p.offline_timeout_s <= 0:
            raise ConfigError("hotplug-offline: offline_timeout_s must be > 0")

    def boot_overrides(self) -> dict[str, Any]:
        p = self.params
        return super().boot_overrides() | {
                "slots": max(4, p.dimms * 2),
                "maxmem_mib": p.memory_mib + p.dimm_mib * p.dimms * 2}

    def _offline_blocks(self, vm: Machine) -> set[str]:
        out = vm.ssh().check_output(f"grep -l offline {MEMORY_SYSFS}/memory*/state || true")
        return {line.rsplit("/", 2)[1] for line in out.split()}

    def _wait_new_blocks(self, vm: Machine, known: set[str], expect: int) -> list[str]:
        deadline = Deadline(30)
        while True:
            new = sorted(self._offline_blocks(vm) - known, key=lambda b: int(b[6:]))
            if len(new) >= expect:
                return new
            if deadline.expired:
                raise InfraError(f"hot-added memory did not appear in the guest ({len(new)} of "
                                 f"{expect} blocks after 30 s)",
                                 hint="CONFIG_ACPI_HOTPLUG_MEMORY / CONFIG_MEMORY_HOTPLUG?")
            time.sleep(0.2)

    def run(self, vm: Machine, run_dir: Path) -> dict[str, Any]:
        p: HotplugParams = self.params
        self.check_guest(vm, {MEMORY_SYSFS: "CONFIG_MEMORY_HOTPLUG",
                              "/sys/kernel/tracing/events/migrate": "CONFIG_FTRACE"})
        ssh = vm.ssh()
        before = self.snapshot(vm)
        self.start_tracing(vm)
        blocks_per_dimm = p.dimm_mib // 128
        results: list[dict[str, Any]] = []
        load_started = False
        offline_log = run_dir / "offline.log"
        with offline_log.open("w") as log_out:
            for it in range(p.iterations):
                known = self._offline_blocks(vm)
                dimm_ids = [vm.hotplug_dimm(p.dimm_mib, f"it{it}d{d}") for d in range(p.dimms)]
                blocks = self._wait_new_blocks(vm, known, blocks_per_dimm * p.dimms)
                ssh.check_output("; ".join(f"echo online_movable > {MEMORY_SYSFS}/{b}/state"
                                           for b in blocks))
                if not load_started:
                    self.start_load(vm, p, p.cpus)
                    load_started = True
                time.sleep(p.settle_s)
                for block in blocks:
                    script = (snapshot.step_snapshot_command("pre") + "; "
                              f"s=$(cut -d' ' -f1 /proc/uptime); "
                              f"timeout {p.offline_timeout_s} sh -c "
                              f"'echo offline > {MEMORY_SYSFS}/{block}/state' 2>/dev/null; "
                              "rc=$?; e=$(cut -d' ' -f1 /proc/uptime); "
                              f"st=$(cat {MEMORY_SYSFS}/{block}/state); "
                              'echo "rc=$rc state=$st start=$s end=$e"; '
                              + snapshot.step_snapshot_command("post"))
                    out = ssh.check_output(script, timeout_s=p.offline_timeout_s + 30).strip()
                    log_out.write("".join(f"iteration={it} block={block} {line}\n"
                                          for line in out.splitlines()))
                    result_line = next((x for x in out.splitlines() if x.startswith("rc=")), "")
                    fields = dict(w.split("=", 1) for w in result_line.split() if "=" in w)
                    snaps = snapshot.parse_step_lines(out)
                    results.append({
                        "iteration": it, "block": block,
                        "offlined": fields.get("state") == "offline",
                        "timed_out": fields.get("rc") == "124",
                        "seconds": round(float(fields.get("end", 0)) -
                                         float(fields.get("start", 0)), 2),
                        # vmstat deltas across this block's offlining, free memory around it
                        "step": snapshot.step_delta(snaps.get("pre", {}),
                                                    snaps.get("post", {})),
                    })
                # Remove what went fully offline; a DIMM with an online block stays.
                for d, dimm_id in enumerate(dimm_ids):
                    mine = blocks[d * blocks_per_dimm:(d + 1) * blocks_per_dimm]
                    if all(r["offlined"] for r in results if r["block"] in mine
                           and r["iteration"] == it):
                        vm.unplug_dimm(dimm_id)
                        self._wait_removed(vm, dimm_id)
        self.check_load(vm)
        stressor_log = self.stop_load(vm)
        (run_dir / "lru-stress.log").write_text(stressor_log)
        after = self.snapshot(vm)
        artifacts = self.collect(vm, run_dir)
        report = dmesg_parser.parse(artifacts["dmesg"].read_text(errors="replace"))
        ops = report.ops("offline_pages")
        # Match each offline attempt to its summary line(s) by pfn range, in order.
        by_start: dict[int, list[dict[str, Any]]] = {}
        for op in ops:
            by_start.setdefault(int(op["start_pfn"]), []).append(op)
        for r in results:
            start_pfn = int(r["block"][6:]) * (128 << 8)
            calls = by_start.get(start_pfn, [])
            summary = calls.pop(0) if calls else None
            r["summary"] = summary
            if summary:
                for key in ("drains", "drains_all", "migrate_calls", "passes", "failed_pages",
                            "dumps", "ret"):
                    r[key] = summary.get(key)
        done = [r for r in results if r.get("summary")]
        metrics = {
            "blocks": len(results),
            "blocks_offlined": sum(1 for r in results if r["offlined"]),
            "blocks_timed_out": sum(1 for r in results if r["timed_out"]),
            "offline_seconds_total": round(sum(r["seconds"] for r in results), 2),
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
        return {
            "metrics": metrics,
            "blocks": results,
            "attribution": report.attribution_table(),
            "loss": report.to_dict()["loss"],
            "splats": report.to_dict()["splats"],
            "artifacts": {k: str(v) for k, v in artifacts.items()}
            | {"offline_log": str(offline_log)},
        }

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
