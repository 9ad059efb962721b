"""`vmtest dmesg FILE...`: what a dmesg or console log says about page migration, read
off any log -- a vmtest guest's, a test machine's, one attached to a bug report."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.cli.common import Sub
from vmtest.errors import EXIT_FAIL, EXIT_OK, ConfigError

if TYPE_CHECKING:  # the parser is loaded by the command, not by every vmtest start
    from vmtest.collect import dmesg


def add_parser(sub: Sub) -> None:
    p = sub.add_parser(
        "dmesg", help="parse dmesg / console logs: migration failures, drains, splats",
        description="Parse kernel logs as people have them (dmesg in any of its time "
                    "formats, /dev/kmsg, serial consoles, syslog and journal lines, pastes "
                    "from bug reports and mails; x86-64, i386, arm64, arm, powerpc, s390, "
                    "riscv, loongarch and MIPS kernels 3.x-6.x) and "
                    "print the kernel splats with their culprit frame, dump_page() blocks and "
                    "their attribution, CMA / contiguous / hotplug failure lines, the "
                    "instrumentation's summaries and signs of lost lines. --json gives one "
                    "record per event. Exit 0, or 1 with --fail-on-splat when a log has a "
                    "panic, Oops, BUG, KASAN, KFENCE, KMSAN or UBSAN report (or a splat that "
                    "ended in a panic).")
    p.add_argument("files", nargs="+", metavar="FILE", help="a log file, or - for stdin")
    p.add_argument("--json", action="store_true",
                   help="one JSON document per file, with one record per event (\"events\")")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="attribution rows to print (default: %(default)s)")
    p.add_argument("--fail-on-splat", action="store_true",
                   help="exit 1 when a log has a panic, Oops, BUG, KASAN, KFENCE, KMSAN or "
                        "UBSAN report")
    p.set_defaults(func=cmd_dmesg)


def _read(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}",
                          hint="pass a dmesg or console log file, or - for stdin") from exc


def render(name: str, report: dmesg.DmesgReport, top: int) -> str:
    doc = report.summary_dict()
    forms = ", ".join(f"{k} {n}" for k, n in report.prefixes.items())
    head = f"{name}: {report.lines} lines"
    if forms:
        head += f" (line prefixes: {forms})"
    if not report.starts_at_boot:
        head += "; an excerpt: it does not start at boot"
    lines = [head]
    for op, e in doc["ops"].items():
        parts = [f"{e['count']} calls, {e['failed']} failed"]
        for key, label in (("drains", "drains"), ("drains_all", "drains (all tasks)"),
                           ("migrate_calls", "migrate calls"), ("dumps", "dumps"),
                           ("us", "us")):
            if f"{key}_median" in e:
                parts.append(f"{label} median {e[f'{key}_median']:g}")
        lines.append(f"  op={op}: " + ", ".join(parts))
    for splat in report.splats:
        where = f" line {splat.line}" if splat.line is not None else ""
        where += f" at {splat.timestamp:.6f}" if splat.timestamp is not None else ""
        culprit = f" in {splat.culprit}()" if splat.culprit else ""
        panic = " -> panic" if splat.panic and splat.kind != "panic" else ""
        lines.append(f"  splat {splat.kind}{where}: {splat.title}{culprit}{panic}")
    by_reason = doc["dumps_by_reason"]
    if by_reason:
        reasons = ", ".join(f'"{r}" {n}' if r else f"(no reason line) {n}"
                            for r, n in by_reason.items())
        lines.append(f"  dump_page(): {reasons}; {doc['distinct_failed_pfns']} distinct pfns")
        lines.append(f"  {'count':>6}  {'reason':<22} {'kind':<6} {'mapped':<6} "
                     f"{'extra':>5} {'error':>6}  state")
        for row in doc["attribution"][:top]:
            lines.append(f"  {row['count']:>6}  {row['reason'][:22]:<22} {row['kind']:<6} "
                         f"{str(row['mapped']).lower():<6} {str(row['extra_refs']):>5} "
                         f"{str(row['error']):>6}  {row['state']}")
        if len(doc["attribution"]) > top:
            lines.append(f"  ... {len(doc['attribution']) - top} more rows (--top, --json)")
    else:
        lines.append("  dump_page(): none")
    lines.extend(_failure_lines(doc["failures"], report))
    loss = doc["loss"]
    lost = []
    if loss["callbacks_suppressed"]:
        lost.append(f"callbacks suppressed {loss['callbacks_suppressed']}")
    if loss["messages_dropped"]:
        lost.append(f"{loss['messages_dropped']} printk messages dropped")
    if loss["seq_gaps"]:
        lost.append(f"{len(loss['seq_gaps'])} gaps in the summaries' seq")
    if loss["dump_mismatch"]:
        lost.append(f"summaries announce {loss['dump_mismatch']} more dumps than found")
    if loss["garbled_summaries"]:
        lost.append(f"{loss['garbled_summaries']} garbled summary lines (left out)")
    if lost:
        lines.append("  LINES LOST: " + "; ".join(lost))
    return "\n".join(lines)


def _failure_lines(failures: dict[str, Any], report: dmesg.DmesgReport) -> list[str]:
    """The CMA / contiguous / hotplug failure lines, counted per range and errno."""
    out = []
    for row in failures["cma"]:
        area = f" in {row['area']}" if row["area"] else ""
        out.append(f"  CMA allocation failed{area}: {row['pages']} pages, errno "
                   f"{row['errno']} x{row['count']}")
    if failures["contig_busy"]:
        ranges = ", ".join(f"[{r['start']}, {r['end']}) x{r['count']}"
                           for r in failures["contig_busy"][:5])
        more = len(failures["contig_busy"]) - 5
        out.append(f"  alloc_contig_range busy: {len(report.contig_busy)} lines: {ranges}"
                   + (f" and {more} more ranges" if more > 0 else ""))
    for row in report.cma_available[-1:]:
        out.append(f"  CMA available (last report): {row['free']} of {row['total']} pages free")
    for row in failures["offline"]:
        why = f" due to {row['reason']}" if row["reason"] else ""
        out.append(f"  offlining [mem {row['start']}-{row['end']}] failed{why} "
                   f"x{row['count']}")
    if failures["migrate"]:
        errnos = ", ".join(f"ret {r['rc']} x{r['count']}" for r in failures["migrate"])
        out.append(f"  hotplug migration failures: {len(report.hotplug_migrate_failures)} "
                   f"({errnos})")
    if failures["isolate"]:
        out.append(f"  hotplug isolation failures: {failures['isolate']}")
    return out


def cmd_dmesg(args: argparse.Namespace) -> int:
    # A report is hundreds of thousands of acyclic objects (events, their JSON records):
    # the cyclic GC would walk them again and again, for nothing, in a command this short.
    gc.disable()
    crashed = False
    for name in args.files:
        from vmtest.collect import dmesg

        report = dmesg.parse(_read(name))
        if args.json:
            print(report.summary_json({"file": name}))
        else:
            print(render(name, report, args.top))
        crashed |= report.crashed()
    return EXIT_FAIL if args.fail_on_splat and crashed else EXIT_OK
