"""Schedules in cycles: warm restarts (SGDR) and the one-cycle policy."""

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from gradtx import checks
from gradtx.base import Schedule, hyperparameter, static_field, value_class
from gradtx.schedules.basic import join_schedules, piecewise_interpolate_schedule
from gradtx.schedules.warmup import warmup_cosine_decay_schedule


def _cycle(position: int, cycle: Any) -> warmup_cosine_decay_schedule:
    if isinstance(cycle, warmup_cosine_decay_schedule):
        return cycle
    if isinstance(cycle, Mapping):
        try:
            return warmup_cosine_decay_schedule(**cycle)
        except TypeError as error:
            raise TypeError(f"cosine_kwargs[{position}]: {error}") from error
        except ValueError as error:
            raise ValueError(f"cosine_kwargs[{position}]: {error}") from error
    raise TypeError(
        f"cosine_kwargs[{position}] must be a warmup_cosine_decay_schedule or a dict of its "
        f"arguments, got {cycle!r}"
    )


@value_class
class sgdr_schedule(Schedule):  # noqa: N801 - Optax's name
    """SGD with warm restarts: warm-up-and-cosine cycles, one after the other.

    Rule: cycle ``i`` is ``cosine_kwargs[i]``, a
    :class:`warmup_cosine_decay_schedule`, run from the end of cycle ``i - 1``
    (its ``decay_steps`` is the cycle's length) on the steps counted from
    there; the last cycle goes on after its end. Optax takes the cycles as a
    list of dicts of ``warmup_cosine_decay_schedule``'s arguments; such dicts
    are accepted and turned into the schedules.

    Args:
      cosine_kwargs: the cycles: :class:`warmup_cosine_decay_schedule` values
        or dicts of their arguments; at least one.

    Raises:
      ValueError: if there is no cycle or a cycle's arguments are out of range.
      TypeError: if a cycle is neither a schedule nor a dict, or a dict has an
        unknown key.

    References:
      Loshchilov & Hutter, *SGDR: Stochastic Gradient Descent with Warm
      Restarts*, 2017, https://arxiv.org/abs/1608.03983

    Example:
      >>> import gradtx
      >>> cycle = {"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 10, "decay_steps": 50}
      >>> s = gradtx.sgdr_schedule([cycle, cycle])
      >>> [round(float(s(t)), 6) for t in (10, 49, 50, 60)]
      [1.0, 0.001541, 0.0, 1.0]
    """

    cosine_kwargs: tuple[warmup_cosine_decay_schedule, ...] = hyperparameter()

    def __post_init__(self) -> None:
        cycles = tuple(_cycle(position, cycle) for position, cycle in enumerate(self.cosine_kwargs))
        if not cycles:
            raise ValueError("cosine_kwargs must hold at least one cycle, got none")
        object.__setattr__(self, "cosine_kwargs", cycles)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        boundaries: list[Any] = []
        end: Any = 0
        for cycle in self.cosine_kwargs[:-1]:
            end = end + cycle.decay_steps
            boundaries.append(end)
        return join_schedules(self.cosine_kwargs, tuple(boundaries))(count)


def _check_onecycle(schedule: Any) -> None:
    steps = schedule.transition_steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"transition_steps must be an integer, got {steps!r}")
    checks.check_number("transition_steps", steps, low=0, low_inclusive=False)
    object.__setattr__(schedule, "transition_steps", int(steps))
    checks.check_number("peak_value", schedule.peak_value)
    checks.check_number("pct_start", schedule.pct_start, low=0.0, high=1.0)
    checks.check_number("div_factor", schedule.div_factor, low=0.0, low_inclusive=False)
    checks.check_number("final_div_factor", schedule.final_div_factor, low=0.0, low_inclusive=False)


@value_class
class cosine_onecycle_schedule(Schedule):  # noqa: N801
    """The one-cycle policy with cosine phases: up to ``peak_value``, then far down.

    Rule: :class:`piecewise_interpolate_schedule` with cosine interpolation from
    ``peak_value / div_factor`` at step 0, up to ``peak_value`` at step
    ``int(pct_start * transition_steps)``, down to ``peak_value / (div_factor *
    final_div_factor)`` at ``transition_steps``, and constant after.

    ``transition_steps`` and ``pct_start`` are static: they place the phase
    boundaries, whole steps computed in Python as Optax does.

    Args:
      transition_steps: length of the cycle, > 0.
      peak_value: the largest value.
      pct_start: the fraction of the cycle spent going up, in [0, 1].
      div_factor: ``peak_value / div_factor`` is the value at step 0, > 0.
      final_div_factor: the final value is the initial one over it, > 0.

    Raises:
      ValueError: if an argument is out of its range.

    References:
      Smith & Topin, *Super-Convergence: Very Fast Training of Neural Networks
      Using Large Learning Rates*, 2017, https://arxiv.org/abs/1708.07120

    Example:
      >>> import gradtx
      >>> s = gradtx.cosine_onecycle_schedule(100, 1.0)
      >>> [round(float(s(t)), 6) for t in (0, 30, 100)]
      [0.04, 1.0, 4e-06]
    """

    transition_steps: int = static_field()
    peak_value: jax.typing.ArrayLike = hyperparameter()
    pct_start: float = static_field(default=0.3)
    div_factor: jax.typing.ArrayLike = hyperparameter(default=25.0)
    final_div_factor: jax.typing.ArrayLike = hyperparameter(default=1e4)

    def __post_init__(self) -> None:
        _check_onecycle(self)

    def interpolated(self) -> piecewise_interpolate_schedule:
        """The :class:`piecewise_interpolate_schedule` this schedule is (Optax's construction)."""
        div: Any = self.div_factor
        final_div: Any = self.final_div_factor
        peak: Any = self.peak_value
        scales: dict[int, Any] = {
            int(self.pct_start * self.transition_steps): div,
            int(self.transition_steps): 1.0 / (div * final_div),
        }
        return piecewise_interpolate_schedule("cosine", peak / div, scales)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        return self.interpolated()(count)


@value_class
class linear_onecycle_schedule(Schedule):  # noqa: N801
    """The one-cycle policy with linear phases: up, back down, then far down.

    Rule: :class:`piecewise_interpolate_schedule` with linear interpolation from
    ``peak_value / div_factor`` at step 0, up to ``peak_value`` at step
    ``int(pct_start * transition_steps)``, back to ``peak_value / div_factor``
    at ``int(pct_final * transition_steps)``, down to ``peak_value /
    (div_factor * final_div_factor)`` at ``transition_steps``, and constant after.

    ``transition_steps``, ``pct_start`` and ``pct_final`` are static: they place
    the phase boundaries, whole steps computed in Python as Optax does.

    Args:
      transition_steps: length of the cycle, > 0.
      peak_value: the largest value.
      pct_start: the fraction of the cycle spent going up, in [0, 1].
      pct_final: the fraction of the cycle at which the value is back at its
        start, in [``pct_start``, 1].
      div_factor: ``peak_value / div_factor`` is the value at step 0, > 0.
      final_div_factor: the final value is the initial one over it, > 0.

    Raises:
      ValueError: if an argument is out of its range.

    References:
      Smith & Topin, *Super-Convergence: Very Fast Training of Neural Networks
      Using Large Learning Rates*, 2017, https://arxiv.org/abs/1708.07120

    Example:
      >>> import gradtx
      >>> s = gradtx.linear_onecycle_schedule(100, 1.0)
      >>> [round(float(s(t)), 6) for t in (0, 30, 85, 100)]
      [0.04, 1.0, 0.04, 4e-06]
    """

    transition_steps: int = static_field()
    peak_value: jax.typing.ArrayLike = hyperparameter()
    pct_start: float = static_field(default=0.3)
    pct_final: float = static_field(default=0.85)
    div_factor: jax.typing.ArrayLike = hyperparameter(default=25.0)
    final_div_factor: jax.typing.ArrayLike = hyperparameter(default=1e4)

    def __post_init__(self) -> None:
        _check_onecycle(self)
        checks.check_number("pct_final", self.pct_final, low=0.0, high=1.0)
        if self.pct_final < self.pct_start:
            raise ValueError(
                f"pct_final must be >= pct_start, got pct_final={self.pct_final!r}, "
                f"pct_start={self.pct_start!r}"
            )

    def interpolated(self) -> piecewise_interpolate_schedule:
        """The :class:`piecewise_interpolate_schedule` this schedule is (Optax's construction)."""
        div: Any = self.div_factor
        final_div: Any = self.final_div_factor
        peak: Any = self.peak_value
        scales: dict[int, Any] = {
            int(self.pct_start * self.transition_steps): div,
            int(self.pct_final * self.transition_steps): 1.0 / div,
            self.transition_steps: 1.0 / final_div,
        }
        return piecewise_interpolate_schedule("linear", peak / div, scales)

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        return self.interpolated()(count)
