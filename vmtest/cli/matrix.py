"""`vmtest matrix`, `vmtest report`, `vmtest merge`: parse, call the matrix / compare /
report stages, show progress, choose the exit code."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest import paths
from vmtest.cli.common import Sub, add_accel_arg, number
from vmtest.errors import (
    EXIT_OK,
    ConfigError,
    VmtestError,
)

if TYPE_CHECKING:
    from vmtest.config import Experiment
    from vmtest.kernel.build import BuiltKernel
    from vmtest.results.store import Run, Store


# The stages load when a command runs, not when the parser is built (`vmtest --version`,
# `vmtest run` do not need YAML, statistics or the report views).
CROWDED_STAGGER_S = 20.0  # vmtest.matrix.CROWDED_STAGGER_S, checked by a unit test


def add_parser(sub: Sub) -> None:
    p = sub.add_parser("matrix", help="run kernels x variants x scenarios x repetitions and "
                                      "compare the variants")
    p.add_argument("config", nargs="?", default=None,
                   help="experiment YAML (default: configs/lru-migration.yaml)")
    p.add_argument("--profile", help="scenario profile (default: the config's, e.g. seed)")
    p.add_argument("--repetitions", type=int, help="override matrix.repetitions")
    p.add_argument("--until-decided", action="store_true",
                   help="add repetitions only until every primary metric is decided at "
                        "--alpha (a sequential test: vmtest/sequential.py), at most "
                        "--max-repetitions")
    p.add_argument("--alpha", type=float, default=0.01,
                   help="error rate for --until-decided (default: %(default)s)")
    p.add_argument("--max-repetitions", type=int, default=16, metavar="N",
                   help="run budget a variant for --until-decided (default: %(default)s)")
    p.add_argument("--results", help="results directory (default: results/<config>-<profile>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted matrix")
    p.add_argument("--force", action="store_true",
                   help="accept a results directory made by another config/profile")
    p.add_argument("--jobs", default="auto",
                   help="parallel VMs (default: auto = one per core to start with, then as "
                        "many as keep the cores busy at what the finished runs' VMs used, "
                        "bounded by memory)")
    p.add_argument("--shard", metavar="I/N", help="run only shard I of N (see vmtest merge)")
    p.add_argument("--stagger", default="auto", metavar="S",
                   help="seconds between the starts of parallel runs (default: auto = 0 "
                        f"when --jobs <= cores, else {CROWDED_STAGGER_S:g}: "
                        "simultaneous boots starve each other)")
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help="run only this scenario of the matrix (repeatable)")
    add_accel_arg(p)
    p.add_argument("--run-timeout", type=float, default=None, metavar="S",
                   help="limit per run (default: from the scenario's parameters)")
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("report", help="re-render the report of a results directory")
    p.add_argument("results", metavar="RESULTS",
                   help="a results folder of `vmtest matrix` (or `vmtest merge`), also one "
                        "copied from another machine: its matrix.json holds what to render")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("merge", help="combine results directories (shards) into one")
    p.add_argument("output", metavar="OUT", help="the merged results folder (new)")
    p.add_argument("inputs", nargs="+", metavar="SHARD",
                   help="the results folders of the shards (--shard I/N) of one matrix")
    p.add_argument("--force", action="store_true", help="merge different configs anyway")
    p.set_defaults(func=cmd_merge)


class Progress:
    """One line per finished run (CI, pipes), or a rich progress bar on a terminal."""

    def __init__(self, exp: Experiment, total: int) -> None:
        self.exp = exp
        self.started = time.monotonic()
        self.bar: Any = None
        if sys.stderr.isatty() and not os.environ.get("CI"):
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task("matrix", total=total)
            self.bar.start()

    def kernel(self, kname: str, vname: str, built: BuiltKernel | VmtestError) -> None:
        if isinstance(built, VmtestError):
            print(f"kernel {kname}/{vname}: FAILED: {built.render()}", file=sys.stderr)
        else:
            how = "cache hit" if built.artifact.cached else "built"
            print(f"kernel {kname}/{vname}: ready ({how})", file=sys.stderr)

    def run_done(self, run: Run, doc: dict[str, Any], done: int, todo: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, description=f"{run.key}: "
                                                                   f"{doc.get('verdict')}")
            return

        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (todo - done)
        shown = self.exp.scenario(run.scenario).scenario_class().PROGRESS_METRICS
        primary = {k: v for k, v in doc.get("metrics", {}).items() if k in shown}
        print(f"[{done}/{todo}] {run.key}: {doc.get('verdict')} {primary} "
              f"({elapsed:.0f} s elapsed, ETA {eta:.0f} s)", file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def cmd_matrix(args: argparse.Namespace) -> int:
    from vmtest import config, matrix

    cfg_path = args.config or str(paths.default_config())
    exp = config.load(cfg_path)
    if exp.matrix is None:
        raise ConfigError(f"{cfg_path}: no matrix: section")
    profile = args.profile or exp.matrix.profile
    fixed_jobs = None if args.jobs == "auto" else number(args.jobs, "--jobs", int)
    until = None
    reps = args.repetitions
    if args.until_decided:
        from vmtest import sequential

        if args.shard:
            raise ConfigError("--until-decided decides on all runs of a comparison: it "
                              "cannot run one shard", hint="drop --shard, or --until-decided")
        until = sequential.UntilDecided(exp, sequential.plan(args.alpha, args.max_repetitions))
        reps = args.max_repetitions
        print(f"matrix: until decided: {until.plan.describe()}", file=sys.stderr)
    every = matrix.select(matrix.expand(exp, profile=profile, repetitions=reps),
                          exp, scenarios=args.scenario)
    runs = matrix.shard(every, args.shard)
    if not runs:
        raise ConfigError(f"shard {args.shard} of {cfg_path} has no runs")
    guest_mib = max(exp.scenario(name).make(profile).params.memory_mib
                    for name in {r.scenario for r in runs})
    jobs: int | matrix.AutoJobs
    if fixed_jobs is None:  # sized by what the VMs really use, as they finish
        jobs = matrix.AutoJobs(min(matrix.memory_limit(guest_mib), len(runs)))
        jobs_text = f"{jobs.current} in parallel to start with (--jobs auto: up to " \
                    f"{jobs.limit} as the runs show what a VM uses)"
        stagger_s: float | None = None if args.stagger == "auto" else \
            number(args.stagger, "--stagger", float)
    else:
        jobs = fixed_jobs
        matrix.check_memory(fixed_jobs, guest_mib, runs=len(runs))
        jobs_text = f"{fixed_jobs} in parallel"
        stagger_s = matrix.stagger_for(fixed_jobs) if args.stagger == "auto" \
            else number(args.stagger, "--stagger", float)
    from vmtest.results.store import Store

    results = Path(args.results or Path("results") / f"{Path(cfg_path).stem}-{profile}")
    store = Store(results)
    store.lock()
    if store.has_results() and not args.resume and not args.force:
        raise ConfigError(f"{results} already holds results",
                          hint="--resume to continue it, or choose another --results")
    store.claim(exp, profile, force=args.force, expected=every)
    print(f"matrix: {len(runs)} runs ({sum(1 for r in runs if store.done(r))} already done), "
          f"{jobs_text}, results in {results}", file=sys.stderr)

    from vmtest.qemu import machine

    progress = Progress(exp, len(runs))
    stop = threading.Event()
    try:
        built = matrix.build_kernels(exp, runs, progress.kernel)
        matrix.execute(runs, store, matrix.runner(exp, built, accel=args.accel,
                                                  run_timeout_s=args.run_timeout),
                       jobs=jobs, progress=progress.run_done, stop=stop,
                       on_interrupt=lambda: machine.kill_live(reason="interrupt"),
                       stagger_s=stagger_s, until=until)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (vmtest.errors.Terminated)
        stop.set()
        progress.stop()
        print("\nvmtest: stopped the running VMs. Finished runs are kept: "
              f"`vmtest matrix {cfg_path} --results {results} --resume` continues.",
              file=sys.stderr)
        raise
    finally:
        progress.stop()
    if until is not None:
        for (kname, scenario), d in sorted(until.decided.items()):
            for variant, r in d["variants"].items():
                print(f"matrix: {kname} {scenario}: {d['metric']} decided for {variant} after "
                      f"{r['runs']} + {r['runs']} runs (p = {r['p_value']:.2g} <= "
                      f"{r['spend']:.2g}, {d['after_s']:.0f} s after the first run started)",
                      file=sys.stderr)
        open_groups = sorted({(r.kernel, r.scenario) for r in runs} - set(until.decided))
        for kname, scenario in open_groups:
            print(f"matrix: {kname} {scenario}: undecided after the budget of "
                  f"{args.max_repetitions} runs a variant", file=sys.stderr)
    return _render(exp, store, results, profile, summary=not args.shard)


def _render(exp: Experiment, store: Store, results: Path, profile: str, *,
            summary: bool = True) -> int:
    from vmtest import compare, report

    data = compare.build(exp, store.documents(), profile)
    print(report.write(results, data, summary=summary))
    print(f"reports: {results}/{', '.join(report.FILES)}", file=sys.stderr)
    if os.environ.get("GITHUB_ACTIONS") == "true" and summary:
        for line in report.github_annotations(data):  # workflow commands: read from stdout
            print(line)
    return compare.exit_code(data)


def cmd_report(args: argparse.Namespace) -> int:
    from vmtest.results import store as store_mod

    results = Path(args.results)
    meta = store_mod.read_meta(results)
    exp = store_mod.experiment_for_report(results, meta)
    if exp.matrix is None:
        raise ConfigError(f"{meta['config']}: no matrix: section")
    return _render(exp, store_mod.Store(results), results, str(meta.get("profile", "")))


def cmd_merge(args: argparse.Namespace) -> int:
    from vmtest.results import store as store_mod

    out = Path(args.output)
    copied = store_mod.merge(out, [Path(src) for src in args.inputs], force=args.force)
    print(f"merged {copied} runs into {out}; `vmtest report {out}` renders them",
          file=sys.stderr)
    return EXIT_OK
