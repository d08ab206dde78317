"""MultiSteps, accumulate and apply_every against Optax's MultiSteps and apply_every."""

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
    run_jitted,
    run_jitted_all,
    step_of,
)

import gradtx
from gradtx.config import ConfigError

STEPS = 120
EVERY_K = 3
INNERS = {
    "adam": (lambda: gradtx.adam(1e-2), lambda: optax.adam(1e-2)),
    "sgd": (lambda: gradtx.sgd(0.1, momentum=0.9), lambda: optax.sgd(0.1, momentum=0.9)),
}
DTYPES = pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])


def counters(tree):
    return [leaf for leaf in jax.tree.leaves(tree) if not jnp.issubdtype(leaf.dtype, jnp.floating)]


@functools.cache
def runs(inner, dtype_name):
    """Stacked (updates, params, state) of each wrapper/inner pairing, one compile.

    ours: gradtx wrapper, gradtx inner; same_inner: Optax wrapper, gradtx inner;
    theirs: Optax wrapper, Optax inner; foreign: gradtx wrapper, Optax inner;
    accumulate: gradtx's other name for the same rule.
    """
    dtype = jnp.dtype(dtype_name)
    build_gradtx, build_optax = INNERS[inner]
    txs = {
        "ours": gradtx.MultiSteps(build_gradtx(), EVERY_K),
        "same_inner": optax.MultiSteps(build_gradtx(), EVERY_K),
        "theirs": optax.MultiSteps(build_optax(), EVERY_K),
        "foreign": gradtx.MultiSteps(build_optax(), EVERY_K),
    }
    if dtype_name == "float32":
        txs["accumulate"] = gradtx.accumulate(build_gradtx(), EVERY_K)
    grads = gradients(STEPS, dtype)
    return dict(zip(txs, run_jitted_all(list(txs.values()), params_like(dtype), grads)))


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
    updates, _, state = result["ours"]
    assert type(state) is gradtx.MultiStepsState
    assert state._fields == result["theirs"][2]._fields
    if "accumulate" in result:  # the same rule, the same state
        assert_leaves_close(result["accumulate"], result["ours"])
        assert jax.tree.structure(result["accumulate"]) == jax.tree.structure(result["ours"])
    np.testing.assert_array_equal(state.mini_step, (np.arange(STEPS) + 1) % EVERY_K)
    np.testing.assert_array_equal(state.gradient_step, (np.arange(STEPS) + 1) // EVERY_K)
    emitted = np.any(np.asarray(updates["c"], np.float32) != 0, axis=1)
    np.testing.assert_array_equal(emitted, (np.arange(STEPS) + 1) % EVERY_K == 0)
    assert state.acc_grads["c"].dtype == jnp.float32  # Optax's default accumulator
    assert updates["c"].dtype == dtype_name and updates["frozen"] is None


@DTYPES
def test_eager_equals_jitted(dtype_name):
    # Eager lax.switch compiles on every call, so the eager run is short: one
    # window of EVERY_K mini-steps and the start of the next.
    steps, dtype = EVERY_K + 1, jnp.dtype(dtype_name)
    tx = gradtx.MultiSteps(INNERS["sgd"][0](), EVERY_K)
    eager = run_eager(tx, params_like(dtype), gradients(STEPS, dtype), steps)
    assert_leaves_close(eager, head(runs("sgd", dtype_name)["ours"], steps), rtol=1e-6, atol=1e-7)


def test_the_update_is_the_inner_step_on_the_mean_gradient():
    params, grads = params_like(jnp.float32), gradients(2 * EVERY_K, jnp.float32)
    updates = run_jitted(gradtx.accumulate(gradtx.sgd(1.0), EVERY_K), params, grads)[0]
    for end in (EVERY_K, 2 * EVERY_K):
        window = slice(end - EVERY_K, end)
        mean = jax.tree.map(lambda g, window=window: -np.mean(np.asarray(g[window]), 0), grads)
        assert_leaves_close(step_of(updates, end - 1), mean, rtol=1e-5, atol=1e-7)


def test_every_k_schedule():
    def their_k(step):
        return jnp.where(step < 4, 2, 3)

    gradtx_schedule = gradtx.piecewise_constant_schedule(2.0, {4: 1.5})  # floats: 2.0, 3.0
    inner = gradtx.sgd(0.1, momentum=0.9)
    params, grads = params_like(jnp.float32), gradients(40, jnp.float32)
    function, schedule, theirs = run_jitted_all(
        [
            gradtx.MultiSteps(inner, their_k),
            gradtx.accumulate(inner, gradtx_schedule),
            optax.MultiSteps(inner, their_k),
        ],
        params,
        grads,
    )
    assert_leaves_close(function, theirs)
    assert_leaves_close(schedule, theirs)
    assert int(theirs[2].gradient_step[-1]) == 4 + (40 - 4 * 2) // 3


@DTYPES
def test_sum_and_accumulator_dtypes(dtype_name):
    dtype = jnp.dtype(dtype_name)
    params, grads = params_like(dtype), gradients(24, dtype)
    cases = [(True, "bfloat16")]  # the mean, stored in bfloat16
    if dtype_name == "bfloat16":
        cases += [(False, "float32"), (False, "bfloat16")]
    txs = []
    for use_grad_mean, accumulator_dtype in cases:
        # Optax's positional order, accumulator_dtype included.
        txs.append(gradtx.MultiSteps(optax.sgd(0.1), 4, use_grad_mean, None, accumulator_dtype))
        txs.append(optax.MultiSteps(optax.sgd(0.1), 4, use_grad_mean, None, accumulator_dtype))
    txs.append(gradtx.MultiSteps(optax.sgd(0.1), 4, accumulator_dtype=None))
    results = run_jitted_all(txs, params, grads)
    for position, (_, accumulator_dtype) in enumerate(cases):
        ours, theirs = results[2 * position], results[2 * position + 1]
        assert ours[2].acc_grads["c"].dtype == accumulator_dtype
        if accumulator_dtype == "float32" or dtype_name == "float32":
            assert_leaves_close(ours, theirs)
        else:
            # Optax computes the running mean in bfloat16; gradtx in float32, rounded
            # once: they differ by about one bfloat16 step of the gradients (~1).
            assert_leaves_close(ours, theirs, rtol=2e-2, atol=1e-2)
            assert_leaves_close(counters(ours), counters(theirs))
    # None keeps the params' dtype (Optax's accumulator turns float32 after a step).
    assert results[-1][2].acc_grads["c"].dtype == dtype


@DTYPES
def test_skip_functions(dtype_name):
    dtype = jnp.dtype(dtype_name)
    bad = {1: np.nan, 7: np.inf, 8: -np.inf, 30: np.nan}
    large = {2: 100.0, 16: 30.0, 17: 50.0}
    params, grads = params_like(dtype), gradients(60, dtype, bad=bad, scaled=large)
    inner = gradtx.sgd(0.1, momentum=0.9)
    not_finite, theirs_not_finite = gradtx.skip_not_finite(), optax.skip_not_finite
    too_large = gradtx.skip_large_updates(max_squared_norm=40.0)
    theirs_too_large = functools.partial(optax.skip_large_updates, max_squared_norm=40.0)
    results = run_jitted_all(
        [
            gradtx.MultiSteps(inner, EVERY_K, True, not_finite),
            optax.MultiSteps(inner, EVERY_K, True, theirs_not_finite),
            optax.MultiSteps(inner, EVERY_K, True, not_finite),  # gradtx's rule inside Optax
            gradtx.accumulate(inner, EVERY_K, should_skip_update_fn=too_large),
            optax.MultiSteps(inner, EVERY_K, True, theirs_too_large),
            optax.MultiSteps(inner, EVERY_K, True, too_large),
        ],
        params,
        grads,
    )
    assert_leaves_close(results[0], results[1])
    assert_leaves_close(results[2], results[1])
    skip_state = results[0][2].skip_state
    is_bad = np.isin(np.arange(60), list(bad))
    np.testing.assert_array_equal(skip_state["should_skip"], is_bad)
    np.testing.assert_array_equal(skip_state["num_not_finite"], is_bad.astype(int))
    for leaf in jax.tree.leaves(results[0][1]):
        assert np.all(np.isfinite(np.asarray(leaf, np.float32)))
    # A NaN norm is "too large" as well.
    skipped = results[3][2].skip_state["should_skip"]
    assert list(np.flatnonzero(skipped)) == sorted([*bad, *large])
    for ours in results[3], results[5]:
        assert_leaves_close(ours[:2], results[4][:2])
        assert_leaves_close(counters(ours), counters(results[4]))
        # The stored norm has the gradients' dtype; gradtx sums it in float32.
        norms = [result[2].skip_state["norm_squared"] for result in (ours, results[4])]
        finite = np.isfinite(np.asarray(norms[1], np.float32))
        assert norms[0].dtype == norms[1].dtype == dtype
        np.testing.assert_allclose(
            np.asarray(norms[0], np.float32)[finite],
            np.asarray(norms[1], np.float32)[finite],
            rtol=1e-6 if dtype_name == "float32" else 1e-2,
        )


def test_a_nan_does_not_outlive_its_window_unlike_in_optax():
    params, grads = params_like(jnp.float32), gradients(8, jnp.float32, bad={1: np.nan})
    ours, theirs, ours_every, theirs_every = run_jitted_all(
        [
            gradtx.MultiSteps(optax.sgd(0.1), 3),
            optax.MultiSteps(optax.sgd(0.1), 3),
            gradtx.apply_every(3),
            optax.apply_every(3),
        ],
        params,
        grads,
    )
    assert np.isnan(np.asarray(grads["a"]["b"])[1, 0])  # where the NaN is
    for updates, state in ((ours[0], ours[2].acc_grads), (ours_every[0], ours_every[2].grad_acc)):
        b = np.asarray(updates["a"]["b"])[:, 0]
        assert b[1] == 0 and np.isnan(b[2]) and np.isfinite(b[3:]).all()
        assert np.isfinite(np.asarray(state["a"]["b"])[3:]).all()
    # Optax: NaN updates between updates too, and an accumulator NaN for good.
    assert np.isnan(np.asarray(theirs[0]["a"]["b"])[1, 0])
    assert np.isnan(np.asarray(theirs[2].acc_grads["a"]["b"])[-1, 0])
    assert np.isnan(np.asarray(theirs_every[2].grad_acc["a"]["b"])[-1, 0])
    # Elsewhere the same numbers.
    assert_leaves_close(ours[0]["c"], theirs[0]["c"])


def test_a_plain_skip_function_works_but_is_not_serializable():
    def skip_negative_sum(updates, gradient_step, params):
        total = sum(jnp.sum(leaf) for leaf in jax.tree.leaves(updates))
        return total < 0, {"total": total}

    params, grads = params_like(jnp.float32), gradients(30, jnp.float32)
    ours = gradtx.MultiSteps(gradtx.sgd(0.1), EVERY_K, should_skip_update_fn=skip_negative_sum)
    theirs = optax.MultiSteps(gradtx.sgd(0.1), EVERY_K, should_skip_update_fn=skip_negative_sum)
    assert_leaves_close(*run_jitted_all([ours, theirs], params, grads))
    assert jax.tree.leaves(ours) == jax.tree.leaves(gradtx.sgd(0.1))  # kept static
    with pytest.raises(
        ConfigError, match="should_skip_update_fn: cannot write the Python callable"
    ):
        gradtx.to_config(ours)
    with pytest.raises(ConfigError, match="every_k: cannot write the Python callable"):
        gradtx.to_config(gradtx.accumulate(gradtx.sgd(0.1), lambda step: 2))


def test_loads_an_optax_checkpoint_and_continues_identically():
    params, grads = params_like(jnp.float32), gradients(20, jnp.float32, bad={5: np.inf})
    theirs = optax.MultiSteps(optax.sgd(0.1, momentum=0.9), EVERY_K, True, optax.skip_not_finite)
    ours = gradtx.accumulate(
        gradtx.sgd(0.1, momentum=0.9), EVERY_K, should_skip_update_fn=gradtx.skip_not_finite()
    )
    their_state, their_update = theirs.init(params), jax.jit(theirs.update)
    for step in range(8):  # stops mid-window
        _, their_state = their_update(step_of(grads, step), their_state, params)
    saved = flax.serialization.to_state_dict(their_state)
    our_state = flax.serialization.from_state_dict(ours.init(params), saved)
    our_update = jax.jit(ours.update)
    for step in range(8, 20):
        their_updates, their_state = their_update(step_of(grads, step), their_state, params)
        our_updates, our_state = our_update(step_of(grads, step), our_state, params)
        assert_leaves_close(our_updates, their_updates)
    assert_leaves_close(our_state, their_state)


def test_python_scalars_none_leaves_extra_args_and_optax_methods():
    tx = gradtx.MultiSteps(gradtx.sgd(1.0), 2)
    assert tx.gradient_transformation() is tx and tx.inner_opt == gradtx.sgd(1.0)
    state = tx.init({"a": 1.0, "frozen": None})
    updates, state = tx.update({"a": 1.0, "frozen": None}, state, some_extra_arg=1)
    assert updates["frozen"] is None and not bool(tx.has_updated(state))
    updates, state = tx.update({"a": 3.0, "frozen": None}, state)
    np.testing.assert_array_equal(updates["a"], -2.0)
    assert bool(tx.has_updated(state))
    assert bool(optax.MultiSteps(optax.sgd(1.0), 2).has_updated(state))


def test_values_configs_and_leaves():
    tx = gradtx.accumulate(
        gradtx.adam(1e-3), 4, should_skip_update_fn=gradtx.skip_large_updates(10.0)
    )
    assert gradtx.from_config(gradtx.to_config(tx)) == tx
    assert tx != gradtx.accumulate(gradtx.adam(1e-3), 4)
    assert repr(gradtx.MultiSteps(gradtx.sgd(0.1), 2)) == (
        "MultiSteps(opt=sgd(learning_rate=0.1), every_k_schedule=2)"
    )
    # Numeric hyperparameters of the inner and of the skip rule are leaves.
    assert jax.tree.leaves(tx) == [*jax.tree.leaves(gradtx.adam(1e-3)), 10.0]
    with pytest.raises(TypeError):
        gradtx.accumulate(gradtx.adam(1e-2), 4, False)  # the options are keyword-only


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="every_k must be >= 1, got 0"):
        gradtx.accumulate(gradtx.sgd(0.1), 0)
    with pytest.raises(ValueError, match="every_k_schedule must be >= 1, got -2"):
        gradtx.MultiSteps(gradtx.sgd(0.1), -2)
    with pytest.raises(TypeError, match="every_k must be an int >= 1 or a schedule"):
        gradtx.accumulate(gradtx.sgd(0.1), 2.5)
    with pytest.raises(TypeError, match="opt must be a gradient transformation"):
        gradtx.MultiSteps("adam", 2)
    with pytest.raises(TypeError, match=r"did you mean skip_not_finite\(...\)"):
        gradtx.MultiSteps(gradtx.sgd(0.1), 2, should_skip_update_fn=gradtx.skip_not_finite)
    with pytest.raises(ValueError, match="max_squared_norm must be >= 0"):
        gradtx.skip_large_updates(-1.0)
    bad_rule = gradtx.MultiSteps(gradtx.sgd(0.1), 2, True, lambda u, s, p: (jnp.zeros(2), ()))
    with pytest.raises(ValueError, match="should_skip_update_fn must return a bool scalar"):
        bad_rule.init(jnp.zeros(2))
    tx = gradtx.accumulate(gradtx.sgd(0.1), 2)
    with pytest.raises(ValueError, match=r"\['b'\] is missing from the gradients"):
        tx.update({"w": jnp.zeros(2)}, tx.init({"w": jnp.zeros(2), "b": jnp.zeros(1)}))
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        gradtx.apply_every(0)
    with pytest.raises(TypeError, match="k must be an integer"):
        gradtx.apply_every(1.5)


@DTYPES
def test_apply_every_matches_optax(dtype_name):
    dtype = jnp.dtype(dtype_name)
    params, grads = params_like(dtype), gradients(STEPS, dtype)
    ours, theirs, alone = run_jitted_all(
        [
            gradtx.chain(gradtx.apply_every(4), gradtx.sgd(0.1)),
            optax.chain(optax.apply_every(4), optax.sgd(0.1)),
            gradtx.apply_every(4),
        ],
        params,
        grads,
    )
    assert_leaves_close(ours, theirs)
    assert type(ours[2][0]) is gradtx.ApplyEvery
    assert ours[2][0]._fields == theirs[2][0]._fields
    np.testing.assert_array_equal(ours[2][0].count, (np.arange(STEPS) + 1) % 4)
    eager = run_eager(gradtx.apply_every(4), params, grads, 6)
    assert_leaves_close(eager, head(alone, 6))
