"""Applying updates to parameters."""

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.base import Params, Updates


def apply_updates(params: Params, updates: Updates) -> Params:
    """Adds ``updates`` to ``params``, keeping each parameter's dtype.

    Update rule: ``p <- p + u``, computed in the promoted dtype and cast back
    to ``p``'s dtype (so bf16 params stay bf16 even with f32 updates). Leaves
    that are None in ``params`` stay None.

    Args:
      params: the parameter pytree.
      updates: updates with the same structure (e.g. from ``tx.update``).

    Returns:
      The new parameters.

    Raises:
      ValueError: naming the first key path where the trees differ.
      TypeError: naming the key path of an integer or boolean parameter given
        a floating-point update, which the cast back would truncate.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.apply_updates({"w": jnp.ones(2)}, {"w": jnp.full(2, -0.5)})
      {'w': Array([0.5, 0.5], dtype=float32)}
    """
    checks.check_trees_match(updates, params, tree_name="updates", reference_name="parameters")

    def apply(path: Any, p: Any, u: Any) -> Any:
        if p is None or u is None:  # a frozen leaf (Flax, optax.set_to_zero)
            return p
        p = jnp.asarray(p)
        if not checks.is_floating(p) and checks.is_floating(u):
            raise TypeError(
                f"the parameter at {checks.key_path(path)} has dtype "
                f"{p.dtype} but its update is {checks.leaf_dtype(u)}: adding it would "
                "truncate the update (a small step to zero); leave integer leaves out "
                "of the optimizer (gradtx.masked, gradtx.set_to_zero) or make them "
                "floating point"
            )
        return numerics.cast(jnp.asarray(p + u), p.dtype)

    return jax.tree_util.tree_map_with_path(apply, params, updates, is_leaf=trees.is_none)
