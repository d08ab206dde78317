"""Parsing of --grid and --random search expressions."""

import numpy as np
import pytest

from gradtx.experiments import search


def test_grid_values_and_product():
    axis = search.parse_grid("learning_rate=1e-4,3e-4,1e-3")
    assert axis == search.GridAxis("learning_rate", (1e-4, 3e-4, 1e-3))
    trials = search.grid_trials([axis, search.parse_grid("transforms.0.b2 = 0.9,0.99")])
    assert len(trials) == 6
    assert trials[0] == {"learning_rate": 1e-4, "transforms.0.b2": 0.9}
    assert trials[-1] == {"learning_rate": 1e-3, "transforms.0.b2": 0.99}


@pytest.mark.parametrize(
    "expression, message",
    [
        ("learning_rate", "not of the form PATH=V1,V2"),
        ("learning_rate=", "not of the form"),
        ("learning_rate=1e-3,abc", "'abc' is not a number"),
        ("learning_rate=1e-3,nan", "'nan' is not finite"),
        ("2lr=1,2", "not a dotted hyperparameter path"),
        ("learning_rate=1,1", "repeated values"),
        ("__import__('os')=1", "not a dotted hyperparameter path"),
    ],
)
def test_malformed_grid(expression, message):
    with pytest.raises(ValueError, match=message):
        search.parse_grid(expression)


def test_random_distributions_stay_in_range_and_are_reproducible():
    log_axis = search.parse_random("learning_rate=loguniform(1e-5,1e-1)")
    uniform_axis = search.parse_random("b1=uniform(0.8, 0.95)")
    choice_axis = search.parse_random("b2=choice(0.99,0.999)")
    trials = search.random_trials([log_axis, uniform_axis, choice_axis], 200, seed=3)
    lrs = np.array([t["learning_rate"] for t in trials])
    assert lrs.min() >= 1e-5 and lrs.max() <= 1e-1
    # Log-uniform: about half the draws fall below the geometric midpoint 1e-3.
    assert 0.35 < np.mean(lrs < 1e-3) < 0.65
    assert all(0.8 <= t["b1"] <= 0.95 for t in trials)
    assert {t["b2"] for t in trials} == {0.99, 0.999}
    assert trials == search.random_trials([log_axis, uniform_axis, choice_axis], 200, seed=3)


@pytest.mark.parametrize(
    "expression, message",
    [
        ("learning_rate=gauss(1,2)", "expected one of loguniform, uniform, choice"),
        ("learning_rate=loguniform(0,1)", "loguniform needs 0 < LOW < HIGH"),
        ("learning_rate=loguniform(1e-1,1e-5)", "LOW < HIGH"),
        ("learning_rate=uniform(1)", "takes LOW,HIGH"),
        ("learning_rate=uniform(a,b)", "'a' is not a number"),
        ("learning_rate=loguniform(1e-5,1e-1", "expected one of"),
    ],
)
def test_malformed_random(expression, message):
    with pytest.raises(ValueError, match=message):
        search.parse_random(expression)


def test_trials_must_be_positive_and_paths_unique():
    with pytest.raises(ValueError, match="--trials must be >= 1, got 0"):
        search.random_trials([search.parse_random("b1=uniform(0,1)")], 0)
    with pytest.raises(ValueError, match="more than one --grid"):
        search.grid_trials([search.parse_grid("b1=0.1,0.2"), search.parse_grid("b1=0.3")])
