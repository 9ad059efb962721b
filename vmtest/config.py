"""YAML experiment definitions -> frozen dataclasses, validated on load.

A *kernel* is a base tree (Debian's linux-source-X.Y or a git tree at a ref), an
ordered patch series and config fragments. A *variant* is that kernel with patches
added (appended to the series) or dropped (removed from it), and/or booted differently:
kernel parameters (`cmdline`), sysctls set before the scenario starts, a machine shape.
Variants that differ only in how they boot share one build (the build's key covers the
source, the series and the fragments, not the variant's name).

A *scenario* is built in (its name is in the catalog, vmtest/scenarios/) or defined as
data: a command run in the guest, its setup and built-in load, and metrics read from what
the run recorded (vmtest/scenarios/custom.py, vmtest/collect/metrics.py). The schema:
docs/experiments.md and docs/experiment.schema.json.

Every mistake is a ConfigError (exit 2) saying `FILE:LINE: key.path: problem` with what
is allowed; nothing downstream sees raw dicts.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vmtest import arch as archs
from vmtest import paths, yamlsrc
from vmtest import scenarios as catalog
from vmtest.collect import known_names, pytest_report
from vmtest.collect import metrics as metrics_mod
from vmtest.collect.metrics import MetricDef
from vmtest.collect.pytest_report import PytestMetric
from vmtest.errors import ConfigError
from vmtest.guest import sysctl as sysctl_mod
from vmtest.kernel import kconfig
from vmtest.kernel.build import BuildSpec
from vmtest.kernel.source import DEBIAN_SERIES, DebianSource, KernelSource, LocalTree
from vmtest.qemu.argv import MAX_NUMA_NODES
from vmtest.scenarios import custom, pytest_scenario
from vmtest.scenarios.custom import CustomSpec, MachineOptions
from vmtest.scenarios.pytest_scenario import PytestSpec
from vmtest.yamlsrc import Node

# Kernel, variant, scenario and metric names become parts of run directories' names and
# report anchors: ASCII letters, digits, '.', '_' and '-', not starting with '.' or '-'.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = ("ASCII letters, digits, '.', '-' or '_', not starting with '.' or '-', at most "
             "64 characters")
# A kernel parameter: name[=value] (Documentation/admin-guide/kernel-parameters.rst), in a
# charset with no blank, quote or shell character, so that it stays one word of the
# command line and of QEMU's argv.
CMDLINE_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:=[A-Za-z0-9_.,:+/@%-]*)?")
# Parameters vmtest sets itself (vmtest/qemu/argv.py kernel_cmdline): a variant changing
# them would break the harness, not test the kernel.
RESERVED_PARAMS = {"console": "", "rdinit": "", "init": "", "root": "", "panic": "",
                   "oops": "", "memhp_default_state": "",
                   "cma": "set machine: {cma: SIZE} instead"}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SIZE = re.compile(r"(\d+)([KMGT]?)(?:i?B)?", re.IGNORECASE)
_UNIT = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# The experiment's folder is copied into every guest: bounded, so that a file put in a
# big folder does not make every initramfs huge.
WORKDIR_MAX_BYTES = 64 << 20
WORKDIR_MAX_FILES = 2000


@dataclass(frozen=True)
class Variant:
    name: str
    series: tuple[Path, ...]  # the full, ordered series for this variant
    description: str = ""
    cmdline: tuple[str, ...] = ()  # kernel parameters, one validated word each
    sysctl: tuple[tuple[str, str], ...] = ()  # (name, value), set before the scenario
    machine: MachineOptions = field(default_factory=MachineOptions)

    def boot_overrides(self) -> dict[str, Any]:
        """BootOptions fields this variant sets; applied after the scenario's."""
        overrides = self.machine.boot_overrides()
        if self.cmdline:
            overrides["cmdline_extra"] = self.cmdline
        return overrides

    def to_dict(self) -> dict[str, Any]:
        """How the variant boots, for the result document."""
        return {"cmdline": list(self.cmdline), "sysctl": dict(self.sysctl),
                "machine": self.machine.to_dict()}


@dataclass(frozen=True)
class KernelDef:
    name: str
    source: KernelSource
    fragments: tuple[kconfig.Fragment, ...]
    variants: tuple[Variant, ...]
    arch: str = archs.DEFAULT  # the guest architecture (arch.ARCHES)

    def variant(self, name: str, origin: str = "") -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise ConfigError(f"{origin}unknown variant {name!r} of kernel {self.name!r}",
                          hint=f"available: {', '.join(v.name for v in self.variants)}")

    def build_spec(self, variant: Variant) -> BuildSpec:
        """What to build: cmdline, sysctl and machine are not part of it, so variants
        that differ only there have the same build key (one build serves them)."""
        return BuildSpec(source=self.source, fragments=self.fragments, patches=variant.series,
                         variant=variant.name, base=self.name, arch=self.arch)


@dataclass(frozen=True)
class ScenarioDef:
    name: str
    metrics: tuple[str, ...]  # the first is the primary metric
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    lower_is_better: bool = True
    # Per metric, where a metric says `better:` (data-defined ones always do).
    better: Mapping[str, bool] = field(default_factory=lambda: MappingProxyType({}))
    custom: CustomSpec | None = None  # a data-defined scenario (None: built in)
    pytest: PytestSpec | None = None  # a pytest scenario (_pytest_scenario below)

    def lower_is_better_for(self, metric: str) -> bool:
        return self.better.get(metric, self.lower_is_better)

    def scenario_class(self) -> type[catalog.Scenario]:
        """The Scenario class (headline, PROGRESS_METRICS, METRICS) without making one."""
        if self.pytest is not None:
            return pytest_scenario.scenario_class(self.pytest)
        return custom.scenario_class(self.custom) if self.custom is not None \
            else catalog.get(self.name)

    def make(self, profile: str, **extra: Any) -> catalog.Scenario:
        """The scenario with the profile's parameters, this config's, then extra's. A
        data-defined one takes only `seed` (each repetition's)."""
        if self.custom is not None or self.pytest is not None:
            unknown = sorted(set(extra) - {"seed"})
            if unknown:
                raise ConfigError(f"scenario {self.name} is defined by its file and has no "
                                  f"parameter {unknown[0]!r}",
                                  hint="change it in the experiment file")
            seed = extra.get("seed", 1)
            seed = seed if isinstance(seed, int) else 1
            if self.pytest is not None:
                return pytest_scenario.make(self.pytest, profile, seed=seed)
            assert self.custom is not None
            return custom.make(self.custom, profile, seed=seed)
        return catalog.make(self.name, profile, {**self.params, **extra})


@dataclass(frozen=True)
class MatrixDef:
    kernels: tuple[str, ...]
    variants: tuple[str, ...]  # the first is the baseline
    scenarios: tuple[str, ...]
    repetitions: int
    profile: str


@dataclass(frozen=True)
class Experiment:
    path: Path
    kernels: tuple[KernelDef, ...]
    scenarios: tuple[ScenarioDef, ...] = ()
    matrix: MatrixDef | None = None
    description: str = ""

    def scenario(self, name: str) -> ScenarioDef:
        for sc in self.scenarios:
            if sc.name == name:
                return sc
        raise ConfigError(f"{self.path}: scenario {name!r} is not defined",
                          hint=f"defined: {', '.join(s.name for s in self.scenarios)}")

    def kernel(self, name: str) -> KernelDef:
        for kernel in self.kernels:
            if kernel.name == name:
                return kernel
        raise ConfigError(f"{self.path}: unknown kernel {name!r}",
                          hint=f"available: {', '.join(k.name for k in self.kernels)}")


# -- the keys each level allows (docs/experiment.schema.json lists the same; a unit test
# keeps them equal) ----------------------------------------------------------------------
TOP_KEYS = ("description", "kernels", "scenarios", "matrix")
KERNEL_KEYS = ("source", "fragments", "patches", "variants", "description", "arch")
SOURCE_KEYS = ("git", "path", "ref")
VARIANT_KEYS = ("patches", "drop", "description", "cmdline", "sysctl", "machine")
MACHINE_KEYS = ("memory", "cpus", "numa", "cma", "slots", "maxmem")
BUILTIN_SCENARIO_KEYS = ("metrics", "params", "lower_is_better", "description")
BUILTIN_METRIC_KEYS = ("name", "better")
DATA_SCENARIO_KEYS = ("run", "timeout_s", "setup", "machine", "load", "metrics", "env",
                      "description")
LOAD_KEYS = ("lru_stress", "stress_ng", "fill", "cma_alloc", "hotplug")
LRU_STRESS_KEYS = ("ops", "workers", "anon_mib", "file_mib", "burst", "pause_us",
                   "refault_ms")
CMA_ALLOC_KEYS = ("size", "period_s")
HOTPLUG_KEYS = ("dimm", "dimms", "offline_timeout_s")
METRIC_COMMON_KEYS = ("name", "from", "better", "description")
METRIC_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "stdout": ("pattern", "json", "reduce"),
    "stderr": ("pattern", "json", "reduce"),
    "exit": (),
    "dmesg": ("pattern", "splats", "dump_reason", "summary"),
    "vmstat": ("counter", "take"),
    "meminfo": ("field", "take"),
    "file": ("path", "take", "pattern"),
    "tracefs": ("event", "begin", "end", "reduce"),
}
SUMMARY_KEYS = ("op", "field", "reduce")
MATRIX_KEYS = ("kernels", "variants", "scenarios", "repetitions", "profile")
BETTER = ("lower", "higher")


def load(path: str | Path) -> Experiment:
    path = Path(path)
    root = yamlsrc.load(path)
    if root.value is None:
        raise root.error("the file is empty", hint="see docs/experiments.md")
    top = root.mapping(TOP_KEYS, what="a mapping (kernels:, scenarios:, matrix:)")
    base_dir = path.parent
    description = _text(top.get("description"))
    kernels_node = root.child("kernels")
    kernels_raw = kernels_node.mapping(what="a mapping of kernels")
    if not kernels_raw:
        raise kernels_node.error("no kernels defined")
    kernels = [_kernel(kernels_node, name, body, base_dir) for name, body in kernels_raw.items()]
    scenario_defs = _scenarios(root.child("scenarios", {}), base_dir)
    matrix = _matrix(root.child("matrix"), kernels, scenario_defs)
    return Experiment(path, tuple(kernels), scenario_defs, matrix, description)


# -- helpers ----------------------------------------------------------------------------
def _text(node: Node | None) -> str:
    return "" if node is None or node.value is None else node.text()


def _name(parent: Node, key: str, what: str) -> str:
    if not NAME.fullmatch(key) or not key.isascii():
        bad = parent.child(key)
        bad.line = parent.key_line(key)
        raise bad.error(f"{what} name {key!r} must be {NAME_RULE}")
    return key


def _one_of(node: Node, allowed: tuple[str, ...], what: str) -> str:
    value = node.text(f"one of {', '.join(allowed)}")
    if value not in allowed:
        raise node.error(f"unknown {what} {value!r}{_near(value, allowed)}",
                         hint=f"allowed: {', '.join(allowed)}")
    return value


def _proc_name(node: Node, what: str, prompt: str, pattern: re.Pattern[str],
               known: Any, hint: str) -> str:
    """A /proc counter or field name: well formed, and not a near miss of a known one (a
    typo); a name unlike any known one may exist in another kernel, where the guest says."""
    name = node.text(prompt)
    if not pattern.fullmatch(name):
        raise node.error(f"bad {what} name {name!r}")
    if name not in known and _near(name, known):
        raise node.error(f"unknown {what} {name!r}{_near(name, known)}", hint=hint)
    return name


def _near(value: str, known: Any) -> str:
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _size_mib(node: Node, what: str = "a size such as 512M or 2G", zero: bool = False) -> int:
    """'2G', '512M', '512' (MiB) or an integer (MiB) -> MiB."""
    value = node.expect((int, str), what)
    m = SIZE.fullmatch(str(value).strip())
    if not m:
        raise node.error(f"bad size {value!r}", hint="a size such as 512M or 2G")
    size = int(m.group(1)) * _UNIT[m.group(2).upper()]
    if size % (1 << 20):
        raise node.error(f"size {value!r} is not a whole number of MiB")
    if size == 0 and not zero:
        raise node.error("size must be more than 0")
    return size >> 20


def _patch(node: Node, base_dir: Path) -> Path:
    name = node.text("a patch path")
    candidates = [base_dir / name, paths.kernels_dir() / "patches" / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise node.error(f"patch {name!r} not found",
                     hint=f"looked in {base_dir} and {paths.kernels_dir() / 'patches'}")


def _source(node: Node, base_dir: Path) -> KernelSource:
    value = node.value
    if isinstance(value, str) and value.startswith("debian:"):
        series = value.split(":", 1)[1]
        if series not in DEBIAN_SERIES:
            raise node.error(f"unknown Debian kernel source {value!r}",
                             hint="allowed: " + ", ".join(f"debian:{s}" for s in DEBIAN_SERIES))
        return DebianSource(series)
    if isinstance(value, dict):
        body = node.mapping(SOURCE_KEYS)
        tree_node = body.get("git") or body.get("path") or node.child("git")
        tree = tree_node.text("a path to a kernel tree")
        path = (base_dir / Path(tree).expanduser()).resolve()
        if not path.is_dir():
            raise tree_node.error(f"no such directory {path}")
        ref = body["ref"].text("a git ref") if "ref" in body else None
        return LocalTree(path, ref)
    raise node.error(f"bad source {value!r}",
                     hint="allowed: debian:6.1, debian:6.12, or {git: PATH, ref: REF}")


# -- kernels and variants -----------------------------------------------------------------
def _kernel(parent: Node, name: str, node: Node, base_dir: Path) -> KernelDef:
    _name(parent, name, "kernel")
    if node.value is None:
        node.value = {}
    node.mapping(KERNEL_KEYS)  # unknown keys are errors
    arch_node = node.child("arch", archs.DEFAULT)
    try:
        arch = archs.get(arch_node.text("an architecture name")).name
    except ConfigError as exc:
        raise arch_node.error(str(exc), exc.hint) from exc
    source = _source(node.child("source", "debian:6.1"), base_dir)
    fragments = []
    for item in node.child("fragments", list(kconfig.DEFAULT_FRAGMENTS)).items(
            "a list of fragment names"):
        frag = item.text("a fragment name or path")
        try:
            fragments.append(kconfig.load_fragment(frag if "/" not in frag else base_dir / frag))
        except ConfigError as exc:
            raise item.error(str(exc), exc.hint) from exc
    common = [_patch(p, base_dir) for p in node.child("patches", []).items("a list of patches")]
    variants_node = node.child("variants", {"default": {}})
    variants = [_variant(variants_node, vname, vbody, common, base_dir)
                for vname, vbody in variants_node.mapping(what="a mapping of variants").items()]
    if not variants:
        raise variants_node.error("no variants defined", hint="leave variants: out for one "
                                                              "variant named default")
    numa = [v.name for v in variants if (v.machine.numa_nodes or 0) > 1]
    if numa and not any(("CONFIG_NUMA", "y") in f.options for f in fragments):
        raise variants_node.error(f"variant {numa[0]} asks for NUMA nodes, and the kernel's "
                                  "fragments do not turn CONFIG_NUMA on",
                                  hint="add the fragment numa to the kernel's fragments: "
                                       "[qemu-guest, mm-migration, mm-selftests, numa]")
    return KernelDef(name, source, tuple(fragments), tuple(variants), arch)


def _variant(parent: Node, name: str, node: Node, common: list[Path],
             base_dir: Path) -> Variant:
    _name(parent, name, "variant")
    if node.value is None:
        node.value = {}
    body = node.mapping(VARIANT_KEYS)
    series = list(common)
    for item in node.child("drop", []).items("a list of patches"):
        dropped = _patch(item, base_dir)
        if dropped not in series:
            raise item.error(f"{item.value!r} is not in the base series",
                             hint="base series: " + (", ".join(p.name for p in common)
                                                     or "(empty)"))
        series.remove(dropped)
    series += [_patch(p, base_dir) for p in node.child("patches", []).items("a list of patches")]
    cmdline = _cmdline(body["cmdline"]) if "cmdline" in body else ()
    sysctl = _sysctl(body["sysctl"]) if "sysctl" in body else ()
    machine = _machine(body["machine"]) if "machine" in body else MachineOptions()
    return Variant(name, tuple(series), _text(body.get("description")), cmdline, sysctl,
                   machine)


def _cmdline(node: Node) -> tuple[str, ...]:
    """Kernel parameters: a string of blank-separated words or a list of words."""
    if isinstance(node.value, str):
        words = [(node, w) for w in node.value.split()]
    else:
        words = [(item, item.text("a kernel parameter (name or name=value)"))
                 for item in node.items("a string or a list of kernel parameters")]
    for where, word in words:
        if not CMDLINE_WORD.fullmatch(word) or not word.isascii():
            raise where.error(f"kernel parameter {word!r} is not name[=value] in letters, "
                              "digits and _.-,:+/@%",
                              hint="one parameter per word, no quotes, blanks or shell "
                                   "characters")
        param = word.split("=", 1)[0]
        if param in RESERVED_PARAMS:
            raise where.error(f"kernel parameter {param} is set by vmtest itself",
                              hint=RESERVED_PARAMS[param] or "leave it out")
    return tuple(w for _, w in words)


def _sysctl(node: Node) -> tuple[tuple[str, str], ...]:
    settings = []
    for name, value_node in node.mapping(what="a mapping of sysctl: value").items():
        if not sysctl_mod.NAME.fullmatch(name):
            bad = node.child(name)
            bad.line = node.key_line(name)
            raise bad.error(f"sysctl name {name!r} is not dotted like vm.swappiness",
                            hint="segments of letters, digits, _ and -, joined by dots")
        value = value_node.value
        if isinstance(value, bool):
            raise value_node.error(f"expected a number or a string, got boolean {value!r} "
                                   "(YAML reads on/off/yes/no/true/false as booleans)",
                                   hint="write the number (0 or 1) or quote the word")
        if isinstance(value, int):
            text = str(value)
        else:
            text = value_node.text("a number or a string")
            if not sysctl_mod.VALUE.fullmatch(text):
                raise value_node.error(f"sysctl value {text!r} must be words of letters, "
                                       "digits and _.:,+- separated by single spaces")
        settings.append((name, text))
    return tuple(settings)


def _machine(node: Node) -> MachineOptions:
    body = node.mapping(MACHINE_KEYS)
    memory = _size_mib(body["memory"]) if "memory" in body else None
    cma = _size_mib(body["cma"], zero=True) if "cma" in body else None
    maxmem = _size_mib(body["maxmem"]) if "maxmem" in body else None
    cpus = body["cpus"].integer(1) if "cpus" in body else None
    numa = body["numa"].integer(1, "an integer (NUMA nodes)") if "numa" in body else None
    slots = body["slots"].integer(0) if "slots" in body else None
    if cpus is not None and cpus > 64:
        raise body["cpus"].error(f"{cpus} CPUs is more than a TCG guest here can use",
                                 hint="at most 64")
    if numa is not None and numa > MAX_NUMA_NODES:
        raise body["numa"].error(f"{numa} NUMA nodes: at most {MAX_NUMA_NODES}")
    if cma is not None and memory is not None and cma >= memory:
        raise body["cma"].error(f"cma ({cma} MiB) must be smaller than memory ({memory} MiB)")
    if maxmem is not None and memory is not None and maxmem < memory:
        raise body["maxmem"].error(f"maxmem ({maxmem} MiB) is below memory ({memory} MiB)")
    return MachineOptions(memory_mib=memory, cpus=cpus, numa_nodes=numa, cma_mib=cma,
                          slots=slots, maxmem_mib=maxmem)


# -- scenarios ----------------------------------------------------------------------------
def _scenarios(node: Node, base_dir: Path) -> tuple[ScenarioDef, ...]:
    defs = []
    for name, body in node.mapping(what="a mapping of scenarios").items():
        _name(node, name, "scenario")
        if body.value is None:
            body.value = {}
        body.expect(dict)
        if body.has("pytest"):  # a pytest scenario: _pytest_scenario below
            if name in catalog.SCENARIOS or body.has("run"):
                raise body.child("pytest").error(
                    "a pytest scenario needs a name of its own and no run:")
            defs.append(_pytest_scenario(name, body, base_dir))
        elif name in catalog.SCENARIOS:
            if body.has("run"):
                raise body.child("run").error(
                    f"{name} is a built-in scenario; a scenario with run: needs a name of its "
                    "own", hint=f"built-in: {', '.join(sorted(catalog.SCENARIOS))}")
            defs.append(_builtin(name, body))
        elif body.has("run"):
            defs.append(_data_scenario(name, body, base_dir))
        else:
            where = Node(body.file, name, body.path, node.key_line(name), {})
            raise where.error(f"unknown scenario {name!r}{_near(name, catalog.SCENARIOS)}: "
                              "not built in, and no run: defines it",
                              hint=f"built-in: {', '.join(sorted(catalog.SCENARIOS))}; or "
                                   "give it run: COMMAND (or pytest: TESTS) and metrics: "
                                   "(docs/experiments.md)")
    return tuple(defs)


def _builtin(name: str, node: Node) -> ScenarioDef:
    body = node.mapping(BUILTIN_SCENARIO_KEYS)
    cls = catalog.SCENARIOS[name]
    metrics_node = node.child("metrics", [])
    names: list[str] = []
    better: dict[str, bool] = {}
    for item in metrics_node.items("a list of metric names (the first is the primary one)"):
        if isinstance(item.value, dict):
            fields = item.mapping(BUILTIN_METRIC_KEYS)
            if "name" not in fields:
                raise item.error("a metric needs name:")
            metric_node = fields["name"]
            if "better" in fields:
                better[metric_node.text()] = _one_of(fields["better"], BETTER,
                                                    "direction") == "lower"
        else:
            metric_node = item
        metric = metric_node.text("a metric name")
        if metric not in cls.METRICS:
            raise metric_node.error(f"scenario {name} produces no metric {metric!r}"
                                    f"{_near(metric, cls.METRICS)}",
                                    hint=f"its metrics: {', '.join(cls.METRICS)}")
        if metric in names:
            raise metric_node.error(f"metric {metric} is listed twice")
        names.append(metric)
    if not names:
        raise metrics_node.error("at least one metric is needed",
                                 hint=f"its metrics: {', '.join(cls.METRICS)}")
    params_node = node.child("params", {})
    params = params_node.mapping(what="a mapping of parameters")
    try:
        catalog.make(name, "quick", params_node.value)
    except ConfigError as exc:
        bad = next((params[k] for k in params if repr(k) in str(exc) or f" {k} " in str(exc)),
                   params_node)
        raise bad.error(str(exc), exc.hint) from exc
    lower = body["lower_is_better"].flag() if "lower_is_better" in body else True
    return ScenarioDef(name, tuple(names), MappingProxyType(dict(params_node.value)), lower,
                       MappingProxyType(better))


def _data_scenario(name: str, node: Node, base_dir: Path) -> ScenarioDef:
    body = node.mapping(DATA_SCENARIO_KEYS)
    run = body["run"].text("a shell command line (run in the guest)")
    if not run.strip():
        raise body["run"].error("the command is empty")
    _check_script(body["run"], run, base_dir)
    timeout_s = body["timeout_s"].number(positive=True) if "timeout_s" in body else 600.0
    setup = tuple(n.text() for n in body["setup"].strings()) if "setup" in body else ()
    machine = _machine(body["machine"]) if "machine" in body else MachineOptions()
    load = _load(body["load"], machine) if "load" in body else custom.LoadSpec()
    env = []
    for key, value in (body["env"].mapping(what="a mapping NAME: value").items()
                       if "env" in body else []):
        if not ENV_NAME.fullmatch(key) or key.startswith("VMTEST_"):
            raise value.error(f"environment variable name {key!r} must be letters, digits "
                              "and _, not starting with a digit or VMTEST_")
        if isinstance(value.value, (int, float)) and not isinstance(value.value, bool):
            env.append((key, str(value.value)))
        else:
            env.append((key, value.text("a string or a number")))
    metrics_node = node.child("metrics", [])
    metric_defs: list[MetricDef] = []
    for item in metrics_node.items("a list of metrics ({name, from, ...})"):
        metric = _metric(item)
        if metric.name in {m.name for m in metric_defs}:
            raise item.error(f"metric {metric.name} is defined twice")
        metric_defs.append(metric)
    if not metric_defs:
        raise metrics_node.error("at least one metric is needed (the first is the primary "
                                 "one)", hint="e.g. - {name: status, from: exit}")
    _check_workdir(node, base_dir)
    spec = CustomSpec(name=name, run=run, metrics=tuple(metric_defs), workdir=base_dir.resolve(),
                      timeout_s=timeout_s, setup=setup, machine=machine, load=load,
                      env=tuple(env), description=_text(body.get("description")))
    return ScenarioDef(name, tuple(m.name for m in metric_defs),
                       better=MappingProxyType({m.name: m.lower_is_better for m in metric_defs}),
                       lower_is_better=metric_defs[0].lower_is_better, custom=spec)


def _check_script(node: Node, command: str, base_dir: Path) -> None:
    """A command that starts with a script of the experiment's folder (./x.sh): it must
    be there and executable, or every run fails in the guest."""
    try:
        first = shlex.split(command)[0]
    except (ValueError, IndexError):
        return  # the guest's shell says what is wrong with it
    if not first.startswith("./"):
        return
    script = base_dir / first
    if not script.is_file():
        raise node.error(f"{first} is not a file in {base_dir} (the folder the command runs "
                         "from)", hint="put the script beside the experiment file")
    if not os.access(script, os.X_OK):
        raise node.error(f"{first} is not executable", hint=f"chmod +x {script}, or run: "
                                                            f"sh {first}")


def _check_workdir(node: Node, base_dir: Path) -> None:
    """The experiment's folder goes into every guest: not a home directory."""
    total, count = 0, 0
    for root, _, files in os.walk(base_dir):
        for f in files:
            count += 1
            try:
                total += (Path(root) / f).lstat().st_size
            except OSError:
                continue
            if total > WORKDIR_MAX_BYTES or count > WORKDIR_MAX_FILES:
                raise node.error(f"the experiment's folder {base_dir} is copied into the "
                                 f"guest and is too big (over {WORKDIR_MAX_BYTES >> 20} MiB or "
                                 f"{WORKDIR_MAX_FILES} files)",
                                 hint="put the experiment file and its scripts in a folder "
                                      "of their own")


def _load(node: Node, machine: MachineOptions) -> custom.LoadSpec:
    body = node.mapping(LOAD_KEYS)
    lru = None
    if "lru_stress" in body:
        lnode = body["lru_stress"]
        if isinstance(lnode.value, bool):
            lru = custom.LruStress() if lnode.value else None
        else:
            fields = lnode.mapping(LRU_STRESS_KEYS, what="true or a mapping of lru-stress "
                                                         "options")
            values: dict[str, Any] = {}
            for key, value in fields.items():
                values[key] = value.text() if key == "ops" else value.integer(0)
            lru = custom.LruStress(**values)
    stress_ng = ""
    if "stress_ng" in body:
        stress_ng = body["stress_ng"].text("a stress-ng argument line")
        try:
            shlex.split(stress_ng)
        except ValueError as exc:
            raise body["stress_ng"].error(f"cannot split {stress_ng!r}: {exc}") from exc
    fill = _size_mib(body["fill"], zero=True) if "fill" in body else 0
    cma = None
    if "cma_alloc" in body:
        fields = body["cma_alloc"].mapping(CMA_ALLOC_KEYS)
        cma = custom.CmaAlloc(
            mib=_size_mib(fields["size"]) if "size" in fields else 16,
            period_s=fields["period_s"].number(positive=True) if "period_s" in fields else 1.0)
        if machine.cma_mib is not None and cma.mib > machine.cma_mib:
            raise body["cma_alloc"].error(f"allocations of {cma.mib} MiB exceed the CMA area "
                                          f"({machine.cma_mib} MiB)")
        if machine.cma_mib == 0:
            raise body["cma_alloc"].error("the machine has no CMA area (cma: 0)")
    hotplug = None
    if "hotplug" in body:
        fields = body["hotplug"].mapping(HOTPLUG_KEYS)
        dimm = _size_mib(fields["dimm"]) if "dimm" in fields else 128
        if dimm % 128:
            raise fields["dimm"].error(f"dimm {dimm} MiB is not a multiple of 128 MiB (the "
                                       "x86 memory block)")
        hotplug = custom.Hotplug(
            dimm_mib=dimm, dimms=fields["dimms"].integer(1) if "dimms" in fields else 1,
            offline_timeout_s=fields["offline_timeout_s"].number(positive=True)
            if "offline_timeout_s" in fields else 20.0)
    return custom.LoadSpec(lru_stress=lru, stress_ng=stress_ng, fill_mib=fill, cma_alloc=cma,
                           hotplug=hotplug)


def _pattern(node: Node, groups: tuple[int, ...]) -> re.Pattern[str]:
    text = node.text("a regular expression")
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise node.error(f"bad pattern {text!r}: {exc}",
                         hint="a Python regular expression; quote it in YAML with '...'") from exc
    if pattern.groups not in groups:
        want = " or ".join(str(g) for g in groups)
        raise node.error(f"pattern {text!r} has {pattern.groups} groups; it needs {want}",
                         hint="one (...) around the number; (?:...) for other groups")
    return pattern


def _metric(node: Node) -> MetricDef:
    node.expect(dict, "a metric mapping {name, from, ...}")
    if "from" not in node.value:
        raise node.error("a metric needs from: (where its value comes from)",
                         hint=f"sources: {', '.join(metrics_mod.SOURCES)}")
    source = _one_of(node.child("from"), metrics_mod.SOURCES, "metric source")
    body = node.mapping(METRIC_COMMON_KEYS + METRIC_SOURCE_KEYS[source])
    if "name" not in body:
        raise node.error("a metric needs name:")
    name = body["name"].text("a metric name")
    if not NAME.fullmatch(name) or not name.isascii():
        raise body["name"].error(f"metric name {name!r} must be {NAME_RULE}")
    values: dict[str, Any] = {"name": name, "source": source,
                              "description": _text(body.get("description"))}
    if "better" in body:
        values["lower_is_better"] = _one_of(body["better"], BETTER, "direction") == "lower"

    def exactly_one(keys: tuple[str, ...]) -> str:
        given = [k for k in keys if k in body]
        if len(given) != 1:
            raise node.error(f"from: {source} needs exactly one of {', '.join(keys)}"
                             + (f" (got {', '.join(given)})" if given else ""))
        return given[0]

    def take(default: str) -> None:
        values["take"] = _one_of(body["take"], metrics_mod.TAKES, "take") \
            if "take" in body else default

    if source in ("stdout", "stderr"):
        values["reduce"] = _one_of(body["reduce"], metrics_mod.REDUCTIONS, "reduction") \
            if "reduce" in body else "last"
        if exactly_one(("pattern", "json")) == "pattern":
            values["pattern"] = _pattern(body["pattern"],
                                         (0, 1) if values["reduce"] == "count" else (1,))
        else:
            key = body["json"].text("a key of JSON-object lines (a.b for nested)")
            if not key or any(not part for part in key.split(".")):
                raise body["json"].error(f"bad JSON key {key!r}")
            values["json_key"] = key
    elif source == "dmesg":
        which = exactly_one(("pattern", "splats", "dump_reason", "summary"))
        if which == "pattern":
            values["pattern"] = _pattern(body["pattern"], tuple(range(100)))
        elif which == "splats":
            values["splats"] = _one_of(body["splats"], metrics_mod.SPLAT_KINDS, "splat kind")
        elif which == "dump_reason":
            values["dump_reason"] = body["dump_reason"].text("a dump_page() reason")
        else:
            summary = body["summary"].mapping(SUMMARY_KEYS)
            for key in ("op", "field"):
                if key not in summary:
                    raise body["summary"].error(f"summary needs {key}:",
                                                hint="e.g. {op: alloc_contig_range, "
                                                     "field: drains}")
            op = summary["op"].text("an op name")
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", op):
                raise summary["op"].error(f"bad op name {op!r}")
            values["summary_op"] = op
            values["summary_field"] = _one_of(summary["field"], metrics_mod.SUMMARY_FIELDS,
                                              "summary field")
            values["reduce"] = _one_of(summary["reduce"], metrics_mod.REDUCTIONS,
                                       "reduction") if "reduce" in summary else "sum"
    elif source == "vmstat":
        if "counter" not in body:
            raise node.error("from: vmstat needs counter: (a /proc/vmstat name)")
        values["counter"] = _proc_name(body["counter"], "vmstat counter",
                                       "a /proc/vmstat counter name",
                                       metrics_mod.COUNTER_NAME, known_names.VMSTAT,
                                       "names as /proc/vmstat prints them")
        take("delta")
    elif source == "meminfo":
        if "field" not in body:
            raise node.error("from: meminfo needs field: (a /proc/meminfo name)")
        values["field_name"] = _proc_name(body["field"], "meminfo field",
                                          "a /proc/meminfo field name",
                                          metrics_mod.MEMINFO_FIELD, known_names.MEMINFO,
                                          "names as /proc/meminfo prints them, without ':'")
        take("delta")
    elif source == "file":
        if "path" not in body:
            raise node.error("from: file needs path: (a /proc or /sys file)")
        fpath = body["path"].text("an absolute path under /proc or /sys")
        if not metrics_mod.FILE_PATH.fullmatch(fpath) or "/../" in fpath + "/" \
                or "/./" in fpath + "/":
            raise body["path"].error(f"path {fpath!r} must be an absolute path under /proc or "
                                     "/sys (letters, digits, _.:@+,-)")
        values["path"] = fpath
        if "pattern" in body:
            values["pattern"] = _pattern(body["pattern"], (1,))
        take("after")
    elif source == "tracefs":
        given = [k for k in ("event", "begin", "end") if k in body]
        if given not in (["event"], ["begin", "end"]):
            raise node.error("from: tracefs needs event: (a count) or begin: and end: (a "
                             "latency)", hint="e.g. event: compaction/mm_compaction_begin")
        for key in given:
            event = body[key].text("an event as SUBSYSTEM/NAME")
            if not metrics_mod.EVENT_NAME.fullmatch(event):
                raise body[key].error(f"trace event {event!r} is not SUBSYSTEM/NAME",
                                      hint="as under /sys/kernel/tracing/events, e.g. "
                                           "compaction/mm_compaction_begin")
            values[key] = event
        if "reduce" in body:
            if "event" in values:
                raise body["reduce"].error("an event count takes no reduce:")
            values["reduce"] = _one_of(body["reduce"], metrics_mod.LATENCY_REDUCTIONS,
                                       "reduction")
        elif "begin" in values:
            values["reduce"] = "median"
    return MetricDef(**values)


# -- the matrix ---------------------------------------------------------------------------
def _matrix(node: Node, kernels: list[KernelDef],
            scenario_defs: tuple[ScenarioDef, ...]) -> MatrixDef | None:
    if node.value is None:
        return None
    body = node.mapping(MATRIX_KEYS)
    known_k = {k.name: k for k in kernels}
    names = []
    for item in node.child("kernels", list(known_k)).items("a list of kernel names"):
        kname = item.text("a kernel name")
        if kname not in known_k:
            raise item.error(f"unknown kernel {kname!r}", hint=f"available: {', '.join(known_k)}")
        names.append(kname)
    if "variants" not in body:
        raise node.error("matrix needs variants: (baseline first)")
    variants = []
    for item in body["variants"].items("a list of variant names (baseline first)"):
        vname = item.text("a variant name")
        for kname in names:
            have = [v.name for v in known_k[kname].variants]
            if vname not in have:
                raise item.error(f"kernel {kname!r} has no variant {vname!r}",
                                 hint=f"available: {', '.join(have)}")
        if vname in variants:
            raise item.error(f"variant {vname} is listed twice")
        variants.append(vname)
    if len(variants) < 2:
        raise body["variants"].error("a comparison needs at least two variants")
    if "scenarios" not in body:
        raise node.error("matrix needs scenarios:")
    defined = {s.name: s for s in scenario_defs}
    sc_names = []
    for item in body["scenarios"].items("a list of scenario names"):
        sname = item.text("a scenario name")
        if sname not in defined:
            raise item.error(f"scenario {sname!r} is not defined under scenarios:",
                             hint=f"defined: {', '.join(sorted(defined)) or '(none)'}")
        sc_names.append(sname)
    reps = body["repetitions"].integer(1) if "repetitions" in body else 1
    if not names or not sc_names:
        raise node.error("the matrix is empty (no kernels or no scenarios)")
    profile = body["profile"].text("a profile name") if "profile" in body else "seed"
    for sname in sc_names:
        if defined[sname].custom is None and defined[sname].pytest is None:
            profiles = catalog.SCENARIOS[sname].PROFILES
            if profile not in profiles:
                raise (body.get("profile") or node).error(
                    f"scenario {sname} has no profile {profile!r}",
                    hint=f"its profiles: {', '.join(profiles)}")
            _check_kernel_config(body["scenarios"], sname, defined[sname].make(profile),
                                 [known_k[k] for k in names])
    return MatrixDef(tuple(names), tuple(variants), tuple(sc_names), reps, profile)


def _check_kernel_config(node: Node, sname: str, scenario: catalog.Scenario,
                         kernels: list[KernelDef]) -> None:
    """Each kernel of the matrix turns on what the scenario needs of it (hotplug-offline's
    virtio-mem backend: CONFIG_VIRTIO_MEM), as NUMA variants need the fragment numa."""
    from vmtest.kernel.build import all_fragments

    for symbol, fragment in scenario.kernel_needs().items():
        for kernel in kernels:
            if kconfig.fragments_have(all_fragments(kernel.build_spec(kernel.variants[0])),
                                      symbol):
                continue
            names = [f.name for f in kernel.fragments]
            raise node.error(f"scenario {sname} needs {symbol}, which the fragments of "
                             f"kernel {kernel.name} do not turn on (add the fragment "
                             f"{fragment})",
                             hint=f"fragments: [{', '.join([*names, fragment])}]")


# -- pytest scenarios (`pytest: FILE`): kept apart from the rest of the loader ------------
# A pytest scenario runs a test module on the host with the run's guest as its `vm`
# (vmtest/scenarios/pytest_scenario.py); its metrics count outcomes and read what tests
# recorded (vmtest/collect/pytest_report.py). docs/experiment.schema.json lists the same
# keys (tests/unit/test_schema.py).
PYTEST_SCENARIO_KEYS = ("pytest", "keyword", "markers", "timeout_s", "machine", "metrics",
                        "description")
PYTEST_METRIC_COMMON_KEYS = ("name", "from", "better", "description")
PYTEST_METRIC_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "pytest": ("outcome", "test"),
    "record": ("key", "reduce", "test"),
}


def _pytest_scenario(name: str, node: Node, base_dir: Path) -> ScenarioDef:
    body = node.mapping(PYTEST_SCENARIO_KEYS)
    tests_node = body["pytest"]
    paths = [n.text("a test file or folder, relative to the experiment file")
             for n in (tests_node.strings() if isinstance(tests_node.value, list)
                       else [tests_node])]
    if not paths:
        raise tests_node.error("no tests named", hint="pytest: tests/test_x.py")
    tests = []
    for text in paths:
        path = (base_dir / text).resolve()
        if not path.exists():
            raise tests_node.error(f"{text} is not in {base_dir} (pytest: names files or "
                                   "folders relative to the experiment file)")
        tests.append(path)
    metrics_node = node.child("metrics", [])
    metric_defs: list[PytestMetric] = []
    for item in metrics_node.items("a list of metrics ({name, from, ...})"):
        metric = _pytest_metric(item)
        if metric.name in {m.name for m in metric_defs}:
            raise item.error(f"metric {metric.name} is defined twice")
        metric_defs.append(metric)
    if not metric_defs:
        raise metrics_node.error("at least one metric is needed (the first is the primary "
                                 "one)",
                                 hint="e.g. - {name: passed, from: pytest, outcome: passed, "
                                      "better: higher}")
    spec = PytestSpec(
        name=name, tests=tuple(tests), metrics=tuple(metric_defs), rootdir=base_dir.resolve(),
        keyword=body["keyword"].text("a pytest -k expression") if "keyword" in body else "",
        markers=body["markers"].text("a pytest -m expression") if "markers" in body else "",
        timeout_s=body["timeout_s"].number(positive=True) if "timeout_s" in body else 600.0,
        machine=_machine(body["machine"]) if "machine" in body else MachineOptions(),
        description=_text(body.get("description")))
    return ScenarioDef(
        name, tuple(m.name for m in metric_defs),
        better=MappingProxyType({m.name: m.lower_is_better for m in metric_defs}),
        lower_is_better=metric_defs[0].lower_is_better, pytest=spec)


def _pytest_metric(node: Node) -> PytestMetric:
    node.expect(dict, "a metric mapping {name, from, ...}")
    if "from" not in node.value:
        raise node.error("a metric needs from: (where its value comes from)",
                         hint=f"a pytest scenario's sources: {', '.join(pytest_report.SOURCES)}")
    source = _one_of(node.child("from"), pytest_report.SOURCES,
                            "metric source of a pytest scenario")
    body = node.mapping(PYTEST_METRIC_COMMON_KEYS + PYTEST_METRIC_SOURCE_KEYS[source])
    if "name" not in body:
        raise node.error("a metric needs name:")
    name = body["name"].text("a metric name")
    if not NAME.fullmatch(name) or not name.isascii():
        raise body["name"].error(f"metric name {name!r} must be {NAME_RULE}")
    metric = PytestMetric(
        name=name, source=source, description=_text(body.get("description")),
        lower_is_better=_one_of(body["better"], BETTER, "direction") == "lower"
        if "better" in body else True,
        test=body["test"].text("a test name (test_x, test_x[param], Class::test_x)")
        if "test" in body else "")
    if source == "pytest":
        outcome = _one_of(body["outcome"], pytest_report.OUTCOMES, "outcome") \
            if "outcome" in body else "passed"
        return PytestMetric(**{**metric.__dict__, "outcome": outcome})
    if "key" not in body:
        raise node.error("from: record needs key: (the name a test gives vm.record())")
    key = body["key"].text("a name given to vm.record()")
    if not key:
        raise body["key"].error("the key is empty")
    how = _one_of(body["reduce"], pytest_report.REDUCTIONS, "reduction") \
        if "reduce" in body else "last"
    return PytestMetric(**{**metric.__dict__, "key": key, "reduce": how})
