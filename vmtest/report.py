"""Reports: views of the comparison data (vmtest/compare.py) -- Markdown, HTML with
plots (inline SVG, no plotting library), JUnit XML -- and writing them into a results
directory. Rendering is pure: data in, text out."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from vmtest import paths
from vmtest.outcome import Change, RunVerdict
from vmtest.results.document import first_line

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")


def escape(text: str) -> str:
    """XML character data (what xml.sax.saxutils.escape does, without loading urllib)."""
    return html.escape(text, quote=False)


def quoteattr(value: str) -> str:
    """An XML attribute value with its quotes."""
    return '"' + html.escape(value, quote=True) + '"'


FILES = ("report.md", "report.html", "report.json", "junit.xml")


# -- views ---------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}"
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


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# vmtest matrix: {Path(data['config']).name} (profile {data['profile']}, "
             f"{data['runs']} runs)", ""]
    for s in data["sections"]:
        lines += [f"## {s['kernel']} / {s['scenario']}: {s['baseline']} vs {s['candidate']}", "",
                  f"**{s['headline']}**", "",
                  f"| metric | n | {s['baseline']} median [95% CI] | {s['candidate']} median "
                  "[95% CI] | ratio | p (Mann-Whitney) | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for c in s["comparisons"]:
            b, k = c["baseline"], c["candidate"]
            lines.append(
                f"| {c['metric']} | {b['n']}+{k['n']} | {_fmt(b['median'])} "
                f"[{_fmt(b['ci_low'])}, {_fmt(b['ci_high'])}] | {_fmt(k['median'])} "
                f"[{_fmt(k['ci_low'])}, {_fmt(k['ci_high'])}] | {_fmt(c['ratio'])} | "
                f"{_fmt(c['p_value'])} | {c['verdict']} |")
        undecided = [c for c in s["comparisons"] if c["verdict"] == Change.UNDECIDED]
        if undecided:
            n = f"{undecided[0]['baseline']['n']}+{undecided[0]['candidate']['n']}"
            lines += ["", f"Undecided: {n} runs cannot reach significance whatever they show "
                          "(the smallest p they allow is above the threshold); more "
                          "repetitions can decide, this is not a finding of no change."]
        for variant, keys in (s.get("mixed_builds") or {}).items():
            lines += ["", f"**Warning: the {variant} runs used {len(keys)} different kernel "
                          f"builds ({', '.join(keys)}): they do not measure one kernel.**"]
        for what, counts in (s.get("mixed_conditions") or {}).items():
            found = ", ".join(f"{value} ({n} runs)" for value, n in counts.items())
            lines += ["", f"**Warning: the compared runs differ in {what}: {found}. The "
                          "comparison mixes machines, not only kernels.**"]
        ttv = s.get("time_to_verdict") or {}
        if ttv.get("reached"):
            lines += ["", f"Time to verdict: p < {ttv['alpha']} on {s['primary']} after "
                          f"{ttv['runs_needed']} runs, {ttv['wall_s'] / 3600:.2f} h of wall time "
                          "from the first run's start."]
        elif ttv.get("runs"):
            lines += ["", f"Time to verdict: p < {ttv['alpha']} on {s['primary']} not reached "
                          f"after {ttv['runs']} runs ({ttv['wall_s_so_far'] / 3600:.2f} h; "
                          f"p = {_fmt(ttv['p_value'])})."]
        diffs = s.get("test_differences") or []
        if diffs:
            def seen(counts: dict[str, int]) -> str:
                return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())) or "not run"

            lines += ["", "Tests whose outcome differs:", "",
                      f"| test | {s['baseline']} | {s['candidate']} |", "|---|---|---|"]
            lines += [f"| {d['test']}{' (regressed)' if d['regressed'] else ''} | "
                      f"{seen(d['baseline'])} | {seen(d['candidate'])} |" for d in diffs]
        only = {k: v for k, v in s["splats_only_in"].items() if v}
        if only:
            lines += ["", "Splats seen in one variant only: " + "; ".join(
                f"{k}: {', '.join(v)}" for k, v in only.items())]
        lines.append("")
    if data["crashes"]:
        lines += ["## Kernel crashes and hangs", ""]
        lines += [f"- {c['identity']}: {c['verdict']}: {first_line(c['error'])}"
                  for c in data["crashes"]]
        lines.append("")
    if data["infrastructure_failures"]:
        lines += ["## Infrastructure failures (not results; `--resume` retries them)", ""]
        lines += [f"- {c['identity']}: {first_line(c['error'])}"
                  for c in data["infrastructure_failures"]]
    return "\n".join(lines) + "\n"


def _strip_svg(series: dict[str, list[float]], title: str) -> str:
    width, height, pad = 360, 60 + 28 * len(series), 90
    values = [v for vs in series.values() for v in vs]
    top = max(values) if values else 1.0
    top = top or 1.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
           f'<text x="4" y="14" font-size="12">{html.escape(title)}</text>']
    for row, (name, vals) in enumerate(series.items()):
        y = 40 + 28 * row
        out.append(f'<text x="4" y="{y + 4}" font-size="11">{html.escape(name)}</text>')
        out.append(f'<line x1="{pad}" y1="{y}" x2="{width - 10}" y2="{y}" stroke="#ccc"/>')
        for v in vals:
            x = pad + (width - pad - 10) * v / top
            out.append(f'<circle cx="{x:.1f}" cy="{y}" r="4" fill="{PALETTE[row % 4]}" '
                       'fill-opacity="0.6"/>')
    out.append(f'<text x="{width - 10}" y="{height - 4}" font-size="10" '
               f'text-anchor="end">max {top:g}</text></svg>')
    return "".join(out)


def _timeline_svg(series: dict[str, list[float]], title: str) -> str:
    width, height = 360, 140
    top = max([v for vs in series.values() for v in vs] or [1.0]) or 1.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
           f'<text x="4" y="14" font-size="12">{html.escape(title)}</text>']
    for row, (name, vals) in enumerate(series.items()):
        if not vals:
            continue
        step = (width - 20) / max(1, len(vals) - 1)
        pts = " ".join(f"{10 + i * step:.1f},{height - 10 - (height - 40) * v / top:.1f}"
                       for i, v in enumerate(vals))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{PALETTE[row % 4]}"/>')
        out.append(f'<text x="{width - 10}" y="{28 + 12 * row}" font-size="10" '
                   f'text-anchor="end" fill="{PALETTE[row % 4]}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def html_page(data: dict[str, Any]) -> str:
    md = html.escape(markdown(data))
    body = [f"<h1>vmtest matrix: {html.escape(Path(data['config']).name)}</h1>"]
    for s in data["sections"]:
        body.append(f"<h2>{html.escape(s['kernel'])} / {html.escape(s['scenario'])}</h2>")
        body.append(f"<p><b>{html.escape(s['headline'])}</b></p><div>")
        for c in s["comparisons"]:
            body.append(_strip_svg({s["baseline"]: c["baseline"]["values"],
                                    s["candidate"]: c["candidate"]["values"]},
                                   f"{c['metric']} per run"))
        if any(s["timeline"].values()):
            body.append(_timeline_svg(s["timeline"], "dumps per operation (first run)"))
        body.append("</div>")
    body.append(f"<h2>Tables</h2><pre>{md}</pre>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>vmtest report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "svg{margin:6px;border:1px solid #eee}</style></head><body>"
            + "".join(body) + "</body></html>\n")


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
