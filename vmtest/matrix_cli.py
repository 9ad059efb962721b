"""`vmtest matrix`, `vmtest report`, `vmtest merge`: the command-line side of matrix.py."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.errors import ConfigError, VmtestError

if TYPE_CHECKING:  # the heavy modules load only when a matrix command runs
    from vmtest import config, matrix

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("matrix", help="run kernels x variants x scenarios x repetitions and "
                                      "compare the variants")
    p.add_argument("config", nargs="?", default=None,
                   help="experiment YAML (default: configs/lru-migration.yaml)")
    p.add_argument("--profile", help="scenario profile (default: the config's, e.g. seed)")
    p.add_argument("--repetitions", type=int, help="override matrix.repetitions")
    p.add_argument("--results", help="results directory (default: results/<config>-<profile>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted matrix")
    p.add_argument("--force", action="store_true",
                   help="accept a results directory made by another config/profile")
    p.add_argument("--jobs", default="auto", help="parallel VMs (default: auto = cores, "
                                                  "bounded by memory)")
    p.add_argument("--shard", metavar="I/N", help="run only shard I of N (see vmtest merge)")
    p.add_argument("--stagger", default="auto", metavar="S",
                   help="seconds between the starts of parallel runs (default: auto = 0 "
                        "when --jobs <= cores, else 20: simultaneous boots starve each other)")
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help="run only this scenario of the matrix (repeatable)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    p.add_argument("--run-timeout", type=float, default=None, metavar="S",
                   help="limit per run (default: from the scenario's parameters)")
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("report", help="re-render the report of a results directory")
    p.add_argument("results")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("merge", help="combine results directories (shards) into one")
    p.add_argument("output")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--force", action="store_true", help="merge different configs anyway")
    p.set_defaults(func=cmd_merge)


def _default_config() -> str:
    from vmtest import paths

    return str(paths.repo_root() / "configs" / "lru-migration.yaml")


def _progress_printer(total: int) -> Any:
    from vmtest import matrix  # noqa: F401

    started = time.monotonic()
    use_rich = sys.stderr.isatty() and not os.environ.get("CI")
    if use_rich:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        task = bar.add_task("matrix", total=total)
        bar.start()

        def on_done(run: matrix.Run, doc: dict[str, Any], done: int, _total: int) -> None:
            bar.update(task, completed=done, description=f"{run.key}: {doc.get('verdict')}")

        on_done.stop = bar.stop  # type: ignore[attr-defined]
        return on_done

    def on_done_plain(run: matrix.Run, doc: dict[str, Any], done: int, todo: int) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / done * (todo - done)
        primary = {k: v for k, v in doc.get("metrics", {}).items()
                   if k in ("fail_to_migrate_dumps", "drains_per_offline")}
        print(f"[{done}/{todo}] {run.key}: {doc.get('verdict')} {primary} "
              f"({elapsed:.0f} s elapsed, ETA {eta:.0f} s)", file=sys.stderr, flush=True)

    on_done_plain.stop = lambda: None  # type: ignore[attr-defined]
    return on_done_plain


def _run_timeout(exp: config.Experiment, run: matrix.Run) -> float:
    from vmtest import scenarios

    sc = exp.scenario(run.scenario)
    params = scenarios.make(run.scenario, run.profile, dict(sc.params)).params
    if run.scenario == "cma-stress":
        return 300 + params.count * (params.period_s + 10)
    return 300 + params.iterations * params.dimms * (params.dimm_mib // 128) * \
        (params.offline_timeout_s + 30)


def cmd_matrix(args: argparse.Namespace) -> int:
    from vmtest import config, experiment, matrix
    from vmtest.kernel import build as kbuild
    from vmtest.qemu import machine

    cfg_path = args.config or _default_config()
    exp = config.load(cfg_path)
    if exp.matrix is None:
        raise ConfigError(f"{cfg_path}: no matrix: section")
    profile = args.profile or exp.matrix.profile
    runs = matrix.shard(matrix.select(matrix.expand(exp, profile=profile,
                                                    repetitions=args.repetitions),
                                      exp, scenarios=args.scenario), args.shard)
    if not runs:
        raise ConfigError(f"shard {args.shard} of {cfg_path} has no runs")
    results = Path(args.results or Path("results") / f"{Path(cfg_path).stem}-{profile}")
    store = matrix.Store(results)
    if (results / "index.jsonl").exists() and not args.resume and not args.force:
        raise ConfigError(f"{results} already holds results",
                          hint="--resume to continue it, or choose another --results")
    store.claim(exp, profile, force=args.force)
    jobs = matrix.auto_jobs() if args.jobs == "auto" else int(args.jobs)
    if args.stagger == "auto":
        stagger_s = 0.0 if jobs <= (os.cpu_count() or 1) else 20.0
    else:
        stagger_s = float(args.stagger)
    print(f"matrix: {len(runs)} runs ({sum(1 for r in runs if store.done(r))} already done), "
          f"{jobs} in parallel, results in {results}", file=sys.stderr)

    # Build every kernel first (serially: they share a tree per base).
    artifacts: dict[tuple[str, str], kbuild.KernelArtifact | VmtestError] = {}
    for kname, vname in sorted({(r.kernel, r.variant) for r in runs}):
        kdef = exp.kernel(kname)
        try:
            artifacts[(kname, vname)] = kbuild.build(kdef.build_spec(kdef.variant(vname)))
            print(f"kernel {kname}/{vname}: ready", file=sys.stderr)
        except VmtestError as exc:
            artifacts[(kname, vname)] = exc
            print(f"kernel {kname}/{vname}: FAILED: {exc.render()}", file=sys.stderr)

    def run_one(run: matrix.Run, run_dir: Path) -> dict[str, Any]:
        built = artifacts[(run.kernel, run.variant)]
        if isinstance(built, VmtestError):
            doc = {"schema": "vmtest-run/1", "verdict": "infrastructure",
                   "error": f"kernel build failed: {built}", "identity": {
                       "base": run.kernel, "variant": run.variant, "scenario": run.scenario}}
            (run_dir / "result.json").write_text(json.dumps(doc))
            return doc
        kdef = exp.kernel(run.kernel)
        limit = args.run_timeout or _run_timeout(exp, run)
        timer = threading.Timer(limit, machine.kill_live, kwargs={"run_dir": run_dir,
                                                                  "reason": "timeout"})
        timer.daemon = True
        timer.start()
        try:
            overrides = dict(exp.scenario(run.scenario).params)
            overrides.setdefault("seed", run.repetition + 1)
            return experiment.run_scenario(kdef, kdef.variant(run.variant), run.scenario,
                                           run.profile, overrides, run_dir, accel=args.accel)
        finally:
            timer.cancel()

    progress = _progress_printer(len(runs))
    stop = threading.Event()
    try:
        matrix.execute(runs, store, run_one, jobs=jobs, progress=progress, stop=stop,
                       on_interrupt=lambda: machine.kill_live(reason="interrupt"),
                       stagger_s=stagger_s)
    except KeyboardInterrupt:
        stop.set()
        progress.stop()
        print("\nvmtest: interrupted; stopped the running VMs. Finished runs are kept: "
              f"`vmtest matrix {cfg_path} --results {results} --resume` continues.",
              file=sys.stderr)
        return 130
    finally:
        progress.stop()
    return _render(exp, store, results, profile)


def _render(exp: config.Experiment, store: matrix.Store, results: Path, profile: str) -> int:
    from vmtest import report

    docs = store.documents()
    data = report.build(exp, docs, profile)
    md = report.markdown(data)
    (results / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (results / "report.md").write_text(md)
    (results / "report.html").write_text(report.html_page(data))
    (results / "junit.xml").write_text(report.junit(data))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as out:
            out.write(md)
    print(md)
    print(f"reports: {results}/report.md, report.html, report.json, junit.xml", file=sys.stderr)
    if data["regressions"] or data["crashes"]:
        return EXIT_FAIL
    if data["infrastructure_failures"]:
        return EXIT_INFRA
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from vmtest import config, matrix

    results = Path(args.results)
    meta_path = results / "matrix.json"
    if not meta_path.exists():
        raise ConfigError(f"{results} is not a vmtest results directory (no matrix.json)")
    meta = json.loads(meta_path.read_text())
    exp = config.load(meta["config"])
    if exp.matrix is None:
        raise ConfigError(f"{meta['config']}: no matrix: section")
    return _render(exp, matrix.Store(results), results, str(meta.get("profile", "")))


def cmd_merge(args: argparse.Namespace) -> int:
    out = Path(args.output)
    metas = []
    for src in args.inputs:
        meta_path = Path(src) / "matrix.json"
        if not meta_path.exists():
            raise ConfigError(f"{src} is not a vmtest results directory (no matrix.json)")
        metas.append(json.loads(meta_path.read_text()))
    if len({m["fingerprint"] for m in metas}) > 1 and not args.force:
        raise ConfigError("the inputs come from different configs or profiles",
                          hint="--force merges them anyway")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(args.inputs[0]) / "matrix.json", out / "matrix.json")
    copied = 0
    with (out / "index.jsonl").open("a") as index:
        for src in args.inputs:
            for run_dir in sorted((Path(src) / "runs").glob("*")):
                if not (run_dir / "result.json").exists():
                    continue
                dest = out / "runs" / run_dir.name
                if dest.exists():
                    raise ConfigError(f"run {run_dir.name} is in more than one input",
                                      hint="shards must not overlap")
                shutil.copytree(run_dir, dest)
                doc = json.loads((dest / "result.json").read_text())
                index.write(json.dumps({"key": run_dir.name, "verdict": doc.get("verdict"),
                                        "result": str(dest / "result.json")}) + "\n")
                copied += 1
    print(f"merged {copied} runs into {out}; `vmtest report {out}` renders them",
          file=sys.stderr)
    return EXIT_OK
