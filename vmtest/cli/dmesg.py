"""`vmtest dmesg FILE...`: what a dmesg or console log says about page migration, read
off any log -- a vmtest guest's, a test machine's, one attached to a bug report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vmtest.cli.common import Sub
from vmtest.errors import EXIT_FAIL, EXIT_OK, ConfigError

if TYPE_CHECKING:  # the parser is loaded by the command, not by every vmtest start
    from vmtest.collect import dmesg


def add_parser(sub: Sub) -> None:
    p = sub.add_parser(
        "dmesg", help="parse dmesg / console logs: migration failures, drains, splats",
        description="Parse dmesg or console logs (dmesg, /dev/kmsg or serial console "
                    "format; 6.1 and 6.12 dump_page() layouts) and print the migration "
                    "failures, their attribution, the instrumentation's summaries, kernel "
                    "splats and signs of lost lines. Exit 0, or 1 with --fail-on-splat when "
                    "a log has a panic, Oops, BUG, KASAN or UBSAN report.")
    p.add_argument("files", nargs="+", metavar="FILE", help="a log file, or - for stdin")
    p.add_argument("--json", action="store_true", help="one JSON document per file")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="attribution rows to print (default: %(default)s)")
    p.add_argument("--fail-on-splat", action="store_true",
                   help="exit 1 when a log has a panic, Oops, BUG, KASAN or UBSAN report")
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
    lines = [f"{name}: {report.lines} lines"
             + ("" if report.starts_at_boot else " (does not start at boot: the ring "
                                                  "buffer wrapped, raise log_buf_len)")]
    for op, e in doc["ops"].items():
        parts = [f"{e['count']} calls, {e['failed']} failed"]
        for key, label in (("drains", "drains"), ("drains_all", "drains (all tasks)"),
                           ("migrate_calls", "migrate calls"), ("dumps", "dumps"),
                           ("us", "us")):
            if f"{key}_median" in e:
                parts.append(f"{label} median {e[f'{key}_median']:g}")
        lines.append(f"  op={op}: " + ", ".join(parts))
    if not doc["ops"]:
        lines.append("  no instrumentation summaries (kernels/patches: vmtest-mm lines)")
    by_reason = doc["dumps_by_reason"]
    if by_reason:
        reasons = ", ".join(f'"{r}" {n}' for r, n in by_reason.items())
        lines.append(f"  dump_page(): {reasons}; {doc['distinct_failed_pfns']} distinct pfns")
        lines.append(f"  {'count':>6}  {'reason':<22} {'kind':<6} {'mapped':<6} "
                     f"{'extra':>5} {'error':>6}  state")
        for row in doc["attribution"][:top]:
            lines.append(f"  {row['count']:>6}  {row['reason'][:22]:<22} {row['kind']:<6} "
                         f"{str(row['mapped']).lower():<6} {row['extra_refs']:>5} "
                         f"{str(row['error']):>6}  {row['state']}")
        if len(doc["attribution"]) > top:
            lines.append(f"  ... {len(doc['attribution']) - top} more rows (--top, --json)")
    else:
        lines.append("  dump_page(): none")
    for key, label in (("hotplug_migrate_failures", "hotplug migration failures"),
                       ("hotplug_isolate_failures", "hotplug isolation failures")):
        if doc[key]:
            lines.append(f"  {label}: {doc[key]}")
    if doc["cma_failures"]:
        lines.append(f"  CMA allocation failures: {len(doc['cma_failures'])}")
    if doc["offline_failures"]:
        lines.append(f"  offlining failures: {len(doc['offline_failures'])}")
    for splat in report.splats:
        where = f" at {splat.timestamp:.6f}" if splat.timestamp is not None else ""
        frame = f" [{splat.stack[0]}]" if splat.stack else ""
        lines.append(f"  splat {splat.kind}{where}: {splat.title}{frame}")
    loss = doc["loss"]
    lost = []
    if loss["callbacks_suppressed"]:
        lost.append(f"callbacks suppressed {loss['callbacks_suppressed']}")
    if loss["seq_gaps"]:
        lost.append(f"{len(loss['seq_gaps'])} gaps in the summaries' seq")
    if loss["dump_mismatch"]:
        lost.append(f"summaries announce {loss['dump_mismatch']} more dumps than found")
    if loss["garbled_summaries"]:
        lost.append(f"{loss['garbled_summaries']} garbled summary lines (left out)")
    if lost:
        lines.append("  LINES LOST: " + "; ".join(lost))
    return "\n".join(lines)


def cmd_dmesg(args: argparse.Namespace) -> int:
    crashed = False
    for name in args.files:
        from vmtest.collect import dmesg

        report = dmesg.parse(_read(name))
        if args.json:
            print(json.dumps({"file": name, **report.summary_dict()}))
        else:
            print(render(name, report, args.top))
        crashed |= report.crashed()
    return EXIT_FAIL if args.fail_on_splat and crashed else EXIT_OK
