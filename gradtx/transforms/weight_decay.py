"""Decoupled weight decay: adds ``weight_decay * params`` to the updates."""

import dataclasses
from typing import Any, NamedTuple

import jax

from gradtx import checks, masks, numerics, trees
from gradtx.base import (
    EmptyState,
    OptState,
    Params,
    ScalarOrSchedule,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.transforms import masking


class WeightDecaySchedule(NamedTuple):
    """State of :class:`add_decayed_weights` with a weight-decay schedule (Optax's name).

    A constant weight decay keeps no state (``EmptyState``), as in Optax.

    Attributes:
      count: int32 step count, the step at which the schedule is read.
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count


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
        if self.mask is not None:
            # Optax's layout: the masked decay is masked(add_decayed_weights(wd), mask).
            return masking.masked_init(
                self._unmasked(), masking.mask_tree_for(self.mask, params), params
            )
        # Optax's layout: a count only when there is a schedule to read at it.
        if callable(self.weight_decay):
            return WeightDecaySchedule(count=numerics.zero_count())
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        if params is None:
            raise ValueError(checks.PARAMS_REQUIRED.format(name="add_decayed_weights"))
        checks.check_trees_match(
            updates, params, tree_name="gradients", reference_name="parameters"
        )
        if self.mask is not None:
            return masking.masked_update(
                self._unmasked(),
                masking.mask_tree_for(self.mask, updates),
                updates,
                state,
                params,
                extra_args,
                mask_compatible_extra_args=False,
            )
        if callable(self.weight_decay):
            decay = self.weight_decay(state.count)
            state = WeightDecaySchedule(count=numerics.safe_increment(state.count))
        else:
            decay = self.weight_decay

        decay_in = numerics.casts_of(decay)

        def decayed(u: jax.Array, p: jax.Array) -> jax.Array:
            return numerics.cast(u + decay_in(u.dtype) * p, u.dtype)

        return trees.leaf_map(decayed, updates, params), state

    def _unmasked(self) -> "add_decayed_weights":
        return dataclasses.replace(self, mask=None)
