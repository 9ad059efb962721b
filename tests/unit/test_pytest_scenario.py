"""pytest tests as a scenario (vmtest/scenarios/pytest_scenario.py, the pytest section of config.py,
collect/pytest_report.py): the experiment file's pytest scenarios, the metrics computed
from a session's reports, and whole runs through run.run_scenario on the fake machine --
a real pytest session in this process whose `vm` is the run's (fake) machine, never a
second boot.

The recorded session (tests/data/pytest/guest-tests-run.json) is pytest.json of a real
run on a 6.1 TCG guest (`vmtest run --config exp.yaml --scenario guest-tests`); the
outcomes pytest gives skip/xfail/xpass/setup and teardown errors are taken from real
pytest sessions run here on host-only tests."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from vmtest import config, run
from vmtest.collect import metrics, pytest_report
from vmtest.collect.pytest_report import PytestMetric
from vmtest.errors import ConfigError, InfraError
from vmtest.kernel import kconfig
from vmtest.kernel.build import BuildSpec, BuiltKernel, KernelArtifact
from vmtest.kernel.source import DebianSource
from vmtest.pytest_plugin import Guest
from vmtest.qemu import accel, boot
from vmtest.qemu.fake import FakeMachine, Transcript
from vmtest.scenarios import pytest_scenario

DATA = Path(__file__).resolve().parents[1] / "data" / "pytest"

EXPERIMENT = """\
kernels:
  k: {source: debian:6.1}
scenarios:
  guest-tests:
    pytest: tests/test_guest.py
    keyword: not slow
    metrics:
      - {name: passed, from: pytest, outcome: passed, better: higher}
      - {name: failed, from: pytest, outcome: failed}
      - {name: fault_ms, from: record, key: fault_ms, better: lower}
"""

GUEST_TESTS = '''\
def test_uname(vm):
    assert vm.run("uname -r", check=True).stdout.strip()


def test_fault_time(vm):
    vm.record("fault_ms", float(vm.run("cat /tmp/ms", check=True).stdout))


def test_fails(vm):
    assert vm.run("false").status == 0
'''


def _experiment(tmp_path: Path, text: str = EXPERIMENT, tests: str = GUEST_TESTS) -> Path:
    folder = tmp_path / "exp"
    (folder / "tests").mkdir(parents=True)
    (folder / "tests" / "test_guest.py").write_text(tests)
    (folder / "exp.yaml").write_text(text)
    return folder / "exp.yaml"


# -- the recorded real session ------------------------------------------------------------
def test_a_recorded_session_gives_each_tests_outcome_and_records():
    session = json.loads((DATA / "guest-tests-run.json").read_text())
    tests = pytest_report.tests(session["reports"])
    assert {n: t["outcome"] for n, t in tests.items()} == {
        "tests/test_guest.py::test_uname": "passed",
        "tests/test_guest.py::test_fault_time": "passed",
        "tests/test_guest.py::test_fails": "failed"}
    assert tests["tests/test_guest.py::test_fault_time"]["records"] == [["fault_ms", 201.49]]
    assert "AssertionError" in tests["tests/test_guest.py::test_fails"]["longrepr"]
    assert pytest_report.counts(tests) == {"passed": 2, "failed": 1, "error": 0, "skipped": 0,
                                           "xfailed": 0, "xpassed": 0, "total": 3}
    defs = (PytestMetric("passed", "pytest", outcome="passed"),
            PytestMetric("total", "pytest", outcome="total"),
            PytestMetric("fault_ms", "record", key="fault_ms"),
            PytestMetric("uname_ok", "pytest", test="test_uname"))
    assert pytest_report.extract_all(defs, tests) == {"passed": 2, "total": 3,
                                                      "fault_ms": 201.49, "uname_ok": 1}


# -- outcomes as pytest gives them, from real sessions ------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.reports: list[dict] = []

    def pytest_runtest_logreport(self, report):
        self.reports.append(pytest_report.report_dict(report))

    def pytest_collectreport(self, report):
        if report.failed:
            self.reports.append(pytest_report.report_dict(report))


def _session(tmp_path: Path, source: str) -> dict[str, dict]:
    (tmp_path / "test_host.py").write_text(textwrap.dedent(source))
    recorder = Recorder()
    with contextlib.redirect_stdout(io.StringIO()), pytest_scenario.forget_modules(tmp_path):
        pytest.main([str(tmp_path), "-p", "no:cacheprovider", "-q", "--rootdir",
                     str(tmp_path)], plugins=[recorder])
    return pytest_report.tests(recorder.reports)


def test_each_outcome_as_pytest_counts_it(tmp_path):
    tests = _session(tmp_path, """
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("setup")

        @pytest.fixture
        def bad_teardown():
            yield
            raise RuntimeError("teardown")

        def test_pass(record_property):
            record_property("x", 1)

        def test_fail():
            assert False

        def test_setup_error(broken):
            pass

        def test_teardown_error(bad_teardown):
            pass

        def test_skip():
            pytest.skip("no")

        @pytest.mark.xfail
        def test_xfail():
            assert False

        @pytest.mark.xfail
        def test_xpass():
            pass

        @pytest.mark.parametrize("n", [1, 2])
        def test_param(n, record_property):
            record_property("n_ms", n * 10)
        """)
    outcomes = {n.split("::")[1]: t["outcome"] for n, t in tests.items()}
    assert outcomes == {"test_pass": "passed", "test_fail": "failed",
                        "test_setup_error": "error", "test_teardown_error": "error",
                        "test_skip": "skipped", "test_xfail": "xfailed",
                        "test_xpass": "xpassed", "test_param[1]": "passed",
                        "test_param[2]": "passed"}
    assert pytest_report.counts(tests)["total"] == 9
    both = PytestMetric("n", "record", key="n_ms", reduce="sum", test="test_param")
    one = PytestMetric("n", "record", key="n_ms", test="test_param[2]")
    assert pytest_report.extract(both, tests) == 30
    assert pytest_report.extract(one, tests) == 20


def test_a_module_that_does_not_import_is_an_error(tmp_path):
    tests = _session(tmp_path, "import no_such_module_here\n")
    assert [t["outcome"] for t in tests.values()] == ["error"]


# -- the extraction rules -------------------------------------------------------------------
def _tests(**outcomes: tuple[str, list]) -> dict[str, dict]:
    return {f"t.py::{n}": {"outcome": o, "records": r, "duration_s": 0, "longrepr": ""}
            for n, (o, r) in outcomes.items()}


def test_a_value_a_failed_test_never_recorded_is_no_measurement():
    tests = _tests(test_a=("failed", []), test_b=("passed", [["other", 1]]))
    assert pytest_report.extract(PytestMetric("m", "record", key="ms"), tests) is None


def test_a_value_no_passing_test_recorded_is_named():
    tests = _tests(test_a=("passed", [["fault_us", 3]]))
    with pytest.raises(metrics.MetricUnavailable) as exc:
        pytest_report.extract(PytestMetric("m", "record", key="fault_ms"), tests)
    assert "no test recorded a number under 'fault_ms'" in str(exc.value)
    assert "recorded: fault_us" in exc.value.hint


def test_a_test_name_that_selects_nothing_is_named():
    with pytest.raises(metrics.MetricUnavailable, match="no test 'test_x' ran"):
        pytest_report.extract(PytestMetric("m", "pytest", test="test_x"),
                              _tests(test_a=("passed", [])))


def test_record_reductions():
    tests = _tests(test_a=("passed", [["ms", 3], ["ms", 1.5]]), test_b=("passed", [["ms", 9]]))
    assert [pytest_report.extract(PytestMetric("m", "record", key="ms", reduce=r), tests)
            for r in ("last", "first", "sum", "max", "count", "median")] == [9, 3, 13.5, 9, 3, 3]


@pytest.mark.parametrize(("name", "nodeid", "hit"), [
    ("test_a", "t.py::test_a", True), ("test_a", "t.py::test_a[1]", True),
    ("test_a[1]", "t.py::test_a[1]", True), ("test_a[1]", "t.py::test_a[2]", False),
    ("test_a", "t.py::test_ab", False), ("test_a", "t.py::TestX::test_a", True),
    ("TestX::test_a", "t.py::TestX::test_a", True), ("t.py::test_a", "t.py::test_a", True),
])
def test_test_names(name, nodeid, hit):
    assert pytest_report.selects(name, nodeid) is hit


# -- the experiment file ------------------------------------------------------------------
def test_a_pytest_scenario_loads(tmp_path):
    path = _experiment(tmp_path)
    sdef = config.load(path).scenario("guest-tests")
    assert sdef.metrics == ("passed", "failed", "fault_ms")
    assert not sdef.lower_is_better_for("passed") and sdef.lower_is_better_for("fault_ms")
    sc = sdef.make("quick", seed=3)
    assert isinstance(sc, pytest_scenario.PytestScenario)
    assert type(sc).METRICS == ("passed", "failed", "fault_ms") and sc.name == "guest-tests"
    assert sc.parameters()["pytest"] == (str(path.parent / "tests" / "test_guest.py"),)
    args = pytest_scenario.pytest_args(sc.spec, tmp_path / "run")
    assert args[0] == str(path.parent / "tests" / "test_guest.py")
    assert args[args.index("-k") + 1] == "not slow" and "-m" not in args
    assert args[args.index("--rootdir") + 1] == str(path.parent)
    assert args[args.index("--junitxml") + 1] == str(tmp_path / "run" / "junit.xml")


@pytest.mark.parametrize(("scenario", "message"), [
    ("{pytest: tests/test_guest.py, kewyord: x, metrics: [{name: p, from: pytest}]}",
     ":4: scenarios.s.kewyord: unknown key"),
    ("{pytest: tests/nope.py, metrics: [{name: p, from: pytest}]}", "tests/nope.py is not in"),
    ("{pytest: tests/test_guest.py, metrics: [{name: p, from: stdout, pattern: x}]}",
     "unknown metric source of a pytest scenario 'stdout'"),
    ("{pytest: tests/test_guest.py, metrics: [{name: p, from: record}]}", "needs key:"),
    ("{pytest: tests/test_guest.py, metrics: [{name: p, from: pytest, outcome: pass}]}",
     "unknown outcome 'pass'"),
    ("{pytest: tests/test_guest.py, metrics: []}", "at least one metric"),
    ("{pytest: tests/test_guest.py, run: ./x, metrics: [{name: p, from: pytest}]}",
     "needs a name of its own and no run:"),
])
def test_what_the_loader_refuses(tmp_path, scenario, message):
    path = _experiment(tmp_path, "kernels:\n  k: {source: debian:6.1}\nscenarios:\n  s: "
                       + scenario + "\n")
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert message in exc.value.render(), exc.value.render()


def test_a_pytest_scenario_in_a_matrix_takes_any_profile(tmp_path):
    text = EXPERIMENT.replace("k: {source: debian:6.1}", "k: {source: debian:6.1, variants: "
                              "{a: {}, b: {cmdline: 'transparent_hugepage=never'}}}")
    path = _experiment(tmp_path, text + "matrix:\n  variants: [a, b]\n  scenarios: "
                                        "[guest-tests]\n  profile: quick\n")
    assert config.load(path).matrix is not None


# -- whole runs on the fake machine: the session's vm is the run's machine -------------------
MARK = {"ssh": "dmesg", "status": 0, "out": "[    0.0] Linux version 6.1.0-fake\n"}


def _run(tmp_path: Path, steps: list[dict], console_panic: bool = False) -> dict:
    sc = config.load(_experiment(tmp_path)).scenario("guest-tests").make("quick")
    spec = BuildSpec(source=DebianSource("6.1"), fragments=(kconfig.load_fragment(
        "qemu-guest"),), variant="default", base="k")
    built = BuiltKernel(spec, KernelArtifact(key="k" * 8, directory=tmp_path,
                                             meta={"release": "6.1.0-fake"}))
    uptime = {"ssh": "cat /proc/uptime", "status": 0, "out": "10.00 15.00\n"}
    transcript = Transcript({"release": "6.1.0-fake"}, [uptime, *steps, uptime])
    machines: list[FakeMachine] = []

    def factory(*a, **kw):
        machines.append(FakeMachine(*a, transcript=transcript, **kw))
        if console_panic:  # the guest crashes during the second test
            original = machines[-1].ssh

            def ssh(timeout_s=30):
                if machines[-1]._cursor.pos >= 4:
                    machines[-1].console.data += b"[ 9.9] Kernel panic - not syncing: x\n"
                return original(timeout_s)
            machines[-1].ssh = ssh
        return machines[-1]

    @contextlib.contextmanager
    def booted(image, opts, out_dir, **kw):
        with boot.boot(image, opts, out_dir, store=accel.VerdictStore(tmp_path / "a.json"),
                       machine_class=factory, make_initramfs=lambda tmp, *a, **kw: tmp / "i",
                       **kw) as vm:
            yield vm

    doc = run.run_scenario(built, sc, tmp_path / "run", accel="tcg", boot=booted)
    assert len(machines) == 1  # one boot: the session never boots a guest of its own
    doc["_replayed_all"] = machines[0].replayed_all
    return doc


def _test_steps() -> list[dict]:
    return [MARK, {"ssh": "uname -r", "status": 0, "out": "6.1.0-fake\n"}, MARK,
            MARK, {"ssh": "cat /tmp/ms", "status": 0, "out": "12.5\n"}, MARK,
            MARK, {"ssh": "false", "status": 1}, MARK]


def test_a_run_is_one_session_on_the_runs_guest(tmp_path):
    doc = _run(tmp_path, _test_steps())
    assert doc["verdict"] == "ok", doc.get("error")
    assert doc["_replayed_all"]
    assert doc["metrics"] == {"passed": 2, "failed": 1, "fault_ms": 12.5}
    assert doc["pytest"]["exit_status"] == 1 and doc["pytest"]["total"] == 3
    failed = doc["tests"]["tests/test_guest.py::test_fails"]
    assert failed["status"] == "fail" and "assert 1 == 0" in failed["longrepr"]
    run_dir = tmp_path / "run"
    assert '<property name="fault_ms" value="12.5"' in (run_dir / "junit.xml").read_text()
    assert "1 failed, 2 passed" in (run_dir / "pytest.log").read_text()
    saved = json.loads((run_dir / "pytest.json").read_text())
    assert pytest_report.tests(saved["reports"]) == {
        n: {k: v for k, v in t.items() if k != "status"} | {"longrepr": t.get("longrepr", "")}
        for n, t in doc["tests"].items()}


def test_a_guest_the_tests_crash_is_the_runs_verdict_not_a_second_boot(tmp_path):
    steps = _test_steps()[:5]  # the second test's command sees the panic
    doc = _run(tmp_path, steps, console_panic=True)
    assert doc["verdict"] == "kernel-crash", doc
    assert "Kernel panic" in doc["error"]


def test_pytest_that_cannot_run_is_the_infrastructures_fault(tmp_path):
    sc = config.load(_experiment(tmp_path)).scenario("guest-tests").make("quick")
    with pytest.raises(InfraError, match=r"exit 5: no tests collected"):
        sc.outcome([], 5)


# -- vm.record in plain pytest use -----------------------------------------------------------
def test_record_keeps_numbers_in_the_tests_user_properties(tmp_path):
    guest = Guest(Path(), "v", boot.BootOptions(), tmp_path, machine=SimpleNamespace())
    guest.item = SimpleNamespace(user_properties=[])
    guest.record("fault_ms", 1.5)
    guest.record("faults", 3)
    assert guest.item.user_properties == [("fault_ms", 1.5), ("faults", 3)]
    for bad in ("1.5", True, float("nan"), None):
        with pytest.raises(TypeError, match="finite number"):
            guest.record("x", bad)
    with pytest.raises(TypeError, match="non-empty string"):
        guest.record("", 1)
    guest.item = None
    with pytest.raises(RuntimeError, match="inside a test"):
        guest.record("x", 1)


def test_an_attached_guest_never_boots_another(tmp_path):
    machine = SimpleNamespace(unusable=lambda: "QEMU exited", shutdown=lambda graceful: None)
    guest = Guest(Path(), "v", boot.BootOptions(), tmp_path, machine=machine)
    with pytest.raises(InfraError, match="does not boot another"):
        guest.ensure_alive()


# -- bisect ----------------------------------------------------------------------------------
def test_bisect_measures_a_pytest_scenario_with_its_metrics_direction(tmp_path):
    from vmtest import bisect

    path = _experiment(tmp_path)
    assert bisect.check_metric("guest-tests", "passed", path) is False  # higher is better
    assert bisect.check_metric("guest-tests", "fault_ms", path) is True
    with pytest.raises(ConfigError, match="no metric 'pased' \\(did you mean passed\\?\\)"):
        bisect.check_metric("guest-tests", "pased", path)
    sc = bisect.scenario_def("guest-tests", path).make("quick")
    assert isinstance(sc, pytest_scenario.PytestScenario)
