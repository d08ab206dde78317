"""Adan, Lion, NovoGrad and the optimistic methods against Optax 0.2.8."""

import jax
import jax.numpy as jnp
import optax
import pytest
from catalogue_parity import DTYPES, check_against_optax, dtype_id, optax_hyper
from parity_checks import computed_in_float32

import gradtx

# Leaves of the parity problem's tree whose weights are decayed, for both libraries.
MASK = {
    "parabola": {"kernel": True, "bias": False},
    "rosenbrock": True,
    "noise": False,
    "frozen": False,
}


# ---------------------------------------------------------------- adan


# Why a float32 reference in bfloat16 (adan, novograd): Optax computes in its
# operands' dtype, and scale_by_adan's difference of consecutive gradients,
# rounded to 8 bits, drove v 1.4x past the bfloat16 tolerance on the noise
# leaf; scale_by_novograd does not run at all on a bfloat16 state with float32
# gradients or hyperparameters (its lax.cond branches return bfloat16 and
# float32).


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_adan_matches_optax(dtype):
    h = optax_hyper(dtype)
    reference = computed_in_float32 if dtype == jnp.bfloat16 else lambda tx: tx
    check_against_optax(
        gradtx.adan(1e-2, weight_decay=0.05, mask=MASK),
        reference(
            optax.adan(
                1e-2,
                b1=h(0.98),
                b2=h(0.92),
                b3=h(0.99),
                eps=h(1e-8),
                eps_root=h(1e-8),
                weight_decay=h(0.05),
                mask=MASK,
            )
        ),
        dtype,
    )


def test_scale_by_adan_matches_optax():
    schedule = optax.linear_schedule(2e-2, 5e-3, 100)
    check_against_optax(
        gradtx.chain(
            gradtx.scale_by_adan(b1=0.9, b2=0.8, b3=0.95, eps=1e-6),
            gradtx.scale_by_learning_rate(gradtx.linear_schedule(2e-2, 5e-3, 100)),
        ),
        optax.chain(
            optax.scale_by_adan(b1=0.9, b2=0.8, b3=0.95, eps=1e-6),
            optax.scale_by_learning_rate(schedule),
        ),
        jnp.float32,
    )


# ---------------------------------------------------------------- lion


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_lion_matches_optax(dtype):
    h = optax_hyper(dtype)
    # In bfloat16 gradtx gets Optax's float32 b1 and b2 too. With Python floats it
    # folds 1 - b2 in double precision where Optax subtracts in float32: a few
    # bfloat16 momenta then round one ulp apart (5 elements after 100 steps), and
    # one update of 6300 took the other sign where the interpolation was near 0.
    # A learning rate and weight decay exact in bfloat16: gradtx rounds the learning
    # rate to the updates' dtype (3e-3 becomes 0.0029296875, as in Optax when its
    # updates are bfloat16), the float32 reference does not, and with updates of
    # nearly constant magnitude the rounding of params + updates then drifts one
    # way (0.033 against a bound of 0.011 on a noise leaf with 3e-3).
    check_against_optax(
        gradtx.lion(2.0**-8, b1=h(0.9), b2=h(0.99), weight_decay=0.125),
        optax.lion(2.0**-8, b1=h(0.9), b2=h(0.99), weight_decay=h(0.125)),
        dtype,
    )


@pytest.mark.parametrize("mode", ["smooth", "refined"])
def test_scale_by_lion_modes_match_optax(mode):
    check_against_optax(
        gradtx.chain(
            gradtx.scale_by_lion(0.8, 0.95, mode=mode, smooth_beta=3.0),
            gradtx.scale_by_learning_rate(3e-3),
        ),
        optax.chain(
            optax.scale_by_lion(0.8, 0.95, mode=mode, smooth_beta=3.0),
            optax.scale_by_learning_rate(3e-3),
        ),
        jnp.float32,
    )


# ---------------------------------------------------------------- novograd


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_novograd_matches_optax(dtype):
    h = optax_hyper(dtype)
    reference = computed_in_float32 if dtype == jnp.bfloat16 else lambda tx: tx
    check_against_optax(
        gradtx.novograd(1e-2, weight_decay=1e-3),
        reference(optax.novograd(1e-2, b1=h(0.9), b2=h(0.25), eps=h(1e-6), weight_decay=h(1e-3))),
        dtype,
    )


def test_scale_by_novograd_matches_optax():
    check_against_optax(
        gradtx.chain(
            gradtx.scale_by_novograd(0.8, 0.5, eps=1e-6, eps_root=1e-8, weight_decay=0.01),
            gradtx.scale_by_learning_rate(1e-2),
        ),
        optax.chain(
            optax.scale_by_novograd(0.8, 0.5, eps=1e-6, eps_root=1e-8, weight_decay=0.01),
            optax.scale_by_learning_rate(1e-2),
        ),
        jnp.float32,
    )


def test_scale_by_novograd_needs_params():
    tx = gradtx.scale_by_novograd()
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="scale_by_novograd needs the current parameters"):
        tx.update(params, tx.init(params))


# ---------------------------------------------------------------- optimistic


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_optimistic_gradient_descent_matches_optax(dtype):
    h = optax_hyper(dtype)
    check_against_optax(
        gradtx.optimistic_gradient_descent(2e-3, alpha=0.7, beta=0.5),
        optax.optimistic_gradient_descent(2e-3, alpha=h(0.7), beta=h(0.5)),
        dtype,
    )


def test_scale_by_optimistic_gradient_matches_optax():
    check_against_optax(
        gradtx.chain(
            gradtx.scale_by_optimistic_gradient(0.5, 1.5), gradtx.scale_by_learning_rate(4e-4)
        ),
        optax.chain(
            optax.scale_by_optimistic_gradient(0.5, 1.5), optax.scale_by_learning_rate(4e-4)
        ),
        jnp.float32,
    )


def test_optimistic_adam_matches_optax():
    with pytest.warns(DeprecationWarning, match="optimistic_adam_v2"):
        reference = optax.optimistic_adam(1e-2, 0.5, b2=0.99, nesterov=False)
    check_against_optax(
        gradtx.optimistic_adam(1e-2, 0.5, b2=0.99, nesterov=False), reference, jnp.float32
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_optimistic_adam_v2_matches_optax(dtype):
    h = optax_hyper(dtype)
    check_against_optax(
        gradtx.optimistic_adam_v2(
            gradtx.linear_schedule(1e-2, 1e-3, 100), alpha=1.0, beta=0.5, mu_dtype=h.storage
        ),
        optax.optimistic_adam_v2(
            optax.linear_schedule(1e-2, 1e-3, 100),
            alpha=h(1.0),
            beta=h(0.5),
            b1=h(0.9),
            b2=h(0.999),
            eps=h(1e-8),
            mu_dtype=h.storage,
        ),
        dtype,
    )


def test_optimistic_adam_defaults_optimism_to_the_learning_rate():
    chain = gradtx.optimistic_adam(0.03).expand()
    optimistic = chain.transforms[1]
    assert (optimistic.alpha, optimistic.beta) == (0.03, 0.03)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: gradtx.adan(1e-3, b3=1.0), ValueError, r"b3 must be in \[0, 1\), got 1.0"),
        (lambda: gradtx.scale_by_adan(eps_root=-1.0), ValueError, "eps_root must be >= 0"),
        (lambda: gradtx.lion(1e-3, b1=1.5), ValueError, r"b1 must be in \[0, 1\], got 1.5"),
        (lambda: gradtx.lion(-1.0), ValueError, "learning_rate must be >= 0, got -1.0"),
        (lambda: gradtx.scale_by_lion(mode="soft"), ValueError, "mode must be one of hard"),
        (lambda: gradtx.novograd(1e-3, b2=-0.1), ValueError, "b2 must be in"),
        (
            lambda: gradtx.novograd(1e-3, weight_decay=gradtx.constant_schedule(0.1)),
            TypeError,
            "weight_decay must be a number or an array, not a schedule",
        ),
        (
            lambda: gradtx.optimistic_gradient_descent(1e-3, beta=gradtx.constant_schedule(1.0)),
            TypeError,
            "beta must be a number or an array, not a schedule",
        ),
        (
            lambda: gradtx.optimistic_adam(gradtx.constant_schedule(1e-3)),
            ValueError,
            "does not support learning rate schedules",
        ),
        (lambda: gradtx.optimistic_adam(1e-3, b1=1.0), ValueError, "b1 must be in"),
        (lambda: gradtx.optimistic_adam_v2(1e-3, b2=1.0), ValueError, "b2 must be in"),
    ],
)
def test_bad_hyperparameters_are_refused(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_lion_updates_are_signs():
    tx = gradtx.scale_by_lion()
    grads = {"w": jnp.array([0.3, -2.0, 0.0])}
    updates, state = tx.update(grads, tx.init(grads))
    assert updates["w"].tolist() == [1.0, -1.0, 0.0]
    assert jax.tree.map(lambda x: x.dtype, state.mu) == {"w": jnp.float32}
