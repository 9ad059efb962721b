"""Bisection: `git bisect run` drives build -> run -> judge on a local kernel tree.

`vmtest bisect --tree T --good G --bad B --scenario S --metric M --threshold X` starts
`git bisect` in T and runs `vmtest bisect-step` at every step. A step builds the checked
out commit (plus an optional patch series, e.g. instrumentation), runs the scenario and
judges the metric: <= threshold is good (exit 0), above is bad (1); a commit that does
not build, a patch that does not apply or a failure of the machinery is skipped (125);
a kernel crash or hang is bad (1). Every step leaves its result document.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from vmtest import paths, run, scenarios
from vmtest.errors import ConfigError, VmtestError
from vmtest.kernel import kconfig
from vmtest.kernel.build import BuildSpec, build_kernel
from vmtest.kernel.source import LocalTree

GOOD, BAD, SKIP = 0, 1, 125


def judge(doc: dict[str, Any], metric: str, threshold: float) -> tuple[int, str]:
    verdict = doc.get("verdict")
    if verdict == "infrastructure":
        return SKIP, f"skip: {doc.get('error', '').splitlines()[0] if doc.get('error') else ''}"
    if verdict != "ok":
        return BAD, f"bad: {verdict}"
    value = doc.get("metrics", {}).get(metric)
    if not isinstance(value, (int, float)):
        return SKIP, f"skip: metric {metric!r} missing from the result"
    if value <= threshold:
        return GOOD, f"good: {metric}={value} <= {threshold}"
    return BAD, f"bad: {metric}={value} > {threshold}"


def step(tree: Path, scenario: str, profile: str, metric: str, threshold: float,
         patches: list[Path], fragments: list[str], accel: str, log_dir: Path) -> int:
    source = LocalTree(tree)
    commit = source.identity().split(":", 1)[1][:12]
    spec = BuildSpec(source=source, fragments=tuple(kconfig.load_fragment(f) for f in fragments),
                     patches=tuple(patches), variant="bisect", base=f"bisect-{tree.name}")
    out = log_dir / commit
    try:
        built = build_kernel(spec)
    except VmtestError as exc:  # build or patch failure: this commit cannot be judged
        print(f"vmtest bisect: {commit}: skip: {exc}", file=sys.stderr)
        return SKIP
    doc = run.run_scenario(built, scenarios.make(scenario, profile), out, accel=accel)
    code, why = judge(doc, metric, threshold)
    print(f"vmtest bisect: {commit}: {why} ({out / 'result.json'})", file=sys.stderr)
    with (log_dir / "bisect-log.jsonl").open("a") as log:
        log.write(json.dumps({"commit": commit, "exit": code, "why": why,
                              "result": str(out / "result.json")}) + "\n")
    return code


def check_endpoints(tree: Path, good: str, bad: str) -> tuple[str, str]:
    """(good, bad) as commits; ConfigError when either names none, or when good is not
    an ancestor of bad (given the other way round, or unrelated)."""
    if not (tree / ".git").exists():
        raise ConfigError(f"{tree} is not a git checkout", hint="bisect needs a git tree")
    source = LocalTree(tree)
    good_sha, bad_sha = source.commit(good), source.commit(bad)
    if good_sha == bad_sha:
        raise ConfigError(f"--good {good} and --bad {bad} are the same commit")
    ancestor = subprocess.run(["git", "-C", str(tree), "merge-base", "--is-ancestor",
                               good_sha, bad_sha], check=False).returncode == 0
    if not ancestor:
        raise ConfigError(f"--good {good} is not an ancestor of --bad {bad}",
                          hint="bisection looks for the first bad commit after a good one: "
                               "are they given the other way round?")
    return good_sha, bad_sha


def start(tree: Path, good: str, bad: str, step_args: list[str]) -> int:
    good, bad = check_endpoints(tree, good, bad)
    git = ["git", "-C", str(tree)]
    started = subprocess.run([*git, "bisect", "start", bad, good], capture_output=True,
                             text=True, check=False)
    if started.returncode != 0:
        raise ConfigError(f"git bisect start failed: {started.stderr.strip()}",
                          hint="a bisection already under way? `git -C TREE bisect reset`")
    try:
        proc = subprocess.run([*git, "bisect", "run", sys.executable, "-m", "vmtest.cli",
                               "bisect-step", "--tree", str(tree), *step_args], check=False)
        subprocess.run([*git, "bisect", "log"], check=False)
        return proc.returncode
    finally:
        subprocess.run([*git, "bisect", "reset"], check=False)


def default_log_dir() -> Path:
    return paths.cache_dir("bisect")
