"""Metrics declared as data (an experiment file's `metrics:`), and their extraction from
what a run recorded. Pure: observations in, values out.

A `MetricDef` says where a number comes from: the command's stdout or stderr (a regex with
one group, or a key of JSON lines), its exit status, the kernel log (a pattern's count,
splats, dump_page() reasons, the instrumentation's summaries), /proc/vmstat and
/proc/meminfo before and after, any file read before and after, tracefs events (a count,
or the latency from a begin to an end event). `extract()` computes one metric from an
`Observations`. What only the guest can tell (a vmstat counter, a meminfo field, a file)
and is absent there raises `MetricUnavailable`: an infrastructure error naming it, never
a silent None that the comparison would read as "insufficient data".
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
import statistics
from dataclasses import dataclass, field
from typing import Any

from vmtest.errors import InfraError

SOURCES = ("stdout", "stderr", "exit", "dmesg", "vmstat", "meminfo", "file", "tracefs")
REDUCTIONS = ("last", "first", "sum", "mean", "median", "min", "max", "count")
LATENCY_REDUCTIONS = ("median", "mean", "min", "max", "sum", "count", "p90")
TAKES = ("delta", "before", "after")
# The splat kinds vmtest/collect/splats.py classifies ("any": every splat).
SPLAT_KINDS = ("any", "panic", "bug", "kasan", "kfence", "kcsan", "kmsan", "soft-lockup",
               "hard-lockup", "oops", "warning", "hung-task", "rcu-stall", "ubsan", "oom",
               "alloc-failure")
# The instrumentation's summary lines (kernels/patches/README.md): op=NAME k=v ...; a
# metric reads one field of every summary of one op, or counts them.
SUMMARY_FIELDS = ("count", "failed", "drains", "drains_all", "migrate_calls", "passes",
                  "failed_pages", "dumps", "us")
# Written to /dev/kmsg when the scenario starts: dmesg metrics count what follows it, not
# the boot's messages.
DMESG_MARK = "vmtest-scenario: start"

# A trace event: tracefs's events/SUBSYSTEM/NAME.
EVENT_NAME = re.compile(r"[a-z0-9_]+/[a-z0-9_]+")
# A vmstat counter or meminfo field as the kernel prints them (mm/vmstat.c, fs/proc/meminfo.c).
COUNTER_NAME = re.compile(r"[a-z0-9_]+")
MEMINFO_FIELD = re.compile(r"[A-Za-z0-9_()]+")
# A file read in the guest: absolute, under /proc or /sys, nothing a shell would expand.
FILE_PATH = re.compile(r"/(?:proc|sys)(?:/[A-Za-z0-9_.:@+,-]+)+")


class MetricUnavailable(InfraError):
    """The guest cannot give a declared metric (no such counter, field, file or value)."""


@dataclass(frozen=True)
class MetricDef:
    """One declared metric. `source` picks which of the other fields apply (the config
    checks that only those are given)."""

    name: str
    source: str
    lower_is_better: bool = True
    description: str = ""
    pattern: re.Pattern[str] | None = None  # stdout, stderr, dmesg, file
    json_key: str = ""  # stdout, stderr: a (dotted) key of JSON-object lines
    reduce: str = "last"  # stdout, stderr, tracefs latency, dmesg summary
    counter: str = ""  # vmstat
    field_name: str = ""  # meminfo
    path: str = ""  # file
    take: str = "delta"  # vmstat, meminfo, file
    event: str = ""  # tracefs: count of this event
    begin: str = ""  # tracefs: latency from begin ...
    end: str = ""  # ... to end, per task, in milliseconds
    splats: str = ""  # dmesg: splats of this kind ("any": all)
    dump_reason: str = ""  # dmesg: dump_page()s with this reason
    summary_op: str = ""  # dmesg: the instrumentation's summaries of this op
    summary_field: str = ""

    @property
    def events(self) -> tuple[str, ...]:
        """The trace events this metric needs enabled."""
        return tuple(e for e in (self.event, self.begin, self.end) if e)

    def describe(self) -> str:
        """What the metric reads, for error messages."""
        what = {"stdout": f"stdout {self._text_what()}", "stderr": f"stderr {self._text_what()}",
                "exit": "the command's exit status",
                "vmstat": f"/proc/vmstat {self.counter} ({self.take})",
                "meminfo": f"/proc/meminfo {self.field_name} ({self.take})",
                "file": f"{self.path} ({self.take})",
                "tracefs": (f"trace event {self.event}" if self.event
                            else f"{self.begin} -> {self.end} latency"),
                "dmesg": "dmesg"}[self.source]
        return f"metric {self.name} ({what})"

    def _text_what(self) -> str:
        if self.json_key:
            return f"JSON key {self.json_key!r}"
        return f"pattern {self.pattern.pattern if self.pattern else ''!r}"


@dataclass
class Observations:
    """What one run of a data-defined scenario recorded. Snapshots are as
    `parse_snapshot` reads them; files map a path to its text (None: unreadable)."""

    stdout: str = ""
    stderr: str = ""
    exit_status: int | None = None
    dmesg: str = ""
    trace: str = ""
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


# -- the guest side: what to read (pure: names in, shell out) --------------------------
def snapshot_script(files: tuple[str, ...]) -> str:
    """One round trip: /proc/vmstat, /proc/meminfo and each file, as '### SECTION' blocks."""
    lines = ["echo '### vmstat'; cat /proc/vmstat", "echo '### meminfo'; cat /proc/meminfo"]
    for path in files:
        q = shlex.quote(path)
        lines.append(f"echo {shlex.quote('### file ' + path)}; "
                     f"cat {q} 2>/dev/null || echo '### unreadable'")
    lines.append("echo '### end'")
    return "\n".join(lines)


def parse_snapshot(text: str) -> dict[str, Any]:
    """{"vmstat": {counter: int}, "meminfo_kib": {field: int}, "files": {path: text|None}}"""
    out: dict[str, Any] = {"vmstat": {}, "meminfo_kib": {}, "files": {}}
    section, path = "", ""
    body: list[str] = []

    def close() -> None:
        if section == "file":
            out["files"][path] = None if body == ["### unreadable"] else "\n".join(body)

    for line in text.splitlines():
        if line.startswith("### ") and line != "### unreadable":
            close()
            words = line[4:].split(" ", 1)
            section, path, body = words[0], words[1] if len(words) > 1 else "", []
            continue
        if section == "vmstat":
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                out["vmstat"][key] = int(value)
        elif section == "meminfo":
            key, _, rest = line.partition(":")
            words = rest.split()
            if words and words[0].isdigit():
                out["meminfo_kib"][key.strip()] = int(words[0])
        elif section == "file":
            body.append(line)
    close()
    return out


def trace_events(metrics: tuple[MetricDef, ...]) -> tuple[str, ...]:
    """Every trace event the metrics need, once each, in order."""
    return tuple(dict.fromkeys(e for m in metrics for e in m.events))


def files(metrics: tuple[MetricDef, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.path for m in metrics if m.source == "file"))


# -- extraction ------------------------------------------------------------------------
Value = int | float | None


def extract_all(metrics: tuple[MetricDef, ...], obs: Observations) -> dict[str, Value]:
    """Every metric's value (MetricUnavailable for the first the guest could not give)."""
    cache: dict[str, Any] = {}
    return {m.name: extract(m, obs, cache) for m in metrics}


def extract(metric: MetricDef, obs: Observations, cache: dict[str, Any] | None = None) -> Value:
    """One metric's value from a run's observations. None only for a tracefs latency
    with no begin/end pair (nothing happened to time)."""
    cache = {} if cache is None else cache
    source = metric.source
    if source in ("stdout", "stderr"):
        return _from_text(metric, obs.stdout if source == "stdout" else obs.stderr)
    if source == "exit":
        if obs.exit_status is None:
            raise MetricUnavailable(f"{metric.describe()}: the command did not finish")
        return obs.exit_status
    if source == "vmstat":
        return _before_after(metric, obs, "vmstat", metric.counter, "/proc/vmstat counter")
    if source == "meminfo":
        return _before_after(metric, obs, "meminfo_kib", metric.field_name,
                             "/proc/meminfo field")
    if source == "file":
        return _from_file(metric, obs)
    if source == "tracefs":
        if "trace" not in cache:
            cache["trace"] = parse_events(obs.trace)
        return _from_trace(metric, cache["trace"])
    if source == "dmesg":
        return _from_dmesg(metric, obs.dmesg, cache)
    raise ValueError(f"unknown metric source {source!r}")  # the config allows no other


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def reduce(values: list[int | float], how: str) -> int | float:
    if how == "count":
        return len(values)
    if how == "sum":
        return sum(values)
    if how == "first":
        return values[0]
    if how == "last":
        return values[-1]
    if how == "min":
        return min(values)
    if how == "max":
        return max(values)
    if how == "mean":
        return round(statistics.fmean(values), 6)
    if how == "median":
        return statistics.median(values)
    if how == "p90":
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    raise ValueError(f"unknown reduction {how!r}")


def _from_text(metric: MetricDef, text: str) -> int | float:
    values: list[int | float] = []
    if metric.json_key:
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj: Any = json.loads(line)
            except ValueError:
                continue
            for part in metric.json_key.split("."):
                obj = obj.get(part) if isinstance(obj, dict) else None
            if isinstance(obj, (int, float)) and not isinstance(obj, bool):
                values.append(obj)
    else:
        assert metric.pattern is not None
        for m in metric.pattern.finditer(text):
            if metric.pattern.groups == 0:
                values.append(1)
                continue
            number = _number(m.group(1) or "")
            if number is None:
                raise MetricUnavailable(f"{metric.describe()}: matched {m.group(0)!r}, whose "
                                        f"group {m.group(1)!r} is not a number",
                                        hint="make the pattern's group match only the number")
            values.append(number)
    if metric.reduce == "count":
        return len(values)
    if not values:
        raise MetricUnavailable(f"{metric.describe()}: the command printed no such value",
                                log_tail=text[-1500:] or "(no output)",
                                hint="check the command's output (stdout.txt / stderr.txt "
                                     "in the run directory) against the pattern")
    return reduce(values, metric.reduce)


def _close(name: str, known: Any) -> str:
    near = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f"; close: {', '.join(near)}" if near else ""


def _before_after(metric: MetricDef, obs: Observations, section: str, key: str,
                  what: str) -> int:
    before, after = obs.before.get(section, {}), obs.after.get(section, {})
    if key not in after or (metric.take != "after" and key not in before):
        raise MetricUnavailable(f"{metric.describe()}: the guest kernel has no {what} {key!r}"
                                f"{_close(key, after)}",
                                hint="the name is as the guest prints it; a counter may need "
                                     "a kernel option (CONFIG_...) or a newer kernel")
    if metric.take == "before":
        return int(before[key])
    if metric.take == "after":
        return int(after[key])
    return int(after[key]) - int(before[key])


def _file_value(metric: MetricDef, text: str | None, when: str) -> int | float:
    if text is None:
        raise MetricUnavailable(f"{metric.describe()}: {metric.path} could not be read in the "
                                f"guest ({when} the command)",
                                hint="check the path exists in the guest kernel (a sysfs or "
                                     "debugfs file may need a kernel option)")
    if metric.pattern is not None:
        m = metric.pattern.search(text)
        number = _number(m.group(1)) if m else None
    else:
        number = _number(text.strip())
    if number is None:
        shown = text.strip()[:200]
        raise MetricUnavailable(f"{metric.describe()}: {metric.path} {when} the command holds "
                                f"{shown!r}, not a number"
                                + (" matching the pattern" if metric.pattern else ""),
                                hint="add pattern: with one group for the number")
    return number


def _from_file(metric: MetricDef, obs: Observations) -> int | float:
    after = _file_value(metric, obs.after.get("files", {}).get(metric.path), "after")
    if metric.take == "after":
        return after
    before = _file_value(metric, obs.before.get("files", {}).get(metric.path), "before")
    if metric.take == "before":
        return before
    delta = after - before
    return round(delta, 9) if isinstance(delta, float) else delta


# "  sh-80  [001] .....  21.326519: cma_alloc_start: ..." (task-pid, optional tgid, CPU,
# flags, time, event): the trace file's format (kernel/trace/trace_output.c)
_TRACE_LINE = re.compile(r"^\s*(.+?-\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[\d+\]\s+(?:\S+\s+)?"
                         r"(\d+\.\d+):\s+(\w+):")
_ENTRIES = re.compile(r"entries-in-buffer/entries-written: (\d+)/(\d+)")


def parse_events(text: str) -> dict[str, Any]:
    """{"events": [(task, seconds, event name)], "lost": entries the ring dropped}."""
    events: list[tuple[str, float, str]] = []
    lost = 0
    for line in text.splitlines():
        if line.startswith("#"):
            if m := _ENTRIES.search(line):
                lost = int(m.group(2)) - int(m.group(1))
            continue
        if m := _TRACE_LINE.match(line):
            events.append((m.group(1), float(m.group(2)), m.group(3)))
    return {"events": events, "lost": lost}


def _from_trace(metric: MetricDef, trace: dict[str, Any]) -> Value:
    if trace["lost"]:
        raise MetricUnavailable(f"{metric.describe()}: the trace ring buffer dropped "
                                f"{trace['lost']} events, so counts are short",
                                hint="trace fewer events or shorten the command")
    if metric.event:
        name = metric.event.split("/", 1)[1]
        return sum(1 for _, _, ev in trace["events"] if ev == name)
    begin, end = metric.begin.split("/", 1)[1], metric.end.split("/", 1)[1]
    started: dict[str, float] = {}
    spans: list[float] = []
    for task, when, ev in trace["events"]:
        if ev == begin:
            started[task] = when
        elif ev == end and task in started:
            spans.append(round((when - started.pop(task)) * 1000, 6))
    if metric.reduce == "count":
        return len(spans)
    return reduce(spans, metric.reduce) if spans else None


def after_mark(text: str) -> str:
    """The kernel log from the scenario's start mark on (all of it without the mark: a
    ring buffer that wrapped past it, which the dmesg parser reports as loss)."""
    at = text.rfind(DMESG_MARK)
    if at < 0:
        return text
    return text[text.find("\n", at) + 1:] if "\n" in text[at:] else ""


def _from_dmesg(metric: MetricDef, text: str, cache: dict[str, Any]) -> int | float:
    scenario_log = after_mark(text)
    if metric.pattern is not None:
        return sum(1 for line in scenario_log.splitlines() if metric.pattern.search(line))
    if "dmesg" not in cache:
        # imported here: its ~100 patterns compile at import, which loading a config
        # need not pay
        from vmtest.collect import dmesg as dmesg_parser

        cache["dmesg"] = dmesg_parser.parse(scenario_log)
    report = cache["dmesg"]
    if metric.splats:
        return sum(1 for s in report.splats if metric.splats in ("any", s.kind))
    if metric.dump_reason:
        return sum(1 for d in report.dumps if d.reason == metric.dump_reason)
    ops = report.ops(metric.summary_op)
    if metric.summary_field == "count":
        return len(ops)
    if metric.summary_field == "failed":
        return sum(1 for o in ops if o.get("ret", 0) != 0)
    values = [o[metric.summary_field] for o in ops
              if isinstance(o.get(metric.summary_field), int)]
    if metric.reduce == "count":
        return len(values)
    if not values:
        raise MetricUnavailable(f"{metric.describe()}: no op={metric.summary_op} summary line "
                                f"with {metric.summary_field}= in the kernel log",
                                hint="the summaries come from the instrumentation patch "
                                     "(kernels/patches/README.md): is it in the series?")
    return reduce(values, metric.reduce)
