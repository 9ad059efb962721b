"""Scenarios defined as data in an experiment file: a command run in the guest, an
optional setup and built-in load, and metrics read from what the run recorded
(vmtest/collect/metrics.py). No Python from the user: docs/experiments.md.

The run, in order: the trace events the metrics need are checked (a missing one is an
infrastructure error naming it), the setup commands run, a mark goes into the kernel log
(dmesg metrics count what follows it), "before" is read (vmstat, meminfo, files), tracing
and the load start, the command runs (from the experiment file's folder, copied into the
guest), the load stops, "after" is read, dmesg and the trace are saved, and the pure
`outcome()` computes the metrics.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.collect import metrics
from vmtest.collect.metrics import MetricDef, Observations
from vmtest.deadline import Deadline
from vmtest.errors import InfraError, VmtestError
from vmtest.guest import load as load_mod
from vmtest.guest import memory
from vmtest.scenarios import onports
from vmtest.scenarios.base import LOAD_DIED, LOAD_HINT, Scenario

if TYPE_CHECKING:  # annotations only: loading a scenario needs no SSH or QMP
    from vmtest.qemu.machine import Machine

# Where the experiment file's folder is in the guest; the command runs there.
GUEST_DIR = "/root/experiment"
TRACING = "/sys/kernel/tracing"
CMA_LOG = "/tmp/vmtest-cma-load.log"
CMA_PID = "/tmp/vmtest-cma-load.pid"
MARK_COMMAND = f"echo {shlex.quote(metrics.DMESG_MARK)} > /dev/kmsg"


@dataclass(frozen=True)
class MachineOptions:
    """The guest's shape (None: as the scenario or vmtest's default has it). A variant's
    options override its scenario's."""

    memory_mib: int | None = None
    cpus: int | None = None
    numa_nodes: int | None = None  # QEMU -numa nodes, memory and CPUs split evenly
    cma_mib: int | None = None
    slots: int | None = None  # pc-dimm hotplug slots
    maxmem_mib: int | None = None  # memory limit with hotplug

    def over(self, base: MachineOptions) -> MachineOptions:
        """These options, and base's where these have none."""
        return MachineOptions(**{f.name: getattr(self, f.name) if getattr(self, f.name)
                                 is not None else getattr(base, f.name)
                                 for f in dataclasses.fields(self)})

    def boot_overrides(self) -> dict[str, Any]:
        """The BootOptions fields these set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    def to_dict(self) -> dict[str, int]:
        return self.boot_overrides()


@dataclass(frozen=True)
class LruStress:
    """lru-stress on every vCPU (vmtest/guest/stressors/lru-stress.c)."""

    ops: str = "all"
    workers: int = 0  # 0: one per vCPU
    anon_mib: int = 16
    file_mib: int = 16
    burst: int = 14
    pause_us: int = 2000
    refault_ms: int = 0


@dataclass(frozen=True)
class CmaAlloc:
    """Periodic CMA allocations through debugfs while the command runs."""

    mib: int = 16
    period_s: float = 1.0


@dataclass(frozen=True)
class Hotplug:
    """DIMMs hot-added and onlined movable before the command, offlined and removed after."""

    dimm_mib: int = 128
    dimms: int = 1
    offline_timeout_s: float = 20.0


@dataclass(frozen=True)
class LoadSpec:
    """Built-in load beside the command; every part optional."""

    lru_stress: LruStress | None = None
    stress_ng: str = ""  # a stress-ng argument line, e.g. "--vm 1 --vm-bytes 64M"
    fill_mib: int = 0  # tmpfs pages that stay put (movable, shmem)
    cma_alloc: CmaAlloc | None = None
    hotplug: Hotplug | None = None

    @property
    def background(self) -> bool:
        return bool(self.lru_stress or self.stress_ng or self.fill_mib or self.cma_alloc)

    def start_command(self, cpus: int, seed: int) -> str:
        """Fill tmpfs, start each load detached from the SSH session, fail if one did not
        start."""
        parts = []
        if self.fill_mib:
            parts.append(f"dd if=/dev/zero of=/dev/shm/fill bs=1M count={self.fill_mib} "
                         "2>/dev/null")
        if self.lru_stress:
            lru = self.lru_stress
            stress = [load_mod.STRESSOR, "-w", str(lru.workers or cpus), "-o", lru.ops,
                      "-a", str(lru.anon_mib), "-f", str(lru.file_mib), "-b", str(lru.burst),
                      "-p", str(lru.pause_us), "-s", str(seed), "-d", "/dev/shm",
                      "-r", str(lru.refault_ms)]
            parts.append(f"setsid {shlex.join(stress)} > {load_mod.STRESSOR_LOG} 2>&1 "
                         "< /dev/null &")
        if self.stress_ng:
            ng = ["stress-ng", *shlex.split(self.stress_ng), "--timeout", "0"]
            parts.append(f"setsid {shlex.join(ng)} > /tmp/stress-ng.log 2>&1 < /dev/null &")
        if self.cma_alloc:
            pages = self.cma_alloc.mib * 256
            loop = ("A=$(ls -d /sys/kernel/debug/cma/*/ | head -1); while :; do "
                    f"if echo {pages} > ${{A}}alloc 2>/dev/null; then echo {pages} > "
                    "${A}free; echo vmtest-cma ok=1; else echo vmtest-cma ok=0; fi; "
                    f"sleep {self.cma_alloc.period_s}; done")
            parts.append(f"setsid sh -c {shlex.quote(loop)} > {CMA_LOG} 2>&1 < /dev/null & "
                         f"echo $! > {CMA_PID}")
        parts.append("sleep 0.2")
        if self.lru_stress:
            parts.append(load_mod.RUNNING_COMMAND)
        return "\n".join(parts)

    def stop_command(self) -> str:
        parts = [f"[ -f {CMA_PID} ] && kill $(cat {CMA_PID}) 2>/dev/null"] \
            if self.cma_alloc else []
        parts.append(load_mod.STOP_COMMAND)
        return "; ".join(parts)


@dataclass(frozen=True)
class CustomSpec:
    """A scenario as an experiment file defines it (config.py makes it, validated)."""

    name: str
    run: str  # a shell command line for the guest's sh
    metrics: tuple[MetricDef, ...]  # the first is the primary metric
    workdir: Path  # the experiment file's folder: copied to GUEST_DIR, where run runs
    timeout_s: float = 600.0
    setup: tuple[str, ...] = ()
    machine: MachineOptions = field(default_factory=MachineOptions)
    load: LoadSpec = field(default_factory=LoadSpec)
    env: tuple[tuple[str, str], ...] = ()
    description: str = ""

    @property
    def needs_exit_metric(self) -> bool:
        return any(m.source == "exit" for m in self.metrics)


@dataclass(frozen=True)
class CustomParams:
    """What a result document records of a data-defined scenario's run."""

    run: str
    timeout_s: float
    setup: tuple[str, ...]
    machine: dict[str, int]
    load: dict[str, Any]
    env: dict[str, str]
    metrics: tuple[str, ...]
    seed: int = 1
    # The guest this scenario boots (its machine: or vmtest's defaults), named as the
    # built-in scenarios' parameters name it: what the upper stages size by.
    memory_mib: int = 1024
    cma_mib: int = 256
    cpus: int = 2


class CustomScenario(Scenario):
    """A data-defined scenario; `make()` gives each definition a class of its own (its
    name, its progress metric) like the built-in ones have."""

    Params = CustomParams
    PROFILES = {}  # any profile: the command is the same
    spec: CustomSpec

    def __init__(self, spec: CustomSpec, profile: str, seed: int = 1) -> None:
        params = CustomParams(run=spec.run, timeout_s=spec.timeout_s, setup=spec.setup,
                              machine=spec.machine.to_dict(),
                              load=dataclasses.asdict(spec.load), env=dict(spec.env),
                              metrics=tuple(m.name for m in spec.metrics), seed=seed,
                              memory_mib=spec.machine.memory_mib or 1024,
                              cma_mib=256 if spec.machine.cma_mib is None
                              else spec.machine.cma_mib,
                              cpus=spec.machine.cpus or 2)
        super().__init__(params, profile)
        self.spec = spec

    # -- what the other stages ask ---------------------------------------------------
    def boot_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {"copies": ((self.spec.workdir, GUEST_DIR),)}
        if any(m.source == "dmesg" for m in self.spec.metrics):
            # a metric counts kernel messages: a ring that holds thousands of
            # dump_page()s (8 MiB; the kernel's 1 MiB costs ~0.5 s less of a TCG boot,
            # and splats and a wrapped ring are found in it all the same)
            overrides["log_buf_len"] = "8M"
        overrides |= self.spec.machine.boot_overrides()
        if self.spec.load.stress_ng:
            overrides["programs"] = ("stress-ng",)
        return overrides

    def time_limit_s(self) -> float:
        hotplug = self.spec.load.hotplug
        offline = hotplug.dimms * (hotplug.dimm_mib // memory.BLOCK_MIB) * (
            hotplug.offline_timeout_s + 30) if hotplug else 0
        return 300 + 120 * len(self.spec.setup) + self.spec.timeout_s + offline

    # -- the guest part --------------------------------------------------------------
    def run(self, vm: Machine, run_dir: Path) -> dict[str, Any]:
        """The steps of guest_steps() one SSH command each, the DIMMs of `load: hotplug`
        hot-added after "before" and offlined before "after" (from the host, over QMP)."""
        blocks: list[str] = []
        offlined: list[dict[str, Any]] = []
        previous = ""

        def before(step: str) -> None:
            nonlocal blocks, offlined, previous
            if previous == "before":
                blocks = self.hotplug_add(vm)
            if step == "after":
                offlined = self.hotplug_remove(vm, blocks)
            previous = step

        hotplug = self.spec.load.hotplug is not None
        sections = onports.run_over_ssh(vm, self._steps(), run_dir,
                                        before=before if hotplug else None)
        return self.outcome_from(sections, run_dir, offlined)

    # -- the guest part as one script on the ports ------------------------------------
    def guest_steps(self) -> list[onports.Step] | None:
        """The run as steps of one guest script: every data-defined scenario but one
        whose load hot-adds DIMMs (QMP, from the host, between the steps: run())."""
        return None if self.spec.load.hotplug is not None else self._steps()

    def _steps(self) -> list[onports.Step]:
        """The checks, setup, snapshots, load, command and logs, in order."""
        spec = self.spec
        Step = onports.Step
        events = metrics.trace_events(spec.metrics)
        files = metrics.files(spec.metrics)
        steps = []
        if events:
            checks = "; ".join(f"[ -e {TRACING}/events/{e}/enable ] || echo MISSING {e}"
                               for e in events)
            steps.append(Step("events", f'm=$({checks})\n[ -z "$m" ] || {{ echo "$m"; exit 1; }}',
                              timeout_s=30, failure=self._missing_events))
        steps += [Step(f"setup{i}", self.in_workdir(command), save_as="setup.log", own=False,
                       failure=self._setup_failed(command))
                  for i, command in enumerate(spec.setup)]
        steps.append(Step("before", "\n".join(
            [MARK_COMMAND, metrics.snapshot_script(files),
             *([tracing_command(events)] if events else [])])))
        if spec.load.background:
            steps.append(Step("load-start", spec.load.start_command(self.cpus, self.params.seed),
                              timeout_s=300))
        steps.append(Step("command", self.in_workdir(spec.run, env=True),
                          timeout_s=spec.timeout_s, user=True, save_as="stdout.txt"))
        stop_tracing = [f"echo 0 > {TRACING}/tracing_on"] if events else []
        if spec.load.background:
            if spec.load.lru_stress:
                steps.append(Step("load-check", f"{load_mod.RUNNING_COMMAND} || "
                                                f"{{ {load_mod.LOG_COMMAND}; exit 1; }}",
                                  timeout_s=30, failure=self._load_died))
            steps.append(Step("load-stop", "\n".join([*stop_tracing,
                                                      spec.load.stop_command()]),
                              timeout_s=60))
            stop_tracing = []
            if spec.load.cma_alloc:
                steps.append(Step("cma-log", f"cat {CMA_LOG}"))
        steps.append(Step("after", "\n".join([*stop_tracing, metrics.snapshot_script(files)])))
        steps.append(Step("dmesg", "dmesg", save_as="dmesg.txt"))
        if events:
            steps.append(Step("trace", f"cat {TRACING}/trace", save_as="trace.txt"))
        return steps

    def outcome_from(self, sections: onports.Sections, run_dir: Path,
                     offlined: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The outcome from the steps' output and what they saved (stdout.txt,
        stderr.txt, the kernel log, the trace), over the ports or SSH."""
        first = min(s.began for s in sections.values()
                    if not s.name.startswith(("uptime-", "sysctl")))
        command = sections["command"]
        assert command.ended is not None
        timings = {"setup_s": round(command.began - first, 3),
                   "command_s": round(command.ended - command.began, 3)}
        artifacts = {"dmesg": run_dir / "dmesg.txt"}
        if "trace" in sections:
            artifacts["trace"] = run_dir / "trace.txt"
        if not (run_dir / "setup.log").exists():
            (run_dir / "setup.log").write_bytes(b"")
        cma = sections.get("cma-log")
        cma_log = cma.text if cma else ""
        before_text, after_text = sections["before"].text, sections["after"].text
        stdout, stderr = run_dir / "stdout.txt", run_dir / "stderr.txt"
        (run_dir / "snapshots.txt").write_text(f"### before\n{before_text}\n### after\n"
                                               f"{after_text}")
        obs = Observations(stdout=stdout.read_text(errors="replace"),
                           stderr=stderr.read_text(errors="replace"),
                           exit_status=command.status,
                           dmesg=artifacts["dmesg"].read_text(errors="replace"),
                           trace=artifacts["trace"].read_text(errors="replace")
                           if "trace" in artifacts else "",
                           before=metrics.parse_snapshot(before_text),
                           after=metrics.parse_snapshot(after_text))
        outcome = self.outcome(obs)
        if cma_log:
            outcome["load"] = {"cma_allocations": cma_log.count("vmtest-cma "),
                               "cma_allocations_failed": cma_log.count("vmtest-cma ok=0")}
        if offlined:
            outcome["hotplug"] = offlined
        outcome["timings"] = timings
        outcome["artifacts"] = {k: str(v) for k, v in artifacts.items()} | {
            "stdout": str(stdout), "stderr": str(stderr), "setup": str(run_dir / "setup.log"),
            "snapshots": str(run_dir / "snapshots.txt")}
        return outcome

    def _missing_events(self, section: onports.Section) -> VmtestError:
        missing = [line.split(" ", 1)[1] for line in section.text.splitlines()
                   if line.startswith("MISSING ")]
        return metrics.MetricUnavailable(
            f"scenario {self.spec.name}: the guest kernel has no trace event "
            f"{', '.join(missing)}", hint=_EVENTS_HINT)

    def _setup_failed(self, command: str) -> Callable[[onports.Section], VmtestError]:
        def failure(section: onports.Section) -> VmtestError:
            return InfraError(f"scenario {self.spec.name}: setup command failed (exit "
                              f"{section.status}): {command}", log_tail=section.tail())
        return failure

    @staticmethod
    def _load_died(section: onports.Section) -> VmtestError:
        return InfraError(LOAD_DIED, log_tail=section.tail(), hint=LOAD_HINT)

    @property
    def cpus(self) -> int:
        return int(self.params.cpus)

    def in_workdir(self, command: str, env: bool = False) -> str:
        """command run by the guest's sh in the experiment's folder (125: no folder)."""
        lines = [f"cd {GUEST_DIR} || exit 125"]
        if env:
            values = [("VMTEST_SEED", str(self.params.seed)),
                      ("VMTEST_PROFILE", self.profile), *self.spec.env]
            lines.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in values))
        return "\n".join([*lines, command])

    def hotplug_add(self, vm: Machine) -> list[str]:
        """Hot-add the DIMMs, online their blocks movable; the new blocks."""
        hp = self.spec.load.hotplug
        assert hp is not None
        ssh = vm.ssh()
        known = memory.parse_blocks(ssh.check_output(memory.OFFLINE_BLOCKS_COMMAND))
        for d in range(hp.dimms):
            vm.hotplug_dimm(hp.dimm_mib, f"load{d}")
        expect = hp.dimms * (hp.dimm_mib // memory.BLOCK_MIB)
        deadline = Deadline(30)
        while True:
            new = sorted(memory.parse_blocks(ssh.check_output(memory.OFFLINE_BLOCKS_COMMAND))
                         - known, key=memory.block_start_pfn)
            if len(new) >= expect:
                break
            if deadline.expired:
                raise InfraError(f"hot-added memory did not appear in the guest ({len(new)} "
                                 f"of {expect} blocks)")
            self.sleep(0.5)
        ssh.check_output(memory.set_state_command(new, "online_movable"))
        return new

    def hotplug_remove(self, vm: Machine, blocks: list[str]) -> list[dict[str, Any]]:
        """Offline each block with a time bound; the DIMMs stay (a block may not go)."""
        hp = self.spec.load.hotplug
        assert hp is not None
        results = []
        for block in blocks:
            out = vm.ssh().check_output(memory.offline_command(block, hp.offline_timeout_s),
                                        timeout_s=hp.offline_timeout_s + 30)
            fields = memory.parse_offline_result(out)
            results.append({"block": block, "offlined": fields.get("state") == "offline",
                            "seconds": round(float(fields.get("end", 0))
                                             - float(fields.get("start", 0)), 2)})
        return results

    # -- pure --------------------------------------------------------------------------
    def outcome(self, obs: Observations) -> dict[str, Any]:
        """The scenario's part of the result document from what the run recorded."""
        spec = self.spec
        if obs.exit_status not in (0, None) and not spec.needs_exit_metric:
            raise InfraError(f"scenario {spec.name}: the command exited {obs.exit_status}: "
                             f"{spec.run}", log_tail=(obs.stderr or obs.stdout)[-1500:],
                             hint="a command whose status is a result: declare a metric "
                                  "`from: exit`")
        values = metrics.extract_all(spec.metrics, obs)
        from vmtest.collect import dmesg as dmesg_parser  # its patterns compile at import

        report = dmesg_parser.parse(obs.dmesg).to_dict()
        trace = metrics.parse_events(obs.trace) if obs.trace else {"lost": 0}
        return {"metrics": values, "exit_status": obs.exit_status,
                "loss": report["loss"] | {"trace_events_lost": trace["lost"]},
                "splats": report["splats"]}


_EVENTS_HINT = (f"the events it has: ls {TRACING}/events/SUBSYSTEM in the guest "
                "(`vmtest run -- ls ...`); an event may need a kernel option")


def tracing_command(events: tuple[str, ...]) -> str:
    """Trace only these events, from an empty ring."""
    return "; ".join([f"cd {TRACING}", "echo 0 > tracing_on", "echo > trace",
                      "echo 0 > events/enable", "echo 16384 > buffer_size_kb",
                      *(f"echo 1 > events/{e}/enable" for e in events),
                      "echo 1 > tracing_on"])


def scenario_class(spec: CustomSpec) -> type[CustomScenario]:
    """The class of a data-defined scenario: named as the file names it, its first metric
    shown in progress lines (what the catalog's classes say of the built-in ones)."""
    return type(f"CustomScenario[{spec.name}]", (CustomScenario,),
                {"name": spec.name, "PROGRESS_METRICS": (spec.metrics[0].name,),
                 "METRICS": tuple(m.name for m in spec.metrics)})


def make(spec: CustomSpec, profile: str, seed: int = 1) -> CustomScenario:
    """The Scenario of a data-defined scenario."""
    return scenario_class(spec)(spec, profile, seed)
