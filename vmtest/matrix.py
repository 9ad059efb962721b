"""`vmtest matrix`: kernels x variants x scenarios x repetitions, durable and resumable.

Runs are interleaved across variants (A B A B ...) so that drift of the host hits every
variant alike. Each finished run leaves runs/<key>/result.json (written atomically) and
one line appended to index.jsonl; a run that did not finish leaves neither, so
`--resume` re-runs exactly the runs without a result. matrix.json pins the config the
directory belongs to: another config is refused unless --force.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vmtest.config import Experiment
from vmtest.errors import ConfigError
from vmtest.results import NOT_RESULTS

log = logging.getLogger(__name__)

STORE_VERSION = 1


@dataclass(frozen=True)
class Run:
    kernel: str
    variant: str
    scenario: str
    repetition: int
    profile: str

    @property
    def key(self) -> str:
        return f"{self.kernel}__{self.scenario}__{self.variant}__r{self.repetition:03d}"


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
    """`I/N` (1-based): every N-th run starting at I; the N shards partition the runs."""
    if not spec:
        return runs
    try:
        index, total = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"bad --shard {spec!r}", hint="use I/N, e.g. 1/4") from None
    if not 1 <= index <= total:
        raise ConfigError(f"bad --shard {spec!r}: I must be in 1..N")
    return [r for i, r in enumerate(runs) if i % total == index - 1]


def config_fingerprint(exp: Experiment, profile: str) -> str:
    text = Path(exp.path).read_text()
    return hashlib.sha256(f"{profile}\n{text}".encode()).hexdigest()[:16]


class Store:
    """A results directory: matrix.json, index.jsonl, runs/<key>/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def claim(self, exp: Experiment, profile: str, *, force: bool) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        meta_path = self.root / "matrix.json"
        fingerprint = config_fingerprint(exp, profile)
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") != fingerprint and not force:
                raise ConfigError(
                    f"{self.root} holds results of another config or profile "
                    f"({meta.get('config')}, profile {meta.get('profile')}, fingerprint "
                    f"{meta.get('fingerprint')}; now {fingerprint})",
                    hint="use another --results directory, or --force to mix them")
        meta = {"store_version": STORE_VERSION, "config": str(exp.path), "profile": profile,
                "fingerprint": fingerprint, "config_text": Path(exp.path).read_text()}
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, meta_path)

    def run_dir(self, run: Run) -> Path:
        return self.root / "runs" / run.key

    def done(self, run: Run) -> bool:
        result = self.run_dir(run) / "result.json"
        if not result.exists():
            return False
        try:
            doc = json.loads(result.read_text())
        except ValueError:
            return False
        # Infrastructure failures and interrupted runs are not results: a resume
        # retries them.
        return doc.get("verdict") not in NOT_RESULTS

    def prepare(self, run: Run) -> Path:
        path = self.run_dir(run)
        shutil.rmtree(path, ignore_errors=True)  # leftovers of a run that did not finish
        path.mkdir(parents=True)
        return path

    def record(self, run: Run, doc: dict[str, Any]) -> None:
        line = json.dumps({"key": run.key, **asdict(run), "verdict": doc.get("verdict"),
                           "result": str(self.run_dir(run) / "result.json")}) + "\n"
        with self._lock:
            fd = os.open(self.root / "index.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())  # one write: a line is there whole or not at all
            finally:
                os.close(fd)

    def indexed(self) -> set[str]:
        path = self.root / "index.jsonl"
        if not path.exists():
            return set()
        keys = set()
        for line in path.read_text().splitlines():
            try:
                keys.add(json.loads(line)["key"])
            except (ValueError, KeyError):
                continue  # a torn last line of a killed process
        return keys

    def reconcile(self, runs: list[Run]) -> int:
        """Index runs whose result.json is there but whose index line is not (the process
        was stopped between the two). result.json is the authority."""
        indexed = self.indexed()
        added = 0
        for run in runs:
            if run.key not in indexed and self.done(run):
                doc = json.loads((self.run_dir(run) / "result.json").read_text())
                self.record(run, doc)
                added += 1
        return added

    def documents(self) -> list[dict[str, Any]]:
        docs = []
        for path in sorted((self.root / "runs").glob("*/result.json")):
            try:
                docs.append(json.loads(path.read_text()))
            except ValueError:
                log.warning("skipping unreadable %s", path)
        return docs


def auto_jobs(memory_mib_per_vm: int = 1536) -> int:
    """Parallel VMs: one per core, bounded by host memory."""
    cores = os.cpu_count() or 1
    try:
        mem_kib = next(int(line.split()[1]) for line in open("/proc/meminfo")
                       if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        mem_kib = 4 << 20
    return max(1, min(cores, mem_kib // 1024 // memory_mib_per_vm))


RunFn = Callable[[Run, Path], dict[str, Any]]


def execute(runs: list[Run], store: Store, run_fn: RunFn, *, jobs: int,
            progress: Callable[[Run, dict[str, Any], int, int], None] | None = None,
            stop: threading.Event | None = None,
            on_interrupt: Callable[[], object] | None = None,
            stagger_s: float = 0.0) -> list[dict[str, Any]]:
    """Run what is not done yet, `jobs` at a time; returns the new documents.

    On Ctrl-C, `on_interrupt` runs *before* the pool waits for its threads (it stops the
    VMs, so they return at once); the runs cut short leave no result and are re-run
    by a resume. `stagger_s` spaces the starts of runs: boots and the scenarios' fills are
    the CPU-hungry phases, and VMs that start together starve each other.
    """
    store.reconcile(runs)
    todo = [r for r in runs if not store.done(r)]
    finished: list[dict[str, Any]] = []
    stop = stop or threading.Event()
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="vmtest-run") as pool:
        pending: dict[Future[dict[str, Any]], Run] = {}
        queue = list(todo)
        last_start = float("-inf")
        try:
            while queue or pending:
                while queue and len(pending) < jobs and not stop.is_set():
                    wait_s = last_start + stagger_s - time.monotonic()
                    if wait_s > 0 and stop.wait(wait_s):
                        break
                    run = queue.pop(0)
                    last_start = time.monotonic()
                    pending[pool.submit(run_fn, run, store.prepare(run))] = run
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    run = pending.pop(future)
                    doc = future.result()
                    store.record(run, doc)
                    finished.append(doc)
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
