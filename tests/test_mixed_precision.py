"""Mixed precision: narrow params with wide moments, hyperparameters never rounded.

gradtx updates every moment and trace in float32 or wider, whatever the
storage dtype, so bfloat16 never rounds b2 = 0.999 to 1.0 (Optax issue #1414)
and float16 never flushes Adam's eps = 1e-8 to zero.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx


def adam_reference(grads, b1=0.9, b2=0.999, eps=1e-8, lr=1e-2):
    """Adam in float64 NumPy, as in Kingma & Ba (2014), Algorithm 1."""
    mu = nu = 0.0
    updates = []
    for t, g in enumerate(grads, start=1):
        mu = b1 * mu + (1 - b1) * g
        nu = b2 * nu + (1 - b2) * g * g
        updates.append(-lr * (mu / (1 - b1**t)) / (np.sqrt(nu / (1 - b2**t)) + eps))
    return np.stack(updates)


def gradients(steps=60, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((steps, size)).astype(np.float32)


def run(tx, grads, dtype):
    params = jnp.zeros(grads.shape[1:], dtype)
    state = tx.init(params)
    step = jax.jit(tx.update)
    updates = []
    for g in grads:
        u, state = step(jnp.asarray(g, dtype), state, params)
        assert u.dtype == dtype
        updates.append(np.asarray(u, np.float64))
    return np.stack(updates), state


def test_bf16_params_with_f32_moments_follow_the_float64_rule():
    grads = gradients()
    # The gradients themselves are bfloat16: the reference sees the same ones.
    rounded = np.asarray(jnp.asarray(grads, jnp.bfloat16), np.float64)
    tx = gradtx.chain(
        gradtx.scale_by_adam(mu_dtype=jnp.float32, nu_dtype=jnp.float32),
        gradtx.scale_by_learning_rate(1e-2),
    )
    ours, state = run(tx, grads, jnp.bfloat16)
    adam_state = state[0]
    assert adam_state.mu.dtype == adam_state.nu.dtype == jnp.float32
    np.testing.assert_allclose(ours, adam_reference(rounded), rtol=2**-7, atol=1e-6)


def test_bf16_second_moment_is_not_decayed_with_b2_rounded_to_one():
    # With b2 rounded to bfloat16 (1.0) nu only grows: after a run of large
    # gradients followed by small ones, the update would stay tiny. With b2 =
    # 0.99 applied exactly, nu forgets the large ones (the update is ~3x the
    # one with b2 = 1.0). The bfloat16 storage of nu costs up to ~2%.
    grads = np.concatenate([np.full((20, 4), 100.0), np.full((200, 4), 1.0)]).astype(np.float32)
    ours, state = run(gradtx.adam(1.0, b2=0.99), grads, jnp.bfloat16)
    expected = adam_reference(grads.astype(np.float64), b2=0.99, lr=1.0)
    np.testing.assert_allclose(ours[-1], expected[-1], rtol=2**-5)
    assert state[0].nu.dtype == jnp.bfloat16


def test_bf16_momentum_uses_the_exact_decay():
    grads = np.ones((50, 3), np.float32)
    tx = gradtx.sgd(1.0, momentum=0.9, accumulator_dtype=jnp.float32)
    ours, _ = run(tx, grads, jnp.bfloat16)
    # Heavy ball on constant gradients: m_t = sum of 0.9**k, k < t.
    expected = -np.array([(1 - 0.9**t) / 0.1 for t in range(1, 51)])
    # Each update is the exact value rounded once to bfloat16 (with the decay
    # rounded to 0.8984375 the limit would be 9.85 instead of 10).
    np.testing.assert_allclose(ours[:, 0], expected, rtol=2**-8)


@pytest.mark.parametrize("name", ["adam", "adamw", "nadam", "sgd"])
def test_f16_params_with_default_eps_stay_finite(name):
    txs = {
        "adam": gradtx.adam(1e-3),
        "adamw": gradtx.adamw(1e-3, weight_decay=1e-2),
        "nadam": gradtx.nadam(1e-3),
        "sgd": gradtx.sgd(1e-3, momentum=0.9, weight_decay=1e-4),
    }
    # Gradients so small that their squares underflow float16: nu stored in
    # float16 is 0, and eps = 1e-8 would be 0 in float16 too.
    grads = np.full((5, 4), 1e-5, np.float32)
    grads[2] = 0.0
    ours, _ = run(txs[name], grads, jnp.float16)
    assert np.all(np.isfinite(ours))


def test_f16_adam_update_keeps_its_eps():
    tx = gradtx.scale_by_adam(eps=1e-8)
    params = jnp.zeros(2, jnp.float16)
    updates, state = tx.update(jnp.zeros(2, jnp.float16), tx.init(params))
    assert updates.dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(updates), [0.0, 0.0])
    # nu of float16 params is kept in float32 (tests/test_input_validation.py).
    assert state.mu.dtype == jnp.float16 and state.nu.dtype == jnp.float32


def test_wide_accumulator_for_sgd():
    tx = gradtx.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.float32)
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    state = tx.init(params)
    assert state[0].trace["w"].dtype == jnp.float32
    updates, state = tx.update({"w": jnp.ones(3, jnp.bfloat16)}, state)
    assert updates["w"].dtype == jnp.bfloat16
    assert state[0].trace["w"].dtype == jnp.float32
