"""`vmtest run`: boot a kernel and run a command in the guest, or run one scenario."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vmtest import kernel_choice
from vmtest.channel.command import ChannelKind
from vmtest.cli.common import Sub, add_accel_arg, add_kernel_args, kernel_choice_of
from vmtest.errors import EXIT_CMD_VMTEST, EXIT_FAIL, EXIT_OK, ConfigError
from vmtest.qemu.argv import Share, parse_size_mib

if TYPE_CHECKING:
    from vmtest.config import Variant

log = logging.getLogger("vmtest")


def add_parser(sub: Sub) -> None:
    p = sub.add_parser("run", help="boot a kernel and run CMD in the guest",
                       usage="vmtest run [OPTIONS] -- CMD [ARGS...]")
    add_kernel_args(p)
    add_accel_arg(p)
    p.add_argument("--cpus", type=int, default=2, help="vCPUs (default: %(default)s)")
    p.add_argument("--memory", default="1G", help="boot memory (default: %(default)s)")
    p.add_argument("--cma", default="256M", help="cma= reservation (default: %(default)s)")
    # the plugin's --vmtest-numa and --vmtest-virtio-mem too
    kernel_choice.add_arguments(p, ("numa", "virtio_mem"))
    p.add_argument("--slots", type=int, default=4, help="pc-dimm hotplug slots")
    p.add_argument("--maxmem", default="4G", help="memory limit with hotplug")
    p.add_argument("--boot-timeout", type=float, default=60.0, metavar="S",
                   help="seconds the guest may take to become ready, else a hang "
                        "(default: %(default)s)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="limit for CMD itself")
    p.add_argument("--console", action="store_true",
                   help="run CMD on the serial console (its output mixed with the kernel's)")
    p.add_argument("--ssh", action="store_true",
                   help="run CMD over SSH, with the guest's network up (the default runs it "
                        "from the guest's init on virtio-serial ports: no sshd, no network; "
                        "--fetch implies --ssh)")
    p.add_argument("--output", metavar="DIR", help="where logs go (default: a new run dir)")
    p.add_argument("--qemu-arg", action="append", metavar="ARG", help="extra QEMU argument")
    p.add_argument("--append", action="append", metavar="WORD",
                   help="extra kernel command-line word")
    p.add_argument("--timings", action="store_true", help="print boot/total seconds to stderr")
    p.add_argument("--copy", action="append", default=[], metavar="SRC[:DEST]",
                   help="put a host file or folder into the guest at boot (DEST default: "
                        "/root/NAME; relative: under /root); repeatable")
    p.add_argument("--fetch", action="append", default=[], metavar="GUEST_PATH",
                   help="after CMD, copy a guest file or folder into RUN_DIR/fetched/; "
                        "repeatable")
    p.add_argument("--share", action="append", default=[], metavar="DIR",
                   help="share a host folder read-only (virtio-9p), mounted at the same "
                        "path in the guest; repeatable. Default: the current folder, and "
                        "CMD runs there")
    p.add_argument("--share-rw", action="append", default=[], metavar="DIR",
                   help="share a host folder the guest may write to")
    p.add_argument("--no-share", action="store_true",
                   help="do not share the current folder (CMD runs in /root)")
    p.add_argument("--scenario", help="run a scenario instead of CMD (cma-stress, "
                                      "hotplug-offline, or one --config defines); writes "
                                      "result.json")
    p.add_argument("--profile", default="quick",
                   help="scenario profile (quick, verdict, seed; default quick)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a scenario parameter (repeatable)")
    p.add_argument("--kselftest", metavar="COLL[:TEST]",
                   help="run the kernel's own selftests of the kernel's tree instead of CMD "
                        "(e.g. mm, mm:madv_populate, memory-hotplug; space- or "
                        "comma-separated); writes result.json with one result per test")
    p.add_argument("--kselftest-dir", metavar="DIR",
                   help="a kselftest install (make -C tools/testing/selftests install) to "
                        "run instead of building the tree's")
    p.add_argument("--kselftest-timeout", type=int, metavar="S",
                   help="per-test timeout (default: each collection's settings, x10 "
                        "under TCG)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]",
                   help="the command to run in the guest (its words joined with spaces and "
                        "run by the guest's shell, as over SSH)")
    # With a CMD, its exit status is vmtest's: vmtest's own outcomes take 124 and 125
    # (vmtest/errors.py); a scenario run uses the usual 0-3.
    p.set_defaults(func=cmd_run,
                   passes_status=lambda args: not args.scenario and not args.kselftest)


def cmd_run(args: argparse.Namespace) -> int:
    if args.kselftest:
        if args.scenario or (args.command and args.command != ["--"]):
            raise ConfigError("give one of --kselftest, --scenario or a command")
        return _kselftest_run(args)
    if args.scenario:
        if args.command and args.command != ["--"]:
            raise ConfigError("give either --scenario or a command, not both")
        return _scenario_run(args)
    command = args.command
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("no command given", hint="vmtest run [OPTIONS] -- CMD [ARGS...]")
    return _command_run(args, command)


def _guest_arch(image: Path, asked: str | None) -> str:
    """The architecture of the kernel image (its header says), which --arch, when given,
    must match."""
    from vmtest import arch as archs
    from vmtest.kernel.images import arch_of

    found = arch_of(image)
    wanted = archs.get(asked).name if asked else None
    if wanted and found and wanted != found:
        raise ConfigError(f"--arch {asked}: the kernel {image} is an {found} kernel",
                          hint=f"drop --arch, or give an {wanted} kernel")
    return found or wanted or archs.DEFAULT


def copies(specs: list[str]) -> tuple[tuple[Path, str], ...]:
    """--copy SRC[:DEST] -> (host path, guest path); a SRC that exists as given may hold
    colons, else the last colon separates DEST."""
    out = []
    for spec in specs:
        src, dest = spec, ""
        if not Path(spec).exists() and ":" in spec:
            src, _, dest = spec.rpartition(":")
        host = Path(src).resolve()
        if not host.exists():
            raise ConfigError(f"--copy {spec}: {src} does not exist",
                              hint="--copy HOST_PATH[:GUEST_PATH]")
        out.append((host, dest or host.name))
    return tuple(out)


def shares(args: argparse.Namespace) -> tuple[Share, ...]:
    """The explicit shares, then the current folder unless --no-share or already there."""
    wanted: list[tuple[Path, bool, bool]] = []
    for folders, writable in ((args.share, False), (args.share_rw, True)):
        for folder in folders:
            host = Path(folder).resolve()
            if not host.is_dir():
                raise ConfigError(f"--share {folder}: not a folder",
                                  hint="share an existing folder")
            wanted.append((host, writable, True))
    cwd = Path.cwd().resolve()
    if not args.no_share and all(host != cwd for host, _, _ in wanted):
        wanted.append((cwd, False, False))
    return tuple(Share(host, i, writable, required)
                 for i, (host, writable, required) in enumerate(wanted))


def _command_run(args: argparse.Namespace, command: list[str]) -> int:
    from vmtest.qemu import boot

    if args.console and args.fetch:
        raise ConfigError("--fetch needs SSH, and --console runs CMD without it",
                          hint="drop --console, or write results to a --share-rw folder")
    kernel = kernel_choice_of(args).resolved_image()
    arch = _guest_arch(kernel, args.arch)
    kernel_choice.check_numa(args.numa, kernel)
    kernel_choice.check_virtio_mem(args.virtio_mem, kernel)
    shared = () if args.console else shares(args)
    copied = copies(args.copy)
    # Optional layers: stress-ng when the command uses it; bash whenever files come in
    # (scripts written for bash run as written) or the command names it.
    programs = tuple(p for p in ("stress-ng", "bash")
                     if any(p in word for word in command)
                     or (p == "bash" and (shared or copied)))
    opts = boot.BootOptions(
        accel=args.accel, cpus=args.cpus, memory_mib=parse_size_mib(args.memory, "--memory"),
        cma_mib=parse_size_mib(args.cma, "--cma"), slots=args.slots,
        maxmem_mib=parse_size_mib(args.maxmem, "--maxmem"), boot_timeout_s=args.boot_timeout,
        qemu_extra=tuple(args.qemu_arg or ()), cmdline_extra=tuple(args.append or ()),
        programs=programs, copies=copied, shares=shared, arch=arch,
        numa_nodes=args.numa)
    opts = boot.with_virtio_mem(opts, args.virtio_mem)
    kind = channel_kind(args)
    # ssh semantics: the words are joined with spaces and run by the guest's shell.
    line = " ".join(command)
    stdin = _stdin() if kind is not ChannelKind.CONSOLE else None
    if kind is ChannelKind.PORTS:
        from vmtest.channel.ports import Command

        # The init runs it on the ports (channel/ports.py) in the shared current folder
        # once it is mounted (else in /root), as it would run on the host.
        cwd = next((s for s in shared if s.host == Path.cwd().resolve()), None)
        opts = replace(opts, command=Command.new(line, stdin=stdin is not None,
                                                 workdir_tag=cwd.tag if cwd else None))
    run_dir = Path(args.output) if args.output else boot.new_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"console log: {run_dir / 'console.log'}", file=sys.stderr)
    with boot.boot(kernel, opts, run_dir) as vm:
        ready = time.monotonic() - started
        channel = vm.commands(kind, timeout_s=max(5.0, args.boot_timeout - ready))
        if kind is ChannelKind.SSH:
            workdir = next((s.guest for s in vm.shares_mounted
                            if s.host == Path.cwd().resolve()), None)
            if workdir:  # CMD runs in the shared current folder, as it would on the host
                line = f"cd {shlex.quote(workdir)} || exit {EXIT_CMD_VMTEST}; {line}"
        status = channel.run(line, stdin=stdin, stdout=sys.stdout.buffer,
                             stderr=sys.stderr.buffer, timeout_s=args.timeout)
        for guest_path in args.fetch:
            for path in vm.ssh().fetch(guest_path, run_dir / "fetched"):
                print(f"fetched: {path}", file=sys.stderr)
        vm.check()
        # Nothing in the guest is needed any more (shares write through, fetches are
        # done): stop QEMU at once rather than power the guest off (~40 ms under TCG).
        vm.shutdown(graceful=False)
    total = time.monotonic() - started
    log.info("exit status %d; ready after %.2f s, total %.2f s", status, ready, total)
    if args.timings:
        print(f"vmtest-timings ready_s={ready:.3f} total_s={total:.3f} accel={vm.spec.accel}",
              file=sys.stderr)
    return status


def channel_kind(args: argparse.Namespace) -> ChannelKind:
    """Where CMD runs: the console with --console, SSH with --ssh or --fetch (which
    copies over SSH), else the ports (no sshd, keys or network)."""
    if args.console:
        return ChannelKind.CONSOLE
    return ChannelKind.SSH if args.ssh or args.fetch else ChannelKind.PORTS


def _stdin() -> int | None:
    """CMD's standard input: ours, unless it is a terminal (no interactive sessions) or
    there is none."""
    try:
        return None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.fileno()
    except (OSError, ValueError):  # closed, or replaced by something without a descriptor
        return None


def _overrides(items: list[str] | None) -> dict[str, object]:
    import yaml

    overrides: dict[str, object] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = yaml.safe_load(value)  # 3 -> int, 0.5 -> float, true -> bool
        except yaml.YAMLError:
            overrides[key] = value
    return overrides


def _scenario_run(args: argparse.Namespace) -> int:
    from vmtest import run, scenarios
    from vmtest.qemu import boot

    choice = kernel_choice_of(args)
    if choice.kernel is not None:
        raise ConfigError("--scenario runs on a kernel vmtest builds (it records the build "
                          "in the result); --kernel names an image it does not know",
                          hint="use --config/--base/--variant or --source/--patch")
    overrides = _overrides(args.set)
    variant: Variant | None = None
    from vmtest.kernel import build as kbuild

    if choice.ad_hoc:
        scenario = scenarios.make(args.scenario, args.profile, overrides)
    else:
        from vmtest import config

        kernel, variant = choice.kernel_def()
        # The scenario as the config defines it (its params), else the catalog's.
        defined = {s.name: s for s in config.load(choice.config_path).scenarios}
        scenario = defined[args.scenario].make(args.profile, **overrides) \
            if args.scenario in defined else scenarios.make(args.scenario, args.profile,
                                                            overrides)
    # The kernel named, with what the scenario needs of it (hotplug-offline's virtio-mem
    # backend on x86_64: the fragment virtio-mem): a kernel of its own beside it.
    built = kbuild.build_kernel(kbuild.with_config(choice.spec(), scenario.kernel_needs()))
    out = Path(args.output) if args.output else boot.new_run_dir(
        label=f"{args.scenario}-{built.spec.variant}")
    print(f"run directory: {out}", file=sys.stderr)
    doc = run.run_scenario(built, scenario, out, accel=args.accel,
                           boot_timeout_s=args.boot_timeout, variant=variant)
    print(f"{doc['identity']['kernel_release']} {args.scenario}/{args.profile}: "
          f"verdict {doc['verdict']}")
    for key, value in doc.get("metrics", {}).items():
        if not isinstance(value, dict):
            print(f"  {key}: {value}")
    print(f"result: {out / 'result.json'}")
    from vmtest.outcome import RunVerdict
    from vmtest.results.document import Result

    result = Result(doc)
    if result.verdict is not RunVerdict.OK:
        print(result.error, file=sys.stderr)
    return result.verdict.exit_code


def _kselftest_run(args: argparse.Namespace) -> int:
    """The tree's selftests on its kernel: a kselftest scenario run, printed as a table."""
    from vmtest import report, run, scenarios
    from vmtest.qemu import boot

    if args.kernel:
        raise ConfigError("--kselftest builds the selftests of the kernel's own tree, which "
                          "--kernel does not name",
                          hint="use --source PATH (or the default kernel), and "
                               "--kselftest-dir for a prebuilt install")
    overrides = _overrides(args.set) | {"tests": args.kselftest}
    if args.kselftest_timeout is not None:
        overrides["timeout_s"] = args.kselftest_timeout
    if args.kselftest_dir:
        overrides["install_dir"] = str(Path(args.kselftest_dir).resolve())
    scenario = scenarios.make("kselftest", args.profile, overrides)
    from vmtest.kernel import build as kbuild
    from vmtest.kernel import selftest_needs

    # The kernel named, with what the collections' `config` files ask for (modules,
    # swap, NUMA, ...): a kernel of its own, the named one's cache entry left as it is.
    colls = [word.split(":", 1)[0] for word in args.kselftest.replace(",", " ").split()]
    spec = selftest_needs.with_fragments(kernel_choice_of(args).spec(),
                                         selftest_needs.needs_for(colls))
    built = kbuild.build_kernel(spec)
    scenario.prepare(built)  # a missing test or failed build: its own error, before boot
    out = Path(args.output) if args.output else boot.new_run_dir(label="kselftest")
    print(f"run directory: {out}", file=sys.stderr)
    doc = run.run_scenario(built, scenario, out, accel=args.accel,
                           boot_timeout_s=args.boot_timeout)
    print(report.kselftest_table(doc))
    print(f"result: {out / 'result.json'}")
    from vmtest.outcome import RunVerdict
    from vmtest.results.document import Result


    result = Result(doc)
    if result.verdict is not RunVerdict.OK:
        print(result.error, file=sys.stderr)
        return result.verdict.exit_code
    metrics = result.metrics
    failed = sum(metrics.get(f"tests_{k}", 0) for k in ("fail", "timeout", "missing"))
    return EXIT_FAIL if failed else EXIT_OK
