"""Reports: views of the comparison data (vmtest/compare.py) -- Markdown, HTML with
plots (inline SVG, no plotting library), JUnit XML -- and writing them into a results
directory. Rendering is pure: data in, text out."""

from __future__ import annotations

import html
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from vmtest import paths
from vmtest.outcome import Change, RunVerdict
from vmtest.results.document import first_line

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")


# Characters XML 1.0 does not allow at all (not even as references): most C0 controls
# (NUL, ESC, ...), lone surrogates, U+FFFE/U+FFFF. A console tail holds such bytes; one of
# them makes the whole junit.xml unparsable, so each is written as a visible \xNN.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """text with every character XML cannot hold replaced by \\xNN (\\uNNNN)."""
    return _XML_ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                            else f"\\u{ord(m.group()):04x}", text)


def escape(text: str) -> str:
    """XML character data (what xml.sax.saxutils.escape does, without loading urllib),
    safe whatever the text holds."""
    return html.escape(xml_safe(text), quote=False)


def quoteattr(value: str) -> str:
    """An XML attribute value with its quotes."""
    return '"' + html.escape(xml_safe(value), quote=True) + '"'


# Markdown: what in quoted text (guest output, test names, errors) would change the
# document -- a `|` ends a table cell, `<` opens HTML, `*` and backticks start emphasis
# and code, a leading `#` or `>` a heading or a quote -- is backslash-escaped (CommonMark
# escapes any ASCII punctuation).
_MD_SPECIAL = re.compile(r"([\\`*|<])|^([#>])")


def md_escape(text: str) -> str:
    """Quoted text as one line of Markdown that shows as written."""
    return _MD_SPECIAL.sub(lambda m: "\\" + (m.group(1) or m.group(2)),
                           " ".join(str(text).splitlines()))


FILES = ("report.md", "report.html", "report.json", "junit.xml")


# -- views ---------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        # Counts and kB run to tens of thousands: 41021 page faults as "4.1e+04" hides the
        # figure a reader compares; from 1000 up the whole number says it exactly.
        return f"{v:.0f}" if 1000 <= abs(v) < 1e15 else f"{v:.3g}"
    return str(v)


def kselftest_table(doc: dict[str, Any]) -> str:
    """One kselftest run as text: every test and subtest with its outcome and, for what
    did not pass, why; then the totals and the options the kernel lacks."""
    ident = doc.get("identity", {})
    lines = [f"kselftest on {ident.get('kernel_release', '?')} ({ident.get('accel', '?')}): "
             f"verdict {doc.get('verdict')}"]
    tests = doc.get("tests", {})
    width = max((len(path) for path in tests), default=10)
    for path, info in tests.items():
        depth = path.count("::")
        name = "  " * depth + path.rsplit("::", 1)[-1] if depth else path
        why = info.get("reason", "")
        if info.get("config_missing"):
            why = (why + "; " if why else "") + "kernel lacks " + ", ".join(
                info["config_missing"])
        lines.append(f"  {name:<{width}}  {info['status'].upper():<7}  {why}".rstrip())
    metrics = doc.get("metrics", {})
    counts = [f"{metrics[k]} {k[6:]}" for k in sorted(metrics)
              if k.startswith("tests_") and metrics[k]]
    lines.append("totals: " + (", ".join(counts) or "no tests reported"))
    ks = doc.get("kselftest", {})
    broken = ks.get("build_failures") or []
    if broken:
        lines.append(f"did not compile (reported NOT_BUILT): {' '.join(broken)}")
    for path in ks.get("plan_mismatch") or []:
        info = tests.get(path, {})
        lines.append(f"planned {info.get('planned')} subtests, reported {info.get('ran')}: "
                     f"{path}")
    reasons = ks.get("skip_reasons") or {}
    if reasons:
        lines.append("skipped, by reason:")
        lines += [f"  {n:>4}  {reason}" for reason, n in reasons.items()]
    guest = ks.get("guest") or {}
    for need, why in (guest.get("not_given") or {}).items():
        lines.append(f"the guest lacks {need}: {why}")
    for coll, options in (doc.get("kselftest", {}).get("config_missing") or {}).items():
        lines.append(f"{coll}/config asks for what this kernel lacks: {' '.join(options)}")
    return "\n".join(lines)


# -- the report as blocks, rendered as Markdown and as HTML ------------------------------
# ("h1" | "h2" | "p" | "strong", text), ("table", header, rows), ("list", items),
# ("plots", section): every text is as found (unescaped); each renderer escapes it.
Block = tuple[Any, ...]


def blocks(data: dict[str, Any]) -> list[Block]:
    out: list[Block] = [("h1", f"vmtest matrix: {Path(data['config']).name} (profile "
                               f"{data['profile']}, {data['runs']} runs)")]
    for s in data["sections"]:
        out += [("h2", f"{s['kernel']} / {s['scenario']}: {s['baseline']} vs {s['candidate']}"),
                ("strong", s["headline"]), ("plots", s)]
        rows = []
        for c in s["comparisons"]:
            b, k = c["baseline"], c["candidate"]
            rows.append([c["metric"], f"{b['n']}+{k['n']}",
                         f"{_fmt(b['median'])} [{_fmt(b['ci_low'])}, {_fmt(b['ci_high'])}]",
                         f"{_fmt(k['median'])} [{_fmt(k['ci_low'])}, {_fmt(k['ci_high'])}]",
                         _fmt(c["ratio"]), _fmt(c["p_value"]), c["verdict"]])
        out.append(("table", ["metric", "n", f"{s['baseline']} median [95% CI]",
                              f"{s['candidate']} median [95% CI]", "ratio",
                              "p (Mann-Whitney)", "verdict"], rows))
        undecided = [c for c in s["comparisons"] if c["verdict"] == Change.UNDECIDED]
        if undecided:
            n = f"{undecided[0]['baseline']['n']}+{undecided[0]['candidate']['n']}"
            out.append(("p", f"Undecided: {n} runs cannot reach significance whatever they "
                             "show (the smallest p they allow is above the threshold); more "
                             "repetitions can decide, this is not a finding of no change."))
        for variant, keys in (s.get("mixed_builds") or {}).items():
            out.append(("strong", f"Warning: the {variant} runs used {len(keys)} different "
                                  f"kernel builds ({', '.join(keys)}): they do not measure one "
                                  "kernel."))
        for what, counts in (s.get("mixed_conditions") or {}).items():
            found = ", ".join(f"{value} ({n} runs)" for value, n in counts.items())
            out.append(("strong", f"Warning: the compared runs differ in {what}: {found}. The "
                                  "comparison mixes machines, not only kernels."))
        ttv = s.get("time_to_verdict") or {}
        if ttv.get("reached"):
            out.append(("p", f"Time to verdict: p < {ttv['alpha']} on {s['primary']} after "
                             f"{ttv['runs_needed']} runs, {ttv['wall_s'] / 3600:.2f} h of wall "
                             "time from the first run's start."))
        elif ttv.get("runs"):
            out.append(("p", f"Time to verdict: p < {ttv['alpha']} on {s['primary']} not "
                             f"reached after {ttv['runs']} runs ({ttv['wall_s_so_far'] / 3600:.2f}"
                             f" h; p = {_fmt(ttv['p_value'])})."))
        diffs = s.get("test_differences") or []
        if diffs:
            def seen(counts: dict[str, int]) -> str:
                return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())) or "not run"

            out += [("p", "Tests whose outcome differs:"),
                    ("table", ["test", s["baseline"], s["candidate"]],
                     [[f"{d['test']}{' (regressed)' if d['regressed'] else ''}",
                       seen(d["baseline"]), seen(d["candidate"])] for d in diffs])]
        only = {k: v for k, v in s["splats_only_in"].items() if v}
        if only:
            out.append(("p", "Splats seen in one variant only: " + "; ".join(
                f"{k}: {', '.join(v)}" for k, v in only.items())))
    if data["crashes"]:
        out += [("h2", "Kernel crashes and hangs"),
                ("list", [f"{c['identity']}: {c['verdict']}: {first_line(c['error'])}"
                          for c in data["crashes"]])]
    if data["infrastructure_failures"]:
        out += [("h2", "Infrastructure failures (not results; `--resume` retries them)"),
                ("list", [f"{c['identity']}: {first_line(c['error'])}"
                          for c in data["infrastructure_failures"]])]
    made = data.get("run_provenance") or []
    if made:
        out += [("h2", "What made the runs"),
                ("list", [f"{p.get('runs')} runs: vmtest {p.get('vmtest')} (commit "
                          f"{p.get('vmtest_commit')}), {p.get('qemu')}, {p.get('gcc')}, host "
                          f"kernel {p.get('host_kernel')}" for p in made])]
    return out


def _md_block(block: Block) -> str:
    kind = block[0]
    if kind == "h1":
        return "# " + md_escape(block[1])
    if kind == "h2":
        # `--resume`: the one piece of code vmtest itself writes into a heading
        return "## " + md_escape(block[1]).replace("\\`", "`")
    if kind == "strong":
        return f"**{md_escape(block[1])}**"
    if kind == "p":
        return md_escape(block[1])
    if kind == "table":
        header, rows = block[1], block[2]
        lines = ["| " + " | ".join(md_escape(h) for h in header) + " |",
                 "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    if kind == "list":
        return "\n".join(f"- {md_escape(item)}" for item in block[1])
    return ""


def markdown(data: dict[str, Any]) -> str:
    return "\n\n".join(text for text in map(_md_block, blocks(data)) if text) + "\n"


# -- plots: inline SVG with axes, ticks, a zero line, the median and its interval, and
# each run's value on hover (<title>) ----------------------------------------------------
def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 x 10^k apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else [0.0]
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def strip_svg(title: str, sides: list[tuple[str, dict[str, Any]]]) -> str:
    """One metric: a row per variant with each run's value (a dot, its run and value on
    hover), the median (a bar) and its 95 % CI (a band), on a shared axis from zero."""
    numbers = [0.0]
    for _, side in sides:
        numbers += [x for x in (_num(v) for v in side.get("values", [])) if x is not None]
        numbers += [x for x in (_num(side.get(k)) for k in ("ci_low", "ci_high"))
                    if x is not None]
    lo, hi = min(numbers), max(numbers)
    ticks = nice_ticks(lo, hi if hi > lo else lo + 1)  # all zero: an axis from 0 to 1
    lo, hi = ticks[0], ticks[-1]
    left, right, top, row_h = 120, 20, 26, 30
    width = 520
    height = top + row_h * len(sides) + 34

    def x(v: float) -> float:
        return left + (width - left - right) * (v - lo) / (hi - lo)

    axis_y = top + row_h * len(sides) + 4
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img"><title>{escape(title)}</title>',
           f'<text x="4" y="15" font-size="12" font-weight="bold">{escape(title)}</text>',
           f'<g class="axis"><line x1="{left}" y1="{axis_y}" x2="{width - right}" '
           f'y2="{axis_y}" stroke="#333"/>']
    for t in ticks:
        out.append(f'<line x1="{x(t):.1f}" y1="{axis_y}" x2="{x(t):.1f}" y2="{axis_y + 5}" '
                   f'stroke="#333"/><line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" '
                   f'y2="{axis_y}" stroke="#eee"/><text x="{x(t):.1f}" y="{axis_y + 17}" '
                   f'font-size="10" text-anchor="middle">{_fmt(t)}</text>')
    out.append(f'<line class="zero" x1="{x(0):.1f}" y1="{top - 4}" x2="{x(0):.1f}" '
               f'y2="{axis_y}" stroke="#333" stroke-dasharray="3,2"/></g>')
    for row, (name, side) in enumerate(sides):
        y = top + row_h * row + row_h / 2
        color = PALETTE[row % len(PALETTE)]
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="11" '
                   f'text-anchor="end">{escape(name)}</text>')
        low, high, median = (_num(side.get(k)) for k in ("ci_low", "ci_high", "median"))
        if low is not None and high is not None:
            out.append(f'<rect class="ci" x="{x(low):.1f}" y="{y - 7:.1f}" '
                       f'width="{max(x(high) - x(low), 1):.1f}" height="14" fill="{color}" '
                       f'fill-opacity="0.15"><title>{escape(name)}: 95% CI '
                       f'[{_fmt(low)}, {_fmt(high)}]</title></rect>')
        if median is not None:
            out.append(f'<line class="median" x1="{x(median):.1f}" y1="{y - 10:.1f}" '
                       f'x2="{x(median):.1f}" y2="{y + 10:.1f}" stroke="{color}" '
                       f'stroke-width="3"><title>{escape(name)}: median {_fmt(median)}'
                       f'</title></line>')
        runs = side.get("runs") or []
        for i, v in enumerate(side.get("values", [])):
            value = _num(v)
            if value is None:
                continue
            run = runs[i] if i < len(runs) else f"#{i + 1}"
            jitter = ((i % 5) - 2) * 2
            out.append(f'<circle class="run" cx="{x(value):.1f}" cy="{y + jitter:.1f}" r="4" '
                       f'fill="{color}" fill-opacity="0.6"><title>{escape(name)} run '
                       f'{escape(run)}: {_fmt(value)}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def timeline_svg(title: str, series: dict[str, list[float]]) -> str:
    """Values in order (x: operation number, y: value from zero), a line per variant."""
    numbers = [0.0] + [v for vs in series.values() for v in vs if _num(v) is not None]
    ticks = nice_ticks(0.0, max(numbers) or 1.0)
    hi = ticks[-1]
    longest = max((len(vs) for vs in series.values()), default=1)
    left, right, top, bottom, width, height = 50, 110, 24, 30, 520, 180

    def px(i: int) -> float:
        return left + (width - left - right) * i / max(1, longest - 1)

    def py(v: float) -> float:
        return height - bottom - (height - top - bottom) * v / hi

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img"><title>{escape(title)}</title>',
           f'<text x="4" y="15" font-size="12" font-weight="bold">{escape(title)}</text>',
           f'<g class="axis"><line x1="{left}" y1="{py(0):.1f}" x2="{width - right}" '
           f'y2="{py(0):.1f}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" '
           f'y2="{py(0):.1f}" stroke="#333"/>']
    for t in ticks:
        out.append(f'<line x1="{left - 5}" y1="{py(t):.1f}" x2="{left}" y2="{py(t):.1f}" '
                   f'stroke="#333"/><text x="{left - 8}" y="{py(t) + 3:.1f}" font-size="10" '
                   f'text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" font-size="10" '
               f'text-anchor="middle">operation (1 to {longest})</text></g>')
    for row, (name, vals) in enumerate(series.items()):
        color = PALETTE[row % len(PALETTE)]
        points = [(i, float(v)) for i, v in enumerate(vals) if _num(v) is not None]
        if not points:
            continue
        pts = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v in points)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}"/>')
        out += [f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="2.5" fill="{color}"><title>'
                f'{escape(name)} operation {i + 1}: {_fmt(v)}</title></circle>'
                for i, v in points]
        out.append(f'<text x="{width - right + 6}" y="{top + 12 * row + 8}" font-size="10" '
                   f'fill="{color}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _html_block(block: Block) -> str:
    kind = block[0]
    if kind in ("h1", "h2"):
        return f"<{kind}>{escape(block[1])}</{kind}>"
    if kind == "strong":
        return f"<p><strong>{escape(block[1])}</strong></p>"
    if kind == "p":
        return f"<p>{escape(block[1])}</p>"
    if kind == "table":
        head = "".join(f"<th scope='col'>{escape(h)}</th>" for h in block[1])
        rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                       for row in block[2])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if kind == "list":
        return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in block[1]) + "</ul>"
    if kind == "plots":
        s = block[1]
        plots = [strip_svg(f"{c['metric']} per run", [(s["baseline"], c["baseline"]),
                                                      (s["candidate"], c["candidate"])])
                 for c in s["comparisons"]]
        if any(s["timeline"].values()):
            plots.append(timeline_svg("dumps per operation (first run)", s["timeline"]))
        return "<div class='plots'>" + "".join(plots) + "</div>"
    return ""


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:.5em 0}"
         "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}"
         "td:not(:first-child){font-variant-numeric:tabular-nums}"
         "thead{background:#f4f4f4}svg{margin:6px;border:1px solid #eee;vertical-align:top}")


def html_page(data: dict[str, Any]) -> str:
    """The report as an HTML page: the same blocks as the Markdown, tables as tables,
    each section's plots after its headline."""
    title = f"vmtest report: {Path(data['config']).name}"
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(text for text in map(_html_block, blocks(data)) if text)
            + "\n</body></html>\n")


def junit(data: dict[str, Any]) -> str:
    cases = []
    for s in data["sections"]:
        for c in s["comparisons"]:
            name = f"{s['kernel']}.{s['scenario']}.{c['metric']}"
            body = ""
            change = Change(c["verdict"])
            if change.junit == "failure":
                body = (f"<failure message={quoteattr('significant regression')}>"
                        f"{escape(s['headline'])}</failure>")
            elif change.junit == "skipped":  # not a pass
                body = (f"<skipped message={quoteattr(change)}>n = "
                        f"{c['baseline']['n']} + {c['candidate']['n']} runs with a value: too "
                        "few to decide</skipped>")
            cases.append(f"<testcase classname={quoteattr('vmtest.compare')} "
                         f"name={quoteattr(name)}>{body}</testcase>")
        for d in s.get("test_differences") or []:
            body = ""
            if d["regressed"]:
                why = f"passes on {s['baseline']}, not on {s['candidate']}"
                body = (f"<failure message={quoteattr(why)}>{escape(json.dumps(d))}"
                        "</failure>")
            cases.append(f"<testcase classname={quoteattr('vmtest.tests')} "
                         f"name={quoteattr(s['kernel'] + '.' + d['test'])}>{body}</testcase>")
    # One case per run with its time: a kernel crash or hang fails it, an infrastructure
    # failure is an error (not the kernel's), an interrupted run is skipped.
    errors = {c["run"]: c["error"] for c in data["crashes"]}
    for run in data.get("run_list", []):
        verdict = RunVerdict.of(run["verdict"])
        why = escape(errors.get(run["run"], run.get("error", "")))
        element = verdict.junit
        body = "" if element is None else \
            f"<{element} message={quoteattr(verdict)}>{why}</{element}>"
        seconds = run.get("seconds")
        time_attr = f" time={quoteattr(f'{seconds:.3f}')}" if isinstance(seconds, (int, float)) \
            else ""
        cases.append(f"<testcase classname={quoteattr('vmtest.runs')} "
                     f"name={quoteattr(run['identity'] + '#' + str(run['run']))}{time_attr}>"
                     f"{body}</testcase>")
    counts = {kind: sum(1 for c in cases if f"<{kind} " in c)
              for kind in ("failure", "error", "skipped")}
    return ("<?xml version='1.0' encoding='utf-8'?>\n"
            f"<testsuite name='vmtest-matrix' tests='{len(cases)}' "
            f"failures='{counts['failure']}' errors='{counts['error']}' "
            f"skipped='{counts['skipped']}'>\n" + "\n".join(cases) + "\n</testsuite>\n")


def _workflow_value(text: str, *, prop: bool = False) -> str:
    """A value in a GitHub Actions workflow command (toolkit's escapeData/escapeProperty)."""
    text = xml_safe(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def github_annotations(data: dict[str, Any]) -> list[str]:
    """`::error` workflow commands for GitHub Actions: one per regression (a metric or a
    test) and per kernel crash or hang, so they show on the run's summary page."""
    found: list[tuple[str, str]] = []
    for s in data["sections"]:
        where = f"{s['kernel']}/{s['scenario']}"
        for c in s["comparisons"]:
            if c["verdict"] == Change.REGRESSED:
                b, k = c["baseline"], c["candidate"]
                found.append((f"vmtest regression: {where}/{c['metric']}",
                              f"{c['metric']}: {s['baseline']} {_fmt(b['median'])} -> "
                              f"{s['candidate']} {_fmt(k['median'])} (p = "
                              f"{_fmt(c['p_value'])}). {s['headline']}"))
        for d in s.get("test_differences") or []:
            if d["regressed"]:
                found.append((f"vmtest regression: {where}/{d['test']}",
                              f"{d['test']} passes on {s['baseline']}, not on "
                              f"{s['candidate']}"))
    for c in data["crashes"]:
        found.append((f"vmtest: {c['verdict']} in {c['identity']}", first_line(c["error"])))
    return [f"::error title={_workflow_value(title, prop=True)}::{_workflow_value(message)}"
            for title, message in found]


def write(results: Path, data: dict[str, Any], *, summary: bool = True) -> str:
    """Write every view into the results directory (and, unless summary is False -- a
    shard's, which merge reports -- the Markdown into GitHub's job summary when running
    there); returns the Markdown."""
    md = markdown(data)
    paths.write_atomic(results / "report.json", json.dumps(data, indent=2) + "\n")
    paths.write_atomic(results / "report.md", md)
    paths.write_atomic(results / "report.html", html_page(data))
    paths.write_atomic(results / "junit.xml", junit(data))
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY") if summary else None
    if summary_path:
        with open(summary_path, "a") as out:
            out.write(md)
    return md
