"""The schedules catalogue: Optax's values at many steps, the Flax and paper rules, errors.

Each schedule with an Optax counterpart is read eagerly and jitted (the schedule
a traced argument), at int32 steps: 0, both sides of every boundary, far beyond
and 2**31 - 1. The schedules Optax lacks are checked against float64 NumPy
versions of the rules they come from (Flax's examples, Hägele et al.'s code).
"""

import json
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

INT32_MAX = 2**31 - 1
FLOAT32_EPS = float(np.finfo(np.float32).eps)
# Traced gradtx schedules compute with float32 hyperparameters where Optax's
# Python floats fold in double precision (``1 - alpha``, ``peak / div_factor``):
# a few float32 ulps of the value, plus a few of the schedule's largest value
# where Optax's own formula subtracts nearly equal numbers (its one-cycle
# interpolation; see piecewise_interpolate_schedule).
RTOL = 2e-6
SCALE_ULPS = 8


def wcds(*args: Any, **kwargs: Any) -> dict[str, Any]:
    names = ("init_value", "peak_value", "warmup_steps", "decay_steps", "end_value", "exponent")
    return dict(zip(names, args), **kwargs)


SGDR_CYCLES = [wcds(0.0, 1.0, 10, 50), wcds(0.1, 0.5, 5, 30, end_value=0.01, exponent=2.0)]

# name: (gradtx schedule, Optax schedule, the steps where something changes).
CASES: dict[str, tuple[Any, Any, tuple[int, ...]]] = {
    "polynomial": (
        gradtx.polynomial_schedule(1.0, 0.01, 2, 100, 5),
        optax.polynomial_schedule(1.0, 0.01, 2, 100, 5),
        (5, 105),
    ),
    "polynomial-fractional-power": (
        gradtx.polynomial_schedule(0.0, 2.0, 0.5, 40),
        optax.polynomial_schedule(0.0, 2.0, 0.5, 40),
        (40,),
    ),
    "piecewise_interpolate-linear": (
        gradtx.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01}),
        optax.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01}),
        (4, 8),
    ),
    "piecewise_interpolate-cosine-unsorted-zero-boundary": (
        gradtx.piecewise_interpolate_schedule("cosine", 2.0, {40: 0.1, 10: 3.0, 0: 0.5}),
        optax.piecewise_interpolate_schedule("cosine", 2.0, {40: 0.1, 10: 3.0, 0: 0.5}),
        (10, 40),
    ),
    "piecewise_interpolate-no-boundaries": (
        gradtx.piecewise_interpolate_schedule("cosine", 0.3),
        optax.piecewise_interpolate_schedule("cosine", 0.3),
        (),
    ),
    "cosine_onecycle": (
        gradtx.cosine_onecycle_schedule(100, 1.0),
        optax.cosine_onecycle_schedule(100, 1.0),
        (30, 100),
    ),
    "cosine_onecycle-options": (
        gradtx.cosine_onecycle_schedule(1000, 0.1, 0.25, 10.0, 100.0),
        optax.cosine_onecycle_schedule(1000, 0.1, 0.25, 10.0, 100.0),
        (250, 1000),
    ),
    "linear_onecycle": (
        gradtx.linear_onecycle_schedule(100, 1.0),
        optax.linear_onecycle_schedule(100, 1.0),
        (30, 85, 100),
    ),
    "linear_onecycle-options": (
        gradtx.linear_onecycle_schedule(1000, 0.5, 0.2, 0.7, 10.0, 100.0),
        optax.linear_onecycle_schedule(1000, 0.5, 0.2, 0.7, 10.0, 100.0),
        (200, 700, 1000),
    ),
    "sgdr": (
        gradtx.sgdr_schedule(SGDR_CYCLES),
        optax.sgdr_schedule(SGDR_CYCLES),
        (10, 50, 55, 80),
    ),
    "sgdr-three-cycles": (
        gradtx.sgdr_schedule([wcds(0.0, 1.0, 5, 20)] * 3),
        optax.sgdr_schedule([wcds(0.0, 1.0, 5, 20)] * 3),
        (5, 20, 25, 40, 45, 60),
    ),
    "warmup_constant": (
        gradtx.warmup_constant_schedule(0.1, 1.0, 20),
        optax.warmup_constant_schedule(0.1, 1.0, 20),
        (20,),
    ),
    "warmup_exponential_decay": (
        gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 10, 7, 0.8),
        optax.warmup_exponential_decay_schedule(0.0, 1.0, 10, 7, 0.8),
        (10, 17, 24),
    ),
    "warmup_exponential_decay-staircase-begin-end_value": (
        gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 10, 7, 0.8, 5, True, 0.1),
        optax.warmup_exponential_decay_schedule(0.0, 1.0, 10, 7, 0.8, 5, True, 0.1),
        (10, 15, 22, 29),
    ),
    "warmup_exponential_decay-no-warmup-growth": (
        gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 0, 7, 1.2, end_value=3.0),
        optax.warmup_exponential_decay_schedule(0.0, 1.0, 0, 7, 1.2, end_value=3.0),
        (7, 42),
    ),
}


def steps_around(boundaries: tuple[int, ...]) -> np.ndarray:
    steps = {0, 1, 2, 10**6, INT32_MAX - 1, INT32_MAX}
    for boundary in boundaries:
        steps.update(b for b in (boundary - 1, boundary, boundary + 1) if b >= 0)
    return np.asarray(sorted(steps), np.int32)


def optax_values(schedule: Any, steps: np.ndarray) -> np.ndarray:
    # Step by step: Optax's piecewise_interpolate_schedule takes scalar counts only.
    return np.asarray([float(schedule(jnp.asarray(step))) for step in steps])


@jax.jit
def jitted_values(schedule: Any, steps: jax.Array) -> jax.Array:
    return jax.vmap(schedule)(steps)


def assert_matches(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    atol = SCALE_ULPS * FLOAT32_EPS * float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=atol, err_msg=what)


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_match_optax_eagerly_and_jitted(name):
    schedule, reference, boundaries = CASES[name]
    steps = steps_around(boundaries)
    expected = optax_values(reference, steps)
    assert np.all(np.isfinite(expected))
    eager = np.asarray([float(schedule(jnp.asarray(step))) for step in steps])
    assert_matches(eager, expected, "eager, int32 steps")
    python_steps = np.asarray([float(schedule(int(step))) for step in steps])
    assert_matches(python_steps, expected, "eager, Python int steps")
    assert jax.tree.leaves(schedule), "a schedule's numbers must be pytree leaves"
    jitted = np.asarray(jitted_values(schedule, jnp.asarray(steps)), np.float64)
    assert_matches(jitted, expected, "jitted, the schedule a traced argument")
    value = schedule(jnp.asarray(steps[len(steps) // 2]))
    assert value.shape == () and value.dtype == jnp.float32
    if boundaries:  # guards against vacuous agreement
        assert np.ptp(expected) > 1e-3


# ---------------------------------------------------------------- float64 references


def interpolated_exactly(kind: str, init: float, pairs: dict[int, float], step: int) -> float:
    """Optax's piecewise interpolation, in float64."""
    bounds = [0] + sorted(pairs)
    values = np.cumprod([init] + [pairs[b] for b in sorted(pairs)])
    for i in range(len(bounds) - 1):
        lower, upper = bounds[i], bounds[i + 1]
        if lower <= step < upper:
            p = (step - lower) / max(upper - lower, 1)
            start, end = values[i], values[i + 1]
            if kind == "linear":
                return (end - start) * p + start
            return end + (start - end) / 2 * (math.cos(math.pi * p) + 1)
    return values[-1] if step >= bounds[-1] else 0.0


@pytest.mark.parametrize(
    "schedule",
    [
        gradtx.cosine_onecycle_schedule(100, 1.0),
        gradtx.linear_onecycle_schedule(1000, 0.5, 0.2, 0.7, 10.0, 100.0),
        gradtx.piecewise_interpolate_schedule("cosine", 2.0, {40: 0.1, 10: 3.0, 0: 0.5}),
    ],
    ids=["cosine_onecycle", "linear_onecycle", "piecewise_interpolate"],
)
def test_interpolation_is_accurate_to_a_few_ulps_of_each_value(schedule):
    # Where Optax's float32 formula loses digits (near a phase's far end), gradtx
    # stays within a few ulps of the exact value of the same rule.
    if isinstance(schedule, gradtx.piecewise_interpolate_schedule):
        pieces = schedule
    else:
        pieces = schedule.interpolated()
    kind, init = pieces.interpolate_type, float(pieces.init_value)
    table = dict(pieces.boundaries_and_scales)
    steps = np.arange(0, max(table) + 3, dtype=np.int32)
    exact = np.asarray([interpolated_exactly(kind, init, table, int(t)) for t in steps])
    jitted = np.asarray(jitted_values(schedule, jnp.asarray(steps)), np.float64)
    np.testing.assert_allclose(jitted, exact, rtol=8 * FLOAT32_EPS, atol=1e-12)


def flax_rsqrt_schedule(init_value: float, shift: int) -> Any:
    """Flax's examples' ``rsqrt_schedule`` (lm1b, wmt, gemma train.py)."""
    return lambda count: init_value * (count + shift) ** -0.5 * shift**0.5


def flax_create_learning_rate_schedule(learning_rate: float, warmup_steps: int) -> Any:
    """Flax's lm1b / wmt / gemma ``create_learning_rate_schedule``, as written there."""
    return optax.join_schedules(
        [
            optax.linear_schedule(0, learning_rate, warmup_steps),
            flax_rsqrt_schedule(learning_rate, warmup_steps),
        ],
        boundaries=[warmup_steps],
    )


def flax_factors_in_numpy(base: float, warmup: int, step: np.ndarray) -> np.ndarray:
    """``'constant * linear_warmup * rsqrt_decay'`` of Flax's nlp_seq example, in float64."""
    return base * np.minimum(1.0, step / warmup) / np.sqrt(np.maximum(step, warmup))


def flax_joined_in_numpy(peak: float, warmup: int, shift: int, step: np.ndarray) -> np.ndarray:
    """The joined warm-up and rsqrt of Flax's examples (any shift), in float64."""
    warming = peak * step / max(warmup, 1)
    decaying = peak * np.maximum(step - warmup + shift, 1) ** -0.5 * shift**0.5
    return np.where(step < warmup, warming, decaying)


RSQRT_STEPS = np.asarray(
    sorted({0, 1, 7, 99, 100, 101, 400, 4000, 3999, 4001, 10**6, INT32_MAX}), np.int32
)


def test_warmup_rsqrt_is_flax_examples_schedule():
    steps = RSQRT_STEPS
    for peak, warmup in [(0.0016, 4000), (2.0, 100)]:
        schedule = gradtx.warmup_rsqrt_schedule(peak, warmup)
        exact = flax_joined_in_numpy(peak, warmup, warmup, steps.astype(np.float64))
        jitted = np.asarray(jitted_values(schedule, jnp.asarray(steps)), np.float64)
        eager = np.asarray([float(schedule(jnp.asarray(t))) for t in steps])
        for values in (jitted, eager):
            np.testing.assert_allclose(values, exact, rtol=4 * FLOAT32_EPS)
        # The Flax code itself, in JAX (it overflows int32 past 2**31 - 1 - warmup).
        flax = flax_create_learning_rate_schedule(peak, warmup)
        inside = steps[steps < 10**7]
        np.testing.assert_allclose(
            jitted[: len(inside)], optax_values(flax, inside), rtol=RTOL, atol=1e-9
        )


def test_warmup_rsqrt_is_flax_nlp_seq_factor_schedule():
    base, warmup = 0.05, 8000
    steps = np.asarray([0, 1, 4000, 7999, 8000, 8001, 20000, 10**6, INT32_MAX], np.int32)
    schedule = gradtx.warmup_rsqrt_schedule(base / math.sqrt(warmup), warmup)
    exact = flax_factors_in_numpy(base, warmup, steps.astype(np.float64))
    jitted = np.asarray(jitted_values(schedule, jnp.asarray(steps)), np.float64)
    np.testing.assert_allclose(jitted, exact, rtol=4 * FLOAT32_EPS)


def test_warmup_rsqrt_shift_and_init_value():
    steps = RSQRT_STEPS
    schedule = gradtx.warmup_rsqrt_schedule(1.0, 100, init_value=0.5, shift=1000)
    exact = flax_joined_in_numpy(1.0, 100, 1000, steps.astype(np.float64))
    exact = np.where(steps < 100, 0.5 + 0.5 * steps / 100, exact)
    jitted = np.asarray(jitted_values(schedule, jnp.asarray(steps)), np.float64)
    np.testing.assert_allclose(jitted, exact, rtol=4 * FLOAT32_EPS)
    no_warmup = gradtx.warmup_rsqrt_schedule(1.0, 0, shift=10)
    np.testing.assert_allclose(float(no_warmup(0)), 1.0)
    np.testing.assert_allclose(float(no_warmup(30)), 0.5, rtol=4 * FLOAT32_EPS)


def paper_wsd_in_numpy(
    n_iterations: int,
    final_lr_factor: float,
    n_warmup: int,
    init_div_factor: float,
    fract_decay: float,
    decay_type: str,
    step: int,
) -> float:
    """Hägele et al.'s ``wsd_schedule`` (epfml/schedules-and-scaling, src/optim/utils.py)."""
    n_anneal_steps = int(fract_decay * n_iterations)
    n_hold = n_iterations - n_anneal_steps
    if step < n_warmup:
        return (step / n_warmup) + (1 - step / n_warmup) / init_div_factor
    if step < n_hold:
        return 1.0
    if step < n_iterations:
        x = (step - n_hold) / n_anneal_steps
        shape = {
            "linear": 1 - x,
            "cosine": (1 + math.cos(math.pi * x)) * 0.5,
            "sqrt": 1 - math.sqrt(x),
        }[decay_type]
        return final_lr_factor + (1 - final_lr_factor) * shape
    return final_lr_factor


@pytest.mark.parametrize(
    ("shape", "paper_shape"), [("linear", "linear"), ("cosine", "cosine"), ("1-sqrt", "sqrt")]
)
def test_wsd_is_the_papers_schedule(shape, paper_shape):
    peak, total, warmup, fraction = 3e-3, 1000, 50, 0.2
    final, div = 0.1, 100.0
    by_fraction = gradtx.wsd_schedule(
        peak / div, peak, warmup, total, final * peak, decay_fraction=fraction, decay_shape=shape
    )
    by_steps = gradtx.wsd_schedule(
        peak / div, peak, warmup, total, final * peak, decay_steps=200, decay_shape=shape
    )
    steps = steps_around((warmup, 800, 900, total))
    exact = np.asarray(
        [
            peak * paper_wsd_in_numpy(total, final, warmup, div, fraction, paper_shape, int(t))
            for t in steps
        ]
    )
    for schedule in (by_fraction, by_steps):
        jitted = np.asarray(jitted_values(schedule, jnp.asarray(steps)), np.float64)
        eager = np.asarray([float(schedule(jnp.asarray(t))) for t in steps])
        for values in (jitted, eager):
            np.testing.assert_allclose(values, exact, rtol=8 * FLOAT32_EPS, atol=1e-12)


def test_wsd_corners():
    # No decay: the value holds until total_steps, then is end_value.
    flat = gradtx.wsd_schedule(0.0, 1.0, 0, 100, 0.25, decay_fraction=0.0)
    assert [float(flat(t)) for t in (0, 99, 100, INT32_MAX)] == [1.0, 1.0, 0.25, 0.25]
    # All decay after the warm-up.
    steep = gradtx.wsd_schedule(0.0, 1.0, 10, 20, decay_steps=10)
    assert [float(steep(t)) for t in (5, 10, 15, 20)] == [0.5, 1.0, 0.5, 0.0]
    # The decay's length is rounded (int() would make 0.29 * 100 = 28.999... 28).
    rounded = gradtx.wsd_schedule(0.0, 1.0, 0, 100, decay_fraction=0.29)
    assert float(rounded(71)) == 1.0 and float(rounded(72)) < 1.0


# ---------------------------------------------------------------- values, configs, checkpoints


def test_sgdr_takes_optax_dicts_or_schedules_and_is_equal_either_way():
    from_dicts = gradtx.sgdr_schedule(SGDR_CYCLES)
    from_values = gradtx.sgdr_schedule(
        tuple(gradtx.warmup_cosine_decay_schedule(**cycle) for cycle in SGDR_CYCLES)
    )
    assert from_dicts == from_values and hash(from_dicts) == hash(from_values)
    assert all(isinstance(c, gradtx.warmup_cosine_decay_schedule) for c in from_dicts.cosine_kwargs)
    assert repr(from_dicts).startswith(
        "sgdr_schedule(cosine_kwargs=(warmup_cosine_decay_schedule(init_value=0.0"
    )


JOINED = gradtx.join_schedules(
    [
        gradtx.wsd_schedule(0.0, 1e-3, 10, 100, decay_shape="1-sqrt"),
        gradtx.warmup_rsqrt_schedule(1e-3, 10, shift=50),
        gradtx.sgdr_schedule(SGDR_CYCLES),
        gradtx.cosine_onecycle_schedule(100, 1e-3),
        gradtx.piecewise_interpolate_schedule("linear", 1e-3, {10: 0.5}),
        gradtx.warmup_exponential_decay_schedule(0.0, 1e-3, 5, 10, 0.5, staircase=True),
    ],
    [100, 200, 300, 400, 500],
)


def test_joined_new_schedules_round_trip_through_json_configs():
    config = gradtx.to_config(JOINED)
    rebuilt = gradtx.from_config(json.loads(json.dumps(config)))
    assert rebuilt == JOINED
    assert repr(rebuilt) == repr(JOINED)
    steps = jnp.arange(0, 700, 7, dtype=jnp.int32)
    np.testing.assert_array_equal(jitted_values(rebuilt, steps), jitted_values(JOINED, steps))
    cycles = config["schedules"][2]["cosine_kwargs"]
    assert [cycle["name"] for cycle in cycles] == ["warmup_cosine_decay_schedule"] * 2


def test_an_optimizer_with_joined_new_schedules_round_trips_through_a_checkpoint(tmp_path):
    tx = gradtx.chain(gradtx.adamw(JOINED, weight_decay=0.01), gradtx.reduce_on_plateau())
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for loss in (3.0, 2.0):
        updates, state = tx.update(grads, state, params, value=loss)
        params = gradtx.apply_updates(params, updates)
    path = gradtx.save_checkpoint(tmp_path / "run.ckpt", params, state, tx, step=2)
    rebuilt = gradtx.from_config(gradtx.to_config(tx))
    restored = gradtx.restore_checkpoint(path, tx=rebuilt, params_like=params)
    assert restored.step == 2 and rebuilt == tx
    for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_onecycle_boundaries_are_static_and_the_rest_traced():
    schedule = gradtx.linear_onecycle_schedule(100, 1.0)
    leaves = jax.tree.leaves(schedule)
    assert leaves == [1.0, 25.0, 1e4]
    assert gradtx.from_config(gradtx.to_config(schedule)) == schedule


# ---------------------------------------------------------------- errors

INVALID = [
    (lambda: gradtx.polynomial_schedule(1.0, 0.0, 2, 0), "transition_steps", "0"),
    (lambda: gradtx.polynomial_schedule(1.0, 0.0, 2, 10, -1), "transition_begin", "-1"),
    (
        lambda: gradtx.piecewise_interpolate_schedule("linear", 1.0, {5: -0.5}),
        "boundaries_and_scales[5]",
        "-0.5",
    ),
    (lambda: gradtx.cosine_onecycle_schedule(0, 1.0), "transition_steps", "0"),
    (lambda: gradtx.cosine_onecycle_schedule(100, 1.0, pct_start=1.5), "pct_start", "1.5"),
    (lambda: gradtx.cosine_onecycle_schedule(100, 1.0, div_factor=0.0), "div_factor", "0.0"),
    (lambda: gradtx.linear_onecycle_schedule(-3, 1.0), "transition_steps", "-3"),
    (
        lambda: gradtx.linear_onecycle_schedule(100, 1.0, final_div_factor=-1.0),
        "final_div_factor",
        "-1.0",
    ),
    (lambda: gradtx.warmup_constant_schedule(0.0, 1.0, 0), "warmup_steps", "0"),
    (lambda: gradtx.warmup_exponential_decay_schedule(0.0, 1.0, -1, 10, 0.5), "warmup_steps", "-1"),
    (lambda: gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 5, 10, 0.0), "decay_rate", "0.0"),
    (
        lambda: gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 5, 0, 0.5),
        "transition_steps",
        "0",
    ),
    (lambda: gradtx.warmup_rsqrt_schedule(1.0, 0), "warmup_steps", "0"),
    (lambda: gradtx.warmup_rsqrt_schedule(1.0, 10, shift=0), "shift", "0"),
    (lambda: gradtx.warmup_rsqrt_schedule(1.0, -1, shift=10), "warmup_steps", "-1"),
    (lambda: gradtx.wsd_schedule(0.0, 1.0, -1, 100), "warmup_steps", "-1"),
    (lambda: gradtx.wsd_schedule(0.0, 1.0, 0, 0), "total_steps", "0"),
    (lambda: gradtx.wsd_schedule(0.0, 1.0, 0, 100, decay_fraction=1.5), "decay_fraction", "1.5"),
    (lambda: gradtx.wsd_schedule(0.0, 1.0, 0, 100, decay_steps=-2), "decay_steps", "-2"),
]


@pytest.mark.parametrize(
    ("build", "argument", "value"),
    INVALID,
    ids=[f"{argument}={value}-{i}" for i, (_, argument, value) in enumerate(INVALID)],
)
def test_invalid_arguments_raise_naming_argument_and_value(build, argument, value):
    with pytest.raises(
        ValueError, match=rf"^{re.escape(argument)} must be .*got {re.escape(value)}$"
    ):
        build()


def test_invalid_structure_is_refused_with_a_message():
    with pytest.raises(
        ValueError, match="interpolate_type must be 'linear' or 'cosine', got 'cubic'"
    ):
        gradtx.piecewise_interpolate_schedule("cubic", 1.0)
    with pytest.raises(ValueError, match="keys must be integer steps, got 2.5"):
        gradtx.piecewise_interpolate_schedule("linear", 1.0, {2.5: 0.1})
    with pytest.raises(ValueError, match=r"pct_final must be >= pct_start, got pct_final=0.2"):
        gradtx.linear_onecycle_schedule(100, 1.0, pct_start=0.5, pct_final=0.2)
    with pytest.raises(TypeError, match="transition_steps must be an integer, got 100.0"):
        gradtx.cosine_onecycle_schedule(100.0, 1.0)
    with pytest.raises(ValueError, match="at least one cycle"):
        gradtx.sgdr_schedule([])
    with pytest.raises(TypeError, match=r"cosine_kwargs\[1\]: .*'decay'"):
        gradtx.sgdr_schedule([wcds(0.0, 1.0, 5, 20), {"init_value": 0.0, "decay": 3}])
    with pytest.raises(ValueError, match=r"cosine_kwargs\[0\]: decay_steps must be > warmup_steps"):
        gradtx.sgdr_schedule([wcds(0.0, 1.0, 20, 20)])
    with pytest.raises(TypeError, match=r"cosine_kwargs\[0\] must be a warmup_cosine_decay_sch"):
        gradtx.sgdr_schedule([gradtx.constant_schedule(1.0)])
    with pytest.raises(ValueError, match="decay_shape must be 'linear', 'cosine' or '1-sqrt'"):
        gradtx.wsd_schedule(0.0, 1.0, 0, 100, decay_shape="sqrt")
    overlap = (
        r"warmup_steps plus the decay's length must be <= total_steps.*length 30, total_steps=100"
    )
    with pytest.raises(ValueError, match=overlap):
        gradtx.wsd_schedule(0.0, 1.0, 80, 100, decay_fraction=0.3)
