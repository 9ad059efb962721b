"""`vmtest bisect` and `vmtest bisect-step` (the step git bisect run calls)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vmtest.cli.common import Sub, add_accel_arg, number
from vmtest.errors import ConfigError
from vmtest.kernel import kconfig


def add_parser(sub: Sub) -> None:
    p = sub.add_parser("bisect", help="git bisect a kernel tree on a scenario metric")
    _common(p)
    p.add_argument("--good", required=True, help="a commit without the change (--term-old)")
    p.add_argument("--bad", required=True, help="a commit with it (--term-new)")
    p.add_argument("--term-old", metavar="TERM",
                   help="git's name for the --good state (e.g. broken, to find a fix)")
    p.add_argument("--term-new", metavar="TERM",
                   help="git's name for the --bad state (e.g. fixed)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted bisection: its measured endpoints and "
                        "finished steps are not run again")
    p.set_defaults(func=cmd_bisect)
    p = sub.add_parser("bisect-step", help="one bisection step (called by git bisect run): "
                                           "exit 0 good, 1 bad, 125 skip",
                       epilog="exit codes (read by git bisect run): 0 good, 1 bad, 125 skip "
                              "(also every failure of vmtest's own: the commit is skipped, "
                              "never judged bad)")
    _common(p)
    # git bisect run reads 1-127 (but 125) as "bad": a step that fails in vmtest says
    # "skip" (125) instead, never "bad" (vmtest/cli/__init__.py).
    p.set_defaults(func=cmd_bisect_step, failure_status=125)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", required=True, type=Path, help="the git kernel tree")
    p.add_argument("--scenario", required=True,
                   help="cma-stress, hotplug-offline, or a scenario of --config")
    p.add_argument("--profile", default="quick",
                   help="the scenario's profile (default: %(default)s; verdict: more "
                        "allocations a run, for metrics that quick does not separate)")
    p.add_argument("--metric", required=True, help="result metric to judge, e.g. "
                                                   "fail_to_migrate_dumps")
    p.add_argument("--threshold", type=float, default=None,
                   help="the old rule: one run a commit, good when metric <= threshold "
                        "(default: measure the endpoints and classify each commit by runs "
                        "until decided)")
    p.add_argument("--alpha", type=float, default=0.01,
                   help="error rate of each decision (default: %(default)s)")
    p.add_argument("--max-runs", type=int, default=16, metavar="N",
                   help="run budget of each step; the endpoints, once separated, are measured "
                        "on to it as the steps' reference (default: %(default)s)")
    p.add_argument("--crash-is", choices=("skip", "bad"), default="skip",
                   help="a kernel crash or hang is bad only when that is the question "
                        "(default: %(default)s)")
    p.add_argument("--jobs", default="auto", metavar="N|auto",
                   help="runs at once, of the endpoints and of each step (default: "
                        "%(default)s, one VM per core as memory allows)")
    p.add_argument("--patch", action="append", dest="patches", type=Path, default=[],
                   help="patch applied at every step (e.g. instrumentation); repeatable")
    p.add_argument("--fragment", action="append", dest="fragments", default=None,
                   metavar="NAME|PATH",
                   help="config fragment of every step's build (repeatable; default: "
                        "vmtest's)")
    add_accel_arg(p)
    p.add_argument("--log-dir", type=Path, default=None,
                   help="where the endpoints, the steps' runs and the log go (default: a "
                        "folder per bisection under the cache, so --resume finds it)")
    p.add_argument("--config", type=Path, default=None, metavar="YAML",
                   help="an experiment file whose --scenario to measure (built in with its "
                        "params, or defined there as data: docs/experiments.md)")


def cmd_bisect(args: argparse.Namespace) -> int:
    from vmtest import bisect

    if (args.term_old is None) != (args.term_new is None):
        raise ConfigError("--term-old and --term-new go together",
                          hint="e.g. --term-old broken --term-new fixed")
    config = args.config.resolve() if args.config else None
    bisect.check_metric(args.scenario, args.metric, config)  # before any build or VM
    step_args = ["--scenario", args.scenario, "--profile", args.profile, "--metric",
                 args.metric, "--accel", args.accel, "--crash-is", args.crash_is,
                 "--alpha", str(args.alpha), "--max-runs", str(args.max_runs),
                 "--jobs", args.jobs]
    if config is not None:
        step_args += ["--config", str(config)]
    jobs = bisect.jobs_for(_jobs(args), args.scenario, args.profile, config)
    if args.threshold is not None:
        step_args += ["--threshold", str(args.threshold)]
    patches = [p.resolve() for p in args.patches]
    for patch in patches:
        step_args += ["--patch", str(patch)]
    fragments = list(args.fragments or kconfig.DEFAULT_FRAGMENTS)
    for frag in args.fragments or ():
        step_args += ["--fragment", frag]
    tree = args.tree.resolve()
    key = "-".join([tree.name, args.good, args.bad, *([config.stem] if config else []),
                    args.scenario, args.profile, args.metric]).replace("/", "_")
    log_dir = args.log_dir.resolve() if args.log_dir else bisect.default_log_dir(key)
    bisect.check_log_dir(log_dir, args.resume)
    step_args += ["--log-dir", str(log_dir)]

    def measure(good: str, bad: str) -> object:
        return bisect.endpoints_measured(tree, good, bad, args.scenario, args.profile,
                                         args.metric, patches, fragments, args.accel,
                                         log_dir, args.alpha, args.max_runs, jobs, say=_say,
                                         config=config)

    terms = (args.term_old, args.term_new) if args.term_old else None
    return bisect.start(tree, args.good, args.bad, step_args,
                        measure=None if args.threshold is not None else measure, terms=terms,
                        log_dir=log_dir, say=_say)


def cmd_bisect_step(args: argparse.Namespace) -> int:
    from vmtest import bisect

    return bisect.step(args.tree.resolve(), args.scenario, args.profile, args.metric,
                       args.threshold, [p.resolve() for p in args.patches],
                       list(args.fragments or kconfig.DEFAULT_FRAGMENTS), args.accel,
                       args.log_dir or bisect.default_log_dir(), crash_is=args.crash_is,
                       jobs=bisect.jobs_for(_jobs(args), args.scenario, args.profile,
                                            args.config),
                       say=_say, config=args.config).exit_code


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _jobs(args: argparse.Namespace) -> int | None:
    """--jobs: None for auto, else the number."""
    return None if args.jobs == "auto" else int(number(args.jobs, "--jobs", int))
