"""Statistics for comparing two variants: small samples, no distribution assumed.

- Mann-Whitney U, two-sided: exact permutation distribution when the number of
  arrangements is small (<= 200k), else the normal approximation with tie correction
  and continuity correction.
- Bootstrap 95 % confidence interval of the median (percentile method, fixed seed).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

EXACT_LIMIT = 200_000


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


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(U of a, two-sided p-value)."""
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
    if math.comb(n1 + n2, n1) <= EXACT_LIMIT:
        # Exact: every way of choosing which ranks belong to `a`.
        observed = abs(u1 - mean_u)
        total = extreme = 0
        for combo in itertools.combinations(ranks, n1):
            u = sum(combo) - n1 * (n1 + 1) / 2
            total += 1
            if abs(u - mean_u) >= observed - 1e-9:
                extreme += 1
        return u1, extreme / total
    ties = _tie_term(pooled)
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    if sigma == 0:
        return u1, 1.0
    z = (abs(u1 - mean_u) - 0.5) / sigma
    return u1, math.erfc(max(z, 0) / math.sqrt(2))


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
    verdict: str  # improved | regressed | no significant change | insufficient data


def compare(metric: str, baseline: Sequence[float], candidate: Sequence[float], *,
            lower_is_better: bool = True, alpha: float = 0.05) -> Comparison:
    b, c = summarize(baseline), summarize(candidate)
    if b.n < 2 or c.n < 2:
        return Comparison(metric, b, c, _ratio(b.median, c.median), float("nan"),
                          "insufficient data")
    _, p = mann_whitney_u(list(b.values), list(c.values))
    if p >= alpha or b.median == c.median:
        verdict = "no significant change"
    else:
        better = c.median < b.median if lower_is_better else c.median > b.median
        verdict = "improved" if better else "regressed"
    return Comparison(metric, b, c, _ratio(b.median, c.median), p, verdict)


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return float("inf") if num > 0 else float("nan") if num == 0 else float("-inf")
    return num / den
