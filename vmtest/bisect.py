"""Bisection: `git bisect run` drives build -> run -> judge on a local kernel tree.

`vmtest bisect --tree T --good G --bad B --scenario S --metric M` first measures both
endpoints -- runs of each, interleaved, until the sequential rule of
vmtest/sequential.py decides they differ at --alpha -- and refuses to start when they do
not (with the figures). Then it starts `git bisect` in T and runs `vmtest bisect-step`
at every step: the step builds the checked-out commit (plus an optional patch series,
e.g. instrumentation), runs the scenario again and again and classifies the commit as
like-good (exit 0) or like-bad (1) against the endpoints' runs, by the same rule; a
commit that does not build, a patch that does not apply, a failure of the machinery or
a commit like neither endpoint within the run budget is skipped (125). A kernel crash
or hang is bad only with --crash-is bad. With --threshold the old rule is kept: one run,
good when the metric is <= the threshold. `--term-old/--term-new` name the states for
git (e.g. broken/fixed: the commit that fixed something). Every step leaves its result
documents and a line in bisect-log.jsonl.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import site
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vmtest import paths, procs, provenance, run, scenarios, sequential
from vmtest.errors import ConfigError, InfraError, VmtestError
from vmtest.kernel.build import build_kernel
from vmtest.kernel.source import LocalTree
from vmtest.kernel_choice import KernelChoice
from vmtest.outcome import Judgement
from vmtest.qemu import machine
from vmtest.results.document import Result

GOOD, BAD, SKIP = Judgement.GOOD, Judgement.BAD, Judgement.SKIP
ENDPOINTS = "endpoints.json"
log = logging.getLogger(__name__)

Say = Callable[[str], None]  # where progress lines go: the CLI prints them


def _log_say(text: str) -> None:
    log.info("%s", text)


@dataclass(frozen=True)
class Decision:
    """A step's judgement of a commit with why and on what runs. `final`: a
    classification, which a resume reuses; a skip because the machinery failed is not
    (it is tried again)."""

    judgement: Judgement
    why: str
    values: tuple[float, ...] = ()
    final: bool = True


def metric_of(doc: dict[str, Any], metric: str) -> float | None:
    return Result(doc).value(metric)


def run_batch(calls: list[Callable[[], dict[str, Any]]], jobs: int) -> list[dict[str, Any]]:
    """Every call (a run: boot, scenario, result), `jobs` at a time; the documents in
    the calls' order. An interruption stops the VMs of the runs under way at once."""
    if jobs <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="vmtest-bisect") as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            machine.kill_live(reason="interrupt")
            raise


def _next_look(plan: sequential.Plan, runs: int) -> int:
    return next((n for n in plan.looks if n > runs), plan.looks[-1])


def measure_endpoints(run_good: Callable[[int], dict[str, Any]],
                      run_bad: Callable[[int], dict[str, Any]], metric: str,
                      plan: sequential.Plan, jobs: int = 1) -> dict[str, Any]:
    """Runs of good and bad, interleaved (`jobs` at a time), up to each look of the plan,
    until it decides they differ or its budget is spent; once decided, on to the budget
    without testing again: every step is compared with these runs, and a step of a noisy
    metric (most runs of a bad kernel fail, some show nothing) decides only against as
    many runs as it may use itself (docs/statistics.md). {"good": [...], "bad": [...],
    "decided": bool, "p_value": p, "decided_at": runs a side}."""
    good: list[float] = []
    bad: list[float] = []
    decision = None
    decided_at = None
    attempts = {"good": 0, "bad": 0}  # every run its own directory
    budget = plan.looks[-1]
    while min(len(good), len(bad)) < budget and max(attempts.values()) < 3 * budget:
        have = min(len(good), len(bad))
        look = budget if decided_at is not None else _next_look(plan, have)
        calls: list[Callable[[], dict[str, Any]]] = []
        sides: list[list[float]] = []
        for i in range(look):  # interleaved: good and bad see the same host
            for name, values, run_one in (("good", good, run_good), ("bad", bad, run_bad)):
                if len(values) + i < look:
                    calls.append(functools.partial(run_one, attempts[name] + i))
                    sides.append(values)
        for name, values in (("good", good), ("bad", bad)):
            attempts[name] += max(0, look - len(values))
        for values, doc in zip(sides, run_batch(calls, jobs), strict=True):
            value = metric_of(doc, metric)
            if value is not None:
                values.append(value)
        n = min(len(good), len(bad))
        if decided_at is None and n in plan.looks:
            decision = sequential.decide(good[:n], bad[:n], plan, n)
            if decision.decided:
                decided_at = n
    n = min(len(good), len(bad))
    p_value = decision.p_value if decision else float("nan")
    return {"good": good[:n], "bad": bad[:n], "decided": decided_at is not None,
            "p_value": p_value, "decided_at": decided_at, "plan": plan.describe()}


def classify_commit(run_one: Callable[[int], dict[str, Any]], metric: str,
                    endpoints: dict[str, Any], plan: sequential.Plan,
                    crash_is: str, jobs: int = 1) -> Decision:
    """A step: runs of the commit (`jobs` at a time, up to each look of the plan) until
    they are like one endpoint's."""
    values: list[float] = []
    retried = False
    attempt = 0  # every run its own directory: a failed one's evidence stays
    while len(values) < plan.looks[-1]:
        wanted = _next_look(plan, len(values)) - len(values)
        docs = run_batch([functools.partial(run_one, attempt + i) for i in range(wanted)],
                         jobs)
        attempt += wanted
        for doc in docs:
            result = Result(doc)
            verdict = result.verdict
            if verdict.is_kernel_failure:
                if crash_is == "bad":
                    return Decision(BAD, f"bad: {verdict} (--crash-is bad)", tuple(values))
                return Decision(SKIP, f"skip: {verdict} (--crash-is skip)", tuple(values),
                                final=False)
            value = result.value(metric)
            if value is None:
                if retried:  # the machinery failed twice on this commit: not final
                    return Decision(SKIP, f"skip: {verdict}: {result.error_line}",
                                    tuple(values), final=False)
                retried = True
                continue
            values.append(value)
        c = sequential.classify(values, endpoints["good"], endpoints["bad"], plan)
        if c.like is not None:
            return Decision(GOOD if c.like == "good" else BAD,
                            f"{c.like}: {metric} {values} like the {c.like} endpoint's "
                            f"(p against good {c.p_good:.2g}, against bad {c.p_bad:.2g})",
                            tuple(values))
    return Decision(SKIP, f"skip: {metric} {values} like neither endpoint within "
                          f"{len(values)} runs", tuple(values))


def judge(doc: dict[str, Any], metric: str, threshold: float, *,
          lower_is_better: bool = True) -> Decision:
    """The old rule: one run, good when the metric is on the good side of threshold (<=
    where lower is better, >= where higher is)."""
    result = Result(doc)
    verdict = result.verdict
    if not verdict.is_result:
        return Decision(SKIP, f"skip: {result.error_line}", final=False)
    if verdict.is_kernel_failure:
        return Decision(BAD, f"bad: {verdict}")
    value = result.value(metric)
    if value is None:
        return Decision(SKIP, f"skip: metric {metric!r} missing from the result", final=False)
    if (value <= threshold) if lower_is_better else (value >= threshold):
        return Decision(GOOD, f"good: {metric}={value:g} {'<=' if lower_is_better else '>='} "
                              f"{threshold}", (value,))
    return Decision(BAD, f"bad: {metric}={value:g} {'>' if lower_is_better else '<'} "
                         f"{threshold}", (value,))


def scenario_def(name: str, config: Path | None) -> Any:
    """The scenario a bisection measures: the experiment file's (built in with its params,
    or defined there as data) with --config, else the catalog's; its metrics checked."""
    from vmtest import config as config_mod

    if config is not None:
        return config_mod.load(config).scenario(name)
    if name not in scenarios.SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r} (a scenario of an experiment file "
                          "needs --config FILE)",
                          hint=f"built in: {', '.join(sorted(scenarios.SCENARIOS))}")
    return config_mod.ScenarioDef(name, tuple(scenarios.get(name).METRICS) or ("",))


def check_metric(name: str, metric: str, config: Path | None) -> bool:
    """ConfigError (before any build or VM) when the scenario produces no such metric;
    whether lower is better for it."""
    sc = scenario_def(name, config)
    known = sc.scenario_class().METRICS
    if known and metric not in known:
        import difflib

        near = difflib.get_close_matches(metric, known, n=1)
        raise ConfigError(f"scenario {name} produces no metric {metric!r}"
                          + (f" (did you mean {near[0]}?)" if near else ""),
                          hint=f"its metrics: {', '.join(known)}")
    return bool(sc.lower_is_better_for(metric))


def _build(tree: Path, ref: str | None, patches: list[Path], fragments: list[str]) -> Any:
    """The tree at ref (None: as checked out) by `vmtest run`'s rule for an ad-hoc
    kernel, named after the bisection."""
    choice = KernelChoice(source=f"{tree}@{ref}" if ref else str(tree),
                          fragments=tuple(fragments), patches=tuple(patches), variant="bisect")
    return build_kernel(replace(choice.spec(), base=f"bisect-{tree.name}"))


def _runner(built: Any, scenario: str, profile: str, accel: str,
            out: Path, config: Path | None = None) -> Callable[[int], dict[str, Any]]:
    sc = scenario_def(scenario, config)

    def run_one(i: int) -> dict[str, Any]:
        return run.run_scenario(built, sc.make(profile), out / f"r{i:02d}", accel=accel)
    return run_one


def jobs_for(fixed: int | None, scenario: str, profile: str,
             config: Path | None = None) -> int:
    """Runs at once: `fixed` (--jobs N, checked against host memory), or for --jobs auto
    (None) where matrix.AutoJobs starts -- one VM per core, as memory allows (a step's
    runs are too few and too short to learn a VM's duty from)."""
    from vmtest import matrix

    guest_mib = scenario_def(scenario, config).make(profile).params.memory_mib
    if fixed is None:
        return matrix.AutoJobs(matrix.memory_limit(guest_mib))()
    matrix.check_memory(fixed, guest_mib)
    return fixed


def step(tree: Path, scenario: str, profile: str, metric: str, threshold: float | None,
         patches: list[Path], fragments: list[str], accel: str, log_dir: Path, *,
         crash_is: str = "skip", jobs: int = 1, say: Say = _log_say,
         config: Path | None = None) -> Judgement:
    source = LocalTree(tree)
    commit = source.identity().split(":", 1)[1][:12]
    out = log_dir / commit
    done = finished_step(log_dir, commit)
    if done is not None:  # --resume: this commit was judged before the interruption
        say(f"vmtest bisect: {commit}: {done['why']} (from the earlier steps, not run again)")
        return Judgement(int(done["exit"]))
    started = time.monotonic()
    try:
        built = _build(tree, None, patches, fragments)
    except VmtestError as exc:  # build or patch failure: this commit cannot be judged
        why = f"skip: {exc.render()}"
        say(f"vmtest bisect: {commit}: {why}")
        _log(log_dir, {"commit": commit, "exit": SKIP, "why": why, "final": True})
        return SKIP
    build_s = time.monotonic() - started
    run_one = _runner(built, scenario, profile, accel, out, config)
    if threshold is not None:
        decision = judge(run_one(0), metric, threshold,
                         lower_is_better=check_metric(scenario, metric, config))
    else:
        endpoints = read_endpoints(log_dir)
        plan = step_plan(endpoints)
        decision = classify_commit(run_one, metric, endpoints, plan, crash_is, jobs)
    runs_s = time.monotonic() - started - build_s
    # whether make ran: a step's -v lines are not shown (git bisect run starts it)
    cached = built.artifact.cached
    say(f"vmtest bisect: {commit}: {decision.why} (build {build_s:.0f} s"
        f"{', from the cache' if cached else ''}, runs {runs_s:.0f} s; {out})")
    _log(log_dir, {"commit": commit, "exit": decision.judgement, "why": decision.why,
                   "values": list(decision.values), "build_s": round(build_s, 1),
                   "cached": cached, "kernel": str(built.artifact.directory),
                   "runs_s": round(runs_s, 1), "results": str(out), "final": decision.final})
    return decision.judgement


def step_log(log_dir: Path) -> list[dict[str, Any]]:
    path = log_dir / "bisect-log.jsonl"
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of a killed step
    return entries


def finished_step(log_dir: Path, commit: str) -> dict[str, Any] | None:
    """The last final judgement of commit in this bisection's log, None if there is none."""
    found = None
    for entry in step_log(log_dir):
        if entry.get("commit") == commit and entry.get("final"):
            found = entry
    return found


def _log(log_dir: Path, entry: dict[str, Any]) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "bisect-log.jsonl").open("a") as log:
        log.write(json.dumps(entry) + "\n")


def step_plan(endpoints: dict[str, Any]) -> sequential.Plan:
    """A step's plan: the endpoints' alpha and budget, against their fixed runs, by
    one-sided tests (the endpoints fix the direction)."""
    return sequential.plan(endpoints["alpha"], endpoints["max_runs"],
                           other_side=min(len(endpoints["good"]), len(endpoints["bad"])),
                           one_sided=True)


def read_endpoints(log_dir: Path) -> dict[str, Any]:
    path = log_dir / ENDPOINTS
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no endpoint measurements in {path}",
                          hint="vmtest bisect measures them before the first step") from exc


def endpoints_measured(tree: Path, good: str, bad: str, scenario: str, profile: str,
                       metric: str, patches: list[Path], fragments: list[str], accel: str,
                       log_dir: Path, alpha: float, max_runs: int,
                       jobs: int = 1, say: Say = _log_say,
                       config: Path | None = None) -> dict[str, Any]:
    """Build both endpoints (from git, the checkout untouched) and run them until they
    are decided apart; a ConfigError with the figures when they are not."""
    plan = sequential.plan(alpha, max_runs)
    try:
        earlier = read_endpoints(log_dir)
    except ConfigError:
        earlier = None
    # config: another file's scenario of the same name is another measurement
    wanted = {"good_commit": good, "bad_commit": bad, "metric": metric, "alpha": alpha,
              "max_runs": max_runs, "scenario": scenario, "profile": profile,
              "config": str(config) if config else None}
    if earlier is not None and all(earlier.get(k) == v for k, v in wanted.items()) \
            and earlier.get("decided"):
        say(f"vmtest bisect: endpoints: measured before (good {earlier['good']}, bad "
            f"{earlier['bad']}), not run again")
        return earlier
    started = time.monotonic()
    built_good = _build(tree, good, patches, fragments)
    built_bad = _build(tree, bad, patches, fragments)
    result = measure_endpoints(
        _runner(built_good, scenario, profile, accel, log_dir / "good" / good[:12], config),
        _runner(built_bad, scenario, profile, accel, log_dir / "bad" / bad[:12], config),
        metric, plan, jobs)
    result |= wanted | {"wall_s": round(time.monotonic() - started, 1)}
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / ENDPOINTS).write_text(json.dumps(result, indent=1) + "\n")
    g, b = result["good"], result["bad"]
    say(f"vmtest bisect: endpoints: good {good[:12]} {metric} {g}, bad {bad[:12]} {b}: "
        + (f"separated after {result['decided_at']} runs a side, measured on to "
           f"{len(g)} as the steps' reference" if result["decided"] else "NOT separated")
        + f" (p = {result['p_value']:.2g}; {plan.describe()})")
    if not result["decided"]:
        raise ConfigError(
            f"the endpoints are not separated on {metric}: good {g} vs bad {b} "
            f"(p = {result['p_value']:.2g} after {min(len(g), len(b))} runs each)",
            hint="raise --max-runs, use a profile that shows more (e.g. verdict), another "
                 "--metric, or check that --bad really shows the problem")
    return result


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


def start(tree: Path, good: str, bad: str, step_args: list[str], *,
          measure: Callable[[str, str], object] | None = None,
          terms: tuple[str, str] | None = None, log_dir: Path | None = None,
          say: Say = _log_say) -> int:
    """`measure(good, bad)`: the endpoints' measurement, before git is touched;
    `terms`: git bisect's --term-old/--term-new."""
    good, bad = check_endpoints(tree, good, bad)
    if LocalTree(tree).dirty_digest():
        say(f"vmtest bisect: {tree} has uncommitted changes or untracked files: git "
            "carries them into every step's checkout, and they are built with it")
    if measure is not None:
        measure(good, bad)
    git = ["git", "-C", str(tree)]
    term_args = ["--term-old", terms[0], "--term-new", terms[1]] if terms else []
    started = subprocess.run([*git, "bisect", "start", *term_args, bad, good],
                             capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise ConfigError(f"git bisect start failed: {started.stderr.strip()}",
                          hint="a bisection already under way? `git -C TREE bisect reset`")
    started_at = time.monotonic()
    try:
        # In a session of its own: an interruption stops git, the step and its VM.
        proc = procs.run_group([*git, "bisect", "run", sys.executable, "-m", "vmtest.cli",
                                "bisect-step", "--tree", str(tree), *step_args],
                               env=step_env(os.environ))
        found = subprocess.run([*git, "rev-parse", "--verify", "--quiet",
                                f"refs/bisect/{terms[1] if terms else 'bad'}"],
                               capture_output=True, text=True, check=False).stdout.strip()
        if log_dir is not None and proc.returncode == 0 and found:
            bisect_log = subprocess.run([*git, "bisect", "log"], capture_output=True,
                                        text=True, check=False).stdout
            unjudged = unexplained_judgements(bisect_log, step_log(log_dir),
                                              terms or ("good", "bad"))
            if unjudged:
                raise InfraError(
                    f"git bisect marked {', '.join(unjudged)} without a vmtest step judging "
                    "it so: the step exited before vmtest ran (its error is above), and "
                    "git read that as a judgement; no first commit is named",
                    hint="run the step's command by hand: `python3 -m vmtest.cli "
                         "bisect-step --tree TREE ...` (git bisect run's line above)")
            path, subject = write_report(tree, log_dir, found, terms or ("good", "bad"),
                                         time.monotonic() - started_at)
            say(f"\nvmtest bisect: first {(terms or ('good', 'bad'))[1]} commit {found[:12]} "
                f"{subject}; report: {path}")
        return proc.returncode
    except KeyboardInterrupt:
        say(f"\nvmtest bisect: interrupted; the tree goes back to where it was (git bisect "
            f"reset). Finished steps are kept{f' in {log_dir}' if log_dir else ''}: the "
            "same command with --resume continues without running them again.")
        raise
    finally:
        reset = subprocess.run([*git, "bisect", "reset"], capture_output=True, text=True,
                               check=False)
        if reset.returncode != 0:
            # An interruption can stop git mid-checkout (its index.lock and half-checked-out
            # files stay): the tree is not left as if nothing were wrong.
            say(f"vmtest bisect: {tree} is still mid-bisect: `git bisect reset` failed: "
                f"{reset.stderr.strip().splitlines()[-1] if reset.stderr.strip() else ''}\n"
                f"hint: if git was stopped mid-checkout, remove {tree}/.git/index.lock, "
                "then `git -C TREE checkout -f HEAD && git -C TREE bisect reset` (this "
                "discards changes to tracked files)")


def unexplained_judgements(bisect_log: str, steps: list[dict[str, Any]],
                           terms: tuple[str, str]) -> list[str]:
    """The commits `git bisect log` marks old or new (terms) that no step of this
    bisection's log judged so, as "COMMIT (TERM)". git bisect run reads any exit status
    1-127 but 125 as "new": a step whose Python did not get as far as vmtest (no module
    vmtest, a broken interpreter) would otherwise name a first commit. A skip needs no
    step's word: vmtest's own failures skip without logging."""
    judged = {(s.get("commit"), s.get("exit")) for s in steps}
    codes = {terms[0]: GOOD, terms[1]: BAD}
    unexplained = []
    for line in bisect_log.splitlines():
        m = re.fullmatch(r"git bisect (\S+) ([0-9a-f]{40})", line.strip())
        if m and m[1] in codes and (m[2][:12], codes[m[1]]) not in judged:
            unexplained.append(f"{m[2][:12]} ({m[1]})")
    return unexplained


def step_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of `git bisect run`'s steps: they import the vmtest this process
    runs. git runs them in the tree, so a vmtest found through the current folder (`python
    -m vmtest.cli` in a checkout, pytest's rootdir) is not found there, and Python's "No
    module named vmtest" exits 1, which git reads as bad; nor may another vmtest installed
    in the interpreter (an editable install of another checkout) stand in for this one. A
    site folder is not added: the interpreter searches it anyway, and on PYTHONPATH it would
    come before the standard library."""
    here = str(Path(__file__).resolve().parents[1])
    sites = {str(Path(p).resolve()) for p in [*site.getsitepackages(),
                                               site.getusersitepackages()]}
    env = dict(environ)
    if here not in sites:
        env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [environ.get("PYTHONPATH")])])
    return env


def write_report(tree: Path, log_dir: Path, first: str, terms: tuple[str, str],
                 wall_s: float) -> tuple[Path, str]:
    """report.md and report.json in log_dir: the first new-term commit with its subject,
    the endpoints' runs and every step's evidence, the time spent."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True,
                              text=True, check=False).stdout.strip()

    steps = step_log(log_dir)
    try:
        endpoints: dict[str, Any] | None = read_endpoints(log_dir)
    except ConfigError:
        endpoints = None
    doc = {"first": first, "subject": git("log", "-1", "--format=%s", first),
           "terms": list(terms), "steps": steps, "endpoints": endpoints,
           "wall_s": round(wall_s, 1),
           "build_s": round(sum(s.get("build_s", 0) for s in steps), 1),
           "runs_s": round(sum(s.get("runs_s", 0) for s in steps), 1),
           "made_by": provenance.describe()}
    (log_dir / "report.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [f"# vmtest bisect: first {terms[1]} commit", "",
             f"**{first[:12]} {doc['subject']}**", "",
             f"{len(steps)} steps, {doc['wall_s']:.0f} s in all (builds {doc['build_s']:.0f} s, "
             f"runs {doc['runs_s']:.0f} s)", ""]
    if endpoints:
        config = endpoints.get("config")
        lines += [f"Scenario {endpoints.get('scenario')} ("
                  + (f"from {config}" if config else "built in")
                  + f", profile {endpoints.get('profile')}), metric {endpoints.get('metric')}",
                  ""]
        lines += [f"Endpoints ({endpoints.get('metric')}): {terms[0]} {endpoints['good']}, "
                  f"{terms[1]} {endpoints['bad']} (p = {endpoints['p_value']:.2g})", ""]
    lines += ["| commit | subject | decision | values | build s | runs s |",
              "|---|---|---|---|---|---|"]
    for s in steps:
        subject = git("log", "-1", "--format=%s", s.get("commit", ""))
        lines.append(f"| {s.get('commit')} | {subject} | {s.get('why')} | "
                     f"{s.get('values', '')} | {s.get('build_s', '')} | {s.get('runs_s', '')} |")
    path = log_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path, str(doc["subject"])


def default_log_dir(key: str = "") -> Path:
    """Where a bisection keeps its runs, endpoints and step log: one folder a bisection
    (tree, endpoints, scenario, profile, metric), so that --resume finds it."""
    return paths.cache_dir("bisect") / key if key else paths.cache_dir("bisect")


def check_log_dir(log_dir: Path, resume: bool) -> None:
    """A log dir holding another bisection's steps is refused unless resuming."""
    if not resume and (step_log(log_dir) or (log_dir / ENDPOINTS).exists()):
        raise ConfigError(f"{log_dir} holds a bisection already",
                          hint="--resume continues it (finished steps are not run again); "
                               "or give another --log-dir")
