"""YAML experiment definitions -> frozen dataclasses, validated on load.

A *kernel* is a base tree (Debian's linux-source-X.Y or a git tree at a ref), an
ordered patch series and config fragments. A *variant* is that kernel with patches
added (appended to the series) or dropped (removed from it). Errors name the file,
the key, the bad value and what is allowed; nothing downstream sees raw dicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from vmtest import arch as archs
from vmtest import paths
from vmtest import scenarios as catalog
from vmtest.errors import ConfigError
from vmtest.kernel import kconfig
from vmtest.kernel.build import BuildSpec
from vmtest.kernel.source import DEBIAN_SERIES, DebianSource, KernelSource, LocalTree


@dataclass(frozen=True)
class Variant:
    name: str
    series: tuple[Path, ...]  # the full, ordered series for this variant
    description: str = ""


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
        return BuildSpec(source=self.source, fragments=self.fragments, patches=variant.series,
                         variant=variant.name, base=self.name, arch=self.arch)


@dataclass(frozen=True)
class ScenarioDef:
    name: str
    metrics: tuple[str, ...]  # the first is the primary metric
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    lower_is_better: bool = True

    def make(self, profile: str, **extra: Any) -> catalog.Scenario:
        """The scenario with the profile's parameters, this config's, then extra's."""
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


class _Where:
    """Builds error messages that point at file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}", hint=hint)


def _expect(where: _Where, key: str, value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise where.error(key, f"expected {what}, got {type(value).__name__} {value!r}")
    return value


def _keys(where: _Where, key: str, mapping: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise where.error(f"{key}.{unknown[0]}" if key else unknown[0], "unknown key",
                          hint=f"allowed here: {', '.join(sorted(allowed))}")


def _patch(where: _Where, key: str, name: Any, base_dir: Path) -> Path:
    _expect(where, key, name, str, "a patch path")
    candidates = [base_dir / name, paths.kernels_dir() / "patches" / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise where.error(key, f"patch {name!r} not found",
                      hint=f"looked in {base_dir} and {paths.kernels_dir() / 'patches'}")


def _source(where: _Where, key: str, value: Any, base_dir: Path) -> KernelSource:
    if isinstance(value, str) and value.startswith("debian:"):
        series = value.split(":", 1)[1]
        if series not in DEBIAN_SERIES:
            raise where.error(key, f"unknown Debian kernel source {value!r}",
                              hint="allowed: " + ", ".join(f"debian:{s}" for s in DEBIAN_SERIES))
        return DebianSource(series)
    if isinstance(value, dict):
        _keys(where, key, value, {"git", "ref", "path"})
        tree: str = _expect(where, f"{key}.git", value.get("git") or value.get("path"), str,
                            "a path to a kernel tree")
        path = (base_dir / Path(tree).expanduser()).resolve()
        if not path.is_dir():
            raise where.error(f"{key}.git", f"no such directory {path}")
        ref = value.get("ref")
        if ref is not None:
            _expect(where, f"{key}.ref", ref, str, "a git ref")
        return LocalTree(path, ref)
    raise where.error(key, f"bad source {value!r}",
                      hint="allowed: debian:6.1, debian:6.12, or {git: PATH, ref: REF}")


def load(path: str | Path) -> Experiment:
    path = Path(path)
    where = _Where(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: broken YAML{at}: {getattr(exc, 'problem', exc)}",
                          hint="fix the YAML syntax (indentation, colons, quotes)") from exc
    _expect(where, "(top level)", raw, dict, "a mapping")
    _keys(where, "", raw, {"kernels", "scenarios", "matrix", "description"})
    kernels_raw = _expect(where, "kernels", raw.get("kernels"), dict, "a mapping of kernels")
    if not kernels_raw:
        raise where.error("kernels", "no kernels defined")
    base_dir = path.parent
    kernels = []
    for name, body in kernels_raw.items():
        key = f"kernels.{name}"
        # Kernel names become parts of run directories' names: nothing that leaves them.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(name)):
            raise where.error(key, f"kernel name {name!r} must be letters, digits, '.', '-' "
                                   "or '_', not starting with '.' or '-'")
        _expect(where, key, body, dict, "a mapping")
        _keys(where, key, body, {"source", "fragments", "patches", "variants", "description",
                                 "arch"})
        arch_name = str(body.get("arch", archs.DEFAULT))
        if archs.ALIASES.get(arch_name, arch_name) not in archs.ARCHES:
            raise where.error(f"{key}.arch", f"unknown architecture {arch_name!r}",
                              hint=f"available: {', '.join(archs.ARCHES)}")
        source = _source(where, f"{key}.source", body.get("source", "debian:6.1"), base_dir)
        frag_names = body.get("fragments", list(kconfig.DEFAULT_FRAGMENTS))
        _expect(where, f"{key}.fragments", frag_names, list, "a list of fragment names")
        fragments = []
        for i, frag in enumerate(frag_names):
            try:
                fragments.append(kconfig.load_fragment(frag if "/" not in str(frag)
                                                       else base_dir / frag))
            except ConfigError as exc:
                raise where.error(f"{key}.fragments[{i}]", str(exc), exc.hint) from exc
        common = [_patch(where, f"{key}.patches[{i}]", p, base_dir)
                  for i, p in enumerate(_expect(where, f"{key}.patches", body.get("patches", []),
                                                list, "a list of patches"))]
        variants_raw = _expect(where, f"{key}.variants", body.get("variants", {"default": {}}),
                               dict, "a mapping of variants")
        variants = []
        for vname, vbody in variants_raw.items():
            vkey = f"{key}.variants.{vname}"
            vbody = vbody or {}
            _expect(where, vkey, vbody, dict, "a mapping")
            _keys(where, vkey, vbody, {"patches", "drop", "description"})
            if not str(vname).replace("-", "").replace("_", "").isalnum():
                raise where.error(vkey, f"variant name {vname!r} must be letters, digits, - or _")
            series = list(common)
            for i, name_ in enumerate(vbody.get("drop", [])):
                dropped = _patch(where, f"{vkey}.drop[{i}]", name_, base_dir)
                if dropped not in series:
                    raise where.error(f"{vkey}.drop[{i}]", f"{name_!r} is not in the base series",
                                      hint="base series: " + ", ".join(p.name for p in common))
                series.remove(dropped)
            series += [_patch(where, f"{vkey}.patches[{i}]", p, base_dir)
                       for i, p in enumerate(vbody.get("patches", []))]
            variants.append(Variant(str(vname), tuple(series), str(vbody.get("description", ""))))
        kernels.append(KernelDef(str(name), source, tuple(fragments), tuple(variants),
                                 archs.ALIASES.get(arch_name, arch_name)))
    scenario_defs = _scenarios(where, raw.get("scenarios") or {})
    matrix = _matrix(where, raw.get("matrix"), kernels, scenario_defs)
    return Experiment(path, tuple(kernels), scenario_defs, matrix)


def default_build_spec() -> BuildSpec:
    """The built-in default kernel: the default experiment's first kernel and variant
    (Debian's 6.1 as shipped, with the instrumentation)."""
    kernel = load(paths.default_config()).kernels[0]
    return kernel.build_spec(kernel.variants[0])


def _scenarios(where: _Where, raw: Any) -> tuple[ScenarioDef, ...]:
    _expect(where, "scenarios", raw, dict, "a mapping of scenarios")
    defs = []
    for name, body in raw.items():
        key = f"scenarios.{name}"
        body = body or {}
        _expect(where, key, body, dict, "a mapping")
        _keys(where, key, body, {"metrics", "params", "lower_is_better"})
        if name not in catalog.SCENARIOS:
            raise where.error(key, f"unknown scenario {name!r}",
                              hint=f"available: {', '.join(sorted(catalog.SCENARIOS))}")
        metrics = _expect(where, f"{key}.metrics", body.get("metrics", []), list,
                          "a list of metric names (the first is the primary one)")
        if not metrics:
            raise where.error(f"{key}.metrics", "at least one metric is needed")
        params = _expect(where, f"{key}.params", body.get("params", {}), dict, "a mapping")
        try:
            catalog.make(name, "quick", params)
        except ConfigError as exc:
            raise where.error(f"{key}.params", str(exc), exc.hint) from exc
        defs.append(ScenarioDef(str(name), tuple(str(m) for m in metrics),
                                MappingProxyType(dict(params)),
                                bool(body.get("lower_is_better", True))))
    return tuple(defs)


def _matrix(where: _Where, raw: Any, kernels: list[KernelDef],
            scenario_defs: tuple[ScenarioDef, ...]) -> MatrixDef | None:
    if raw is None:
        return None
    _expect(where, "matrix", raw, dict, "a mapping")
    _keys(where, "matrix", raw, {"kernels", "variants", "scenarios", "repetitions", "profile"})
    known_k = {k.name: k for k in kernels}
    names = [str(n) for n in _expect(where, "matrix.kernels",
                                     raw.get("kernels", list(known_k)), list, "a list")]
    for i, n in enumerate(names):
        if n not in known_k:
            raise where.error(f"matrix.kernels[{i}]", f"unknown kernel {n!r}",
                              hint=f"available: {', '.join(known_k)}")
    variants = [str(v) for v in _expect(where, "matrix.variants", raw.get("variants"), list,
                                        "a list of variant names (baseline first)")]
    for i, v in enumerate(variants):
        for n in names:
            if v not in {x.name for x in known_k[n].variants}:
                raise where.error(f"matrix.variants[{i}]", f"kernel {n!r} has no variant {v!r}",
                                  hint="available: " + ", ".join(x.name for x in
                                                                 known_k[n].variants))
    if len(variants) < 2:
        raise where.error("matrix.variants", "a comparison needs at least two variants")
    sc_names = [str(s) for s in _expect(where, "matrix.scenarios", raw.get("scenarios"), list,
                                        "a list of scenario names")]
    defined = {s.name for s in scenario_defs}
    for i, sc in enumerate(sc_names):
        if sc not in defined:
            raise where.error(f"matrix.scenarios[{i}]", f"scenario {sc!r} is not defined under "
                              "scenarios:", hint=f"defined: {', '.join(sorted(defined))}")
    reps = raw.get("repetitions", 1)
    if not isinstance(reps, int) or reps < 1:
        raise where.error("matrix.repetitions", f"must be a positive integer, got {reps!r}")
    if not names or not sc_names:
        raise where.error("matrix", "the matrix is empty (no kernels or no scenarios)")
    profile = str(raw.get("profile", "seed"))
    return MatrixDef(tuple(names), tuple(variants), tuple(sc_names), reps, profile)
