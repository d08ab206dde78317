"""Reducing the step size when a monitored loss stops improving (Optax's contrib)."""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.base import (
    OptState,
    Params,
    Transformation,
    Updates,
    hyperparameter,
    value_class,
)


class ReduceLROnPlateauState(NamedTuple):
    """State of :class:`reduce_on_plateau` (Optax's layout).

    Attributes:
      scale: the factor the updates are multiplied by (in the params' lowest
        floating dtype).
      best_value: the best averaged loss so far (params' highest dtype).
      plateau_count: int32 number of averaged losses since the last improvement.
      cooldown_count: int32 number of averaged losses left to ignore after a
        reduction.
      count: int32 number of losses in the current average.
      avg_value: the running average of the current losses (params' highest dtype).
    """

    scale: jax.Array
    best_value: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    avg_value: jax.Array


def _ordered(first: Any, second: Any, lowest: bool) -> Any:
    """The lower (or higher) of two dtypes of which one promotes to the other, as Optax's."""
    promoted = jnp.promote_types(first, second)
    if promoted not in (first, second):
        raise ValueError(
            f"reduce_on_plateau cannot order the params' dtypes {jnp.dtype(first).name} and "
            f"{jnp.dtype(second).name} (neither promotes to the other); give it params of "
            "one floating dtype"
        )
    higher = promoted
    lower = second if promoted == first else first
    return lower if lowest else higher


def _params_dtype(params: Params, *, lowest: bool) -> Any:
    """The params' lowest or highest dtype (float32 for no leaves), as ``optax.tree.dtype``."""
    dtypes = [leaf.dtype for leaf in trees.leaves(params)]
    if not dtypes:
        return jnp.asarray([]).dtype
    return functools.reduce(lambda a, b: _ordered(a, b, lowest), dtypes)


@value_class
class reduce_on_plateau(Transformation):  # noqa: N801 - Optax's name
    """Multiplies the updates by a scale that shrinks when the loss plateaus.

    The loss is passed to each update as ``value=``. Every ``accumulation_size``
    losses are averaged, and each average ``a`` is judged::

        improved = a < (1 - rtol) * best_value - atol
        if improved: best_value = a; plateau_count = 0
        else: plateau_count += 1
        if cooldown_count > 0: cooldown_count -= 1; plateau_count = 0
        elif plateau_count == patience:
            scale = max(scale * factor, min_scale); plateau_count = 0
            cooldown_count = cooldown
        u <- scale * g

    Chain it after the optimizer (``chain(adam(lr), reduce_on_plateau())``) to
    scale the learning rate. The state's floating fields are kept in the
    params' dtypes, as in Optax, and updated in float32 or wider.

    Args:
      factor: the factor the scale is multiplied by at a plateau, in (0, 1).
      patience: how many averaged losses without improvement make a plateau,
        >= 1.
      rtol: the relative improvement over the best loss that counts, in [0, 1].
      atol: the absolute improvement that counts, >= 0 (``rtol`` and ``atol``
        are not both 0).
      cooldown: how many averaged losses to ignore after a reduction, >= 0.
      accumulation_size: how many losses make one average, >= 1 (1 for a loss
        already averaged, e.g. on a validation set; more for minibatch losses).
      min_scale: the scale does not go below it, >= 0.

    Raises:
      ValueError: if a hyperparameter is out of its range.
      TypeError: from ``update`` when no ``value=`` is given.

    References:
      Optax, ``optax.contrib.reduce_on_plateau``, after Keras'
      ``ReduceLROnPlateau`` callback, https://keras.io/api/callbacks/reduce_lr_on_plateau/

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.reduce_on_plateau(patience=2)
      >>> state = tx.init(jnp.zeros(2))
      >>> for loss in [1.0, 1.0, 1.0]:
      ...     updates, state = tx.update(jnp.ones(2), state, value=loss)
      >>> updates.round(6)
      Array([0.1, 0.1], dtype=float32)
    """

    factor: jax.typing.ArrayLike = hyperparameter(default=0.1, shown=True)
    patience: jax.typing.ArrayLike = hyperparameter(default=10, shown=True)
    rtol: jax.typing.ArrayLike = hyperparameter(default=1e-4)
    atol: jax.typing.ArrayLike = hyperparameter(default=0.0)
    cooldown: jax.typing.ArrayLike = hyperparameter(default=0)
    accumulation_size: jax.typing.ArrayLike = hyperparameter(default=1)
    min_scale: jax.typing.ArrayLike = hyperparameter(default=0.0)

    def __post_init__(self) -> None:
        checks.check_number(
            "factor", self.factor, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
        )
        checks.check_number("patience", self.patience, low=1)
        checks.check_number("rtol", self.rtol, low=0.0, high=1.0)
        checks.check_number("atol", self.atol, low=0.0)
        checks.check_number("cooldown", self.cooldown, low=0)
        checks.check_number("accumulation_size", self.accumulation_size, low=1)
        checks.check_number("min_scale", self.min_scale, low=0.0)
        tolerances = checks.concrete_pair(self.rtol, self.atol)
        if tolerances is not None and tolerances[0] == 0 and tolerances[1] == 0:
            raise ValueError(
                "rtol and atol must not both be 0 (no loss would count as an improvement), "
                f"got rtol={self.rtol!r}, atol={self.atol!r}"
            )

    def init(self, params: Params) -> OptState:
        highest = _params_dtype(params, lowest=False)
        return ReduceLROnPlateauState(
            scale=jnp.asarray(1.0, _params_dtype(params, lowest=True)),
            best_value=jnp.asarray(jnp.inf, highest),
            plateau_count=numerics.zero_count(),
            cooldown_count=numerics.zero_count(),
            count=numerics.zero_count(),
            avg_value=jnp.asarray(0.0, highest),
        )

    def update(
        self,
        updates: Updates,
        state: OptState,
        params: Params | None = None,
        *,
        value: jax.typing.ArrayLike | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ReduceLROnPlateauState, "reduce_on_plateau")
        if value is None:
            raise TypeError(checks.VALUE_REQUIRED.format(name="reduce_on_plateau"))
        loss = jnp.asarray(value)
        dtype = numerics.compute_dtype(loss.dtype, state.avg_value.dtype, state.scale.dtype)
        count = numerics.safe_increment(state.count)
        average = (
            state.count.astype(dtype) * state.avg_value.astype(dtype) + loss.astype(dtype)
        ) / count.astype(dtype)
        accumulated = state._replace(count=count, avg_value=average.astype(state.avg_value.dtype))
        # Optax runs the judgment under lax.cond; both branches are cheap scalars.
        new_state = jax.tree.map(
            lambda after, before: jnp.where(count == self.accumulation_size, after, before),
            self._judge(accumulated, dtype),
            accumulated,
        )
        scale = new_state.scale
        new_updates = trees.leaf_map(
            lambda g: (
                scale.astype(dtype) * g.astype(numerics.compute_dtype(g.dtype, dtype))
            ).astype(g.dtype),
            updates,
        )
        return new_updates, new_state

    def _judge(self, state: ReduceLROnPlateauState, dtype: Any) -> ReduceLROnPlateauState:
        """The state once an average is complete: best value, plateau count and scale updated."""
        # The average as stored, as Optax judges it.
        average = state.avg_value.astype(dtype)
        best = state.best_value.astype(dtype)
        rtol: Any = self.rtol
        improved = average < (1 - rtol) * best - self.atol
        best_value = jnp.where(improved, average, best).astype(state.best_value.dtype)
        plateau_count = jnp.where(improved, 0, numerics.safe_increment(state.plateau_count)).astype(
            jnp.int32
        )
        reached = plateau_count == self.patience
        scale = state.scale.astype(dtype)
        reduced = jnp.maximum(jnp.where(reached, scale * self.factor, scale), self.min_scale)
        cooling = state.cooldown_count > 0
        return ReduceLROnPlateauState(
            scale=jnp.where(cooling, scale, reduced).astype(state.scale.dtype),
            best_value=best_value,
            plateau_count=jnp.where(cooling | reached, 0, plateau_count).astype(jnp.int32),
            cooldown_count=jnp.where(
                cooling, state.cooldown_count - 1, jnp.where(reached, self.cooldown, 0)
            ).astype(jnp.int32),
            count=numerics.zero_count(),
            avg_value=jnp.zeros((), state.avg_value.dtype),
        )
