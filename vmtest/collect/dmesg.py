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

import gc
import os
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import repeat
from pathlib import Path
from types import ModuleType
from typing import Any

# The instrumentation's counters per operation (kernels/patches/README.md).
SUMMARY_COUNTERS = ("drains", "drains_all", "migrate_calls", "passes", "failed_pages", "dumps",
                    "us")
# Splats that mean the kernel is broken, not just noisy (`vmtest dmesg --fail-on-splat`).
CRASH_SPLATS = ("panic", "oops", "bug", "kasan", "ubsan")


def _load_native() -> tuple[ModuleType | None, str]:
    """The compiled line scan (setup.py builds it; the regex scan is its specification),
    or None and why not."""
    fix = "build it with `pip install -e .` (needs gcc and Python.h: python3-dev)"
    if os.environ.get("VMTEST_DMESG_SCAN") == "regex":
        return None, "VMTEST_DMESG_SCAN=regex: the regex scan was asked for"
    try:
        from vmtest.collect import _dmesgscan
    except ImportError as exc:
        return None, f"{exc}; {fix}"
    source = Path(__file__).with_name("_dmesgscan.c")
    if _dmesgscan.__file__ and source.exists() and \
            source.stat().st_mtime > Path(_dmesgscan.__file__).stat().st_mtime:
        return None, f"{source.name} changed after it was built; {fix}"
    return _dmesgscan, ""


_native, NATIVE_MISSING = _load_native()
# The scans this process can run: the regex scan always, the compiled one where built.
SCANS = ("regex",) + (("compiled",) if _native is not None else ())

_KV = re.compile(r"(\w+)=(\S+)", re.A)
_HEX = re.compile(r"^(?:0x)?[0-9a-f]+$")
_HOTPLUG_MIGRATE = re.compile(r"migrating pfn ([0-9a-f]+) failed ret:(-?\d+)", re.A)
_HOTPLUG_ISOLATE = re.compile(r"failed to isolate pfn ([0-9a-f]+)", re.A)
_CMA_FAIL = re.compile(r"cma: (?:__)?cma_alloc: (\S+): alloc failed, req-size: (\d+) pages, "
                       r"ret: (-?\d+)")
_OFFLINE_FAIL = re.compile(r"memory offlining \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] failed due "
                           r"to (.*)$")
_SUPPRESSED = re.compile(r"(\S+): (\d+) callbacks suppressed")
_SPLATS = (
    ("panic", re.compile(r"^Kernel panic - not syncing: (.*)")),
    ("bug", re.compile(r"^(kernel BUG at .*)")),
    ("bug", re.compile(r"^BUG: (?!KASAN)(.*)")),
    ("oops", re.compile(r"^(Oops: .*)")),
    ("oops", re.compile(r"^(general protection fault.*)")),
    ("warning", re.compile(r"^WARNING: (?:CPU: \d+ PID: \d+ at )?(.*)")),
    ("soft-lockup", re.compile(r"^watchdog: BUG: soft lockup - (.*)")),
    ("hung-task", re.compile(r"^INFO: task (.*) blocked for more than .*")),
    ("rcu-stall", re.compile(r"^rcu: INFO: (rcu_\w+ (?:self-)?detected stalls? .*)")),
    ("kasan", re.compile(r"^BUG: KASAN: (.*)")),
    ("ubsan", re.compile(r"^UBSAN: (.*)")),
)

# How the parser stays fast (scripts/bench_parser.py): one regex pass, tried only at
# line starts ("\n" + prefix, the prefix atomic so that no alternative is tried twice),
# every alternative starting with a literal (re skips a branch on its first character),
# and a whole dump_page() block -- head line to "page dumped because:" -- in one match.
# Stack lines are read only after a splat; "callbacks suppressed" lines are found by
# str.find (their marker ends the line).
#
# A line's prefix: "<4>", a /dev/kmsg record header, a "[    1.234567] " timestamp.
_PFX = r"(?>(?:<\d+>)?(?:\d+,\d+,\d+,[^;\n]*;)?(?:\[\ *(?P<ts>\d+\.\d+)\]\ ?)?)"
_PFX_NOTS = _PFX.replace("?P<ts>", "?:")
_LINE_PREFIX = re.compile(_PFX, re.A)
# A dump_page() head: 6.1 "page:%p refcount:...", 6.12 "page: refcount:...".
_HEAD = (r"page:(?:[0-9a-f]+)?\ ?refcount:(?P<ref>-?\d+)\ mapcount:(?P<map>-?\d+)"
         r"\ mapping:(?P<mapping>[0-9a-f]+)\ index:0x[0-9a-f]+\ pfn:(?P<pfn>0x[0-9a-f]+)[^\n]*")
_SCAN = re.compile(r"\n" + _PFX + r"""(?:
        vmtest-mm:\ (?:(?P<mmkv>(?:\w+\ )?(?:\w+=[^\s=]+\ )*\w+=[^\s=]+)(?=\n|\Z)
                     | (?P<mm>[^\n]*))
      # A block's body: what the page is (aops, flags), the other lines __dump_page()
      # prints, and lines of other CPUs ("foreign": scanned again). A block longer than
      # 32 lines is not one.
      | """ + _HEAD + r"""(?P<body>(?:\n""" + _PFX_NOTS + r"""(?>
            aops:[ \t]*(?P<aops>\S+)[^\n]*
          | (?P<flags>(?:anon\ |ksm\ )?flags:\ 0x[0-9a-f]+\([^)\n]*\))[^\n]*
          | (?:raw:|head:|memcg:|page_type:|compound_|invalid\ mapping)[^\n]*
          | (?P<foreign>)[^\n]*)){0,32}?)
        \n""" + _PFX_NOTS + r"""page\ dumped\ because:\ (?P<reason>[^\n]*)
      # A head whose block does not end: it still takes the pending error code.
      | page:(?:[0-9a-f]+)?\ ?refcount:-?\d+\ mapcount:-?\d+\ (?P<orphan>)
      | (?P<hotplug>(?:migrating|failed\ to\ isolate)\ pfn\ [^\n]*)
      | (?P<cma>cma:\ (?:__)?cma_alloc:\ [^\n]*)
      | (?P<offline>memory\ offlining\ \[[^\n]*)
      | (?P<splat>(?:Kernel\ panic|kernel\ BUG|BUG:\ |Oops:\ |general\ protection|WARNING:\ |
                    watchdog:\ BUG:|INFO:\ task|rcu:\ INFO|UBSAN:\ )[^\n]*)
    )""", re.X | re.A)
_BODY_HEAD = re.compile(r"\n" + _PFX + _HEAD, re.X | re.A)
# The lines of a block that say what the page is.
_BODY_LINE = re.compile(r"\n" + _PFX_NOTS + r"""(?:
        (?P<flags>(?:anon\ |ksm\ )?flags:\ 0x[0-9a-f]+\([^)\n]*\))
      | aops:[ \t]*(?P<aops>\S+))""", re.X | re.A)
# After a splat: its stack lines, its end marker, its RIP line.
_SPLAT_TAIL = re.compile(r"\n" + _PFX_NOTS + r"""(?:
        (?P<stack>[ \t]*(?:\?\ )?[A-Za-z_][\w.]*\+0x[0-9a-f]+/0x[0-9a-f]+)
      | ---\[\ end(?P<end>)
      | RIP:\ 0010:(?P<rip>[A-Za-z_][\w.]*\+0x[0-9a-f]+/0x[0-9a-f]+))""", re.X | re.A)
# A splat's stack is read from the lines that follow it up to the next splat, and at
# most this many lines on.
_SPLAT_WINDOW_LINES = 200
_SPLAT_WINDOW = re.compile(rf"(?:\n[^\n]*){{1,{_SPLAT_WINDOW_LINES}}}")
_FIRST_LINE = re.compile(r"\n*([^\n]*)")
# Where int(value, 0) may succeed (and elsewhere it cannot, for kernel output).
_NUMBER_START = frozenset("+-0123456789")


@dataclass
class Dump:
    reason: str
    pfn: int
    refcount: int
    mapcount: int
    mapping: str
    flags: list[str] = field(default_factory=list)
    aops: str | None = None
    anon: bool = False
    error: int | None = None  # rc from the preceding migrate_fail / migrating line
    timestamp: float | None = None

    @property
    def kind(self) -> str:
        if self.anon:
            return "anon"
        # aops is a symbol name with CONFIG_KALLSYMS_ALL, else a bare address.
        if self.aops is not None and not _HEX.match(self.aops):
            return "shmem" if "shmem" in self.aops else "file"
        if "swapbacked" in self.flags:
            return "shmem"
        return "other" if self.mapping.strip("0") == "" else "file"

    @property
    def mapped(self) -> bool:
        return self.mapcount > 0

    @property
    def extra_refs(self) -> int:
        """References beyond the mappings: isolation, GUP, batches, I/O..."""
        return self.refcount - max(self.mapcount, 0)

    def attribution(self) -> dict[str, Any]:
        return {"kind": self.kind, "mapped": self.mapped, "extra_refs": self.extra_refs,
                "error": self.error,
                "state": sorted(f for f in self.flags if f in ("lru", "active", "dirty",
                                                                "writeback", "mlocked",
                                                                "unevictable", "referenced",
                                                                "uptodate", "swapbacked",
                                                                "locked"))}


@dataclass
class Splat:
    kind: str
    title: str
    stack: list[str]
    timestamp: float | None


@dataclass
class DmesgReport:
    summaries: list[dict[str, Any]] = field(default_factory=list)
    migrate_fails: list[dict[str, Any]] = field(default_factory=list)
    dumps: list[Dump] = field(default_factory=list)
    hotplug_migrate_failures: list[dict[str, int]] = field(default_factory=list)
    hotplug_isolate_failures: list[int] = field(default_factory=list)
    cma_failures: list[dict[str, Any]] = field(default_factory=list)
    offline_failures: list[dict[str, str]] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)
    splats: list[Splat] = field(default_factory=list)
    lines: int = 0
    # A complete `dmesg` starts at "[    0.000000] Linux version": when it does not, the
    # ring buffer wrapped and the oldest lines are gone (raise log_buf_len).
    starts_at_boot: bool = True

    # -- derived -------------------------------------------------------------------
    def dumps_by_reason(self) -> dict[str, int]:
        return dict(Counter(d.reason for d in self.dumps))

    def seq_gaps(self) -> list[tuple[int, int]]:
        seqs = sorted(s["seq"] for s in self.summaries if "seq" in s and _well_formed(s))
        return [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1]

    def dump_mismatch(self) -> int:
        """Dumps the summaries announced minus dumps found (>0: lines were lost)."""
        announced = sum(s.get("dumps", 0) for s in self.summaries if _well_formed(s))
        found = sum(1 for d in self.dumps if d.reason.startswith("fail to migrate"))
        return announced - found

    def garbled_summaries(self) -> int:
        """Summary lines with a field that is not a number: two lines run together (a
        console shared by CPUs), or a line cut short."""
        return sum(1 for s in self.summaries if not _well_formed(s))

    def ops(self, op: str) -> list[dict[str, Any]]:
        """The summaries of `op` that are whole (garbled ones: garbled_summaries())."""
        return [s for s in self.summaries if s.get("op") == op and _well_formed(s)]

    def attribution_table(self) -> list[dict[str, Any]]:
        """Counts of failing pages per (reason, kind, mapped, extra_refs, error)."""
        counter: Counter[tuple[Any, ...]] = Counter()
        for d in self.dumps:
            a = d.attribution()
            counter[(d.reason, a["kind"], a["mapped"], a["extra_refs"], a["error"],
                     ",".join(a["state"]))] += 1
        return [{"reason": k[0], "kind": k[1], "mapped": k[2], "extra_refs": k[3],
                 "error": k[4], "state": k[5], "count": n}
                for k, n in counter.most_common()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "summaries": self.summaries,
            "dumps_by_reason": self.dumps_by_reason(),
            "distinct_failed_pfns": len({d.pfn for d in self.dumps}),
            "attribution": self.attribution_table(),
            "hotplug_migrate_failures": len(self.hotplug_migrate_failures),
            "hotplug_isolate_failures": len(self.hotplug_isolate_failures),
            "cma_failures": self.cma_failures,
            "offline_failures": self.offline_failures,
            "loss": {"callbacks_suppressed": self.suppressed, "seq_gaps": self.seq_gaps(),
                     "dump_mismatch": self.dump_mismatch(),
                     "garbled_summaries": self.garbled_summaries(),
                     "ring_buffer_wrapped": not self.starts_at_boot},
            "splats": [asdict(s) for s in self.splats],
        }

    def op_summary(self) -> dict[str, dict[str, Any]]:
        """Per instrumented operation (kernels/patches/README.md): how many, how many
        failed, and the medians and totals of its counters."""
        out: dict[str, dict[str, Any]] = {}
        for op in dict.fromkeys(str(s["op"]) for s in self.summaries):
            rows = self.ops(op)
            entry: dict[str, Any] = {"count": len(rows),
                                     "failed": sum(1 for r in rows if r.get("ret", 0) != 0)}
            for key in SUMMARY_COUNTERS:
                values = [r[key] for r in rows if isinstance(r.get(key), int)]
                if values:
                    entry[f"{key}_median"] = statistics.median(values)
                    entry[f"{key}_total"] = sum(values)
            out[op] = entry
        return out

    def summary_dict(self) -> dict[str, Any]:
        """to_dict() with the per-operation summary instead of every summary line: what
        a reader of one log wants (`vmtest dmesg --json`)."""
        doc = self.to_dict()
        del doc["summaries"]
        return {"ops": self.op_summary(), **doc}

    def crashed(self) -> bool:
        """A splat that means the kernel is broken, not just noisy."""
        return any(s.kind in CRASH_SPLATS for s in self.splats)


def _well_formed(summary: dict[str, Any]) -> bool:
    """Every field of an instrumentation summary but op (and the line's time) is a number
    (kernels/patches/README.md)."""
    return all(isinstance(v, int) for k, v in summary.items() if k != "op" and k != "timestamp")


def _number(value: str) -> int | str:
    """int(value, 0) where the value starts like a number ("0x1f", "-11"), else the text."""
    if value[:1] not in _NUMBER_START:
        return value
    try:
        return int(value, 0)
    except ValueError:
        return value


def _start_splat(line: str, ts: float | None) -> Splat | None:
    for kind, pattern in _SPLATS:
        pm = pattern.match(line)
        if pm:
            if kind == "bug" and line.startswith("BUG: KASAN"):
                continue
            return Splat(kind, pm.group(1).strip(), [], ts)
    return None


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


def _plain_fields(line: str) -> dict[str, Any]:
    """_fields() of a line _SCAN matched as `mmkv`: "[word ]key=value key=value...",
    every value free of spaces and "=": split in C, not by regex."""
    tokens = line.split(" ")
    if "=" not in tokens[0]:
        del tokens[0]
    fields = dict(map(str.split, tokens, repeat("=")))
    try:
        return {k: int(v, 0) if v[0] in _NUMBER_START else v for k, v in fields.items()}
    except ValueError:  # not a number after all ("08", "-x"): value by value
        return {k: _number(v) for k, v in fields.items()}


def _set_flags(dump: Dump, line: str) -> None:
    """From __dump_page()'s "[anon |ksm ]flags: 0x...(uptodate|lru|...)"."""
    dump.anon = line[0] != "f"
    dump.flags = [f for f in line[line.index("(") + 1:-1].split("|") if f]


class _Parser:
    def __init__(self, text: str, report: DmesgReport):
        self.text = text
        self.report = report
        self.pending_rc: int | None = None
        self.splats: list[tuple[int, Splat]] = []

    def scan(self, start: int, end: int) -> None:
        report = self.report
        for m in _SCAN.finditer(self.text, start, end):
            kind = m.lastgroup
            if kind == "mmkv" or kind == "mm":
                line = m.group(kind)
                fields = _plain_fields(line) if kind == "mmkv" else _fields(line)
                if "op" in fields:
                    fields["timestamp"] = _float(m.group("ts"))
                    report.summaries.append(fields)
                elif line.startswith("migrate_fail"):
                    report.migrate_fails.append(fields)
                    rc = fields.get("rc")
                    self.pending_rc = rc if isinstance(rc, int) else None
            elif kind == "reason":
                self.dump(m)
            elif kind == "orphan":
                self.pending_rc = None
            elif kind == "hotplug":
                line = m.group("hotplug")
                if hm := _HOTPLUG_MIGRATE.match(line):
                    rc = int(hm.group(2))
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
                self.splat_line(m.end(), m.group("splat"), m.group("ts"))

    def cma_line(self, line: str, ts: str | None) -> None:
        if cm := _CMA_FAIL.match(line):
            self.report.cma_failures.append({"area": cm.group(1), "pages": int(cm.group(2)),
                                             "ret": int(cm.group(3)), "timestamp": _float(ts)})

    def offline_line(self, line: str) -> None:
        if om := _OFFLINE_FAIL.match(line):
            self.report.offline_failures.append({"start": om.group(1), "end": om.group(2),
                                                 "reason": om.group(3)})

    def splat_line(self, end: int, line: str, ts: str | None) -> None:
        """A splat's first line; `end`: where that line ends, where its stack starts."""
        splat = _start_splat(line, _float(ts))
        if splat is not None:
            self.splats.append((end, splat))

    def scan_native(self) -> None:
        """scan() of the whole text, compiled (_dmesgscan.c); the rare lines it hands
        back are finished here."""
        assert _native is not None
        (summaries, migrate_fails, dumps, hotplug_migrate, hotplug_isolate, cma, offline,
         splats) = _native.scan(self.text, Dump, _fields)
        report = self.report
        report.summaries = summaries
        report.migrate_fails = migrate_fails
        report.dumps = dumps
        report.hotplug_migrate_failures = hotplug_migrate
        report.hotplug_isolate_failures = hotplug_isolate
        for line, ts in cma:
            self.cma_line(line, ts)
        for line in offline:
            self.offline_line(line)
        for end, line, ts in splats:
            self.splat_line(end, line, ts)

    def dump(self, m: re.Match[str]) -> None:
        """One dump_page() block: a page that failed, with the error code of the last
        migrate_fail / "migrating pfn" line before it."""
        if m.group("foreign") is not None:
            self.dump_interleaved(m)
            return
        dump = self.new_dump(m, m.group("reason"))
        dump.aops = m.group("aops")
        if (flags := m.group("flags")) is not None:
            _set_flags(dump, flags)
        self.report.dumps.append(dump)

    def dump_interleaved(self, m: re.Match[str]) -> None:
        """A block with lines that are not __dump_page()'s: another CPU's, or the head
        of a block whose end was lost."""
        text = self.text
        body_start, body_end = m.span("body")
        head: re.Match[str] = m
        own_start = body_start
        inner = list(_BODY_HEAD.finditer(text, body_start, body_end)) \
            if "refcount:" in m.group("body") else None
        if inner:
            # A head whose block never ended (its last line was lost), then another: the
            # last head is this block's. Lines before it come first (error codes).
            head = inner[-1]
            self.pending_rc = None
            self.scan(body_start, head.start())
            own_start = head.end()
        dump = self.new_dump(head, m.group("reason"))
        for bm in _BODY_LINE.finditer(text, own_start, body_end):
            if bm.group("aops") is not None:
                dump.aops = bm.group("aops")
            else:
                _set_flags(dump, bm.group("flags"))
        self.report.dumps.append(dump)
        self.scan(own_start, body_end)

    def new_dump(self, head: re.Match[str], reason: str) -> Dump:
        """The Dump of a head line (_HEAD's groups); it takes the pending error code."""
        dump = Dump(reason=reason.strip(), pfn=int(head.group("pfn"), 16),
                    refcount=int(head.group("ref")), mapcount=int(head.group("map")),
                    mapping=head.group("mapping"), error=self.pending_rc,
                    timestamp=_float(head.group("ts")))
        self.pending_rc = None
        return dump

    def stacks(self) -> None:
        """Each splat's stack: the frames after it, up to its end marker, 8 frames, the
        next splat or the window's end. A RIP line names the first frame."""
        text = self.text
        for i, (pos, splat) in enumerate(self.splats):
            stop = self.splats[i + 1][0] if i + 1 < len(self.splats) else len(text)
            window = _SPLAT_WINDOW.match(text, pos, stop)
            for m in _SPLAT_TAIL.finditer(text, pos, window.end() if window else stop):
                kind = m.lastgroup
                if kind == "rip":
                    if not splat.stack:
                        splat.stack.append(m.group("rip"))
                    continue
                if kind == "end":
                    break
                splat.stack.append(m.group("stack").lstrip(" \t?"))
                if len(splat.stack) >= 8:
                    break
            self.report.splats.append(splat)

    def suppressed(self) -> None:
        """"%s: %d callbacks suppressed" (lib/ratelimit.c) -- found from its end."""
        text = self.text
        marker = " callbacks suppressed"
        pos = text.find(marker)
        while pos >= 0:
            start = text.rfind("\n", 0, pos) + 1
            pm = _LINE_PREFIX.match(text, start)
            if pm and (sm := _SUPPRESSED.match(text, pm.end(), pos + len(marker))):
                self.report.suppressed[sm.group(1)] = \
                    self.report.suppressed.get(sm.group(1), 0) + int(sm.group(2))
            pos = text.find(marker, pos + len(marker))


def parse(text: str, native: bool | None = None) -> DmesgReport:
    """Metrics from a dmesg / console text. Throughput: scripts/bench_parser.py.

    native: scan with the compiled scanner (True: it must be there), or with the
    regexes (False); None: compiled where it was built."""
    if native and _native is None:
        raise RuntimeError(f"the compiled dmesg scanner is missing: {NATIVE_MISSING}")
    report = DmesgReport()
    if "\r" in text:
        text = text.replace("\r", "")
    report.lines = text.count("\n") + 1
    first = _FIRST_LINE.match(text).group(1)  # type: ignore[union-attr]  # always matches
    report.starts_at_boot = "Linux version" in first or not first.startswith("[")
    parser = _Parser("\n" + text, report)
    # Hundreds of thousands of new objects, none of them in a cycle: the cyclic GC
    # would walk them again and again (a third of the time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if native is not False and _native is not None:
            try:
                parser.scan_native()
            except UnicodeEncodeError:  # lone surrogates: no UTF-8 for the compiled scan
                parser.scan(0, len(parser.text))
        else:
            parser.scan(0, len(parser.text))
        parser.stacks()
        parser.suppressed()
    finally:
        if gc_was_enabled:
            gc.enable()
    return report
