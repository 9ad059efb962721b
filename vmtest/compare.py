"""Comparing variants: result documents in, the comparison as data out (pure).

Statistics for small samples, no distribution assumed:
- Mann-Whitney U, two-sided: the exact permutation distribution (ties kept as mid-ranks)
  up to 60 runs in all -- counted by a generating function, not by listing the
  arrangements -- else the normal approximation with tie correction and continuity
  correction.
- Bootstrap 95 % confidence interval of the median (percentile method, fixed seed).

build() groups the documents per kernel, scenario and variant, compares each variant
with the baseline on every metric the config names, and adds the verdicts, the time to
verdict, and the runs that crashed or failed. vmtest/report.py renders what it returns.
"""

from __future__ import annotations

import functools
import json
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from vmtest import provenance
from vmtest.config import Experiment
from vmtest.deadline import utc_epoch
from vmtest.outcome import Change, RunVerdict
from vmtest.results.document import Result

# Runs in all up to which the exact permutation distribution is counted.
EXACT_MAX_RUNS = 60


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def mann_whitney_u(a: Sequence[float], b: Sequence[float],
                   towards: int = 0) -> tuple[float, float]:
    """(U of a, p-value): two-sided (towards=0), or one-sided against "b tends higher
    than a" (towards=+1) or "lower" (-1), for a direction fixed before b was seen."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return float("nan"), float("nan")
    pooled = list(a) + list(b)
    ranks = _ranks(pooled)
    r1 = sum(ranks[:n1])
    u1 = r1 - n1 * (n1 + 1) / 2
    mean_u = n1 * n2 / 2
    if len(set(pooled)) == 1:
        return u1, 1.0
    # b higher is U of a lower: the deviation that counts, signed so that larger is
    # more extreme (its absolute value for two-sided)
    sign = -towards
    if n1 + n2 <= EXACT_MAX_RUNS:
        # Exact: how many ways of choosing which ranks belong to `a` are as extreme.
        doubled = tuple(sorted(int(2 * r) for r in ranks))
        observed2 = round(2 * (u1 - mean_u))
        extreme, total = _exact_tail(doubled, n1, n1 * n2, observed2, sign)
        return u1, extreme / total
    ties = _tie_term(pooled)
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    if sigma == 0:
        return u1, 1.0
    if towards == 0:
        z = (abs(u1 - mean_u) - 0.5) / sigma
        return u1, math.erfc(max(z, 0) / math.sqrt(2))
    z = (sign * (u1 - mean_u) - 0.5) / sigma
    return u1, min(1.0, 0.5 * math.erfc(z / math.sqrt(2)))



@functools.lru_cache(maxsize=8192)
def _subset_sums(doubled: tuple[int, ...], n1: int) -> tuple[int, ...]:
    """For doubled ranks (integers), the number of n1-subsets with each sum: the
    coefficients of the generating function prod(1 + y x^r), packed per y^k into one
    big integer with N + 1 bits a coefficient (a count is at most C(N, k) < 2^N)."""
    bits = len(doubled) + 1
    rows = [1] + [0] * n1
    for r in doubled:
        shift = bits * r
        for k in range(n1, 0, -1):
            if rows[k - 1]:
                rows[k] += rows[k - 1] << shift
    packed, mask = rows[n1], (1 << bits) - 1
    top = sum(sorted(doubled)[-n1:]) if n1 else 0
    return tuple((packed >> (bits * s)) & mask for s in range(top + 1))


def _exact_tail(doubled: tuple[int, ...], n1: int, mean2: int,
                observed2: int, sign: int = 0) -> tuple[int, int]:
    """(arrangements as extreme as the observed deviation of U from its mean, all
    arrangements), doubled units: |deviation| >= |observed| (sign 0), or
    sign * deviation >= sign * observed (one-sided)."""
    counts = _subset_sums(doubled, n1)
    offset = n1 * (n1 + 1)  # 2 * n1(n1+1)/2
    extreme = total = 0
    for s2, c in enumerate(counts):
        if c:
            total += c
            deviation = s2 - offset - mean2
            if (abs(deviation) >= abs(observed2) if sign == 0
                    else sign * deviation >= sign * observed2):
                extreme += c
    return extreme, total


def _tie_term(values: Sequence[float]) -> float:
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return float(sum(t ** 3 - t for t in counts.values()))


def bootstrap_ci_median(values: Sequence[float], *, level: float = 0.95, rounds: int = 4000,
                        seed: int = 12345) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(rounds))
    lo = medians[int((1 - level) / 2 * rounds)]
    hi = medians[min(rounds - 1, int((1 + level) / 2 * rounds))]
    return float(lo), float(hi)


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    mean: float
    ci_low: float
    ci_high: float
    values: tuple[float, ...]


def summarize(values: Sequence[float]) -> Summary:
    vals = [float(v) for v in values]
    if not vals:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, ())
    lo, hi = bootstrap_ci_median(vals)
    return Summary(len(vals), statistics.median(vals), statistics.fmean(vals), lo, hi,
                   tuple(vals))


@dataclass(frozen=True)
class Comparison:
    metric: str
    baseline: Summary  # e.g. unpatched
    candidate: Summary  # e.g. patched
    ratio: float  # baseline median / candidate median
    p_value: float
    verdict: Change


def compare(metric: str, baseline: Sequence[float], candidate: Sequence[float], *,
            lower_is_better: bool = True, alpha: float = 0.05) -> Comparison:
    b, c = summarize(baseline), summarize(candidate)
    if b.n < 2 or c.n < 2:
        return Comparison(metric, b, c, _ratio(b.median, c.median), float("nan"),
                          Change.INSUFFICIENT)
    _, p = mann_whitney_u(list(b.values), list(c.values))
    if p >= alpha and min_p_value(b.n, c.n) >= alpha:
        # Even complete separation could not reach alpha with so few runs: that is no
        # evidence of "no change", only of too few runs.
        verdict = Change.UNDECIDED
    elif p >= alpha or b.median == c.median:
        verdict = Change.NO_CHANGE
    else:
        better = c.median < b.median if lower_is_better else c.median > b.median
        verdict = Change.IMPROVED if better else Change.REGRESSED
    return Comparison(metric, b, c, _ratio(b.median, c.median), p, verdict)


def min_p_value(n1: int, n2: int, one_sided: bool = False) -> float:
    """The smallest p the test can give with n1 + n2 runs (complete separation)."""
    return mann_whitney_u([float(i) for i in range(n1)],
                          [float(i) for i in range(n1, n1 + n2)], int(one_sided))[1]


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return float("inf") if num > 0 else float("nan") if num == 0 else float("-inf")
    return num / den


# -- the comparison of a matrix's documents ---------------------------------------
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
                    comp = compare(metric, b, c, lower_is_better=sc.lower_is_better_for(metric))
                    entry = _comp_dict(comp)
                    # which run each value came from (the report's plots name it)
                    entry["baseline"]["runs"] = _value_runs(base_docs, metric)
                    entry["candidate"]["runs"] = _value_runs(cand_docs, metric)
                    comparisons.append(entry)
                sections.append({
                    "kernel": kernel, "scenario": sc_name, "baseline": baseline,
                    "candidate": variant, "primary": sc.metrics[0],
                    "comparisons": comparisons,
                    "runs": {baseline: _verdicts(base_docs), variant: _verdicts(cand_docs)},
                    "splats_only_in": _splat_diff(base_docs, cand_docs, baseline, variant),
                    "test_differences": test_differences(base_docs, cand_docs),
                    "headline": sc.scenario_class().headline(
                        comparisons, base_docs + cand_docs, baseline, variant),
                    "timeline": {baseline: _timeline(base_docs), variant: _timeline(cand_docs)},
                    "time_to_verdict": time_to_verdict(base_docs, cand_docs, sc.metrics[0]),
                    "mixed_conditions": mixed_conditions(base_docs + cand_docs),
                    "mixed_builds": {v: keys for v, keys in
                                     ((baseline, _build_keys(base_docs)),
                                      (variant, _build_keys(cand_docs))) if len(keys) > 1},
                })
    crashes = [{"run": d.get("run_id"), "identity": _ident(d), "verdict": d.get("verdict"),
                "error": Result(d).error[:500]}
               for d in docs if Result(d).verdict.is_kernel_failure]
    infra = [{"run": d.get("run_id"), "identity": _ident(d), "error": Result(d).error[:500]}
             for d in docs if Result(d).verdict is RunVerdict.INFRASTRUCTURE]
    regressions = [f"{s['kernel']}/{s['scenario']}/{c['metric']}"
                   for s in sections for c in s["comparisons"]
                   if c["verdict"] == Change.REGRESSED]
    regressions += [f"{s['kernel']}/{s['scenario']}/{d['test']}: passes on {s['baseline']}, "
                    f"not on {s['candidate']}"
                    for s in sections for d in s["test_differences"] if d["regressed"]]
    run_list = [{"run": d.get("run_id"), "identity": _ident(d), "verdict": d.get("verdict"),
                 "seconds": (d.get("timings") or {}).get("total_s"),
                 "error": Result(d).error_line}
                for d in sorted(docs, key=lambda d: (_ident(d), str(d.get("run_id"))))]
    result: dict[str, Any] = {
        "config": str(exp.path), "profile": profile or exp.matrix.profile,
        "made_by": provenance.describe(), "run_provenance": run_provenance(docs),
        "run_list": run_list,
        "sections": sections,
        "crashes": crashes, "infrastructure_failures": infra, "regressions": regressions,
        "runs": len(docs)}
    return result


def exit_code(data: dict[str, Any]) -> int:
    """A comparison's exit code: 1 for a regression or a kernel failure in any run, else 3
    when the machinery failed a run, else 0."""
    if data["regressions"] or data["crashes"]:
        return RunVerdict.FAILURE.exit_code
    if data["infrastructure_failures"]:
        return RunVerdict.INFRASTRUCTURE.exit_code
    return RunVerdict.OK.exit_code


def run_provenance(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each distinct provenance of the runs (vmtest, QEMU, gcc, host kernel) with how many
    runs had it: more than one means the compared runs were not made alike."""
    counts: dict[str, int] = defaultdict(int)
    for doc in docs:
        if isinstance(doc.get("provenance"), dict):
            counts[json.dumps(doc["provenance"], sort_keys=True)] += 1
    return [json.loads(key) | {"runs": n} for key, n in sorted(counts.items())]


def _ident(doc: dict[str, Any]) -> str:
    i = doc.get("identity", {})
    return f"{i.get('base')}/{i.get('scenario')}/{i.get('variant')}"


def _values(docs: list[dict[str, Any]], metric: str) -> list[float]:
    return [v for v in (Result(d).value(metric) for d in docs) if v is not None]


def _value_runs(docs: list[dict[str, Any]], metric: str) -> list[str]:
    """The run ids of _values(docs, metric), in its order."""
    return [str(d.get("run_id")) for d in docs if Result(d).value(metric) is not None]


def _verdicts(docs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for d in docs:
        counts[str(d.get("verdict"))] += 1
    return dict(counts)


def _comp_dict(comp: Comparison) -> dict[str, Any]:
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


def mixed_conditions(docs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """What differs between the compared runs that should not: host, CPU model,
    accelerator (a CI shard on KVM against one on TCG compares runners, not kernels).
    {what: {value: runs}} for each that has more than one value."""
    fields = {"host": lambda d: (d.get("host") or {}).get("hostname"),
              "CPU model": lambda d: (d.get("host") or {}).get("cpu_model"),
              "accelerator": lambda d: (d.get("identity") or {}).get("accel")}
    out: dict[str, dict[str, int]] = {}
    for what, get in fields.items():
        counts: dict[str, int] = defaultdict(int)
        for d in docs:
            if Result(d).verdict is RunVerdict.OK and get(d):
                counts[str(get(d))] += 1
        if len(counts) > 1:
            out[what] = dict(sorted(counts.items()))
    return out


def test_differences(base: list[dict[str, Any]],
                     cand: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tests (a kselftest run's `tests`) whose outcomes differ between the variants:
    per test, how often each outcome came up on each side. `regressed`: it always
    passed on the baseline and failed or timed out at least once on the candidate."""
    def outcomes(docs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        seen: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for d in docs:
            if Result(d).verdict is not RunVerdict.OK:
                continue
            for test, info in (d.get("tests") or {}).items():
                seen[test][str(info.get("status"))] += 1
        return seen

    b, c = outcomes(base), outcomes(cand)
    out = []
    for test in sorted(set(b) | set(c)):
        if set(b.get(test, {})) == set(c.get(test, {})):
            continue
        bad = {"fail", "timeout", "missing"}
        out.append({"test": test, "baseline": dict(b.get(test, {})),
                    "candidate": dict(c.get(test, {})),
                    "regressed": set(b.get(test, {})) == {"pass"}
                    and bool(bad & set(c.get(test, {})))})
    return out


def _build_keys(docs: list[dict[str, Any]]) -> list[str]:
    """The kernel builds a variant's runs used: more than one means the results mix
    kernels (a fragment or patch changed between a run and a resume)."""
    return sorted({str(d.get("identity", {}).get("build_key")) for d in docs
                   if Result(d).verdict is RunVerdict.OK})


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
            value = Result(d).value(metric)
            end = utc_epoch(d.get("finished_at"))
            if value is not None and end is not None:
                events.append((end, utc_epoch(d.get("started_at")) or end, side, value))
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
        p = mann_whitney_u(b, c)[1] if b and c else float("nan")
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
        if Result(d).verdict is RunVerdict.OK and ops:
            return [float(o.get("dumps", 0)) for o in ops]
    return []
