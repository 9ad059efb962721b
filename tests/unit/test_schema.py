"""docs/experiment.schema.json against the loader (vmtest/config.py): every key the loader
accepts is in the schema and every key of the schema is accepted; the shipped experiment
files validate, and files the loader refuses for an unknown key or type do not.

Validated by a small JSON Schema subset validator (below: what the schema uses), so the
check needs no extra package; with `jsonschema` installed it is checked by that too."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmtest import config
from vmtest.collect import pytest_report

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs" / "experiment.schema.json").read_text())
FILES = [*(REPO / "configs").glob("*.yaml"), *(REPO / "examples").rglob("*.yaml")]

# Each $def of the schema that is an object, and the loader's keys for it.
LEVELS: dict[str, tuple[str, ...]] = {
    "kernel": config.KERNEL_KEYS, "gitSource": config.SOURCE_KEYS,
    "variant": config.VARIANT_KEYS, "machine": config.MACHINE_KEYS,
    "builtinScenario": config.BUILTIN_SCENARIO_KEYS,
    "builtinMetric": config.BUILTIN_METRIC_KEYS, "dataScenario": config.DATA_SCENARIO_KEYS,
    "load": config.LOAD_KEYS, "lruStress": config.LRU_STRESS_KEYS,
    "cmaAlloc": config.CMA_ALLOC_KEYS, "hotplug": config.HOTPLUG_KEYS,
    "summary": config.SUMMARY_KEYS, "matrix": config.MATRIX_KEYS,
    **{f"metric_{src}": config.METRIC_COMMON_KEYS + keys
       for src, keys in config.METRIC_SOURCE_KEYS.items()},
    "pytestScenario": config.PYTEST_SCENARIO_KEYS,
    **{f"pytestMetric_{src}": config.PYTEST_METRIC_COMMON_KEYS + keys
       for src, keys in config.PYTEST_METRIC_SOURCE_KEYS.items()},
}


def test_every_level_has_the_loaders_keys():
    assert set(SCHEMA["properties"]) == set(config.TOP_KEYS)
    objects = {name for name, d in SCHEMA["$defs"].items() if d.get("type") == "object"}
    assert objects == set(LEVELS)
    for name, keys in LEVELS.items():
        assert set(SCHEMA["$defs"][name]["properties"]) == set(keys), name
        assert SCHEMA["$defs"][name]["additionalProperties"] is False, name
    sources = [r["$ref"].rsplit("_", 1)[1] for r in SCHEMA["$defs"]["metric"]["oneOf"]]
    assert sources == list(config.metrics_mod.SOURCES)
    sources = [r["$ref"].rsplit("_", 1)[1] for r in SCHEMA["$defs"]["pytestMetric"]["oneOf"]]
    assert sources == list(pytest_report.SOURCES) == list(config.PYTEST_METRIC_SOURCE_KEYS)


# -- a validator for the subset of JSON Schema 2020-12 the file uses ----------------------
_TYPES = {"object": dict, "array": list, "string": str, "null": type(None), "boolean": bool}


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number"):
        ok = isinstance(value, int) if kind == "integer" else isinstance(value, (int, float))
        return ok and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    if "$ref" in schema:
        return errors(value, SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]], path)
    found: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is(value, k) for k in kinds):
            return [f"{path}: not {kinds}"]
    if "const" in schema and value != schema["const"]:
        found.append(f"{path}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            found.append(f"{path}: too short")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{path}: above {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            found.append(f"{path}: not above {schema['exclusiveMinimum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            found.append(f"{path}: fewer than {schema['minItems']} items")
        for i, item in enumerate(value):
            if "items" in schema:
                found += errors(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                found.append(f"{path}: {key} is required")
        if len(value) < schema.get("minProperties", 0):
            found.append(f"{path}: empty")
        for key, item in value.items():
            if "propertyNames" in schema:
                found += errors(key, schema["propertyNames"], f"{path}.{key} (name)")
            if key in props:
                found += errors(item, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{path}.{key}: not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += errors(item, schema["additionalProperties"], f"{path}.{key}")
    if "oneOf" in schema:
        matches = [errors(value, s, path) for s in schema["oneOf"]]
        if sum(1 for m in matches if not m) != 1:
            found.append(f"{path}: matches {sum(1 for m in matches if not m)} of oneOf: "
                         + "; ".join(e for m in matches for e in m[:1]))
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_shipped_experiment_files_validate(path):
    assert errors(yaml.safe_load(path.read_text()), SCHEMA) == []
    config.load(path)  # and load


def test_the_issue_example_is_among_them():
    assert REPO / "examples" / "experiments" / "compaction" / "compaction.yaml" in FILES


@pytest.mark.parametrize("text", [
    "kernels: {k: {sauce: x}}",
    "kernels: {k: {variants: {v: {sysctl: {vm.x: 1}, cmdline: 'a=1', machin: {}}}}}",
    "kernels: {k: {}}\nscenarios: {s: {run: x, metrics: [{name: m, from: vmstats}]}}",
    "kernels: {k: {}}\nscenarios: {s: {run: x, metrics: [{name: m, from: exit, pattern: x}]}}",
    "kernels: {k: {}}\nscenarios: {s: {run: x, timeout_s: true, metrics: [{name: m, "
    "from: exit}]}}",
    "kernels: {k: {}}\nscenarios: {cma-stress: {metrics: [x], lower_is_better: 'false'}}",
    "kernels: {k: {}}\nmatrix: {variants: [a, b], scenarios: [s], repetitions: true}",
])
def test_what_the_loader_refuses_the_schema_refuses(text, tmp_path):
    assert errors(yaml.safe_load(text), SCHEMA) != []
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError):
        config.load(path)


def test_the_validator_can_fail_and_pass():
    assert errors({"kernels": {"k": None}}, SCHEMA) == []
    assert errors({}, SCHEMA) == ["$: kernels is required"]


def test_with_jsonschema_too():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for path in FILES:
        jsonschema.validate(yaml.safe_load(path.read_text()), SCHEMA)


def test_docs_name_every_key_and_source():
    doc = (REPO / "docs" / "experiments.md").read_text()
    keys = {k for level in LEVELS.values() for k in level} | set(config.TOP_KEYS)
    prose = re.sub(r"```.*?```", "", doc, flags=re.S)  # the examples are not the reference
    code = " ".join(re.findall(r"`([^`]+)`", prose))  # what the doc writes as code
    missing = sorted(k for k in keys if not re.search(rf"(?<![\w-]){k}(?![\w-])", code))
    assert missing == []
    assert all(f"`{src}`" in doc for src in config.metrics_mod.SOURCES)
