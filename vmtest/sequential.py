"""One decision rule for "run until decided": the matrix's `--until-decided` and the
bisection's steps both keep adding runs until a question is decided at the asked error
rate, or a run budget is spent.

The rule is a group-sequential test with its looks planned in advance and the error rate
spent over them (Bonferroni spending): at look k, after n_k runs a side, the exact
Mann-Whitney test of compare.py decides "the two differ" when p <= spend_k, and the
spends add up to alpha. Whatever the dependence between the looks, the chance that any
look decides wrongly when the two do not differ is at most the sum of the spends
(the union bound): the family-wise error rate is <= alpha. Stopping the first time a
plain p < alpha would not be valid (with 10 looks it errs up to ~10 x alpha);
scripts/sequential_sim.py shows the realised rate on the recorded run distributions.

The spend is put where a decision is possible: half of alpha at the first look -- the
fewest runs a side at which complete separation can reach it -- and the other half in
equal parts at the later looks, every `step` runs up to the budget. With alpha = 0.01
that is 6 + 6 runs for a clear difference (p = 0.0022 <= 0.005), then looks at 8, 10, ...

There is no "decided: no difference" outcome: a budget spent without a decision is
"undecided", never "the same" (compare.py's verdicts say the same).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vmtest.compare import mann_whitney_u, min_p_value
from vmtest.config import Experiment
from vmtest.errors import ConfigError
from vmtest.results.document import Result
from vmtest.results.store import Run


@dataclass(frozen=True)
class Plan:
    alpha: float
    looks: tuple[int, ...]  # runs a side at each look, increasing
    spend: tuple[float, ...]  # the error rate spent at each look; sums to alpha

    def spend_at(self, runs: int) -> float | None:
        """The spend of the look at `runs` runs a side, None where no look is planned."""
        for n, s in zip(self.looks, self.spend, strict=True):
            if n == runs:
                return s
        return None

    def describe(self) -> str:
        looks = ", ".join(f"{n} ({s:.2g})" for n, s in zip(self.looks, self.spend, strict=True))
        return f"alpha {self.alpha:g} spent over looks at {looks} runs a side"


def plan(alpha: float = 0.01, max_runs: int = 16, step: int = 2,
         other_side: int | None = None, one_sided: bool = False) -> Plan:
    """Looks from the first run count where complete separation can reach half of alpha
    (against `other_side` runs on the other side when that is fixed, as a bisection's
    endpoints are; by a one-sided test for a bisection step), then every `step` runs up
    to max_runs."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha {alpha} is not between 0 and 1")
    first = None
    for n in range(2, max_runs + 1):
        if min_p_value(n, other_side or n, one_sided) <= alpha / 2:
            first = n
            break
    if first is None:
        raise ConfigError(f"{max_runs} runs a side can never decide at alpha {alpha:g}",
                          hint="raise the run budget (--max-repetitions) or alpha")
    later = list(range(first + step, max_runs + 1, step))
    if max_runs > first and (not later or later[-1] != max_runs):
        later.append(max_runs)
    if not later:
        return Plan(alpha, (first,), (alpha,))
    rest = alpha / 2 / len(later)
    return Plan(alpha, (first, *later), (alpha / 2, *([rest] * len(later))))


@dataclass(frozen=True)
class Decision:
    decided: bool
    p_value: float
    spend: float | None  # the look's spend; None: not a look
    direction: int  # +1 candidate higher, -1 lower, 0 equal medians


def decide(baseline: Sequence[float], candidate: Sequence[float], p: Plan,
           runs: int | None = None) -> Decision:
    """At a look (`runs`: the look's run count, default the smaller sample's): do the
    two differ?"""
    spend = p.spend_at(runs if runs is not None else min(len(baseline), len(candidate)))
    _, pv = mann_whitney_u(list(baseline), list(candidate))
    direction = _direction(baseline, candidate)
    decided = spend is not None and pv == pv and pv <= spend and direction != 0
    return Decision(decided, pv, spend, direction)


def _direction(a: Sequence[float], b: Sequence[float]) -> int:
    """+1 when b tends higher than a (more pairs b > a than b < a), -1 lower, 0 neither."""
    wins = sum((y > x) - (y < x) for x in a for y in b)
    return (wins > 0) - (wins < 0)


@dataclass(frozen=True)
class Classification:
    like: str | None  # "good", "bad", or None (not yet, or neither at the budget)
    p_good: float  # the commit's runs against the good endpoint's
    p_bad: float
    runs: int


def classify(commit: Sequence[float], good: Sequence[float], bad: Sequence[float],
             p: Plan) -> Classification:
    """A bisection step at a look: the commit is like-bad when its runs are shifted from
    the good endpoint's towards the bad's, like-good when they are shifted from the bad
    endpoint's towards the good's. The endpoints, decided apart before the first step,
    fix the direction, so each question is one-sided: a commit like good is called bad
    only when the one-sided test errs, at most the plan's alpha over all its looks."""
    towards_bad = _direction(good, bad)
    _, p_good = mann_whitney_u(list(good), list(commit), towards_bad)
    _, p_bad = mann_whitney_u(list(bad), list(commit), -towards_bad)
    like = None
    spend = p.spend_at(len(commit))
    if spend is not None and towards_bad != 0:
        is_bad = p_good <= spend
        is_good = p_bad <= spend
        if is_bad != is_good:
            like = "bad" if is_bad else "good"
    return Classification(like, p_good, p_bad, len(commit))


class UntilDecided:
    """`--until-decided`: which runs are still needed. The runs of one kernel and scenario
    stop once its primary metric is decided for every candidate variant against the
    baseline, by the plan of vmtest/sequential.py (looks at planned run counts, alpha
    spent over them); the rest stop at the plan's budget (the matrix's repetitions)."""

    def __init__(self, exp: Experiment, plan: Any) -> None:
        assert exp.matrix is not None
        self.exp = exp
        self.plan = plan
        self.values: dict[tuple[str, str, str], list[float]] = {}
        self.decided: dict[tuple[str, str], dict[str, Any]] = {}
        self.started = time.monotonic()

    def record(self, run: Run, doc: dict[str, Any]) -> None:
        """A finished run: its primary metric counts where the run is whole."""
        assert self.exp.matrix is not None
        metric = self.exp.scenario(run.scenario).metrics[0]
        value = Result(doc).value(metric)
        if value is not None:
            self.values.setdefault((run.kernel, run.scenario, run.variant), []).append(value)
        group = (run.kernel, run.scenario)
        if group in self.decided:
            return
        baseline, *candidates = self.exp.matrix.variants
        base = self.values.get((*group, baseline), [])
        results = {}
        for cand in candidates:
            vals = self.values.get((*group, cand), [])
            runs = min(len(base), len(vals))
            if self.plan.spend_at(runs) is None:
                return  # not at a look: wait for the other side
            d = decide(base[:runs], vals[:runs], self.plan, runs)
            if not d.decided:
                return
            results[cand] = {"runs": runs, "p_value": d.p_value, "spend": d.spend}
        self.decided[group] = {"metric": metric, "variants": results,
                               "after_s": round(time.monotonic() - self.started, 1)}

    def needed(self, run: Run) -> bool:
        return (run.kernel, run.scenario) not in self.decided
