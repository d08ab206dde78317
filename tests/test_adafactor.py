"""Adafactor and its pieces against Optax 0.2.8.

The parity problem's leaves are at most 6 wide, so the cases factor leaves of
two dimensions >= 2 (``min_dim_size_to_factor=2``): the (4, 6) kernel, the
(2, 4) Rosenbrock leaf and the (2, 3, 4) noise leaf are factored, the vector
and the scalar are not.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from catalogue_parity import DTYPES, check_against_optax, dtype_id, optax_hyper

import gradtx

MASK = {
    "parabola": {"kernel": True, "bias": False},
    "rosenbrock": True,
    "noise": False,
    "frozen": False,
}


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_adafactor_matches_optax(dtype):
    # In bfloat16, multiply_by_parameter_scale scales each step by the RMS of
    # each library's own params, which drift apart by the rounding of p + u to
    # 8 bits (the gradients are taken at Optax's iterate, that scale is not):
    # the drift feeds back, to 2.25 ulps of the kernel by step 90, past the
    # harness's params bound (0.7 ulp without the scale). float32 covers it.
    scaled = dtype == jnp.float32
    h = optax_hyper(dtype)
    check_against_optax(
        gradtx.adafactor(1e-2, min_dim_size_to_factor=2, multiply_by_parameter_scale=scaled),
        optax.adafactor(
            1e-2,
            min_dim_size_to_factor=2,
            decay_rate=h(0.8),
            multiply_by_parameter_scale=scaled,
            clipping_threshold=h(1.0),
            eps=h(1e-30),
        ),
        dtype,
    )


ADAFACTOR_VARIANTS = {
    "momentum_weight_decay": dict(momentum=0.9, weight_decay_rate=1e-2, weight_decay_mask=MASK),
    "not_factored_unclipped": dict(factored=False, clipping_threshold=None),
    "absolute_steps_schedule": dict(multiply_by_parameter_scale=False, decay_rate=0.6),
    "relative_steps": dict(learning_rate=None),
}


@pytest.mark.parametrize("variant", list(ADAFACTOR_VARIANTS))
def test_adafactor_variants_match_optax(variant):
    options = dict(ADAFACTOR_VARIANTS[variant])
    gradtx_lr = optax_lr = options.pop("learning_rate", 1e-2)
    if variant.endswith("schedule"):
        gradtx_lr = gradtx.linear_schedule(1e-2, 1e-3, 50)
        optax_lr = optax.linear_schedule(1e-2, 1e-3, 50)
    check_against_optax(
        gradtx.adafactor(gradtx_lr, min_dim_size_to_factor=2, **options),
        optax.adafactor(optax_lr, min_dim_size_to_factor=2, **options),
        jnp.float32,
    )


def test_pieces_match_optax():
    check_against_optax(
        gradtx.chain(
            gradtx.scale_by_factored_rms(decay_rate=0.7, min_dim_size_to_factor=3),
            gradtx.scale_by_param_block_rms(min_scale=0.5),
            gradtx.scale(-1e-2),
        ),
        optax.chain(
            optax.scale_by_factored_rms(decay_rate=0.7, min_dim_size_to_factor=3),
            optax.scale_by_param_block_rms(min_scale=0.5),
            optax.scale(-1e-2),
        ),
        jnp.float32,
    )


def test_factored_state_layout():
    params = {
        "m": jnp.zeros((4, 6)),
        "t": jnp.zeros((2, 3, 4)),
        "v": jnp.zeros(6),
        "s": jnp.zeros(()),
    }
    ours = gradtx.scale_by_factored_rms(min_dim_size_to_factor=2).init(params)
    theirs = optax.scale_by_factored_rms(min_dim_size_to_factor=2).init(params)
    shapes = lambda tree: jax.tree.map(jnp.shape, tree)  # noqa: E731
    assert shapes(ours._asdict()) == shapes(theirs._asdict())
    assert ours.v_row["m"].shape == (4,) and ours.v_col["m"].shape == (6,)
    assert ours.v_row["t"].shape == (2, 3) and ours.v_col["t"].shape == (2, 4)
    # The kernel's second largest dimension, 4, is below 5: not factored.
    unfactored = gradtx.scale_by_factored_rms(min_dim_size_to_factor=5).init(params)
    assert unfactored.v["m"].shape == (4, 6) and unfactored.v_row["m"].shape == (1,)


@pytest.mark.parametrize("start", [0, 10])
def test_step_offset(start):
    # From a count past the offset (a fine-tuning run restored at step 10), the
    # numbers are Optax's; before it Optax's decay is nan, gradtx's is 0.
    ours = gradtx.adafactor(1e-2, min_dim_size_to_factor=2, decay_offset=5)
    theirs = optax.adafactor(1e-2, min_dim_size_to_factor=2, decay_offset=5)
    params = {"m": jnp.ones((2, 3)), "v": jnp.ones(3)}
    grads = {
        "m": jnp.asarray([[1.0, -2.0, 0.5], [3.0, 0.1, -1.0]]),
        "v": jnp.asarray([1.0, 0.5, -2]),
    }
    count = jnp.asarray(start, jnp.int32)
    ours_state = (ours.init(params)[0]._replace(count=count),) + ours.init(params)[1:]
    theirs_state = (theirs.init(params)[0]._replace(count=count),) + theirs.init(params)[1:]
    for _ in range(3):
        ours_updates, ours_state = ours.update(grads, ours_state, params)
        theirs_updates, theirs_state = theirs.update(grads, theirs_state, params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(ours_updates))
    if start >= 5:
        np.testing.assert_allclose(ours_updates["m"], theirs_updates["m"], rtol=1e-6)
        np.testing.assert_allclose(ours_updates["v"], theirs_updates["v"], rtol=1e-6)
    else:
        assert np.all(np.isnan(theirs_updates["v"]))


def test_decay_stays_finite_at_the_saturated_count():
    # Optax adds one to the int32 count, which wraps at 2**31 - 1 (its updates
    # are then nan); gradtx adds it in float32.
    tx = gradtx.scale_by_factored_rms(min_dim_size_to_factor=2)
    params = jnp.ones((2, 3))
    _, state = tx.update(params, tx.init(params), params)
    state = state._replace(count=jnp.asarray(2**31 - 1, jnp.int32))
    updates, state = tx.update(params, state, params)
    assert np.all(np.isfinite(updates)) and int(state.count) == 2**31 - 1


def test_custom_decay_rate_fn():
    fn = lambda step, rate: jnp.minimum(rate, 1.0 - 1.0 / (step + 2.0))  # noqa: E731
    ours = gradtx.scale_by_factored_rms(decay_rate=0.5, decay_rate_fn=fn)
    theirs = optax.scale_by_factored_rms(decay_rate=0.5, decay_rate_fn=fn)
    params = jnp.ones((2, 3))
    grads = jnp.asarray([[1.0, -2.0, 0.5], [3.0, 0.1, -1.0]])
    ours_state, theirs_state = ours.init(params), theirs.init(params)
    for _ in range(3):
        ours_updates, ours_state = ours.update(grads, ours_state, params)
        theirs_updates, theirs_state = theirs.update(grads, theirs_state, params)
    np.testing.assert_allclose(ours_updates, theirs_updates, rtol=1e-6)
    with pytest.raises(gradtx.ConfigError, match="decay_rate_fn"):
        gradtx.to_config(ours)


@pytest.mark.parametrize(
    "tx", [gradtx.scale_by_factored_rms(), gradtx.scale_by_param_block_rms(), gradtx.adafactor()]
)
def test_pieces_need_params(tx):
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: gradtx.scale_by_factored_rms(decay_rate=-0.1), "decay_rate"),
        (lambda: gradtx.scale_by_factored_rms(step_offset=-1), "step_offset"),
        (lambda: gradtx.scale_by_factored_rms(epsilon=-1.0), "epsilon"),
        (lambda: gradtx.scale_by_factored_rms(min_dim_size_to_factor=-1), "min_dim_size_to_factor"),
        (lambda: gradtx.scale_by_param_block_rms(min_scale=-1.0), "min_scale"),
        (lambda: gradtx.adafactor(-1.0), "learning_rate"),
        (lambda: gradtx.adafactor(decay_rate=-1.0), "decay_rate"),
        (lambda: gradtx.adafactor(decay_offset=-1), "decay_offset"),
        (lambda: gradtx.adafactor(clipping_threshold=0.0), "clipping_threshold"),
        (lambda: gradtx.adafactor(momentum=1.5), "momentum"),
        (lambda: gradtx.adafactor(weight_decay_rate=-1.0), "weight_decay_rate"),
        (lambda: gradtx.adafactor(eps=-1.0), "eps"),
    ],
)
def test_bad_hyperparameters_are_named(build, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        build()
