import json
import subprocess
import sys

import pytest

from vmtest import bisect, cli
from vmtest.errors import ConfigError, InfraError


@pytest.mark.parametrize("doc,code", [
    ({"verdict": "ok", "metrics": {"m": 3}}, bisect.GOOD),
    ({"verdict": "ok", "metrics": {"m": 30}}, bisect.BAD),
    ({"verdict": "kernel-crash", "metrics": {}}, bisect.BAD),
    ({"verdict": "hang"}, bisect.BAD),
    ({"verdict": "infrastructure", "error": "QEMU died"}, bisect.SKIP),
    ({"verdict": "ok", "metrics": {}}, bisect.SKIP),
])
def test_judge(doc, code):
    decision = bisect.judge(doc, "m", 10)
    assert decision.judgement == code
    # a skip because the machinery failed is tried again on --resume; a judgement is kept
    assert decision.final == (code != bisect.SKIP)


def _git(tree, *args):
    import subprocess
    return subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def history(tmp_path):
    """A tiny kernel-shaped git tree with three commits: A (tag good) - B - C (tag bad)."""
    tree = tmp_path / "linux"
    (tree / "mm").mkdir(parents=True)
    (tree / "Makefile").write_text("VERSION = 6\n")
    _git(tree, "init", "-q", "-b", "main")
    for name in ("A", "B", "C"):
        (tree / "mm" / "swap.c").write_text(f"/* {name} */\n")
        _git(tree, "add", ".")
        _git(tree, "commit", "-q", "-m", name)
    _git(tree, "tag", "good", "HEAD~2")
    _git(tree, "tag", "bad", "HEAD")
    return tree


@pytest.mark.parametrize("good, bad, message", [
    ("goood", "bad", "'goood' is not a commit of"),
    ("bad", "good", "--good bad is not an ancestor of --bad good"),
    ("good", "good", "are the same commit"),
])
def test_bisect_endpoints_are_checked_before_git_is_touched(history, good, bad, message):
    with pytest.raises(ConfigError, match=message):
        bisect.check_endpoints(history, good, bad)
    # Nothing started: no bisection left for the user to reset.
    assert not (history / ".git" / "BISECT_START").exists()


@pytest.mark.fault("bisect: --good and --bad the other way round, or a mistyped ref",
                   verdict="(no bisection)", exit="2",
                   message="vmtest: error: --good X is not an ancestor of --bad Y fix: ... "
                           "the other way round? / 'REF' is not a commit of TREE",
                   kept="the tree: no bisection started")
def test_reversed_endpoints_from_the_command_line_exit_2(history, capsys):
    assert cli.main(["bisect", "--tree", str(history), "--good", "bad", "--bad", "good",
                     "--scenario", "cma-stress", "--metric", "fail_to_migrate_dumps",
                         "--threshold", "1"]) == 2
    err = capsys.readouterr().err
    assert "not an ancestor" in err and "other way round" in err


@pytest.mark.fault("bisect: a step fails inside vmtest (error or bug)", verdict="skip",
                   exit="125 (git bisect: skip, never bad)",
                   message="vmtest: error: ... / internal error: ...",
                   kept="the bisection goes on")
def test_a_step_that_fails_in_vmtest_is_skip_never_bad(history, monkeypatch, capsys):
    """git bisect run reads 1-127 but 125 as bad: a vmtest error or bug is 125."""
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(bisect, "step", broken)
    assert cli.main(["bisect-step", "--tree", str(history), "--scenario", "cma-stress",
                     "--metric", "m", "--threshold", "1"]) == 125
    monkeypatch.setattr(bisect, "step",
                        lambda *a, **k: (_ for _ in ()).throw(ConfigError("bad input")))
    assert cli.main(["bisect-step", "--tree", str(history), "--scenario", "cma-stress",
                     "--metric", "m", "--threshold", "1"]) == 125
    assert "bad input" in capsys.readouterr().err


# -- the sequential rule: endpoints measured first, each step classified by its runs --

from vmtest import sequential  # noqa: E402

UNPATCHED = [245, 245, 105, 210, 175, 140, 35, 70]  # shaped like seed-profile dumps


def _docs(values, metric="m", verdict="ok"):
    """run_one(i) for a commit whose runs give these metric values in turn."""
    def run_one(i):
        v = values[i % len(values)]
        if v is None:
            return {"verdict": "infrastructure", "error": "QEMU died\nmore"}
        if isinstance(v, str):
            return {"verdict": v}
        return {"verdict": verdict, "metrics": {metric: v}}
    return run_one


def test_endpoints_separated_and_not():
    plan = sequential.plan(0.01, 8)
    ok = bisect.measure_endpoints(_docs([0]), _docs(UNPATCHED), "m", plan)
    # decided at the first look, then measured on to the budget: the steps' reference
    assert ok["decided"] and ok["decided_at"] == plan.looks[0]
    assert len(ok["good"]) == len(ok["bad"]) == plan.looks[-1]
    same = bisect.measure_endpoints(_docs([0, 35, 0, 70]), _docs([35, 0, 70, 0]), "m", plan)
    assert not same["decided"] and len(same["good"]) == 8  # the whole budget, then refused


def test_a_step_is_classified_by_its_runs_against_the_endpoints():
    endpoints = {"good": [0.0] * 6, "bad": [float(v) for v in UNPATCHED[:6]],
                 "alpha": 0.01, "max_runs": 8}
    plan = bisect.step_plan(endpoints)
    d = bisect.classify_commit(_docs(UNPATCHED), "m", endpoints, plan, "skip")
    assert d.judgement == bisect.BAD and "like the bad endpoint's" in d.why and d.final
    assert len(d.values) == plan.looks[0]  # decided at the first look
    assert bisect.classify_commit(_docs([0]), "m", endpoints, plan, "skip").judgement \
        == bisect.GOOD
    # like neither within the budget: skipped, never guessed -- and final (a resume
    # does not measure it again)
    d = bisect.classify_commit(_docs([0, 245, 35, 0, 175, 0, 0, 140]), "m", endpoints, plan,
                               "skip")
    assert d.judgement == bisect.SKIP and "like neither" in d.why and len(d.values) == 8
    assert d.final


def test_crash_is_bad_only_when_asked_and_machinery_failures_retried_once():
    endpoints = {"good": [0.0] * 6, "bad": [245.0] * 6, "alpha": 0.01, "max_runs": 8}
    plan = bisect.step_plan(endpoints)
    crash = _docs(["kernel-crash"])
    skipped = bisect.classify_commit(crash, "m", endpoints, plan, "skip")
    assert skipped.judgement == bisect.SKIP and not skipped.final
    assert bisect.classify_commit(crash, "m", endpoints, plan, "bad").judgement == bisect.BAD
    # one infrastructure failure is retried, the step goes on
    d = bisect.classify_commit(_docs([None, 245, 245, 245, 245, 245]), "m", endpoints, plan,
                               "skip")
    assert d.judgement == bisect.BAD
    # two are a skip naming the failure, not final
    d = bisect.classify_commit(_docs([None]), "m", endpoints, plan, "skip")
    assert d.judgement == bisect.SKIP and "QEMU died" in d.why and not d.final


def test_runs_at_once_decide_as_one_at_a_time_and_use_each_run_directory_once():
    import threading
    import time

    endpoints = {"good": [0.0] * 6, "bad": [float(v) for v in UNPATCHED[:6]],
                 "alpha": 0.01, "max_runs": 8}
    plan = bisect.step_plan(endpoints)
    for values in (UNPATCHED, [0], [None, 245, 245, 245, 245, 245], ["kernel-crash"],
                   [0, 245, 35, 0, 175, 0, 0, 140]):
        serial = bisect.classify_commit(_docs(values), "m", endpoints, plan, "skip")
        seen: list[int] = []
        active = [0, 0]  # now, most at once
        lock = threading.Lock()
        run_one = _docs(values)

        def counted(i, seen=seen, active=active, lock=lock, run_one=run_one):
            with lock:
                seen.append(i)
                active[0] += 1
                active[1] = max(active)
            time.sleep(0.05)
            with lock:
                active[0] -= 1
            return run_one(i)
        assert bisect.classify_commit(counted, "m", endpoints, plan, "skip", jobs=2) \
            == serial
        assert len(seen) == len(set(seen)) and active[1] == 2
    seen_good: list[int] = []

    def good(i):
        seen_good.append(i)
        return {"verdict": "ok", "metrics": {"m": 0}} if i != 1 else {"verdict": "infrastructure"}
    ok = bisect.measure_endpoints(good, _docs(UNPATCHED), "m", sequential.plan(0.01, 8), jobs=2)
    assert ok["decided"] and len(ok["good"]) == len(ok["bad"]) == 8
    assert sorted(seen_good) == list(range(9))  # the failed run 1 made up by run 8


def test_terms_go_together(history):
    assert cli.main(["bisect", "--tree", str(history), "--good", "good", "--bad", "bad",
                     "--scenario", "cma-stress", "--metric", "m", "--term-old", "broken"]) == 2


def test_resume_reuses_a_finished_step_and_refuses_a_used_log_dir(history, tmp_path,
                                                                 monkeypatch):
    log_dir = tmp_path / "log"
    head = _git(history, "rev-parse", "HEAD").strip()[:12]
    bisect._log(log_dir, {"commit": head, "exit": bisect.BAD, "why": "bad: like bad",
                          "final": True})

    def no_build(*a, **k):
        raise AssertionError("a finished step is not built again")

    monkeypatch.setattr(bisect, "_build", no_build)
    assert bisect.step(history, "cma-stress", "quick", "m", None, [], [], "tcg",
                       log_dir) == bisect.BAD
    with pytest.raises(ConfigError, match="holds a bisection already"):
        bisect.check_log_dir(log_dir, resume=False)
    bisect.check_log_dir(log_dir, resume=True)
    # a skip of the machinery is not final: a resume runs that commit again
    bisect._log(log_dir, {"commit": "abc", "exit": bisect.SKIP, "why": "skip: hang",
                          "final": False})
    assert bisect.finished_step(log_dir, "abc") is None


def test_report_names_the_first_bad_commit_and_every_step(history, tmp_path):
    log_dir = tmp_path / "log"
    first = _git(history, "rev-parse", "HEAD~1").strip()
    bisect._log(log_dir, {"commit": first[:12], "exit": bisect.BAD, "why": "bad: like bad",
                          "values": [245.0, 210.0], "build_s": 20.0, "runs_s": 100.0,
                          "final": True})
    path, subject = bisect.write_report(history, log_dir, first, ("good", "bad"), 150.0)
    assert subject == "B"
    text = path.read_text()
    assert f"**{first[:12]} B**" in text and "builds 20 s, runs 100 s" in text
    assert "| bad: like bad | [245.0, 210.0] |" in text
    doc = json.loads((log_dir / "report.json").read_text())
    assert doc["subject"] == "B" and doc["wall_s"] == 150.0


@pytest.mark.fault("bisect: endpoints that do not differ on the metric",
                   verdict="(no bisection)", exit="2",
                   message="vmtest: error: the endpoints are not separated on M: good [...] "
                           "vs bad [...] (p = P after N runs each) fix: raise --max-runs, ...",
                   kept="the endpoints' runs and endpoints.json in the log dir; the tree: "
                        "no bisection started")
def test_endpoints_not_separated_stop_before_the_first_step(history, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.setattr(bisect, "_build", lambda *a, **k: object())
    monkeypatch.setattr(bisect, "_runner",
                        lambda built, scenario, profile, accel, out, config=None:
                        _docs([0, 35, 70, 0] if "good" in str(out) else [35, 0, 0, 70],
                              "fail_to_migrate_dumps"))
    code = cli.main(["bisect", "--tree", str(history), "--good", "good", "--bad", "bad",
                     "--scenario", "cma-stress", "--metric", "fail_to_migrate_dumps",
                     "--max-runs", "8", "--log-dir", str(tmp_path / "log")])
    assert code == 2
    err = capsys.readouterr().err
    assert "the endpoints are not separated on fail_to_migrate_dumps" in err
    assert "raise --max-runs" in err
    assert json.loads((tmp_path / "log" / "endpoints.json").read_text())["decided"] is False
    status = subprocess.run(["git", "-C", str(history), "bisect", "log"],
                            capture_output=True, text=True, check=False)
    assert status.returncode != 0  # no bisection under way


def test_an_unknown_metric_is_refused_before_anything_is_built(history, capsys):
    assert cli.main(["bisect", "--tree", str(history), "--good", "good", "--bad", "bad",
                     "--scenario", "hotplug-offline", "--metric", "drains_per_offlin"]) == 2
    err = capsys.readouterr().err
    assert "produces no metric 'drains_per_offlin'" in err
    assert "did you mean drains_per_offline" in err


def test_a_scenario_of_an_experiment_file_is_bisected_by_its_metric_and_direction(tmp_path):
    exp = tmp_path / "exp.yaml"
    (tmp_path / "bench.sh").write_text("#!/bin/sh\necho ops=1\n")
    (tmp_path / "bench.sh").chmod(0o755)
    exp.write_text("kernels:\n  k:\n    source: debian:6.1\n"
                   "scenarios:\n  bench:\n    run: ./bench.sh\n    metrics:\n"
                   "      - {name: ops, from: stdout, pattern: 'ops=([0-9]+)', better: higher}\n")
    assert bisect.check_metric("bench", "ops", exp) is False  # higher is better
    with pytest.raises(ConfigError, match="produces no metric"):
        bisect.check_metric("bench", "nope", exp)
    with pytest.raises(ConfigError, match="needs --config"):
        bisect.check_metric("bench", "ops", None)
    # the old one-run rule follows the direction
    doc = {"verdict": "ok", "metrics": {"ops": 50}}
    assert bisect.judge(doc, "ops", 40, lower_is_better=False).judgement == bisect.GOOD
    assert bisect.judge(doc, "ops", 60, lower_is_better=False).judgement == bisect.BAD


def test_steps_import_the_vmtest_that_runs_the_bisection(tmp_path):
    """git runs a step in the tree: it must import this vmtest there (not fail to import
    one, which exits 1, read by git as bad; nor import another checkout's)."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "PYTHONPATH": str(tmp_path / "elsewhere")}
    found = subprocess.run([sys.executable, "-c", "import sys, vmtest; "
                            "print(vmtest.__file__); print(sys.path)"],
                           cwd=tmp_path, env=bisect.step_env(env), capture_output=True,
                           text=True, check=True).stdout.splitlines()
    assert found[0] == bisect.__file__.replace("bisect.py", "__init__.py")
    assert str(tmp_path / "elsewhere") in found[1]  # the user's PYTHONPATH is kept


@pytest.mark.fault("bisect: a step's Python exits before vmtest runs (no module vmtest, a "
                   "broken interpreter): git reads its status 1 as bad",
                   verdict="infrastructure", exit="3",
                   message="vmtest: error: git bisect marked COMMIT (bad) without a vmtest step "
                           "judging it so: ... no first commit is named",
                   kept="the step log; the tree: git bisect reset")
def test_a_judgement_no_step_made_names_no_first_commit(history, tmp_path, monkeypatch):
    log_dir = tmp_path / "log"
    python = tmp_path / "python3"  # like an interpreter without vmtest: exit 1 at once
    python.write_text("#!/bin/sh\necho \"No module named vmtest\" >&2\nexit 1\n")
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    said = []
    with pytest.raises(InfraError, match=r"git bisect marked [0-9a-f]{12} \(bad\) without"):
        bisect.start(history, "good", "bad", [], log_dir=log_dir, say=said.append)
    assert not said  # no first commit named
    assert not (log_dir / "report.json").exists()
    assert subprocess.run(["git", "-C", str(history), "bisect", "log"], capture_output=True,
                          check=False).returncode != 0  # reset


def test_git_judgements_are_checked_against_the_steps_log(history):
    middle = _git(history, "rev-parse", "HEAD~1").strip()
    _git(history, "bisect", "start", "--term-old", "broken", "--term-new", "fixed", "bad",
         "good")
    _git(history, "bisect", "fixed", middle)
    log = _git(history, "bisect", "log")
    _git(history, "bisect", "reset")
    terms = ("broken", "fixed")
    assert bisect.unexplained_judgements(log, [], terms) == [f"{middle[:12]} (fixed)"]
    assert bisect.unexplained_judgements(
        log, [{"commit": middle[:12], "exit": bisect.BAD}], terms) == []
    # a step that said the other thing does not explain it
    assert bisect.unexplained_judgements(
        log, [{"commit": middle[:12], "exit": bisect.GOOD}], terms) == [
        f"{middle[:12]} (fixed)"]
    assert bisect.unexplained_judgements(log.replace(" fixed ", " skip "), [], terms) == []


def test_endpoints_and_report_name_the_experiment_file_of_the_scenario(history, tmp_path,
                                                                       monkeypatch):
    runs = []

    def runner(built, scenario, profile, accel, out, config=None):
        def run_one(i):
            runs.append(config)
            return {"verdict": "ok", "metrics": {"m": 2.0 if "good" in str(out) else 1.0}}
        return run_one

    monkeypatch.setattr(bisect, "_build", lambda *a, **k: object())
    monkeypatch.setattr(bisect, "_runner", runner)
    log_dir = tmp_path / "log"
    one, other = tmp_path / "a" / "exp.yaml", tmp_path / "b" / "exp.yaml"

    def measure(config):
        return bisect.endpoints_measured(history, "good", "bad", "drains", "quick", "m", [],
                                         [], "tcg", log_dir, 0.01, 6, config=config)

    assert measure(one)["config"] == str(one) and runs == [one] * 12
    measure(one)  # the same file: measured before, not run again
    assert len(runs) == 12
    # another file's scenario of the same name is another measurement
    assert measure(other)["config"] == str(other) and runs[12:] == [other] * 12
    first = _git(history, "rev-parse", "HEAD").strip()
    path, _ = bisect.write_report(history, log_dir, first, ("good", "bad"), 10.0)
    assert f"Scenario drains (from {other}, profile quick), metric m" in path.read_text()
    endpoints = json.loads((log_dir / "report.json").read_text())["endpoints"]
    assert (endpoints["scenario"], endpoints["metric"]) == ("drains", "m")


def test_a_step_says_whether_its_kernel_came_from_the_cache(history, tmp_path, monkeypatch):
    from vmtest.kernel.build import BuildSpec, BuiltKernel, KernelArtifact
    from vmtest.kernel.source import LocalTree

    spec = BuildSpec(source=LocalTree(history), fragments=(), variant="bisect", base="t")
    for cached in (True, False):
        log_dir = tmp_path / f"log-{cached}"
        monkeypatch.setattr(bisect, "_build", lambda *a, c=cached, **k: BuiltKernel(
            spec, KernelArtifact(key="k" * 64, directory=tmp_path / "k", cached=c)))
        monkeypatch.setattr(bisect, "_runner",
                            lambda *a, **k: _docs([3], "fail_to_migrate_dumps"))
        said = []
        assert bisect.step(history, "cma-stress", "quick", "fail_to_migrate_dumps", 10, [], [],
                           "tcg", log_dir, say=said.append) == bisect.GOOD
        entry = bisect.step_log(log_dir)[-1]
        assert entry["cached"] is cached and entry["kernel"] == str(tmp_path / "k")
        assert ("from the cache" in said[-1]) is cached
