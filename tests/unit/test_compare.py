import math

import pytest

from vmtest import compare as stats


def test_mann_whitney_exact_known_values():
    # Completely separated samples of 5 and 5: p = 2 / C(10,5) = 2/252.
    u, p = stats.mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert u == 0
    assert p == pytest.approx(2 / 252)
    # Identical distributions: p = 1.
    assert stats.mann_whitney_u([3, 3, 3], [3, 3, 3])[1] == 1.0


def test_mann_whitney_symmetric_and_no_shift_is_not_significant():
    a, b = [1, 4, 6, 9, 12], [2, 3, 7, 10, 11]
    assert stats.mann_whitney_u(a, b)[1] == pytest.approx(stats.mann_whitney_u(b, a)[1])
    assert stats.mann_whitney_u(a, b)[1] > 0.5


def test_mann_whitney_normal_approximation_for_large_samples():
    a = list(range(0, 40))
    b = list(range(30, 70))
    u, p = stats.mann_whitney_u(a, b)
    assert u == pytest.approx(50)  # 45 pairs with a > b, plus 10 ties counted as halves
    assert p < 1e-6
    same_u, same_p = stats.mann_whitney_u(a, a)
    assert same_p > 0.9


def test_bootstrap_ci_contains_median_and_is_deterministic():
    values = [100, 110, 95, 130, 105, 98, 120]
    lo, hi = stats.bootstrap_ci_median(values)
    assert lo <= 105 <= hi
    assert (lo, hi) == stats.bootstrap_ci_median(values)


@pytest.mark.parametrize("base,cand,verdict", [
    ([400, 380, 420, 390, 410], [30, 28, 35, 31, 29], "improved"),
    ([30, 28, 35, 31, 29], [400, 380, 420, 390, 410], "regressed"),
    ([10, 12, 11, 13, 9], [11, 10, 12, 9, 13], "no significant change"),
    ([1], [2], "insufficient data"),
])
def test_compare_verdicts(base, cand, verdict):
    result = stats.compare("dumps", base, cand)
    assert result.verdict == verdict
    if verdict == "improved":
        assert result.ratio == pytest.approx(400 / 30)


def test_ratio_edge_cases():
    assert stats.compare("x", [0] * 5, [0] * 5).verdict == "no significant change"
    assert math.isinf(stats.compare("x", [5, 6], [0, 0]).ratio)


def test_too_few_runs_to_decide_is_undecided_not_no_change():
    """Seed profile, 3+3 runs, 245, 245, 105 vs 0, 0, 0 (issue 13): complete separation,
    yet p = 0.1 -- 3+3 runs cannot go lower. That is undecided, not "no change"."""
    comp = stats.compare("dumps", [245, 245, 105], [0, 0, 0])
    assert comp.verdict == "undecided" and comp.p_value == pytest.approx(0.1, abs=0.01)
    assert stats.min_p_value(3, 3) > 0.05 > stats.min_p_value(4, 4)
    assert stats.compare("dumps", [245, 245, 105, 200], [0, 0, 0, 1]).verdict == "improved"
    # Enough runs that show nothing: a real "no significant change".
    assert stats.compare("d", [1, 2, 3, 4, 5], [2, 3, 1, 5, 4]).verdict == \
        "no significant change"
