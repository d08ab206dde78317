"""apply_if_finite against optax.apply_if_finite, with NaN and Inf gradients injected."""

import functools

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from wrapper_harness import (
    assert_leaves_close,
    gradients,
    head,
    params_like,
    run_eager,
    run_jitted_all,
    step_of,
)

import gradtx

STEPS = 120
MAX_ERRORS = 2
# Isolated bad steps, a run of exactly MAX_ERRORS (all skipped), and at the end a
# longer run whose third step is applied anyway (and so turns everything NaN).
BAD = {
    3: np.nan,
    10: np.inf,
    11: -np.inf,
    40: np.nan,
    41: np.nan,
    77: np.inf,
    115: np.nan,
    116: np.inf,
    117: np.nan,
    118: np.nan,
}
INNERS = {
    "adam": (lambda: gradtx.adam(1e-2), lambda: optax.adam(1e-2)),
    "sgd": (lambda: gradtx.sgd(0.1, momentum=0.9), lambda: optax.sgd(0.1, momentum=0.9)),
}
DTYPES = pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])


def reference_counters(steps, bad, max_errors):
    """NumPy reference of Optax's rule: (notfinite_count, last_finite, total, applied)."""
    consecutive = total = 0
    rows = []
    for step in range(steps):
        finite = step not in bad
        consecutive = 0 if finite else consecutive + 1
        total += not finite
        rows.append((consecutive, finite, total, finite or consecutive > max_errors))
    return [np.array(column) for column in zip(*rows)]


@functools.cache
def runs(inner, dtype_name):
    """Stacked (updates, params, state) of the four wrapper/inner pairings, one compile.

    ours: gradtx wrapper, gradtx inner; same_inner: Optax wrapper, gradtx inner;
    theirs: Optax wrapper, Optax inner; foreign: gradtx wrapper, Optax inner.
    """
    dtype = jnp.dtype(dtype_name)
    build_gradtx, build_optax = INNERS[inner]
    txs = {
        "ours": gradtx.apply_if_finite(build_gradtx(), MAX_ERRORS),
        "same_inner": optax.apply_if_finite(build_gradtx(), MAX_ERRORS),
        "theirs": optax.apply_if_finite(build_optax(), MAX_ERRORS),
        "foreign": gradtx.apply_if_finite(build_optax(), MAX_ERRORS),
    }
    grads = gradients(STEPS, dtype, bad=BAD)
    return dict(zip(txs, run_jitted_all(list(txs.values()), params_like(dtype), grads)))


def counters(tree):
    return [leaf for leaf in jax.tree.leaves(tree) if not jnp.issubdtype(leaf.dtype, jnp.floating)]


@DTYPES
@pytest.mark.parametrize("inner", sorted(INNERS))
def test_matches_optax_over_many_steps(inner, dtype_name):
    result = runs(inner, dtype_name)
    # The wrapper itself is bitwise Optax's, whichever inner both wrap.
    assert_leaves_close(result["ours"], result["same_inner"])
    assert_leaves_close(result["foreign"], result["theirs"])
    # Against Optax's wrapper around Optax's inner, only as well as the inners
    # agree by themselves: in float32 to rounding; in bfloat16 gradtx keeps the
    # decays in float32 (optax.trace rounds 0.9 to 0.8984375), so there only the
    # integer counters, which do not depend on the inner's rounding, must agree.
    if dtype_name == "float32":
        assert_leaves_close(result["ours"], result["theirs"], rtol=1e-6, atol=1e-8)
    assert_leaves_close(counters(result["ours"]), counters(result["theirs"]))
    state = result["ours"][2]
    assert type(state) is gradtx.ApplyIfFiniteState
    assert state._fields == result["theirs"][2]._fields


def test_counters_skips_and_giving_up():
    params = params_like(jnp.float32)
    updates, new_params, state = runs("adam", "float32")["ours"]
    consecutive, finite, total, applied = reference_counters(STEPS, BAD, MAX_ERRORS)
    np.testing.assert_array_equal(state.notfinite_count, consecutive)
    np.testing.assert_array_equal(state.last_finite, finite)
    np.testing.assert_array_equal(state.total_notfinite, total)
    assert state.notfinite_count.dtype == state.total_notfinite.dtype == jnp.int32
    np.testing.assert_array_equal(state.inner_state[0].count, np.cumsum(applied))
    previous_params = jax.tree.map(
        lambda p, stacked: jnp.concatenate([p[None], stacked[:-1]]), params, new_params
    )
    for step in np.flatnonzero(~applied):
        for leaf in jax.tree.leaves(step_of(updates, step)):
            np.testing.assert_array_equal(leaf, 0)
        assert_leaves_close(step_of(new_params, step), step_of(previous_params, step))
        assert_leaves_close(step_of(state.inner_state, step), step_of(state.inner_state, step - 1))
    # The give-up step (the third in a row) reaches the inner optimizer: NaN.
    assert any(np.isnan(leaf).any() for leaf in jax.tree.leaves(step_of(new_params, 117)))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(step_of(new_params, 116)))
    assert step_of(updates, 0)["frozen"] is None


@DTYPES
def test_eager_equals_jitted(dtype_name):
    # Eager lax.cond compiles on every call, so the eager run is short; it holds
    # a skipped step (3).
    steps, dtype = 5, jnp.dtype(dtype_name)
    tx = gradtx.apply_if_finite(INNERS["sgd"][0](), MAX_ERRORS)
    eager = run_eager(tx, params_like(dtype), gradients(STEPS, dtype, bad=BAD), steps)
    assert_leaves_close(eager, head(runs("sgd", dtype_name)["ours"], steps), rtol=1e-6, atol=1e-7)


def test_python_scalar_leaves_and_extra_args():
    tx = gradtx.apply_if_finite(gradtx.sgd(1.0), 0)
    state = tx.init({"a": 1.0, "b": None})
    updates, state = tx.update({"a": 2.0, "b": None}, state, unused_extra=3)
    assert updates["b"] is None
    np.testing.assert_array_equal(updates["a"], -2.0)
    updates, state = tx.update({"a": float("nan"), "b": None}, state)
    assert np.isnan(updates["a"]) and int(state.total_notfinite) == 1  # 0 errors allowed


def test_loads_an_optax_checkpoint_and_continues_identically():
    params, grads = params_like(jnp.float32), gradients(20, jnp.float32, bad={4: np.nan})
    theirs = optax.apply_if_finite(optax.sgd(0.1, momentum=0.9), MAX_ERRORS)
    ours = gradtx.apply_if_finite(gradtx.sgd(0.1, momentum=0.9), MAX_ERRORS)
    their_state = theirs.init(params)
    update = jax.jit(theirs.update)
    for step in range(10):
        _, their_state = update(step_of(grads, step), their_state)
    saved = flax.serialization.to_state_dict(their_state)
    our_state = flax.serialization.from_state_dict(ours.init(params), saved)
    our_update = jax.jit(ours.update)
    for step in range(10, 20):
        their_updates, their_state = update(step_of(grads, step), their_state)
        our_updates, our_state = our_update(step_of(grads, step), our_state)
        assert_leaves_close(our_updates, their_updates)
    assert_leaves_close(our_state, their_state)


def test_value_behaviour():
    tx = gradtx.apply_if_finite(gradtx.adam(1e-3), max_consecutive_errors=5)
    assert tx == gradtx.apply_if_finite(gradtx.adam(1e-3), 5)
    assert tx != gradtx.apply_if_finite(gradtx.adam(1e-3), 4)
    assert repr(tx) == f"apply_if_finite(inner={gradtx.adam(1e-3)!r}, max_consecutive_errors=5)"
    assert gradtx.from_config(gradtx.to_config(tx)) == tx
    # The inner's hyperparameters stay leaves: jit takes the wrapper as an argument.
    assert jax.tree.leaves(tx) == jax.tree.leaves(gradtx.adam(1e-3))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="max_consecutive_errors must be >= 0, got -1"):
        gradtx.apply_if_finite(gradtx.sgd(0.1), -1)
    with pytest.raises(TypeError, match="max_consecutive_errors must be an int"):
        gradtx.apply_if_finite(gradtx.sgd(0.1), 1.5)
    with pytest.raises(TypeError, match="max_consecutive_errors must be an int"):
        gradtx.apply_if_finite(gradtx.sgd(0.1), True)
    with pytest.raises(TypeError, match="inner must be a gradient transformation"):
        gradtx.apply_if_finite(0.1, 3)
    with pytest.raises(TypeError, match=r"did you mean adam\(...\)"):
        gradtx.apply_if_finite(gradtx.adam, 3)
    tx = gradtx.apply_if_finite(gradtx.adam(1e-3), 3)
    state = tx.init({"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"\['b'\] is in the gradients"):
        tx.update({"w": jnp.zeros(2), "b": jnp.zeros(1)}, state)
