"""ADOPT, AdEMAMix and Simplified AdEMAMix against optax.contrib (Optax 0.2.8)."""

import jax.numpy as jnp
import optax
import pytest
from catalogue_parity import DTYPES, check_against_optax, dtype_id, optax_hyper
from optax import contrib
from parity_checks import computed_in_float32

import gradtx

# Leaves of the parity problem's tree whose weights are decayed, for both libraries.
MASK = {
    "parabola": {"kernel": True, "bias": False},
    "rosenbrock": True,
    "noise": False,
    "frozen": False,
}


# ---------------------------------------------------------------- adopt


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_adopt_matches_optax(dtype):
    h = optax_hyper(dtype)
    check_against_optax(
        gradtx.adopt(1e-2, b2=0.999),
        contrib.adopt(1e-2, b1=h(0.9), b2=h(0.999), eps=h(1e-6), mu_dtype=h.storage),
        dtype,
    )


def test_scale_by_adopt_options_match_optax():
    # Nesterov with a schedule as the clipping bound, then no clipping at all.
    check_against_optax(
        gradtx.chain(
            gradtx.scale_by_adopt(
                b1=0.8, nesterov=True, clip_value_fn=gradtx.linear_schedule(0.5, 2.0, 50)
            ),
            gradtx.scale(-1e-2),
        ),
        optax.chain(
            contrib.scale_by_adopt(
                b1=0.8, nesterov=True, clip_value_fn=optax.linear_schedule(0.5, 2.0, 50)
            ),
            optax.scale(-1e-2),
        ),
        jnp.float32,
    )
    check_against_optax(
        gradtx.chain(gradtx.scale_by_adopt(b2=0.99, use_clipping=False), gradtx.scale(-1e-2)),
        optax.chain(contrib.scale_by_adopt(b2=0.99, use_clipping=False), optax.scale(-1e-2)),
        jnp.float32,
    )


def test_adopt_first_step_only_initializes_the_second_moment():
    tx = gradtx.adopt(1.0)
    params = jnp.zeros(3)
    updates, state = tx.update(jnp.array([1.0, -2.0, 3.0]), tx.init(params), params)
    assert jnp.all(updates == 0)
    assert jnp.allclose(state[0].nu, jnp.array([1.0, 4.0, 9.0]))


def test_adopt_default_clip_value_round_trips_through_a_config():
    tx = gradtx.adopt(1e-3, nesterov=True)
    assert tx.clip_value_fn is None  # Optax's lambda x: x**0.25, built in
    assert gradtx.from_config(gradtx.to_config(tx)) == tx


# ---------------------------------------------------------------- ademamix


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_ademamix_matches_optax(dtype):
    # A step of 3e-2 is several bfloat16 ulps of the parameters (~1): at 1e-2
    # (~1.4 ulps) whether p + u rounds up or down turns on the last bit of u,
    # and a few such flips put the bfloat16 params past their bound.
    h = optax_hyper(dtype)
    check_against_optax(
        gradtx.ademamix(3e-2, b3=0.999, weight_decay=1e-2, mask=MASK),
        contrib.ademamix(
            3e-2,
            b1=h(0.9),
            b2=h(0.999),
            b3=h(0.999),
            alpha=5.0,
            eps=h(1e-8),
            mu_dtype=h.storage,
            weight_decay=h(1e-2),
            mask=MASK,
        ),
        dtype,
    )


def test_scale_by_ademamix_schedules_match_optax():
    # b3 and alpha warm up with schedules (the paper's recipe), read at count_m2.
    check_against_optax(
        gradtx.chain(
            gradtx.scale_by_ademamix(
                b3=gradtx.linear_schedule(0.9, 0.999, 50),
                alpha=gradtx.linear_schedule(0.0, 8.0, 50),
                eps_root=1e-8,
            ),
            gradtx.scale(-1e-2),
        ),
        optax.chain(
            contrib.scale_by_ademamix(
                b3=optax.linear_schedule(0.9, 0.999, 50),
                alpha=optax.linear_schedule(0.0, 8.0, 50),
                eps_root=1e-8,
            ),
            optax.scale(-1e-2),
        ),
        jnp.float32,
    )


# Why a float32 reference in bfloat16: Optax's scale_by_simplified_ademamix
# updates n as g*g + b2 * (n - g*g), and in bfloat16 the square and the
# difference are rounded to 8 bits before b2 (a float32 array) widens them; n
# remembers ~20 steps of that rounding (it drifted 4.5% from gradtx's, computed
# in float32, by step 100).
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_simplified_ademamix_matches_optax(dtype):
    h = optax_hyper(dtype)
    reference = computed_in_float32 if dtype == jnp.bfloat16 else lambda tx: tx
    check_against_optax(
        gradtx.simplified_ademamix(1e-3, b1=0.9, alpha=2.0, weight_decay=1e-2, mask=MASK),
        reference(
            contrib.simplified_ademamix(
                1e-3,
                b1=h(0.9),
                b2=h(0.95),
                alpha=2.0,
                eps=h(1e-8),
                weight_decay=h(1e-2),
                mask=MASK,
            )
        ),
        dtype,
    )


def test_scale_by_simplified_ademamix_schedule_matches_optax():
    check_against_optax(
        gradtx.chain(
            gradtx.scale_by_simplified_ademamix(
                b1=0.9, alpha=gradtx.linear_schedule(0.0, 10.0, 50), eps_root=1e-8
            ),
            gradtx.scale(-1e-3),
        ),
        optax.chain(
            contrib.scale_by_simplified_ademamix(
                b1=0.9, alpha=optax.linear_schedule(0.0, 10.0, 50), eps_root=1e-8
            ),
            optax.scale(-1e-3),
        ),
        jnp.float32,
    )


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: gradtx.adopt(1e-3, b1=1.0), "b1 must be in"),
        (lambda: gradtx.scale_by_adopt(b2=-0.1), "b2 must be in"),
        (lambda: gradtx.adopt(-1e-3), "learning_rate must be >= 0"),
        (lambda: gradtx.scale_by_adopt(eps=-1.0), "eps must be >= 0"),
        (lambda: gradtx.ademamix(1e-3, b3=1.0), "b3 must be in"),
        (lambda: gradtx.scale_by_ademamix(alpha=-1.0), "alpha must be >= 0"),
        (lambda: gradtx.ademamix(1e-3, weight_decay=-0.1), "weight_decay must be >= 0"),
        (lambda: gradtx.simplified_ademamix(1e-3, b1=1.5), "b1 must be in"),
        (lambda: gradtx.scale_by_simplified_ademamix(eps_root=-1.0), "eps_root must be >= 0"),
    ],
)
def test_bad_hyperparameters_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_clip_value_fn_must_be_callable():
    with pytest.raises(TypeError, match="clip_value_fn"):
        gradtx.adopt(1e-3, clip_value_fn=2.0)
