"""What a pytest session in a guest recorded, and the metrics of a pytest scenario read
from it. Pure: the session's reports in, tests and values out.

The reports are what `pytest_runtest_logreport` / `pytest_collectreport` saw (one dict per
phase: vmtest/pytest_plugin.py `AttachedSession` writes them as pytest.json), so nothing
here parses pytest's text. A test's outcome combines its phases the way pytest's summary
counts them: an error in setup or teardown is `error`, a skip in any phase `skipped`,
xfail/xpass as such. `vm.record(name, value)` puts (name, value) into the test's
user_properties, which the call phase's report carries.

Metrics: `from: pytest` counts the tests with an outcome (`outcome: passed`, ..., `total`),
`from: record` reduces the values tests recorded under `key`; both optionally for the tests
of one name (`test:`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vmtest.collect.metrics import MetricUnavailable, Value, reduce

SOURCES = ("pytest", "record")
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "total")
REDUCTIONS = ("last", "first", "sum", "mean", "median", "min", "max", "count")
# A failed test's text kept in the document (the full text is in pytest.log).
LONGREPR_CHARS = 2000


@dataclass(frozen=True)
class PytestMetric:
    """One declared metric of a pytest scenario."""

    name: str
    source: str  # "pytest": a count of tests by outcome; "record": recorded values
    lower_is_better: bool = True
    description: str = ""
    outcome: str = "passed"  # pytest
    key: str = ""  # record: the name given to vm.record()
    reduce: str = "last"  # record: over every value recorded under key, in test order
    test: str = ""  # only the tests of this name (test_x, test_x[param], Class::test_x)

    def describe(self) -> str:
        what = f"tests {self.outcome}" if self.source == "pytest" \
            else f"vm.record({self.key!r}, ...)"
        return f"metric {self.name} ({what}{f' of {self.test}' if self.test else ''})"


def report_dict(report: Any) -> dict[str, Any]:
    """The part of a pytest TestReport / CollectReport the metrics read (JSON-able)."""
    longrepr = "" if report.passed else str(report.longrepr or "")
    return {"nodeid": report.nodeid, "when": getattr(report, "when", "collect"),
            "outcome": report.outcome, "duration_s": round(getattr(report, "duration", 0.0), 3),
            "xfail": hasattr(report, "wasxfail"),
            "user_properties": [[str(k), v] for k, v in getattr(report, "user_properties", [])],
            "longrepr": longrepr[-LONGREPR_CHARS:]}


def tests(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per test node id: {"outcome", "duration_s", "records": [[name, value]], "longrepr"}.
    A module that failed to collect is one test with outcome error."""
    out: dict[str, dict[str, Any]] = {}
    for rep in reports:
        test = out.setdefault(rep["nodeid"], {"outcome": "passed", "duration_s": 0.0,
                                              "records": [], "longrepr": ""})
        test["duration_s"] = round(test["duration_s"] + rep.get("duration_s", 0.0), 3)
        if rep["when"] == "call":
            test["records"] = [list(p) for p in rep.get("user_properties", [])]
        phase = _phase_outcome(rep)
        if _RANK[phase] > _RANK[test["outcome"]]:
            test["outcome"] = phase
            test["longrepr"] = rep.get("longrepr", "")
    return out


# Which phase's outcome a test takes when phases differ (an error in teardown after a
# passed call: error; a failed call, then an error in teardown: pytest counts both, the
# test is failed here and the error stays in its text).
_RANK = {"passed": 0, "xpassed": 1, "skipped": 2, "xfailed": 3, "error": 4, "failed": 5}


def _phase_outcome(rep: dict[str, Any]) -> str:
    outcome, when = rep["outcome"], rep["when"]
    if rep.get("xfail"):
        return "xfailed" if outcome == "skipped" else "xpassed" if outcome == "passed" \
            else "failed"
    if outcome == "failed":
        return "failed" if when == "call" else "error"
    return outcome


def counts(by_test: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many tests had each outcome, and the total."""
    out = {o: 0 for o in OUTCOMES}
    for test in by_test.values():
        out[test["outcome"]] += 1
    out["total"] = len(by_test)
    return out


def selects(name: str, nodeid: str) -> bool:
    """Whether `name` (test_x, test_x[p], Class::test_x, or a whole node id) names this
    test: a parametrized test's name selects each of its parameters."""
    tail = nodeid.split("::", 1)[1] if "::" in nodeid else nodeid
    base = tail.split("[", 1)[0]
    return name in (nodeid, tail, base) or tail.endswith("::" + name) \
        or base.endswith("::" + name)


def extract_all(metrics: tuple[PytestMetric, ...],
                by_test: dict[str, dict[str, Any]]) -> dict[str, Value]:
    return {m.name: extract(m, by_test) for m in metrics}


def extract(metric: PytestMetric, by_test: dict[str, dict[str, Any]]) -> Value:
    """One metric's value. A recorded value that no test gave is None when a test that
    could have recorded it did not pass (that run measured nothing: the failure is
    counted by the outcome metrics), and MetricUnavailable when every such test passed
    (the key or the test name is wrong: no run will ever give it)."""
    chosen = {n: t for n, t in by_test.items() if not metric.test or selects(metric.test, n)}
    if metric.test and not chosen:
        raise MetricUnavailable(f"{metric.describe()}: no test {metric.test!r} ran",
                                hint=f"tests: {', '.join(by_test) or '(none collected)'}")
    if metric.source == "pytest":
        return counts(chosen)[metric.outcome]
    values = [v for t in chosen.values() for k, v in t["records"]
              if k == metric.key and isinstance(v, (int, float)) and not isinstance(v, bool)]
    if metric.reduce == "count":
        return len(values)
    if values:
        return reduce(values, metric.reduce)
    if any(t["outcome"] not in ("passed", "xpassed") for t in chosen.values()):
        return None
    recorded = sorted({k for t in chosen.values() for k, _ in t["records"]})
    raise MetricUnavailable(f"{metric.describe()}: no test recorded a number under "
                            f"{metric.key!r}",
                            hint=f"recorded: {', '.join(recorded) or '(nothing)'}; a test "
                                 f"records with vm.record({metric.key!r}, NUMBER)")
