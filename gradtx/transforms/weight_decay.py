"""Decoupled weight decay: adds ``weight_decay * params`` to the updates."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, masks, numerics
from gradtx.base import (
    OptState,
    Params,
    ScalarOrSchedule,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.transforms.scale import evaluate


class AddDecayedWeightsState(NamedTuple):
    """State of :class:`add_decayed_weights`.

    Attributes:
      count: int32 step count, the step at which a weight-decay schedule is read.
    """

    count: jax.Array


@value_class
class add_decayed_weights(Transformation):  # noqa: N801 - Optax's name
    """Adds the parameters, scaled by ``weight_decay``, to the updates.

    Update rule: ``u <- u + weight_decay(t) * p`` on the leaves the mask selects.
    Placed before the learning-rate scaling this is AdamW's decoupled weight
    decay; placed before momentum it is the classic L2 penalty of SGD.

    Args:
      weight_decay: a non-negative number or a schedule.
      mask: which leaves to decay: None (all), a pytree of booleans with the
        structure of the params (or a prefix of it), or a callable from params
        to such a tree. Leaves that are False pass through unchanged.

    Raises:
      ValueError: if ``weight_decay`` is negative, or at update time if params
        are not given or the mask does not fit them.

    References:
      Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, 2019,
      https://arxiv.org/abs/1711.05101

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.add_decayed_weights(0.1)
      >>> p = jnp.array([1.0, 2.0])
      >>> tx.update(jnp.zeros(2), tx.init(p), p)[0]
      Array([0.1, 0.2], dtype=float32)
    """

    weight_decay: ScalarOrSchedule = hyperparameter(default=0.0, shown=True)
    mask: Any = static_field(default=None)

    def __post_init__(self) -> None:
        checks.check_number("weight_decay", self.weight_decay, low=0.0)
        object.__setattr__(self, "mask", masks.freeze_mask(self.mask))

    def init(self, params: Params) -> OptState:
        del params
        return AddDecayedWeightsState(count=numerics.zero_count())

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del extra_args
        if params is None:
            raise ValueError(checks.PARAMS_REQUIRED.format(name="add_decayed_weights"))
        checks.check_trees_match(
            updates, params, tree_name="gradients", reference_name="parameters"
        )
        decay = evaluate(self.weight_decay, state.count)

        def decayed(u: jax.Array, p: jax.Array) -> jax.Array:
            return (u + jnp.asarray(decay).astype(u.dtype) * p).astype(u.dtype)

        updates = masks.apply_masked(decayed, self.mask, updates, params)
        return updates, AddDecayedWeightsState(count=numerics.safe_increment(state.count))
