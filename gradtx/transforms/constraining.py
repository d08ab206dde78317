"""Constraints on updates: replace NaNs by zeros, keep parameters non-negative."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, trees
from gradtx.base import (
    EmptyState,
    OptState,
    Params,
    Transformation,
    Updates,
    value_class,
)

# Optax's name for the (empty) state of keep_params_nonnegative.
NonNegativeParamsState = EmptyState


class ZeroNansState(NamedTuple):
    """State of :class:`zero_nans`.

    Attributes:
      found_nan: a tree with the structure of the parameters; each leaf is a
        scalar boolean array, True if the matching update held a NaN at the
        last call to ``update`` (None where the parameter is None).
    """

    found_nan: Any


@value_class
class zero_nans(Transformation):  # noqa: N801 - Optax's name
    """Replaces NaN entries of the updates by zeros, and records where it did.

    Update rule::

        found_nan <- any(isnan(u))        per leaf
        u <- 0 where isnan(u), else u

    The state only reports; it does not change later updates. Infinities are
    left as they are.

    Raises:
      ValueError: at update time, if the updates do not match the tree the
        state was made for.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.zero_nans()
      >>> updates, state = tx.update({"a": jnp.array([1.0, jnp.nan])}, tx.init({"a": jnp.zeros(2)}))
      >>> updates["a"], state.found_nan["a"]
      (Array([1., 0.], dtype=float32), Array(True, dtype=bool))
    """

    def init(self, params: Params) -> OptState:
        return ZeroNansState(found_nan=trees.leaf_map(lambda _: jnp.array(False), params))

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_trees_match(
            _placeholders(updates),
            _placeholders(state.found_nan),
            tree_name="gradients",
            reference_name="optimizer state",
        )
        found_nan = trees.leaf_map(lambda u: jnp.any(jnp.isnan(u)), updates)
        updates = trees.leaf_map(lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates)
        return updates, ZeroNansState(found_nan=found_nan)


def _placeholders(tree: Any) -> Any:
    """The tree with a scalar in place of every leaf: structure without shapes."""
    return jax.tree.map(lambda _: 0, tree)


@value_class
class keep_params_nonnegative(Transformation):  # noqa: N801 - Optax's name
    """Shortens updates that would make a parameter negative, so it lands on zero.

    Update rule, per entry::

        u <- -p   if p + u < 0
        u <- u    otherwise

    Place it last in a chain, after the learning rate, so ``u`` is the step
    actually applied. Parameters that are already negative are moved to zero.

    Raises:
      ValueError: at update time, if params are not given or do not match the
        updates.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.keep_params_nonnegative()
      >>> params = jnp.array([1.0, 0.5])
      >>> tx.update(jnp.array([-2.0, 0.25]), tx.init(params), params)[0]
      Array([-1.  ,  0.25], dtype=float32)
    """

    def init(self, params: Params) -> OptState:
        del params
        return NonNegativeParamsState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del extra_args
        if params is None:
            raise ValueError(checks.PARAMS_REQUIRED.format(name="keep_params_nonnegative"))
        checks.check_trees_match(
            updates, params, tree_name="gradients", reference_name="parameters"
        )
        constrained = jax.tree.map(
            lambda u, p: (
                None
                if u is None or p is None
                else _nonnegative(trees.as_array(u), trees.as_array(p))
            ),
            updates,
            params,
            is_leaf=trees.is_none,
        )
        return constrained, state


def _nonnegative(update: jax.Array, param: jax.Array) -> jax.Array:
    return jnp.where(param + update < 0.0, -param, update).astype(update.dtype)
