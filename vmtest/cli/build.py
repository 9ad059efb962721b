"""`vmtest build`: build (or find in the cache) the kernels the options name."""

from __future__ import annotations

import argparse
import sys
import time

from vmtest.cli.common import (
    Sub,
    add_arch_arg,
    add_kernel_args,
    adhoc_spec,
    specs_from_config,
    uses_config,
    with_arch,
)
from vmtest.errors import EXIT_INFRA, EXIT_OK, VmtestError


def add_parser(sub: Sub) -> None:
    p = sub.add_parser("build", help="build (or find in the cache) a kernel")
    add_kernel_args(p)
    add_arch_arg(p)
    p.add_argument("-j", "--jobs", type=int, default=None, help="make -j (default: all cores)")
    p.add_argument("--force", action="store_true", help="rebuild even on a cache hit")
    p.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    from vmtest.kernel import build as kbuild

    specs = specs_from_config(args) if uses_config(args) else [adhoc_spec(args)]
    specs = [with_arch(spec, args) for spec in specs]
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
            failed += 1
            continue
        elapsed = time.monotonic() - started
        meta = artifact.meta
        print(f"{label}: {artifact.release} {artifact.image}")
        print(f"  key {artifact.key[:24]}; " + (
            f"cache hit in {elapsed:.2f} s (originally built in {meta.get('build_seconds')} s)"
            if artifact.cached else
            f"built in {elapsed:.1f} s (make {meta.get('build_seconds')} s, "
            f"ccache {meta.get('ccache')})"))
    return EXIT_INFRA if failed else EXIT_OK
