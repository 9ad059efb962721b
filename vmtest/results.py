"""The result document: one JSON per run, schema `vmtest-run/1` (docs/result-schema.md).

Written even when the guest crashed or hung: then `verdict` says so, `error` carries the
message and the artifacts (console log, whatever was collected) are still listed.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

SCHEMA = "vmtest-run/1"

REQUIRED: dict[str, type] = {
    "schema": str, "run_id": str, "verdict": str, "identity": dict, "timings": dict,
    "metrics": dict, "attribution": list, "splats": list, "artifacts": dict,
}
IDENTITY: dict[str, type] = {"base": str, "variant": str, "kernel_release": str, "build_key": str,
            "patches": list, "scenario": str, "profile": str, "parameters": dict, "seed": int,
            "accel": str}
VERDICTS = ("ok", "kernel-crash", "hang", "timeout", "infrastructure", "failure",
            "interrupted")
# Verdicts that are not measurements: a resume runs these again, reports skip them.
NOT_RESULTS = ("infrastructure", "interrupted")


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
        problems.append(f"verdict {doc.get('verdict')!r} not in {VERDICTS}")
    identity = doc.get("identity", {})
    if isinstance(identity, dict):
        for key, kind in IDENTITY.items():
            if key not in identity:
                problems.append(f"missing identity.{key}")
            elif not isinstance(identity[key], kind):
                problems.append(f"identity.{key} is {type(identity[key]).__name__}")
    return problems


def host_info() -> dict[str, Any]:
    return {"hostname": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "python": platform.python_version()}


def write(doc: dict[str, Any], path: Path) -> Path:
    """Atomically write the document (a reader never sees half a file)."""
    problems = validate(doc)
    if problems:
        doc.setdefault("schema_problems", problems)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
