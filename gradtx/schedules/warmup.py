"""Schedules with a linear warm-up: then cosine, constant, exponential, rsqrt or WSD."""

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks
from gradtx.base import Schedule, hyperparameter, static_field, value_class
from gradtx.schedules.basic import (
    check_exponential_decay,
    cosine_value,
    exponential_value,
    interpolate,
    ramp,
)


def _warmup_ramp(count: Any, init_value: Any, peak_value: Any, warmup_steps: Any) -> jax.Array:
    """Optax's linear warm-up, to its bits (for the schedules Optax has)."""
    # A zero-length warm-up is never selected by the callers; a unit length
    # only keeps its (unused) division finite.
    return ramp(count, init_value, peak_value, jnp.maximum(warmup_steps, 1))


def _accurate_ramp(count: Any, init_value: Any, peak_value: Any, warmup_steps: Any) -> jax.Array:
    """The linear warm-up to a few float32 ulps of its value (for the schedules Optax lacks).

    Optax's ``(init - peak) * (1 - t / w) + peak`` subtracts nearly equal numbers
    early in a warm-up from 0 (at ``t = 1`` of 4000 steps it is off by 7e-5 of
    the value); interpolating from the nearer end does not.
    """
    length = jnp.maximum(warmup_steps, 1)
    done = jnp.clip(count, 0, length)
    return interpolate("linear", init_value, peak_value, done / length, (length - done) / length)


@value_class
class warmup_constant_schedule(Schedule):  # noqa: N801 - Optax's name
    """Linear warm-up from ``init_value`` to ``peak_value``, then constant.

    Rule: ``v = init_value + (peak_value - init_value) * min(t, warmup_steps) /
    warmup_steps``.

    Args:
      init_value: the value at step 0.
      peak_value: the value from ``warmup_steps`` on.
      warmup_steps: length of the warm-up, > 0.

    Raises:
      ValueError: if ``warmup_steps <= 0`` (Optax instead returns a schedule
        that stays at ``init_value``).

    Example:
      >>> import gradtx
      >>> s = gradtx.warmup_constant_schedule(0.0, 1.0, warmup_steps=10)
      >>> float(s(5)), float(s(100))
      (0.5, 1.0)
    """

    init_value: jax.typing.ArrayLike = hyperparameter()
    peak_value: jax.typing.ArrayLike = hyperparameter()
    warmup_steps: jax.typing.ArrayLike = hyperparameter()

    def __post_init__(self) -> None:
        checks.check_number("init_value", self.init_value)
        checks.check_number("peak_value", self.peak_value)
        checks.check_number("warmup_steps", self.warmup_steps, low=0, low_inclusive=False)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        return ramp(count, self.init_value, self.peak_value, self.warmup_steps)


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
        warmup = _warmup_ramp(count, self.init_value, self.peak_value, self.warmup_steps)
        # Optax's arithmetic on the numbers as given (Python ints stay exact); ArrayLike
        # also admits bool and complex, for which `-` and `<` are not typed.
        step: Any = count
        warmup_steps: Any = self.warmup_steps
        decay = cosine_value(
            step - warmup_steps,
            self.peak_value,
            self.decay_steps - warmup_steps,
            alpha,
            self.exponent,
        )
        return jnp.where(step < warmup_steps, warmup, decay)


@value_class
class warmup_exponential_decay_schedule(Schedule):  # noqa: N801
    """Linear warm-up to ``peak_value``, then :class:`exponential_decay` from it.

    Rule: for ``t < warmup_steps`` the linear ramp from ``init_value`` to
    ``peak_value``; afterwards ``exponential_decay(peak_value, transition_steps,
    decay_rate, transition_begin, staircase, end_value)`` at ``t - warmup_steps``.

    Args:
      init_value: the value at step 0.
      peak_value: the value at the end of warm-up.
      warmup_steps: length of the warm-up, >= 0.
      transition_steps: steps over which the value is multiplied by
        ``decay_rate`` once, > 0.
      decay_rate: the factor per ``transition_steps``, > 0.
      transition_begin: steps after the warm-up to hold ``peak_value``, >= 0.
      staircase: decay in discrete jumps every ``transition_steps``.
      end_value: the bound the value does not pass, or None.

    Raises:
      ValueError: if ``warmup_steps < 0``, ``transition_steps <= 0``,
        ``decay_rate <= 0`` or ``transition_begin < 0`` (Optax instead logs a
        message and holds ``peak_value``).

    Example:
      >>> import gradtx
      >>> s = gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 10, 10, 0.5)
      >>> float(s(5)), float(s(10)), float(s(30))
      (0.5, 1.0, 0.25)
    """

    init_value: jax.typing.ArrayLike = hyperparameter()
    peak_value: jax.typing.ArrayLike = hyperparameter()
    warmup_steps: jax.typing.ArrayLike = hyperparameter()
    transition_steps: jax.typing.ArrayLike = hyperparameter()
    decay_rate: jax.typing.ArrayLike = hyperparameter()
    transition_begin: jax.typing.ArrayLike = hyperparameter(default=0)
    staircase: bool = static_field(default=False)
    end_value: jax.typing.ArrayLike | None = hyperparameter(default=None)

    def __post_init__(self) -> None:
        checks.check_number("init_value", self.init_value)
        checks.check_number("peak_value", self.peak_value)
        checks.check_number("warmup_steps", self.warmup_steps, low=0)
        check_exponential_decay(self)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        warmup = _warmup_ramp(count, self.init_value, self.peak_value, self.warmup_steps)
        step: Any = count
        warmup_steps: Any = self.warmup_steps
        decay = exponential_value(
            step - warmup_steps,
            self.peak_value,
            self.transition_steps,
            self.decay_rate,
            self.transition_begin,
            self.staircase,
            self.end_value,
        )
        return jnp.where(step < warmup_steps, warmup, decay)


def _float(x: Any) -> jax.Array:
    """``x`` in the default floating dtype, so sums of large step counts do not wrap."""
    return jnp.asarray(x, dtype=float)


@value_class
class warmup_rsqrt_schedule(Schedule):  # noqa: N801
    """Linear warm-up to ``peak_value``, then decay as the inverse square root of the step.

    Rule, with ``w = warmup_steps`` and ``s = shift`` (``w`` unless given)::

        t < w:   v = init_value + (peak_value - init_value) * t / w
        t >= w:  v = peak_value * sqrt(s) / sqrt(t - w + s)

    With the default ``shift`` the decay is ``peak_value * sqrt(w / t)``: the
    schedule Flax's lm1b, wmt and gemma examples build as
    ``create_learning_rate_schedule(learning_rate, warmup_steps)`` (a linear
    warm-up from 0 joined to ``rsqrt_schedule(learning_rate, shift=warmup_steps)``).
    The older factor form ``'constant * linear_warmup * rsqrt_decay'`` with
    ``base_learning_rate=b`` (Flax's nlp_seq example) is this schedule with
    ``peak_value = b / sqrt(warmup_steps)``, and the Transformer's schedule is it
    with ``peak_value = (d_model * warmup_steps)**-0.5``.

    Args:
      peak_value: the value at the end of warm-up.
      warmup_steps: length of the warm-up, >= 0 (> 0 when ``shift`` is None).
      init_value: the value at step 0.
      shift: the decay's time scale, > 0: how many steps after the warm-up the
        value takes to fall to ``peak_value / sqrt(2)``; None means ``warmup_steps``.

    Raises:
      ValueError: if ``warmup_steps < 0``, ``shift <= 0``, or both
        ``warmup_steps`` and ``shift`` leave the time scale zero.

    References:
      Vaswani et al., *Attention Is All You Need*, 2017,
      https://arxiv.org/abs/1706.03762 (section 5.3)

    Example:
      >>> import gradtx
      >>> s = gradtx.warmup_rsqrt_schedule(1.0, warmup_steps=100)
      >>> [round(float(s(t)), 6) for t in (0, 50, 100, 400)]
      [0.0, 0.5, 1.0, 0.5]
    """

    peak_value: jax.typing.ArrayLike = hyperparameter()
    warmup_steps: jax.typing.ArrayLike = hyperparameter()
    init_value: jax.typing.ArrayLike = hyperparameter(default=0.0, kw_only=True)
    shift: jax.typing.ArrayLike | None = hyperparameter(default=None, kw_only=True)

    def __post_init__(self) -> None:
        checks.check_number("peak_value", self.peak_value)
        checks.check_number("init_value", self.init_value)
        checks.check_number("shift", self.shift, low=0, low_inclusive=False)
        low_inclusive = self.shift is not None
        checks.check_number("warmup_steps", self.warmup_steps, low=0, low_inclusive=low_inclusive)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        step: Any = count
        warmup_steps: Any = self.warmup_steps
        shift = warmup_steps if self.shift is None else self.shift
        warmup = _accurate_ramp(count, self.init_value, self.peak_value, warmup_steps)
        # Flax's rsqrt_schedule, ``init_value * (count + shift)**-0.5 * shift**0.5``,
        # at the steps since the warm-up.
        # Clipped at 0 so the unselected branch is finite (and so its gradient) during warm-up.
        since = _float(jnp.maximum(step - warmup_steps, 0))
        decay = self.peak_value * (since + shift) ** -0.5 * _float(shift) ** 0.5
        return jnp.where(step < warmup_steps, warmup, decay)


_DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def _decay_shape(shape: str, done: jax.Array, left: jax.Array) -> jax.Array:
    """``f(x)`` of the decay at ``x = done = 1 - left``, from ``left`` near the end.

    ``1 - x`` of a rounded ``x`` near 1 has lost most of its digits; ``left``,
    computed from the steps left, has not.
    """
    if shape == "linear":
        return left
    if shape == "cosine":  # (1 + cos(pi * x)) / 2
        return jnp.sin(jnp.pi / 2 * left) ** 2
    return left / (1 + jnp.sqrt(done))  # 1 - sqrt(x)


@value_class
class wsd_schedule(Schedule):  # noqa: N801
    """Warmup-stable-decay: linear warm-up, a constant stretch, then a final decay.

    Rule, with ``W = warmup_steps``, ``T = total_steps``, ``D`` the decay
    length (``decay_steps``, else ``round(decay_fraction * T)``) and
    ``x = (t - (T - D)) / D``::

        t < W:             v = init_value + (peak_value - init_value) * t / W
        W <= t < T - D:    v = peak_value
        T - D <= t < T:    v = end_value + (peak_value - end_value) * f(x)
        t >= T:            v = end_value

    with ``f(x) = 1 - x`` (``'linear'``), ``(1 + cos(pi * x)) / 2``
    (``'cosine'``) or ``1 - sqrt(x)`` (``'1-sqrt'``, the paper's best).

    Unlike a cosine schedule, the stable stretch does not depend on when
    training ends: a run can be continued from any checkpoint taken before the
    decay and decayed later.

    Args:
      init_value: the value at step 0.
      peak_value: the value from the end of warm-up to the decay.
      warmup_steps: length of the warm-up, >= 0.
      total_steps: length of the whole schedule, > 0.
      end_value: the value the decay reaches at ``total_steps``.
      decay_fraction: the decay's share of ``total_steps``, in [0, 1] (the
        paper uses 0.2); ignored when ``decay_steps`` is given.
      decay_steps: the decay's length in steps, >= 0, or None to use
        ``decay_fraction``. (Not the ``decay_steps`` of
        :class:`warmup_cosine_decay_schedule`, which counts the whole schedule.)
      decay_shape: ``'linear'``, ``'cosine'`` or ``'1-sqrt'``.

    Raises:
      ValueError: if a length is out of range, the warm-up and the decay
        overlap (``warmup_steps + D > total_steps``) or ``decay_shape`` is
        unknown.

    References:
      Hägele et al., *Scaling Laws and Compute-Optimal Training Beyond Fixed
      Training Durations*, 2024, https://arxiv.org/abs/2405.18392

    Example:
      >>> import gradtx
      >>> s = gradtx.wsd_schedule(0.0, 1.0, 10, 100, decay_shape="1-sqrt")
      >>> [round(float(s(t)), 6) for t in (5, 50, 80, 85, 100)]
      [0.5, 1.0, 1.0, 0.5, 0.0]
    """

    init_value: jax.typing.ArrayLike = hyperparameter()
    peak_value: jax.typing.ArrayLike = hyperparameter()
    warmup_steps: jax.typing.ArrayLike = hyperparameter()
    total_steps: jax.typing.ArrayLike = hyperparameter()
    end_value: jax.typing.ArrayLike = hyperparameter(default=0.0)
    decay_fraction: jax.typing.ArrayLike = hyperparameter(default=0.2, kw_only=True)
    decay_steps: jax.typing.ArrayLike | None = hyperparameter(default=None, kw_only=True)
    decay_shape: str = static_field(default="linear", kw_only=True)

    def __post_init__(self) -> None:
        checks.check_number("init_value", self.init_value)
        checks.check_number("peak_value", self.peak_value)
        checks.check_number("warmup_steps", self.warmup_steps, low=0)
        checks.check_number("total_steps", self.total_steps, low=0, low_inclusive=False)
        checks.check_number("end_value", self.end_value)
        checks.check_number("decay_fraction", self.decay_fraction, low=0.0, high=1.0)
        checks.check_number("decay_steps", self.decay_steps, low=0)
        if self.decay_shape not in _DECAY_SHAPES:
            raise ValueError(
                f"decay_shape must be 'linear', 'cosine' or '1-sqrt', got {self.decay_shape!r}"
            )
        warmup, total = (checks.concrete_value(x) for x in (self.warmup_steps, self.total_steps))
        decay = checks.concrete_value(self._decay_length())
        if all(x is not None and x.ndim == 0 for x in (warmup, total, decay)):
            if warmup + decay > total:
                raise ValueError(
                    "warmup_steps plus the decay's length must be <= total_steps, got "
                    f"warmup_steps={self.warmup_steps!r}, decay length {int(decay)}, "
                    f"total_steps={self.total_steps!r}"
                )

    def _decay_length(self) -> Any:
        if self.decay_steps is not None:
            return self.decay_steps
        fraction: Any = self.decay_fraction
        return jnp.round(jnp.multiply(fraction, self.total_steps)).astype(jnp.int32)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        step: Any = count
        total: Any = self.total_steps
        decay_length = self._decay_length()
        decay_start = total - decay_length
        warmup = _accurate_ramp(count, self.init_value, self.peak_value, self.warmup_steps)
        length = jnp.maximum(decay_length, 1)
        left = jnp.clip(total - step, 0, length) / length
        done = jnp.clip(step - decay_start, 0, length) / length
        end: Any = self.end_value
        decay = end + (self.peak_value - end) * _decay_shape(self.decay_shape, done, left)
        stable_or_decay = jnp.where(step < decay_start, self.peak_value, decay)
        value = jnp.where(step < self.warmup_steps, warmup, stable_or_decay)
        return jnp.where(step >= total, end, value)
