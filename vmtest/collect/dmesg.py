"""dmesg -> metrics, for the 6.1 and 6.12 formats.

Input may be `dmesg` output ("[    1.234567] msg"), /dev/kmsg records
("6,1234,5678,-;msg") or a console log (with \\r). What is found:

- the instrumentation's summary lines ("vmtest-mm: op=...", kernels/patches/README.md)
  and its "vmtest-mm: migrate_fail ..." lines;
- dump_page() blocks (6.1: "page:%p refcount:..."; 6.12: "page: refcount:..."), ended by
  "page dumped because: REASON", with the attribution of each page: kind (anon, shmem,
  file, other), mapped or not, refcount - mapcount, flags, error code of the failure;
- memory hotplug's "migrating pfn X failed ret:N" and "failed to isolate pfn X" lines;
- CMA allocation failures ("cma_alloc: reserved: alloc failed, req-size: N pages, ret: -E");
- offlining failures ("memory offlining [mem A-B] failed due to REASON", dynamic debug);
- printk loss: "N callbacks suppressed", gaps in the summary lines' seq numbers, and
  summaries whose dumps= disagrees with the dumps found;
- kernel splats (kernel/panic.c, lib/bug.c, arch/x86/mm/fault.c, kernel/watchdog.c,
  kernel/hung_task.c, kernel/rcu/tree_stall.h, mm/kasan/report.c, lib/ubsan.c).
"""

from __future__ import annotations

import contextlib
import gc
import json
import quopri
import re
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from vmtest.collect import logprefix
from vmtest.collect.splats import Splat
from vmtest.collect.splats import events as splat_events
from vmtest.procs import Beside

# The instrumentation's counters per operation (kernels/patches/README.md).
SUMMARY_COUNTERS = ("drains", "drains_all", "migrate_calls", "passes", "failed_pages", "dumps",
                    "us")


_KV = re.compile(r"(\w+)=(\S+)", re.A)
_HEX = re.compile(r"^(?:0x)?[0-9a-f]+$")
_HOTPLUG_MIGRATE = re.compile(r"migrating pfn ([0-9a-f]+) failed(?: ret:(-?\d+))?", re.A)
_HOTPLUG_ISOLATE = re.compile(r"failed to isolate pfn ([0-9a-f]+)", re.A)
# mm/cma.c: "cma: cma_alloc: AREA: alloc failed, ..." (5.13+; "__cma_alloc" 6.x), without
# an area before; "alloc_contig_range: [a, b) PFNs busy" (page_alloc.c, 4.x-5.x); CMA's
# "number of available pages: a@b+c@d=> N free of M total pages".
_CMA_FAIL = re.compile(r"(?:cma: )?(?:__)?cma_alloc(?:\(\))?: (?:(.+?): )?alloc failed, "
                       r"req-size: (\d+) pages, ret: (-?\d+)", re.A)
_CONTIG_BUSY = re.compile(r"alloc_contig_range: \[([0-9a-f]+), ([0-9a-f]+)\) PFNs busy", re.A)
_CMA_AVAILABLE = re.compile(r"cma: (?:(\S+): )?number of available pages: ?(.*?)=> ?(\d+) free "
                            r"of (\d+) total pages", re.A)
# mm/memory_hotplug.c: "... failed due to REASON" (5.x+), "... failed" (4.x).
_OFFLINE_FAIL = re.compile(r"memory offlining \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] failed"
                           r"(?: due to (.*))?$", re.A)
_SUPPRESSED = re.compile(r"(\S+): (\d+) callbacks suppressed")
_DROPPED = re.compile(r"\*\* (\d+) printk messages dropped \*\*")
# Splat headers that do not start their line: found by their marker (str.find).
_SPLAT_MARKERS = (" invoked oom-killer: ", "page allocation ")  # failure: / stalls for

# How the parser stays fast (scripts/bench_parser.py): one regex pass, tried only at
# line starts ("\n" + prefix, the prefix atomic so that no alternative is tried twice),
# every alternative starting with a literal (re skips a branch on its first character),
# and a whole dump_page() block -- head line to "page dumped because:" -- in one match.
# Stack lines are read only after a splat; "callbacks suppressed" lines are found by
# str.find (their marker ends the line).
#
# A line's prefix (after logprefix.normalize()): blanks, "<4>", a /dev/kmsg record header,
# a "[    1.234567] " timestamp.
# (Possessive, and "(?:X|)" for "(?:X)?": re runs an optional group three times slower,
# and this runs on every line.)
_PFX = r"(?>[\ \t]*+(?:<\d++>|)(?:\d\d*+,\d++,\d++,[^;\n]*+;|)(?:\[\ *+(?P<ts>\d++\.\d++)\]\ ?|))"
_PFX_NOTS = _PFX.replace("?P<ts>", "?:")
_LINE_PREFIX = re.compile(_PFX, re.A)
# A dump_page() head, as kernels 4.x-6.x print it: "page:%p count:..." (4.x, mapping
# "(null)" padded), "page:%px refcount:... index:0x0" (5.4, no pfn), "page:%p refcount:...
# pfn:0x..." (5.8-6.1), "page: refcount:..." (6.12), and "page:%p is uninitialized and
# poisoned" (its counts are not to be trusted, so none are read).
_PAGE = r"page:(?P<page>[0-9a-f]+|\(____ptrval____\))?\ ?"
_HEAD = (_PAGE + r"""(?:(?:ref)?count:(?P<ref>-?\d+)\ mapcount:(?P<map>-?\d+)
          \ mapping:\ *(?P<mapping>[0-9a-f]+|\(null\)|\(____ptrval____\))\ index:0x[0-9a-f]+
          (?:\ pfn:(?P<pfn>0x[0-9a-f]+))?
        | (?P<poisoned>is\ uninitialized\ and\ poisoned))[^\n]*""")
# The lines __dump_page() prints between a head and its reason, other than aops and flags.
_BODY_OTHER = (r"(?:raw:|head:|memcg:|page_type:|compound_|invalid\ mapping"
               r"|bad\ because\ of\ flags:|page->mem_cgroup:|page\ does\ not\ match)")
# The mapping's operations: "aops:NAME ..." (5.8+), "NAME_aops[ name:...]" (5.4-5.7).
_AOPS = (r"""(?:mapping->a_ops|aops):[ \t]*(?P<aops>\S+)[^\n]*
          | (?P<aops_old>[A-Za-z_]\w*_aops)(?=[\ \n]|\Z)[^\n]*""")
_FLAGS = r"(?P<flags>(?:anon\ |ksm\ |page\ |)flags:\ 0x[0-9a-f]+\([^)\n]*\))[^\n]*"
# A line that is surely a block's own: the lines of _AOPS, _FLAGS and _BODY_OTHER.
_KNOWN = (r"""(?:(?:mapping->a_ops|aops):[ \t]*\S|[A-Za-z_]\w*_aops(?=[\ \n]|\Z)
              |(?:anon\ |ksm\ |page\ )?flags:\ 0x[0-9a-f]+\([^)\n]*\)|""" + _BODY_OTHER
          + r")[^\n]*")
# Lines whose start may open a splat (splats.classify() says which and whether one does).
SPLAT_STARTS = ("Kernel panic", "kernel BUG", "Kernel bug detected", "BUG: ", "Oops: ",
                "Oops - ", "Oops[", "Oops [", "Internal error: ", "Unable to handle kernel ",
                "Kernel attempted to ", "general protection", "invalid opcode: ",
                "stack segment: ", "divide error: ", "double fault: ",
                "kernel stack overflow", "kernel tried to execute", "WARNING: ",
                "watchdog: ", "NMI watchdog: ", "INFO: task", "INFO: rcu_", "rcu: INFO",
                "UBSAN: ", "Out of memory", "Memory cgroup out of memory")
# Lines the CMA / contiguous allocator prints (_Parser.cma_line() reads them).
CMA_STARTS = ("cma: ", "cma_alloc", "__cma_alloc", "alloc_contig_range: ")


def _scan_pattern(start: str, line_pfx: str, end: str = "") -> str:
    """_SCAN's pattern: "\\n", `start` (a line's prefix), the alternatives, `end`;
    `line_pfx` is the prefix of a dump_page() block's lines after its head."""
    return r"\n" + start + r"""(?:
        vmtest-mm:\ (?:(?P<mmkv>(?:\w++\ |)(?:\w++=[^\s=]++\ )*+\w++=[^\s=]++)(?=\n|\Z)
                     | (?P<mm>[^\n]*))
      # A block's body: what the page is (aops, flags), the other lines __dump_page()
      # prints, and lines of other CPUs ("foreign": scanned again). A block longer than
      # 32 lines is not one; a head without its reason line is a dump of the lines that
      # are surely its own ("obody"), with no reason.
      | """ + _HEAD + r"""(?:
          (?P<body>(?>(?:\n""" + line_pfx + r"""(?!page\ dumped\ because:\ )(?>
              """ + _AOPS + r"""
            | """ + _FLAGS + r"""
            | """ + _BODY_OTHER + r"""[^\n]*
            | (?P<foreign>)[^\n]*)){0,32}))
          \n""" + line_pfx + r"""page\ dumped\ because:\ (?P<reason>[^\n]*)
        | (?P<obody>(?:\n""" + line_pfx + _KNOWN + r""")*))
      | (?P<hotplug>(?:migrating|failed\ to\ isolate)\ pfn\ [^\n]*)
      | (?P<cma>(?:""" + "|".join(re.escape(s) for s in CMA_STARTS) + r""")[^\n]*)
      | (?P<offline>memory\ offlining\ \[[^\n]*)
      | (?P<splat>(?:""" + "|".join(re.escape(s) for s in SPLAT_STARTS) + r""")[^\n]*)
    )""" + end


_SCAN = re.compile(_scan_pattern(_PFX, _PFX_NOTS), re.X | re.A)
_BODY_HEAD = re.compile(r"\n" + _PFX + _HEAD, re.X | re.A)
# A large log whose lines need no normalising (logprefix: nearly every console or dmesg
# log) is scanned as it is, by _SCAN_PLAIN: the same scan, but each line's start is
# checked for what logprefix.WORK_LINE finds (the prefixes a sign leads, a printk time
# glued into the line) on the way, and such a line is a `work` match -- the log then
# goes through normalising after all (parse()). A block's lines after its head take
# only a printk time or blanks (_PLAIN_LINE), so that a line needing normalising ends
# the block and is met by the line check. Lines with a word-led prefix ("Nov 29 ...",
# "host kernel:") are found before, by logprefix.has_word_led().
_HINT = logprefix.HINT_SIGN
_NEEDS_WORK = (r"(?(ts)(?=" + _HINT + r")|(?=\[|[\ \t]*+" + _HINT + "|" + logprefix.TO_GLUED
               + r"))(?P<work>)")
_PLAIN_START = (r"(?>(?:\[\ *+(?P<ts>\d++\.\d++)\]\ ?+|))(?:" + _NEEDS_WORK
                + r"|(?(ts)|[\ \t]*+)")
_PLAIN_LINE = (r"(?>\[\ *+\d++\.\d++\]\ ?+(?!" + _HINT + r")|(?!\[|[\ \t]*+" + _HINT + "|"
               + logprefix.TO_GLUED + r")[\ \t]*+)")
_SCAN_PLAIN = re.compile(_scan_pattern(_PLAIN_START, _PLAIN_LINE, ")"), re.X | re.A)
_BODY_HEAD_PLAIN = re.compile(r"\n" + _PLAIN_LINE.replace(r"\d++\.\d++", r"(?P<ts>\d++\.\d++)", 1)
                              + _HEAD, re.X | re.A)
# The lines right after a head that are surely its block's (_SCAN's obody).
_OBODY = re.compile(r"(?:\n" + _PFX_NOTS + _KNOWN + r")*", re.X | re.A)
# The lines of a block that say what the page is.
_BODY_LINE = re.compile(r"\n" + _PFX_NOTS + r"""(?:
        (?P<flags>(?:anon\ |ksm\ |page\ )?flags:\ 0x[0-9a-f]+\([^)\n]*\))
      | (?:mapping->a_ops|aops):[ \t]*(?P<aops>\S+)
      | (?P<aops_old>[A-Za-z_]\w*_aops)(?=[\ \n]|\Z))""", re.X | re.A)
# Where int(value, 0) may succeed (and elsewhere it cannot, for kernel output).
_NUMBER_START = frozenset("+-0123456789")


@dataclass(slots=True)  # tens of thousands in a CMA log
class Dump:
    reason: str  # "" when the block's reason line was not printed or was lost
    pfn: int | None
    refcount: int | None  # None: "page:... is uninitialized and poisoned"
    mapcount: int | None
    mapping: str | None
    flags: list[str] = field(default_factory=list)
    aops: str | None = None
    anon: bool = False
    error: int | None = None  # rc from the preceding migrate_fail / migrating line
    timestamp: float | None = None
    page: str | None = None  # the struct page's address as printed (hashed on 4.15+ %p)

    @property
    def kind(self) -> str:
        """anon, shmem, file or other: what the page belonged to."""
        if self.anon:
            return "anon"
        swapbacked = "swapbacked" in self.flags
        # aops is a symbol name with CONFIG_KALLSYMS_ALL, else a bare address.
        if self.aops is not None and not _HEX.match(self.aops):
            if "shmem" in self.aops or (self.aops.startswith("swap_") and swapbacked):
                return "shmem"  # a shmem page in the swap cache: swap_aops, swapbacked
            return "file"
        mapping = self.mapping or ""
        null = mapping.strip("0") in ("", "(null)")
        if "slab" in self.flags:
            return "other"
        if _REAL_POINTER.match(mapping) and int(mapping[-1], 16) & 1:
            return "anon"  # PAGE_MAPPING_ANON in an unhashed pointer (4.x, 5.x %px)
        if swapbacked:  # shmem keeps its mapping; a freed anon page has none
            return "anon" if null else "shmem"
        return "other" if null else "file"

    @property
    def mapped(self) -> bool:
        return (self.mapcount or 0) > 0

    @property
    def extra_refs(self) -> int | None:
        """References beyond the mappings: isolation, GUP, batches, I/O..."""
        if self.refcount is None:
            return None
        return self.refcount - max(self.mapcount or 0, 0)

    def attribution(self) -> dict[str, Any]:
        return {"kind": self.kind, "mapped": self.mapped, "extra_refs": self.extra_refs,
                "error": self.error,
                "state": sorted(f for f in self.flags if f in ("lru", "active", "dirty",
                                                                "writeback", "mlocked",
                                                                "unevictable", "referenced",
                                                                "uptodate", "swapbacked",
                                                                "locked"))}

    def record(self) -> dict[str, Any]:
        """The dump as `vmtest dmesg --json` lists it."""
        return {"type": "dump", "page": self.page,
                "pfn": None if self.pfn is None else hex(self.pfn),
                "refcount": self.refcount, "mapcount": self.mapcount,
                "mapping": self.mapping, "kind": self.kind, "reason": self.reason or None,
                "error": self.error, "flags": self.flags, "aops": self.aops,
                "timestamp": self.timestamp}


# The fields of a dump's record that say what the page was (events_json() writes each
# set of them once).
_DUMP_STATE_KEYS = ("refcount", "mapcount", "mapping", "kind", "reason", "error", "flags",
                    "aops")
_json_str = json.encoder.encode_basestring_ascii  # what json.dumps() writes a str as

# A kernel pointer printed as it is (not hashed): its low bits say what a mapping is.
_REAL_POINTER = re.compile(r"^(?:ffff[0-9a-f]{12}|c[0-9a-f]{15}|[c-f][0-9a-f]{7})$")


@dataclass
class DmesgReport:
    summaries: list[dict[str, Any]] = field(default_factory=list)
    # The instrumentation's "migrate_fail ..." lines: (the _SCAN group, the line).
    migrate_fail_lines: list[tuple[str, str]] = field(default_factory=list)
    dumps: list[Dump] = field(default_factory=list)
    hotplug_migrate_failures: list[dict[str, Any]] = field(default_factory=list)
    hotplug_isolate_failures: list[int] = field(default_factory=list)
    cma_failures: list[dict[str, Any]] = field(default_factory=list)
    contig_busy: list[dict[str, Any]] = field(default_factory=list)
    cma_available: list[dict[str, Any]] = field(default_factory=list)
    offline_failures: list[dict[str, Any]] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)
    dropped: int = 0  # "** N printk messages dropped **"
    # Each loss marker line: what ("callbacks-suppressed", "messages-dropped"), where
    # (the rate-limited function), count.
    loss_markers: list[dict[str, Any]] = field(default_factory=list)
    splats: list[Splat] = field(default_factory=list)
    lines: int = 0
    # Which line prefixes the log had (logprefix.FORMS), and how many lines each.
    prefixes: dict[str, int] = field(default_factory=dict)
    # A whole boot starts with "Linux version" / "Booting Linux" or at time 0; a log that
    # does not is an excerpt (or a ring buffer that wrapped: raise log_buf_len).
    starts_at_boot: bool = True

    # -- derived -------------------------------------------------------------------
    @property
    def migrate_fails(self) -> list[dict[str, Any]]:
        """The fields of each migrate_fail line, numbers as int."""
        return [_plain_fields(line) if kind == "mmkv" else _fields(line)
                for kind, line in self.migrate_fail_lines]

    def dumps_by_reason(self) -> dict[str, int]:
        return dict(Counter(d.reason for d in self.dumps))

    def seq_gaps(self) -> list[tuple[int, int]]:
        seqs = sorted(s["seq"] for s in self.whole_summaries() if "seq" in s)
        return [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1]

    def dump_mismatch(self) -> int:
        """Dumps the summaries announced minus dumps found (>0: lines were lost)."""
        announced = sum(s.get("dumps", 0) for s in self.whole_summaries())
        found = sum(1 for d in self.dumps if d.reason.startswith("fail to migrate"))
        return announced - found

    def garbled_summaries(self) -> int:
        """Summary lines with a field that is not a number: two lines run together (a
        console shared by CPUs), or a line cut short."""
        return len(self.summaries) - len(self.whole_summaries())

    def whole_summaries(self) -> list[dict[str, Any]]:
        """The summaries whose fields are all numbers (but op and the time); worked out
        once for the list as it stands."""
        key = (id(self.summaries), len(self.summaries))
        cached = self.__dict__.get("_whole")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_whole"] = (key, [s for s in self.summaries
                                                      if _well_formed(s)])
        whole: list[dict[str, Any]] = cached[1]
        return whole

    def ops(self, op: str) -> list[dict[str, Any]]:
        """The summaries of `op` that are whole (garbled ones: garbled_summaries())."""
        return [s for s in self.whole_summaries() if s.get("op") == op]

    def attribution_table(self) -> list[dict[str, Any]]:
        """Counts of failing pages per (reason, kind, mapped, extra_refs, error)."""
        # Dumps of one page state repeat: each state's attribution is worked out once
        # (counted in the order of first appearance, as most_common() breaks ties).
        states: Counter[tuple[Any, ...]] = Counter()
        first: dict[tuple[Any, ...], Dump] = {}
        for d in self.dumps:
            state = (d.reason, d.anon, d.aops, d.mapping, tuple(d.flags), d.refcount,
                     d.mapcount, d.error)
            states[state] += 1
            if state not in first:
                first[state] = d
        counter: Counter[tuple[Any, ...]] = Counter()
        for state, n in states.items():
            d = first[state]
            a = d.attribution()
            counter[(d.reason, a["kind"], a["mapped"], a["extra_refs"], a["error"],
                     ",".join(a["state"]))] += n
        return [{"reason": k[0], "kind": k[1], "mapped": k[2], "extra_refs": k[3],
                 "error": k[4], "state": k[5], "count": n}
                for k, n in counter.most_common()]

    def failure_counts(self) -> dict[str, Any]:
        """The CMA / contiguous / hotplug failure lines counted per range and errno."""
        def count(items: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
            c = Counter(tuple(i.get(k) for k in keys) for i in items)
            return [dict(zip(keys, k, strict=True), count=n) for k, n in c.most_common()]

        return {"cma": count(self.cma_failures, "area", "pages", "errno"),
                "contig_busy": count(self.contig_busy, "start", "end"),
                "offline": count(self.offline_failures, "start", "end", "reason"),
                "migrate": count(self.hotplug_migrate_failures, "rc"),
                "isolate": len(self.hotplug_isolate_failures)}

    def events(self) -> list[dict[str, Any]]:
        """Every event of the log, one record each with its identifying fields, in the
        order of the log where it is known (splats and failure lines carry their line)."""
        return [*(s.record() for s in self.splats), *(d.record() for d in self.dumps),
                *self._line_events()]

    def _line_events(self) -> list[dict[str, Any]]:
        """The records of events() after the splats and dumps: failure and loss lines."""
        out: list[dict[str, Any]] = [{"type": "cma-failure", **f} for f in self.cma_failures]
        out += [{"type": "contig-busy", **f} for f in self.contig_busy]
        out += [{"type": "cma-available", **f} for f in self.cma_available]
        out += [{"type": "offline-failure", **f} for f in self.offline_failures]
        out += [{"type": "migrate-failure", "pfn": hex(f["pfn"]), "errno": f["rc"]}
                for f in self.hotplug_migrate_failures]
        out += [{"type": "isolate-failure", "pfn": hex(p)} for p in self.hotplug_isolate_failures]
        out += [{"type": "loss", **m} for m in self.loss_markers]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "prefixes": self.prefixes,
            "excerpt": not self.starts_at_boot,
            "summaries": self.summaries,
            "dumps_by_reason": self.dumps_by_reason(),
            "distinct_failed_pfns": len({d.pfn for d in self.dumps}),
            "attribution": self.attribution_table(),
            "hotplug_migrate_failures": len(self.hotplug_migrate_failures),
            "hotplug_isolate_failures": len(self.hotplug_isolate_failures),
            "cma_failures": self.cma_failures,
            "contig_busy": self.contig_busy,
            "cma_available": self.cma_available,
            "offline_failures": self.offline_failures,
            "failures": self.failure_counts(),
            "loss": {"callbacks_suppressed": self.suppressed, "seq_gaps": self.seq_gaps(),
                     "messages_dropped": self.dropped,
                     "dump_mismatch": self.dump_mismatch(),
                     "garbled_summaries": self.garbled_summaries(),
                     "ring_buffer_wrapped": not self.starts_at_boot},
            "splats": [asdict(s) for s in self.splats],
        }

    def op_summary(self) -> dict[str, dict[str, Any]]:
        """Per instrumented operation (kernels/patches/README.md): how many, how many
        failed, and the medians and totals of its counters."""
        out: dict[str, dict[str, Any]] = {}
        by_op: dict[Any, list[dict[str, Any]]] = {}  # ops(op) of every op, in one pass
        for s in self.whole_summaries():
            by_op.setdefault(s.get("op"), []).append(s)
        for op in dict.fromkeys(str(s["op"]) for s in self.summaries):
            rows = by_op.get(op, [])
            entry: dict[str, Any] = {"count": len(rows),
                                     "failed": sum(1 for r in rows if r.get("ret", 0) != 0)}
            for key in SUMMARY_COUNTERS:
                # (in a whole summary, every field but op and the time is a number)
                values = [r[key] for r in rows if key in r]
                if values:
                    entry[f"{key}_median"] = statistics.median(values)
                    entry[f"{key}_total"] = sum(values)
            out[op] = entry
        return out

    def summary_dict(self) -> dict[str, Any]:
        """to_dict() with the per-operation summary instead of every summary line and one
        record per event: what a reader of one log wants (`vmtest dmesg --json`)."""
        doc = self.to_dict()
        del doc["summaries"]
        return {"ops": self.op_summary(), **doc, "events": self.events()}

    def summary_json(self, head: dict[str, Any] | None = None) -> str:
        """json.dumps({**head, **summary_dict()}), the same text, written faster: the
        dump records of the events (tens of thousands in a CMA log) are written as text,
        each page state's part once, not built as dicts and encoded one by one."""
        doc = self.to_dict()
        del doc["summaries"]
        text = json.dumps({**(head or {}), "ops": self.op_summary(), **doc})
        return f"{text[:-1]}, \"events\": {self.events_json()}}}"

    def events_json(self) -> str:
        """json.dumps(events()), the same text (see summary_json())."""
        dumps = json.dumps
        parts = [dumps(s.record()) for s in self.splats]
        states: dict[tuple[Any, ...], str] = {}
        for d in self.dumps:
            state = (d.refcount, d.mapcount, d.mapping, d.reason, d.error, tuple(d.flags),
                     d.aops, d.anon)
            middle = states.get(state)
            if middle is None:  # record()'s fields from refcount to aops, in its order
                record = d.record()
                middle = states[state] = dumps(
                    {k: record[k] for k in _DUMP_STATE_KEYS})[1:-1]
            ts = d.timestamp
            when = "null" if ts is None else repr(ts)
            if "n" in when:  # inf, nan: JSON's own spelling
                when = dumps(ts)
            parts.append(f'{{"type": "dump", "page": '
                         f'{"null" if d.page is None else _json_str(d.page)}, "pfn": '
                         f'{"null" if d.pfn is None else _json_str(hex(d.pfn))}, {middle}, '
                         f'"timestamp": {when}}}')
        parts += map(dumps, self._line_events())
        return f"[{', '.join(parts)}]"

    def crashed(self) -> bool:
        """A splat that means the kernel is broken, not just noisy."""
        return any(s.crash for s in self.splats)


def _well_formed(summary: dict[str, Any]) -> bool:
    """Every field of an instrumentation summary but op (and the line's time) is a number
    (kernels/patches/README.md). A field's value is an int or, where it is not a number,
    a str (_number()); the time is a float or None."""
    return [*map(type, summary.values())].count(str) == (type(summary.get("op")) is str)


def _number(value: str) -> int | str:
    """int(value, 0) where the value starts like a number ("0x1f", "-11"), else the text."""
    if value[:1] not in _NUMBER_START:
        return value
    try:
        return int(value, 0)
    except ValueError:
        return value


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _fields(line: str) -> dict[str, Any]:
    """key=value pairs (as _KV finds them), numbers as int."""
    return {k: _number(v) for k, v in _KV.findall(line)}


# Values of summary and migrate_fail lines, as _number() reads them: most repeat (op
# and reason names, small counters, error codes, the pfns of a range), and int(v, 0)
# costs more than a look-up. Bounded: a value seen first past the bound is read anew.
_VALUES: dict[str, int | str] = {}
_VALUES_MAX = 1 << 14


def _plain_fields(line: str) -> dict[str, Any]:
    """_fields() of a line _SCAN matched as `mmkv`: "[word ]key=value key=value...",
    every value free of spaces and "=": split in C, not by regex."""
    tokens = line.split(" ")
    if "=" not in tokens[0]:
        del tokens[0]
    out = {}
    get = _VALUES.get
    for token in tokens:
        key, _, value = token.partition("=")
        number = get(value)
        if number is None:
            number = _number(value)
            if len(_VALUES) < _VALUES_MAX:
                _VALUES[value] = number
        out[key] = number
    return out


def _rc_of(line: str) -> int | None:
    """The error code of a "migrate_fail key=value ..." line _SCAN matched as `mmkv`:
    its last rc= as an int (as _plain_fields() reads it), else None."""
    at = line.rfind(" rc=")
    if at < 0:
        return None
    end = line.find(" ", at + 4)
    value = line[at + 4:] if end < 0 else line[at + 4:end]
    number = _VALUES.get(value)
    if number is None:
        number = _number(value)
    return number if type(number) is int else None


# Flags lines repeat (a page state per line): each split once. Bounded like _VALUES.
_FLAGS_SEEN: dict[str, tuple[str, ...]] = {}


def _set_flags(dump: Dump, line: str) -> None:
    """From __dump_page()'s "[anon |ksm |page ]flags: 0x...(uptodate|lru|...)"."""
    dump.anon = line.startswith(("anon", "ksm"))
    flags = _FLAGS_SEEN.get(line)
    if flags is None:
        flags = tuple(f for f in line[line.index("(") + 1:-1].split("|") if f)
        if len(_FLAGS_SEEN) < _VALUES_MAX:
            _FLAGS_SEEN[line] = flags
    dump.flags = list(flags)


class _NeedsNormalising(Exception):
    """_SCAN_PLAIN met a line that normalising would change or count."""


class _Parser:
    def __init__(self, text: str, report: DmesgReport, plain: bool = False):
        self.text = text
        # plain: `text` is not normalised, each line is checked (_SCAN_PLAIN)
        self.scan_re = _SCAN_PLAIN if plain else _SCAN
        self.body_head_re = _BODY_HEAD_PLAIN if plain else _BODY_HEAD
        self.report = report
        self.pending_rc: int | None = None
        # Lines that may open a splat: (where the line ends in text, line, time text).
        self.splat_lines: list[tuple[int, str, str | None]] = []
        # The 1-based line of the log each line of text came from, where lines were joined.
        self.origin: list[int] | None = None

    def scan(self, start: int, end: int) -> None:
        report = self.report
        dumps = report.dumps
        for m in self.scan_re.finditer(self.text, start, end):
            kind = m.lastgroup
            if kind == "mmkv" or kind == "mm":
                line = m.group(kind)
                if kind == "mmkv" and line.startswith("migrate_fail ") \
                        and " op=" not in line:
                    # (as below: no op= makes it no summary; its fields are read
                    # when asked for)
                    report.migrate_fail_lines.append((kind, line))
                    self.pending_rc = _rc_of(line)
                    continue
                fields = _plain_fields(line) if kind == "mmkv" else _fields(line)
                if "op" in fields:
                    fields["timestamp"] = _float(m.group("ts"))
                    report.summaries.append(fields)
                elif line.startswith("migrate_fail"):
                    report.migrate_fail_lines.append((kind, line))
                    rc = fields.get("rc")
                    self.pending_rc = rc if isinstance(rc, int) else None
            elif kind == "reason":
                # one dump_page() block: a page that failed, with the error code of the
                # last migrate_fail / "migrating pfn" line before it (inline: tens of
                # thousands in a CMA log)
                (page, ref, mapcount, mapping, pfn, poisoned, ts, reason, foreign, aops,
                 aops_old, flags) = m.group("page", "ref", "map", "mapping", "pfn",
                                            "poisoned", "ts", "reason", "foreign", "aops",
                                            "aops_old", "flags")
                if foreign is not None:
                    self.dump_interleaved(m)
                    continue
                if poisoned is not None:
                    ref = mapcount = mapping = None
                dump = Dump(reason.strip(), None if pfn is None else int(pfn, 16),
                            None if ref is None else int(ref),
                            None if mapcount is None else int(mapcount), mapping,
                            error=self.pending_rc,
                            timestamp=None if ts is None else float(ts), page=page)
                self.pending_rc = None
                if aops_old is None:
                    dump.aops = aops
                elif aops is None or m.start("aops") < m.start("aops_old"):
                    dump.aops = aops_old  # whichever form came last
                else:
                    dump.aops = aops
                if flags is not None:
                    _set_flags(dump, flags)
                dumps.append(dump)
            elif kind == "obody":
                self.orphan(m, m.start("obody"), m.end("obody"))
            elif kind == "hotplug":
                line = m.group("hotplug")
                if hm := _HOTPLUG_MIGRATE.match(line):
                    rc = None if hm.group(2) is None else int(hm.group(2))
                    report.hotplug_migrate_failures.append({"pfn": int(hm.group(1), 16),
                                                            "rc": rc})
                    self.pending_rc = rc
                elif im := _HOTPLUG_ISOLATE.match(line):
                    report.hotplug_isolate_failures.append(int(im.group(1), 16))
            elif kind == "cma":
                self.cma_line(m.group("cma"), m.group("ts"))
            elif kind == "offline":
                self.offline_line(m.group("offline"))
            elif kind == "splat":
                self.splat_lines.append((m.end(), m.group("splat"), m.group("ts")))
            elif kind == "work":
                raise _NeedsNormalising

    def cma_line(self, line: str, ts: str | None) -> None:
        report = self.report
        if cm := _CMA_FAIL.match(line):
            report.cma_failures.append({"area": cm.group(1), "pages": int(cm.group(2)),
                                        "errno": int(cm.group(3)), "timestamp": _float(ts)})
        elif bm := _CONTIG_BUSY.match(line):
            report.contig_busy.append({"start": "0x" + bm.group(1), "end": "0x" + bm.group(2),
                                       "timestamp": _float(ts)})
        elif am := _CMA_AVAILABLE.match(line):
            report.cma_available.append({"area": am.group(1), "free": int(am.group(3)),
                                         "total": int(am.group(4)), "timestamp": _float(ts)})

    def offline_line(self, line: str) -> None:
        if om := _OFFLINE_FAIL.match(line):
            self.report.offline_failures.append({"start": om.group(1), "end": om.group(2),
                                                 "reason": om.group(3)})

    def orphan(self, head: re.Match[str], start: int, end: int) -> None:
        """A head whose reason line never came (not printed, or lost): a dump with no
        reason, of the lines after the head that are surely its own (start, end)."""
        dump = self.new_dump(head, "")
        self.body(dump, start, end)
        self.report.dumps.append(dump)

    def body(self, dump: Dump, start: int, end: int) -> None:
        for bm in _BODY_LINE.finditer(self.text, start, end):
            if bm.group("flags") is not None:
                _set_flags(dump, bm.group("flags"))
            else:
                dump.aops = bm.group("aops") or bm.group("aops_old")

    def dump_interleaved(self, m: re.Match[str]) -> None:
        """A block with lines that are not __dump_page()'s: another CPU's, or the head
        of a block whose end was lost."""
        text = self.text
        body_start, body_end = m.span("body")
        head: re.Match[str] = m
        own_start = body_start
        inner = list(self.body_head_re.finditer(text, body_start, body_end)) \
            if "page:" in m.group("body") else None
        if inner:
            # A head whose block never ended (its last line was lost), then another: the
            # last head is this block's. The first is a dump without a reason; lines
            # before the last come first (error codes, other heads).
            known = _OBODY.match(text, body_start, body_end)
            self.orphan(m, body_start, known.end() if known else body_start)
            head = inner[-1]
            self.scan(body_start, head.start())
            own_start = head.end()
        dump = self.new_dump(head, m.group("reason"))
        self.body(dump, own_start, body_end)
        self.report.dumps.append(dump)
        self.scan(own_start, body_end)

    def new_dump(self, head: re.Match[str], reason: str) -> Dump:
        """The Dump of a head line (_HEAD's groups); it takes the pending error code."""
        page, ref, mapcount, mapping, pfn, poisoned, ts = head.group(
            "page", "ref", "map", "mapping", "pfn", "poisoned", "ts")
        if poisoned is not None:
            ref = mapcount = mapping = None
        dump = Dump(reason.strip(), None if pfn is None else int(pfn, 16),
                    None if ref is None else int(ref),
                    None if mapcount is None else int(mapcount), mapping,
                    error=self.pending_rc, timestamp=None if ts is None else float(ts),
                    page=page)
        self.pending_rc = None
        return dump

    def markers(self, found: list[tuple[int, str, str | None]] | None = None) -> None:
        """Splat headers in mid-line (OOM, allocation failures): found by their marker
        (_marker_lines(), or `found` as it gave them), merged into the splat lines in
        text order."""
        if found is None:
            found = _marker_lines(self.text)
        if found:
            self.splat_lines = sorted({*self.splat_lines, *found})

    def splats(self) -> None:
        text = self.text
        ends = [end for end, _, _ in self.splat_lines]
        numbers = []
        count, last = 0, 0
        for end in ends:
            count += text.count("\n", last, end)
            last = end
            numbers.append(count)
        if self.origin is not None:  # lines joined by _unwrap(): the log's own numbers
            numbers = [self.origin[n - 1] for n in numbers]
        self.report.splats = splat_events(
            text, [(end, line, _float(ts)) for end, line, ts in self.splat_lines], numbers)

    def losses(self, found: list[dict[str, Any]] | None = None) -> None:
        """The loss marker lines (_loss_lines(), or `found` as it gave them) counted."""
        report = self.report
        for marker in _loss_lines(self.text) if found is None else found:
            report.loss_markers.append(marker)
            if marker["what"] == "messages-dropped":
                report.dropped += marker["count"]
            else:
                where = marker["where"]
                report.suppressed[where] = report.suppressed.get(where, 0) + marker["count"]


def _marker_lines(text: str) -> list[tuple[int, str, str | None]]:
    """The lines of `text` with a splat header in mid-line (_SPLAT_MARKERS): where each
    ends, the line after its prefix, its time."""
    found: list[tuple[int, str, str | None]] = []
    for marker in _SPLAT_MARKERS:
        pos = text.find(marker)
        while pos >= 0:
            start = text.rfind("\n", 0, pos) + 1
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            pm = _LINE_PREFIX.match(text, start)
            body = text[pm.end() if pm else start:end]
            if marker != "page allocation " or \
                    text.startswith(("failure: ", "stalls for "), pos + len(marker)):
                found.append((end, body, pm.group("ts") if pm else None))
            pos = text.find(marker, end)
    return found


def _loss_lines(text: str) -> list[dict[str, Any]]:
    """"%s: %d callbacks suppressed" (lib/ratelimit.c) and "** N printk messages
    dropped **" (printk) -- found from their end: what, where (the rate-limited
    function), count, in the order found."""
    out: list[dict[str, Any]] = []
    for marker, pattern in ((" callbacks suppressed", _SUPPRESSED),
                            (" printk messages dropped **", _DROPPED)):
        pos = text.find(marker)
        while pos >= 0:
            start = text.rfind("\n", 0, pos) + 1
            pm = _LINE_PREFIX.match(text, start)
            if pm and (sm := pattern.match(text, pm.end(), pos + len(marker))):
                if pattern is _DROPPED:
                    out.append({"what": "messages-dropped", "where": None,
                                "count": int(sm.group(1))})
                else:
                    out.append({"what": "callbacks-suppressed", "where": sm.group(1),
                                "count": int(sm.group(2))})
            pos = text.find(marker, pos + len(marker))
    return out


# The kernel's first messages (x86 and most: "Linux version"; arm64 before it: "Booting
# Linux on physical CPU"; a boot loader's "Booting Linux via ..." is not one).
_BOOT = ("Linux version ", "Booting Linux on physical CPU")


def _starts_at_boot(text: str) -> bool:
    """The log's first lines hold the kernel's first message, or its first time is 0."""
    head = text[:4096]
    if any(mark in head for mark in _BOOT):
        return True
    m = re.search(r"^\[\ *(\d+\.\d+)\]", head, re.M | re.A)
    return m is not None and float(m.group(1)) == 0.0


# A log pasted into a mail and stored still encoded quoted-printable ("=" soft line
# breaks, "=3D" for "="): decoded first.
_QP_HINT = re.compile(r"=(?:3D|20|09)")


def _unquote(text: str) -> str:
    """The text decoded from quoted-printable (only called where it has soft breaks)."""
    raw = quopri.decodestring(text.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "replace")


# A log pasted into a mail or a terminal is often wrapped at a fixed width: a kernel
# line goes on in the next line without a prefix (also a short one, where a key such as
# dump_page()'s "flags:" was cut from its one-word value "0x...(...)"). Only a short text
# whose lines are nearly all short and mostly carry a printk time is taken for one.
_WRAP_MAX_TEXT = 1 << 20
_WRAP_MAX_LINE = 82  # mail clients wrap at 72-80 columns
_STAMPED = re.compile(r"\[\ *\d+\.\d+\]", re.A)
_STANDALONE = tuple(SPLAT_STARTS) + CMA_STARTS + ("page:", "page dumped because:", "---[",
                                                  "Call Trace", "Call trace", "<", "[")


# A time prefix that normalising takes off without a trace (dmesg -H/--reltime "[  +0.0x]",
# --time-format delta "[<    0.000123>]", dmesg -T "[Mon Nov 29 ...]", dmesg -H
# "[Nov29 12:00]"), maybe behind mail quoting: such a line opens a kernel line too.
_OTHER_TIME = re.compile(r"[\ \t]*(?:>\ ?)*\[(?:\ *\+\d+\.\d+|<\ *\d+\.\d+>"
                         r"|[A-Z][a-z]{2}[\ \d][^\]\n]{4,24})\]", re.A)


def _prefixed(line: str) -> bool:
    """The line starts with blanks, a priority, a /dev/kmsg header or a printk time."""
    m = _LINE_PREFIX.match(line)
    return m is not None and m.end() > 0


def _unwrap(text: str, raw: str | None = None) -> tuple[str, list[int] | None]:
    """The lines of a wrapped log joined again (see above), and for each joined line the
    line of the log it starts on; (text, None) where the log is not wrapped."""
    if len(text) > _WRAP_MAX_TEXT:
        return text, None
    lines = text.split("\n")
    if sum(len(line) > _WRAP_MAX_LINE for line in lines) * 100 > len(lines):
        return text, None  # more than 1 line in 100 longer than a wrapped one
    stamped = [bool(_STAMPED.match(line)) for line in lines]
    if raw is not None and raw is not text:  # the same lines before normalising
        raw_lines = raw.split("\n")
        if len(raw_lines) == len(lines):
            stamped = [has or bool(_OTHER_TIME.match(before))
                       for has, before in zip(stamped, raw_lines, strict=True)]
    if sum(stamped) < max(3, len(lines) // 3):
        return text, None
    out: list[str] = []
    origin: list[int] = []
    open_line = False  # the last line out is a stamped one that may go on
    for number, (line, has_stamp) in enumerate(zip(lines, stamped, strict=True), 1):
        if open_line and not has_stamp and line and not line.startswith(_STANDALONE) \
                and not _prefixed(line) \
                and (len(out[-1]) >= 30 or (line.startswith("0x") and out[-1].endswith(":"))):
            out[-1] = f"{out[-1].rstrip()} {line.strip()}"
            continue
        out.append(line)
        origin.append(number)
        open_line = has_stamp
    if len(out) == len(lines):
        return text, None
    return "\n".join(out), origin


def parse(text: str) -> DmesgReport:
    """Metrics from a dmesg / console text. Throughput: scripts/bench_parser.py."""
    if "\r" in text:
        text = text.replace("\r", "")
    if len(text) >= _PLAIN_MIN and (large := _parse_large(text)) is not None:
        return large
    report = DmesgReport()
    report.lines = text.count("\n") + 1
    soft_breaks = text.count("=\n") + text.endswith("=")
    quoted = _quoted(text, soft_breaks, report.lines)
    raw = _unquote(text) if quoted else text
    # "\n" + the text: what the scan reads (every line after a "\n"), made once.
    given = "\n" + raw
    scan, report.prefixes = logprefix.normalize_lines(given)
    if quoted:
        report.prefixes["quoted-printable"] = soft_breaks
    report.starts_at_boot = _starts_at_boot(scan[1:4097])
    origin = None
    if len(scan) <= _WRAP_MAX_TEXT + 1:  # (longer: _unwrap() leaves it as it is)
        text, origin = _unwrap(raw if scan is given else scan[1:], raw)
        if origin is not None:
            report.prefixes["wrapped"] = len(origin) and report.lines - len(origin)
            scan = "\n" + text
    parser = _Parser(scan, report)
    parser.origin = origin
    _run(parser)
    return report


def _quoted(text: str, soft_breaks: int, lines: int) -> bool:
    """A mail's quoted-printable body: encoded characters, or many lines cut with "="
    (kernel lines end so rarely)."""
    return bool(soft_breaks) and bool(_QP_HINT.search(text) or
                                      (soft_breaks >= 3 and soft_breaks * 20 >= lines))


# Logs at least this long are first scanned as they are (_SCAN_PLAIN, _parse_large());
# shorter ones, which may be wrapped (_unwrap()), are normalised first.
_PLAIN_MIN = _WRAP_MAX_TEXT + 1


@dataclass
class _Figures:
    """What the passes over a whole large text other than the scan find (_figures())."""
    lines: int
    normalise: bool  # quoted-printable, or a line with a word-led prefix: not plain
    stamped: int = 0  # lines starting with "[" (all printk times where none needs work)
    boot: bool = True
    markers: list[tuple[int, str, str | None]] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)


def _figures(given: str) -> _Figures:
    """_Figures of "\\n" + a text."""
    lines = given.count("\n")
    soft_breaks = given.count("=\n") + given.endswith("=")
    if _quoted(given, soft_breaks, lines) or logprefix.has_word_led(given):
        return _Figures(lines, normalise=True)
    return _Figures(lines, False, given.count("\n["), _starts_at_boot(given[1:4097]),
                    _marker_lines(given), _loss_lines(given))


def _parse_large(text: str) -> DmesgReport | None:
    """parse() of a text too long to be unwrapped, without normalising where no line
    needs it (nearly every console or dmesg log), else None: _SCAN_PLAIN checks each
    line on its way, and the passes that only count or find a few lines (_figures())
    run beside the scan in a second process (procs.Beside)."""
    given = "\n" + text
    # A journal or syslog log has its word-led prefixes from the first lines on: said
    # before the scan (the child's pass over the whole text says it for the rest).
    if logprefix.has_word_led(given[:1 << 16]):
        return None
    report = DmesgReport()
    parser = _Parser(given, report, plain=True)
    with Beside(_figures, given) as side:
        try:
            with _gc_off():
                parser.scan(0, len(given))
        except _NeedsNormalising:
            return None
        figures = side.result()
    if figures.normalise:
        return None
    report.lines = figures.lines
    report.prefixes = {"printk-time": figures.stamped} if figures.stamped else {}
    report.starts_at_boot = figures.boot
    with _gc_off():
        parser.markers(figures.markers)
        parser.splats()
        parser.losses(figures.losses)
    return report


def _run(parser: _Parser) -> None:
    """The scan and what follows it, of a parser's whole text."""
    with _gc_off():
        parser.scan(0, len(parser.text))
        parser.markers()
        parser.splats()
        parser.losses()


@contextlib.contextmanager
def _gc_off() -> Iterator[None]:
    """The cyclic GC off: the parse makes hundreds of thousands of new objects, none of
    them in a cycle, which it would walk again and again (a third of the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
