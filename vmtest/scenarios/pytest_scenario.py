"""A pytest test module as a scenario: one run is one pytest session on the host whose
`vm` fixture is the guest vmtest booted for that run (docs/experiments.md, "pytest
scenarios"). Each test's outcome and the values tests record (`vm.record(name, value)`)
become the run's metrics (vmtest/collect/pytest_report.py), so a pytest test can be the
metric of a matrix and of a bisection.

The session runs in vmtest's process (pytest.main with an `Attachment`, through which
vmtest/pytest_plugin.py's `vm` fixture gets the machine): the fixture then has all
of the machine (QMP hotplug, the console, the crash watch), not a second connection.
pytest keeps global state (sys.modules, sys.stdout), so sessions of parallel runs
(--jobs) take turns (SESSION_LOCK), and the test modules are forgotten after each session
so that a run does not inherit the last one's module state. While a session runs,
sys.stdout is its pytest.log: a line another thread prints then (the matrix's progress of
a parallel run) lands there too.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.collect import pytest_report
from vmtest.collect.pytest_report import PytestMetric
from vmtest.errors import InfraError
from vmtest.scenarios.base import Scenario, elapsed_since
from vmtest.scenarios.custom import MachineOptions

if TYPE_CHECKING:  # annotations only: loading a scenario needs no SSH or QMP
    from vmtest.qemu.machine import Machine

SESSION_LOCK = threading.Lock()


@dataclass(frozen=True)
class PytestSpec:
    """A pytest scenario as an experiment file defines it (vmtest/config.py, its pytest section)."""

    name: str
    tests: tuple[Path, ...]  # files or folders, absolute
    metrics: tuple[PytestMetric, ...]  # the first is the primary metric
    rootdir: Path  # the experiment file's folder (pytest's rootdir: its conftest.py, ini)
    keyword: str = ""  # -k
    markers: str = ""  # -m
    timeout_s: float = 600.0
    machine: MachineOptions = field(default_factory=MachineOptions)
    description: str = ""


@dataclass(frozen=True)
class PytestParams:
    """What a result document records of a pytest scenario's run."""

    pytest: tuple[str, ...]
    keyword: str
    markers: str
    timeout_s: float
    machine: dict[str, int]
    metrics: tuple[str, ...]
    seed: int = 1
    memory_mib: int = 1024
    cma_mib: int = 256
    cpus: int = 2


class Attachment:
    """The plugin object a run passes to pytest.main: the `vm` fixture
    (vmtest/pytest_plugin.py) wraps this run's booted machine (and never boots one), and
    every phase's report is kept as data (vmtest/collect/pytest_report.py reads them; no
    text parsed)."""

    def __init__(self, machine: Machine, variant: str, run_dir: Path) -> None:
        self.machine = machine
        self.variant = variant
        self.run_dir = run_dir
        self.guest: Any = None  # the plugin's Guest around machine, made on first use
        self.reports: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        self.reports.append(pytest_report.report_dict(report))

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:  # a module that does not import: an error, as pytest counts it
            self.reports.append(pytest_report.report_dict(report))


def pytest_args(spec: PytestSpec, run_dir: Path) -> list[str]:
    """pytest's command line for one run (pure). Nothing is written beside the tests:
    no cache, temporary paths and the JUnit file in the run directory."""
    args = [*(str(p) for p in spec.tests), "--rootdir", str(spec.rootdir),
            "-p", "no:cacheprovider", "-p", "no:xdist", "-rA",
            # sys-level capture: fd-level would dup2 this process's stdout and stderr,
            # which the other runs' threads and the CLI write to
            "--capture=sys",
            "--basetemp", str(run_dir / "pytest-tmp"),
            "--junitxml", str(run_dir / "junit.xml"), "-o", "junit_family=xunit1",
            # vmtest (this process) imported its plugin before pytest could rewrite it
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if spec.keyword:
        args += ["-k", spec.keyword]
    if spec.markers:
        args += ["-m", spec.markers]
    return args


class PytestScenario(Scenario):
    """A pytest scenario; `scenario_class()` gives each definition a class of its own."""

    Params = PytestParams
    PROFILES = {}  # any profile: the tests are the same
    spec: PytestSpec

    def __init__(self, spec: PytestSpec, profile: str, seed: int = 1) -> None:
        machine = spec.machine
        params = PytestParams(pytest=tuple(str(p) for p in spec.tests), keyword=spec.keyword,
                              markers=spec.markers, timeout_s=spec.timeout_s,
                              machine=machine.to_dict(),
                              metrics=tuple(m.name for m in spec.metrics), seed=seed,
                              memory_mib=machine.memory_mib or 1024,
                              cma_mib=256 if machine.cma_mib is None else machine.cma_mib,
                              cpus=machine.cpus or 2)
        super().__init__(params, profile)
        self.spec = spec

    def boot_overrides(self) -> dict[str, Any]:
        # bash: the plugin's commands are shell lines (as the `vm` fixture boots)
        return {"log_buf_len": "8M", "programs": ("bash",)} | self.spec.machine.boot_overrides()

    def time_limit_s(self) -> float:
        return 300 + self.spec.timeout_s

    def run(self, vm: Machine, run_dir: Path) -> dict[str, Any]:
        try:
            import pytest
        except ImportError as exc:
            raise InfraError("a pytest scenario needs pytest in vmtest's Python",
                             hint="pip install pytest (or vmtest[test])") from exc
        started = time.monotonic()
        session = Attachment(vm, self.spec.name, run_dir)
        log_path = run_dir / "pytest.log"
        with SESSION_LOCK, log_path.open("w") as log_file, \
                contextlib.redirect_stdout(log_file), forget_modules(self.spec.rootdir):
            status = int(pytest.main(pytest_args(self.spec, run_dir), plugins=[session]))
        (run_dir / "pytest.json").write_text(json.dumps(
            {"exit_status": status, "reports": session.reports}, indent=1))
        vm.check()  # a guest the tests crashed: the run's verdict (kernel-crash, ...)
        outcome = self.outcome(session.reports, status)
        outcome["timings"] = {"pytest_s": elapsed_since(started)}
        outcome["artifacts"] = {"pytest_log": str(log_path),
                                "pytest_json": str(run_dir / "pytest.json"),
                                "junit": str(run_dir / "junit.xml")}
        return outcome

    # -- pure --------------------------------------------------------------------------
    def outcome(self, reports: list[dict[str, Any]], status: int) -> dict[str, Any]:
        """The scenario's part of the result document from the session's reports. A
        session pytest could not run (usage error, nothing collected, an internal error:
        pytest's exit codes 2-5) is the infrastructure's fault, not the kernel's."""
        by_test = pytest_report.tests(reports)
        if status not in (0, 1):
            raise InfraError(f"scenario {self.spec.name}: pytest could not run the tests "
                             f"(exit {status}: {_EXIT.get(status, 'unknown')})",
                             hint="see pytest.log in the run directory; run the same tests "
                                  "with `pytest` and --vmtest-* options to check them")
        values = pytest_report.extract_all(self.spec.metrics, by_test)
        # status: in kselftest's words too, which the comparison's per-test
        # differences read (vmtest/compare.py test_differences)
        return {"metrics": values,
                "tests": {n: {"status": STATUS[t["outcome"]],
                              **{k: v for k, v in t.items() if v != ""}}
                          for n, t in by_test.items()},
                "pytest": {"exit_status": status, **pytest_report.counts(by_test)}}


STATUS = {"passed": "pass", "failed": "fail", "error": "fail", "skipped": "skip",
          "xfailed": "xfail", "xpassed": "xpass"}
# pytest's ExitCode (src/_pytest/config/__init__.py)
_EXIT = {2: "interrupted or a collection error", 3: "internal error", 4: "usage error",
         5: "no tests collected"}


@contextlib.contextmanager
def forget_modules(folder: Path) -> Any:
    """After the session, drop the modules imported from folder (the tests, their
    conftest.py): the next run imports them afresh."""
    before = set(sys.modules)
    try:
        yield
    finally:
        root = str(folder.resolve())
        for name in set(sys.modules) - before:
            path = getattr(sys.modules.get(name), "__file__", None) or ""
            if path.startswith(root):
                sys.modules.pop(name, None)


def scenario_class(spec: PytestSpec) -> type[PytestScenario]:
    return type(f"PytestScenario[{spec.name}]", (PytestScenario,),
                {"name": spec.name, "PROGRESS_METRICS": (spec.metrics[0].name,),
                 "METRICS": tuple(m.name for m in spec.metrics)})


def make(spec: PytestSpec, profile: str, seed: int = 1) -> PytestScenario:
    return scenario_class(spec)(spec, profile, seed)
