"""The result document: one JSON per run, schema `vmtest-run/1` (docs/result-schema.md).

Every document is made by new() and written by write(), also when the guest crashed or
hung or the kernel did not build: then `verdict` says so, `error` carries the message and
the artifacts (console log, whatever was collected) are still listed.
"""

from __future__ import annotations

import json
import os
import platform
import uuid
from pathlib import Path
from typing import Any

from vmtest import paths, provenance
from vmtest.deadline import utc_now
from vmtest.outcome import RunVerdict

SCHEMA = "vmtest-run/1"

REQUIRED: dict[str, type] = {
    "schema": str, "run_id": str, "verdict": str, "identity": dict, "timings": dict,
    "metrics": dict, "attribution": list, "splats": list, "artifacts": dict,
}
IDENTITY: dict[str, type] = {"base": str, "variant": str, "kernel_release": str, "build_key": str,
            "patches": list, "scenario": str, "profile": str, "parameters": dict, "seed": int,
            "accel": str}
VERDICTS = tuple(RunVerdict)


def new(*, base: str, variant: str, patches: list[str], scenario: str, profile: str,
        parameters: dict[str, Any], accel: str, kernel_release: str = "",
        build_key: str = "", arch: str = "x86_64") -> dict[str, Any]:
    """A document for a run that starts now: identity filled in, verdict ok until the
    run says otherwise, nothing measured yet."""
    return {
        "schema": SCHEMA,
        "run_id": uuid.uuid4().hex[:12],
        "verdict": RunVerdict.OK,
        "identity": {
            "base": base, "variant": variant, "kernel_release": kernel_release,
            "build_key": build_key[:24], "patches": list(patches), "scenario": scenario,
            "profile": profile, "parameters": parameters,
            "seed": int(parameters.get("seed", 0)), "accel": accel,
        },
        "host": host_info(),
        "provenance": provenance.describe(arch),
        "started_at": utc_now(),
        "timings": {}, "metrics": {}, "attribution": [], "splats": [], "artifacts": {},
    }


def fail(doc: dict[str, Any], verdict: RunVerdict, error: str) -> dict[str, Any]:
    """Mark the document as not ok; what was measured stays."""
    doc["verdict"] = verdict
    doc["error"] = error
    return doc


def validate(doc: dict[str, Any]) -> list[str]:
    """Problems with a document (empty when it conforms)."""
    problems = []
    for key, kind in REQUIRED.items():
        if key not in doc:
            problems.append(f"missing {key}")
        elif not isinstance(doc[key], kind):
            problems.append(f"{key} is {type(doc[key]).__name__}, expected {kind.__name__}")
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    if doc.get("verdict") not in VERDICTS:
        problems.append(f"verdict {doc.get('verdict')!r} not in "
                        f"{tuple(str(v) for v in VERDICTS)}")
    identity = doc.get("identity", {})
    if isinstance(identity, dict):
        for key, kind in IDENTITY.items():
            if key not in identity:
                problems.append(f"missing identity.{key}")
            elif not isinstance(identity[key], kind):
                problems.append(f"identity.{key} is {type(identity[key]).__name__}")
    return problems


class Result:
    """A run's document, typed where the upper stages decide on it (compare, sequential,
    bisect, the store, the CLI): its verdict as a `RunVerdict`, its metrics' values by the
    one rule of what counts as a measured value. The document itself stays the data."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @property
    def verdict(self) -> RunVerdict:
        return RunVerdict.of(self.data.get("verdict"))

    @property
    def metrics(self) -> dict[str, Any]:
        metrics = self.data.get("metrics")
        return metrics if isinstance(metrics, dict) else {}

    @property
    def error(self) -> str:
        return str(self.data.get("error") or "")

    @property
    def error_line(self) -> str:
        """The error's first line, "" when there is none."""
        return first_line(self.error)

    def value(self, metric: str) -> float | None:
        """The metric's value when the run is a measurement that has it: a number (not a
        bool) of a run whose verdict is ok; None otherwise."""
        value = self.metrics.get(metric)
        if self.verdict is RunVerdict.OK and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            return float(value)
        return None


def first_line(text: object) -> str:
    """The first non-empty line of a message ("" for none)."""
    for line in str(text or "").strip().splitlines():
        return line
    return ""


def cpu_model() -> str:
    """The host CPU's model name (/proc/cpuinfo), "" where it does not say."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def host_info() -> dict[str, Any]:
    return {"hostname": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "cpu_model": cpu_model(), "python": platform.python_version()}


def write(doc: dict[str, Any], path: Path) -> Path:
    """Finish and atomically write the document (a reader never sees half a file);
    problems with its shape are recorded in it, not raised: nothing measured is lost."""
    doc.setdefault("finished_at", utc_now())
    problems = validate(doc)
    if problems:
        doc.setdefault("schema_problems", problems)
    return paths.write_atomic(path, json.dumps(doc, indent=2, default=str) + "\n")


def read(path: Path) -> dict[str, Any] | None:
    """A stored document, or None if it is missing, torn or not a document."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
