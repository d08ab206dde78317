"""Muon against optax.contrib.muon (Optax 0.2.8), and its Newton-Schulz iteration against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from catalogue_parity import (
    DTYPES,
    PARAMS_TOLERANCES,
    TOLERANCES,
    check_against_optax,
    dtype_id,
    optax_hyper,
    run_eager,
    run_jitted,
)
from optax.contrib import _muon as optax_muon
from parity_checks import assert_params_close, assert_same_layout, assert_trees_close

import gradtx
from gradtx.config import ConfigError
from gradtx.transforms.muon_matrices import orthogonalize_via_newton_schulz

DN = gradtx.MuonDimensionNumbers
ODN = optax.contrib.MuonDimensionNumbers
JORDAN = (3.4445, -4.7750, 2.0315)
# In bfloat16 the reference cannot store its momentum in bfloat16 as the shared
# harness does (stored_in): both libraries compute it in float32, but their sums
# differ in the last float32 bit now and then, and next to a bfloat16 rounding
# tie that is one bfloat16 ulp (first at step 4 of the harness problem).
# Newton-Schulz amplifies such a difference along the momentum's small singular
# directions (slope ~3.4 per step at 0, ~480 over five): on the Rosenbrock leaf,
# whose momentum rows differ by orders of magnitude, the updates then differ by
# 30% by step 15. So bfloat16 runs keep both momenta in float32 (mu_dtype) and
# compare bfloat16 params, gradients and updates with the harness's tolerances.
BF16_MOMENTA = "float32"
DION = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)


def ours_and_optax(tree):
    """A tree of dimension numbers for gradtx and the same tree of Optax's."""
    optax_tree = jax.tree.map(
        lambda d: ODN(d.reduction_axis, d.output_axis) if isinstance(d, DN) else d,
        tree,
        is_leaf=lambda d: isinstance(d, DN),
    )
    return tree, optax_tree


# ---------------------------------------------------------------- the shared harness


def test_muon_matches_optax():
    check_against_optax(gradtx.muon(1e-2), optax.contrib.muon(1e-2), jnp.float32)


def test_muon_in_bfloat16_matches_optax():
    # The harness's own runs, without stored_in (see BF16_MOMENTA).
    dtype, h = jnp.bfloat16, optax_hyper(jnp.bfloat16)
    tx = gradtx.muon(1e-2, mu_dtype=BF16_MOMENTA)
    reference = optax.contrib.muon(
        1e-2, beta=h(0.95), eps=h(1e-8), mu_dtype=BF16_MOMENTA, adam_b1=h(0.9), adam_b2=h(0.999)
    )
    run = run_jitted(tx, reference, dtype)
    assert_trees_close(run.gradtx_updates, run.optax_updates, **TOLERANCES[dtype])
    assert_params_close(
        run.gradtx_params, run.optax_params, run.optax_updates, **PARAMS_TOLERANCES[dtype]
    )
    assert_same_layout(run.gradtx_state, run.optax_state, **TOLERANCES[dtype])
    updates, params, _ = run_eager(tx, dtype, run.grads, run.values, with_value=False)
    assert jax.tree.leaves(updates)[0].dtype == jnp.bfloat16
    assert_trees_close(updates, run.optax_updates, **TOLERANCES[dtype])


def test_muon_options_match_optax():
    mask = {"parabola": {"kernel": True, "bias": False}, "rosenbrock": False, "noise": True}
    mask["frozen"] = False
    options = dict(
        ns_coeffs="dion",
        beta=0.9,
        eps=1e-7,
        weight_decay=0.1,
        weight_decay_mask=mask,
        nesterov=False,
        preconditioning="aol",
        adam_b1=0.8,
        adam_b2=0.99,
        adam_eps_root=1e-10,
        adam_weight_decay=0.01,
        consistent_rms=0.2,
    )
    check_against_optax(
        gradtx.muon(
            gradtx.linear_schedule(2e-2, 5e-3, 100),
            adam_learning_rate=gradtx.exponential_decay(1e-2, 10, 0.9),
            **options,
        ),
        optax.contrib.muon(
            optax.linear_schedule(2e-2, 5e-3, 100),
            adam_learning_rate=optax.exponential_decay(1e-2, 10, 0.9),
            **options,
        ),
        jnp.float32,
    )


@pytest.mark.parametrize("preconditioning", ["spectral", "schatten"])
def test_muon_with_dimension_numbers_matches_optax(preconditioning):
    # The (2, 3, 4) noise leaf is a stack of two (3, 4) matrices; a None prefix
    # sends a subtree to AdamW.
    ours, theirs = ours_and_optax(
        {
            "parabola": {"kernel": DN(), "bias": None},
            "rosenbrock": DN(),
            "noise": [DN(1, 2), None],
            "frozen": None,
        }
    )
    options = dict(ns_steps=4, adaptive=True, preconditioning=preconditioning)
    check_against_optax(
        gradtx.muon(1e-3, muon_weight_dimension_numbers=ours, **options),
        optax.contrib.muon(1e-3, muon_weight_dimension_numbers=theirs, **options),
        jnp.float32,
        # One Rosenbrock entry, a cancellation at 1/8 of the leaf's largest,
        # differs by 5e-6 of that largest after the first step: float32
        # rounding (XLA fuses the two programs differently), amplified by the
        # iteration. A rule difference would move every entry by far more.
        tolerance={"rtol": 1e-5, "atol": 1e-6, "scale_atol": 2e-5},
    )


# ---------------------------------------------------------------- conv and stacked weights


def conv_and_stacked(dtype):
    rng = np.random.default_rng(3)
    params = {
        "conv": rng.standard_normal((3, 3, 4, 8)),  # (height, width, in, out)
        "stacked": rng.standard_normal((3, 4, 6)),  # (layers, in, out)
        "bias": rng.standard_normal(8),
    }
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


DIMENSION_NUMBERS = {
    "conv": DN(reduction_axis=(0, 1, 2), output_axis=3),
    "stacked": DN(reduction_axis=1, output_axis=2),
    "bias": None,
}


def run_both(gradtx_tx, optax_tx, params, steps=30):
    """Both optimizers in one jitted scan, gradients taken at Optax's iterate."""
    targets = jax.tree.map(lambda p: jnp.ones(p.shape, jnp.float32), params)
    noise = jax.random.normal(jax.random.key(0), (steps,))

    def grad_at(p, t):
        return jax.tree.map(
            lambda x, target: ((x.astype(jnp.float32) - target) * (1.0 + t)).astype(x.dtype),
            p,
            targets,
        )

    @jax.jit
    def run(params):
        def body(carry, t):
            ours, our_state, theirs, their_state = carry
            grads = grad_at(theirs, t)
            our_updates, our_state = gradtx_tx.update(grads, our_state, ours)
            their_updates, their_state = optax_tx.update(grads, their_state, theirs)
            ours = optax.apply_updates(ours, our_updates)
            theirs = optax.apply_updates(theirs, their_updates)
            steps = (our_updates, their_updates, ours, theirs)
            return (ours, our_state, theirs, their_state), steps

        carry = (params, gradtx_tx.init(params), params, optax_tx.init(params))
        return jax.lax.scan(body, carry, noise)

    return run(params)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_muon_on_conv_and_stacked_weights_matches_optax(dtype):
    h = optax_hyper(dtype)
    ours, theirs = ours_and_optax(DIMENSION_NUMBERS)
    momenta = None if dtype == jnp.float32 else BF16_MOMENTA
    reference = optax.contrib.muon(
        0.05,
        beta=h(0.95),
        eps=h(1e-8),
        weight_decay=h(0.1),
        mu_dtype=momenta,
        adam_b1=h(0.9),
        adam_b2=h(0.999),
        muon_weight_dimension_numbers=theirs,
        consistent_rms=h(0.2),
    )
    tx = gradtx.muon(
        0.05,
        weight_decay=0.1,
        mu_dtype=momenta,
        muon_weight_dimension_numbers=ours,
        consistent_rms=0.2,
    )
    (_, state, _, optax_state), (updates, optax_updates, params, optax_params) = run_both(
        tx, reference, conv_and_stacked(dtype)
    )
    assert_trees_close(updates, optax_updates, **TOLERANCES[dtype])
    assert_params_close(params, optax_params, optax_updates, **PARAMS_TOLERANCES[dtype])
    assert_same_layout(state, optax_state, **TOLERANCES[dtype])
    muon_mu = state.inner_states["muon"].inner_state[0].mu
    assert set(k for k, v in muon_mu.items() if not isinstance(v, gradtx.MaskedNode)) == {
        "conv",
        "stacked",
    }


def test_scale_by_muon_and_scale_by_shape_match_optax():
    ours, theirs = ours_and_optax({"conv": DIMENSION_NUMBERS["conv"], "stacked": DN(-2, -1)})
    options = dict(beta=0.9, eps=1e-6, nesterov=False, preconditioning="schatten")
    tx = gradtx.chain(
        gradtx.scale_by_muon(DION, 5, weight_dimension_numbers=ours, **options),
        gradtx.scale_by_shape(ours),
        gradtx.scale_by_learning_rate(0.05),
    )
    reference = optax.chain(
        optax.contrib.scale_by_muon(DION, 5, weight_dimension_numbers=theirs, **options),
        optax_muon.scale_by_shape(theirs),
        optax.scale_by_learning_rate(0.05),
    )
    params = conv_and_stacked(jnp.float32)
    del params["bias"]
    (_, state, _, optax_state), (updates, optax_updates, _, _) = run_both(tx, reference, params)
    assert_trees_close(updates, optax_updates, **TOLERANCES[jnp.float32])
    assert_same_layout(state, optax_state, **TOLERANCES[jnp.float32])


# ---------------------------------------------------------------- Newton-Schulz against NumPy


def newton_schulz(g, coefficients, steps, eps=1e-8):
    """Jordan's iteration in float64 NumPy: normalize, then X <- aX + (bA + cA^2)X, A = XX^T."""
    x = np.asarray(g, np.float64)
    wide = x.T if x.shape[0] > x.shape[1] else x
    wide = wide / (np.linalg.norm(wide) + eps)
    rows = np.asarray(coefficients, np.float64).reshape(-1, 3)
    rows = np.repeat(rows, steps, axis=0) if len(rows) == 1 else rows
    for a, b, c in rows:
        gram = wide @ wide.T
        wide = a * wide + (b * gram + c * gram @ gram) @ wide
    return wide.T if x.shape[0] > x.shape[1] else wide


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_orthogonalization_matches_numpy(shape):
    g = np.random.default_rng(4).standard_normal(shape)
    for coefficients, steps in [(JORDAN, 5), (DION, 5), (JORDAN, 2)]:
        ours = orthogonalize_via_newton_schulz(
            jnp.asarray(g, jnp.float32), jnp.asarray(coefficients), steps
        )
        np.testing.assert_allclose(ours, newton_schulz(g, coefficients, steps), atol=2e-5)
    # Jordan's quintic brings every singular value into about (0.7, 1.2).
    singular = np.linalg.svd(newton_schulz(g, JORDAN, 5), compute_uv=False)
    assert np.all((singular > 0.6) & (singular < 1.25)), singular


def test_orthogonalization_of_conv_and_stacked_weights_matches_numpy():
    params = conv_and_stacked(jnp.float32)
    conv = np.asarray(params["conv"])
    ours = orthogonalize_via_newton_schulz(
        params["conv"], jnp.asarray(JORDAN), 5, dimension_numbers=DIMENSION_NUMBERS["conv"]
    )
    expected = newton_schulz(conv.reshape(36, 8), JORDAN, 5).reshape(conv.shape)
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    stacked = np.asarray(params["stacked"])
    ours = orthogonalize_via_newton_schulz(
        params["stacked"], jnp.asarray(JORDAN), 5, dimension_numbers=DN(1, 2)
    )
    expected = np.stack([newton_schulz(layer, JORDAN, 5) for layer in stacked])
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    # Output axis first: the same matrices, transposed in and out.
    swapped = orthogonalize_via_newton_schulz(
        jnp.swapaxes(params["stacked"], 1, 2), jnp.asarray(JORDAN), 5, dimension_numbers=DN(2, 1)
    )
    np.testing.assert_allclose(jnp.swapaxes(swapped, 1, 2), expected, atol=2e-5)


# ---------------------------------------------------------------- values, configs, errors


def test_dimension_numbers_trees_round_trip_and_accept_optax_ones():
    tree = {"conv": DIMENSION_NUMBERS["conv"], "blocks": [DN(1, 2), None], "bias": None}
    tx = gradtx.muon(0.02, muon_weight_dimension_numbers=tree)
    config = gradtx.to_config(tx)
    assert config["muon_weight_dimension_numbers"]["blocks"][0] == {
        "name": "MuonDimensionNumbers",
        "reduction_axis": 1,
        "output_axis": 2,
    }
    assert gradtx.from_config(config) == tx
    assert hash(gradtx.from_config(config)) == hash(tx)
    assert gradtx.muon(0.02, muon_weight_dimension_numbers=ours_and_optax(tree)[1]) == tx
    assert DN([0, 1], 2) == DN((0, 1), 2) != DN((0, 1), 3)


def test_a_callable_of_dimension_numbers_works_but_is_not_serializable():
    params = conv_and_stacked(jnp.float32)
    grads = jax.tree.map(jnp.sin, params)
    tree_tx = gradtx.muon(0.02, muon_weight_dimension_numbers=DIMENSION_NUMBERS)
    callable_tx = gradtx.muon(0.02, muon_weight_dimension_numbers=lambda p: DIMENSION_NUMBERS)
    expected = tree_tx.update(grads, tree_tx.init(params), params)[0]
    actual = callable_tx.update(grads, callable_tx.init(params), params)[0]
    assert_trees_close(actual, expected, rtol=0.0, atol=0.0)
    with pytest.raises(ConfigError, match="muon_weight_dimension_numbers: cannot write") as info:
        gradtx.to_config(callable_tx)
    assert "give a gradtx.MuonDimensionNumbers, or a tree" in str(info.value)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: gradtx.muon(0.02, beta=1.0), r"beta must be in \[0, 1\), got 1.0"),
        (lambda: gradtx.muon(-1.0), "learning_rate must be >= 0"),
        (lambda: gradtx.muon(0.02, adam_b2=1.5), "adam_b2 must be in"),
        (lambda: gradtx.muon(0.02, consistent_rms=-0.2), "consistent_rms must be >= 0"),
        (lambda: gradtx.muon(0.02, ns_coeffs="muon"), "ns_coeffs must be one of the presets"),
        (lambda: gradtx.muon(0.02, ns_coeffs=(1.0, 2.0)), r"shape \(3,\) or \(n, 3\)"),
        (lambda: gradtx.muon(0.02, "dion", ns_steps=4), "5 rows, more than ns_steps=4"),
        (lambda: gradtx.scale_by_muon(preconditioning="polar"), "preconditioning must be"),
        (lambda: gradtx.scale_by_muon(eps=-1.0), "eps must be >= 0"),
    ],
)
def test_bad_hyperparameters_are_named(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_dimension_numbers_are_refused():
    with pytest.raises(TypeError, match="reduction_axis must be an int"):
        DN(reduction_axis=True)
    with pytest.raises(TypeError, match=r"weight_dimension_numbers\['w'\]\[0\] must be a MuonDim"):
        gradtx.scale_by_muon(weight_dimension_numbers={"w": (0, 1)})
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
    tx = gradtx.scale_by_muon()
    with pytest.raises(ValueError, match=r"\['b'\] has shape \(4,\): Muon orthogonalizes"):
        tx.update(params, tx.init(params))
    overlapping = gradtx.scale_by_muon(weight_dimension_numbers=DN(0, 0))
    with pytest.raises(ValueError, match=r"\['w'\].*must be distinct"):
        overlapping.update({"w": params["w"]}, overlapping.init({"w": params["w"]}))
    partial = gradtx.muon(0.02, muon_weight_dimension_numbers={"w": DN()})
    with pytest.raises(ValueError, match=r"\['b'\] has no entry in muon_weight_dimension_numbers"):
        partial.init(params)
