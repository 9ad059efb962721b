"""hotplug-offline: hot-add memory, online it movable, fill it under the stressors, take
it away again, across iterations; what the taking away cost.

Two backends (`backend:`):

- `pc-dimm` (the default): ACPI DIMMs added over QMP; every block offlined through sysfs
  with a time bound (offline_pages() retries forever), then device_del. Per block:
  success, duration, and the instrumentation's drains, migration calls (retries) and
  failed pages.
- `virtio-mem`: the guest's virtio-mem device grown by `dimms` x `dimm_mib`, its new
  blocks onlined movable, then shrunk back to 0: the guest's driver unplugs with
  offline_and_remove_memory() and, for what it cannot take a block at a time,
  alloc_contig_range() (drivers/virtio/virtio_mem.c) -- the lru_cache_disable() paths
  of the reference change. Per resize: requested and reached size, time, retries (the
  request made again after the size stood still, unplug_retry_s), and, per shrink, the
  instrumentation's summaries printed between its two marks in the kernel's log."""

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
    from vmtest.kernel.build import BuiltKernel
    from vmtest.qemu.machine import Machine

BACKENDS = ("pc-dimm", "virtio-mem")
# What a pc-dimm run's parameters were before there was a choice: its result documents
# (and so its identity and its recorded transcripts) stay as they were.
VIRTIO_MEM_ONLY = ("backend", "unplug_retry_s")


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
    backend: str = "pc-dimm"  # BACKENDS
    # virtio-mem: ask for the shrink again once the device's size has stood still this
    # long short of it (the guest's own retry timer starts at 50 s).
    unplug_retry_s: float = 10.0


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
               "hotplug_dumps", "fail_to_migrate_dumps", "migration_failure_lines")

    @classmethod
    def validate(cls, p: HotplugParams) -> None:
        if p.iterations < 1 or p.dimms < 1:
            raise ConfigError("hotplug-offline: iterations and dimms must be >= 1")
        if p.dimm_mib % BLOCK_MIB or p.dimm_mib <= 0:
            raise ConfigError(f"hotplug-offline: dimm_mib {p.dimm_mib} must be a positive "
                              f"multiple of {BLOCK_MIB} (the x86 memory block size)")
        if p.offline_timeout_s <= 0:
            raise ConfigError("hotplug-offline: offline_timeout_s must be > 0")
        if p.backend not in BACKENDS:
            raise ConfigError(f"hotplug-offline: parameter backend: unknown {p.backend!r}",
                              hint=f"choices: {', '.join(BACKENDS)}")
        if p.unplug_retry_s <= 0:
            raise ConfigError("hotplug-offline: unplug_retry_s must be > 0")

    def parameters(self) -> dict[str, Any]:
        params = super().parameters()
        if self.params.backend == "pc-dimm":
            for key in VIRTIO_MEM_ONLY:
                del params[key]
        return params

    @property
    def virtio_mem(self) -> bool:
        return bool(self.params.backend == "virtio-mem")

    @property
    def grow_mib(self) -> int:
        """What a virtio-mem iteration adds: what its pc-dimm one would."""
        return int(self.params.dimms * self.params.dimm_mib)

    def kernel_needs(self) -> dict[str, str]:
        from vmtest.kernel import kconfig

        return {kconfig.VIRTIO_MEM: kconfig.VIRTIO_MEM_FRAGMENT} if self.virtio_mem else {}

    def prepare(self, kernel: BuiltKernel) -> None:
        """virtio-mem needs the guest's driver: refuse a kernel built without it before
        it boots (its config is beside it)."""
        if self.virtio_mem:
            from vmtest.kernel import kconfig

            kconfig.check_virtio_mem(kernel.artifact.config,
                                     "hotplug-offline backend virtio-mem")

    @property
    def blocks_per_dimm(self) -> int:
        return self.params.dimm_mib // BLOCK_MIB

    def boot_overrides(self) -> dict[str, Any]:
        p = self.params
        if self.virtio_mem:
            # No ACPI, no firmware: arm64 keeps its device-tree boot.
            return super().boot_overrides() | {
                "virtio_mem_mib": self.grow_mib, "maxmem_mib": p.memory_mib + self.grow_mib}
        return super().boot_overrides() | {
                # pc-dimms: on arm64 ACPI's, so the guest boots through UEFI (qemu/boot.py)
                "acpi_hotplug": True,
                "slots": max(4, p.dimms * 2),
                "maxmem_mib": p.memory_mib + p.dimm_mib * p.dimms * 2}

    def time_limit_s(self) -> float:
        p = self.params
        if self.virtio_mem:  # a grow, then a shrink bounded per block
            return 300 + p.iterations * (self.grow_mib // BLOCK_MIB * p.offline_timeout_s
                                         + p.offline_timeout_s + 90)
        return 300 + p.iterations * p.dimms * self.blocks_per_dimm * (p.offline_timeout_s + 30)

    # -- the guest part ------------------------------------------------------------
    def run(self, vm: Machine, run_dir: Path) -> dict[str, Any]:
        p: HotplugParams = self.params
        guest.check_paths(vm, {MEMORY_SYSFS: "CONFIG_MEMORY_HOTPLUG",
                               "/sys/kernel/tracing/events/migrate": "CONFIG_FTRACE"})
        before = guest.snapshot(vm)
        guest.start_tracing(vm)
        blocks: list[dict[str, Any]] = []
        resizes: list[dict[str, Any]] = []
        offline_log = run_dir / "offline.log"
        with offline_log.open("w") as log_out:
            for it in range(p.iterations):
                if not self.virtio_mem:
                    blocks += self._iteration(vm, it, log_out, start_load=it == 0)
                    continue
                resizes += self._resize_iteration(vm, it, log_out, start_load=it == 0)
                if not resizes[-1]["done"]:
                    break  # the driver is still at the shrink: the next grow would wait
        self.check_load(vm)
        stressor_log = self.stop_load(vm, run_dir)
        after = guest.snapshot(vm)
        artifacts = guest.save_logs(vm, run_dir)
        dmesg_text = artifacts["dmesg"].read_text(errors="replace")
        outcome = self.outcome_resizes(resizes, before, after, dmesg_text) \
            if self.virtio_mem else self.outcome(blocks, before, after, dmesg_text)
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

    def _resize_iteration(self, vm: Machine, it: int, log_out: Any,
                          start_load: bool) -> list[dict[str, Any]]:
        """Grow the virtio-mem device, online its new blocks movable, (start the load,)
        shrink it back to 0 between two marks in the kernel's log. Returns the records
        of the grow and of the shrink."""
        from vmtest.qemu import virtio_mem

        p: HotplugParams = self.params
        ssh = vm.ssh()
        grown, new = guest.grow_virtio_mem(vm, self.grow_mib, p.offline_timeout_s + 30)
        ssh.check_output(memory.set_state_command(new, "online_movable"))
        if start_load:
            self.start_load(vm)
        self.sleep(p.settle_s)
        step = f"it{it}-shrink"
        pre = ssh.check_output(memory.mark_command(step, "begin") + "; "
                               + snapshot.step_snapshot_command("pre"))
        shrunk = virtio_mem.resize(vm, 0, p.offline_timeout_s * len(new),
                                   stall_s=p.unplug_retry_s, sleep=self.sleep)
        # (the device's size reaches 0 before the guest has removed the last emptied
        # block: a block still there at once is not one the shrink left)
        left = sorted(guest.wait_removed(vm, new), key=block_start_pfn)
        post = ssh.check_output(snapshot.step_snapshot_command("post") + "; "
                                + memory.mark_command(step, "end"))
        log_out.write(f"iteration={it} grow requested={grown.requested_mib} "
                      f"reached={grown.reached_mib} seconds={grown.seconds} blocks="
                      f"{','.join(new)}\n"
                      f"iteration={it} shrink requested=0 reached={shrunk.reached_mib} "
                      f"seconds={shrunk.seconds} retries={shrunk.retries} "
                      f"left={','.join(left)}\n")
        return [resize_record(it, "grow", grown, new),
                resize_record(it, "shrink", shrunk, new, left=left, mark=step,
                              pre=pre, post=post)]

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
        log_metrics, log_parts = _from_the_log(report, before, after)
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
            **log_metrics,
        }
        return {
            "metrics": metrics,
            "blocks": blocks,
            **log_parts,
        }

    def outcome_resizes(self, resizes: list[dict[str, Any]], before: dict[str, Any],
                        after: dict[str, Any], dmesg_text: str) -> dict[str, Any]:
        """outcome() of the virtio-mem backend (pure): the same metrics, from the
        resizes and the summaries printed during each shrink. A block is offlined when
        the shrink removed it; drains_per_offline divides the shrinks' drains (their
        offline_pages() and alloc_contig_range() calls alike) by their offline_pages()
        calls, one per block removed."""
        from vmtest.collect import dmesg as dmesg_parser

        report = dmesg_parser.parse(dmesg_text)
        log_metrics, log_parts = _from_the_log(report, before, after)
        attach_shrink_summaries(resizes, report.whole_summaries(),
                                memory.parse_marks(dmesg_text))
        grows = [r for r in resizes if r["direction"] == "grow"]
        shrinks = [r for r in resizes if r["direction"] == "shrink"]
        offlines = sum(r["offline_pages"] for r in shrinks)
        drains = sum(r["drains"] for r in shrinks)
        metrics = {
            "blocks": sum(len(r["blocks"]) for r in grows),
            "blocks_offlined": sum(len(r["blocks"]) - len(r["blocks_left"]) for r in shrinks),
            "blocks_timed_out": sum(len(r["blocks_left"]) for r in shrinks if not r["done"]),
            "offline_seconds_total": round(sum(
                r["seconds"] if r["guest_seconds"] is None else r["guest_seconds"]
                for r in shrinks), 2),
            "drains": drains,
            "migrate_calls": sum(r["migrate_calls"] for r in shrinks),
            "drains_per_offline": round(drains / offlines, 2) if offlines else None,
            "drains_all": sum(r["drains_all"] for r in shrinks)
            if any(r["drains_all"] is not None for r in shrinks) else None,
            "failed_pages": sum(r["failed_pages"] for r in shrinks),
            **log_metrics,
        }
        return {
            "metrics": metrics,
            "resizes": resizes,
            # what only this backend has, over the whole run
            "virtio_mem": {
                "unplug_retries": sum(r["retries"] for r in shrinks),
                "shrinks_done": sum(1 for r in shrinks if r["done"]),
                "shrinks": len(shrinks),
                "grow_seconds_total": round(sum(r["seconds"] for r in grows), 2),
                "offline_pages_calls": offlines,
                "alloc_contig_range_calls": sum(r["alloc_contig_range"] for r in shrinks),
                "failed_calls": sum(r["failed_ops"] for r in shrinks),
            },
            **log_parts,
        }


def _from_the_log(report: Any, before: dict[str, Any], after: dict[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """What either backend reads off the kernel log (a dmesg.DmesgReport) and the
    /proc/vmstat snapshots: the last metrics, and the document's parts after them."""
    loss_and_splats = report.to_dict()
    by_reason = report.dumps_by_reason()
    # "fail to migrate (hotplug)": offline_pages()'s; "fail to migrate": migrate_pages()
    # elsewhere -- virtio-mem's unplug through alloc_contig_range(), a CMA allocation
    return ({"hotplug_dumps": by_reason.get("fail to migrate (hotplug)", 0),
             "fail_to_migrate_dumps": by_reason.get("fail to migrate", 0),
             "migration_failure_lines": len(report.hotplug_migrate_failures),
             "vmstat": snapshot.vmstat_delta(before, after)},
            {"attribution": report.attribution_table(), "loss": loss_and_splats["loss"],
             "splats": loss_and_splats["splats"]})


SUMMARY_KEYS = ("drains", "drains_all", "migrate_calls", "passes", "failed_pages", "dumps")


def resize_record(iteration: int, direction: str, resize: Any, blocks: list[str], *,
                  left: list[str] | None = None, mark: str = "", pre: str = "",
                  post: str = "") -> dict[str, Any]:
    """One virtio-mem resize's record (a qemu.virtio_mem.Resize and the blocks it
    added, or of those what a shrink left)."""
    record: dict[str, Any] = {
        "iteration": iteration, "direction": direction,
        "requested_mib": resize.requested_mib, "reached_mib": resize.reached_mib,
        "done": resize.done, "seconds": resize.seconds, "retries": resize.retries,
        "blocks": blocks}
    if direction == "shrink":
        snaps = snapshot.parse_step_lines(pre + "\n" + post)
        record |= {"blocks_left": left or [], "mark": mark,
                   "step": snapshot.step_delta(snaps.get("pre", {}), snaps.get("post", {}))}
    return record


def attach_shrink_summaries(resizes: list[dict[str, Any]], summaries: list[dict[str, Any]],
                            marks: dict[str, tuple[float, float | None]]) -> None:
    """Each shrink's offline_pages() and alloc_contig_range() summaries: those printed
    between its two marks (a mark's end missing: until the log's end), summed."""
    for r in resizes:
        if r["direction"] != "shrink":
            continue
        begin, end = marks.get(r["mark"], (None, None))
        mine = [] if begin is None else [
            s for s in summaries if s.get("op") in ("offline_pages", "alloc_contig_range")
            and s.get("timestamp") is not None and s["timestamp"] >= begin
            and (end is None or s["timestamp"] <= end)]
        r["marked"] = begin is not None
        # The shrink as the guest's clock saw it, mark to mark (the host's `seconds`
        # waits in polls of 0.2 s): what offline_seconds_total adds up.
        r["guest_seconds"] = round(end - begin, 2) if begin is not None and end is not None \
            else None
        r["offline_pages"] = sum(1 for s in mine if s["op"] == "offline_pages")
        r["alloc_contig_range"] = sum(1 for s in mine if s["op"] == "alloc_contig_range")
        r["failed_ops"] = sum(1 for s in mine if s.get("ret"))
        for key in SUMMARY_KEYS:
            r[key] = sum(int(s.get(key) or 0) for s in mine) \
                if key != "drains_all" or any(key in s for s in mine) else None


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
