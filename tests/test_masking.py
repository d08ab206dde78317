"""masked: parity with optax.masked (numbers and state layout), masks of every kind, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from masking_parity import (
    assert_same_layout,
    assert_trees_close,
    assert_trees_equal,
    gradients,
    nested_params,
    restore_into,
    run,
)

import gradtx

TREE_MASK = {
    "dense": {"kernel": True, "bias": False},
    "layers": [{"w": False}, {"w": True, "scale": False}],
    "frozen": None,
}
PREFIX_MASK = {"dense": True, "layers": False, "frozen": False}
MASKS = {
    "tree": TREE_MASK,
    "prefix": PREFIX_MASK,
    "callable": lambda p: jax.tree.map(lambda x: x.ndim == 2, p),
    "path_mask": gradtx.path_mask(exclude=[r"bias$", r"scale$"]),
}
# (gradtx inner, Optax inner): state-free, plain-state and params-reading members.
INNERS = {
    "adam": (gradtx.adam(0.05, b2=0.99), optax.adam(0.05, b2=0.99)),
    "trace": (gradtx.trace(0.9, nesterov=True), optax.trace(0.9, nesterov=True)),
    "decay": (
        gradtx.chain(gradtx.add_decayed_weights(0.1), gradtx.scale(-0.05)),
        optax.chain(optax.add_decayed_weights(0.1), optax.scale(-0.05)),
    ),
}
CASES = [("tree", "adam"), ("prefix", "trace"), ("callable", "decay"), ("path_mask", "adam")]


def reference_for(mask_kind, inner_kind, dtype):
    """Optax's masked around Optax's inner in float32; around gradtx's inner in bfloat16.

    gradtx computes coefficients in float32 where Optax rounds them to bfloat16
    (0.999 becomes 1.0), so in bfloat16 only the masking itself is compared, bit
    for bit, by wrapping the same gradtx inner in optax.masked.
    """
    inner, optax_inner = INNERS[inner_kind]
    return optax.masked(optax_inner if dtype == jnp.float32 else inner, MASKS[mask_kind])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(("mask_kind", "inner_kind"), CASES)
def test_jitted_trajectory_matches_optax(mask_kind, inner_kind, dtype):
    tx = gradtx.masked(INNERS[inner_kind][0], MASKS[mask_kind])
    reference = reference_for(mask_kind, inner_kind, dtype)
    params = nested_params(dtype)
    grads = gradients(params)
    final, state = run(tx, params, grads, jit=True)
    expected, expected_state = run(reference, params, grads, jit=True)
    assert_same_layout(state, expected_state)
    if dtype == jnp.float32:
        assert_trees_close(final, expected, dtype)
        assert_trees_close(state, expected_state, dtype)
    else:
        assert_trees_equal(final, expected)
        assert_trees_equal(state, expected_state)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_eager_trajectory_matches_optax_and_jit(dtype):
    tx = gradtx.masked(INNERS["trace"][0], PREFIX_MASK)
    reference = reference_for("prefix", "trace", dtype)
    params = nested_params(dtype)
    grads = gradients(params)
    final, state = run(tx, params, grads, jit=False)
    expected, _ = run(reference, params, grads, jit=False)
    assert_trees_close(final, expected, dtype)
    jitted, jitted_state = run(tx, params, grads, jit=True)
    assert_trees_close(final, jitted, dtype)
    assert_trees_close(state, jitted_state, dtype)


def test_masked_out_leaves_pass_through_exactly():
    tx = gradtx.masked(gradtx.scale(2.0), TREE_MASK)
    params = nested_params(jnp.float32)
    grads = gradients(params, steps=2)
    state = tx.init(params)
    for grad in grads:
        updates, state = tx.update(grad, state, params)
        # Bit for bit (an eager update runs compiled, so not the same objects).
        np.testing.assert_array_equal(updates["dense"]["bias"], grad["dense"]["bias"])
        np.testing.assert_array_equal(updates["layers"][0]["w"], grad["layers"][0]["w"])
        assert updates["frozen"] is None
        assert not np.array_equal(updates["dense"]["kernel"], grad["dense"]["kernel"])


def test_state_keeps_nothing_for_masked_out_leaves():
    tx = gradtx.masked(gradtx.trace(0.9), PREFIX_MASK)
    state = tx.init(nested_params(jnp.float32))
    assert isinstance(state, gradtx.MaskedState)
    trace = state.inner_state.trace
    assert trace["layers"] == gradtx.MaskedNode()
    assert trace["frozen"] == gradtx.MaskedNode()
    assert trace["dense"]["kernel"].shape == (3, 2)
    assert jax.tree.leaves(gradtx.MaskedNode()) == []


def test_an_optax_trained_state_loads_and_continues_identically():
    tx = gradtx.masked(INNERS["adam"][0], MASKS["path_mask"])
    reference = optax.masked(INNERS["adam"][1], MASKS["path_mask"])
    params = nested_params(jnp.float32)
    grads = gradients(params, steps=20)
    params10, optax_state = run(reference, params, grads[:10], jit=True)
    restored = restore_into(tx.init(params), optax_state)
    assert isinstance(restored, gradtx.MaskedState)
    final, _ = run(tx, params10, grads[10:], jit=True, state=restored)
    expected, _ = run(reference, params10, grads[10:], jit=True, state=optax_state)
    assert_trees_close(final, expected, jnp.float32)


def test_a_single_boolean_masks_everything_or_nothing():
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    for mask in (True, jnp.asarray(True), np.bool_(True)):
        tx = gradtx.masked(gradtx.scale(3.0), mask)
        assert tx.update(params, tx.init(params))[0]["b"].tolist() == [3.0] * 3
    tx = gradtx.masked(gradtx.trace(0.5), False)
    state = tx.init(params)
    assert state.inner_state.trace == gradtx.MaskedNode()
    updates = tx.update(params, state)[0]
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    for got, expected in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
        np.testing.assert_array_equal(got, expected)


def test_python_scalar_leaves_work():
    params = {"a": 1.0, "b": 2.0}
    tx = gradtx.masked(gradtx.scale(-1.0), {"a": True, "b": False})
    updates, _ = tx.update(params, tx.init(params))
    assert float(updates["a"]) == -1.0
    assert updates["b"] == 2.0


def test_mask_compatible_extra_args_masks_trees_like_the_updates():
    def update(updates, state, params=None, **extra_args):
        return jax.tree.map(lambda u, w: u * w, updates, extra_args["weights"]), state

    inner = optax.GradientTransformationExtraArgs(optax.identity().init, update)
    mask = {"a": True, "b": False}
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    weights = {"a": jnp.full(2, 3.0), "b": jnp.full(2, 5.0)}
    tx = gradtx.masked(inner, mask, mask_compatible_extra_args=True)
    reference = optax.masked(inner, mask, mask_compatible_extra_args=True)
    updates, _ = tx.update(params, tx.init(params), weights=weights)
    expected, _ = reference.update(params, reference.init(params), weights=weights)
    assert jax.tree.all(jax.tree.map(np.array_equal, updates, expected))
    assert updates["a"].tolist() == [3.0, 3.0]
    with pytest.raises(ValueError):  # unmasked, the weights do not fit the masked updates
        gradtx.masked(inner, mask).update(params, tx.init(params), weights=weights)


def test_a_masked_transformation_is_a_value():
    tx = gradtx.masked(gradtx.trace(0.9), {"w": True, "b": False})
    assert repr(tx) == "masked(inner=trace(decay=0.9), mask={'b': False, 'w': True})"
    assert tx == gradtx.masked(gradtx.trace(0.9), {"b": False, "w": True})
    assert hash(tx) == hash(gradtx.masked(gradtx.trace(0.9), {"b": False, "w": True}))
    assert tx != gradtx.masked(gradtx.trace(0.8), {"w": True, "b": False})
    assert jax.tree.leaves(tx) == [0.9]
    params = {"w": jnp.ones(2), "b": jnp.ones(2)}
    step = jax.jit(lambda t, s, g: t.update(g, s))
    updates, _ = step(tx, tx.init(params), params)
    assert updates["w"].tolist() == [1.0, 1.0]


def test_an_optax_inner_is_wrapped():
    tx = gradtx.masked(optax.scale(2.0), {"w": True})
    assert isinstance(tx.inner, gradtx.foreign)
    params = {"w": jnp.ones(2)}
    assert tx.update(params, tx.init(params))[0]["w"].tolist() == [2.0, 2.0]


def test_a_mask_that_does_not_fit_names_the_key_path():
    params = nested_params(jnp.float32)
    tx = gradtx.masked(gradtx.trace(0.9), {"dense": True, "frozen": False})
    with pytest.raises(ValueError, match=r"\['layers'\]\[0\]\['w'\] is in the parameters but not"):
        tx.init(params)
    tx = gradtx.masked(gradtx.trace(0.9), {**PREFIX_MASK, "extra": True})
    with pytest.raises(ValueError, match=r"\['extra'\] is in the mask but not in the parameters"):
        tx.init(params)
    good = gradtx.masked(gradtx.trace(0.9), PREFIX_MASK)
    state = good.init(params)
    with pytest.raises(ValueError, match=r"\['dense'\] is in the mask but not in the updates"):
        good.update({"layers": params["layers"], "frozen": None}, state)


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match="mask must be a pytree of booleans.*got None"):
        gradtx.masked(gradtx.trace(0.9), None)
    with pytest.raises(TypeError, match="mask leaves must be Python booleans, got 1"):
        gradtx.masked(gradtx.trace(0.9), {"w": 1})
    with pytest.raises(TypeError, match="inner must be a gradient transformation"):
        gradtx.masked(3, {"w": True})
    with pytest.raises(TypeError, match="mask must be static"):
        jax.jit(lambda m: gradtx.masked(gradtx.trace(0.9), m))(jnp.asarray(True))
    tx = gradtx.masked(gradtx.trace(0.9), {"w": True})
    with pytest.raises(ValueError, match="the state does not belong to masked"):
        tx.update({"w": jnp.ones(2)}, gradtx.EmptyState())


def test_config_writes_a_mask_tree_and_refuses_a_lambda_with_a_hint():
    tx = gradtx.masked(gradtx.scale(0.5), {"w": True, "b": False})
    config = gradtx.to_config(tx)
    assert config == {
        "name": "masked",
        "inner": {"name": "scale", "step_size": 0.5},
        "mask": {"b": False, "w": True},
        "mask_compatible_extra_args": False,
    }
    assert gradtx.from_config(config) == tx
    with pytest.raises(
        gradtx.ConfigError, match=r"mask: cannot write the Python callable.*path_mask"
    ):
        gradtx.to_config(gradtx.masked(gradtx.scale(0.5), MASKS["callable"]))
