"""Schedules: values that map a step count to a hyperparameter value.

Each schedule is a gradtx value (a frozen, hashable, printable pytree whose
numbers are leaves) and gives the same values as Optax's schedule of the same
name for valid arguments. Invalid arguments raise ValueError where Optax logs a
message and silently returns a constant schedule.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks
from gradtx.base import Schedule, hyperparameter, static_field, value_class


@value_class
class constant_schedule(Schedule):  # noqa: N801 - Optax's name
    """Returns ``value`` at every step.

    Args:
      value: the constant value.

    Example:
      >>> import gradtx
      >>> round(float(gradtx.constant_schedule(0.1)(1000)), 6)
      0.1
    """

    value: jax.typing.ArrayLike = hyperparameter()

    def __post_init__(self) -> None:
        checks.check_number("value", self.value)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        del count
        return jnp.asarray(self.value)


@value_class
class linear_schedule(Schedule):  # noqa: N801
    """Moves linearly from ``init_value`` to ``end_value``, then stays there.

    Rule: ``k = clip(t - transition_begin, 0, transition_steps)``;
    ``v = init_value + (end_value - init_value) * k / transition_steps``.

    Args:
      init_value: the value before ``transition_begin``.
      end_value: the value after ``transition_begin + transition_steps``.
      transition_steps: length of the ramp, > 0.
      transition_begin: steps to hold ``init_value`` first, >= 0.

    Raises:
      ValueError: if ``transition_steps <= 0`` or ``transition_begin < 0``.

    Example:
      >>> import gradtx
      >>> float(gradtx.linear_schedule(0.0, 1.0, transition_steps=10)(5))
      0.5
    """

    init_value: jax.typing.ArrayLike = hyperparameter()
    end_value: jax.typing.ArrayLike = hyperparameter()
    transition_steps: jax.typing.ArrayLike = hyperparameter()
    transition_begin: jax.typing.ArrayLike = hyperparameter(default=0)

    def __post_init__(self) -> None:
        checks.check_number("init_value", self.init_value)
        checks.check_number("end_value", self.end_value)
        checks.check_number("transition_steps", self.transition_steps, low=0, low_inclusive=False)
        checks.check_number("transition_begin", self.transition_begin, low=0)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        return _ramp(
            count, self.init_value, self.end_value, self.transition_steps, self.transition_begin
        )


def _ramp(count: Any, init_value: Any, end_value: Any, steps: Any, begin: Any) -> jax.Array:
    # Optax's polynomial schedule with power 1, written the same way so the
    # values agree to the last bit.
    clipped = jnp.clip(count - begin, 0, steps)
    fraction = 1 - clipped / steps
    return (init_value - end_value) * fraction**1 + end_value


@value_class
class cosine_decay_schedule(Schedule):  # noqa: N801
    """Cosine decay from ``init_value`` to ``alpha * init_value``.

    Rule: ``k = min(t, decay_steps)``;
    ``v = init_value * ((1 - alpha) * (0.5 * (1 + cos(pi * k / decay_steps)))**exponent + alpha)``.

    Args:
      init_value: the value at step 0.
      decay_steps: steps over which to decay, > 0.
      alpha: the final value as a fraction of ``init_value``.
      exponent: power applied to the cosine factor.

    Raises:
      ValueError: if ``decay_steps <= 0``.

    References:
      Loshchilov & Hutter, *SGDR: Stochastic Gradient Descent with Warm
      Restarts*, 2017, https://arxiv.org/abs/1608.03983

    Example:
      >>> import gradtx
      >>> round(float(gradtx.cosine_decay_schedule(1.0, decay_steps=100)(50)), 6)
      0.5
    """

    init_value: jax.typing.ArrayLike = hyperparameter()
    decay_steps: jax.typing.ArrayLike = hyperparameter()
    alpha: jax.typing.ArrayLike = hyperparameter(default=0.0)
    exponent: jax.typing.ArrayLike = hyperparameter(default=1.0)

    def __post_init__(self) -> None:
        checks.check_number("init_value", self.init_value)
        checks.check_number("decay_steps", self.decay_steps, low=0, low_inclusive=False)
        checks.check_number("alpha", self.alpha)
        checks.check_number("exponent", self.exponent)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        return _cosine(count, self.init_value, self.decay_steps, self.alpha, self.exponent)


def _as_float(x: Any) -> Any:
    return float(x) if isinstance(x, int) else x


def _cosine(count: Any, init_value: Any, steps: Any, alpha: Any, exponent: Any) -> jax.Array:
    steps, count = _as_float(steps), _as_float(count)
    count = jnp.minimum(count, steps)
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / steps))
    return init_value * ((1 - alpha) * cosine**exponent + alpha)


@value_class
class warmup_cosine_decay_schedule(Schedule):  # noqa: N801
    """Linear warm-up to ``peak_value``, then cosine decay to ``end_value``.

    Rule: for ``t < warmup_steps`` the linear ramp from ``init_value`` to
    ``peak_value``; afterwards :class:`cosine_decay_schedule` from
    ``peak_value`` over ``decay_steps - warmup_steps`` steps with
    ``alpha = end_value / peak_value``.

    Args:
      init_value: the value at step 0.
      peak_value: the value at the end of warm-up.
      warmup_steps: length of the warm-up, >= 0.
      decay_steps: total length of warm-up plus decay, > ``warmup_steps``.
      end_value: the final value.
      exponent: power applied to the cosine factor.

    Raises:
      ValueError: if ``warmup_steps < 0`` or ``decay_steps <= warmup_steps``.

    References:
      Goyal et al., *Accurate, Large Minibatch SGD*, 2017,
      https://arxiv.org/abs/1706.02677

    Example:
      >>> import gradtx
      >>> s = gradtx.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110)
      >>> float(s(5)), float(s(10))
      (0.5, 1.0)
    """

    init_value: jax.typing.ArrayLike = hyperparameter()
    peak_value: jax.typing.ArrayLike = hyperparameter()
    warmup_steps: jax.typing.ArrayLike = hyperparameter()
    decay_steps: jax.typing.ArrayLike = hyperparameter()
    end_value: jax.typing.ArrayLike = hyperparameter(default=0.0)
    exponent: jax.typing.ArrayLike = hyperparameter(default=1.0)

    def __post_init__(self) -> None:
        checks.check_number("init_value", self.init_value)
        checks.check_number("peak_value", self.peak_value)
        checks.check_number("warmup_steps", self.warmup_steps, low=0)
        checks.check_number("end_value", self.end_value)
        checks.check_number("exponent", self.exponent)
        checks.check_number("decay_steps", self.decay_steps)
        concrete = checks.concrete_pair(self.decay_steps, self.warmup_steps)
        if concrete is not None and concrete[0] <= concrete[1]:
            raise ValueError(
                "decay_steps must be > warmup_steps (it counts the warm-up too), "
                f"got decay_steps={self.decay_steps!r}, warmup_steps={self.warmup_steps!r}"
            )

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        peak, end = jnp.asarray(self.peak_value), self.end_value
        alpha = jnp.where(peak == 0.0, 0.0, end / jnp.where(peak == 0.0, 1.0, peak))
        # A zero-length warm-up is never selected below; a unit length only
        # keeps its (unused) division finite.
        warmup_length = jnp.maximum(self.warmup_steps, 1)
        warmup = _ramp(count, self.init_value, self.peak_value, warmup_length, 0)
        # Optax's arithmetic on the numbers as given (Python ints stay exact); ArrayLike
        # also admits bool and complex, for which `-` and `<` are not typed.
        step: Any = count
        warmup_steps: Any = self.warmup_steps
        decay = _cosine(
            step - warmup_steps,
            self.peak_value,
            self.decay_steps - warmup_steps,
            alpha,
            self.exponent,
        )
        return jnp.where(step < warmup_steps, warmup, decay)


@value_class
class piecewise_constant_schedule(Schedule):  # noqa: N801
    """Multiplies the value by a scale at each boundary it passes.

    Rule: ``v = init_value * prod(scale for boundary, scale in
    boundaries_and_scales if t >= boundary)``.

    Args:
      init_value: the value before the first boundary.
      boundaries_and_scales: a mapping from step to the factor applied from
        that step on; factors must be >= 0.

    Raises:
      ValueError: if a scale is negative or a boundary is not an integer.

    Example:
      >>> import gradtx
      >>> s = gradtx.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.5})
      >>> [round(float(s(t)), 6) for t in (0, 10, 20)]
      [1.0, 0.1, 0.05]
    """

    init_value: jax.typing.ArrayLike = hyperparameter()
    boundaries_and_scales: Any = hyperparameter(default=None)

    def __post_init__(self) -> None:
        checks.check_number("init_value", self.init_value)
        pairs = self.boundaries_and_scales
        if pairs is None:
            return
        items = pairs.items() if isinstance(pairs, dict) else pairs
        normalized = []
        for boundary, factor in items:
            if not isinstance(boundary, int) or isinstance(boundary, bool):
                raise ValueError(
                    f"boundaries_and_scales keys must be integer steps, got {boundary!r}"
                )
            checks.check_number(f"boundaries_and_scales[{boundary}]", factor, low=0.0)
            normalized.append((boundary, factor))
        object.__setattr__(self, "boundaries_and_scales", tuple(sorted(normalized)))

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        value = jnp.asarray(self.init_value)
        for boundary, factor in self.boundaries_and_scales or ():
            # Optax's formulation, kept for bit-for-bit agreement.
            indicator = jnp.maximum(0.0, jnp.sign(boundary - count))
            value = value * indicator + (1 - indicator) * factor * value
        return value

    def __repr__(self) -> str:
        text = f"piecewise_constant_schedule(init_value={self.init_value!r}"
        if self.boundaries_and_scales is not None:
            pairs = ", ".join(f"{b!r}: {s!r}" for b, s in self.boundaries_and_scales)
            text += f", boundaries_and_scales={{{pairs}}}"
        return text + ")"


@value_class
class custom_schedule(Schedule):  # noqa: N801
    """Wraps a plain Python callable so it can sit inside a schedule value.

    Args:
      function: a callable from step count to value; kept static (not traced
        as a hyperparameter), compared by identity.
    """

    function: Callable[[Any], Any] = static_field()

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        return jnp.asarray(self.function(count))


@value_class
class join_schedules(Schedule):  # noqa: N801
    """Runs ``schedules[i]`` between ``boundaries[i-1]`` and ``boundaries[i]``.

    Each schedule sees the steps counted from its own start:
    ``v = schedules[i](t - boundaries[i-1])``.

    Args:
      schedules: schedules (gradtx ones or plain callables).
      boundaries: increasing integer steps, one fewer than ``schedules``.

    Raises:
      ValueError: if the lengths do not fit or the boundaries decrease.

    Example:
      >>> import gradtx
      >>> s = gradtx.join_schedules(
      ...     [gradtx.constant_schedule(1.0), gradtx.constant_schedule(2.0)], [5])
      >>> float(s(4)), float(s(5))
      (1.0, 2.0)
    """

    schedules: tuple[Schedule, ...] = hyperparameter()
    boundaries: tuple[Any, ...] = hyperparameter()

    def __post_init__(self) -> None:
        members = tuple(
            s if isinstance(s, Schedule) else custom_schedule(s) if callable(s) else None
            for s in self.schedules
        )
        for position, member in enumerate(members):
            if member is None:
                raise TypeError(
                    f"schedules[{position}] must be a schedule, got {self.schedules[position]!r}"
                )
        boundaries = tuple(self.boundaries)
        if len(boundaries) != len(members) - 1:
            raise ValueError(
                f"boundaries must have one entry fewer than schedules: got "
                f"{len(boundaries)} boundaries for {len(members)} schedules"
            )
        for position, boundary in enumerate(boundaries):
            checks.check_number(f"boundaries[{position}]", boundary, low=0)
        concrete = [checks.concrete_value(b) for b in boundaries]
        if all(b is not None for b in concrete) and any(
            later < earlier for earlier, later in zip(concrete, concrete[1:])
        ):
            raise ValueError(f"boundaries must not decrease, got {boundaries!r}")
        object.__setattr__(self, "schedules", members)
        object.__setattr__(self, "boundaries", boundaries)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        output = self.schedules[0](count)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:]):
            output = jnp.where(count < boundary, output, schedule(count - boundary))
        return output


@value_class
class exponential_decay(Schedule):  # noqa: N801
    """Exponential decay: ``init_value * decay_rate ** ((t - begin) / steps)``.

    Rule, with ``k = t - transition_begin``: ``v = init_value`` for ``k <= 0``,
    else ``init_value * decay_rate ** p`` with ``p = k / transition_steps``
    (floored when ``staircase``); then clipped at ``end_value`` if given (from
    below when decaying, from above when ``decay_rate > 1``).

    Args:
      init_value: the value until ``transition_begin``.
      transition_steps: steps over which the value is multiplied by
        ``decay_rate`` once, > 0.
      decay_rate: the factor per ``transition_steps``, > 0.
      transition_begin: steps to hold ``init_value``, >= 0.
      staircase: decay in discrete jumps every ``transition_steps``.
      end_value: the bound the value does not pass, or None.

    Raises:
      ValueError: if ``transition_steps <= 0``, ``decay_rate <= 0`` or
        ``transition_begin < 0`` (Optax instead logs a message and returns a
        constant schedule).

    Example:
      >>> import gradtx
      >>> s = gradtx.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
      >>> float(s(20))
      0.25
    """

    init_value: jax.typing.ArrayLike = hyperparameter()
    transition_steps: jax.typing.ArrayLike = hyperparameter()
    decay_rate: jax.typing.ArrayLike = hyperparameter()
    transition_begin: jax.typing.ArrayLike = hyperparameter(default=0)
    staircase: bool = static_field(default=False)
    end_value: jax.typing.ArrayLike | None = hyperparameter(default=None)

    def __post_init__(self) -> None:
        checks.check_number("init_value", self.init_value)
        checks.check_number("transition_steps", self.transition_steps, low=0, low_inclusive=False)
        checks.check_number("decay_rate", self.decay_rate, low=0.0, low_inclusive=False)
        checks.check_number("transition_begin", self.transition_begin, low=0)
        checks.check_number("end_value", self.end_value)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        # As in warmup_cosine_decay_schedule: Optax's arithmetic on the numbers as given.
        step: Any = count
        decreased_count = step - self.transition_begin
        exponent = decreased_count / self.transition_steps
        if self.staircase:
            exponent = jnp.floor(exponent)
        value = jnp.where(
            decreased_count <= 0,
            self.init_value,
            self.init_value * jnp.power(self.decay_rate, exponent),
        )
        if self.end_value is not None:
            value = jnp.where(
                jnp.asarray(self.decay_rate) < 1.0,
                jnp.maximum(value, self.end_value),
                jnp.minimum(value, self.end_value),
            )
        return value
