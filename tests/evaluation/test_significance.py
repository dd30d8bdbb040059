from __future__ import annotations

import pytest

from lbr.evaluation.significance import paired_bootstrap


def test_mean_and_counts_match_a_hand_computation():
    a = {"q1": 1.0, "q2": 0.5, "q3": 0.0, "q4": 0.25}
    b = {"q1": 0.5, "q2": 0.5, "q3": 1.0, "q4": 0.0}
    result = paired_bootstrap(a, b)
    assert result.mean == pytest.approx((0.5 + 0 - 1.0 + 0.25) / 4)
    assert (result.n, result.wins, result.losses) == (4, 2, 1)
    assert result.low <= result.mean <= result.high


def test_a_constant_difference_has_no_spread():
    a = {f"q{i}": 0.75 for i in range(20)}
    b = {f"q{i}": 0.5 for i in range(20)}
    result = paired_bootstrap(a, b, samples=500)
    assert result.low == pytest.approx(0.25) and result.high == pytest.approx(0.25)
    assert result.significant


def test_two_opposite_queries_give_the_full_range():
    # Resampling two differences (+1, -1) gives a mean of -1 a quarter of the time, +1 a quarter
    # of the time: the 2.5% and 97.5% quantiles are -1 and +1, and 0 is inside.
    result = paired_bootstrap({"q1": 1.0, "q2": 0.0}, {"q1": 0.0, "q2": 1.0}, samples=4000)
    assert (result.low, result.high, result.mean) == (-1.0, 1.0, 0.0)
    assert not result.significant


def test_the_interval_narrows_with_more_queries_and_is_reproducible():
    small = {f"q{i}": float(i % 2) for i in range(10)}
    large = {f"q{i}": float(i % 2) for i in range(1000)}
    zeros_small = dict.fromkeys(small, 0.25)
    zeros_large = dict.fromkeys(large, 0.25)
    narrow = paired_bootstrap(large, zeros_large, samples=2500)
    wide = paired_bootstrap(small, zeros_small, samples=2500)
    assert narrow.high - narrow.low < (wide.high - wide.low) / 5
    assert paired_bootstrap(small, zeros_small, samples=2500) == wide


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"different queries \(1 only in the first, e.g. \['q2'\]"):
        paired_bootstrap({"q1": 1.0, "q2": 0.0}, {"q1": 1.0})
    with pytest.raises(ValueError, match="no queries"):
        paired_bootstrap({}, {})
    with pytest.raises(ValueError, match="samples"):
        paired_bootstrap({"q": 1.0}, {"q": 0.0}, samples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap({"q": 1.0}, {"q": 0.0}, confidence=1.0)
