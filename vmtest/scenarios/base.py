"""What every scenario shares: typed parameters with profiles, the guest load, and the
hooks the upper stages ask a scenario about (its boot needs, its time limit, its
headline). Everything scenario-specific lives in the scenario's own module."""

from __future__ import annotations

import dataclasses
import logging
import time
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vmtest.errors import ConfigError, InfraError, VmtestError
from vmtest.guest import load
from vmtest.guest.load import LoadParams

if TYPE_CHECKING:  # annotations only: loading a scenario needs no SSH or QMP
    from vmtest.kernel.build import BuiltKernel
    from vmtest.qemu.machine import Machine
    from vmtest.scenarios.onports import Sections, Step

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ScenarioParams(LoadParams):
    """The guest every scenario boots, plus its load."""

    memory_mib: int = 1024
    cma_mib: int = 256
    cpus: int = 2


def _typed(scenario: str, key: str, value: Any, kind: Any) -> Any:
    """value as the parameter's declared type, or a ConfigError naming key and type."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"scenario {scenario}: parameter {key} must be {kind.__name__}, got "
                          f"{type(value).__name__} {value!r}")
    return value


LOAD_DIED = "the guest load (lru-stress) died during the scenario"
LOAD_HINT = "lower fill_mib / stress_*_mib (out of memory or tmpfs space?)"


class Scenario:
    name: ClassVar[str] = ""
    Params: ClassVar[type[Any]]
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {}
    # What the upper stages print beside a run's verdict.
    PROGRESS_METRICS: ClassVar[tuple[str, ...]] = ()
    # Every number outcome() puts under "metrics" (what a config may name; a typo there
    # is an error on load, not "insufficient data"). tests/unit/test_scenarios.py keeps
    # it equal to what a replayed run produces.
    METRICS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any, profile: str = "") -> None:
        self.params = params
        self.profile = profile

    # -- parameters ----------------------------------------------------------------
    @classmethod
    def params_for(cls, profile: str, overrides: dict[str, Any]) -> Any:
        if profile not in cls.PROFILES:
            raise ConfigError(f"unknown profile {profile!r} for scenario {cls.name}",
                              hint=f"available: {', '.join(cls.PROFILES)}")
        values = dict(cls.PROFILES[profile])
        types = typing.get_type_hints(cls.Params)
        fields = {f.name for f in dataclasses.fields(cls.Params)}
        for key, value in overrides.items():
            if key not in fields:
                raise ConfigError(f"scenario {cls.name}: unknown parameter {key!r}",
                                  hint=f"parameters: {', '.join(sorted(fields))}")
            values[key] = _typed(cls.name, key, value, types[key])
        params = cls.Params(**values)
        if params.fault not in load.FAULTS:
            raise ConfigError(f"scenario {cls.name}: unknown fault {params.fault!r}",
                              hint=f"faults: {', '.join(f for f in load.FAULTS if f)}")
        cls.validate(params)
        return params

    @classmethod
    def validate(cls, params: Any) -> None:
        """Raise ConfigError naming the bad parameter."""

    def parameters(self) -> dict[str, Any]:
        """The parameters as the result document records them."""
        return dataclasses.asdict(self.params)

    # -- what the other stages ask of a scenario -----------------------------------
    def prepare(self, kernel: BuiltKernel) -> None:
        """Before boot: build what the scenario needs from the kernel's tree (kselftest
        builds the tree's selftests). Called again on the same scenario: nothing to do."""

    def kernel_needs(self) -> dict[str, str]:
        """Kernel options this scenario needs beyond vmtest's defaults, each with the
        fragment that turns it on ({CONFIG_X: fragment}): added where vmtest builds the
        kernel for a run (`vmtest run --scenario`), required of an experiment's kernels
        (config.py), checked against a built kernel's config in `prepare`."""
        return {}

    def boot_overrides(self) -> dict[str, Any]:
        """BootOptions fields this scenario needs (memory, cma, cpus)."""
        p = self.params
        # A run's dmesg is its primary record: 8 MiB holds thousands of dump_page()s
        # (a wrapped ring is reported as loss).
        overrides = {"memory_mib": p.memory_mib, "cma_mib": p.cma_mib, "cpus": p.cpus,
                     "log_buf_len": "8M"}
        if p.stress_ng:
            overrides["programs"] = ("stress-ng",)
        return overrides

    def time_limit_s(self) -> float:
        """How long a run may take before the matrix stops it as hung."""
        raise NotImplementedError

    @classmethod
    def headline(cls, comparisons: list[dict[str, Any]], docs: list[dict[str, Any]],
                 baseline: str, candidate: str) -> str:
        """One sentence for the report: the primary metric, baseline -> candidate."""
        return change(comparisons[0], baseline, candidate,
                      f"{comparisons[0]['metric']} (median per run)")

    def run(self, vm: Machine, run_dir: Path) -> dict[str, Any]:
        """Drive the guest; return the scenario's part of the result document."""
        raise NotImplementedError

    def guest_steps(self) -> list[Step] | None:
        """The whole guest part as steps of one script on the ports (scenarios/onports.py),
        when the scenario needs nothing from the host between them: the run then boots
        without sshd or network and ends with `outcome_from`. None: it drives the guest
        from the host (`run`)."""
        return None

    def outcome_from(self, sections: Sections, run_dir: Path) -> dict[str, Any]:
        """The scenario's part of the result document from its steps' output (a run of
        `guest_steps`; their files are saved in run_dir)."""
        raise NotImplementedError

    def partial(self, run_dir: Path) -> dict[str, Any] | None:
        """What a run stopped before its end (interrupted) measured, from the logs it
        saved as it went: kept in its document, which stays not a result. None: nothing
        a scenario can say before its end."""
        return None

    # -- the load ------------------------------------------------------------------
    # Injectable so that a replayed run (vmtest/qemu/fake.py) does not wait.
    sleep = staticmethod(time.sleep)

    def start_load(self, vm: Machine) -> None:
        p = self.params
        vm.ssh().check_output(load.start_command(p, p.cpus), timeout_s=120)
        if p.fault == "panic":
            vm.ssh().run(load.PANIC_COMMAND, timeout_s=60, watch=vm.check)
            vm.check()

    def check_load(self, vm: Machine) -> None:
        """The stressor must still run: a dead load would make any result meaningless."""
        ssh = vm.ssh()
        if ssh.run(load.RUNNING_COMMAND, timeout_s=30) != 0:
            raise InfraError(LOAD_DIED, log_tail=ssh.check_output(load.LOG_COMMAND)[-1500:],
                             hint=LOAD_HINT)

    def stop_load(self, vm: Machine, run_dir: Path) -> Path:
        """Stop the load; its log is saved as lru-stress.log in the run directory."""
        ssh = vm.ssh()
        ssh.check_output(load.STOP_COMMAND, timeout_s=60)
        path = run_dir / "lru-stress.log"
        path.write_text(ssh.check_output(load.LOG_COMMAND))
        return path


def change(comp: dict[str, Any], baseline: str, candidate: str, label: str, *,
           with_n: bool = False) -> str:
    """'LABEL: BASE MEDIAN -> CAND MEDIAN ([n=N+M, ]p=P: VERDICT)' of one comparison."""
    def med(side: dict[str, Any]) -> str:
        return "n/a" if side.get("median") is None else f"{side['median']:g}"

    p = comp.get("p_value")
    n = f"n={comp['baseline']['n']}+{comp['candidate']['n']}, " if with_n else ""
    return (f"{label}: {baseline} {med(comp['baseline'])} -> {candidate} "
            f"{med(comp['candidate'])} ({n}p={'n/a' if p is None else f'{p:.3g}'}: "
            f"{comp['verdict']})")


def guest_run(vm: Machine, script: str, out_path: Path, timeout_s: float,
              stall: StallWatch | None = None) -> int:
    """Run a long guest script, streaming its output into out_path; `stall` watches it
    for a guest that went to sleep on it."""
    with out_path.open("wb") as out:
        watch = vm.check if stall is None else stall.watching(vm, out)
        return vm.ssh().run(script, stdout=out, stderr=out, timeout_s=timeout_s, watch=watch)


# What a stuck guest is waiting on: every user task that is not vmtest's own plumbing,
# with its state, the kernel function it sleeps in and its kernel stack
# (/proc/PID/stack: root only), and the memory picture. Read-only: nothing goes into the
# kernel log (a sysrq-w there would read as splats to the scenario's parser).
STALL_COMMAND = r"""for d in /proc/[0-9]*; do
  read -r stat < $d/stat 2>/dev/null || continue
  cmd=$(tr '\0' ' ' < $d/cmdline 2>/dev/null); [ -n "$cmd" ] || continue
  case "$cmd" in *dropbear*|/init*|*vmtest-stall*) continue;; esac
  rest=${stat##*) }; st=${rest%% *}; rest=${rest#* }; pp=${rest%% *}
  echo "### pid ${d#/proc/} ppid $pp state $st wchan $(cat $d/wchan 2>/dev/null):" \
       "$(echo "$cmd" | head -c 200)"
  cat $d/stack 2>/dev/null
done
echo '### /proc/meminfo'; head -20 /proc/meminfo
echo '### /proc/loadavg'; cat /proc/loadavg
: vmtest-stall"""


def _tasks(report: str) -> list[tuple[int, int, str]]:
    """(pid, ppid, its line without "### ") of each task of a STALL_COMMAND report."""
    tasks = []
    for line in report.splitlines():
        words = line.split(" ", 5)
        if line.startswith("### pid ") and len(words) > 5 and words[2].isdigit() \
                and words[4].isdigit():
            tasks.append((int(words[2]), int(words[4]), line[4:]))
    return tasks


# The init's console command loop (guest/init.sh): vmtest's own, asleep in every report.
CONSOLE_LOOP = "exec </dev/console >/dev/console"


def stuck_tasks(report: str, most: int = 3) -> list[str]:
    """The tasks of a STALL_COMMAND report worth naming: those in D state, else the
    newest leaves (tasks with no child listed: what the others wait for); never the
    init's console loop."""
    tasks = [t for t in _tasks(report) if CONSOLE_LOOP not in t[2]]
    blocked = [t for _, _, t in tasks if " state D " in t]
    if blocked:
        return blocked[:most]
    parents = {ppid for _, ppid, _ in tasks}
    leaves = sorted((t for t in tasks if t[0] not in parents), reverse=True)
    return [t for _, _, t in leaves[:most]]


def _command(task: str) -> str:
    """The command line of a task's line ("pid N ppid P state S wchan W: CMD")."""
    return task.split(": ", 1)[-1]


def leftovers(report: str, markers: tuple[str, ...]) -> list[int]:
    """The tasks a command left behind: orphans (parent 1) started after the command
    (a higher pid than its first task, the first whose command line has one of
    `markers`), and everything below them. Never vmtest's own (the init's console loop
    and sshd come before any command; the report leaves out sshd and the init)."""
    tasks = _tasks(report)
    runner = min((pid for pid, _, line in tasks
                  if any(m in _command(line) for m in markers)), default=None)
    if runner is None:
        return []
    chosen = {pid for pid, ppid, _ in tasks if ppid == 1 and pid > runner}
    grown = True
    while grown:
        below = {pid for pid, ppid, _ in tasks if ppid in chosen} - chosen
        chosen |= below
        grown = bool(below)
    return sorted(chosen)


class StallWatch:
    """A long guest command whose output has stood still for `after_s`. While QEMU used
    (almost) no CPU the guest is asleep on something, not slow: what its tasks wait on is
    saved (STALL_COMMAND over a second SSH session, into `stall-N.txt` beside the output)
    and named in a warning. While it was busy, where its vCPUs are (a spin, or just slow).
    Once per stall; the command goes on (its own time limit decides). `stalls` lists them
    for the result document.

    `reap` (the command lines that mark the command's first task): processes the command
    left behind -- orphans started after it, holding its output pipe open so that the
    command never ends (a test script that exited without killing its background
    writer) -- are ended, and named (`reaped`)."""

    IDLE_CPU_SHARE = 0.05  # QEMU's CPU seconds per second below which the guest sleeps

    def __init__(self, run_dir: Path, after_s: float, reap: tuple[str, ...] = ()) -> None:
        self.run_dir = run_dir
        self.after_s = after_s
        self.reap = reap
        self.stalls: list[dict[str, Any]] = []
        self.clock = time.monotonic

    def watching(self, vm: Machine, out: Any) -> Any:
        """The `watch` of a command whose output goes to the file `out`."""
        last_size, since, cpu_at = -1, self.clock(), vm.cpu_seconds()
        reported = False

        def watch() -> None:
            nonlocal last_size, since, cpu_at, reported
            vm.check()
            size = out.tell()
            now = self.clock()
            if size != last_size:
                last_size, since, cpu_at, reported = size, now, vm.cpu_seconds(), False
                return
            if reported or now - since < self.after_s:
                return
            cpu = vm.cpu_seconds()
            reported = True
            busy = cpu is not None and cpu_at is not None and \
                (cpu - cpu_at) / (now - since) > self.IDLE_CPU_SHARE
            self.stalls.append(self.busy(vm, now - since) if busy
                               else self.report(vm, now - since))

        return watch

    def busy(self, vm: Machine, quiet_s: float) -> dict[str, Any]:
        """Quiet but busy: slow, or spinning (a vCPU in a loop, another task asleep
        waiting for it) -- where the vCPUs are (QMP, the kernel's symbols), and what the
        tasks wait on as for a stall."""
        where = vm.where_are_the_vcpus()
        record = self.report(vm, quiet_s, head=f"the vCPUs busy at: {where}", warn=False)
        log.info("no output for %.0f s, the guest busy; vCPUs at %s; tasks: %s", quiet_s,
                 where, "; ".join(t[:120] for t in record["blocked"]))
        return record | {"busy": True, "vcpus": where}

    def report(self, vm: Machine, quiet_s: float, head: str = "",
               warn: bool = True) -> dict[str, Any]:
        path = self.run_dir / f"stall-{len(self.stalls) + 1}.txt"
        try:
            text = vm.ssh().check_output(STALL_COMMAND, timeout_s=60)
        except VmtestError as exc:  # the guest does not answer either
            text = f"the guest did not answer over SSH: {exc}"
        path.write_text(f"no output for {quiet_s:.0f} s; {head or 'the vCPUs idle'}\n{text}")
        waiting = stuck_tasks(text)
        if warn:
            what = "; ".join(t[:160] for t in waiting) or "no task"
            log.warning("the guest looks stuck: no output for %.0f s and its vCPUs idle; "
                        "waiting: %s (%s)", quiet_s, what, path)
        record: dict[str, Any] = {"quiet_s": round(quiet_s), "blocked": waiting,
                                  "report": str(path)}
        left = leftovers(text, self.reap) if self.reap else []
        if left:
            names = {pid: _command(line) for pid, _, line in _tasks(text)}
            try:
                vm.ssh().check_output(f"kill -9 {' '.join(map(str, left))} 2>/dev/null; :",
                                      timeout_s=30)
            except VmtestError as exc:
                log.warning("ending what the command left behind failed: %s", exc)
            else:
                record["reaped"] = [f"{pid}: {names[pid][:160]}" for pid in left]
                log.warning("ended %d process(es) the command left behind, holding its "
                            "output open: %s", len(left),
                            "; ".join(names[pid][:80] for pid in left))
        return record


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 3)


def median(values: list[int] | list[float]) -> float:
    """The median, 0.0 of nothing (a metric of a run with no such events)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
