"""The command line: one module per command (parse arguments, call one stage, print).
The only place that prints errors and chooses exit codes (vmtest/errors.py defines them)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vmtest import __version__
from vmtest.errors import EXIT_INTERRUPTED, VmtestError


def build_parser() -> argparse.ArgumentParser:
    from vmtest.cli import bisect, build, dmesg, doctor, matrix, run

    parser = argparse.ArgumentParser(
        prog="vmtest", description="QEMU-based full-system tests for Linux memory management.")
    parser.add_argument("--version", action="version", version=f"vmtest {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for command in (matrix, dmesg, bisect, doctor, build, run):
        command.add_parser(sub)
    return parser


def _logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="vmtest: %(levelname)s: %(message)s" if not os.environ.get("CI")
                        else "%(asctime)s vmtest %(levelname)s %(message)s")
    # paramiko logs every refused early connection attempt as an error; they are expected
    # while the guest's sshd starts.
    for noisy in ("paramiko", "qemu.qmp"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _logging(args.verbose)
    try:
        return int(args.func(args))
    except VmtestError as exc:
        verdict = getattr(exc, "verdict", None)
        prefix = f"vmtest: {verdict}: " if verdict else "vmtest: error: "
        print(prefix + exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vmtest: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
