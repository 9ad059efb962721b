"""`vmtest completion SHELL`: a completion script for bash, zsh or tcsh, made by shtab
from the same argparse parser the commands use (so it never lags behind an option)."""

from __future__ import annotations

import argparse

from vmtest.cli.common import Sub
from vmtest.errors import EXIT_OK, MissingRequirement

SHELLS = ("bash", "zsh", "tcsh")


def add_parser(sub: Sub) -> None:
    p = sub.add_parser(
        "completion", help="print a shell completion script (bash, zsh, tcsh)",
        description="Print a completion script for SHELL. bash: "
                    "`vmtest completion bash > ~/.local/share/bash-completion/completions/"
                    "vmtest`; zsh: `vmtest completion zsh > \"${fpath[1]}/_vmtest\"`.")
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    try:
        import shtab
    except ImportError as exc:
        raise MissingRequirement("shtab is not installed (it writes the completion script)",
                                 hint="pip install shtab, or bash scripts/setup-host.sh "
                                      "with VMTEST_REINSTALL=1") from exc
    from vmtest.cli import build_parser

    parser, _ = build_parser()  # every command's options
    print(shtab.complete(parser, shell=args.shell))
    return EXIT_OK
