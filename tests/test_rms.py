"""Adagrad, RMSProp, Adadelta and SM3 (and their pieces) against Optax 0.2.8."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from catalogue_parity import DTYPES, check_against_optax, dtype_id, optax_hyper

import gradtx

# Leaves of the parity problem's tree whose weights are decayed, for both libraries.
MASK = {
    "parabola": {"kernel": True, "bias": False},
    "rosenbrock": True,
    "noise": False,
    "frozen": False,
}


# ---------------------------------------------------------------- adagrad, rmsprop


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_adagrad_matches_optax(dtype):
    h = optax_hyper(dtype)
    check_against_optax(
        gradtx.adagrad(0.1, initial_accumulator_value=0.2, eps=1e-6),
        optax.adagrad(0.1, initial_accumulator_value=h(0.2), eps=h(1e-6)),
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_rmsprop_matches_optax(dtype):
    h = optax_hyper(dtype)
    check_against_optax(
        gradtx.rmsprop(1e-2, decay=0.9),
        optax.rmsprop(1e-2, decay=h(0.9), eps=h(1e-8)),
        dtype,
    )


RMSPROP_VARIANTS = {
    "centered_momentum": dict(centered=True, momentum=0.9),
    "nesterov": dict(momentum=0.8, nesterov=True, initial_scale=1.0),
    "pytorch_eps_bias_correction": dict(eps=1e-6, eps_in_sqrt=False, bias_correction=True),
    # Bias-corrected, the first step's variance is 0 (nan through sqrt with
    # eps_in_sqrt=False, in Optax too) unless the second moment starts above 0.
    # Started at 100 it is ~1900 after correction, next to the Rosenbrock leaf's
    # squared gradients (~5e4); near 0 the variance is a cancellation whose
    # rounding depends on how XLA fuses each program (1.5e-4 apart at 1.0).
    "centered_bias_correction_schedule": dict(
        centered=True, bias_correction=True, eps_in_sqrt=False, eps=1e-4, initial_scale=100.0
    ),
}


@pytest.mark.parametrize("variant", list(RMSPROP_VARIANTS))
def test_rmsprop_variants_match_optax(variant):
    options = RMSPROP_VARIANTS[variant]
    gradtx_lr = optax_lr = 1e-2
    if variant.endswith("schedule"):
        gradtx_lr = gradtx.linear_schedule(1e-2, 1e-3, 50)
        optax_lr = optax.linear_schedule(1e-2, 1e-3, 50)
    check_against_optax(
        gradtx.rmsprop(gradtx_lr, decay=0.95, **options),
        optax.rmsprop(optax_lr, decay=0.95, **options),
        jnp.float32,
    )


@pytest.mark.parametrize(
    "name, options",
    [
        ("scale_by_rss", dict(initial_accumulator_value=0.0, eps=1e-8)),
        ("scale_by_rms", dict(decay=0.99, initial_scale=0.5, bias_correction=True)),
        ("scale_by_stddev", dict(decay=0.9, eps=1e-4)),
        ("scale_by_adadelta", dict(rho=0.5, eps=1e-4)),
        ("scale_by_sm3", dict(b1=0.5, b2=0.99)),
    ],
)
def test_pieces_match_optax(name, options):
    gradtx_piece = getattr(gradtx, name)(**options)
    optax_piece = getattr(optax, name)(**options)
    if name == "scale_by_sm3":
        optax_piece = scalars_as_vectors(optax_piece)
    check_against_optax(
        gradtx.chain(gradtx_piece, gradtx.scale(-1e-2)),
        optax.chain(optax_piece, optax.scale(-1e-2)),
        jnp.float32,
    )


def test_rmsprop_state_is_optax_s():
    params = {"w": jnp.zeros(3)}
    for options in [{}, {"bias_correction": True}, {"centered": True, "momentum": 0.9}]:
        for centered in [False, True]:
            ours = gradtx.rmsprop(0.1, **{"centered": centered, **options}).init(params)
            theirs = optax.rmsprop(0.1, **{"centered": centered, **options}).init(params)
            assert [type(s).__name__ for s in ours] == [type(s).__name__ for s in theirs]


# ---------------------------------------------------------------- adadelta


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_adadelta_matches_optax(dtype):
    h = optax_hyper(dtype)
    check_against_optax(
        gradtx.adadelta(10.0, rho=0.9, eps=1e-6, weight_decay=1e-2, weight_decay_mask=MASK),
        optax.adadelta(10.0, rho=h(0.9), eps=h(1e-6), weight_decay=h(1e-2), weight_decay_mask=MASK),
        dtype,
    )


def test_adadelta_without_learning_rate_is_optax_s():
    # Optax's scale_by_learning_rate(None) is the identity: the updates are not negated.
    check_against_optax(
        gradtx.adadelta(rho=0.5, eps=1e-4),
        optax.adadelta(rho=0.5, eps=1e-4),
        jnp.float32,
        min_move=1e-3,
    )
    assert isinstance(gradtx.adadelta().expand().transforms[-1], gradtx.identity)


# ---------------------------------------------------------------- sm3


def scalars_as_vectors(optax_tx):
    """Optax's SM3, which fails on scalar leaves, run on them as one-entry vectors.

    gradtx keeps a scalar's accumulator as one array of shape () (a scalar is
    its own cover); this reference reshapes scalars to (1,) for Optax and its
    (1,) state leaves back to (), so the states compare leaf by leaf. The
    parity tree has no other (1,) or scalar float leaves in this state.
    """

    def lift(tree):
        return jax.tree.map(lambda x: x.reshape(1) if x.ndim == 0 else x, tree)

    def lower(tree):
        return jax.tree.map(lambda x: x.reshape(()) if x.shape == (1,) else x, tree)

    def update(updates, state, params=None, **extra_args):
        new_updates, state = optax_tx.update(lift(updates), lift(state), lift(params))
        return jax.tree.map(lambda u, g: u.reshape(g.shape), new_updates, updates), lower(state)

    return optax.GradientTransformationExtraArgs(
        lambda params: lower(optax_tx.init(lift(params))), update
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_sm3_matches_optax(dtype):
    h = optax_hyper(dtype)
    check_against_optax(
        gradtx.sm3(0.05, momentum=0.9),
        scalars_as_vectors(optax.sm3(0.05, momentum=h(0.9))),
        dtype,
    )


def test_sm3_state_layout():
    params = {"m": jnp.zeros((2, 3)), "v": jnp.zeros(4), "s": jnp.zeros(())}
    state = gradtx.scale_by_sm3().init(params)
    assert [a.shape for a in state.mu["m"]] == [(2,), (3,)]
    assert [a.shape for a in state.mu["v"]] == [(4,)]
    assert [a.shape for a in state.mu["s"]] == [()]
    theirs = optax.scale_by_sm3().init({"m": params["m"], "v": params["v"]})
    assert jax.tree.structure(theirs.mu) == jax.tree.structure(
        {"m": state.mu["m"], "v": state.mu["v"]}
    )


def test_sm3_rejects_complex_params():
    with pytest.raises(ValueError, match="complex"):
        gradtx.scale_by_sm3().init({"w": jnp.zeros(2, jnp.complex64)})


# ---------------------------------------------------------------- complex gradients


@pytest.mark.parametrize("name", ["scale_by_rss", "scale_by_rms", "scale_by_stddev"])
def test_complex_gradients_match_optax(name):
    params = jnp.zeros(3, jnp.complex64)
    grads = jnp.asarray([1 + 2j, -0.5j, 3.0], jnp.complex64)
    ours, theirs = getattr(gradtx, name)(), getattr(optax, name)()
    ours_state, theirs_state = ours.init(params), theirs.init(params)
    for _ in range(2):
        ours_updates, ours_state = ours.update(grads, ours_state)
        theirs_updates, theirs_state = theirs.update(grads, theirs_state)
    np.testing.assert_allclose(ours_updates, theirs_updates, rtol=1e-6)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: gradtx.scale_by_rss(initial_accumulator_value=-1.0), "initial_accumulator_value"),
        (lambda: gradtx.adagrad(0.1, eps=-1.0), "eps"),
        (lambda: gradtx.adagrad(-0.1), "learning_rate"),
        (lambda: gradtx.scale_by_rms(decay=1.5), "decay"),
        (lambda: gradtx.scale_by_rms(decay=1.0, bias_correction=True), "decay"),
        (lambda: gradtx.scale_by_stddev(initial_scale=-1.0), "initial_scale"),
        (lambda: gradtx.rmsprop(0.1, momentum=-0.5), "momentum"),
        (lambda: gradtx.rmsprop(0.1, centered=True, eps=-1.0), "eps"),
        (lambda: gradtx.scale_by_adadelta(rho=2.0), "rho"),
        (lambda: gradtx.adadelta(1.0, weight_decay=-1.0), "weight_decay"),
        (lambda: gradtx.scale_by_sm3(b2=1.5), "b2"),
        (lambda: gradtx.sm3(0.1, momentum=1.5), "momentum"),
        (lambda: gradtx.sm3(-0.1), "learning_rate"),
    ],
)
def test_bad_hyperparameters_are_named(build, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        build()


def test_adadelta_needs_params():
    tx = gradtx.adadelta(1.0)
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))


def test_another_state_is_refused():
    tx = gradtx.scale_by_rss()
    with pytest.raises(ValueError, match="scale_by_rss was given a ScaleByRmsState"):
        tx.update(jnp.ones(2), gradtx.scale_by_rms().init(jnp.zeros(2)))
