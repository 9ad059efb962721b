"""The decision rule of "run until decided" (vmtest/sequential.py) and the matrix's
`--until-decided` bookkeeping (matrix.UntilDecided)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from vmtest import config, sequential
from vmtest.compare import mann_whitney_u, min_p_value
from vmtest.errors import ConfigError
from vmtest.results.store import Run

RUNS = Path(__file__).resolve().parents[1] / "data" / "runs"


@pytest.mark.parametrize("alpha,max_runs", [(0.01, 16), (0.05, 10), (0.01, 7), (0.001, 20)])
def test_plan_spends_alpha_where_a_decision_is_possible(alpha, max_runs):
    p = sequential.plan(alpha, max_runs)
    assert math.isclose(sum(p.spend), alpha)
    assert list(p.looks) == sorted(set(p.looks)) and p.looks[-1] == max_runs
    first = p.looks[0]
    assert min_p_value(first, first) <= p.spend[0]  # complete separation decides there
    assert min_p_value(first - 1, first - 1) > alpha / 2  # and not one run earlier


def test_a_budget_that_can_never_decide_is_refused():
    with pytest.raises(ConfigError, match="can never decide"):
        sequential.plan(0.001, 5)


def test_decides_only_at_a_look_and_only_below_its_spend():
    p = sequential.plan(0.01, 16)  # looks 6 (0.005), 8, 10, ... (0.001)
    high, low = [245, 245, 105, 210, 175, 140, 70, 35], [0] * 8
    assert not sequential.decide(high[:5], low[:5], p).decided  # 5: no look
    d = sequential.decide(high[:6], low[:6], p)
    assert d.decided and d.spend == 0.005 and d.direction == -1
    # p = 0.0022 would not do at a later look, whose spend is 0.001
    assert not sequential.decide(high[:6], low[:6], p, runs=8).decided
    assert not sequential.decide([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], p).decided


def test_bisect_step_classification_against_fixed_endpoints():
    good, bad = [0.0] * 8, [245, 245, 105, 210, 175, 140, 35, 70]
    p = sequential.plan(0.01, 12, other_side=8)
    assert p.looks[0] == 4
    like_bad = sequential.classify([210, 175, 140, 245], good, bad, p)
    like_good = sequential.classify([0, 0, 0, 0], good, bad, p)
    assert (like_bad.like, like_good.like) == ("bad", "good")
    assert sequential.classify([210, 175, 140], good, bad, p).like is None  # not a look


def test_one_sided_p_is_half_the_two_sided_for_a_clear_shift_and_one_for_the_other_way():
    low, high = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0]
    two = mann_whitney_u(low, high)[1]
    assert mann_whitney_u(low, high, +1)[1] == pytest.approx(two / 2)
    assert mann_whitney_u(low, high, -1)[1] == 1.0
    assert min_p_value(4, 6, one_sided=True) == pytest.approx(min_p_value(4, 6) / 2)
    # large samples (normal approximation): the same relation
    big_low = [float(i) for i in range(40)]
    big_high = [i + 12.5 for i in range(40)]
    assert mann_whitney_u(big_low, big_high, +1)[1] == \
        pytest.approx(mann_whitney_u(big_low, big_high)[1] / 2, rel=1e-6)
    assert mann_whitney_u(big_low, big_high, -1)[1] > 0.99


def test_a_step_by_one_sided_tests_decides_a_run_earlier():
    good, bad = [0.0] * 6, [245, 245, 105, 210, 175, 140]
    two = sequential.plan(0.01, 8, other_side=6)
    one = sequential.plan(0.01, 8, other_side=6, one_sided=True)
    assert (two.looks[0], one.looks[0]) == (5, 4)
    assert sequential.classify([210, 175, 140, 245], good, bad, one).like == "bad"
    assert sequential.classify([0, 0, 0, 0], good, bad, one).like == "good"
    # a shift away from bad (below good) is not "like bad", whatever its p
    assert sequential.classify([-5, -5, -5, -5], good, bad, one).like != "bad"


def _recorded() -> list[tuple[str, list[float], list[float]]]:
    out = []
    for path in sorted(RUNS.glob("*.json")):
        doc = json.loads(path.read_text())
        out.append((path.stem, [float(v) for v in doc["baseline"]],
                    [float(v) for v in doc["candidate"]]))
    return out


@pytest.mark.parametrize("name,base,cand", _recorded(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_error_rate_holds_on_recorded_runs(name, base, cand):
    """Both sides drawn from one recorded distribution (tests/data/runs): the plan
    decides -- wrongly -- at most about alpha of the time (alpha = 0.05 here, so that
    800 draws can see it); the rule it replaces, stop at the first p < alpha, errs
    more often on the same draws."""
    p = sequential.plan(0.05, 12)
    rng = random.Random(name)
    wrong = naive_wrong = 0
    for _ in range(800):
        b = [rng.choice(base) for _ in range(12)]
        c = [rng.choice(base) for _ in range(12)]
        wrong += any(sequential.decide(b[:n], c[:n], p, n).decided for n in p.looks)
        naive_wrong += any(mann_whitney_u(b[:n], c[:n])[1] < 0.05 for n in range(2, 13))
    assert wrong / 800 <= 0.05 + 0.023  # 3 sigma of 800 draws at 0.05
    assert naive_wrong >= wrong


def _simulated_steps(base: list[float], cand: list[float], seed: str, alpha: float,
                     budget: int, reference: str, trials: int = 600) -> tuple[float, float]:
    """Bisection steps simulated on recorded runs: endpoints drawn (good like cand, bad
    like base) and decided apart first, as vmtest bisect does, kept at the deciding look
    (reference "decided") or measured on to the budget ("budget", what vmtest bisect
    does); then commits drawn like either endpoint and classified. (wrong, undecided)
    shares of the steps."""
    rng = random.Random(seed)
    endpoints_plan = sequential.plan(alpha, budget)
    wrong = undecided = trials_done = 0
    while trials_done < trials:
        good = [rng.choice(cand) for _ in range(budget)]
        bad = [rng.choice(base) for _ in range(budget)]
        n = next((n for n in endpoints_plan.looks
                  if sequential.decide(good[:n], bad[:n], endpoints_plan, n).decided), None)
        if n is None:
            continue  # not separated: vmtest bisect refuses to start
        if reference == "decided":
            good, bad = good[:n], bad[:n]
        step = sequential.plan(alpha, budget, other_side=len(good), one_sided=True)
        for truth, source in (("good", cand), ("bad", base)):
            runs = [rng.choice(source) for _ in range(budget)]
            likes = [sequential.classify(runs[:k], good, bad, step).like for k in step.looks]
            first = next((like for like in likes if like is not None), None)
            wrong += first is not None and first != truth
            undecided += first is None
            trials_done += 1
    return wrong / trials_done, undecided / trials_done


@pytest.mark.parametrize("name,base,cand", _recorded(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_a_step_misclassifies_at_most_alpha_on_recorded_runs(name, base, cand):
    """Commits like the good endpoint called bad, or like the bad one called good, at
    most about alpha of the time (0.05 here, so that 600 steps can see it)."""
    alpha = 0.05
    wrong, _ = _simulated_steps(base, cand, name, alpha, 8, "budget")
    assert wrong <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / 600)


def test_endpoints_measured_to_the_budget_leave_fewer_steps_undecided():
    """On the zero-inflated quick-profile runs (a bad kernel's run shows no failure one
    time in four), steps compared with endpoints kept at their deciding look stay
    undecided (skipped) far more often than against endpoints measured to the budget."""
    name, base, cand = next(r for r in _recorded() if r[0] == "6.1-cma-stress-quick-bisect")
    _, at_decision = _simulated_steps(base, cand, name, 0.01, 16, "decided", trials=300)
    _, at_budget = _simulated_steps(base, cand, name, 0.01, 16, "budget", trials=300)
    assert at_budget < at_decision / 2, (at_budget, at_decision)


def config_path() -> Path:
    from vmtest import paths

    return paths.default_config()


def test_until_decided_stops_a_decided_comparison():
    exp = config.load(str(config_path()))
    assert exp.matrix is not None
    until = sequential.UntilDecided(exp, sequential.plan(0.01, 10))
    scenario = "cma-stress"
    metric = exp.scenario(scenario).metrics[0]
    base, cand = exp.matrix.variants[0], exp.matrix.variants[1]
    kernel = exp.matrix.kernels[0]
    for rep in range(6):
        for variant, value in ((base, 245 - rep), (cand, 0)):
            run = Run(kernel, variant, scenario, rep, "quick")
            assert until.needed(run)
            until.record(run, {"verdict": "ok", "metrics": {metric: value}})
    decided = until.decided[(kernel, scenario)]
    assert decided["variants"][cand]["runs"] == 6
    assert not until.needed(Run(kernel, base, scenario, 6, "quick"))
    # another scenario of the matrix goes on
    assert until.needed(Run(kernel, base, "hotplug-offline", 6, "quick"))
    # a crashed run does not count towards a look
    other = sequential.UntilDecided(exp, sequential.plan(0.01, 10))
    for rep in range(6):
        other.record(Run(kernel, base, scenario, rep, "quick"),
                     {"verdict": "crash", "metrics": {metric: 245}})
        other.record(Run(kernel, cand, scenario, rep, "quick"),
                     {"verdict": "ok", "metrics": {metric: 0}})
    assert other.decided == {}
