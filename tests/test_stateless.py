"""stateless and stateless_with_tree_map: parity with Optax, None handling, no config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import registry
from gradtx.config import ConfigError


def double(updates, params):
    return jax.tree.map(lambda u: 2 * u if params is None else u + params["w"], updates)


def per_leaf(update, param):
    return update * 3 if param is None else update - param


@pytest.mark.parametrize("with_params", [True, False])
def test_stateless_matches_optax(with_params):
    params = {"w": jnp.arange(3.0)}
    grads = {"w": jnp.ones(3)}
    tx, reference = gradtx.stateless(double), optax.stateless(double)
    assert tx.init(params) == gradtx.EmptyState()
    given = params if with_params else None
    updates, state = jax.jit(lambda s, g, p: tx.update(g, s, p))(tx.init(params), grads, given)
    expected, _ = reference.update(grads, reference.init(params), given)
    np.testing.assert_array_equal(updates["w"], expected["w"])
    assert state == gradtx.EmptyState()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("with_params", [True, False])
def test_stateless_with_tree_map_matches_optax(with_params, dtype):
    params = {"a": jnp.arange(3.0, dtype=dtype), "b": {"c": jnp.ones((2, 2), dtype)}}
    grads = jax.tree.map(lambda p: p * 0.5 + 1, params)
    tx = gradtx.stateless_with_tree_map(per_leaf)
    reference = optax.stateless_with_tree_map(per_leaf)
    given = params if with_params else None
    updates, _ = tx.update(grads, tx.init(params), given)
    expected, _ = reference.update(grads, reference.init(params), given)
    for got, want in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
        assert got.dtype == want.dtype == dtype
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_none_leaves_stay_none():
    tx = gradtx.stateless_with_tree_map(per_leaf)
    updates, _ = tx.update({"a": jnp.ones(2), "frozen": None}, gradtx.EmptyState())
    assert updates["frozen"] is None
    assert updates["a"].tolist() == [3.0, 3.0]


def test_values_compare_by_function_and_cannot_be_written_to_a_config():
    assert gradtx.stateless(double) == gradtx.stateless(double)
    assert gradtx.stateless(double) != gradtx.stateless(per_leaf)
    assert repr(gradtx.stateless(double)).startswith("stateless(f=<function double")
    assert jax.tree.leaves(gradtx.stateless(double)) == []
    for cls in (gradtx.stateless, gradtx.stateless_with_tree_map):
        assert cls in registry.NOT_SERIALIZABLE
        with pytest.raises(ConfigError, match="it wraps a plain Python function"):
            gradtx.to_config(gradtx.chain(cls(per_leaf)))
    with pytest.raises(TypeError, match="f must be a callable, got 3"):
        gradtx.stateless(3)
