"""KTAP / TAP 13 output of kernel selftests -> one result per test, subtests nested.

What the kernel's runners print (Documentation/dev-tools/ktap.rst, tools/testing/
selftests/kselftest/runner.sh):

    TAP version 13
    1..2
    # selftests: mm: run_vmtests.sh
    # # running ./hugepage-mmap          <- the test's own output, one "# " deeper
    # ok 1 hugepage-mmap                 <- a subtest's result (KTAP nested by "# ")
    ok 1 selftests: mm: run_vmtests.sh
    not ok 2 selftests: mm: soft-dirty # TIMEOUT 45 seconds

Nesting is a "# " prefix (kselftest) or two spaces (KTAP v1, KUnit). A result line is
`ok|not ok N [- ]NAME [# DIRECTIVE [REASON]]`; SKIP, TODO/XFAIL and TIMEOUT directives
are read, and kselftest's `# exit=N`. Older mm runners (run_vmtests.sh up to 6.2) print
no TAP for their tests but "running ./TEST ARGS" and then [PASS], [FAIL] or [SKIP]: those
become subtests too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_RESULT = re.compile(r"^(not ok|ok)\b\s*(\d+)?\s*(?:-\s*)?(.*?)\s*$")
_LEGACY_HEAD = re.compile(r"^running (.+?)\s*$")
_LEGACY_MARK = re.compile(r"^\[(PASS|FAIL|SKIP)\]\s*(.*)$")
_HEADER = re.compile(r"^(?:K?TAP version \d+|1\.\.\d+)$")
_PLAN = re.compile(r"^1\.\.(\d+)\b")
_SELFTEST_NAME = re.compile(r"^selftests:\s*(\S+):\s*(.+)$")
_NOISE = re.compile(r"^(?:-+|TAP version \d+|KTAP version \d+|1\.\.\d+.*|#?\s*Totals:.*|"
                    r"\[(?:PASS|FAIL|SKIP)\]|SUMMARY:.*|timeout set to \d+|"
                    r"selftests: \S+: \S+|running .*)$")

# not_built: a program of the tree's selftests that did not compile on the host (its
# stand-in says so, kernel/selftests.py): no verdict on the kernel.
STATUSES = ("pass", "fail", "skip", "timeout", "xfail", "missing", "not_built")


@dataclass
class TestResult:
    name: str
    status: str  # one of STATUSES
    number: int | None = None
    directive: str = ""  # as printed: "SKIP", "TIMEOUT 45 seconds", "exit=1"
    reason: str = ""  # why it skipped, timed out or failed, when the output says
    output: list[str] = field(default_factory=list)  # its own lines, one level stripped
    subtests: list[TestResult] = field(default_factory=list)
    planned: int | None = None  # its subtests' plan ("1..N"), when it printed one

    @property
    def plan_mismatch(self) -> bool:
        """It planned N subtests and reported another number (a test that stopped
        half-way: ksft_exit_fail_msg, a crash)."""
        return self.planned is not None and self.planned != len(self.subtests)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status}
        if self.number is not None:
            out["number"] = self.number
        if self.planned is not None:
            out["planned"] = self.planned
        if self.directive:
            out["directive"] = self.directive
        if self.reason:
            out["reason"] = self.reason
        if self.subtests:
            out["subtests"] = [t.to_dict() for t in self.subtests]
        return out


def _strip_level(line: str) -> str | None:
    """The line one nesting level down, or None if it is at this level."""
    if line.startswith("# "):
        return line[2:]
    if line == "#":
        return ""
    if line.startswith("  "):  # KTAP v1: two spaces per level
        return line[2:]
    if line.startswith("\t"):
        return line[1:]
    return None


def _split_directive(rest: str) -> tuple[str, str]:
    """'name # SKIP reason' -> ('name', 'SKIP reason'); a '#' inside the name is kept
    unless a directive follows it."""
    m = re.search(r"(?:^|\s)#\s*(SKIP|TODO|XFAIL|TIMEOUT|exit=-?\d+)\b(.*)$", rest,
                  re.IGNORECASE)
    if not m:
        return rest.rstrip(" #"), ""
    return rest[:m.start()].strip(), (m.group(1) + m.group(2)).strip()


def _status(ok: bool, directive: str) -> str:
    word = directive.split()[0].upper() if directive else ""
    if word == "SKIP":
        return "skip"
    if word in ("TODO", "XFAIL"):
        return "xfail"
    if word == "TIMEOUT":
        return "timeout"
    return "pass" if ok else "fail"


def _reason_from(output: list[str], status: str) -> str:
    """The line of a test's own output that says why it skipped/failed: a line naming
    the outcome ("SKIP: no hugetlbfs", "# SKIP ..."), else its last meaningful line."""
    lines = [ln.strip().lstrip("#").strip() for ln in output]
    lines = [ln for ln in lines if ln and not _NOISE.match(ln) and not _RESULT.match(ln)]
    if status == "skip":
        for line in reversed(lines):
            m = re.search(r"\bSKIP(?:PED)?\b[:\s]*(.*)", line, re.IGNORECASE)
            if m and m.group(1).strip():
                return m.group(1).strip()
    return lines[-1] if lines else ""


def _is_separator(line: str, width: int) -> bool:
    """run_vmtests.sh's rule above and below a title: as wide as the title, no blanks
    (dashes from GNU tr; other characters where the guest's tr lacks [:graph:])."""
    return len(line) == width and " " not in line and line != ""


def _legacy_segments(lines: list[str]) -> list[tuple[str, int, int | None]]:
    """(name, first body line, marker line or None) of each 'running ./T ARGS' test of
    a pre-KTAP run_vmtests.sh: the title between two rules, its outcome the last
    [PASS]/[FAIL]/[SKIP] before the next title."""
    stripped = [ln.strip() for ln in lines]
    heads = [i for i in range(1, len(lines) - 1)
             if _LEGACY_HEAD.match(stripped[i])
             and _is_separator(stripped[i - 1], len(stripped[i]))
             and _is_separator(stripped[i + 1], len(stripped[i]))]
    segments: list[tuple[str, int, int | None]] = []
    for n, head in enumerate(heads):
        stop = heads[n + 1] - 1 if n + 1 < len(heads) else len(lines)
        marks = [i for i in range(head + 2, stop) if _LEGACY_MARK.match(stripped[i])]
        title = stripped[head].removeprefix("running ").strip()
        name = re.sub(r"^(?:bash\s+)?\./", "", title)
        segments.append((name, head + 2, marks[-1] if marks else None))
    return segments


def _legacy(lines: list[str], segments: list[tuple[str, int, int | None]]) -> list[TestResult]:
    """run_vmtests.sh before KTAP: one result per 'running' segment; KTAP that the test
    itself printed inside its segment is its subtests."""
    results: list[TestResult] = []
    for name, first, mark in segments:
        if mark is None:  # the runner stopped inside this test
            results.append(TestResult(name=name, status="missing", number=len(results) + 1,
                                      reason="no [PASS]/[FAIL]/[SKIP]: the run stopped here",
                                      output=lines[first:]))
            continue
        body = lines[first:mark]
        m = _LEGACY_MARK.match(lines[mark].strip())
        assert m is not None
        status = {"PASS": "pass", "FAIL": "fail", "SKIP": "skip"}[m.group(1)]
        subtests = _parse_lines(body) if any(_RESULT.match(b) for b in body) else []
        result = TestResult(name=name, status=status, number=len(results) + 1,
                            output=[b for b in body if not _HEADER.match(b.strip())],
                            subtests=subtests, planned=_plan(body))
        if status != "pass":
            result.reason = m.group(2).strip() or _reason_from(body, status)
        results.append(result)
    return results


def _children(block: list[str], parent: str,
              plan: int | None) -> tuple[list[TestResult], int | None]:
    """The subtests in a test's block: KTAP at this level, or run_vmtests.sh's older
    'running' segments when KTAP lines sit inside them (the tests' own, not the
    runner's: 6.1 prints its tests' KTAP unindented). A block that is just the
    'running' segment of the test itself (6.12 prints one before each result) adds no
    level: its KTAP is the test's subtests."""
    results = [i for i, b in enumerate(block) if _RESULT.match(b)]
    segments = _legacy_segments(block)
    inside = any(first <= r < (mark if mark is not None else len(block))
                 for first, mark in ((f, m) for _, f, m in segments) for r in results)
    if segments and (inside or not results):
        found = _legacy(block, segments)
        if len(found) == 1 and found[0].name == parent:
            return found[0].subtests, found[0].planned
        return found, None  # the runner's own list: no plan of its own (pre-KTAP)
    return (_parse_lines(block) if results else []), plan


def _plan(block: list[str]) -> int | None:
    """The plan ("1..N") at this level of a test's block: its subtests' count."""
    plans = [int(p.group(1)) for b in block if (p := _PLAN.match(b.strip()))]
    return plans[-1] if plans else None


def parse(text: str) -> list[TestResult]:
    """The results at the top level of text, each with its subtests."""
    return _parse_lines(text.splitlines())


def _parse_lines(lines: list[str]) -> list[TestResult]:
    results: list[TestResult] = []
    block: list[str] = []  # the lines since the previous result, one level down
    plan: int | None = None  # a "1..N" one level down: the next result's subtests
    for raw in lines:
        line = raw.rstrip("\r")
        m = _RESULT.match(line)
        if m is None:
            inner = _strip_level(line)
            block.append(inner if inner is not None else line)
            if inner is not None and (p := _PLAN.match(inner.strip())):
                plan = int(p.group(1))
            continue
        ok = m.group(1) == "ok"
        name, directive = _split_directive(m.group(3))
        if directive.startswith("exit="):
            ok = False
        status = _status(ok, directive)
        subtests, planned = _children(block, name, plan)
        result = TestResult(name=name, status=status,
                            number=int(m.group(2)) if m.group(2) else None,
                            directive=directive, subtests=subtests,
                            output=[b for b in block if not _HEADER.match(b.strip())],
                            planned=planned)
        reason = directive.split(None, 1)[1] if len(directive.split(None, 1)) > 1 \
            and status in ("skip", "xfail") else ""
        failed = [t.name or f"#{t.number}" for t in subtests if t.status in ("fail", "timeout")]
        if status != "pass" and not reason:
            reason = directive if status in ("timeout", "fail") and directive else ""
            if status == "fail" and failed:  # a runner: which of its tests failed
                shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more"
                                                 if len(failed) > 5 else "")
                reason = f"{reason}: failed: {shown}" if reason else f"failed: {shown}"
            elif status in ("skip", "fail"):
                found = _reason_from(block, status)
                reason = f"{reason}: {found}" if reason and found else (found or reason)
        if status == "pass" and not subtests:  # passed, but said it left parts out
            skipped = [ln.strip().lstrip("#").strip() for ln in result.output
                       if re.search(r"\bskip", ln, re.IGNORECASE)]
            if skipped:
                reason = "partly skipped: " + "; ".join(dict.fromkeys(skipped[-3:]))
        result.reason = reason
        results.append(result)
        block, plan = [], None
    return results


def selftest_id(name: str) -> str:
    """'selftests: mm: soft-dirty' -> 'mm:soft-dirty' (kselftest's COLLECTION:TEST)."""
    m = _SELFTEST_NAME.match(name)
    return f"{m.group(1)}:{m.group(2)}" if m else name


# Between a test and its subtest in a path: pytest's, since test names hold "/" and ":"
# ("userfaultfd hugetlb_shared 128 32 ./huge/uffd-test", "selftests: net/forwarding").
SEP = "::"


def flatten(results: list[TestResult], prefix: str = "") -> list[tuple[str, TestResult]]:
    """(path, result) for every test and subtest; paths are unique ('a::b', 'a::b (2)')."""
    out: list[tuple[str, TestResult]] = []
    seen: dict[str, int] = {}
    for result in results:
        base = selftest_id(result.name) if not prefix else (result.name or
                                                            f"#{result.number}")
        seen[base] = seen.get(base, 0) + 1
        path = prefix + base + (f" ({seen[base]})" if seen[base] > 1 else "")
        out.append((path, result))
        out += flatten(result.subtests, path + SEP)
    return out


def totals(results: list[TestResult]) -> dict[str, int]:
    """How many leaf tests (a test's subtests stand for it) ended each way."""
    counts = dict.fromkeys(STATUSES, 0)

    def walk(items: list[TestResult]) -> None:
        for item in items:
            if item.subtests:
                walk(item.subtests)
                # A runner that failed or timed out outside its subtests counts too
                # (not for a subtest that was not built: that is why it failed).
                if item.status in ("fail", "timeout") and all(
                        s.status not in (item.status, "not_built") for s in item.subtests):
                    counts[item.status] += 1
            else:
                counts[item.status] += 1

    walk(results)
    return counts


# What kernel/selftests.py's stand-in for a program that did not compile prints.
_NOT_BUILT = re.compile(r"vmtest: (\S+) did not compile on the host: (.*)$")


def mark_not_built(results: list[TestResult]) -> None:
    """A failed test whose output is a stand-in's "did not compile" line is not built,
    not failed: its reason is the compiler's error (in place, subtests too)."""
    for result in results:
        mark_not_built(result.subtests)
        if result.status != "fail":
            continue
        for line in result.output:
            m = _NOT_BUILT.search(line.lstrip("# "))
            if m and not result.subtests:
                result.status = "not_built"
                result.reason = f"{m.group(1)}.c did not compile: {m.group(2).strip()}"
                break
