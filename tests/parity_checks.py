"""Comparisons shared by the Optax parity tests: tolerant tree equality, state layout.

Also how a bfloat16 run's Optax reference is built (``Hyperparameter``,
``stored_in``).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


# gradtx updates moments and traces in float32 or wider whatever the storage
# dtype, so that b2 = 0.999 is not rounded to 1.0 in bfloat16 (Optax issue
# #1414); Optax computes bfloat16 moments in bfloat16 when given Python floats.
# Given float32 array decay rates, Optax computes in float32 too (and stores
# its moments in float32 unless given mu_dtype / accumulator_dtype), which is
# gradtx's arithmetic: that Optax, storing in bfloat16, is the reference.
class Hyperparameter:
    """How a case gives Optax its decay rates and eps, and its moments' storage dtype."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype
        # Optax casts a moment to mu_dtype / accumulator_dtype only for storage,
        # as gradtx does; None keeps the params' (float32) dtype.
        self.storage = None if dtype == jnp.float32 else dtype

    def __call__(self, value: float) -> Any:
        return value if self.dtype == jnp.float32 else jnp.asarray(value, jnp.float32)


def stored_in(optax_tx: Any, dtype: Any) -> Any:
    """``optax_tx`` with the floating leaves of its state stored in ``dtype``.

    Given float32 decay rates, Optax computes a narrow moment in float32 and
    keeps it in float32 (or in mu_dtype); gradtx computes it in float32 and
    stores it in the params' dtype. This wrapper stores Optax's state the same
    way, so the two differ only by the rounding of the updates themselves.
    """

    def cast(state: Any) -> Any:
        return jax.tree.map(
            lambda leaf: leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf,
            state,
        )

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any) -> Any:
        updates, state = optax_tx.update(updates, state, params, **extra_args)
        return updates, cast(state)

    return optax.GradientTransformationExtraArgs(lambda params: cast(optax_tx.init(params)), update)


def assert_trees_close(
    actual: Any, expected: Any, *, rtol: float, atol: float, scale_atol: float = 0.0
) -> None:
    """Leaves agree to ``atol + rtol * |expected|``.

    ``scale_atol`` adds that fraction of the largest ``|expected|`` of the leaf
    to ``atol``: two runs whose bfloat16 moments were rounded apart by an ulp
    differ by about 2**-9 of the updates' scale wherever a moment crosses zero,
    however small the update there.
    """
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)
    ):
        assert np.shape(a) == np.shape(b), jax.tree_util.keystr(path)
        b = np.asarray(b, np.float64)
        np.testing.assert_allclose(
            np.asarray(a, np.float64),
            b,
            err_msg=f"at {jax.tree_util.keystr(path)}",
            rtol=rtol,
            atol=atol + scale_atol * float(np.max(np.abs(b), initial=0.0)),
        )


def assert_same_layout(gradtx_state: Any, optax_state: Any, **tolerance: float) -> None:
    """The two states have the same key paths (NamedTuple fields, indices) and values."""
    ours = jax.tree_util.tree_flatten_with_path(gradtx_state)[0]
    theirs = jax.tree_util.tree_flatten_with_path(optax_state)[0]
    assert [jax.tree_util.keystr(path) for path, _ in ours] == [
        jax.tree_util.keystr(path) for path, _ in theirs
    ]
    assert_trees_close([a for _, a in ours], [b for _, b in theirs], **tolerance)


def computed_in_float32(optax_tx: Any) -> Any:
    """``optax_tx`` run in float32 on float32 copies of its gradients, state and params.

    Optax computes in its operands' dtype, so in bfloat16 it rounds some
    intermediate values to 8 bits where gradtx, computing every moment in
    float32, keeps 24 (each test says which). This reference computes in float32
    and, through ``stored_in``, stores in bfloat16, as gradtx does.
    """

    def wide(tree: Any) -> Any:
        return jax.tree.map(
            lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
        )

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any) -> Any:
        return optax_tx.update(wide(updates), wide(state), wide(params), **extra_args)

    return optax.GradientTransformationExtraArgs(optax_tx.init, update)


def assert_params_close(
    actual: Any, expected: Any, expected_updates: Any, *, rtol: float, atol: float
) -> None:
    """Compares the params of every step, allowing rounding that accumulates.

    The params after step t are a sum of t updates, so their rounding errors
    add up: the bound is ``atol + rtol * (|p_0| + sum of |u_s| for s <= t)``,
    with ``p_0`` recovered from the expected params and updates of step 0. A
    param that wanders through zero is thereby not held to a relative
    tolerance it cannot meet.
    """
    initial = jax.tree.map(lambda p, u: p[0] - u[0], expected, expected_updates)
    for (path, a), e, u, start in zip(
        jax.tree_util.tree_flatten_with_path(actual)[0],
        jax.tree.leaves(expected),
        jax.tree.leaves(expected_updates),
        jax.tree.leaves(initial),
    ):
        scale = np.abs(np.asarray(start, np.float64)) + np.cumsum(
            np.abs(np.asarray(u, np.float64)), axis=0
        )
        error = np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64))
        bound = atol + rtol * scale
        worst = np.unravel_index(np.argmax(error - bound), error.shape)
        assert np.all(error <= bound), (
            f"params at {jax.tree_util.keystr(path)} differ by {error[worst]:.3g} at "
            f"(step, index) {worst}, more than the bound {bound[worst]:.3g}"
        )


def assert_dtypes(tree: Any, dtype: Any, what: str = "leaf") -> None:
    """Every leaf of ``tree`` has ``dtype``; a failure names the key path."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        assert leaf.dtype == jnp.dtype(dtype), f"{what} at {jax.tree_util.keystr(path)}"
