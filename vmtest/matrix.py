"""A matrix: kernels x variants x scenarios x repetitions, durable and resumable.

expand() lists the runs, interleaved across variants (A B A B ...) so that drift of the
host hits every variant alike; select() and shard() narrow them; build_kernels() builds
each kernel the runs need once; execute() runs what the store (vmtest/results/store.py)
does not hold yet, `jobs` VMs at a time, each under a watchdog.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

from vmtest.config import Experiment
from vmtest.errors import ConfigError, VmtestError
from vmtest.kernel.build import BuiltKernel, build_kernel
from vmtest.outcome import RunVerdict
from vmtest.qemu import machine
from vmtest.results import document
from vmtest.results.store import Run, Store

log = logging.getLogger(__name__)

# Seconds between the starts of runs when VMs outnumber cores: boots and the scenarios'
# fills are the CPU-hungry phases, and VMs that start together starve each other.
CROWDED_STAGGER_S = 20.0


def expand(exp: Experiment, *, profile: str | None = None,
           repetitions: int | None = None) -> list[Run]:
    """Every run of the matrix, in execution order (interleaved across variants)."""
    m = exp.matrix
    if m is None:
        raise ConfigError(f"{exp.path}: no matrix: section",
                          hint="add matrix: {kernels, variants, scenarios, repetitions}")
    reps = repetitions if repetitions is not None else m.repetitions
    runs = [Run(k, v, sc, rep, profile or m.profile)
            for rep in range(reps) for sc in m.scenarios for k in m.kernels for v in m.variants]
    if not runs:
        raise ConfigError(f"{exp.path}: the matrix expands to no runs")
    return runs


def select(runs: list[Run], exp: Experiment, *,
           scenarios: list[str] | None = None) -> list[Run]:
    """Only the runs of the given scenarios (all when None); names must be in the matrix."""
    if not scenarios:
        return runs
    assert exp.matrix is not None
    unknown = [s for s in scenarios if s not in exp.matrix.scenarios]
    if unknown:
        raise ConfigError(f"{exp.path}: scenario(s) {', '.join(unknown)} not in the matrix",
                          hint=f"available: {', '.join(exp.matrix.scenarios)}")
    return [r for r in runs if r.scenario in scenarios]


def shard(runs: list[Run], spec: str | None) -> list[Run]:
    """`I/N` (1-based): every N-th repetition block starting at I. A block is one
    repetition of one scenario on one kernel with *all* its variants, so a shard compares
    variants on one runner (same host, accelerator and CPU), interleaved as expand()
    orders them; the N shards partition the runs."""
    if not spec:
        return runs
    try:
        index, total = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"bad --shard {spec!r}", hint="use I/N, e.g. 1/4") from None
    if not 1 <= index <= total:
        raise ConfigError(f"bad --shard {spec!r}: I must be in 1..N")
    blocks: dict[tuple[str, str, int], int] = {}
    for r in runs:
        blocks.setdefault((r.kernel, r.scenario, r.repetition), len(blocks))
    return [r for r in runs
            if blocks[(r.kernel, r.scenario, r.repetition)] % total == index - 1]


def stagger_for(jobs: int, cores: int | None = None) -> float:
    """--stagger auto: 0 while every VM has a core, else CROWDED_STAGGER_S."""
    return 0.0 if jobs <= (cores or os.cpu_count() or 1) else CROWDED_STAGGER_S


def available_mib() -> int:
    try:
        return next(int(line.split()[1]) for line in open("/proc/meminfo")
                    if line.startswith("MemAvailable")) // 1024
    except (OSError, StopIteration):
        return 4096


class AutoJobs:
    """`--jobs auto`: as many VMs as what they really use allows. It starts at one VM per
    core; every finished run says what its VM cost (the QEMU process's CPU time over the
    run's wall time, `qemu_cpu_s` / `qemu_wall_s`), and so does every VM still running
    once it is past its boot (`sample()`: its CPU time since it was first seen, over
    that time -- a seed run takes 40 minutes, too long to wait for). While VMs run, the
    parallelism is what they use plus as many more as the cores' spare (to TARGET_BUSY)
    holds at their median duty -- a seed-profile VM, idle ~85 % of its run, lets ~6
    share a core; before any has settled, as many as keep the cores TARGET_BUSY busy at
    the finished runs' median. Bounded by host memory (`limit`), never fewer than one
    per core."""

    TARGET_BUSY = 0.9
    SAMPLE_S = 15.0  # how often execute() samples the live VMs
    SETTLE_S = 90.0  # a live VM's duty counts once it has been watched this long

    def __init__(self, limit: int, cores: int | None = None) -> None:
        self.cores = cores or os.cpu_count() or 1
        self.limit = max(1, limit)
        self.duties: list[float] = []
        self.live: dict[int, float] = {}  # id(machine) -> its duty so far
        self._first_seen: dict[int, tuple[float, float]] = {}  # id -> (time, cpu s)
        self.current = min(self.cores, self.limit)

    def record(self, doc: dict[str, Any]) -> None:
        timings = doc.get("timings", {})
        cpu, wall = timings.get("qemu_cpu_s"), timings.get("qemu_wall_s")
        if isinstance(cpu, (int, float)) and isinstance(wall, (int, float)) and wall > 0:
            self.duties.append(max(cpu / wall, 0.01))
            self._resize()

    def sample(self, machines: Iterable[Any], now: float | None = None) -> None:
        """The duty of each live VM (anything with cpu_seconds()) since it was first
        seen, once it has been watched SETTLE_S: the boot, busier than the run, is
        mostly behind it by then."""
        now = time.monotonic() if now is None else now
        seen = set()
        for vm in machines:
            cpu = vm.cpu_seconds()
            if cpu is None:
                continue
            key = id(vm)
            seen.add(key)
            first = self._first_seen.setdefault(key, (now, cpu))
            if now - first[0] >= self.SETTLE_S:
                self.live[key] = max((cpu - first[1]) / (now - first[0]), 0.01)
        for key in set(self.live) - seen:  # ended: its run's record() has its figure
            del self.live[key]
        for key in set(self._first_seen) - seen:
            del self._first_seen[key]
        self._resize()

    def _resize(self) -> None:
        live = sorted(self.live.values())
        if live:
            # What runs now is what the host carries: as many more start as the cores'
            # spare holds at the median cost of what runs now; a VM not yet watched
            # SETTLE_S (booting, filling) costs a core. The finished runs are left out:
            # another scenario's (a hotplug run's busy minutes) say nothing about these,
            # and a median over both kept 4 seed runs waiting 40 minutes for a slot
            # beside 8 VMs at 16 % of a core.
            duty = live[len(live) // 2]
            booting = len(self._first_seen) - len(live)
            spare = self.cores * self.TARGET_BUSY - sum(live) - booting
            wanted = len(self._first_seen) + math.floor(spare / duty)
        elif self.duties:
            duties = sorted(self.duties)
            wanted = int(self.cores * self.TARGET_BUSY / duties[len(duties) // 2])
        else:
            return
        # never fewer than one per core: a busy VM (TCG) takes one core at most
        self.current = max(min(self.cores, self.limit), min(self.limit, wanted))

    def __call__(self) -> int:
        return self.current


def memory_limit(guest_mib: int, available: int | None = None) -> int:
    """How many guests of guest_mib fit in the host's available memory."""
    return max(1, (available if available is not None else available_mib())
               // (guest_mib + QEMU_OVERHEAD_MIB))


# What a guest costs the host beyond its RAM (QEMU itself, TCG's translation cache).
QEMU_OVERHEAD_MIB = 256


def check_memory(jobs: int, guest_mib: int, runs: int | None = None,
                 available: int | None = None) -> None:
    """Refuse --jobs that cannot fit: as many guests at once as --jobs (or runs, if
    fewer), each its RAM and QEMU's own, beyond what the host has available (the OOM
    killer would pick VMs at random)."""
    at_once = min(jobs, runs) if runs is not None else jobs
    need = at_once * (guest_mib + QEMU_OVERHEAD_MIB)
    have = available_mib() if available is None else available
    if need > have:
        fits = max(1, have // (guest_mib + QEMU_OVERHEAD_MIB))
        raise ConfigError(f"--jobs {jobs}: {at_once} guests at once need about "
                          f"{need / 1024:.1f} GiB ({guest_mib} MiB each, plus QEMU), the host "
                          f"has {have / 1024:.1f} GiB available",
                          hint=f"--jobs {fits} or fewer (--jobs auto picks it)")


RunFn = Callable[[Run, Path], dict[str, Any]]
Built = dict[tuple[str, str], BuiltKernel | VmtestError]


def build_kernels(exp: Experiment, runs: list[Run],
                  on_kernel: Callable[[str, str, BuiltKernel | VmtestError], None]) -> Built:
    """Each (kernel, variant) the runs need, built once (serially: the variants of a
    base share a tree); a failed build is kept as its error, the others go on."""
    built: Built = {}
    for kname, vname in sorted({(r.kernel, r.variant) for r in runs}):
        kdef = exp.kernel(kname)
        try:
            built[(kname, vname)] = build_kernel(kdef.build_spec(kdef.variant(vname)))
        except VmtestError as exc:
            built[(kname, vname)] = exc
        on_kernel(kname, vname, built[(kname, vname)])
    return built


def build_failed_document(run: Run, exp: Experiment, error: VmtestError,
                          out_dir: Path) -> dict[str, Any]:
    """The document of a run whose kernel did not build (written, like every other)."""
    variant = exp.kernel(run.kernel).variant(run.variant)
    doc = document.new(base=run.kernel, variant=run.variant,
                       patches=[p.name for p in variant.series], scenario=run.scenario,
                       profile=run.profile, parameters=dict(exp.scenario(run.scenario).params),
                       accel="none")
    document.fail(doc, RunVerdict.INFRASTRUCTURE, f"kernel build failed: {error.render()}")
    document.write(doc, out_dir / "result.json")
    return doc


def runner(exp: Experiment, built: Built, *, accel: str,
           run_timeout_s: float | None = None) -> RunFn:
    """The function execute() calls per run: the built kernel, the scenario of the
    config with this repetition's seed, a watchdog that stops the VM at the run's time
    limit (the scenario's, unless run_timeout_s)."""
    from vmtest import run as run_mod  # SSH and QMP load when runs do, not with the plan
    from vmtest.qemu import machine

    def run_one(run: Run, run_dir: Path) -> dict[str, Any]:
        kernel = built[(run.kernel, run.variant)]
        if isinstance(kernel, VmtestError):
            return build_failed_document(run, exp, kernel, run_dir)
        sc = exp.scenario(run.scenario)
        # Each repetition its own seed, unless the config pins one.
        scenario = sc.make(run.profile, **({} if "seed" in sc.params
                                           else {"seed": run.repetition + 1}))
        limit = run_timeout_s or scenario.time_limit_s()
        timer = threading.Timer(limit, machine.kill_live, kwargs={"run_dir": run_dir,
                                                                  "reason": "timeout"})
        timer.daemon = True
        timer.start()
        try:
            return run_mod.run_scenario(kernel, scenario, run_dir, accel=accel,
                                        variant=exp.kernel(run.kernel).variant(run.variant))
        finally:
            timer.cancel()

    return run_one


class Until(Protocol):
    """What execute() asks of `until` (sequential.UntilDecided): whether a run is still
    needed, and each finished run."""

    def needed(self, run: Run) -> bool: ...

    def record(self, run: Run, doc: dict[str, Any]) -> None: ...


def execute(runs: list[Run], store: Store, run_fn: RunFn, *, jobs: int | AutoJobs,
            progress: Callable[[Run, dict[str, Any], int, int], None] | None = None,
            stop: threading.Event | None = None,
            on_interrupt: Callable[[], object] | None = None,
            stagger_s: float | None = 0.0,
            until: Until | None = None) -> list[dict[str, Any]]:
    """Run what is not done yet, `jobs` at a time; returns the new documents.

    On Ctrl-C, `on_interrupt` runs *before* the pool waits for its threads (it stops the
    VMs, so they return at once); the runs cut short leave no result and are re-run
    by a resume. `stagger_s` spaces the starts of runs: boots and the scenarios' fills are
    the CPU-hungry phases, and VMs that start together starve each other (None: as
    stagger_for() says for the VMs running at the time). `jobs` may be an AutoJobs,
    which the finished runs resize; `until` leaves out the runs of decided comparisons.
    """
    store.reconcile(runs)
    if until is not None:  # what a resumed matrix holds counts towards its decisions
        for run in runs:
            if store.done(run) and (doc := store.document(run)) is not None:
                until.record(run, doc)
    todo = [r for r in runs if not store.done(r)]
    finished: list[dict[str, Any]] = []
    stop = stop or threading.Event()
    auto = jobs if isinstance(jobs, AutoJobs) else None
    workers = jobs.limit if isinstance(jobs, AutoJobs) else jobs
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vmtest-run") as pool:
        pending: dict[Future[dict[str, Any]], Run] = {}
        queue = list(todo)
        last_start = float("-inf")
        try:
            while queue or pending:
                while queue and len(pending) < (auto() if auto else workers) \
                        and not stop.is_set():
                    if until is not None and not until.needed(queue[0]):
                        queue.pop(0)  # its question is decided: not run
                        continue
                    gap = stagger_s if stagger_s is not None else \
                        stagger_for(len(pending) + 1, auto.cores if auto else None)
                    wait_s = last_start + gap - time.monotonic()
                    if wait_s > 0 and stop.wait(wait_s):
                        break
                    run = queue.pop(0)
                    last_start = time.monotonic()
                    pending[pool.submit(run_fn, run, store.prepare(run))] = run
                if not pending:
                    break
                # --jobs auto: the live VMs are sampled while they run (a seed run is
                # 40 minutes); each wake may start more runs
                done, _ = wait(pending, timeout=auto.SAMPLE_S if auto else None,
                               return_when=FIRST_COMPLETED)
                if auto is not None:
                    auto.sample(machine.live_machines())
                for future in done:
                    run = pending.pop(future)
                    doc = future.result()
                    store.record(run, doc)
                    finished.append(doc)
                    if until is not None:
                        until.record(run, doc)
                    if auto is not None:
                        auto.record(doc)
                    if progress:
                        progress(run, doc, len(finished), len(todo))
        except BaseException:
            stop.set()
            if on_interrupt:
                on_interrupt()
            for future in pending:
                future.cancel()
            raise
    return finished
