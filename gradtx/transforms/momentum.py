"""Momentum: a decaying trace of past updates."""

from typing import Any, NamedTuple

import jax

from gradtx import checks, numerics, trees
from gradtx.base import (
    OptState,
    Params,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)


class TraceState(NamedTuple):
    """State of :class:`trace`.

    Attributes:
      trace: the momentum buffer, one array per parameter.
    """

    trace: Updates


@value_class
class trace(Transformation):  # noqa: N801 - Optax's name
    """Heavy-ball or Nesterov momentum.

    Update rule::

        m <- g + decay * m
        u <- m                     (heavy ball)
        u <- g + decay * m         (nesterov=True)

    Args:
      decay: the momentum coefficient, >= 0 (usually 0.9).
      nesterov: use Nesterov's accelerated gradient.
      accumulator_dtype: dtype of the stored trace; None keeps the params'.
        The trace is updated in the wider of this and the gradient's dtype.

    Raises:
      ValueError: if ``decay`` is negative.

    References:
      Polyak, *Some methods of speeding up the convergence of iteration
      methods*, 1964. Sutskever et al., *On the importance of initialization
      and momentum in deep learning*, 2013,
      https://proceedings.mlr.press/v28/sutskever13.html

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.trace(decay=0.9)
      >>> u, s = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
      >>> tx.update(jnp.ones(2), s)[0]
      Array([1.9, 1.9], dtype=float32)
    """

    decay: jax.typing.ArrayLike = hyperparameter(shown=True)
    nesterov: bool = static_field(default=False)
    accumulator_dtype: str | None = static_field(default=None)

    def __post_init__(self) -> None:
        checks.check_number("decay", self.decay, low=0.0)
        object.__setattr__(
            self,
            "accumulator_dtype",
            numerics.canonical_dtype(self.accumulator_dtype, "accumulator_dtype"),
        )

    def init(self, params: Params) -> OptState:
        return TraceState(trace=trees.zeros_like(params, self.accumulator_dtype))

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, TraceState, "trace")
        checks.check_trees_match(
            updates, state.trace, tree_name="gradients", reference_name="optimizer state"
        )

        def leaf(g: jax.Array, stored: jax.Array) -> tuple[jax.Array, jax.Array]:
            # Updated in float32 or wider whatever the storage dtype, so that the
            # decay is not rounded (in bfloat16, 0.9 is 0.8984375).
            dtype = numerics.compute_dtype(g.dtype, stored.dtype)
            new_trace = g.astype(dtype) + self.decay * stored.astype(dtype)
            out = g.astype(dtype) + self.decay * new_trace if self.nesterov else new_trace
            return out.astype(g.dtype), new_trace.astype(stored.dtype)

        out, new_trace = trees.leaf_map_n(2, leaf, updates, state.trace)
        return out, TraceState(trace=new_trace)
