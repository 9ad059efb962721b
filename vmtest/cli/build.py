"""`vmtest build`: build (or find in the cache) the kernels the options name."""

from __future__ import annotations

import argparse
import json
import sys
import time

from vmtest import kernel_choice
from vmtest.cli.common import Sub, add_kernel_args, kernel_choice_of
from vmtest.errors import EXIT_INFRA, EXIT_OK, VmtestError


def add_parser(sub: Sub) -> None:
    p = sub.add_parser("build", help="build (or find in the cache) a kernel")
    add_kernel_args(p, kernel_choice.BUILD)
    p.add_argument("-j", "--jobs", type=int, default=None, help="make -j (default: all cores)")
    p.add_argument("--force", action="store_true", help="rebuild even on a cache hit")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per kernel on stdout (kernel, ok, release, "
                        "image, directory, key, cached, seconds, build metadata or error)")
    p.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    from vmtest.kernel import build as kbuild

    specs = kernel_choice_of(args).specs(every=True)
    failed = 0
    for spec in specs:
        started = time.monotonic()
        label = f"{spec.base or spec.source.describe()}/{spec.variant}" + (
            "" if spec.arch == "x86_64" else f" ({spec.arch})")
        try:
            artifact = kbuild.build(spec, jobs=args.jobs, force=args.force)
        except VmtestError as exc:
            # Other variants and everything already built stay usable.
            print(f"{label}: FAILED: {exc.render()}", file=sys.stderr)
            if args.json:
                print(json.dumps({"kernel": label, "ok": False, "error": str(exc),
                                  "exit_code": exc.exit_code}))
            failed += 1
            continue
        elapsed = time.monotonic() - started
        meta = artifact.meta
        if args.json:
            print(json.dumps({"kernel": label, "ok": True, "release": artifact.release,
                              "image": str(artifact.image),
                              "directory": str(artifact.directory), "key": artifact.key,
                              "cached": artifact.cached, "seconds": round(elapsed, 3),
                              "meta": meta}, default=str))
            continue
        print(f"{label}: {artifact.release} {artifact.image}")
        print(f"  key {artifact.key[:24]}; " + (
            f"cache hit in {elapsed:.2f} s (originally built in {meta.get('build_seconds')} s)"
            if artifact.cached else
            f"built in {elapsed:.1f} s (make {meta.get('build_seconds')} s, "
            f"ccache {meta.get('ccache')})"))
    return EXIT_INFRA if failed else EXIT_OK
