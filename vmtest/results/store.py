"""A results directory: matrix.json (which config and profile it belongs to),
index.jsonl (one line per finished run) and runs/<key>/ (each run's result.json and
artifacts).

Each finished run leaves runs/<key>/result.json (written atomically) and one line
appended to index.jsonl; a run that did not finish leaves neither, so a resume re-runs
exactly the runs without a result. result.json is the authority: an index line missing
because the process stopped between the two is added back by reconcile().
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vmtest import paths
from vmtest.config import Experiment
from vmtest.errors import ConfigError, InfraError
from vmtest.results import document

log = logging.getLogger(__name__)

STORE_VERSION = 1


@dataclass(frozen=True)
class Run:
    """One cell of a matrix: where its result lives and what it measures."""

    kernel: str
    variant: str
    scenario: str
    repetition: int
    profile: str

    @property
    def key(self) -> str:
        return f"{self.kernel}__{self.scenario}__{self.variant}__r{self.repetition:03d}"


def report_plan(exp: Experiment) -> dict[str, Any]:
    """What the report needs of the config (the matrix, each scenario's metrics and
    direction), kept in matrix.json: `vmtest report` re-renders a results folder copied
    to another machine, where the config and its patches are not."""
    assert exp.matrix is not None
    return {"config_name": Path(exp.path).name, "matrix": asdict(exp.matrix),
            "scenarios": [{"name": sc.name, "metrics": list(sc.metrics),
                           "lower_is_better": sc.lower_is_better} for sc in exp.scenarios
                          if sc.name in exp.matrix.scenarios]}


def experiment_for_report(root: Path, meta: dict[str, Any]) -> Experiment:
    """The config a results folder was made with, as far as its report needs it: from
    matrix.json's report plan; for a folder written before there was one, its config
    text loaded from a copy (patches named as built-in ones are found), else the
    original file."""
    from vmtest import config

    plan = meta.get("report_plan")
    if isinstance(plan, dict):
        try:
            return Experiment(
                path=Path(str(plan["config_name"])), kernels=(),
                scenarios=tuple(config.ScenarioDef(str(sc["name"]), tuple(sc["metrics"]),
                                                   lower_is_better=bool(sc["lower_is_better"]))
                                for sc in plan["scenarios"]),
                matrix=config.MatrixDef(
                    kernels=tuple(plan["matrix"]["kernels"]),
                    variants=tuple(plan["matrix"]["variants"]),
                    scenarios=tuple(plan["matrix"]["scenarios"]),
                    repetitions=int(plan["matrix"]["repetitions"]),
                    profile=str(plan["matrix"]["profile"])))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{root / 'matrix.json'}: its report plan is damaged ({exc})",
                              hint="re-run `vmtest matrix ... --resume` to rewrite it") from exc
    original = Path(str(meta.get("config", "")))
    text = meta.get("config_text")
    if isinstance(text, str):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / (original.name or "config.yaml")
            copy.write_text(text)
            try:
                exp = config.load(copy)
                return Experiment(path=Path(original.name), kernels=exp.kernels,
                                  scenarios=exp.scenarios, matrix=exp.matrix)
            except ConfigError:
                if not original.is_file():
                    raise
    return config.load(original)


def config_fingerprint(exp: Experiment, profile: str) -> str:
    text = Path(exp.path).read_text()
    return hashlib.sha256(f"{profile}\n{text}".encode()).hexdigest()[:16]


def read_meta(root: Path) -> dict[str, Any]:
    """matrix.json of a results directory, or a ConfigError saying it is not one."""
    meta = document.read(root / "matrix.json")
    if meta is None:
        raise ConfigError(f"{root} is not a vmtest results directory (no readable matrix.json)",
                          hint="pass a directory written by `vmtest matrix`")
    return meta


class Store:
    """A results directory: matrix.json, index.jsonl, runs/<key>/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._owner: int | None = None  # the descriptor holding .lock (claim)

    def has_results(self) -> bool:
        return (self.root / "index.jsonl").exists()

    def claim(self, exp: Experiment, profile: str, *, force: bool,
              expected: list[Run] | None = None) -> None:
        """Pin the directory to this config and profile (refuse another unless force);
        `expected`: every run of the whole matrix (all shards), which merge checks. The
        directory is this process's until it exits: a second matrix on it is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock()
        meta_path = self.root / "matrix.json"
        fingerprint = config_fingerprint(exp, profile)
        if meta_path.exists():
            meta = read_meta(self.root)
            if meta.get("fingerprint") != fingerprint and not force:
                raise ConfigError(
                    f"{self.root} holds results of another config or profile "
                    f"({meta.get('config')}, profile {meta.get('profile')}, fingerprint "
                    f"{meta.get('fingerprint')}; now {fingerprint})",
                    hint="use another --results directory, or --force to mix them")
        meta = {"store_version": STORE_VERSION, "config": str(exp.path), "profile": profile,
                "fingerprint": fingerprint, "config_text": Path(exp.path).read_text(),
                "report_plan": report_plan(exp)}
        if expected is not None:
            meta["expected_runs"] = sorted(r.key for r in expected)
        paths.write_atomic(meta_path, json.dumps(meta, indent=2) + "\n")

    def lock(self) -> None:
        """Make the directory this process's (a second matrix on it is refused) until
        release() or the process's end."""
        if self._owner is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"{self.root} is in use by another vmtest matrix (pid {holder})",
                              hint="wait for it, or give this one another --results") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._owner = fd  # released when the process exits (or release())

    def release(self) -> None:
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None

    def run_dir(self, run: Run) -> Path:
        return self.root / "runs" / run.key

    def done(self, run: Run) -> bool:
        doc = document.read(self.run_dir(run) / "result.json")
        # Infrastructure failures and interrupted runs are not results: a resume
        # retries them.
        return doc is not None and document.Result(doc).verdict.is_result

    def document(self, run: Run) -> dict[str, Any] | None:
        """A run's stored result document, None when there is none (or it is torn)."""
        return document.read(self.run_dir(run) / "result.json")

    def prepare(self, run: Run) -> Path:
        path = self.run_dir(run)
        shutil.rmtree(path, ignore_errors=True)  # leftovers of a run that did not finish
        path.mkdir(parents=True)
        return path

    def record(self, run: Run, doc: dict[str, Any]) -> None:
        self._append({"key": run.key, **asdict(run), "verdict": doc.get("verdict"),
                      "result": str(self.run_dir(run) / "result.json")})

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry) + "\n"
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
                doc = document.read(self.run_dir(run) / "result.json") or {}
                self.record(run, doc)
                added += 1
        return added

    def documents(self) -> list[dict[str, Any]]:
        docs = []
        for path in sorted((self.root / "runs").glob("*/result.json")):
            doc = document.read(path)
            if doc is None:
                log.warning("skipping unreadable %s", path)
            else:
                docs.append(doc)
        return docs


def merge(out: Path, inputs: list[Path], *, force: bool = False) -> int:
    """Combine results directories (the shards of a CI job matrix) into out; returns the
    number of runs copied. Shards must come from one config and profile (unless force),
    must not overlap, and together must hold every run of the matrix (matrix.json's
    expected_runs): a missing or doubled run is an InfraError naming it (a shard that
    died must not leave a green report), unless force."""
    metas = [read_meta(src) for src in inputs]
    if len({m.get("fingerprint") for m in metas}) > 1 and not force:
        raise ConfigError("the inputs come from different configs or profiles",
                          hint="--force merges them anyway")
    sources: dict[str, Path] = {}
    for src in inputs:
        for run_dir in sorted((src / "runs").glob("*")):
            if not (run_dir / "result.json").exists():
                continue
            if run_dir.name in sources or (out / "runs" / run_dir.name).exists():
                raise InfraError(f"run {run_dir.name} is in more than one input "
                                 f"({sources.get(run_dir.name, out)} and {src})",
                                 hint="shards must not overlap: each --shard I/N once")
            sources[run_dir.name] = run_dir
    expected = {key for m in metas for key in m.get("expected_runs") or ()}
    missing = sorted(expected - set(sources))
    if missing and not force:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise InfraError(f"{len(missing)} of {len(expected)} runs are in none of the inputs: "
                         f"{shown}",
                         hint="a shard failed or was not downloaded; `vmtest matrix --shard "
                              "I/N --resume` runs what is missing (--force merges anyway)")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    shutil.copy(inputs[0] / "matrix.json", out / "matrix.json")
    store = Store(out)
    for key, run_dir in sources.items():
        dest = out / "runs" / key
        shutil.copytree(run_dir, dest)
        doc = document.read(dest / "result.json") or {}
        store._append({"key": key, "verdict": doc.get("verdict"),
                       "result": str(dest / "result.json")})
    return len(sources)
