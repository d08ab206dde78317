"""Runs a gradtx and an Optax transformation side by side, for the masking family's tests.

Used by test_masking.py, test_partition.py, test_freezing.py and test_named_chain.py:
small nested parameter trees with a ``None`` leaf, 100-step trajectories (jitted or
eager) and comparisons of state layouts by leaf paths and by Flax state-dict keys.
"""

from typing import Any

import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

STEPS = 100
# Tolerances between gradtx and Optax trajectories (parameters after STEPS steps).
TOLERANCE = {"float32": 2e-5, "bfloat16": 3e-2}


def is_none(x: Any) -> bool:
    return x is None


def nested_params(dtype: Any, seed: int = 0) -> dict[str, Any]:
    """A nested tree: dicts, a list, a scalar leaf and a None leaf."""
    rng = np.random.default_rng(seed)

    def array(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), dtype)

    return {
        "dense": {"kernel": array(3, 2), "bias": array(2)},
        "layers": [{"w": array(2)}, {"w": array(2, 2), "scale": array()}],
        "frozen": None,
    }


def gradients(params: Any, steps: int = STEPS, seed: int = 1) -> list[Any]:
    """``steps`` random trees shaped like ``params`` (None where it is None)."""
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(
            lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype),
            params,
        )
        for _ in range(steps)
    ]


def run(
    tx: Any, params: Any, grads: list[Any], *, jit: bool, state: Any = None, **extra_args: Any
) -> tuple:
    """Applies ``tx`` for each gradient, from ``state`` or init; returns the params and state."""

    def step(state: Any, params: Any, grad: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grad, state, params, **extra_args)
        return optax.apply_updates(params, updates), state

    if jit:
        step = jax.jit(step)
    if state is None:
        state = tx.init(params)
    for grad in grads:
        params, state = step(state, params, grad)
    return params, state


def leaf_layout(tree: Any) -> list[tuple[str, Any, Any]]:
    """Each leaf's key path, shape and dtype (None leaves included)."""
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]
    return [
        (
            jax.tree_util.keystr(path),
            None if leaf is None else jnp.shape(leaf),
            None if leaf is None else jnp.result_type(leaf),
        )
        for path, leaf in flat
    ]


def state_dict_keys(state: Any) -> list[str]:
    """The keys of Flax's state dict of ``state``, empty nodes (MaskedNode) included."""
    state_dict = flax.serialization.to_state_dict(state)
    if not isinstance(state_dict, dict):
        return []
    flat = flax.traverse_util.flatten_dict(state_dict, keep_empty_nodes=True, sep="/")
    return sorted(flat)


def assert_same_layout(gradtx_state: Any, optax_state: Any) -> None:
    """The two states have the same leaves at the same paths and the same state-dict keys."""
    assert leaf_layout(gradtx_state) == leaf_layout(optax_state)
    assert state_dict_keys(gradtx_state) == state_dict_keys(optax_state)
    assert state_dict_keys(gradtx_state), "the comparison needs a non-empty state dict"


def assert_trees_close(actual: Any, expected: Any, dtype: Any) -> None:
    """Same leaf paths (classes may differ: gradtx's or Optax's states), dtypes, close values."""
    tolerance = TOLERANCE[jnp.dtype(dtype).name]
    assert leaf_layout(actual) == leaf_layout(expected)
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)
    ):
        np.testing.assert_allclose(
            np.asarray(a, np.float32),
            np.asarray(b, np.float32),
            rtol=tolerance,
            atol=tolerance,
            err_msg=jax.tree_util.keystr(path),
        )


def assert_trees_equal(actual: Any, expected: Any) -> None:
    """Same leaf paths, dtypes and values bit for bit."""
    assert leaf_layout(actual) == leaf_layout(expected)
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)
    ):
        np.testing.assert_array_equal(
            np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path)
        )


def restore_into(template: Any, state: Any) -> Any:
    """``state`` (e.g. Optax's) loaded into ``template``'s classes through Flax's state dict."""
    return flax.serialization.from_state_dict(template, flax.serialization.to_state_dict(state))
