"""Schedule-Free learning against optax.contrib (Optax 0.2.8)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from catalogue_parity import DTYPES, check_against_optax, dtype_id, optax_hyper, run_jitted
from optax import contrib
from parity_checks import assert_same_layout, assert_trees_close

import gradtx

# bfloat16: the update is y_new - y, with y each library's own bfloat16 params,
# so it has a term -c * y (c ~ 1/t the averaging weight). Where a step is below
# a bfloat16 ulp of y (SGD's 1e-3 steps on params ~1, ulp 2**-7), rounding the
# update before adding it (gradtx) or not (Optax's float32 updates) now and then
# leaves y one ulp apart, and from then on the updates differ by ~c * ulp(y):
# up to 20% of the leaf's largest update for SGD, 6% for AdamW, while the params
# stay within their bound and float32 agrees to 1e-5.
BFLOAT16_UPDATES = {"rtol": 2.0**-6, "atol": 1e-5, "scale_atol": 2.0**-2}


def tolerance_for(dtype):
    return None if dtype == jnp.float32 else BFLOAT16_UPDATES


def final(stacked):
    """The last step of a run's stacked params."""
    return jax.tree.map(lambda leaf: leaf[-1], stacked)


def eval_params_match(run, dtype):
    """gradtx's eval params agree with Optax's, and Optax's function reads gradtx's state."""
    params = final(run.gradtx_params)
    ours = gradtx.schedule_free_eval_params(run.gradtx_state, params)
    assert jax.tree.map(lambda x: x.dtype, ours) == jax.tree.map(lambda x: x.dtype, params)
    # Optax's function on gradtx's state and params: the same numbers, rounded
    # to the params' dtype by gradtx.
    interop = contrib.schedule_free_eval_params(run.gradtx_state, params)
    same = {"rtol": 1e-6, "atol": 1e-7} if dtype == jnp.float32 else {"rtol": 2**-8, "atol": 0.0}
    assert_trees_close(ours, jax.tree.map(lambda x: x.astype(dtype), interop), **same)
    # Each library's own run: in bfloat16 x = (y - (1 - b1) z) / b1 carries the
    # few ulps (2**-7 at 1) by which the two runs' params y end apart (see
    # BFLOAT16_UPDATES), divided by b1.
    close = {"rtol": 1e-5, "atol": 1e-5} if dtype == jnp.float32 else {"rtol": 2**-5, "atol": 2**-4}
    theirs = contrib.schedule_free_eval_params(run.optax_state, final(run.optax_params))
    assert_trees_close(ours, jax.tree.map(lambda x: x.astype(dtype), theirs), **close)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_schedule_free_sgd_matches_optax(dtype):
    # SGD's step must stay below 2 / 1330, the Rosenbrock leaf's curvature at the start.
    h = optax_hyper(dtype)
    run = check_against_optax(
        gradtx.schedule_free_sgd(1e-3, warmup_steps=10, weight_decay=1e-3),
        contrib.schedule_free_sgd(1e-3, warmup_steps=10, b1=h(0.9), weight_decay=h(1e-3)),
        dtype,
        tolerance=tolerance_for(dtype),
    )
    eval_params_match(run, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_schedule_free_adamw_matches_optax(dtype):
    h = optax_hyper(dtype)
    run = check_against_optax(
        gradtx.schedule_free_adamw(3e-2, warmup_steps=5, b2=0.99, weight_decay=1e-2),
        contrib.schedule_free_adamw(
            3e-2, warmup_steps=5, b1=h(0.9), b2=h(0.99), eps=h(1e-8), weight_decay=h(1e-2)
        ),
        dtype,
        tolerance=tolerance_for(dtype),
    )
    eval_params_match(run, dtype)


def test_schedule_free_wrapper_matches_optax():
    # Adam without momentum as the base, a schedule as the learning rate,
    # Optax's options away from their defaults.
    schedule = gradtx.linear_schedule(0.0, 2e-2, 20)
    optax_schedule = optax.linear_schedule(0.0, 2e-2, 20)
    run = check_against_optax(
        gradtx.schedule_free(gradtx.adam(schedule, b1=0.0), schedule, b1=0.8, weight_lr_power=1.0),
        contrib.schedule_free(
            optax.adam(optax_schedule, b1=0.0), optax_schedule, b1=0.8, weight_lr_power=1.0
        ),
        jnp.float32,
    )
    eval_params_match(run, jnp.float32)


def test_state_dtype_stores_z_narrow():
    # z in bfloat16 under float32 params, rounded alike by both libraries; a
    # last-bit difference in a base step now and then rounds z one bfloat16 ulp
    # apart, which moves y (built from z) by up to that ulp for good: so a
    # short run, its params compared at bfloat16's precision.
    run = run_jitted(
        gradtx.schedule_free_adamw(1e-2, state_dtype=jnp.bfloat16),
        contrib.schedule_free_adamw(1e-2, state_dtype=jnp.bfloat16),
        jnp.float32,
        steps=20,
    )
    for leaf in jax.tree.leaves(run.gradtx_state.z):
        assert leaf.dtype == jnp.bfloat16
    assert_same_layout(run.gradtx_state, run.optax_state, rtol=2**-7, atol=1e-5)
    assert_trees_close(run.gradtx_params, run.optax_params, rtol=2**-7, atol=1e-3)


def test_training_at_the_eval_params_converges():
    # Least squares: the averaged iterate x, not the training iterate y, is the
    # one to evaluate; it should get close to the solution.
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.standard_normal((64, 5)), jnp.float32)
    solution = jnp.asarray(rng.standard_normal(5), jnp.float32)
    targets = features @ solution + 0.01 * jnp.asarray(rng.standard_normal(64), jnp.float32)

    def loss(params):
        return jnp.mean((features @ params["w"] + params["b"] - targets) ** 2)

    tx = gradtx.schedule_free_adamw(5e-2, warmup_steps=20)
    params = {"w": jnp.zeros(5), "b": jnp.zeros([])}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return gradtx.apply_updates(params, updates), state

    for _ in range(300):
        params, state = step(params, state)
    evaluated = gradtx.schedule_free_eval_params(state, params)
    assert float(loss(evaluated)) < 1e-3 * float(loss({"w": jnp.zeros(5), "b": jnp.zeros([])}))
    np.testing.assert_allclose(evaluated["w"], solution, atol=2e-2)
    # Optax's function reads gradtx's state (same fields) and agrees.
    expected = contrib.schedule_free_eval_params(state, params)
    assert_trees_close(evaluated, expected, rtol=1e-6, atol=1e-7)


def test_first_step_with_warmup_keeps_the_params():
    # lr(0) = 0: z does not move and the weight 0/0 is guarded (Optax's nan_to_num).
    tx = gradtx.schedule_free_sgd(1.0, warmup_steps=10)
    params = jnp.array([1.0, -2.0])
    updates, state = tx.update(params, tx.init(params), params)
    assert jnp.all(jnp.isfinite(updates))
    assert float(state.max_lr) == pytest.approx(0.1)
    assert int(state.step_count) == 2


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: gradtx.schedule_free_sgd(b1=0.0), ValueError, "b1 must be in"),
        (lambda: gradtx.schedule_free_adamw(b2=1.0), ValueError, "b2 must be in"),
        (lambda: gradtx.schedule_free_adamw(weight_decay=-1.0), ValueError, "weight_decay"),
        (lambda: gradtx.schedule_free_sgd(-1.0), ValueError, "learning_rate must be >= 0"),
        (lambda: gradtx.schedule_free_sgd(warmup_steps=0), ValueError, "warmup_steps"),
        (lambda: gradtx.schedule_free_sgd(warmup_steps=2.5), TypeError, "warmup_steps"),
        (
            lambda: gradtx.schedule_free_adamw(gradtx.constant_schedule(1e-3), warmup_steps=10),
            TypeError,
            "learning_rate must be a number when warmup_steps",
        ),
        (
            lambda: gradtx.schedule_free(gradtx.sgd(0.1), 0.1, weight_lr_power=-1.0),
            ValueError,
            "weight_lr_power",
        ),
        (lambda: gradtx.schedule_free(gradtx.sgd, 0.1), TypeError, "base_optimizer"),
    ],
)
def test_bad_arguments_are_refused(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_params_are_required():
    tx = gradtx.schedule_free_sgd()
    params = jnp.zeros(2)
    with pytest.raises(ValueError, match="schedule_free needs the current parameters"):
        tx.update(params, tx.init(params))


def test_eval_params_refuses_another_state():
    tx = gradtx.adam(1e-3)
    params = jnp.zeros(2)
    with pytest.raises(ValueError, match="needs the state of schedule_free"):
        gradtx.schedule_free_eval_params(tx.init(params), params)


def test_an_optax_base_optimizer_is_wrapped():
    tx = gradtx.schedule_free(optax.sgd(0.1), 0.1)
    assert isinstance(tx.base_optimizer, gradtx.foreign)
    params = jnp.ones(2)
    updates, _ = tx.update(params, tx.init(params), params)
    expected, _ = contrib.schedule_free(optax.sgd(0.1), 0.1).update(
        params, contrib.schedule_free(optax.sgd(0.1), 0.1).init(params), params
    )
    np.testing.assert_allclose(updates, expected, rtol=1e-6)
