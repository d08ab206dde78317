"""signSGD, Signum, LARS, LAMB, Fromage, Polyak SGD, Rprop and noisy SGD against Optax 0.2.8.

Each alias runs in float32 and bfloat16, each piece (``scale_by_*``) and each
option in float32, on the shared parity problem (tests/catalogue_parity.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from catalogue_parity import DTYPES, TOLERANCES, check_against_optax, dtype_id, optax_hyper
from parity_checks import assert_same_layout

import gradtx

# Leaves of the parity problem's tree that a mask selects, for both libraries.
MASK = {
    "parabola": {"kernel": True, "bias": False},
    "rosenbrock": True,
    "noise": False,
    "frozen": False,
}
TRUST_MASK = {
    "parabola": {"kernel": False, "bias": True},
    "rosenbrock": True,
    "noise": True,
    "frozen": False,
}


def matrices_only(params):
    """A callable mask: the leaves with two or more dimensions."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def keys_as_data(tx, make):
    """``tx`` keeping its PRNG keys as key data, so that the harness compares states as numbers."""
    has_key = lambda node: hasattr(node, "rng_key")  # noqa: E731

    def replace_keys(state, convert):
        return jax.tree.map(
            lambda node: node._replace(rng_key=convert(node.rng_key)) if has_key(node) else node,
            state,
            is_leaf=has_key,
        )

    def update(updates, state, params=None, **extra_args):
        updates, state = tx.update(
            updates, replace_keys(state, jax.random.wrap_key_data), params, **extra_args
        )
        return updates, replace_keys(state, jax.random.key_data)

    # Compiled, so that the harness's eager steps do not run op by op.
    return make(lambda params: replace_keys(tx.init(params), jax.random.key_data), jax.jit(update))


# ---------------------------------------------------------------- aliases, both dtypes


def _aliases(h):
    """(gradtx, Optax) pairs of every alias, Optax's built with ``h`` for the dtype."""
    return {
        "sign_sgd": (gradtx.sign_sgd(1e-3), optax.sign_sgd(1e-3)),
        "signum": (gradtx.signum(1e-3, beta=0.8), optax.signum(1e-3, beta=h(0.8))),
        "lars": (
            gradtx.lars(0.5, weight_decay=1e-3, trust_coefficient=0.01),
            optax.lars(0.5, weight_decay=h(1e-3), trust_coefficient=h(0.01), momentum=h(0.9)),
        ),
        "lamb": (
            gradtx.lamb(0.05, weight_decay=1e-2),
            optax.lamb(0.05, b1=h(0.9), b2=h(0.999), eps=h(1e-6), weight_decay=h(1e-2)),
        ),
        "fromage": (gradtx.fromage(0.05), optax.fromage(0.05, min_norm=h(1e-6))),
        "polyak_sgd": (
            gradtx.polyak_sgd(max_learning_rate=1e-3, f_min=-50.0),
            optax.polyak_sgd(max_learning_rate=h(1e-3), f_min=h(-50.0)),
        ),
        "noisy_sgd": (
            keys_as_data(gradtx.noisy_sgd(1e-3, eta=0.01, key=3), gradtx.GradientTransformation),
            keys_as_data(
                optax.noisy_sgd(1e-3, eta=h(0.01), gamma=h(0.55), key=3),
                optax.GradientTransformationExtraArgs,
            ),
        ),
    }


ALIASES = list(_aliases(optax_hyper(jnp.float32)))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", ALIASES)
def test_alias_matches_optax(name, dtype):
    ours, theirs = _aliases(optax_hyper(dtype))[name]
    # In bfloat16 the trust-ratio rules read params whose trajectories part by an
    # ulp here and there (gradtx adds bfloat16 updates, Optax float32 ones) and
    # Optax takes the norms in bfloat16: one more bit of the leaf's scale.
    loose = dtype == jnp.bfloat16 and name in ("lamb", "fromage")
    tolerance = {**TOLERANCES[dtype], "scale_atol": 2.0**-6} if loose else None
    check_against_optax(ours, theirs, dtype, with_value=name == "polyak_sgd", tolerance=tolerance)


# ---------------------------------------------------------------- options and pieces, float32


def _options():
    lr = gradtx.linear_schedule(1e-2, 1e-3, 60)
    optax_lr = optax.linear_schedule(1e-2, 1e-3, 60)
    return {
        "signum-schedule-bf16-accumulator": (
            gradtx.signum(lr, beta=0.5, accumulator_dtype=jnp.bfloat16),
            optax.signum(optax_lr, beta=0.5, accumulator_dtype=jnp.bfloat16),
        ),
        "lars-nesterov-masks": (
            gradtx.lars(
                lr,
                weight_decay=1e-2,
                weight_decay_mask=MASK,
                trust_coefficient=0.05,
                eps=1e-6,
                trust_ratio_mask=TRUST_MASK,
                momentum=0.8,
                nesterov=True,
            ),
            optax.lars(
                optax_lr,
                weight_decay=1e-2,
                weight_decay_mask=MASK,
                trust_coefficient=0.05,
                eps=1e-6,
                trust_ratio_mask=TRUST_MASK,
                momentum=0.8,
                nesterov=True,
            ),
        ),
        "lars-unmasked-decay-schedule": (
            gradtx.lars(1e-4, weight_decay=lr, weight_decay_mask=None, trust_ratio_mask=False),
            optax.lars(1e-4, weight_decay=optax_lr, weight_decay_mask=None, trust_ratio_mask=False),
        ),
        "lamb-mask-eps_root": (
            gradtx.lamb(lr, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10, weight_decay=0.1, mask=MASK),
            optax.lamb(
                optax_lr, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10, weight_decay=0.1, mask=MASK
            ),
        ),
        "lamb-callable-mask": (
            gradtx.lamb(1e-2, weight_decay=0.1, mask=matrices_only),
            optax.lamb(1e-2, weight_decay=0.1, mask=matrices_only),
        ),
        "fromage-schedule": (
            gradtx.fromage(lr, min_norm=1e-4),
            optax.fromage(optax_lr, min_norm=1e-4),
        ),
        "polyak_sgd-sps+-schedule": (
            gradtx.polyak_sgd(2e-3, scaling=lr, f_min=1.0, eps=1e-6, variant="sps+"),
            optax.polyak_sgd(2e-3, scaling=optax_lr, f_min=1.0, eps=1e-6, variant="sps+"),
        ),
        # Pieces, each followed by a descent step.
        "scale_by_sign": (
            gradtx.chain(gradtx.scale_by_sign(), gradtx.scale(-1e-3)),
            optax.chain(optax.scale_by_sign(), optax.scale(-1e-3)),
        ),
        "scale_by_trust_ratio": (
            gradtx.chain(gradtx.scale_by_trust_ratio(1e-3, 0.5, 1e-4), gradtx.scale(-1e-2)),
            optax.chain(optax.scale_by_trust_ratio(1e-3, 0.5, 1e-4), optax.scale(-1e-2)),
        ),
        "scale_by_polyak": (
            gradtx.chain(gradtx.scale_by_polyak(-10.0, 1e-3, 1e-8), gradtx.scale(-1.0)),
            optax.chain(optax.scale_by_polyak(-10.0, 1e-3, 1e-8), optax.scale(-1.0)),
        ),
        # gradtx.sgd's accumulator_dtype is Optax's: the trace stored narrow, the
        # updates float32. gradtx also multiplies by the momentum in float32, where
        # Optax, given a Python float, multiplies the bfloat16 trace in bfloat16;
        # given a float32 momentum it does gradtx's arithmetic.
        "sgd-bf16-accumulator": (
            gradtx.sgd(1e-4, momentum=0.9, accumulator_dtype=jnp.bfloat16),
            optax.sgd(1e-4, momentum=jnp.float32(0.9), accumulator_dtype=jnp.bfloat16),
        ),
    }


@pytest.mark.parametrize("name", list(_options()))
def test_option_matches_optax(name):
    ours, theirs = _options()[name]
    check_against_optax(ours, theirs, jnp.float32, with_value="polyak" in name)


# ---------------------------------------------------------------- rprop
#
# Optax 0.2.8's scale_by_rprop returns the previous step's update (zero at the
# first step): it computes the current one, step * sign(g), into its state but
# emits state.prev_updates (google-deepmind/optax pull request #1725, open).
# gradtx returns the current update, as Riedmiller & Braun and torch.optim.Rprop
# do. Both keep the same state, so the test checks gradtx's updates against the
# paper's rule in NumPy, its state against Optax's, and Optax's updates against
# gradtx's of the step before: the difference is exactly that lag.

RPROP_STEPS = 60


def _rprop_gradients(dtype):
    rng = np.random.default_rng(3)
    drift = np.array([2.0, 0.5, 0.0, -2.0], np.float32)  # signs that hold, and flips
    grads = rng.standard_normal((RPROP_STEPS, 3, 4)).astype(np.float32) + drift
    grads[::7, 0] = 0.0  # zero gradients keep the step size
    return jnp.asarray(grads, dtype)


def _rprop_reference(grads, storage, lr, eta_minus, eta_plus, lo, hi):
    """Rprop without backtracking, in float32, state rounded to ``storage``: updates and flips."""
    f32 = np.float32
    grads = np.asarray(grads, f32)
    step = np.full(grads.shape[1:], lr, storage).astype(f32)
    prev = np.zeros(grads.shape[1:], f32)
    updates, flips = [], []
    for g in grads:
        agreement = g * prev
        factor = np.where(agreement > 0, f32(eta_plus), f32(eta_minus))
        step = np.where(agreement == 0, step, np.clip(step * factor, f32(lo), f32(hi)))
        update = np.where(agreement < 0, f32(0), step * np.sign(g))
        step, prev = step.astype(storage).astype(f32), update.astype(storage).astype(f32)
        updates.append(update.astype(storage))
        flips.append(agreement < 0)
    return np.stack(updates), np.stack(flips)


def _run(tx, grads):
    state = tx.init(grads[0])
    updates = []
    for g in grads:
        u, state = tx.update(g, state)
        updates.append(u)
    return jnp.stack(updates), state


RPROP_CASES = {
    "rprop": (gradtx.rprop(1e-3, max_step_size=0.1), optax.rprop(1e-3, max_step_size=0.1), -1),
    "scale_by_rprop": (
        gradtx.scale_by_rprop(1e-2, 0.3, 1.5, 1e-4, 0.05),
        optax.scale_by_rprop(1e-2, 0.3, 1.5, 1e-4, 0.05),
        1,
    ),
}


@pytest.mark.parametrize(
    "name, dtype",
    [("rprop", jnp.float32), ("rprop", jnp.bfloat16), ("scale_by_rprop", jnp.float32)],
)
def test_rprop_follows_the_paper_and_keeps_optax_state(name, dtype):
    ours, theirs, sign = RPROP_CASES[name]
    piece = ours if name == "scale_by_rprop" else ours.expand().transforms[0]
    grads = _rprop_gradients(dtype)
    updates, state = _run(ours, grads)
    expected, flips = _rprop_reference(
        grads,
        jnp.dtype(dtype),
        piece.learning_rate,
        piece.eta_minus,
        piece.eta_plus,
        piece.min_step_size,
        piece.max_step_size,
    )
    assert updates.dtype == dtype
    np.testing.assert_array_equal(
        np.asarray(updates, np.float32), sign * expected.astype(np.float32)
    )
    assert np.abs(expected).max() > 1e-2 and flips.any()  # steps grew, and signs flipped
    if dtype != jnp.float32:
        return
    optax_updates, optax_state = _run(theirs, grads)
    rprop_state = state if name == "scale_by_rprop" else state[0]
    optax_rprop_state = optax_state if name == "scale_by_rprop" else optax_state[0]
    assert_same_layout(rprop_state, optax_rprop_state, rtol=0, atol=0)
    lagged = np.where(flips[1:], 0.0, np.asarray(updates[:-1]))
    np.testing.assert_array_equal(np.asarray(optax_updates[0]), 0.0)
    np.testing.assert_array_equal(np.asarray(optax_updates[1:]), lagged)


# ---------------------------------------------------------------- errors and corners


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: gradtx.sign_sgd(-1.0), "learning_rate"),
        (lambda: gradtx.signum(0.1, beta=1.5), "beta"),
        (lambda: gradtx.signum(0.1, beta=gradtx.constant_schedule(0.5)), "beta"),
        (lambda: gradtx.scale_by_trust_ratio(min_norm=-1.0), "min_norm"),
        (lambda: gradtx.scale_by_trust_ratio(eps=-1.0), "eps"),
        (lambda: gradtx.lars(0.1, momentum=-0.5), "momentum"),
        (lambda: gradtx.lars(0.1, trust_coefficient=-1.0), "trust_coefficient"),
        (lambda: gradtx.lars(0.1, weight_decay=-1.0), "weight_decay"),
        (lambda: gradtx.lars(0.1, trust_ratio_mask=None), "trust_ratio_mask"),
        (lambda: gradtx.lars(0.1, weight_decay_mask={"w": 1}), "weight_decay_mask"),
        (lambda: gradtx.lamb(0.1, b1=1.0), "b1"),
        (lambda: gradtx.lamb(0.1, weight_decay=-1.0), "weight_decay"),
        (lambda: gradtx.fromage(-0.1), "learning_rate"),
        (lambda: gradtx.fromage(0.1, min_norm=-1.0), "min_norm"),
        (lambda: gradtx.scale_by_polyak(variant="sps-"), "variant"),
        (lambda: gradtx.polyak_sgd(max_learning_rate=-1.0), "max_learning_rate"),
        (lambda: gradtx.polyak_sgd(scaling=-1.0), "scaling"),
        (lambda: gradtx.rprop(0.1, eta_minus=1.5), "eta_minus"),
        (lambda: gradtx.rprop(0.1, eta_plus=0.5), "eta_plus"),
        (lambda: gradtx.scale_by_rprop(0.1, min_step_size=1.0, max_step_size=0.5), "min_step"),
        (lambda: gradtx.rprop(gradtx.constant_schedule(0.1)), "learning_rate"),
        (lambda: gradtx.noisy_sgd(-0.1, key=0), "learning_rate"),
        (lambda: gradtx.noisy_sgd(0.1, eta=-1.0, key=0), "eta"),
    ],
)
def test_bad_arguments_are_named(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


@pytest.mark.parametrize(
    "tx, name",
    [
        (gradtx.scale_by_trust_ratio(), "scale_by_trust_ratio"),
        (gradtx.lamb(0.1), "add_decayed_weights"),
        (gradtx.fromage(0.1), "scale_by_trust_ratio"),
    ],
)
def test_trust_ratios_need_params(tx, name):
    grads = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match=f"{name} needs the current parameters"):
        tx.update(grads, tx.init(grads))


@pytest.mark.parametrize("tx", [gradtx.scale_by_polyak(), gradtx.polyak_sgd()])
def test_polyak_needs_the_loss(tx):
    grads = {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match="value="):
        tx.update(grads, tx.init(grads), grads)


def test_noisy_sgd_without_key_warns_like_optax():
    with pytest.warns(UserWarning, match="noisy_sgd got no key; using seed 0"):
        tx = gradtx.noisy_sgd(0.1)
    assert tx == gradtx.noisy_sgd(0.1, key=0)


def test_trust_ratio_leaves_zero_norm_leaves_alone():
    # A zero parameter (a fresh bias) or a zero update keeps the update as it is.
    tx = gradtx.scale_by_trust_ratio()
    params = {"bias": jnp.zeros(2), "w": jnp.array([3.0, 4.0])}
    grads = {"bias": jnp.array([0.5, -0.5]), "w": jnp.zeros(2)}
    updates, _ = tx.update(grads, tx.init(params), params)
    assert jnp.array_equal(updates["bias"], grads["bias"])
    assert jnp.array_equal(updates["w"], grads["w"])
