"""Naming a kernel: the one option table and the one rule every front end uses.

A user names the kernel to boot in one of three ways, and every command (`vmtest run`,
`run --scenario`, `run --kselftest`, `build`) and the pytest plugin read them alike:

1. an image: `--kernel PATH` (a vmlinux, bzImage or `vmtest build` directory; vmtest
   does not know its tree, so nothing is built);
2. ad hoc: `--source`, `--patch`, `--fragment` (any of them) -- that source (default
   Debian's 6.1) with those patches and fragments (default: vmtest's), variant "default"
   unless `--variant` names it;
3. an experiment file: `--config` (default: the built-in reference experiment) with
   `--base` (default: its first kernel) and `--variant` (default: that kernel's first
   variant -- for the reference, "patched", the kernel as shipped).

`vmtest build` without --base/--variant builds all of a config's kernels and variants
(`KernelChoice.specs(every=True)`); everything else boots one.

The option table (`OPTIONS`) is written once: argparse gets `--NAME`, the pytest plugin
`--vmtest-NAME`, with the same help and checks. Beside the kernel it holds the machine
options both front ends offer (`MACHINE`: --accel, --numa, --virtio-mem); a NUMA machine
and a virtio-mem device ask something of the kernel too, which `check_numa` and
`check_virtio_mem` hold against the kernel's config before a boot.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest import paths
from vmtest.errors import ConfigError
from vmtest.kernel import kconfig
from vmtest.kernel.images import config_of
from vmtest.qemu.accel import ACCELS
from vmtest.qemu.argv import MAX_NUMA_NODES

if TYPE_CHECKING:  # YAML and the build stage load when a kernel is resolved, not parsed
    from vmtest.config import KernelDef, Variant
    from vmtest.kernel.build import BuildSpec, BuiltKernel

AD_HOC_SOURCE = "debian:6.1"
AD_HOC_VARIANT = "default"


@dataclass(frozen=True)
class Option:
    """One option as both front ends offer it."""

    name: str  # argparse's dest; the pytest plugin's is vmtest_<name>
    flag: str  # --flag (the plugin: --vmtest-flag)
    help: str
    metavar: str | None = None
    repeat: bool = False  # may be given several times (a list)
    choices: tuple[str, ...] | None = None
    default: Any = None
    # The value from its text, or argparse.ArgumentTypeError: a usage error that names
    # the option, in both front ends (pytest's options are argparse's).
    type: Callable[[str], Any] | None = None
    # The plugin runs each test on each variant named: there --variant repeats.
    repeat_in_plugin: bool = False

    def argparse_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dest": self.name, "help": self.help}
        if self.metavar:
            kwargs["metavar"] = self.metavar
        if self.choices:
            kwargs["choices"] = self.choices
        if self.type:
            kwargs["type"] = self.type
        if self.repeat:
            kwargs["action"] = "append"
        kwargs["default"] = self.default
        return kwargs


def numa_nodes(text: str) -> int:
    """--numa's N: a whole number 0..MAX_NUMA_NODES (0 and 1: no NUMA nodes)."""
    try:
        nodes = int(text)
    except ValueError:
        nodes = -1
    if not 0 <= nodes <= MAX_NUMA_NODES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of NUMA nodes from 0 to "
                                         f"{MAX_NUMA_NODES}")
    return nodes


def virtio_mem_size(text: str) -> int:
    """--virtio-mem's SIZE in MiB: 0 (none) or a multiple of the device's 2 MiB block."""
    from vmtest.qemu.argv import parse_size_mib

    try:
        size = parse_size_mib(text, "virtio-mem size")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if size < 0 or size % 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not a multiple of 2 MiB (virtio-mem's "
                                         "device block)")
    return size


OPTIONS: tuple[Option, ...] = (
    Option("kernel", "kernel", "boot this image: a vmlinux (PVH), bzImage or `vmtest build` "
           "directory (nothing is built)", metavar="PATH"),
    Option("source", "source", "ad-hoc kernel source: debian:6.1, debian:6.12, a tree PATH, "
           "or PATH@GITREF (default: the kernels of --config)", metavar="SOURCE"),
    Option("fragments", "fragment", "config fragment, ad hoc (repeatable; default: "
           f"{', '.join(kconfig.DEFAULT_FRAGMENTS)})", metavar="NAME|PATH", repeat=True),
    Option("patches", "patch", "patch to apply, ad hoc, in order (repeatable)",
           metavar="FILE", repeat=True),
    Option("config", "config", "experiment file whose kernels to use (default: the built-in "
           "reference, configs/lru-migration.yaml, unless --source/--patch/--fragment)",
           metavar="YAML"),
    Option("base", "base", "with --config: which kernel (default: its first; `build`: all)",
           metavar="NAME"),
    Option("variant", "variant", "variant name (with --config: default its kernel's first, "
           "`build`: all; ad hoc: the build's name, default 'default')", metavar="NAME",
           repeat_in_plugin=True),
    Option("arch", "arch", "guest architecture: x86_64 or arm64 (default: the kernel's own: "
           "the experiment file's `arch:`, an image's header, else x86_64)", metavar="NAME"),
    Option("accel", "accel", "auto: KVM where it really boots a guest, else TCG (default)",
           choices=ACCELS, default="auto"),
    Option("numa", "numa", "NUMA nodes: the memory split evenly, vCPUs dealt round-robin; "
           "the kernel needs CONFIG_NUMA, e.g. the fragment numa (default: none)",
           metavar="N", type=numa_nodes, default=0),
    Option("virtio_mem", "virtio-mem", "a virtio-mem device of up to SIZE (e.g. 1G), empty at "
           "boot, resized over QMP; the kernel needs CONFIG_VIRTIO_MEM (on x86_64 the "
           "fragment virtio-mem; default: none)", metavar="SIZE", type=virtio_mem_size,
           default=0),
)
KERNEL = ("kernel", "source", "fragments", "patches", "config", "base", "variant", "arch")
BUILD = ("source", "fragments", "patches", "config", "base", "variant", "arch")
MACHINE = ("accel", "numa", "virtio_mem")


def _options(names: Iterable[str]) -> list[Option]:
    table = {o.name: o for o in OPTIONS}
    return [table[name] for name in names]


def add_arguments(parser: argparse.ArgumentParser, names: Iterable[str] = KERNEL) -> None:
    """The named options of the table, as `--flag`."""
    for option in _options(names):
        parser.add_argument(f"--{option.flag}", **option.argparse_kwargs())


def add_pytest_options(group: Any, names: Iterable[str] = (*KERNEL, *MACHINE)) -> None:
    """The named options of the table, as `--vmtest-flag` (pytest's OptionGroup)."""
    for option in _options(names):
        kwargs = option.argparse_kwargs() | {"dest": f"vmtest_{option.name}"}
        if option.repeat_in_plugin:
            kwargs |= {"action": "append", "default": []}
        group.addoption(f"--vmtest-{option.flag}", **kwargs)


@dataclass(frozen=True)
class KernelChoice:
    """What the user named (see the module's docstring for the rule)."""

    kernel: Path | None = None
    source: str | None = None
    fragments: tuple[str, ...] = ()
    patches: tuple[Path, ...] = ()
    config: Path | None = None
    base: str | None = None
    variant: str | None = None
    arch: str | None = None  # --arch: overrides the kernel's own
    # for messages: how the options are spelled where they came from
    spelling: Callable[[str], str] = field(default=lambda name: f"--{name}", compare=False)

    @classmethod
    def from_options(cls, get: Callable[[str], Any],
                     spelling: Callable[[str], str] | None = None) -> KernelChoice:
        """From option values by name: `lambda n: getattr(args, n, None)` for argparse,
        `lambda n: config.getoption(f"vmtest_{n}")` for pytest."""
        variant = get("variant")
        if isinstance(variant, list):  # the plugin's: several; the caller picks one
            variant = variant[0] if variant else None
        kernel, config = get("kernel"), get("config")
        return cls(kernel=Path(kernel) if kernel else None, source=get("source") or None,
                   fragments=tuple(get("fragments") or ()),
                   patches=tuple(Path(p) for p in get("patches") or ()),
                   config=Path(config) if config else None, base=get("base") or None,
                   variant=variant or None, arch=get("arch") or None,
                   spelling=spelling or (lambda name: f"--{name}"))

    @property
    def ad_hoc(self) -> bool:
        return bool(self.source or self.patches or self.fragments)

    @property
    def config_path(self) -> Path:
        """The experiment file the kernel comes from (not ad hoc)."""
        return self.config or paths.default_config()

    def check(self) -> None:
        """Options that contradict each other."""
        if self.kernel is not None and (self.ad_hoc or self.config or self.base):
            raise ConfigError(f"{self.spelling('kernel')} names an image: it does not go "
                              f"with {self.spelling('source')}, {self.spelling('patch')}, "
                              f"{self.spelling('fragment')}, {self.spelling('config')} or "
                              f"{self.spelling('base')}")
        if self.ad_hoc and (self.config or self.base):
            raise ConfigError(f"{self.spelling('config')}/{self.spelling('base')} name a "
                              "kernel of an experiment file: they do not go with ad-hoc "
                              f"{self.spelling('source')}/{self.spelling('patch')}/"
                              f"{self.spelling('fragment')}")

    def image_path(self) -> Path | None:
        """The image --kernel names (checked), or None when a kernel is to be built."""
        if self.kernel is None:
            return None
        from vmtest.kernel.images import image_at

        image = image_at(self.kernel)
        if not image.is_file():
            raise ConfigError(f"kernel image {self.kernel} not found",
                              hint="pass a vmlinux (with CONFIG_PVH), a bzImage, or a "
                                   "directory printed by `vmtest build`")
        return image

    def kernel_def(self) -> tuple[KernelDef, Variant]:
        """The experiment file's kernel and variant by the rule (not ad hoc)."""
        from vmtest import config

        exp = config.load(self.config_path)
        kernel = exp.kernel(self.base) if self.base else exp.kernels[0]
        variant = kernel.variant(self.variant, f"{self.config_path}: ") if self.variant \
            else kernel.variants[0]
        return kernel, variant

    def spec(self) -> BuildSpec:
        """The one kernel to build."""
        self.check()
        if self.ad_hoc:
            return self._with_arch(self._ad_hoc_spec())
        kernel, variant = self.kernel_def()
        return self._with_arch(kernel.build_spec(variant))

    def _with_arch(self, spec: BuildSpec) -> BuildSpec:
        """The spec for --arch, when given (ConfigError for an unknown name)."""
        if not self.arch:
            return spec
        from vmtest import arch as archs

        return dataclasses.replace(spec, arch=archs.get(self.arch).name)

    def specs(self, *, every: bool = True) -> list[BuildSpec]:
        """`vmtest build`: what --base/--variant leave of the config's kernels and
        variants (all of them when neither is given), or the ad hoc one."""
        self.check()
        if self.ad_hoc or not every:
            return [self.spec()]
        from vmtest import config

        exp = config.load(self.config_path)
        kernels = [exp.kernel(self.base)] if self.base else list(exp.kernels)
        return [self._with_arch(k.build_spec(v)) for k in kernels
                for v in ([k.variant(self.variant, f"{self.config_path}: ")]
                          if self.variant else k.variants)]

    def _ad_hoc_spec(self) -> BuildSpec:
        from vmtest.kernel import build as kbuild

        for patch in self.patches:
            if not patch.is_file():
                raise ConfigError(f"patch {patch} not found")
        return kbuild.spec_for_source(self.source or AD_HOC_SOURCE, fragments=self.fragments,
                                      patches=tuple(p.resolve() for p in self.patches),
                                      variant=self.variant or AD_HOC_VARIANT)

    def built(self) -> BuiltKernel:
        """The chosen kernel, built (or found in the cache)."""
        from vmtest.kernel import build as kbuild

        return kbuild.build_kernel(self.spec())

    def resolved_image(self) -> Path:
        """The image to boot, fast: --kernel's, else the cached image named the same way
        last time while nothing it was made from changed (kernel/resolved.py: no YAML,
        catalog or build stage loaded before QEMU starts), else built."""
        image = self.image_path()
        if image is not None:
            return image
        self.check()
        from vmtest.kernel import resolved

        config = None if self.ad_hoc else str(self.config_path)
        key = resolved.question("run", config, self.base, self.variant, self.source,
                                list(self.patches), list(self.fragments) or None, self.arch)
        image = resolved.lookup(key)
        if image is not None:
            return image
        from vmtest.kernel import build as kbuild

        spec = self.spec()
        stamps = resolved.snapshot(spec, None if config is None else Path(config))
        image = kbuild.build(spec).image
        resolved.remember(key, stamps, image)
        return image


def check_numa(nodes: int, image: Path,
               spelling: Callable[[str], str] = lambda name: f"--{name}") -> None:
    """Refuse NUMA nodes (nodes > 1) for a kernel whose config turns CONFIG_NUMA off: it
    ignores QEMU's SRAT and boots one node, so a test of NUMA would pass or skip on a
    guest that is not what was asked for. An image whose config is not beside it
    (images.config_of) is not checked here."""
    config = config_of(image) if nodes > 1 else None
    if config is None:
        return
    if kconfig.parse_config(config.read_text(errors="replace")).get("CONFIG_NUMA") == "y":
        return
    defaults = " ".join(f"{spelling('fragment')} {name}" for name in kconfig.DEFAULT_FRAGMENTS)
    raise ConfigError(f"{spelling('numa')} {nodes}: the kernel {image} is built without "
                      f"CONFIG_NUMA (its config: {config}), so its guest has one node",
                      hint=f"add the fragment numa to the kernel's: {defaults} "
                           f"{spelling('fragment')} numa, or `numa` in an experiment "
                           "kernel's fragments")


def default_build_spec() -> BuildSpec:
    """The built-in default kernel: what `vmtest run` boots with no kernel options."""
    return KernelChoice().spec()


def check_virtio_mem(size_mib: int, image: Path,
                     spelling: Callable[[str], str] = lambda name: f"--{name}") -> None:
    """Refuse a virtio-mem device (size_mib > 0) for a kernel whose config beside its
    image lacks CONFIG_VIRTIO_MEM: the device would stay empty (kconfig.check_virtio_mem).
    An image whose config is not beside it is not checked here."""
    if size_mib > 0:
        kconfig.check_virtio_mem(config_of(image), f"{spelling('virtio-mem')} {size_mib}M",
                                 fragment_flag=spelling("fragment"))
