"""Schedules: the values of Optax's schedule of the same name, and loud errors."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

# name: (gradtx schedule, Optax schedule, last step where anything changes).
SCHEDULES: dict[str, tuple[Any, Any, int]] = {
    "constant": (gradtx.constant_schedule(0.3), optax.constant_schedule(0.3), 1),
    "linear-decreasing": (
        gradtx.linear_schedule(1.0, 0.1, 50),
        optax.linear_schedule(1.0, 0.1, 50),
        50,
    ),
    "linear-increasing-transition_begin": (
        gradtx.linear_schedule(0.0, 2.0, transition_steps=30, transition_begin=10),
        optax.linear_schedule(0.0, 2.0, transition_steps=30, transition_begin=10),
        40,
    ),
    "cosine": (
        gradtx.cosine_decay_schedule(1.0, 50),
        optax.cosine_decay_schedule(1.0, 50),
        50,
    ),
    "cosine-alpha-exponent": (
        gradtx.cosine_decay_schedule(0.5, 40, alpha=0.1, exponent=2.0),
        optax.cosine_decay_schedule(0.5, 40, alpha=0.1, exponent=2.0),
        40,
    ),
    "warmup_cosine": (
        gradtx.warmup_cosine_decay_schedule(0.0, 1.0, 10, 60),
        optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 60),
        60,
    ),
    "warmup_cosine-end_value-exponent": (
        gradtx.warmup_cosine_decay_schedule(0.1, 0.8, 15, 50, end_value=0.01, exponent=1.5),
        optax.warmup_cosine_decay_schedule(0.1, 0.8, 15, 50, end_value=0.01, exponent=1.5),
        50,
    ),
    "warmup_cosine-no-warmup": (
        gradtx.warmup_cosine_decay_schedule(0.1, 0.5, 0, 40, end_value=0.05),
        optax.warmup_cosine_decay_schedule(0.1, 0.5, 0, 40, end_value=0.05),
        40,
    ),
    "warmup_cosine-zero-peak": (
        gradtx.warmup_cosine_decay_schedule(0.2, 0.0, 5, 20, end_value=0.1),
        optax.warmup_cosine_decay_schedule(0.2, 0.0, 5, 20, end_value=0.1),
        20,
    ),
    "piecewise_constant": (
        gradtx.piecewise_constant_schedule(1.0, {10: 0.5, 25: 0.1, 40: 3.0}),
        optax.piecewise_constant_schedule(1.0, {10: 0.5, 25: 0.1, 40: 3.0}),
        40,
    ),
    "piecewise_constant-unsorted": (
        gradtx.piecewise_constant_schedule(0.4, {30: 0.1, 5: 0.5}),
        optax.piecewise_constant_schedule(0.4, {30: 0.1, 5: 0.5}),
        30,
    ),
    "piecewise_constant-no-boundaries": (
        gradtx.piecewise_constant_schedule(0.2),
        optax.piecewise_constant_schedule(0.2),
        1,
    ),
    "join": (
        gradtx.join_schedules(
            [
                gradtx.linear_schedule(0.0, 1.0, 20),
                gradtx.cosine_decay_schedule(1.0, 30, alpha=0.2),
                gradtx.constant_schedule(0.05),
            ],
            [20, 50],
        ),
        optax.join_schedules(
            [
                optax.linear_schedule(0.0, 1.0, 20),
                optax.cosine_decay_schedule(1.0, 30, alpha=0.2),
                optax.constant_schedule(0.05),
            ],
            [20, 50],
        ),
        50,
    ),
    "join-nested": (
        gradtx.join_schedules(
            [
                gradtx.constant_schedule(1.0),
                gradtx.join_schedules(
                    [gradtx.exponential_decay(1.0, 5, 0.5), gradtx.constant_schedule(0.01)],
                    [15],
                ),
            ],
            [10],
        ),
        optax.join_schedules(
            [
                optax.constant_schedule(1.0),
                optax.join_schedules(
                    [optax.exponential_decay(1.0, 5, 0.5), optax.constant_schedule(0.01)],
                    [15],
                ),
            ],
            [10],
        ),
        25,
    ),
    "exponential_decay": (
        gradtx.exponential_decay(1.0, 10, 0.5),
        optax.exponential_decay(1.0, 10, 0.5),
        60,
    ),
    "exponential_decay-staircase": (
        gradtx.exponential_decay(1.0, 10, 0.5, staircase=True),
        optax.exponential_decay(1.0, 10, 0.5, staircase=True),
        60,
    ),
    "exponential_decay-transition_begin": (
        gradtx.exponential_decay(2.0, 7, 0.8, transition_begin=15),
        optax.exponential_decay(2.0, 7, 0.8, transition_begin=15),
        60,
    ),
    "exponential_decay-end_value-lower-bound": (
        gradtx.exponential_decay(1.0, 10, 0.5, end_value=0.2),
        optax.exponential_decay(1.0, 10, 0.5, end_value=0.2),
        30,
    ),
    "exponential_decay-growth-end_value-upper-bound": (
        gradtx.exponential_decay(0.1, 10, 1.5, end_value=0.5),
        optax.exponential_decay(0.1, 10, 1.5, end_value=0.5),
        40,
    ),
    "exponential_decay-growth-staircase-begin": (
        gradtx.exponential_decay(0.1, 10, 1.5, transition_begin=5, staircase=True, end_value=0.5),
        optax.exponential_decay(0.1, 10, 1.5, transition_begin=5, staircase=True, end_value=0.5),
        45,
    ),
}

# Optax computes with Python-float hyperparameters; traced gradtx schedules
# compute with float32 ones (e.g. ``1 - alpha``), a difference of a few float32
# ulps. Eager gradtx schedules run Optax's exact formulas.
RTOL, ATOL = 2e-6, 1e-7


# Every step from 0 to well beyond each schedule's end; one shape for all, so
# eager operations compile once.
COUNTS = np.arange(2 * max(horizon for *_, horizon in SCHEDULES.values()) + 20, dtype=np.int32)


def optax_values(schedule: Any, counts: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(schedule(jnp.asarray(counts)), np.float64), counts.shape)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_eager_values_match_optax(name):
    schedule, reference, horizon = SCHEDULES[name]
    counts = COUNTS
    expected = optax_values(reference, counts)
    actual = np.broadcast_to(np.asarray(schedule(jnp.asarray(counts)), np.float64), counts.shape)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)
    # Python integers, the way a user calls a schedule by hand.
    for count in (0, 1, horizon - 1, horizon, horizon + 1, 3 * horizon + 7):
        np.testing.assert_allclose(
            float(schedule(count)), float(reference(count)), rtol=RTOL, atol=ATOL
        )


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_jitted_values_match_optax_with_the_schedule_as_an_argument(name):
    schedule, reference, horizon = SCHEDULES[name]
    counts = COUNTS

    @jax.jit
    def evaluate(schedule: Any, counts: jax.Array) -> jax.Array:
        leaves = jax.tree.leaves(schedule)
        assert leaves, "a schedule's hyperparameters must be pytree leaves"
        assert all(isinstance(leaf, jax.core.Tracer) for leaf in leaves)
        return jnp.broadcast_to(schedule(counts), counts.shape)

    expected = optax_values(reference, counts)
    np.testing.assert_allclose(
        np.asarray(evaluate(schedule, jnp.asarray(counts)), np.float64),
        expected,
        rtol=RTOL,
        atol=ATOL,
    )
    # A step counter is an int32 scalar in an optimizer state.
    for count in (0, horizon, 2 * horizon + 3):
        value = evaluate(schedule, jnp.asarray(count, jnp.int32))
        assert value.shape == ()
        np.testing.assert_allclose(float(value), float(reference(count)), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_are_not_constant_where_optax_is_not(name):
    # Guards the comparisons above against vacuous agreement (e.g. both sides
    # returning init_value): each non-constant schedule really changes.
    _, reference, horizon = SCHEDULES[name]
    values = optax_values(reference, COUNTS)
    if name.startswith("constant") or name.endswith("no-boundaries"):
        assert np.all(values == values[0])
    else:
        assert np.ptp(values) > 1e-3


def test_replaced_hyperparameters_change_values_without_retracing():
    traces = []

    @jax.jit
    def evaluate(schedule: Any, count: jax.Array) -> jax.Array:
        traces.append(None)
        return schedule(count)

    first = gradtx.exponential_decay(1.0, 10, 0.5, end_value=0.1)
    second = gradtx.exponential_decay(3.0, 4, 0.9, end_value=0.5)
    count = jnp.asarray(12, jnp.int32)
    np.testing.assert_allclose(
        float(evaluate(first, count)),
        float(optax.exponential_decay(1.0, 10, 0.5, end_value=0.1)(12)),
        rtol=RTOL,
    )
    np.testing.assert_allclose(
        float(evaluate(second, count)),
        float(optax.exponential_decay(3.0, 4, 0.9, end_value=0.5)(12)),
        rtol=RTOL,
    )
    assert len(traces) == 1


def test_schedule_output_is_float32_for_int32_counts():
    for schedule, _, horizon in SCHEDULES.values():
        value = schedule(jnp.asarray(horizon // 2, jnp.int32))
        assert jnp.asarray(value).dtype == jnp.float32


INVALID = [
    (lambda: gradtx.linear_schedule(1.0, 0.0, transition_steps=0), "transition_steps", "0"),
    (lambda: gradtx.linear_schedule(1.0, 0.0, transition_steps=-5), "transition_steps", "-5"),
    (
        lambda: gradtx.linear_schedule(1.0, 0.0, transition_steps=10, transition_begin=-1),
        "transition_begin",
        "-1",
    ),
    (lambda: gradtx.exponential_decay(1.0, 0, 0.5), "transition_steps", "0"),
    (lambda: gradtx.exponential_decay(1.0, -3, 0.5), "transition_steps", "-3"),
    (lambda: gradtx.exponential_decay(1.0, 10, 0.0), "decay_rate", "0.0"),
    (lambda: gradtx.exponential_decay(1.0, 10, -0.5), "decay_rate", "-0.5"),
    (
        lambda: gradtx.exponential_decay(1.0, 10, 0.5, transition_begin=-2),
        "transition_begin",
        "-2",
    ),
    (lambda: gradtx.cosine_decay_schedule(1.0, 0), "decay_steps", "0"),
    (lambda: gradtx.cosine_decay_schedule(1.0, -10), "decay_steps", "-10"),
    (lambda: gradtx.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10), "warmup_steps", "-1"),
    (
        lambda: gradtx.piecewise_constant_schedule(1.0, {10: 0.5, 20: -0.1}),
        "boundaries_and_scales[20]",
        "-0.1",
    ),
]


@pytest.mark.parametrize(
    ("build", "argument", "value"),
    INVALID,
    ids=[f"{argument}={value}-{i}" for i, (_, argument, value) in enumerate(INVALID)],
)
def test_invalid_arguments_raise_naming_argument_and_value(build, argument, value):
    message = rf"^{re.escape(argument)} must be .*got {re.escape(value)}$"
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(("warmup_steps", "decay_steps"), [(10, 10), (10, 5), (0, 0)])
def test_warmup_cosine_needs_decay_steps_beyond_warmup(warmup_steps, decay_steps):
    expected = (
        f"decay_steps must be > warmup_steps.*got decay_steps={decay_steps}, "
        f"warmup_steps={warmup_steps}"
    )
    with pytest.raises(ValueError, match=expected):
        gradtx.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps, decay_steps)


def test_join_needs_one_boundary_fewer_than_schedules():
    schedules = [gradtx.constant_schedule(1.0), gradtx.constant_schedule(2.0)]
    message = "boundaries must have one entry fewer.*got 2 boundaries for 2 schedules"
    with pytest.raises(ValueError, match=message):
        gradtx.join_schedules(schedules, [5, 10])
    with pytest.raises(ValueError, match="got 0 boundaries for 2 schedules"):
        gradtx.join_schedules(schedules, [])


def test_join_boundaries_must_not_decrease_or_be_negative():
    schedules = [gradtx.constant_schedule(float(i)) for i in range(3)]
    with pytest.raises(ValueError, match=re.escape("boundaries must not decrease, got (20, 10)")):
        gradtx.join_schedules(schedules, [20, 10])
    with pytest.raises(ValueError, match=re.escape("boundaries[0] must be >= 0, got -5")):
        gradtx.join_schedules(schedules, [-5, 10])


def test_join_accepts_plain_callables_and_matches_optax():
    plain = lambda count: 0.5 * jnp.ones_like(count, jnp.float32)  # noqa: E731
    schedule = gradtx.join_schedules([gradtx.linear_schedule(1.0, 0.0, 10), plain], [10])
    reference = optax.join_schedules([optax.linear_schedule(1.0, 0.0, 10), plain], [10])
    counts = jnp.arange(30)
    np.testing.assert_allclose(schedule(counts), reference(counts), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        jax.jit(lambda s, c: s(c))(schedule, counts), reference(counts), rtol=RTOL, atol=ATOL
    )
