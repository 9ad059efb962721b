"""tracefs: what to trace (the guest command that sets it up) and the `trace` output ->
per-event counts and migration sums by reason."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from typing import Any

TRACING = "/sys/kernel/tracing"
TRACE_FILE = f"{TRACING}/trace"
TRACE_EVENTS = ("migrate/mm_migrate_pages", "cma/cma_alloc_start", "cma/cma_alloc_finish",
                "cma/cma_alloc_busy_retry")
# Function-tracer counts: what a kernel without the instrumentation patch still tells.
# Calls made inside mm/swap.c may be inlined and then are invisible to ftrace, so the
# instrumentation's counters (kernels/patches/README.md) stay the primary source.
TRACE_FUNCTIONS = ("lru_add_drain_all", "lru_cache_disable", "migrate_pages",
                   "alloc_contig_range", "offline_pages")
# buffer_size_kb is per CPU; a full ring drops the oldest entries, which the counts
# would silently miss, so it is sized well above the kernel's default.
START_COMMAND = "; ".join([
    f"cd {TRACING}", "echo 0 > tracing_on", "echo > trace", "echo > set_ftrace_filter",
    "echo 16384 > buffer_size_kb",
    *(f"[ -e events/{e}/enable ] && echo 1 > events/{e}/enable" for e in TRACE_EVENTS),
    *(f"echo {f} >> set_ftrace_filter" for f in TRACE_FUNCTIONS),
    "grep -q . set_ftrace_filter && echo function > current_tracer",
    "echo 1 > tracing_on", "true"])

_EVENT = re.compile(r":\s+(\w+):\s+(.*)$")
# function tracer: "  sh-80  [001] .....  21.33: lru_add_drain_all <-__alloc_contig_migrate_range"
_FUNCTION = re.compile(r":\s+([\w.]+) <-([\w.]+)")
_KV = re.compile(r"(\w+)=(\S+)")
# "  sh-80  [001] .....  21.326519: cma_alloc_start: ...": the task and the time
_TASK_TIME = re.compile(r"^\s*(.+?-\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[\d+\]\s+\S+\s+(\d+\.\d+):")


def parse_trace(text: str) -> dict[str, Any]:
    events: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    migrate: dict[str, dict[str, int]] = defaultdict(lambda: {"calls": 0, "succeeded": 0,
                                                              "failed": 0})
    cma_fail = 0
    lost = 0
    # cma_alloc() from its start event to its finish event, per task: what a driver's
    # cma_alloc() call waits, all ranges and retries included
    started: dict[str, float] = {}
    alloc_ms: list[float] = []
    for line in text.splitlines():
        if line.startswith("#"):
            if "entries-in-buffer" in line:
                m = re.search(r"entries-in-buffer/entries-written: (\d+)/(\d+)", line)
                if m:
                    lost = int(m.group(2)) - int(m.group(1))
            continue
        fm = _FUNCTION.search(line)
        if fm:
            functions[fm.group(1)] += 1
            continue
        m = _EVENT.search(line)
        if not m:
            continue
        name, rest = m.group(1), m.group(2)
        events[name] += 1
        fields = dict(_KV.findall(rest))
        if name == "mm_migrate_pages":
            bucket = migrate[fields.get("reason", "?")]
            bucket["calls"] += 1
            # include/trace/events/migrate.h: nr_succeeded / nr_failed (6.1, 6.12)
            bucket["succeeded"] += int(fields.get("nr_succeeded") or fields.get("succeeded") or 0)
            bucket["failed"] += int(fields.get("nr_failed") or fields.get("failed") or 0)
        if name in ("cma_alloc_start", "cma_alloc_finish") and (tm := _TASK_TIME.match(line)):
            task, when = tm.group(1), float(tm.group(2))
            if name == "cma_alloc_start":
                started[task] = when
            elif task in started:
                alloc_ms.append((when - started.pop(task)) * 1000)
        if name == "cma_alloc_finish" and (fields.get("errorno", "0") != "0"
                                           or fields.get("pfn") in ("0xffffffffffffffff",)):
            cma_fail += 1
    return {"events": dict(events), "functions": dict(functions),
            "migrate_by_reason": dict(migrate),
            "cma_alloc_failed": cma_fail, "lost_events": lost,
            "cma_alloc_ms": _spread(alloc_ms)}


def _spread(values: list[float]) -> dict[str, float] | None:
    """count, median, 90th percentile and max (None: no start/finish pairs traced)."""
    if not values:
        return None
    ordered = sorted(values)
    return {"count": len(ordered), "median": round(statistics.median(ordered), 3),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
            "max": round(ordered[-1], 3)}
