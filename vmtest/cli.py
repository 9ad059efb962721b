"""The command line. The only place that prints errors and chooses exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from vmtest import __version__
from vmtest.errors import ConfigError, VmtestError
from vmtest.kernel import build as kbuild
from vmtest.kernel import kconfig
from vmtest.kernel.source import parse_source
from vmtest.qemu.argv import parse_size_mib

log = logging.getLogger("vmtest")

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3


def _add_kernel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=None,
                   help="ad-hoc kernel source: debian:6.1, debian:6.12, a tree PATH, or "
                        "PATH@GITREF (default: the kernels of --config)")
    p.add_argument("--fragment", action="append", dest="fragments", metavar="NAME|PATH",
                   help="config fragment (repeatable; default: "
                        f"{', '.join(kconfig.DEFAULT_FRAGMENTS)})")
    p.add_argument("--patch", action="append", dest="patches", type=Path, default=[],
                   metavar="FILE", help="patch to apply, in order (repeatable)")
    p.add_argument("--variant", default=None,
                   help="variant name (with --config: which variant; default: all for build)")
    p.add_argument("--config", metavar="YAML",
                   help="experiment definition: kernels and their variants (default: "
                        "configs/lru-migration.yaml unless --source/--patch/--fragment)")
    p.add_argument("--base", metavar="NAME", help="with --config: which kernel (default: all)")


def _use_config(args: argparse.Namespace) -> bool:
    """Ad-hoc kernel options win; otherwise the (default) experiment config."""
    if args.config:
        return True
    if args.source or args.patches or args.fragments:
        return False
    from vmtest import paths

    args.config = str(paths.repo_root() / "configs" / "lru-migration.yaml")
    return True


def _specs_from_config(args: argparse.Namespace) -> list[kbuild.BuildSpec]:
    from vmtest import config

    experiment = config.load(args.config)
    kernels = [experiment.kernel(args.base)] if args.base else list(experiment.kernels)
    specs = []
    for kernel in kernels:
        variants = [kernel.variant(args.variant, f"{args.config}: ")] if args.variant \
            else list(kernel.variants)
        specs += [kernel.build_spec(v) for v in variants]
    return specs


def _spec_from_args(args: argparse.Namespace) -> kbuild.BuildSpec:
    if _use_config(args):
        specs = _specs_from_config(args)
        if len(specs) != 1:
            raise ConfigError(f"{args.config} defines {len(specs)} builds; pick one",
                              hint="add --base NAME and --variant NAME")
        return specs[0]
    fragments = tuple(kconfig.load_fragment(f) for f in
                      (args.fragments or kconfig.DEFAULT_FRAGMENTS))
    for patch in args.patches:
        if not patch.is_file():
            raise ConfigError(f"patch {patch} not found")
    source = parse_source(args.source or "debian:6.1")
    return kbuild.BuildSpec(source=source, fragments=fragments,
                            patches=tuple(p.resolve() for p in args.patches),
                            variant=args.variant or "default", base=args.source or "debian:6.1")


def cmd_build(args: argparse.Namespace) -> int:
    specs = _specs_from_config(args) if _use_config(args) else [_spec_from_args(args)]
    failed = 0
    for spec in specs:
        started = time.monotonic()
        label = f"{spec.base or spec.source.describe()}/{spec.variant}"
        try:
            artifact = kbuild.build(spec, jobs=args.jobs, force=args.force)
        except VmtestError as exc:
            # Other variants and everything already built stay usable.
            print(f"{label}: FAILED: {exc.render()}", file=sys.stderr)
            failed += 1
            continue
        elapsed = time.monotonic() - started
        meta = artifact.meta
        fresh = elapsed > 5
        print(f"{label}: {artifact.release} {artifact.image}")
        print(f"  key {artifact.key[:24]}; " + (
            f"built in {elapsed:.1f} s (make {meta.get('build_seconds')} s, "
            f"ccache {meta.get('ccache')})" if fresh else
            f"cache hit in {elapsed:.2f} s (originally built in {meta.get('build_seconds')} s)"))
    if failed:
        return EXIT_INFRA
    return EXIT_OK


def _resolve_kernel(args: argparse.Namespace) -> Path:
    if args.kernel:
        path = Path(args.kernel)
        if path.is_dir():
            path = kbuild.KernelArtifact(key="", directory=path).image
        if not path.is_file():
            raise ConfigError(f"kernel image {args.kernel} not found",
                              hint="pass a vmlinux (with CONFIG_PVH), a bzImage, or a "
                                   "directory printed by `vmtest build`")
        return path
    if _use_config(args) and not args.variant:
        args.variant = "patched"  # the built-in default: the kernel as shipped
    return kbuild.build(_spec_from_args(args)).image


def _scenario_run(args: argparse.Namespace) -> int:
    from vmtest import config, experiment, paths, runner

    cfg = args.config or str(paths.repo_root() / "configs" / "lru-migration.yaml")
    exp = config.load(cfg)
    if args.base:
        kernel = exp.kernel(args.base)
    elif len(exp.kernels) == 1:
        kernel = exp.kernels[0]
    else:
        raise ConfigError(f"{cfg} defines several kernels", hint="pick one with --base NAME")
    if not args.variant:
        raise ConfigError("--scenario needs --variant",
                          hint=f"available: {', '.join(v.name for v in kernel.variants)}")
    variant = kernel.variant(args.variant, f"{cfg}: ")
    overrides: dict[str, object] = {}
    for item in args.set or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = _yaml_value(value)
    from vmtest import scenarios

    scenarios.make(args.scenario, args.profile, overrides)  # validate before anything runs
    out = Path(args.output) if args.output else runner.new_run_dir(
        label=f"{args.scenario}-{variant.name}")
    print(f"run directory: {out}", file=sys.stderr)
    doc = experiment.run_scenario(kernel, variant, args.scenario, args.profile, overrides,
                                  out, accel=args.accel, boot_timeout_s=args.boot_timeout)
    metrics = doc.get("metrics", {})
    shown = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    print(f"{doc['identity']['kernel_release']} {args.scenario}/{args.profile}: "
          f"verdict {doc['verdict']}")
    for key, value in shown.items():
        print(f"  {key}: {value}")
    print(f"result: {out / 'result.json'}")
    if doc["verdict"] == "ok":
        return EXIT_OK
    print(doc.get("error", ""), file=sys.stderr)
    return EXIT_INFRA if doc["verdict"] == "infrastructure" else EXIT_FAIL


def _yaml_value(text: str) -> object:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def cmd_run(args: argparse.Namespace) -> int:
    from vmtest import runner

    if args.scenario:
        if args.command and args.command != ["--"]:
            raise ConfigError("give either --scenario or a command, not both")
        return _scenario_run(args)
    command = args.command
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("no command given", hint="vmtest run [OPTIONS] -- CMD [ARGS...]")
    kernel = _resolve_kernel(args)
    opts = runner.BootOptions(
        accel=args.accel, cpus=args.cpus, memory_mib=parse_size_mib(args.memory, "--memory"),
        cma_mib=parse_size_mib(args.cma, "--cma"), slots=args.slots,
        maxmem_mib=parse_size_mib(args.maxmem, "--maxmem"), boot_timeout_s=args.boot_timeout,
        qemu_extra=tuple(args.qemu_arg or ()), cmdline_extra=tuple(args.append or ()),
        # The optional stress-ng layer comes along when the command uses it.
        programs=tuple(p for p in ("stress-ng",) if any(p in word for word in command)))
    run_dir = Path(args.output) if args.output else runner.new_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"console log: {run_dir / 'console.log'}", file=sys.stderr)
    # ssh semantics: the words are joined with spaces and run by the guest's shell.
    line = " ".join(command)
    with runner.boot(kernel, opts, run_dir) as vm:
        ready = time.monotonic() - started
        if args.console:
            status, output = vm.console_exec(line, timeout_s=args.timeout or 3600)
            sys.stdout.write(output)
        else:
            ssh = vm.ssh(timeout_s=max(5.0, args.boot_timeout - ready))
            status = ssh.run(line, stdout=sys.stdout.buffer, stderr=sys.stderr.buffer,
                             timeout_s=args.timeout, watch=vm.check)
        vm.check()
    total = time.monotonic() - started
    log.info("exit status %d; ready after %.2f s, total %.2f s", status, ready, total)
    if args.timings:
        print(f"vmtest-timings ready_s={ready:.3f} total_s={total:.3f} accel={vm.spec.accel}",
              file=sys.stderr)
    return status


def cmd_doctor(args: argparse.Namespace) -> int:
    from vmtest import doctor

    if args.reprobe:
        from vmtest.qemu.accel import VerdictStore

        VerdictStore().forget()
    checks = doctor.run_checks()
    width = max(len(c.name) for c in checks)
    for check in checks:
        mark = "ok " if check.ok else ("-- " if check.optional else "NO ")
        print(f"{mark} {check.name:<{width}}  {check.detail}")
        if not check.ok and check.fix:
            print(f"    {'':<{width}}  fix: {check.fix}")
    bad = [c for c in checks if not c.ok and not c.optional]
    return EXIT_INFRA if bad else EXIT_OK


def _bisect_common(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
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
        step_args += ["--log-dir", str(args.log_dir)]
    return bisect.start(args.tree.resolve(), args.good, args.bad, step_args)


def cmd_bisect_step(args: argparse.Namespace) -> int:
    from vmtest import bisect

    return bisect.step(args.tree.resolve(), args.scenario, args.profile, args.metric,
                       args.threshold, [p.resolve() for p in args.patches],
                       list(args.fragments or kconfig.DEFAULT_FRAGMENTS), args.accel,
                       args.log_dir or bisect.default_log_dir())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmtest", description="QEMU-based full-system tests for Linux memory management.")
    parser.add_argument("--version", action="version", version=f"vmtest {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="cmd", required=True)

    from vmtest import dmesg_cli, matrix_cli

    matrix_cli.add_parsers(sub)
    dmesg_cli.add_parser(sub)

    p = sub.add_parser("bisect", help="git bisect a kernel tree on a scenario metric")
    _bisect_common(p)
    p.add_argument("--good", required=True)
    p.add_argument("--bad", required=True)
    p.set_defaults(func=cmd_bisect)
    p = sub.add_parser("bisect-step", help="one bisection step (called by git bisect run): "
                                           "exit 0 good, 1 bad, 125 skip")
    _bisect_common(p)
    p.set_defaults(func=cmd_bisect_step)

    p = sub.add_parser("doctor", help="check the host: tools, kernel source, KVM usability")
    p.add_argument("--reprobe", action="store_true", help="forget the remembered KVM verdict")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("build", help="build (or find in the cache) a kernel")
    _add_kernel_args(p)
    p.add_argument("-j", "--jobs", type=int, default=None, help="make -j (default: all cores)")
    p.add_argument("--force", action="store_true", help="rebuild even on a cache hit")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("run", help="boot a kernel and run CMD in the guest over SSH",
                       usage="vmtest run [OPTIONS] -- CMD [ARGS...]")
    _add_kernel_args(p)
    p.add_argument("--kernel", help="a vmlinux (PVH), bzImage or build directory "
                   "(default: build --source)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--memory", default="1G", help="boot memory (default: %(default)s)")
    p.add_argument("--cma", default="256M", help="cma= reservation (default: %(default)s)")
    p.add_argument("--slots", type=int, default=4, help="pc-dimm hotplug slots")
    p.add_argument("--maxmem", default="4G", help="memory limit with hotplug")
    p.add_argument("--boot-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="limit for CMD itself")
    p.add_argument("--console", action="store_true",
                   help="run CMD on the serial console instead of SSH")
    p.add_argument("--output", metavar="DIR", help="where logs go (default: a new run dir)")
    p.add_argument("--qemu-arg", action="append", metavar="ARG", help="extra QEMU argument")
    p.add_argument("--append", action="append", metavar="WORD",
                   help="extra kernel command-line word")
    p.add_argument("--timings", action="store_true", help="print boot/total seconds to stderr")
    p.add_argument("--scenario", help="run a scenario instead of CMD (cma-stress, "
                                      "hotplug-offline); writes result.json")
    p.add_argument("--profile", default="quick", help="scenario profile (quick, seed)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a scenario parameter (repeatable)")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="vmtest: %(levelname)s: %(message)s" if not os.environ.get("CI")
                        else "%(asctime)s vmtest %(levelname)s %(message)s")
    # paramiko logs every refused early connection attempt as an error; they are expected
    # while the guest's sshd starts.
    for noisy in ("paramiko", "qemu.qmp"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose > 2 else logging.CRITICAL)
    try:
        return int(args.func(args))
    except VmtestError as exc:
        verdict = getattr(exc, "verdict", None)
        prefix = f"vmtest: {verdict}: " if verdict else "vmtest: error: "
        print(prefix + exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vmtest: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
