"""reduce_on_plateau against optax.contrib.reduce_on_plateau (Optax 0.2.8).

Two ways: chained after SGD on the shared parity problem (whose loss, with its
pure-noise leaves, stops improving within a few steps), and alone on a loss
sequence built to decrease, plateau, dip and plateau again, compared state by
state at every step, jitted and eagerly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from catalogue_parity import DTYPES, check_against_optax, dtype_id, optax_hyper

import gradtx


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_chained_after_sgd_matches_optax(dtype):
    # factor and min_scale stay Python floats for Optax in bfloat16: a float32
    # one makes its new scale float32 in one branch of its lax.cond and not in
    # the other, which lax.cond refuses. rtol and atol may be float32 (they
    # only enter the comparison, which gradtx makes in float32).
    h = optax_hyper(dtype)
    plateau = dict(factor=0.5, patience=3, cooldown=2, min_scale=0.05)
    run = check_against_optax(
        gradtx.chain(gradtx.sgd(2e-4), gradtx.reduce_on_plateau(rtol=1e-3, atol=1e-4, **plateau)),
        optax.chain(
            optax.sgd(h(2e-4)),
            optax.contrib.reduce_on_plateau(rtol=h(1e-3), atol=h(1e-4), **plateau),
        ),
        dtype,
        with_value=True,
    )
    scale = float(run.gradtx_state[1].scale)
    assert scale < 0.5, f"the scale was never reduced twice ({scale})"


def plateauing_losses(steps: int) -> np.ndarray:
    """Decreasing, flat with noise, a dip, flat again, then an exact repeat."""
    rng = np.random.default_rng(0)
    t = np.arange(steps)
    losses = np.where(t < 20, 5.0 - 0.2 * t, 1.0 + 0.01 * rng.standard_normal(steps))
    losses[60:65] = 0.5
    losses[65:] = 0.5 + 1e-5 * rng.standard_normal(steps - 65)
    losses[-10:] = 0.5
    return losses.astype(np.float32)


SEQUENCE_CASES = {
    "defaults": dict(),
    "patience-cooldown-min_scale": dict(
        factor=0.5, patience=4, rtol=1e-3, cooldown=3, min_scale=0.1
    ),
    "accumulated-atol": dict(factor=0.3, patience=2, rtol=0.0, atol=1e-3, accumulation_size=3),
}


def run_on_losses(tx, losses, params, *, jitted):
    def step(state, loss):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params, value=loss)
        return state, (state, updates)

    if jitted:
        return jax.jit(lambda: jax.lax.scan(step, tx.init(params), losses)[1])()
    state, seen = tx.init(params), []
    for loss in losses:
        state, out = step(state, loss)
        seen.append(out)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *seen)


@pytest.mark.parametrize("case", sorted(SEQUENCE_CASES))
def test_every_state_on_a_plateauing_loss_matches_optax(case):
    options = SEQUENCE_CASES[case]
    params = {"w": jnp.zeros(3), "b": None}
    losses = jnp.asarray(plateauing_losses(120))
    ours = gradtx.reduce_on_plateau(**options)
    theirs = optax.contrib.reduce_on_plateau(**options)
    (expected_states, expected_updates) = run_on_losses(theirs, losses, params, jitted=True)
    for jitted in (True, False):
        states, updates = run_on_losses(ours, losses, params, jitted=jitted)
        assert states._fields == expected_states._fields
        for name, mine, reference in zip(states._fields, states, expected_states):
            np.testing.assert_array_equal(mine, reference, err_msg=f"{name}, jitted={jitted}")
        np.testing.assert_array_equal(updates["w"], expected_updates["w"])
        assert updates["b"] is None
    assert len(set(np.asarray(expected_states.scale).tolist())) >= 3, "too few reductions"


def test_state_dtypes_follow_the_params_as_optax():
    params = {"low": jnp.zeros(2, jnp.bfloat16), "high": jnp.zeros(3, jnp.float32)}
    ours = gradtx.reduce_on_plateau().init(params)
    theirs = optax.contrib.reduce_on_plateau().init(params)
    assert type(ours).__name__ == "ReduceLROnPlateauState"
    for name, mine, reference in zip(ours._fields, ours, theirs):
        assert mine.dtype == reference.dtype, name
        np.testing.assert_array_equal(mine, reference, err_msg=name)
    updates, _ = gradtx.reduce_on_plateau().update(params, ours, value=1.0)
    assert updates["low"].dtype == jnp.bfloat16 and updates["high"].dtype == jnp.float32


def test_an_update_without_the_loss_says_how_to_pass_it():
    tx = gradtx.chain(gradtx.sgd(0.1), gradtx.reduce_on_plateau())
    params = {"w": jnp.zeros(2)}
    with pytest.raises(TypeError, match=r"needs the current loss: call update\(.*value=loss"):
        tx.update(params, tx.init(params), params)


def test_another_optimizers_state_is_refused():
    params = {"w": jnp.zeros(2)}
    with pytest.raises(ValueError, match="reduce_on_plateau was given a ScaleByAdamState"):
        gradtx.reduce_on_plateau().update(params, gradtx.scale_by_adam().init(params), value=1.0)


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        (dict(factor=1.0), "factor"),
        (dict(factor=0.0), "factor"),
        (dict(patience=0), "patience"),
        (dict(rtol=1.5), "rtol"),
        (dict(rtol=-1e-4), "rtol"),
        (dict(atol=-1.0), "atol"),
        (dict(cooldown=-1), "cooldown"),
        (dict(accumulation_size=0), "accumulation_size"),
        (dict(min_scale=-0.1), "min_scale"),
        (dict(rtol=0.0, atol=0.0), "rtol and atol"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_bad_hyperparameters_are_named(options, argument):
    with pytest.raises(ValueError, match=f"^{argument} must"):
        gradtx.reduce_on_plateau(**options)
