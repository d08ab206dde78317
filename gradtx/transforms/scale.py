"""Scaling transformations: identity, a fixed scale, the learning rate."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
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


class ScaleByScheduleState(NamedTuple):
    """State of :class:`scale_by_schedule`, and of :class:`scale_by_learning_rate` with a schedule.

    Optax's layout: a constant learning rate keeps no state (``EmptyState``).

    Attributes:
      count: int32 number of updates applied so far (the schedule's step).
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count


def evaluate(value: ScalarOrSchedule, count: jax.Array) -> Any:
    """A hyperparameter's value at step ``count``: calls it if it is a schedule."""
    return value(count) if callable(value) else value


@value_class
class identity(Transformation):  # noqa: N801 - Optax's name, so ported code works
    """Leaves updates unchanged.

    Update rule: ``u <- u``.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.identity().update(jnp.ones(2), gradtx.EmptyState())[0]
      Array([1., 1.], dtype=float32)
    """

    needs_floating_leaves = False  # does no arithmetic on the leaves

    def init(self, params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        return updates, state


@value_class
class scale(Transformation):  # noqa: N801
    """Multiplies updates by a fixed factor.

    Update rule: ``u <- step_size * u``.

    Args:
      step_size: the factor (any real number; negative flips the sign).

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.scale(-0.5).update(jnp.ones(2), gradtx.EmptyState())[0]
      Array([-0.5, -0.5], dtype=float32)
    """

    step_size: jax.typing.ArrayLike = hyperparameter()

    def __post_init__(self) -> None:
        checks.check_number("step_size", self.step_size)

    def init(self, params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        return _scaled(updates, self.step_size), state


def _scaled(updates: Updates, factor: Any) -> Updates:
    # The factor is cast to each update's dtype so bf16 updates stay bf16.
    factor_in = numerics.casts_of(factor)
    return trees.leaf_map(lambda u: factor_in(u.dtype) * u, updates)


@value_class
class scale_by_schedule(Transformation):  # noqa: N801 - Optax's name
    """Multiplies updates by a scheduled factor.

    Update rule, with ``t`` the step count: ``u <- step_size_fn(t) * u``.

    Args:
      step_size_fn: a schedule (a callable from the step count to the factor).

    Raises:
      TypeError: if ``step_size_fn`` is not callable.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_schedule(gradtx.linear_schedule(1.0, 0.0, 10))
      >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
      Array([1., 1.], dtype=float32)
    """

    step_size_fn: ScalarOrSchedule = hyperparameter()

    def __post_init__(self) -> None:
        if not callable(self.step_size_fn):
            raise TypeError(
                f"step_size_fn must be a schedule (a callable), got {self.step_size_fn!r}; "
                "use gradtx.scale for a constant factor"
            )

    def init(self, params: Params) -> OptState:
        del params
        return ScaleByScheduleState(count=numerics.zero_count())

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        return _scale_by_schedule(updates, state, self.step_size_fn)


def _scale_by_schedule(
    updates: Updates, state: ScaleByScheduleState, step_size_fn: Any, sign: float = 1.0
) -> tuple[Updates, ScaleByScheduleState]:
    step_size = step_size_fn(state.count)
    if sign != 1.0:
        step_size = sign * jnp.asarray(step_size)
    updates = _scaled(updates, step_size)
    return updates, ScaleByScheduleState(count=numerics.safe_increment(state.count))


@value_class
class scale_by_learning_rate(Transformation):  # noqa: N801
    """Scales updates by the (negated) learning rate.

    Update rule, with ``t`` the step count: ``u <- -lr(t) * u`` (or ``+lr(t) * u``
    when ``flip_sign`` is False). The state is Optax's: ``EmptyState()`` for a
    constant learning rate, :class:`ScaleByScheduleState` (the step count) for a
    schedule, so a state saved by Optax loads unchanged.

    Args:
      learning_rate: a non-negative number or a schedule (a callable from the
        step count to the learning rate).
      flip_sign: negate the learning rate, turning gradients into descent
        directions (the default, as in Optax).

    Raises:
      ValueError: if a numeric ``learning_rate`` is negative.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_learning_rate(0.1)
      >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
      Array([-0.1, -0.1], dtype=float32)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    flip_sign: bool = static_field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        checks.check_number("learning_rate", self.learning_rate, low=0.0)

    def init(self, params: Params) -> OptState:
        del params
        # Optax's layout: a count only when there is a schedule to read at it.
        if callable(self.learning_rate):
            return ScaleByScheduleState(count=numerics.zero_count())
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        sign = -1.0 if self.flip_sign else 1.0
        if callable(self.learning_rate):
            return _scale_by_schedule(updates, state, self.learning_rate, sign)
        step_size = sign * jnp.asarray(self.learning_rate)
        return _scaled(updates, step_size), state
