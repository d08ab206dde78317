"""set_to_zero, freeze and selective_transform: parity with Optax (numbers, state layout)."""

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
    leaf_layout,
    nested_params,
    restore_into,
    run,
)

import gradtx

FREEZE_TREE = {
    "dense": {"kernel": False, "bias": True},
    "layers": [{"w": True}, {"w": False, "scale": True}],
    "frozen": None,
}
FREEZE_MASKS = {
    "tree": FREEZE_TREE,
    "prefix": {"dense": False, "layers": True, "frozen": True},
    "all": True,
    "none": jnp.asarray(False),
}


def test_set_to_zero_gives_zeros_of_each_dtype_and_keeps_none():
    updates = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones((), jnp.int32), "c": None, "d": 1.5}
    tx = gradtx.set_to_zero()
    state = tx.init(updates)
    assert state == gradtx.EmptyState() == optax.set_to_zero().init(updates)
    zeros, new_state = tx.update(updates, state)
    expected, _ = optax.set_to_zero().update(updates, state)
    assert new_state == gradtx.EmptyState()
    assert leaf_layout(zeros) == leaf_layout(expected)
    assert zeros["c"] is None
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(zeros))


@pytest.mark.parametrize("kind", list(FREEZE_MASKS))
def test_freeze_zeroes_what_optax_zeroes_with_the_same_state(kind):
    mask = FREEZE_MASKS[kind]
    tx, reference = gradtx.freeze(mask), optax.freeze(mask)
    params = nested_params(jnp.float32)
    grad = gradients(params, steps=1)[0]
    state, optax_state = tx.init(params), reference.init(params)
    assert state == gradtx.MaskedState(inner_state=gradtx.EmptyState())
    assert leaf_layout(state) == leaf_layout(optax_state)
    updates, _ = jax.jit(tx.update)(grad, state, params)
    expected, _ = reference.update(grad, optax_state, params)
    assert_trees_equal(updates, expected)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("jit", [True, False])
def test_freeze_before_an_optimizer_matches_optax(dtype, jit):
    tx = gradtx.chain(gradtx.freeze(FREEZE_TREE), gradtx.sgd(0.1, momentum=0.9))
    inner = optax.sgd(0.1, momentum=0.9) if dtype == jnp.float32 else gradtx.sgd(0.1, momentum=0.9)
    reference = optax.chain(optax.freeze(FREEZE_TREE), inner)
    params = nested_params(dtype)
    final, state = run(tx, params, gradients(params), jit=jit)
    expected, expected_state = run(reference, params, gradients(params), jit=True)
    assert_trees_close(final, expected, dtype)
    assert_same_layout(state, expected_state)
    for frozen in (final["dense"]["bias"], final["layers"][0]["w"], final["layers"][1]["scale"]):
        assert frozen.dtype == dtype
    assert_trees_equal(final["layers"][0], params["layers"][0])
    assert_trees_equal(final["dense"]["bias"], params["dense"]["bias"])


@pytest.mark.parametrize(
    ("mask", "dtype"),
    [(FREEZE_TREE, jnp.float32), (FREEZE_TREE, jnp.bfloat16), (True, jnp.float32)],
)
def test_selective_transform_matches_optax(mask, dtype):
    optimizer = gradtx.adam(0.05)
    tx = gradtx.selective_transform(optimizer, freeze_mask=mask)
    inner = optax.adam(0.05) if dtype == jnp.float32 else optimizer
    reference = optax.selective_transform(inner, freeze_mask=mask)
    params = nested_params(dtype)
    grads = gradients(params)
    final, state = run(tx, params, grads, jit=True)
    expected, expected_state = run(reference, params, grads, jit=True)
    assert isinstance(state, gradtx.PartitionState)
    assert sorted(state.inner_states) == ["freeze", "train"]
    assert_same_layout(state, expected_state)
    if dtype == jnp.float32:
        assert_trees_close(final, expected, dtype)
    else:
        assert_trees_equal(final, expected)
        assert_trees_equal(state, expected_state)


def test_selective_transform_eager_equals_jit_and_loads_an_optax_state():
    tx = gradtx.selective_transform(gradtx.sgd(0.1, momentum=0.9), freeze_mask=FREEZE_TREE)
    reference = optax.selective_transform(optax.sgd(0.1, momentum=0.9), freeze_mask=FREEZE_TREE)
    params = nested_params(jnp.float32)
    grads = gradients(params)
    eager, _ = run(tx, params, grads, jit=False)
    jitted, _ = run(tx, params, grads, jit=True)
    assert_trees_close(eager, jitted, jnp.float32)
    _, optax_state = run(reference, params, grads[:5], jit=True)
    assert isinstance(restore_into(tx.init(params), optax_state), gradtx.PartitionState)


def test_selective_transform_takes_a_path_mask():
    params = {"embed": jnp.ones(2), "head": jnp.ones(2)}
    tx = gradtx.selective_transform(
        gradtx.sgd(1.0), freeze_mask=gradtx.path_mask(include=["^embed$"])
    )
    updates, state = tx.update(params, tx.init(params))
    assert updates["embed"].tolist() == [0.0, 0.0]
    assert updates["head"].tolist() == [-1.0, -1.0]


def test_values_print_and_compare():
    assert repr(gradtx.freeze({"a": True})) == "freeze(mask={'a': True})"
    assert gradtx.freeze(jnp.asarray(True)) == gradtx.freeze(True)
    tx = gradtx.selective_transform(gradtx.sgd(0.1), freeze_mask=False)
    assert repr(tx) == "selective_transform(optimizer=sgd(learning_rate=0.1), freeze_mask=False)"
    assert jax.tree.leaves(tx) == [0.1]
    assert gradtx.set_to_zero() == gradtx.set_to_zero()


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match="mask must be a pytree of booleans"):
        gradtx.freeze(None)
    with pytest.raises(TypeError, match="mask leaves must be Python booleans, got 'yes'"):
        gradtx.freeze({"a": "yes"})
    with pytest.raises(TypeError, match="freeze_mask: mask leaves must be Python booleans"):
        gradtx.selective_transform(gradtx.sgd(0.1), freeze_mask={"a": 0})
    with pytest.raises(TypeError, match="optimizer must be a gradient transformation"):
        gradtx.selective_transform(0.1, freeze_mask=True)
    with pytest.raises(ValueError, match=r"\['b'\] is in the parameters but not in the mask"):
        gradtx.freeze({"a": True}).init({"a": jnp.ones(1), "b": jnp.ones(1)})
