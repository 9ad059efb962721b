"""The compiled dmesg scan (vmtest/collect/_dmesgscan.c) against its specification, the
regex scan of dmesg.py: the same report, field for field, on every recorded log, on
randomly spliced ones, and on lines made to sit at the edges of each pattern."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from vmtest.collect import dmesg

# Without the compiled scanner there is nothing to compare (the regex scan alone passes
# test_dmesg.py); .ci/run checks that CI's machine has it built.
pytestmark = pytest.mark.skipif("compiled" not in dmesg.SCANS,
                                reason=f"no compiled dmesg scanner: {dmesg.NATIVE_MISSING}")

DATA = Path(__file__).resolve().parents[1] / "data"
# vmtest's own guests' logs, and the public ones of tests/data/dmesg-corpus and -heldout
RECORDED = sorted(p for d in ("logs", "dmesg-corpus", "dmesg-heldout")
                  for p in (DATA / d).iterdir()
                  if p.suffix in (".dmesg", ".log"))

# Lines at the edges of the patterns: numbers int() reads and does not, key=value lines
# that are not plain, heads without blocks, bare aops/flags, odd prefixes, non-ASCII.
EDGES = [
    "[    5.000000] do_migrate_range: 12 callbacks suppressed",
    "7,100,200,-;vmtest-mm: migrate_fail reason=x pfn=0x1 rc=-16 pass=1",
    "[    1.0] migrating pfn 1234 failed ret:-16",
    "[   1.5] migrating pfn zz failed ret:-1",
    "[   2.0] failed to isolate pfn 55",
    "[  3.1] cma: cma_alloc: reserved: alloc failed, req-size: 16384 pages, ret: -16",
    "[ 4.0] memory offlining [mem 0x1-0x2] failed due to failure to isolate range",
    "",
    "<4>[ 1.5]vmtest-mm: op=x a=08 b=0x1f c=-x d=1_000 e=+5 f=0o7 h=0b11 i=-0 j=0x",
    "vmtest-mm: op=big n=123456789012345678901234567890 m=0xffffffffffffffffff",
    "vmtest-mm: migrate_fail  reason=x rc=-5",
    "vmtest-mm: migrate_fail reason=y rc=busy",
    "vmtest-mm: w1 w2 a=1",
    "vmtest-mm: op=y x==1",
    "vmtest-mm: op=z\tq=1",
    "vmtest-mm: op=t timestamp=5 seq=7",
    "vmtest-mm: ",
    "[ 1.0] page: refcount:1 mapcount:0 ",
    "[ 1.0] page:0000000012345678 refcount:-1 mapcount:-1 mapping:0 index:0x0 pfn:0x10",
    "[ 2.0] aops:",
    "[ 2.0] flags: 0x1(",
    "anon flags: 0x2(lru||active)",
    "ksm flags: 0x3()",
    "[ 9.9] page dumped because:  spaced reason \u00a0",
    "[ 1.0] BUG: KASAN: slab-out-of-bounds in f+0x1/0x2",
    "[ 1.0] WARNING: CPU: 0 PID: 1 at mm/x.c:1 f+0x1/0x2",
    " f+0x1/0x2",
    "[ 3.0] ---[ end trace 0000000000000000 ]---",
    "6,1,2,-;\u00e9\u00e8 page dumped because: x",
    "[    7.0] aops:shmem_aops ino:1 dentry name:\"\u00e9t\u00e9\"",
    "[1.0] vmtest-mm: op=a", "[ 1.] vmtest-mm: op=b", "<x>vmtest-mm: op=c",
    "1,2,3,foo;vmtest-mm: op=d rc=1",
    # dump_page() heads of other kernels, and their body lines
    "page:ffffea0000b3c000 count:0 mapcount:0 mapping:          (null) index:0x0",
    "page:(____ptrval____) refcount:2 mapcount:1 mapping:ffff8881 index:0x1 pfn:0x5",
    "page:1234count:5 mapcount:0 mapping:0 index:0x0",
    "page:abc refcount:1 mapcount:0 mapping:(____ptrval____) index:0x0 pfn:0x",
    "page:0000000012345678 is uninitialized and poisoned",
    "page: is uninitialized and poisoned (pfn 8192)",
    "mapping->a_ops:z3fold_aops",
    "shmem_aops name:\"memfd:x\"",
    "def_blk_aops",
    "x_aops_y",
    "page flags: 0x2fffff00008000(tail)",
    "bad because of flags: 0x1(locked)",
    "page->mem_cgroup:ffff8800",
    "page dumped because: nonzero mapcount",
    "[  1.0] migrating pfn 1a2b failed ",
    "[  1.0] migrating pfn 1a2b failed ret:",
    "cma: cma_alloc: alloc failed, req-size: 8 pages, ret: -12",
    "cma_alloc: linux,cma: alloc failed, req-size: 148 pages, ret: -16",
    "alloc_contig_range: [a5a80, a5ade) PFNs busy",
    "cma: number of available pages: 3@1021=> 3 free of 4096 total pages",
    "[ 9.0] Unable to handle kernel NULL pointer dereference at virtual address 0",
    "[ 9.0] Internal error: Oops: 96000005 [#1] PREEMPT SMP",
    "[ 9.0] Oops [#1]",
    "[ 9.0] Kernel bug detected[#1]:",
    "[ 9.0] Out of memory: Killed process 1 (x)",
    "[ 9.0] x invoked oom-killer: gfp_mask=0x0",
    "[  294.055186][T10694] BUG: unable to handle page fault for address: 0",
    "Nov 29 12:00:00 host kernel: [  12.345678] kernel BUG at mm/x.c:1!",
    "login: [   12.345678] Kernel panic - not syncing: Fatal exception",
    "> [  +0.000123] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2",
]


def _full(report: dmesg.DmesgReport) -> dict[str, Any]:
    d = report.to_dict()
    d["dumps"] = [asdict(x) for x in report.dumps]
    d["migrate_fails"] = report.migrate_fails
    d["hotplug"] = report.hotplug_migrate_failures
    d["isolate"] = report.hotplug_isolate_failures
    return d


def _same(text: str) -> None:
    regex = _full(dmesg.parse(text, native=False))
    native = _full(dmesg.parse(text, native=True))
    for key in regex:
        assert native[key] == regex[key], f"{key} differs"


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_same_report_on_recorded_logs(path):
    _same(path.read_text(errors="replace"))


@pytest.mark.parametrize("seed", range(4))
def test_same_report_on_spliced_logs(seed):
    """Pieces of recorded logs cut anywhere (blocks cut short, heads without ends, other
    lines inside blocks) and the edge lines, mixed at random: 100 texts per seed."""
    rnd = random.Random(seed)
    sources = [p.read_text(errors="replace").split("\n") for p in RECORDED]
    for _ in range(100):
        out: list[str] = []
        for _ in range(rnd.randint(1, 14)):
            if rnd.random() < 0.2:
                out.append(rnd.choice(EDGES))
                continue
            src = rnd.choice(sources)
            a = rnd.randrange(len(src))
            out.extend(src[a:a + rnd.randint(1, 60)])
        _same("\n".join(out))


def test_same_normalisation_on_recorded_and_mangled_lines():
    """The compiled normalize() against logprefix.normalize_regex(): the same text and
    counts on every recorded log, and on lines with prefix pieces inserted at random."""
    from vmtest.collect import _dmesgscan, logprefix

    texts = [p.read_text(errors="replace").replace("\r", "") for p in RECORDED]
    for text in [*texts, "\n".join(EDGES)]:
        regex, native = logprefix.normalize_regex(text), _dmesgscan.normalize(text)
        assert regex == native and (regex[0] is text) == (native[0] is text)
    pieces = ["[", "]", " ", "<", ">", "+", ".", ":", "-", "@", "T", "C", "0", "9", ",", ";",
              "kernel:", "kern", "err", "Nov", "Mon", "\t", "2026-11-29T12:00:00", "12:00:00",
              "123456", "host "]
    lines = EDGES + [ln for t in texts for ln in t.split("\n")[:50]]
    rnd = random.Random(7)
    for _ in range(5000):
        line = rnd.choice(lines)
        for _ in range(rnd.randrange(4)):
            at = rnd.randrange(len(line) + 1)
            line = line[:at] + rnd.choice(pieces + [rnd.choice(EDGES)[:9]]) + line[at:]
        assert _dmesgscan.normalize(line) == logprefix.normalize_regex(line), line


def test_edge_lines_parse_as_specified():
    text = "\n".join(EDGES)
    _same(text)
    report = dmesg.parse(text, native=True)
    op_x = next(s for s in report.summaries if s["op"] == "x")  # garbled: not in ops()
    assert (op_x["a"], op_x["b"], op_x["c"], op_x["d"], op_x["e"], op_x["f"], op_x["j"]) \
        == ("08", 31, "-x", 1000, 5, 7, "0x")
    assert report.ops("big")[0]["n"] == 123456789012345678901234567890
    assert report.ops("t")[0]["timestamp"] is None  # the line's own time, not its field
    assert [m.get("rc") for m in report.migrate_fails] == [-16, -5, "busy"]


def test_splat_stack_after_non_ascii_text():
    """Offsets handed back by the compiled scan are character offsets, not bytes."""
    text = ("[    1.0] dentry name:\"\u00e9t\u00e9 \u65e5\u672c\"\n"
            "[    2.0] WARNING: CPU: 0 PID: 1 at mm/x.c:1 f+0x1/0x2\n"
            "[    2.0] Call Trace:\n"
            "[    2.0]  <TASK>\n"
            "[    2.0]  do_thing+0x10/0x20\n")
    _same(text)
    assert dmesg.parse(text, native=True).splats[0].stack == ["do_thing+0x10/0x20"]


def test_text_without_utf8_falls_back_to_the_regex_scan():
    text = "[    1.0] vmtest-mm: op=x a=1\n[    1.1] bad \udcff byte\n"
    assert dmesg.parse(text, native=True).ops("x") == [{"op": "x", "a": 1, "timestamp": 1.0}]
