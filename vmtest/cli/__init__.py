"""The command line: one module per command (parse arguments, call one stage, print).
The only place that prints errors and chooses exit codes (vmtest/errors.py defines them).
Whatever goes wrong ends as a message and a documented exit code, never a traceback: a
bug in vmtest prints one line and the path of the file that holds its traceback."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from vmtest import __version__, paths
from vmtest.deadline import file_stamp
from vmtest.errors import (
    EXIT_CMD_KERNEL,
    EXIT_CMD_VMTEST,
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    GuestFailure,
    Terminated,
    VmtestError,
)

# Each subcommand and the module that defines it (in `vmtest --help`'s order).
COMMANDS = {"matrix": "matrix", "report": "matrix", "merge": "matrix", "dmesg": "dmesg",
            "bisect": "bisect", "bisect-step": "bisect", "doctor": "doctor", "build": "build",
            "run": "run", "completion": "completion"}


def named_command(argv: list[str]) -> str | None:
    """The subcommand argv names (the first word that is not an option: the top level's
    options take no value), or None."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


EXIT_CODES = """exit codes:
  0    ok
  1    kernel failure: a crash, hang or regression (a failed comparison)
  2    usage or configuration error
  3    infrastructure: a missing tool, a failed build, QEMU or SSH failing, a bug in vmtest
  130  interrupted (143: terminated)
  `vmtest run -- CMD` exits with CMD's own status, 124 when the kernel failed around it
  (crash, hang, --timeout) and 125 when vmtest could not run it (git bisect run: bad, skip)"""


class _Version(argparse.Action):
    """--version: the commit is looked up only when asked (git: a process start)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from vmtest import provenance

        print(provenance.version_line())
        parser.exit()


def build_parser(argv: list[str] | None = None
                 ) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and, by name, the parser of each subcommand. Given the argv to parse,
    only the named subcommand's module is loaded (all of them otherwise: help, errors):
    `vmtest run` does not pay for the imports of bisect and matrix before QEMU starts."""
    import importlib

    named = named_command(argv) if argv is not None else None
    modules = [COMMANDS[named]] if named else list(dict.fromkeys(COMMANDS.values()))
    parser = argparse.ArgumentParser(
        prog="vmtest", description="QEMU-based full-system tests for Linux memory management.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print vmtest's version and the commit it runs from, and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="say more: -v progress details, -vv debugging, -vvv SSH's too")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for module in modules:
        importlib.import_module(f"vmtest.cli.{module}").add_parser(sub)
    for command in sub.choices.values():  # every command's help says what its exit means
        if not command.epilog:
            command.epilog = EXIT_CODES
            command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser, dict(sub.choices)


def _logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="vmtest: %(levelname)s: %(message)s" if not os.environ.get("CI")
                        else "%(asctime)s vmtest %(levelname)s %(message)s")
    # paramiko logs every refused early connection attempt as an error; they are expected
    # while the guest's sshd starts.
    for noisy in ("paramiko", "qemu.qmp"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.CRITICAL)
    if verbose > 2:  # SSH transports' own log (vmtest/channel/ssh.py)
        logging.getLogger("vmtest.channel.paramiko").propagate = True
    # The steps that take minutes say how far they got (procs.progress), at any -v.
    progress = logging.getLogger("vmtest.progress")
    if not progress.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "vmtest: %(message)s" if not os.environ.get("CI")
            else "%(asctime)s vmtest %(message)s"))
        progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False


def _save_traceback() -> Path | None:
    """The current exception's traceback in a file under the cache's logs/ (None if even
    that cannot be written)."""
    text = traceback.format_exc()
    try:
        path = paths.cache_dir("logs") / f"vmtest-bug-{file_stamp()}-{os.getpid()}.txt"
        path.write_text(f"vmtest {__version__}\nargv: {sys.argv}\n\n{text}")
        return path
    except Exception:  # no writable cache either: the caller prints the exception
        return None


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def entry() -> None:
    """The `vmtest` command: main(), then out at once. Everything vmtest starts is
    stopped and everything it writes is closed by then; what is left is the
    interpreter's teardown of modules and objects, ~70 ms of every `vmtest run`."""
    # paramiko.config imports `invoke` if it can, only to run the `Match exec` lines of
    # ssh_config files, which vmtest never reads; invoke brings yaml, asyncio and
    # unittest.mock along: ~70 ms of CPU taken from the booting guest on a 2-core host.
    # paramiko treats it as optional (ImportError: no Match exec). Only in vmtest's own
    # process: a user's process that imports vmtest (the pytest plugin) keeps it.
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    status = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser, commands = build_parser(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse would blame the top level: name the subcommand and its usage
        commands[args.cmd].error(f"unrecognized arguments: {' '.join(extra)}")
    _logging(args.verbose)
    # `vmtest run -- CMD` passes CMD's status through and keeps two codes of its own.
    passes_status = bool(getattr(args, "passes_status", lambda a: False)(args))
    # A command whose status someone else reads (bisect-step: git) maps every failure of
    # vmtest's own to one code.
    failure_status: int | None = getattr(args, "failure_status", None)
    try:
        return int(args.func(args))
    except VmtestError as exc:
        from vmtest.outcome import RunVerdict

        verdict = RunVerdict.for_exception(exc)
        prefix = f"vmtest: {verdict}: " if verdict.is_kernel_failure else "vmtest: error: "
        print(prefix + exc.render(), file=sys.stderr)
        if failure_status is not None:
            return failure_status
        if passes_status:
            return EXIT_CMD_KERNEL if isinstance(exc, GuestFailure) else EXIT_CMD_VMTEST
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`vmtest doctor | head`): what a tool killed by SIGPIPE
        # does, without a traceback; stdout goes nowhere so the exit flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            status = _bug(exc, passes_status)
            return status if failure_status is None else failure_status
        # The host's doing (disk full, read-only, permissions): one line, exit 3.
        where = f": {exc.filename}" if exc.filename else ""
        print(f"vmtest: error: {exc.strerror or exc}{where}\nhint: free space or choose "
              "another folder (--output, --results, VMTEST_CACHE); runs finished before "
              "this are kept", file=sys.stderr)
        if failure_status is not None:
            return failure_status
        return EXIT_CMD_VMTEST if passes_status else EXIT_INFRA
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"vmtest: {'terminated (SIGTERM)' if terminated else 'interrupted'}",
              file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as exc:  # a bug of vmtest's: one line, the traceback in a file
        status = _bug(exc, passes_status)
        return status if failure_status is None else failure_status


# What the host does to vmtest rather than a bug in it.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT,
                       errno.EMFILE, errno.ENFILE, errno.ENOMEM}


def _bug(exc: BaseException, passes_status: bool) -> int:
    saved = _save_traceback()
    where = f"traceback in {saved}" if saved else traceback.format_exception_only(exc)[-1]
    print(f"vmtest: internal error: {type(exc).__name__}: {exc} ({where}); please "
          "report it", file=sys.stderr)
    return EXIT_CMD_VMTEST if passes_status else EXIT_INFRA
