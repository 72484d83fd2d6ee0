import pytest

from prosv_lens.evaluation.judges import Rating, harmonic_mean
from prosv_lens.evaluation.stats import bootstrap_mean


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_n():
    small = bootstrap_mean([0.0, 1.0] * 5)
    large = bootstrap_mean([0.0, 1.0] * 200)
    assert small.low <= small.mean <= small.high and small.mean == pytest.approx(0.5)
    assert (large.high - large.low) < (small.high - small.low) / 3
    assert bootstrap_mean([2.0]).low == bootstrap_mean([2.0]).high == 2.0
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_mean([])


def test_harmonic_mean_zero_rule_and_rating_bounds():
    assert harmonic_mean(2.0, 2.0, 2.0) == pytest.approx(2.0)
    assert harmonic_mean(1.0, 2.0, 2.0) == pytest.approx(1.5)
    assert harmonic_mean(0.0, 2.0, 2.0) == 0.0
    r = Rating(1.0, 2.0, 2.0, {"why": "test"})
    assert Rating.from_dict(r.to_dict()) == r and r.to_dict()["overall"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="outside"):
        Rating(2.5, 1.0, 1.0)
