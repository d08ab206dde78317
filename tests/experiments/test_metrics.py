"""Metrics on synthetic curves whose answers are known."""

import numpy as np
import pytest

from gradtx.experiments import metrics


def test_trailing_mean_matches_a_direct_loop():
    rng = np.random.default_rng(0)
    curve = rng.normal(size=(3, 25))
    expected = np.stack(
        [[curve[r, max(0, i - 4) : i + 1].mean() for i in range(25)] for r in range(3)]
    )
    np.testing.assert_allclose(metrics.trailing_mean(curve, window=5), expected)


def test_steps_to_target_of_a_linear_decay():
    # Loss 10 - step/10 (step = 1..100): the trailing mean of 1 value crosses
    # 5.0 exactly at step 50.
    curve = 10 - np.arange(1, 101) / 10
    assert metrics.steps_to_target(curve, 5.0, window=1) == 50
    # With a window of 10 the mean lags by 4.5 steps: first <= 5 at step 55.
    assert metrics.steps_to_target(curve, 5.0, window=10) == 55


def test_steps_to_target_for_a_rising_return():
    curve = np.minimum(np.arange(1, 51) * 4.0, 200.0)
    assert metrics.steps_to_target(curve, 150.0, higher_is_better=True, window=1) == 38


def test_never_reached_and_diverged_give_nan():
    flat = np.ones((2, 30))
    flat[1, 10:] = np.nan
    result = metrics.steps_to_target(flat, 0.5, window=1)
    assert np.isnan(result).all()


def test_first_value_at_target_counts_as_one_step():
    assert metrics.steps_to_target(np.zeros(5), 0.1, window=1) == 1


def test_generalization_gap_and_summary():
    np.testing.assert_allclose(
        metrics.generalization_gap(np.array([1.0, 0.9]), np.array([0.8, 0.9])), [0.2, 0.0]
    )
    mean, std, count = metrics.summarize(np.array([1.0, 3.0, np.nan]))
    assert (mean, std, count) == (2.0, 1.0, 2)


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        metrics.trailing_mean(np.ones(3), window=0)
