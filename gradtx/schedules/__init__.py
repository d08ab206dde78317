"""Schedules: values that map a step count to a hyperparameter value.

Each schedule is a gradtx value (a frozen, hashable, printable pytree whose
numbers are leaves) and gives the same values as Optax's schedule of the same
name for valid arguments. Invalid arguments raise ValueError where Optax logs a
message and silently returns a constant schedule.

The schedules live by family in ``basic`` (constant, polynomial, cosine,
exponential, piecewise, joined), ``warmup`` (a linear warm-up, then cosine,
constant, exponential, inverse square root or warmup-stable-decay) and
``cyclic`` (warm restarts and the one-cycle policy).
"""

from gradtx.schedules.basic import (
    constant_schedule,
    cosine_decay_schedule,
    custom_schedule,
    exponential_decay,
    join_schedules,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_interpolate_schedule,
    polynomial_schedule,
)
from gradtx.schedules.cyclic import (
    cosine_onecycle_schedule,
    linear_onecycle_schedule,
    sgdr_schedule,
)
from gradtx.schedules.warmup import (
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
    warmup_rsqrt_schedule,
    wsd_schedule,
)

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "custom_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "warmup_rsqrt_schedule",
    "wsd_schedule",
]
