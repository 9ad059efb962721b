"""What every scenario shares: parameters with profiles, the guest load, collection."""

from __future__ import annotations

import dataclasses
import logging
import shlex
import time
from pathlib import Path
from typing import Any, ClassVar

from vmtest.collect import snapshot
from vmtest.errors import ConfigError, GuestFailure, InfraError
from vmtest.qemu.machine import Machine

log = logging.getLogger(__name__)

TRACE_EVENTS = ("migrate/mm_migrate_pages", "cma/cma_alloc_start", "cma/cma_alloc_finish",
                "cma/cma_alloc_busy_retry")
# Function-tracer counts: what a kernel without the instrumentation patch still tells.
# Calls made inside mm/swap.c may be inlined and then are invisible to ftrace, so the
# instrumentation's counters stay the primary source (DESIGN.md).
TRACE_FUNCTIONS = ("lru_add_drain_all", "lru_cache_disable", "migrate_pages",
                   "alloc_contig_range", "offline_pages")


@dataclasses.dataclass(frozen=True)
class LoadParams:
    """The in-guest load: lru-stress on every vCPU, a tmpfs fill, optional stress-ng."""

    stress_ops: str = "all"
    stress_workers: int = 0  # 0: one per vCPU
    stress_anon_mib: int = 16
    stress_file_mib: int = 16
    stress_burst: int = 14
    stress_pause_us: int = 2000
    fill_mib: int = 0  # tmpfs pages that stay put (movable, shmem)
    stress_refault_ms: int = 0  # re-fault the whole working set every N ms (0: never)
    stress_ng: str = ""  # extra background load, e.g. "--vm 1 --vm-bytes 64M --vm-keep"
    seed: int = 1
    # Fault injection to test the harness itself: "panic" crashes the guest (sysrq-c)
    # once the load runs.
    fault: str = ""


@dataclasses.dataclass(frozen=True)
class ScenarioParams(LoadParams):
    """The guest every scenario boots, plus its load."""

    memory_mib: int = 1024
    cma_mib: int = 256
    cpus: int = 2


class Scenario:
    name: ClassVar[str] = ""
    Params: ClassVar[type[Any]]
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, params: Any) -> None:
        self.params = params

    # -- parameters ----------------------------------------------------------------
    @classmethod
    def params_for(cls, profile: str, overrides: dict[str, Any]) -> Any:
        if profile not in cls.PROFILES:
            raise ConfigError(f"unknown profile {profile!r} for scenario {cls.name}",
                              hint=f"available: {', '.join(cls.PROFILES)}")
        values = dict(cls.PROFILES[profile])
        fields = {f.name: f for f in dataclasses.fields(cls.Params)}
        for key, value in overrides.items():
            if key not in fields:
                raise ConfigError(f"scenario {cls.name}: unknown parameter {key!r}",
                                  hint=f"parameters: {', '.join(sorted(fields))}")
            values[key] = value
        params = cls.Params(**values)
        cls.validate(params)
        return params

    @classmethod
    def validate(cls, params: Any) -> None:
        """Raise ConfigError naming the bad parameter."""

    def boot_overrides(self) -> dict[str, Any]:
        """BootOptions fields this scenario needs (memory, cma, cpus)."""
        p = self.params
        # A run's dmesg is its primary record: 8 MiB holds thousands of dump_page()s
        # (a wrapped ring is reported as loss).
        return {"memory_mib": p.memory_mib, "cma_mib": p.cma_mib, "cpus": p.cpus,
                "log_buf_len": "8M"}

    def run(self, vm: Machine, run_dir: Path) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared guest steps --------------------------------------------------------
    @staticmethod
    def check_guest(vm: Machine, need: dict[str, str]) -> None:
        """Each path must exist in the guest, else say which kernel option is missing."""
        ssh = vm.ssh()
        script = "; ".join(f"[ -e {shlex.quote(p)} ] || echo MISSING {shlex.quote(p)}"
                           for p in need)
        missing = [line.split(" ", 1)[1] for line in ssh.check_output(script).splitlines()
                   if line.startswith("MISSING ")]
        if missing:
            options = ", ".join(sorted({need[p] for p in missing}))
            raise InfraError(f"the guest kernel lacks {', '.join(missing)}",
                             hint=f"build it with {options} "
                                  "(kernels/fragments/mm-migration.config)")

    @staticmethod
    def snapshot(vm: Machine) -> dict[str, Any]:
        return snapshot.parse_snapshot(vm.ssh().check_output(snapshot.SNAPSHOT_SCRIPT))

    @staticmethod
    def start_tracing(vm: Machine) -> None:
        cmds = ["cd /sys/kernel/tracing", "echo 0 > tracing_on", "echo > trace",
                "echo > set_ftrace_filter",
                "echo 16384 > buffer_size_kb"]
        cmds += [f"[ -e events/{e}/enable ] && echo 1 > events/{e}/enable" for e in TRACE_EVENTS]
        cmds += [f"echo {f} >> set_ftrace_filter" for f in TRACE_FUNCTIONS]
        cmds.append("grep -q . set_ftrace_filter && echo function > current_tracer")
        cmds.append("echo 1 > tracing_on")
        vm.ssh().check_output("; ".join(cmds) + "; true")

    @staticmethod
    def start_load(vm: Machine, load: LoadParams, cpus: int) -> None:
        workers = load.stress_workers or cpus
        parts = []
        if load.fill_mib:
            parts.append(f"dd if=/dev/zero of=/dev/shm/fill bs=1M count={load.fill_mib} "
                         "2>/dev/null")
        stress = ["lru-stress", "-w", str(workers), "-o", load.stress_ops,
                  "-a", str(load.stress_anon_mib), "-f", str(load.stress_file_mib),
                  "-b", str(load.stress_burst), "-p", str(load.stress_pause_us),
                  "-s", str(load.seed), "-d", "/dev/shm", "-r", str(load.stress_refault_ms)]
        parts.append(f"setsid {shlex.join(stress)} > /tmp/lru-stress.log 2>&1 < /dev/null &")
        if load.stress_ng:
            ng = ["stress-ng", *shlex.split(load.stress_ng), "--timeout", "0"]
            parts.append(f"setsid {shlex.join(ng)} > /tmp/stress-ng.log 2>&1 < /dev/null &")
        vm.ssh().check_output("\n".join([*parts, "sleep 0.2", "pidof lru-stress >/dev/null"]),
                              timeout_s=120)
        if load.fault == "panic":
            vm.ssh().run("echo c > /proc/sysrq-trigger", timeout_s=60, watch=vm.check)
            vm.check()

    @staticmethod
    def check_load(vm: Machine) -> None:
        """The stressor must still run: a dead load would make any result meaningless."""
        ssh = vm.ssh()
        if ssh.run("pidof lru-stress >/dev/null", timeout_s=30) != 0:
            log_text = ssh.check_output("cat /tmp/lru-stress.log 2>/dev/null; true")
            raise InfraError("the guest load (lru-stress) died during the scenario",
                             log_tail=log_text[-1500:],
                             hint="lower fill_mib / stress_*_mib (out of memory or tmpfs space?)")

    @staticmethod
    def stop_load(vm: Machine) -> str:
        ssh = vm.ssh()
        ssh.check_output("killall -TERM lru-stress stress-ng 2>/dev/null; "
                         "for i in 1 2 3 4 5 6 7 8 9 10; do pidof lru-stress >/dev/null || "
                         "break; sleep 0.5; done; killall -KILL lru-stress stress-ng "
                         "2>/dev/null; rm -f /dev/shm/fill; true", timeout_s=60)
        return ssh.check_output("cat /tmp/lru-stress.log 2>/dev/null; true")

    @staticmethod
    def collect(vm: Machine, run_dir: Path) -> dict[str, Path]:
        """Save dmesg and the trace as artifacts; return their paths."""
        ssh = vm.ssh()
        artifacts = {}
        dmesg = run_dir / "dmesg.txt"
        with dmesg.open("wb") as out:
            if ssh.run("dmesg", stdout=out, timeout_s=120) != 0:
                raise InfraError("reading dmesg in the guest failed")
        artifacts["dmesg"] = dmesg
        trace = run_dir / "trace.txt"
        with trace.open("wb") as out:
            ssh.run("cat /sys/kernel/tracing/trace 2>/dev/null", stdout=out, timeout_s=120)
        artifacts["trace"] = trace
        return artifacts


def guest_run(vm: Machine, script: str, out_path: Path, timeout_s: float) -> int:
    """Run a long guest script, streaming its output into out_path."""
    with out_path.open("wb") as out:
        return vm.ssh().run(script, stdout=out, stderr=out, timeout_s=timeout_s, watch=vm.check)


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 3)


__all__ = ["GuestFailure", "LoadParams", "Scenario", "ScenarioParams", "guest_run"]
