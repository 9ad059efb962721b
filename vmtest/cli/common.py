"""What several commands share: choosing a kernel (config or ad hoc) and --accel."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest import arch as archs
from vmtest import paths
from vmtest.arch import ARCHES
from vmtest.errors import ConfigError
from vmtest.kernel import kconfig
from vmtest.qemu.accel import ACCELS

if TYPE_CHECKING:  # the build stage loads when a command builds, not to parse arguments
    from vmtest.kernel import build as kbuild

Sub = argparse._SubParsersAction  # the type argparse gives add_subparsers()


def add_accel_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accel", choices=ACCELS, default="auto",
                   help="auto: KVM where it really boots a guest, else TCG (default)")


def add_kernel_args(p: argparse.ArgumentParser) -> None:
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


def add_arch_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default=None, metavar="NAME",
                   help=f"guest architecture: {', '.join(ARCHES)} (default: the kernel's "
                        "own, x86_64 unless the experiment file says otherwise)")


def with_arch(spec: kbuild.BuildSpec, args: argparse.Namespace) -> kbuild.BuildSpec:
    """spec for --arch, when given (ConfigError for an unknown name)."""
    if not args.arch:
        return spec
    return dataclasses.replace(spec, arch=archs.get(args.arch).name)


def uses_config(args: argparse.Namespace) -> bool:
    """Ad-hoc kernel options win; otherwise the (default) experiment config."""
    if args.config:
        return True
    if args.source or args.patches or args.fragments:
        return False
    args.config = str(paths.default_config())
    return True


def specs_from_config(args: argparse.Namespace) -> list[kbuild.BuildSpec]:
    from vmtest import config  # YAML and the scenario catalog: only when a config is read

    experiment = config.load(args.config)
    kernels = [experiment.kernel(args.base)] if args.base else list(experiment.kernels)
    specs = []
    for kernel in kernels:
        variants = [kernel.variant(args.variant, f"{args.config}: ")] if args.variant \
            else list(kernel.variants)
        specs += [kernel.build_spec(v) for v in variants]
    return specs


def adhoc_spec(args: argparse.Namespace) -> kbuild.BuildSpec:
    from vmtest.kernel import build as kbuild

    for patch in args.patches:
        if not patch.is_file():
            raise ConfigError(f"patch {patch} not found")
    return kbuild.spec_for_source(args.source or "debian:6.1",
                                  fragments=tuple(args.fragments or ()),
                                  patches=tuple(p.resolve() for p in args.patches),
                                  variant=args.variant or "default")


def one_spec(args: argparse.Namespace) -> kbuild.BuildSpec:
    """The one kernel the options name (a config that defines several must be narrowed)."""
    if not uses_config(args):
        return adhoc_spec(args)
    specs = specs_from_config(args)
    if len(specs) != 1:
        raise ConfigError(f"{args.config} defines {len(specs)} builds; pick one",
                          hint="add --base NAME and --variant NAME")
    return specs[0]


def number(text: str, option: str, kind: type[int] | type[float]) -> Any:
    """--OPTION's value of `kind` (ints from 1, floats from 0): ConfigError else."""
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not {what}",
                          hint=f"{option} auto, or {what}") from None
    if value < 0 or (kind is int and value < 1):
        raise ConfigError(f"{option} {text!r} is out of range")
    return value
