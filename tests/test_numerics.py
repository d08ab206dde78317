"""Numerics: saturating counters, storage dtypes, every float and complex dtype.

The update rules are also checked against small NumPy implementations written
from the papers (Adam, AdamW, NAdam, heavy-ball and Nesterov momentum), in
float64/complex128, independently of both gradtx and Optax.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import numerics

INT32_MAX = np.iinfo(np.int32).max
SHAPES = {"w": (3, 4), "b": (4,), "s": ()}


def random_tree(seed: int, dtype: Any, leading: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """Standard-normal arrays shaped like SHAPES (complex: both parts normal)."""
    rng = np.random.default_rng(seed)
    tree = {}
    for name, shape in SHAPES.items():
        values = rng.standard_normal(leading + shape)
        if np.issubdtype(np.dtype(dtype), np.complexfloating):
            values = values + 1j * rng.standard_normal(leading + shape)
        tree[name] = values.astype(dtype)
    return tree


def run(tx: Any, params: Any, gradients: Any, steps: int) -> tuple[list[Any], list[Any], Any]:
    """``steps`` jitted updates; returns the updates and params of every step."""

    @jax.jit
    def step(params: Any, state: Any, grads: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return updates, gradtx.apply_updates(params, updates), state

    state = tx.init(params)
    all_updates, all_params = [], []
    for index in range(steps):
        grads = {name: g[index] for name, g in gradients.items()}
        updates, params, state = step(params, state, grads)
        all_updates.append(updates)
        all_params.append(params)
    return all_updates, all_params, state


def run_pair(
    tx: Any, optax_tx: Any, params: Any, gradients: Any, steps: int
) -> tuple[list[Any], list[Any]]:
    """Like ``run`` for a gradtx and an Optax optimizer, compiled together."""

    @jax.jit
    def step(carry: Any, grads: Any) -> Any:
        params, state, optax_params, optax_state = carry
        updates, state = tx.update(grads, state, params)
        optax_updates, optax_state = optax_tx.update(grads, optax_state, optax_params)
        carry = (
            gradtx.apply_updates(params, updates),
            state,
            optax.apply_updates(optax_params, optax_updates),
            optax_state,
        )
        return carry, (updates, optax_updates)

    carry = (params, tx.init(params), params, optax_tx.init(params))
    ours, theirs = [], []
    for index in range(steps):
        carry, (updates, optax_updates) = step(
            carry, {name: g[index] for name, g in gradients.items()}
        )
        ours.append(updates)
        theirs.append(optax_updates)
    return ours, theirs


# --- NumPy implementations of the papers' rules, one array at a time. ---------


def numpy_adam(
    params: np.ndarray,
    gradients: np.ndarray,
    *,
    learning_rate: float,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Adam (Kingma & Ba, 2014, Algorithm 1), in float64 or complex128.

    With ``weight_decay``, AdamW (Loshchilov & Hutter, 2019, Algorithm 2, with
    the decay scaled by the learning rate as in PyTorch and Optax); with
    ``nesterov``, NAdam (Dozat, 2016) without the extra ``b2`` factor.
    For complex numbers the second moment averages ``|g|**2``.

    Returns:
      The updates and params of every step, stacked on a leading axis.
    """
    wide = np.complex128 if np.iscomplexobj(params) else np.float64
    theta = params.astype(wide)
    m = np.zeros_like(theta)
    v = np.zeros(theta.shape, np.float64)
    updates, trajectory = [], []
    for t, g in enumerate(gradients.astype(wide), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * np.abs(g) ** 2
        if nesterov:
            m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
        else:
            m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        update = -learning_rate * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * theta)
        theta = theta + update
        updates.append(update)
        trajectory.append(theta)
    return np.stack(updates), np.stack(trajectory)


def numpy_sgd(
    params: np.ndarray,
    gradients: np.ndarray,
    *,
    learning_rate: float,
    momentum: float | None = None,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """SGD with heavy-ball momentum (Polyak, 1964) or Nesterov's (Sutskever et
    al., 2013, in PyTorch's form), and an L2 term added to the gradient.

    Returns:
      The updates and params of every step, stacked on a leading axis.
    """
    wide = np.complex128 if np.iscomplexobj(params) else np.float64
    theta = params.astype(wide)
    velocity = np.zeros_like(theta)
    updates, trajectory = [], []
    for g in gradients.astype(wide):
        g = g + weight_decay * theta
        if momentum is None:
            direction = g
        else:
            velocity = momentum * velocity + g
            direction = g + momentum * velocity if nesterov else velocity
        update = -learning_rate * direction
        theta = theta + update
        updates.append(update)
        trajectory.append(theta)
    return np.stack(updates), np.stack(trajectory)


def reference(rule: Any, params: Any, gradients: Any, **hyperparameters: Any) -> tuple[Any, Any]:
    """Applies a NumPy rule leaf by leaf; returns (updates, params) trees."""
    results = {name: rule(params[name], gradients[name], **hyperparameters) for name in params}
    return {n: r[0] for n, r in results.items()}, {n: r[1] for n, r in results.items()}


def stacked(trees: list[Any]) -> Any:
    return {name: np.stack([np.asarray(tree[name]) for tree in trees]) for name in trees[0]}


def assert_close_to_reference(actual: Any, expected: Any, *, rtol: float, atol: float) -> None:
    for name in expected:
        wide = np.complex128 if np.iscomplexobj(expected[name]) else np.float64
        np.testing.assert_allclose(
            np.asarray(actual[name]).astype(wide),
            expected[name],
            rtol=rtol,
            atol=atol,
            err_msg=name,
        )


# --- The rules against the papers, float32, 100 steps. -----------------------

PAPER_CASES = {
    "adam": (gradtx.adam(1e-2), numpy_adam, {"learning_rate": 1e-2}),
    "adam-b1-b2": (
        gradtx.adam(3e-3, b1=0.8, b2=0.99, eps=1e-6),
        numpy_adam,
        {"learning_rate": 3e-3, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
    ),
    "adamw": (
        gradtx.adamw(1e-2, weight_decay=0.1),
        numpy_adam,
        {"learning_rate": 1e-2, "weight_decay": 0.1},
    ),
    "nadam": (gradtx.nadam(1e-2), numpy_adam, {"learning_rate": 1e-2, "nesterov": True}),
    "sgd": (gradtx.sgd(0.05), numpy_sgd, {"learning_rate": 0.05}),
    "sgd-momentum": (
        gradtx.sgd(0.05, momentum=0.9),
        numpy_sgd,
        {"learning_rate": 0.05, "momentum": 0.9},
    ),
    "sgd-nesterov": (
        gradtx.sgd(0.05, momentum=0.9, nesterov=True),
        numpy_sgd,
        {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    ),
    "sgd-momentum-weight_decay": (
        gradtx.sgd(0.05, momentum=0.9, weight_decay=0.01),
        numpy_sgd,
        {"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    ),
}


@pytest.mark.parametrize("name", sorted(PAPER_CASES))
def test_rules_match_numpy_implementations_of_the_papers(name):
    tx, rule, hyperparameters = PAPER_CASES[name]
    steps = 100
    params = random_tree(0, np.float32)
    gradients = random_tree(1, np.float32, (steps,))
    updates, trajectory, _ = run(tx, params, gradients, steps)
    expected_updates, expected_params = reference(rule, params, gradients, **hyperparameters)
    # float32 against float64: a few float32 roundings per step. The update's
    # scale is the learning rate, so the absolute tolerance is relative to it;
    # params are sums of 100 updates and get 100 times that.
    scale = hyperparameters["learning_rate"]
    assert_close_to_reference(stacked(updates), expected_updates, rtol=1e-5, atol=1e-5 * scale)
    assert_close_to_reference(stacked(trajectory), expected_params, rtol=1e-5, atol=1e-3 * scale)


# --- Every dtype: float32, bfloat16, float16, float64, complex64. ------------

OPTIMIZERS = {
    "adam": (
        lambda: gradtx.adam(1e-2),
        lambda: optax.adam(1e-2),
        numpy_adam,
        {"learning_rate": 1e-2},
    ),
    "adamw": (
        lambda: gradtx.adamw(1e-2, weight_decay=0.1),
        lambda: optax.adamw(1e-2, weight_decay=0.1),
        numpy_adam,
        {"learning_rate": 1e-2, "weight_decay": 0.1},
    ),
    "sgd": (
        lambda: gradtx.sgd(0.05, momentum=0.9, nesterov=True),
        lambda: optax.sgd(0.05, momentum=0.9, nesterov=True),
        numpy_sgd,
        {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    ),
}

# (rtol, atol in units of the learning rate) against the float64 NumPy rule.
# Low-precision moments are rounded at every step (computed in float32, stored
# in the params' dtype), so the bound grows with
# the dtype's unit roundoff: float16 2**-11, bfloat16 2**-8, over 20 steps of
# averaging. float32 and complex64 are held to a few float32 roundings and
# float64 checks the rule itself.
DTYPE_TOLERANCE = {
    "float32": (1e-5, 1e-5),
    "complex64": (1e-5, 1e-5),
    "float64": (1e-12, 1e-12),
    "float16": (1e-2, 2e-2),
    "bfloat16": (5e-2, 1e-1),
}


def _check_dtype(name: str, dtype_name: str) -> None:
    make_gradtx, make_optax, rule, hyperparameters = OPTIMIZERS[name]
    dtype = jnp.dtype(dtype_name)
    steps = 20
    params = jax.tree.map(jnp.asarray, random_tree(2, dtype))
    gradients = random_tree(3, dtype, (steps,))
    tx = make_gradtx()
    state = tx.init(params)
    updates, optax_updates = run_pair(tx, make_optax(), params, gradients, steps)

    for tree in updates:
        for leaf in jax.tree.leaves(tree):
            assert leaf.dtype == dtype
            assert np.all(np.isfinite(np.asarray(leaf)))
    # Kept in the params' dtype, except squared-gradient averages of float16
    # params, kept in float32 (float16 flushes them to zero).
    stored = {dtype, jnp.dtype(jnp.float32)} if dtype_name == "float16" else {dtype}
    for leaf in jax.tree.leaves(state):
        if leaf.dtype != jnp.int32:
            assert leaf.dtype in stored
    if dtype_name == "float16" and hasattr(state[0], "nu"):
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state[0].nu))
    new_params = gradtx.apply_updates(params, updates[0])
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(new_params))

    # The same rule as NumPy's, to the dtype's precision.
    expected_updates, _ = reference(
        rule, {n: np.asarray(p) for n, p in params.items()}, gradients, **hyperparameters
    )
    rtol, atol = DTYPE_TOLERANCE[dtype_name]
    assert_close_to_reference(
        stacked(updates),
        expected_updates,
        rtol=rtol,
        atol=atol * hyperparameters["learning_rate"],
    )

    # And bit for bit (up to fusion) Optax's updates in that dtype. Not in
    # bfloat16 or float16: there gradtx updates moments in float32, where Optax
    # rounds the decays themselves (0.9 -> 0.8984375), so the float64 rule above
    # is the reference (tests/test_optax_parity.py compares with an Optax given
    # float32 decays).
    if dtype_name in ("bfloat16", "float16"):
        return
    for ours, theirs in zip(updates, optax_updates):
        for name_ in ours:
            assert theirs[name_].dtype == dtype
            np.testing.assert_allclose(
                np.asarray(ours[name_]).astype(np.complex128),
                np.asarray(theirs[name_]).astype(np.complex128),
                rtol=4 * float(jnp.finfo(dtype).eps),
                atol=4 * float(jnp.finfo(dtype).eps) * hyperparameters["learning_rate"],
            )


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16", "float16", "complex64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_dtype_works_and_follows_the_rule(name, dtype_name):
    _check_dtype(name, dtype_name)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float64_under_enable_x64(name):
    assert not jax.config.jax_enable_x64
    with jax.enable_x64(True):
        _check_dtype(name, "float64")
    # x64 does not leak into the rest of the test session.
    assert not jax.config.jax_enable_x64
    assert jnp.asarray(1.0).dtype == jnp.float32


def test_counters_stay_int32_under_enable_x64():
    with jax.enable_x64(True):
        tx = gradtx.adamw(gradtx.linear_schedule(1e-2, 0.0, 10), weight_decay=1e-2)
        params = {"w": jnp.ones(3, jnp.float64)}
        state = tx.init(params)
        for _ in range(2):
            _, state = jax.jit(tx.update)(params, state, params)
        counts = [s.count for s in state if "count" in s._fields]
        assert len(counts) == 2  # Adam's and the schedule's; a constant decay keeps none
        assert all(c.dtype == jnp.int32 and int(c) == 2 for c in counts)
    assert not jax.config.jax_enable_x64


def test_complex_adam_second_moment_is_the_squared_magnitude():
    tx = gradtx.scale_by_adam(b1=0.8, b2=0.9)
    g = jnp.array([3 + 4j, -1j, 2.0, 0.5 - 0.5j], jnp.complex64)
    _, state = tx.update(g, tx.init(g))
    # nu = (1 - b2) |g|^2: real and non-negative, not (1 - b2) g^2.
    np.testing.assert_allclose(np.asarray(state.nu), 0.1 * np.abs(np.asarray(g)) ** 2, rtol=1e-6)
    assert np.all(np.asarray(state.nu).imag == 0)
    assert not np.allclose(np.asarray(state.nu), 0.1 * np.asarray(g) ** 2)


# --- Saturating step counters. -----------------------------------------------


def _has_count(state: Any) -> bool:
    # A NamedTuple state with a count field (a plain tuple has a count method).
    return "count" in getattr(state, "_fields", ())


def _saturate(state: Any) -> Any:
    """The state with every ``count`` field set to the int32 maximum."""
    if _has_count(state):
        return state._replace(count=jnp.asarray(INT32_MAX, jnp.int32))
    if isinstance(state, tuple) and not hasattr(state, "_fields"):
        return tuple(_saturate(member) for member in state)
    return state


def _counts(state: Any) -> list[jax.Array]:
    if _has_count(state):
        return [state.count]
    if isinstance(state, tuple) and not hasattr(state, "_fields"):
        return [c for member in state for c in _counts(member)]
    return []


COUNTED = {
    "scale_by_adam": gradtx.scale_by_adam(),
    "scale_by_adam-nesterov": gradtx.scale_by_adam(nesterov=True),
    "scale_by_learning_rate-schedule": gradtx.scale_by_learning_rate(
        gradtx.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, end_value=0.01)
    ),
    # A constant learning rate or weight decay keeps no count (Optax's layout).
    "add_decayed_weights-schedule": gradtx.add_decayed_weights(gradtx.linear_schedule(0.1, 0, 9)),
    "adamw": gradtx.adamw(gradtx.exponential_decay(1e-2, 100, 0.5, end_value=1e-4)),
    "sgd": gradtx.sgd(gradtx.linear_schedule(0.1, 0.01, 100), momentum=0.9, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(COUNTED))
def test_counts_are_int32_and_saturate_instead_of_wrapping(name):
    tx = COUNTED[name]
    params = {"w": jnp.linspace(-1.0, 1.0, 5), "s": jnp.asarray(0.5)}
    grads = {"w": jnp.linspace(0.5, -0.3, 5), "s": jnp.asarray(-2.0)}
    state = tx.init(params)
    counts = _counts(state)
    assert counts and all(c.dtype == jnp.int32 and int(c) == 0 for c in counts)

    state = _saturate(state)
    update = jax.jit(tx.update)
    for _ in range(3):
        updates, state = update(grads, state, params)
        assert all(np.isfinite(np.asarray(u)).all() for u in jax.tree.leaves(updates))
    for count in _counts(state):
        assert count.dtype == jnp.int32
        assert int(count) == INT32_MAX  # a wrapped counter would be negative


def test_saturated_adam_has_no_bias_correction_left():
    # At count = 2**31 - 1, 1 - b**t == 1: the update is the raw ratio.
    tx = gradtx.scale_by_adam(b1=0.5, b2=0.75, eps=0.0)
    g = jnp.array([1.0, -2.0, 0.25])
    state = _saturate(tx.init(g))
    updates, state = tx.update(g, state)
    mu, nu = 0.5 * np.asarray(g), 0.25 * np.asarray(g) ** 2
    np.testing.assert_allclose(np.asarray(updates), mu / np.sqrt(nu), rtol=1e-6)


def test_saturated_schedule_reads_the_last_value():
    schedule = gradtx.linear_schedule(1.0, 0.25, transition_steps=10)
    tx = gradtx.scale_by_learning_rate(schedule)
    state = _saturate(tx.init(jnp.zeros(2)))
    updates, state = tx.update(jnp.ones(2), state)
    np.testing.assert_allclose(np.asarray(updates), [-0.25, -0.25])
    assert int(state.count) == INT32_MAX


def test_safe_increment_saturates_for_every_integer_width():
    for dtype in (jnp.int8, jnp.int16, jnp.int32, jnp.uint8):
        maximum = jnp.iinfo(dtype).max
        count = jnp.asarray(maximum, dtype)
        assert int(numerics.safe_increment(count)) == maximum
        assert numerics.safe_increment(count).dtype == dtype
        assert int(numerics.safe_increment(jnp.asarray(maximum - 1, dtype))) == maximum
        assert int(numerics.safe_increment(jnp.asarray(3, dtype))) == 4


# --- Storage dtypes of moments and traces. -----------------------------------


def _bf16(x: np.ndarray) -> np.ndarray:
    """Rounds to bfloat16 and back to float32 (round to nearest even)."""
    return np.asarray(x, np.float32).astype(jnp.bfloat16).astype(np.float32)


def test_adam_moments_stored_in_bfloat16_with_float32_gradients():
    tx = gradtx.scale_by_adam(mu_dtype=jnp.bfloat16, nu_dtype="bfloat16")
    steps = 20
    params = jax.tree.map(jnp.asarray, random_tree(4, np.float32))
    gradients = random_tree(5, np.float32, (steps,))
    state = tx.init(params)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves((state.mu, state.nu)))
    update = jax.jit(tx.update)
    for t in range(1, steps + 1):
        grads = {name: g[t - 1] for name, g in gradients.items()}
        previous_mu = {n: np.asarray(m, np.float32) for n, m in state.mu.items()}
        previous_nu = {n: np.asarray(v, np.float32) for n, v in state.nu.items()}
        updates, state = update(grads, state)
        for name, g in grads.items():
            assert updates[name].dtype == jnp.float32
            assert state.mu[name].dtype == state.nu[name].dtype == jnp.bfloat16
            # NumPy: the moments are updated in float32 from the stored
            # bfloat16 ones, the update is taken from these float32 moments,
            # and only then are they rounded to bfloat16 for storage.
            mu = np.float32(0.9) * previous_mu[name] + np.float32(0.1) * g
            nu = np.float32(0.999) * previous_nu[name] + np.float32(0.001) * g * g
            expected = (mu / (1 - 0.9**t)) / (np.sqrt(nu / (1 - 0.999**t)) + 1e-8)
            # float32 rounding of 1 - 0.999**t costs up to ~5e-5; updates taken
            # from the rounded bfloat16 moments would be off by ~4e-3.
            np.testing.assert_allclose(updates[name], expected, rtol=2e-4, err_msg=name)
            for stored, wide in ((state.mu[name], mu), (state.nu[name], nu)):
                np.testing.assert_allclose(
                    np.asarray(stored, np.float32), _bf16(wide), rtol=2.0**-8, err_msg=name
                )


def test_adam_nu_dtype_sets_the_second_moment_storage():
    tx = gradtx.scale_by_adam(nu_dtype=jnp.float32)
    params = {"w": jnp.zeros(3, jnp.bfloat16)}
    updates, state = tx.update({"w": jnp.ones(3, jnp.bfloat16)}, tx.init(params))
    assert state.mu["w"].dtype == jnp.bfloat16
    assert state.nu["w"].dtype == jnp.float32
    assert updates["w"].dtype == jnp.bfloat16


def test_bfloat16_first_moment_tracks_float32_adam_better_than_optax():
    # Optax multiplies b1 into a bfloat16 moment in bfloat16, where 0.9 is
    # 0.8984375: a systematic bias. gradtx updates the moment in float32 and
    # only rounds it for storage, so it stays closer to float32 Adam.
    steps = 100
    params = jax.tree.map(jnp.asarray, random_tree(6, np.float32))
    gradients = random_tree(7, np.float32, (steps,))
    tx = gradtx.adam(1e-2, mu_dtype="bfloat16")
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(tx.init(params)[0].mu))
    ours, theirs = run_pair(tx, optax.adam(1e-2, mu_dtype=jnp.bfloat16), params, gradients, steps)
    expected, _ = reference(
        numpy_adam, {n: np.asarray(p) for n, p in params.items()}, gradients, learning_rate=1e-2
    )
    ours, theirs = stacked(ours), stacked(theirs)
    for name in expected:
        assert ours[name].dtype == np.float32
        our_error = np.abs(ours[name] - expected[name])
        their_error = np.abs(theirs[name] - expected[name])
        # Each stored moment is off by up to a relative 2**-9, and the moment
        # remembers about 1 / (1 - b1) = 10 such roundings; updates are ~1e-2.
        assert np.max(our_error) < 1e-2 * 10 * 2.0**-9
        assert np.mean(our_error) < 0.5 * np.mean(their_error)


def test_wider_first_moment_than_gradients_gives_updates_in_the_gradients_dtype():
    # bfloat16 gradients, float32 first moment: Optax returns float32 updates
    # (promoted by the moment), gradtx the gradients' bfloat16. gradtx takes
    # (1 - b1) * g in float32 where Optax rounds it to bfloat16 first, so they
    # agree to a bfloat16 rounding of the update: one ulp above a power of
    # two is a relative 2**-7.
    tx = gradtx.scale_by_adam(mu_dtype=jnp.float32)
    # Float32 decay rates, or Optax would update the bfloat16 nu with b2 = 0.999
    # rounded to 1.0 (gradtx updates every moment in float32).
    reference = optax.scale_by_adam(
        b1=jnp.float32(0.9), b2=jnp.float32(0.999), mu_dtype=jnp.float32
    )
    g = jnp.asarray(np.random.default_rng(8).standard_normal(16), jnp.bfloat16)
    state, optax_state = tx.init(g), reference.init(g)
    step, optax_step = jax.jit(tx.update), jax.jit(reference.update)
    for scale in (1.0, -0.5, 2.0, 0.1, 1.0):
        grads = (g.astype(jnp.float32) * scale).astype(jnp.bfloat16)
        updates, state = step(grads, state)
        expected, optax_state = optax_step(grads, optax_state)
        assert updates.dtype == jnp.bfloat16 and expected.dtype == jnp.float32
        assert state.mu.dtype == jnp.float32 and state.nu.dtype == jnp.bfloat16
        optax_state = optax_state._replace(nu=optax_state.nu.astype(jnp.bfloat16))
        np.testing.assert_allclose(
            np.asarray(updates, np.float32), np.asarray(expected, np.float32), rtol=2.0**-7
        )


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("accumulator_dtype", [jnp.bfloat16, jnp.float16])
def test_narrow_trace_is_updated_in_the_gradients_precision(accumulator_dtype, nesterov):
    decay = 0.9
    tx = gradtx.trace(decay, nesterov=nesterov, accumulator_dtype=accumulator_dtype)
    gradients = random_tree(9, np.float32, (15,))
    state = tx.init(jax.tree.map(lambda g: jnp.zeros(g.shape[1:]), gradients))
    update = jax.jit(tx.update)
    for index in range(15):
        grads = {name: g[index] for name, g in gradients.items()}
        previous = {n: np.asarray(t, np.float32) for n, t in state.trace.items()}
        updates, state = update(grads, state)
        for name, g in grads.items():
            assert state.trace[name].dtype == jnp.dtype(accumulator_dtype)
            assert updates[name].dtype == jnp.float32
            # NumPy: float32 arithmetic from the stored trace (the decay is
            # not rounded to the storage dtype, where 0.9 is 0.8984375), then
            # one rounding for storage.
            trace = g + np.float32(decay) * previous[name]
            expected = g + np.float32(decay) * trace if nesterov else trace
            np.testing.assert_allclose(updates[name], expected, rtol=1e-6, atol=1e-7)
            stored = trace.astype(accumulator_dtype).astype(np.float32)
            np.testing.assert_array_equal(np.asarray(state.trace[name], np.float32), stored)


@pytest.mark.parametrize("nesterov", [False, True])
def test_wide_trace_with_bfloat16_gradients_matches_optax(nesterov):
    tx = gradtx.trace(0.9, nesterov=nesterov, accumulator_dtype=jnp.float32)
    reference = optax.trace(0.9, nesterov=nesterov, accumulator_dtype=jnp.float32)
    gradients = random_tree(9, jnp.bfloat16, (15,))
    params = jax.tree.map(lambda g: jnp.zeros(g.shape[1:], jnp.bfloat16), gradients)
    state, optax_state = tx.init(params), reference.init(params)
    step, optax_step = jax.jit(tx.update), jax.jit(reference.update)
    for index in range(15):
        grads = {name: jnp.asarray(g[index]) for name, g in gradients.items()}
        updates, state = step(grads, state)
        expected, optax_state = optax_step(grads, optax_state)
        for name in grads:
            assert state.trace[name].dtype == jnp.float32
            assert updates[name].dtype == jnp.bfloat16
            # Optax's updates are float32 here; rounded to bfloat16 they are gradtx's.
            np.testing.assert_array_equal(
                np.asarray(updates[name], np.float32),
                np.asarray(expected[name].astype(jnp.bfloat16), np.float32),
            )
            np.testing.assert_array_equal(
                np.asarray(state.trace[name]), np.asarray(optax_state.trace[name])
            )


# --- apply_updates keeps each parameter's dtype. -----------------------------


@pytest.mark.parametrize(
    ("param_dtype", "update_dtype"),
    [
        (jnp.bfloat16, jnp.float32),
        (jnp.float16, jnp.float32),
        (jnp.float32, jnp.bfloat16),
        (jnp.bfloat16, jnp.bfloat16),
        (jnp.complex64, jnp.complex64),
    ],
)
@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_apply_updates_keeps_each_params_dtype(param_dtype, update_dtype, jitted):
    params = {"a": random_tree(10, param_dtype)["w"], "b": [random_tree(11, np.float32)["b"]]}
    updates = {
        "a": random_tree(12, update_dtype)["w"] * np.asarray(0.01, update_dtype),
        "b": [random_tree(13, jnp.bfloat16)["b"]],
    }
    apply = jax.jit(gradtx.apply_updates) if jitted else gradtx.apply_updates
    new = apply(params, updates)
    assert new["a"].dtype == jnp.dtype(param_dtype)
    assert new["b"][0].dtype == jnp.float32
    # The sum is taken in the promoted dtype, then rounded once to the param's.
    promoted = jnp.promote_types(param_dtype, update_dtype)
    expected = (params["a"].astype(promoted) + updates["a"].astype(promoted)).astype(param_dtype)
    np.testing.assert_array_equal(np.asarray(new["a"]), np.asarray(expected))
    np.testing.assert_allclose(
        np.asarray(new["b"][0]),
        params["b"][0] + np.asarray(updates["b"][0], np.float32),
        rtol=1e-7,
    )


def test_apply_updates_small_float32_steps_on_bfloat16_params():
    # bfloat16 spacing at 1.0 is 2**-7: a 2**-9 step is lost, a 2**-6 step is kept.
    params = {"w": jnp.ones(2, jnp.bfloat16)}
    small = gradtx.apply_updates(params, {"w": jnp.full(2, 2.0**-9, jnp.float32)})
    large = gradtx.apply_updates(params, {"w": jnp.full(2, 2.0**-6, jnp.float32)})
    assert small["w"].dtype == large["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(small["w"], np.float32), [1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(large["w"], np.float32), [1 + 2.0**-6] * 2)


def test_apply_updates_keeps_none_leaves():
    params = {"w": jnp.ones(2, jnp.bfloat16), "frozen": None}
    new = gradtx.apply_updates(params, {"w": jnp.ones(2, jnp.float32), "frozen": None})
    assert new["frozen"] is None
    assert new["w"].dtype == jnp.bfloat16
