"""`vmtest bisect` and `vmtest bisect-step` (the step git bisect run calls)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vmtest.cli.common import Sub, add_accel_arg
from vmtest.kernel import kconfig


def add_parser(sub: Sub) -> None:
    p = sub.add_parser("bisect", help="git bisect a kernel tree on a scenario metric")
    _common(p)
    p.add_argument("--good", required=True)
    p.add_argument("--bad", required=True)
    p.set_defaults(func=cmd_bisect)
    p = sub.add_parser("bisect-step", help="one bisection step (called by git bisect run): "
                                           "exit 0 good, 1 bad, 125 skip")
    _common(p)
    # git bisect run reads 1-127 (but 125) as "bad": a step that fails in vmtest says
    # "skip" (125) instead, never "bad" (vmtest/cli/__init__.py).
    p.set_defaults(func=cmd_bisect_step, failure_status=125)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", required=True, type=Path, help="the git kernel tree")
    p.add_argument("--scenario", required=True, help="cma-stress or hotplug-offline")
    p.add_argument("--profile", default="quick")
    p.add_argument("--metric", required=True, help="result metric to judge, e.g. "
                                                   "fail_to_migrate_dumps")
    p.add_argument("--threshold", required=True, type=float,
                   help="good when metric <= threshold")
    p.add_argument("--patch", action="append", dest="patches", type=Path, default=[],
                   help="patch applied at every step (e.g. instrumentation); repeatable")
    p.add_argument("--fragment", action="append", dest="fragments", default=None)
    add_accel_arg(p)
    p.add_argument("--log-dir", type=Path, default=None)


def cmd_bisect(args: argparse.Namespace) -> int:
    from vmtest import bisect

    step_args = ["--scenario", args.scenario, "--profile", args.profile, "--metric",
                 args.metric, "--threshold", str(args.threshold), "--accel", args.accel]
    for patch in args.patches:
        step_args += ["--patch", str(patch.resolve())]
    for frag in args.fragments or ():
        step_args += ["--fragment", frag]
    if args.log_dir:
        step_args += ["--log-dir", str(args.log_dir.resolve())]
    return bisect.start(args.tree.resolve(), args.good, args.bad, step_args)


def cmd_bisect_step(args: argparse.Namespace) -> int:
    from vmtest import bisect

    return bisect.step(args.tree.resolve(), args.scenario, args.profile, args.metric,
                       args.threshold, [p.resolve() for p in args.patches],
                       list(args.fragments or kconfig.DEFAULT_FRAGMENTS), args.accel,
                       args.log_dir or bisect.default_log_dir())
