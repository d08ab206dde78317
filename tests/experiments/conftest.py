"""A tiny user-defined task: the tests also show that tasks are pluggable."""

import jax
import jax.numpy as jnp
import pytest

from gradtx.tasks.base import Task


def make_regression_task() -> Task:
    key_x, key_w, key_v = jax.random.split(jax.random.PRNGKey(42), 3)
    x = jax.random.normal(key_x, (128, 6))
    true_w = jax.random.normal(key_w, (6,))
    y = x @ true_w
    x_val = jax.random.normal(key_v, (64, 6))
    y_val = x_val @ true_w

    def loss(params, batch, key):
        del key
        xb, yb = batch
        value = jnp.mean((xb @ params["w"] - yb) ** 2)
        return value, value

    def sample_batch(key):
        index = jax.random.randint(key, (32,), 0, 128)
        return x[index], y[index]

    def validation_loss(params):
        return jnp.mean((x_val @ params["w"] - y_val) ** 2)

    return Task(
        name="regression",
        description="least squares",
        init_params=lambda key: {"w": jax.random.normal(key, (6,)) * 0.1},
        sample_batch=sample_batch,
        loss=loss,
        evaluate=lambda params: {
            "test_loss": validation_loss(params),
            "train_loss": jnp.mean((x @ params["w"] - y) ** 2),
        },
        score_name="test_loss",
        higher_is_better=False,
        curve_name="train loss",
        curve_target=0.1,
        curve_higher_is_better=False,
        steps=40,
        eval_every=10,
        train_score_name="train_loss",
        validation_loss=validation_loss,
    )


@pytest.fixture(scope="session")
def regression_task() -> Task:
    return make_regression_task()
