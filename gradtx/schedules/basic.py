"""The basic schedules: constant, polynomial, cosine, exponential, piecewise, joined.

The functions without a leading underscore (``polynomial_value``, ``ramp``,
``cosine_value``, ``exponential_value``, ``interpolate``, ...) are the rules the
schedules of this package share; they are not part of gradtx's public API.
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


def polynomial_value(
    count: Any, init_value: Any, end_value: Any, power: Any, steps: Any, begin: Any
) -> jax.Array:
    """Optax's polynomial transition, written as Optax writes it (same bits)."""
    clipped = jnp.clip(count - begin, 0, steps)
    # Under jit XLA may divide by multiplying with the reciprocal, leaving 1 - 1.0000001
    # at the end: kept at 0, so a fractional power is not NaN there.
    fraction = jnp.maximum(1 - clipped / steps, 0)
    return (init_value - end_value) * fraction**power + end_value


def ramp(count: Any, init_value: Any, end_value: Any, steps: Any) -> jax.Array:
    """The linear transition from step 0: Optax's linear schedule."""
    return polynomial_value(count, init_value, end_value, 1, steps, 0)


def _check_transition(schedule: Any) -> None:
    checks.check_number("init_value", schedule.init_value)
    checks.check_number("end_value", schedule.end_value)
    checks.check_number("transition_steps", schedule.transition_steps, low=0, low_inclusive=False)
    checks.check_number("transition_begin", schedule.transition_begin, low=0)


@value_class
class polynomial_schedule(Schedule):  # noqa: N801
    """Moves from ``init_value`` to ``end_value`` along a polynomial, then stays there.

    Rule: ``k = clip(t - transition_begin, 0, transition_steps)``;
    ``v = (init_value - end_value) * (1 - k / transition_steps)**power + end_value``.

    Args:
      init_value: the value before ``transition_begin``.
      end_value: the value after ``transition_begin + transition_steps``.
      power: the power of the polynomial (1 is :class:`linear_schedule`).
      transition_steps: length of the transition, > 0.
      transition_begin: steps to hold ``init_value`` first, >= 0.

    Raises:
      ValueError: if ``transition_steps <= 0`` or ``transition_begin < 0``
        (Optax instead logs a message and returns a constant schedule, or
        starts at 0).

    Example:
      >>> import gradtx
      >>> s = gradtx.polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)
      >>> [round(float(s(t)), 6) for t in (0, 5, 10, 20)]
      [1.0, 0.25, 0.0, 0.0]
    """

    init_value: jax.typing.ArrayLike = hyperparameter()
    end_value: jax.typing.ArrayLike = hyperparameter()
    power: jax.typing.ArrayLike = hyperparameter()
    transition_steps: jax.typing.ArrayLike = hyperparameter()
    transition_begin: jax.typing.ArrayLike = hyperparameter(default=0)

    def __post_init__(self) -> None:
        _check_transition(self)
        checks.check_number("power", self.power)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        return polynomial_value(
            count,
            self.init_value,
            self.end_value,
            self.power,
            self.transition_steps,
            self.transition_begin,
        )


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
        _check_transition(self)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        # Optax's polynomial schedule with power 1, so the values agree to the last bit.
        return polynomial_value(
            count, self.init_value, self.end_value, 1, self.transition_steps, self.transition_begin
        )


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
        return cosine_value(count, self.init_value, self.decay_steps, self.alpha, self.exponent)


def _as_float(x: Any) -> Any:
    return float(x) if isinstance(x, int) else x


def cosine_value(count: Any, init_value: Any, steps: Any, alpha: Any, exponent: Any) -> jax.Array:
    """Optax's cosine decay (Python ints made floats, as Optax does, against int32 overflow)."""
    steps, count = _as_float(steps), _as_float(count)
    count = jnp.minimum(count, steps)
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / steps))
    return init_value * ((1 - alpha) * cosine**exponent + alpha)


def exponential_value(
    count: Any,
    init_value: Any,
    transition_steps: Any,
    decay_rate: Any,
    transition_begin: Any,
    staircase: bool,
    end_value: Any,
) -> jax.Array:
    """Optax's exponential decay on the numbers as given (Python ints stay exact)."""
    decreased_count = count - transition_begin
    exponent = decreased_count / transition_steps
    if staircase:
        exponent = jnp.floor(exponent)
    value = jnp.where(
        decreased_count <= 0, init_value, init_value * jnp.power(decay_rate, exponent)
    )
    if end_value is not None:
        value = jnp.where(
            jnp.asarray(decay_rate) < 1.0,
            jnp.maximum(value, end_value),
            jnp.minimum(value, end_value),
        )
    return value


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
        check_exponential_decay(self)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        return exponential_value(
            count,
            self.init_value,
            self.transition_steps,
            self.decay_rate,
            self.transition_begin,
            self.staircase,
            self.end_value,
        )


def check_exponential_decay(schedule: Any) -> None:
    """The checks of :class:`exponential_decay`'s arguments (shared with its warm-up form)."""
    checks.check_number("init_value", schedule.init_value)
    checks.check_number("transition_steps", schedule.transition_steps, low=0, low_inclusive=False)
    checks.check_number("decay_rate", schedule.decay_rate, low=0.0, low_inclusive=False)
    checks.check_number("transition_begin", schedule.transition_begin, low=0)
    checks.check_number("end_value", schedule.end_value)


def boundaries_and_scales_pairs(pairs: Any) -> tuple[tuple[int, Any], ...] | None:
    """``{step: scale}`` (or pairs) as sorted ``(step, scale)`` pairs, checked.

    Raises:
      ValueError: if a step is not an integer or a scale is negative.
    """
    if pairs is None:
        return None
    items = pairs.items() if isinstance(pairs, dict) else pairs
    normalized = []
    for boundary, factor in items:
        if not isinstance(boundary, int) or isinstance(boundary, bool):
            raise ValueError(f"boundaries_and_scales keys must be integer steps, got {boundary!r}")
        checks.check_number(f"boundaries_and_scales[{boundary}]", factor, low=0.0)
        normalized.append((boundary, factor))
    return tuple(sorted(normalized))


def _format_pairs(pairs: tuple[tuple[int, Any], ...]) -> str:
    return "{" + ", ".join(f"{b!r}: {s!r}" for b, s in pairs) + "}"


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
    boundaries_and_scales: Any = hyperparameter(default=None, scalar=False)

    def __post_init__(self) -> None:
        checks.check_number("init_value", self.init_value)
        pairs = boundaries_and_scales_pairs(self.boundaries_and_scales)
        object.__setattr__(self, "boundaries_and_scales", pairs)

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
            text += f", boundaries_and_scales={_format_pairs(self.boundaries_and_scales)}"
        return text + ")"


_INTERPOLATE_TYPES = ("linear", "cosine")


def interpolate(kind: str, start: Any, end: Any, done: Any, left: Any) -> jax.Array:
    """From ``start`` to ``end``, ``done`` of the way there (``left = 1 - done``, each exact).

    Optax's formulas, ``(end - start) * done + start`` and ``end + (start - end) / 2
    * (cos(pi * done) + 1)``, anchored at the nearer end: there they subtract two
    nearly equal numbers when the ends are far apart (a one-cycle schedule's
    0.1 and 0.004), losing float32 digits; from the nearer end they do not.
    """
    if kind == "linear":
        toward_end, toward_start = done, left
    else:  # (1 - cos(pi * x)) / 2 = sin(pi * x / 2)**2, from each end's own small x
        toward_end = jnp.sin(jnp.pi / 2 * done) ** 2
        toward_start = jnp.sin(jnp.pi / 2 * left) ** 2
    return jnp.where(
        done <= 0.5, start + (end - start) * toward_end, end + (start - end) * toward_start
    )


@value_class
class piecewise_interpolate_schedule(Schedule):  # noqa: N801
    """Interpolates between the values reached at the boundaries (linear or cosine).

    Rule: the value at boundary ``b_i`` is ``v_i = init_value * s_1 * ... * s_i``
    (``v_0 = init_value`` at step 0); between ``b_i`` and ``b_{i+1}`` the value
    goes from ``v_i`` to ``v_{i+1}`` with ``p = (t - b_i) / (b_{i+1} - b_i)``::

        linear: v_i + (v_{i+1} - v_i) * p
        cosine: v_{i+1} + (v_i - v_{i+1}) / 2 * (cos(pi * p) + 1)

    and after the last boundary it stays at the last value. (Optax's rule; it
    is evaluated from the nearer of ``v_i`` and ``v_{i+1}``, which keeps the
    float32 digits Optax's form loses where the two are far apart.)

    Args:
      interpolate_type: ``'linear'`` or ``'cosine'``.
      init_value: the value at step 0.
      boundaries_and_scales: a mapping from step to the factor the value has
        been multiplied by when that step is reached; factors must be >= 0.

    Raises:
      ValueError: if ``interpolate_type`` is neither, a scale is negative or a
        boundary is not an integer.

    Example:
      >>> import gradtx
      >>> s = gradtx.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01})
      >>> [round(float(s(t)), 6) for t in (0, 2, 4, 6, 8, 10)]
      [1.0, 0.55, 0.1, 0.0505, 0.001, 0.001]
    """

    interpolate_type: str = static_field()
    init_value: jax.typing.ArrayLike = hyperparameter()
    boundaries_and_scales: Any = hyperparameter(default=None, scalar=False)

    def __post_init__(self) -> None:
        if self.interpolate_type not in _INTERPOLATE_TYPES:
            raise ValueError(
                f"interpolate_type must be 'linear' or 'cosine', got {self.interpolate_type!r}"
            )
        checks.check_number("init_value", self.init_value)
        pairs = boundaries_and_scales_pairs(self.boundaries_and_scales)
        object.__setattr__(self, "boundaries_and_scales", pairs)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        # Optax's construction, with the intervals on a trailing axis so that an
        # array of counts gives an array of values.
        pairs = self.boundaries_and_scales or ()
        bounds = jnp.stack((0,) + tuple(boundary for boundary, _ in pairs))
        values = jnp.cumprod(jnp.stack((self.init_value,) + tuple(scale for _, scale in pairs)))
        step = jnp.asarray(count)
        along = (1,) * step.ndim + (-1,)
        lower, upper = bounds[:-1].reshape(along), bounds[1:].reshape(along)
        interval_sizes = jnp.maximum(upper - lower, 1)
        at = step[..., None]
        inside = jnp.logical_and(lower <= at, at < upper)
        done, left = (at - lower) / interval_sizes, (upper - at) / interval_sizes
        interpolated = interpolate(
            self.interpolate_type,
            values[:-1].reshape(along),
            values[1:].reshape(along),
            done,
            left,
        )
        within = jnp.sum(jnp.where(inside, interpolated, 0.0), axis=-1)
        return within + (bounds[-1] <= step) * values[-1]

    def __repr__(self) -> str:
        text = (
            f"piecewise_interpolate_schedule(interpolate_type={self.interpolate_type!r}, "
            f"init_value={self.init_value!r}"
        )
        if self.boundaries_and_scales is not None:
            text += f", boundaries_and_scales={_format_pairs(self.boundaries_and_scales)}"
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
    boundaries: tuple[Any, ...] = hyperparameter(scalar=False)

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
