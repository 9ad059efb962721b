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

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

_PREFIX = re.compile(r"^(?:<\d+>)?(?:\d+,\d+,\d+,[^;]*;)?(?:\[\s*(\d+\.\d+)\]\s?)?")
_KV = re.compile(r"(\w+)=(\S+)")
_DUMP_HEAD = re.compile(r"^page:(?:[0-9a-f]+)? ?refcount:(-?\d+) mapcount:(-?\d+) "
                        r"mapping:([0-9a-f]+) index:(0x[0-9a-f]+) pfn:(0x[0-9a-f]+)")
# mm/debug.c __dump_page(): "[anon |ksm ]flags: 0x...(lru|...)[ CMA]"
_DUMP_FLAGS = re.compile(r"^(anon |ksm )?flags: (0x[0-9a-f]+)\(([^)]*)\)")
# fs/inode.c dump_mapping(): "aops:shmem_aops ino:..." (6.1, 6.12)
_DUMP_AOPS = re.compile(r"^aops:\s*(\S+)")
_HEX = re.compile(r"^(?:0x)?[0-9a-f]+$")
_DUMP_REASON = re.compile(r"^page dumped because: (.*)$")
_HOTPLUG_MIGRATE = re.compile(r"migrating pfn ([0-9a-f]+) failed ret:(-?\d+)")
_HOTPLUG_ISOLATE = re.compile(r"failed to isolate pfn ([0-9a-f]+)")
_CMA_FAIL = re.compile(r"cma: (?:__)?cma_alloc: (\S+): alloc failed, req-size: (\d+) pages, "
                       r"ret: (-?\d+)")
_OFFLINE_FAIL = re.compile(r"memory offlining \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] failed due "
                           r"to (.*)$")
_SUPPRESSED = re.compile(r"^(\S+): (\d+) callbacks suppressed")
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
_STACK_LINE = re.compile(r"^\s*(?:\? )?([A-Za-z_][\w.]*\+0x[0-9a-f]+/0x[0-9a-f]+)")

# One pass over the whole text: every line the parser acts on starts (after its
# prefix) with one of these, so the regex engine skips all other lines in C.
# Text is scanned as "\n" + text: the literal "\n" lets re find candidates fast.
_SCAN = re.compile(r"""\n
    (?:<\d+>)?(?:\d+,\d+,\d+,[^;\n]*;)?(?:\[\s*(?P<ts>\d+\.\d+)\]\ ?)?
    (?:
        vmtest-mm:\ (?P<mm>[^\n]*)
      | (?P<dhead>page:[^\n]*)
      | (?P<dflags>(?:anon\ |ksm\ )?flags:\ [^\n]*)
      | aops:\s*(?P<aops>\S+)
      | page\ dumped\ because:\ (?P<reason>[^\n]*)
      | (?P<stack>[ \t]*(?:\?\ )?[A-Za-z_][\w.]*\+0x[0-9a-f]+/0x[0-9a-f]+)
      | (?P<end>---\[\ end)
      | RIP:\ 0010:(?P<rip>[A-Za-z_][\w.]*\+0x[0-9a-f]+/0x[0-9a-f]+)
      | (?P<hotplug>(?:migrating|failed\ to\ isolate)\ pfn\ [^\n]*)
      | (?P<cma>cma:\ (?:__)?cma_alloc:\ [^\n]*)
      | (?P<suppressed>[\w.]+:\ \d+\ callbacks\ suppressed)
      | (?P<offline>memory\ offlining\ \[[^\n]*)
      | (?P<splat>(?:Kernel\ panic|kernel\ BUG|BUG:\ |Oops:\ |general\ protection|WARNING:\ |
                    watchdog:\ BUG:|INFO:\ task|rcu:\ INFO|UBSAN:\ )[^\n]*)
    )""", re.X)



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
        seqs = sorted(int(s["seq"]) for s in self.summaries if "seq" in s)
        return [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1]

    def dump_mismatch(self) -> int:
        """Dumps the summaries announced minus dumps found (>0: lines were lost)."""
        announced = sum(int(s.get("dumps", 0)) for s in self.summaries)
        found = sum(1 for d in self.dumps if d.reason.startswith("fail to migrate"))
        return announced - found

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [s for s in self.summaries if s.get("op") == op]

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
                     "ring_buffer_wrapped": not self.starts_at_boot},
            "splats": [asdict(s) for s in self.splats],
        }


def _number(value: str) -> int | str:
    try:
        return int(value, 0)
    except ValueError:
        return value


def _start_splat(report: DmesgReport, line: str, ts: float | None) -> Splat | None:
    for kind, pattern in _SPLATS:
        pm = pattern.match(line)
        if pm:
            if kind == "bug" and line.startswith("BUG: KASAN"):
                continue
            splat = Splat(kind, pm.group(1).strip(), [], ts)
            report.splats.append(splat)
            return splat
    return None


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse(text: str) -> DmesgReport:
    """Metrics from a dmesg / console text. Only lines that _SCAN picks are looked at."""
    report = DmesgReport()
    text = text.replace("\r", "")
    report.lines = text.count("\n") + 1
    first = text.lstrip("\n").split("\n", 1)[0] if text.strip() else ""
    report.starts_at_boot = "Linux version" in first or not first.startswith("[")
    pending_rc: int | None = None
    dump: Dump | None = None
    splat: Splat | None = None
    for m in _SCAN.finditer("\n" + text):
        kind = m.lastgroup
        if kind == "ts":  # only a prefix matched: cannot happen (an alternative is required)
            continue
        if kind == "rip":
            # The faulting function (kernel mode only): the first frame of its splat.
            if splat is not None and not splat.stack:
                splat.stack.append(m.group("rip"))
            continue
        if kind == "stack" or kind == "end":
            if splat is not None:
                if kind == "stack" and len(splat.stack) < 8:
                    splat.stack.append(m.group("stack").lstrip(" \t?"))
                else:
                    splat = None
            continue
        if splat is not None and len(splat.stack) >= 8:
            splat = None
        if kind == "mm":
            line = m.group("mm")
            fields: dict[str, Any] = {k: _number(v) for k, v in _KV.findall(line)}
            if "op" in fields:
                fields["timestamp"] = _float(m.group("ts"))
                report.summaries.append(fields)
            elif line.startswith("migrate_fail"):
                report.migrate_fails.append(fields)
                rc = fields.get("rc")
                pending_rc = rc if isinstance(rc, int) else None
        elif kind == "dhead":
            dm = _DUMP_HEAD.match(m.group("dhead"))
            if dm:
                dump = Dump(reason="", pfn=int(dm.group(5), 16), refcount=int(dm.group(1)),
                            mapcount=int(dm.group(2)), mapping=dm.group(3), error=pending_rc,
                            timestamp=_float(m.group("ts")))
                pending_rc = None
        elif kind == "reason":
            if dump is not None:
                dump.reason = m.group("reason").strip()
                report.dumps.append(dump)
                dump = None
        elif kind == "dflags":
            fm = _DUMP_FLAGS.match(m.group("dflags"))
            if dump is not None and fm:
                dump.anon = fm.group(1) is not None
                dump.flags = [f for f in fm.group(3).split("|") if f]
        elif kind == "aops":
            if dump is not None:
                dump.aops = m.group("aops")
        elif kind == "hotplug":
            line = m.group("hotplug")
            hm = _HOTPLUG_MIGRATE.match(line)
            if hm:
                rc = int(hm.group(2))
                report.hotplug_migrate_failures.append({"pfn": int(hm.group(1), 16), "rc": rc})
                pending_rc = rc
            elif im := _HOTPLUG_ISOLATE.match(line):
                report.hotplug_isolate_failures.append(int(im.group(1), 16))
        elif kind == "cma":
            cm = _CMA_FAIL.match(m.group("cma"))
            if cm:
                report.cma_failures.append({"area": cm.group(1), "pages": int(cm.group(2)),
                                            "ret": int(cm.group(3)),
                                            "timestamp": _float(m.group("ts"))})
        elif kind == "suppressed":
            sm = _SUPPRESSED.match(m.group("suppressed"))
            if sm:
                report.suppressed[sm.group(1)] = report.suppressed.get(sm.group(1), 0) \
                    + int(sm.group(2))
        elif kind == "offline":
            om = _OFFLINE_FAIL.match(m.group("offline"))
            if om:
                report.offline_failures.append({"start": om.group(1), "end": om.group(2),
                                                "reason": om.group(3)})
        elif kind == "splat":
            splat = _start_splat(report, m.group("splat"), _float(m.group("ts"))) or splat
    return report
