"""Training programs: vmapped sweeps equal separate runs; tuning helps."""

import jax
import numpy as np
import pytest

import gradtx
from gradtx.experiments import leaves
from gradtx.experiments.compare import run_comparison, summary
from gradtx.experiments.meta import tune_hyperparameter
from gradtx.experiments.sweep import run_sweep
from gradtx.experiments.training import stack, train


def test_vmapped_sweep_equals_separate_runs(regression_task):
    learning_rates = [0.01, 0.03, 0.1]
    optimizers = [gradtx.sgd(lr, momentum=0.9) for lr in learning_rates]
    swept = run_sweep(
        regression_task,
        [{"learning_rate": lr} for lr in learning_rates],
        optimizers,
        seeds=2,
        steps=40,
        eval_every=10,
    )
    assert swept.curves.curve.shape == (3, 2, 40)
    for index, tx in enumerate(optimizers):
        alone = train(regression_task, tx, seeds=2, steps=40, eval_every=10)
        np.testing.assert_allclose(swept.curves.curve[index], alone.curve, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            swept.curves.metrics["test_loss"][index],
            alone.metrics["test_loss"],
            rtol=1e-5,
            atol=1e-6,
        )
    # Lower test loss is better, so the ranking follows the scores upwards.
    ranking = swept.ranking(higher_is_better=False)
    assert list(swept.scores[ranking]) == sorted(swept.scores)


def test_sweep_with_schedules_and_adamw(regression_task):
    optimizers = [
        gradtx.adamw(gradtx.exponential_decay(lr, 10, 0.5), weight_decay=wd)
        for lr, wd in [(0.01, 0.0), (0.05, 1e-3)]
    ]
    swept = run_sweep(regression_task, [{}, {}], optimizers, seeds=1, steps=20, eval_every=10)
    alone = train(regression_task, optimizers[1], seeds=1, steps=20, eval_every=10)
    np.testing.assert_allclose(swept.curves.curve[1], alone.curve, rtol=1e-5, atol=1e-6)


def test_stack_rejects_different_structures():
    with pytest.raises(ValueError, match="must share one structure"):
        stack([gradtx.sgd(0.1), gradtx.sgd(0.1, momentum=0.9)])


def test_diverged_trials_rank_last(regression_task):
    optimizers = [gradtx.sgd(lr) for lr in (0.05, 1e6)]
    swept = run_sweep(
        regression_task,
        [{"learning_rate": 0.05}, {"learning_rate": 1e6}],
        optimizers,
        seeds=1,
        steps=20,
        eval_every=10,
    )
    assert not np.isfinite(swept.scores[1])
    assert swept.ranking(higher_is_better=False) == [0, 1]


def test_comparison_summary_counts_seeds_that_reach_the_target(regression_task):
    entries = run_comparison(
        regression_task,
        [("fast", gradtx.sgd(0.1, momentum=0.5)), ("slow", gradtx.sgd(1e-4))],
        seeds=2,
        steps=40,
        eval_every=10,
    )
    fast, slow = (summary(regression_task, entry) for entry in entries)
    assert fast["seeds_reached"] == 2 and fast["steps_to_target"] < 40
    assert slow["seeds_reached"] == 0 and slow["steps_to_target"] is None
    assert fast["score_mean"] < slow["score_mean"]


def test_leaf_paths_and_replacement():
    tx = gradtx.adamw(gradtx.exponential_decay(1e-3, 100, 0.9), weight_decay=1e-4)
    assert "learning_rate.init_value" in leaves.leaf_paths(tx)
    changed = leaves.set_leaf(tx, "learning_rate.init_value", 0.5)
    assert changed.learning_rate.init_value == 0.5
    assert leaves.get_leaf(changed, "b1") == 0.9
    with pytest.raises(ValueError, match="no numeric hyperparameter 'nesterov'"):
        leaves.get_leaf(tx, "nesterov")


def test_tuning_the_learning_rate_lowers_the_validation_loss(regression_task):
    result = tune_hyperparameter(
        regression_task,
        gradtx.sgd(1e-3),
        unroll=15,
        meta_steps=15,
        meta_learning_rate=0.3,
        seeds=2,
        eval_seeds=3,
    )
    assert result.learned_value > result.initial_value
    assert result.learned_validation_loss < 0.5 * result.initial_validation_loss
    assert len(result.history) == 16 and len(result.meta_losses) == 15


def test_hypergradient_matches_finite_differences(regression_task):
    from gradtx.experiments.meta import unrolled_validation_loss

    objective = unrolled_validation_loss(regression_task, unroll=5)
    key = jax.random.PRNGKey(0)

    def loss_of(lr):
        return objective(gradtx.sgd(lr, momentum=0.9), key)

    # float32 throughout: a step of 1e-3 keeps the rounding error of the
    # central difference well under the 1% tolerance.
    lr = 0.02
    analytic = jax.grad(loss_of)(lr)
    h = 1e-3
    numeric = (loss_of(lr + h) - loss_of(lr - h)) / (2 * h)
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-2)


def test_unit_interval_hyperparameters_are_tuned_in_logit_space(regression_task):
    result = tune_hyperparameter(
        regression_task,
        gradtx.sgd(0.01, momentum=0.5),
        path="momentum",
        unroll=10,
        meta_steps=8,
        meta_learning_rate=1.0,
        seeds=1,
        eval_seeds=1,
    )
    assert all(0 < value < 1 for value in result.history)
    assert result.learned_value > 0.5  # more momentum helps a too-small learning rate
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\) to be tuned, got 1.0"):
        tune_hyperparameter(regression_task, gradtx.sgd(0.01, momentum=1.0), path="momentum")
