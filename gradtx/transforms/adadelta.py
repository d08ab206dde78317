"""Adadelta: steps sized by the ratio of past updates' and gradients' root mean squares."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.aliases import Alias
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
from gradtx.combine import chain
from gradtx.transforms.scale import identity, scale_by_learning_rate
from gradtx.transforms.weight_decay import add_decayed_weights


class ScaleByAdaDeltaState(NamedTuple):
    """State of :class:`scale_by_adadelta`.

    Attributes:
      e_g: moving average of squared gradients.
      e_x: moving average of squared updates.
    """

    e_g: Updates
    e_x: Updates


@value_class
class scale_by_adadelta(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by Adadelta's ratio of root mean squares.

    Update rule::

        e_g <- rho * e_g + (1 - rho) * g**2
        u <- sqrt(e_x + eps) / sqrt(e_g + eps) * g      (e_x of the previous step)
        e_x <- rho * e_x + (1 - rho) * u**2

    The averages are computed in float32 or wider and stored in the params'
    dtype; the updates come back in the gradients' dtype.

    Args:
      rho: decay of both moving averages, in [0, 1].
      eps: added inside both square roots, >= 0.

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Zeiler, *ADADELTA: An Adaptive Learning Rate Method*, 2012,
      https://arxiv.org/abs/1212.5701

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adadelta(rho=0.0, eps=1.0)
      >>> tx.update(jnp.array([0.0, 3.0]), tx.init(jnp.zeros(2)))[0].round(2)
      Array([0.  , 0.95], dtype=float32)
    """

    rho: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-6, shown=True)

    def __post_init__(self) -> None:
        checks.check_number("rho", self.rho, low=0.0, high=1.0)
        checks.check_number("eps", self.eps, low=0.0)

    def init(self, params: Params) -> OptState:
        return ScaleByAdaDeltaState(
            e_g=numerics.squared_moment_like(params), e_x=numerics.squared_moment_like(params)
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByAdaDeltaState, "scale_by_adadelta")
        checks.check_trees_match(
            updates, state.e_g, tree_name="gradients", reference_name="optimizer state"
        )
        rho, eps = self.rho, self.eps

        def leaf(g: jax.Array, e_g: jax.Array, e_x: jax.Array) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, e_g.dtype, e_x.dtype)
            g_wide = g.astype(dtype)
            e_g_new = numerics.update_moment(g_wide * g_wide, e_g, rho, dtype=dtype)
            step = (jnp.sqrt(e_x.astype(dtype) + eps) / jnp.sqrt(e_g_new + eps)) * g_wide
            e_x_new = numerics.update_moment(step * step, e_x, rho, dtype=dtype)
            return step.astype(g.dtype), e_g_new.astype(e_g.dtype), e_x_new.astype(e_x.dtype)

        new_updates, e_g, e_x = trees.leaf_map_n(3, leaf, updates, state.e_g, state.e_x)
        return new_updates, ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)


@value_class
class adadelta(Alias):  # noqa: N801 - Optax's name
    """Adadelta, with optional weight decay.

    Update rule: ``u <- g + weight_decay(t) * p`` (on the leaves
    ``weight_decay_mask`` selects), then :class:`~gradtx.scale_by_adadelta`,
    then ``u <- -learning_rate(t) * u``. The chain is Optax's,
    ``add_decayed_weights -> scale_by_adadelta -> scale_by_learning_rate``, so
    the state is Optax's too and ``update`` needs the params (for the weight
    decay, even when it is zero). As in Optax, ``learning_rate=None`` leaves
    the updates unscaled and not negated (``identity`` in place of the
    learning-rate step), so that adadelta ascends: give a learning rate to
    descend.

    Args:
      learning_rate: a non-negative number, a schedule, or None.
      rho: decay of the moving averages, in [0, 1].
      eps: added inside the square roots, >= 0.
      weight_decay: the weight-decay coefficient (or schedule), >= 0.
      weight_decay_mask: which leaves to decay (see
        :class:`~gradtx.add_decayed_weights`).

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Zeiler, *ADADELTA: An Adaptive Learning Rate Method*, 2012,
      https://arxiv.org/abs/1212.5701

    Example:
      >>> import gradtx
      >>> gradtx.adadelta(1.0, rho=0.95)
      adadelta(learning_rate=1.0, rho=0.95, eps=1e-06)
    """

    learning_rate: ScalarOrSchedule | None = hyperparameter(default=None, shown=True)
    rho: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-6, shown=True)
    weight_decay: ScalarOrSchedule = hyperparameter(default=0.0)
    weight_decay_mask: Any = static_field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "weight_decay_mask", add_decayed_weights(0.0, self.weight_decay_mask).mask
        )
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        learning_rate: Transformation = identity()
        if self.learning_rate is not None:
            learning_rate = scale_by_learning_rate(self.learning_rate)
        return chain(
            add_decayed_weights(self.weight_decay, self.weight_decay_mask),
            scale_by_adadelta(self.rho, self.eps),
            learning_rate,
        )
