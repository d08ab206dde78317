"""Conditional wrappers: skip the inner transformation's step when the gradients are bad."""

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics, trees
from gradtx.base import (
    OptState,
    Params,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import as_member


class ApplyIfFiniteState(NamedTuple):
    """State of :class:`apply_if_finite` (Optax's layout).

    Attributes:
      notfinite_count: int32 number of consecutive steps whose updates held a
        NaN or an Inf; reset to 0 by a finite step.
      last_finite: bool, whether the last step's updates were all finite.
      total_notfinite: int32 number of non-finite steps since ``init``; never
        reset.
      inner_state: the inner transformation's state.
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: OptState


@value_class
class apply_if_finite(Transformation):  # noqa: N801 - Optax's name
    """Skips steps whose updates contain a NaN or an Inf, up to a limit.

    Update rule, with ``n`` the count of consecutive non-finite steps::

        finite = all(isfinite(u))
        n <- 0 if finite else n + 1
        if finite or n > max_consecutive_errors:
            u, inner_state <- inner.update(u, inner_state, params)
        else:
            u <- 0                      (params untouched, inner_state unchanged)

    So at most ``max_consecutive_errors`` bad steps in a row are skipped; the
    next one is handed to the inner transformation, as in ``optax.apply_if_finite``.
    The counters are int32 and saturate.

    Args:
      inner: the transformation to protect (gradtx or Optax).
      max_consecutive_errors: how many consecutive non-finite steps to skip
        before giving up and applying them, an int >= 0.

    Raises:
      TypeError: if ``inner`` is not a transformation or
        ``max_consecutive_errors`` is not an int.
      ValueError: if ``max_consecutive_errors`` is negative.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.apply_if_finite(gradtx.sgd(0.1), max_consecutive_errors=2)
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([1.0, jnp.nan]), state)
      >>> updates, int(state.notfinite_count), bool(state.last_finite)
      (Array([0., 0.], dtype=float32), 1, False)
      >>> tx.update(jnp.array([1.0, 2.0]), state)[0]
      Array([-0.1, -0.2], dtype=float32)
    """

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    inner: Transformation = hyperparameter(shown=True)
    max_consecutive_errors: int = static_field(shown=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inner", as_member(self.inner, "inner"))
        value = self.max_consecutive_errors
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"max_consecutive_errors must be an int >= 0, got {value!r}")
        if value < 0:
            raise ValueError(f"max_consecutive_errors must be >= 0, got {value!r}")
        object.__setattr__(self, "max_consecutive_errors", int(value))

    def init(self, params: Params) -> OptState:
        return ApplyIfFiniteState(
            notfinite_count=numerics.zero_count(),
            last_finite=jnp.array(True, jnp.bool_),
            total_notfinite=numerics.zero_count(),
            inner_state=self.inner.init(params),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        is_finite = _all_finite(updates)
        notfinite_count = jnp.where(
            is_finite, jnp.zeros([], jnp.int32), numerics.safe_increment(state.notfinite_count)
        )

        def apply(_: None) -> tuple[Updates, OptState]:
            return self.inner.update(updates, state.inner_state, params, **extra_args)

        def skip(_: None) -> tuple[Updates, OptState]:
            return trees.zeros_like(updates), state.inner_state

        # A cond rather than a select: the inner update runs only when it is used,
        # and the skipped branch hands back the old state's buffers untouched.
        new_updates, inner_state = jax.lax.cond(
            jnp.logical_or(is_finite, notfinite_count > self.max_consecutive_errors),
            apply,
            skip,
            None,
        )
        total_notfinite = jnp.where(
            is_finite, state.total_notfinite, numerics.safe_increment(state.total_notfinite)
        )
        return new_updates, ApplyIfFiniteState(
            notfinite_count=notfinite_count,
            last_finite=is_finite,
            total_notfinite=total_notfinite,
            inner_state=inner_state,
        )


def _all_finite(tree: Any) -> jax.Array:
    """A bool scalar: whether every element of every (non-None) leaf is finite.

    Args:
      tree: a pytree of arrays or numbers; None leaves are ignored.

    Returns:
      ``True`` for a tree without leaves.
    """
    leaves = trees.leaves(tree)
    if not leaves:
        return jnp.array(True, jnp.bool_)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
