"""Reports from stored result documents: data first (JSON), then Markdown, HTML with
plots (inline SVG, no plotting library), and JUnit XML. Pure: documents in, text out."""

from __future__ import annotations

import calendar
import html
import math
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from vmtest import stats
from vmtest.config import Experiment
from vmtest.results import NOT_RESULTS

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")


def _groups(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for doc in docs:
        ident = doc.get("identity", {})
        groups[(ident.get("base", "?"), ident.get("scenario", "?"),
                ident.get("variant", "?"))].append(doc)
    return groups


def build(exp: Experiment, docs: list[dict[str, Any]],
          profile: str | None = None) -> dict[str, Any]:
    """The comparison as data: per kernel, scenario and metric, baseline vs each variant."""
    assert exp.matrix is not None
    groups = _groups(docs)
    baseline = exp.matrix.variants[0]
    sections: list[dict[str, Any]] = []
    for kernel in exp.matrix.kernels:
        for sc_name in exp.matrix.scenarios:
            sc = exp.scenario(sc_name)
            base_docs = groups.get((kernel, sc_name, baseline), [])
            for variant in exp.matrix.variants[1:]:
                cand_docs = groups.get((kernel, sc_name, variant), [])
                if not base_docs and not cand_docs:
                    continue  # not run here (matrix --scenario, another shard)
                comparisons = []
                for metric in sc.metrics:
                    b = _values(base_docs, metric)
                    c = _values(cand_docs, metric)
                    comp = stats.compare(metric, b, c, lower_is_better=sc.lower_is_better)
                    comparisons.append(_comp_dict(comp))
                sections.append({
                    "kernel": kernel, "scenario": sc_name, "baseline": baseline,
                    "candidate": variant, "primary": sc.metrics[0],
                    "comparisons": comparisons,
                    "runs": {baseline: _verdicts(base_docs), variant: _verdicts(cand_docs)},
                    "splats_only_in": _splat_diff(base_docs, cand_docs, baseline, variant),
                    "headline": _headline(sc_name, base_docs, cand_docs, baseline, variant,
                                          comparisons),
                    "timeline": {baseline: _timeline(base_docs), variant: _timeline(cand_docs)},
                    "time_to_verdict": time_to_verdict(base_docs, cand_docs, sc.metrics[0]),
                    "mixed_builds": {v: keys for v, keys in
                                     ((baseline, _build_keys(base_docs)),
                                      (variant, _build_keys(cand_docs))) if len(keys) > 1},
                })
    crashes = [{"run": d.get("run_id"), "identity": _ident(d), "verdict": d.get("verdict"),
                "error": d.get("error", "")[:500]}
               for d in docs if d.get("verdict") not in ("ok", *NOT_RESULTS)]
    infra = [{"run": d.get("run_id"), "identity": _ident(d), "error": d.get("error", "")[:500]}
             for d in docs if d.get("verdict") == "infrastructure"]
    regressions = [f"{s['kernel']}/{s['scenario']}/{c['metric']}"
                   for s in sections for c in s["comparisons"] if c["verdict"] == "regressed"]
    result: dict[str, Any] = {
        "config": str(exp.path), "profile": profile or exp.matrix.profile,
        "sections": sections,
        "crashes": crashes, "infrastructure_failures": infra, "regressions": regressions,
        "runs": len(docs)}
    return result


def _ident(doc: dict[str, Any]) -> str:
    i = doc.get("identity", {})
    return f"{i.get('base')}/{i.get('scenario')}/{i.get('variant')}"


def _values(docs: list[dict[str, Any]], metric: str) -> list[float]:
    out = []
    for d in docs:
        if d.get("verdict") != "ok":
            continue
        value = d.get("metrics", {}).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(float(value))
    return out


def _verdicts(docs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for d in docs:
        counts[str(d.get("verdict"))] += 1
    return dict(counts)


def _comp_dict(comp: stats.Comparison) -> dict[str, Any]:
    data = asdict(comp)
    for side in ("baseline", "candidate"):
        data[side]["values"] = list(data[side]["values"])
    return _clean(data)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _splat_diff(base: list[dict[str, Any]], cand: list[dict[str, Any]], bname: str,
                cname: str) -> dict[str, list[str]]:
    def titles(docs: list[dict[str, Any]]) -> set[str]:
        return {f"{s.get('kind')}: {s.get('title')}" for d in docs for s in d.get("splats", [])}

    tb, tc = titles(base), titles(cand)
    return {bname: sorted(tb - tc), cname: sorted(tc - tb)}


def _headline(scenario: str, base: list[dict[str, Any]], cand: list[dict[str, Any]],
              bname: str, cname: str, comparisons: list[dict[str, Any]]) -> str:
    primary = comparisons[0]
    def med(d: dict[str, Any]) -> str:
        m = d.get("median")
        return "n/a" if m is None else f"{m:g}"

    p = primary.get("p_value")
    ptxt = "n/a" if p is None else f"{p:.3g}"
    if scenario == "cma-stress":
        allocs = _values(base + cand, "allocations")
        per_run = int(allocs[0]) if allocs else 0
        text = (f"'fail to migrate' dumps over {per_run} CMA allocations (median per run): "
                f"{bname} {med(primary['baseline'])} -> {cname} {med(primary['candidate'])} "
                f"(n={primary['baseline']['n']}+{primary['candidate']['n']}, p={ptxt}: "
                f"{primary['verdict']})")
        busy = next((c for c in comparisons if c["metric"] == "alloc_contig_range_failed"), None)
        if busy is not None:
            bp = busy.get("p_value")
            text += (f"; alloc_contig_range() EBUSY retries: {bname} {med(busy['baseline'])} -> "
                     f"{cname} {med(busy['candidate'])} (p={'n/a' if bp is None else f'{bp:.3g}'}"
                     f": {busy['verdict']})")
        return text
    return (f"{primary['metric']} (median per run): {bname} {med(primary['baseline'])} -> "
            f"{cname} {med(primary['candidate'])} (p={ptxt}: {primary['verdict']})")


def _build_keys(docs: list[dict[str, Any]]) -> list[str]:
    """The kernel builds a variant's runs used: more than one means the results mix
    kernels (a fragment or patch changed between a run and a resume)."""
    return sorted({str(d.get("identity", {}).get("build_key")) for d in docs
                   if d.get("verdict") == "ok"})


def _epoch(stamp: Any) -> float | None:
    try:
        return calendar.timegm(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def time_to_verdict(base: list[dict[str, Any]], cand: list[dict[str, Any]], metric: str,
                    alpha: float = 0.01) -> dict[str, Any]:
    """Replay the runs in the order they finished: after how many runs, and how much wall
    time from the first start, did the primary metric's Mann-Whitney p fall below alpha
    (and stay below it for every later run)? The exact test has a floor: without ties,
    n+m runs give p >= 2 / C(n+m, n), so 5+5 runs are the fewest that reach p < 0.01;
    ties (a variant at 0 in every run) can make it one run fewer."""
    events = []
    for side, docs in (("base", base), ("cand", cand)):
        for d in docs:
            value = d.get("metrics", {}).get(metric)
            end = _epoch(d.get("finished_at"))
            if d.get("verdict") == "ok" and isinstance(value, (int, float)) and end is not None:
                events.append((end, _epoch(d.get("started_at")) or end, side, float(value)))
    events.sort()
    if not events:
        return {"reached": False, "runs": 0, "p_value": None, "alpha": alpha}
    first_start = min(e[1] for e in events)
    b: list[float] = []
    c: list[float] = []
    reached_at: tuple[int, float, float] | None = None
    p = float("nan")
    for end, _start, side, value in events:
        (b if side == "base" else c).append(value)
        p = stats.mann_whitney_u(b, c)[1] if b and c else float("nan")
        if p < alpha:
            reached_at = reached_at or (len(b) + len(c), end - first_start, p)
        else:
            reached_at = None
    result: dict[str, Any] = {"alpha": alpha, "runs": len(events), "p_value": _clean(p),
                              "reached": reached_at is not None}
    if reached_at:
        result |= {"runs_needed": reached_at[0], "wall_s": round(reached_at[1], 1),
                   "p_at_verdict": _clean(reached_at[2])}
    else:
        result["wall_s_so_far"] = round(max(e[0] for e in events) - first_start, 1)
    return result


def _timeline(docs: list[dict[str, Any]]) -> list[float]:
    """Per-operation dumps of the first successful run (allocation order)."""
    for d in docs:
        ops = d.get("operations")
        if d.get("verdict") == "ok" and ops:
            return [float(o.get("dumps", 0)) for o in ops]
    return []


# -- views ---------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


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
        for variant, keys in (s.get("mixed_builds") or {}).items():
            lines += ["", f"**Warning: the {variant} runs used {len(keys)} different kernel "
                          f"builds ({', '.join(keys)}): they do not measure one kernel.**"]
        ttv = s.get("time_to_verdict") or {}
        if ttv.get("reached"):
            lines += ["", f"Time to verdict: p < {ttv['alpha']} on {s['primary']} after "
                          f"{ttv['runs_needed']} runs, {ttv['wall_s'] / 3600:.2f} h of wall time "
                          "from the first run's start."]
        elif ttv.get("runs"):
            lines += ["", f"Time to verdict: p < {ttv['alpha']} on {s['primary']} not reached "
                          f"after {ttv['runs']} runs ({ttv['wall_s_so_far'] / 3600:.2f} h; "
                          f"p = {_fmt(ttv['p_value'])})."]
        only = {k: v for k, v in s["splats_only_in"].items() if v}
        if only:
            lines += ["", "Splats seen in one variant only: " + "; ".join(
                f"{k}: {', '.join(v)}" for k, v in only.items())]
        lines.append("")
    if data["crashes"]:
        lines += ["## Kernel crashes and hangs", ""]
        lines += [f"- {c['identity']}: {c['verdict']}: {_first_line(c['error'])}"
                  for c in data["crashes"]]
        lines.append("")
    if data["infrastructure_failures"]:
        lines += ["## Infrastructure failures (not results; `--resume` retries them)", ""]
        lines += [f"- {c['identity']}: {_first_line(c['error'])}"
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
            if c["verdict"] == "regressed":
                body = (f"<failure message={quoteattr('significant regression')}>"
                        f"{escape(s['headline'])}</failure>")
            cases.append(f"<testcase classname={quoteattr('vmtest.compare')} "
                         f"name={quoteattr(name)}>{body}</testcase>")
    for crash in data["crashes"]:
        cases.append(f"<testcase classname={quoteattr('vmtest.runs')} "
                     f"name={quoteattr(crash['identity'] + '#' + str(crash['run']))}>"
                     f"<failure message={quoteattr(crash['verdict'])}>"
                     f"{escape(crash['error'])}</failure></testcase>")
    failures = sum(1 for c in cases if "<failure" in c)
    return ("<?xml version='1.0' encoding='utf-8'?>\n"
            f"<testsuite name='vmtest-matrix' tests='{len(cases)}' failures='{failures}'>\n"
            + "\n".join(cases) + "\n</testsuite>\n")
