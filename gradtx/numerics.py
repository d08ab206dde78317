"""Numerical helpers shared by the transformations."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def safe_increment(count: jax.Array) -> jax.Array:
    """Adds one to an integer step counter, saturating at its maximum.

    A plain ``count + 1`` on int32 wraps to a negative number after 2**31 - 1
    steps, which would restart bias correction and schedules.

    Args:
      count: an integer scalar array.

    Returns:
      ``count + 1``, or ``count`` if it already holds the dtype's maximum.
    """
    maximum = jnp.iinfo(jnp.asarray(count).dtype).max
    return jnp.where(count < maximum, count + 1, maximum).astype(jnp.asarray(count).dtype)


def zero_count() -> jax.Array:
    """A fresh int32 step counter."""
    return jnp.zeros([], jnp.int32)


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|**2``: the square for real arrays, ``x * conj(x)`` for complex ones."""
    if jnp.iscomplexobj(x):
        return (x.conj() * x).real.astype(x.dtype)
    return x * x


def bias_correction(moment: jax.Array, decay: Any, count: jax.Array) -> jax.Array:
    """Divides a moving average by ``1 - decay**count`` (Kingma & Ba, 2014).

    The correction factor is computed in float32 or wider and only then cast to
    the moment's dtype: in bfloat16 ``decay**count`` rounds to 1 and the
    division would be by zero.

    Args:
      moment: an exponential moving average started at zero.
      decay: its decay rate.
      count: the number of averaged steps (>= 1).

    Returns:
      The bias-corrected moment, in the moment's dtype.
    """
    correction = 1 - jnp.asarray(decay) ** count
    return moment / correction.astype(moment.dtype)


def canonical_dtype(dtype: Any) -> str | None:
    """A dtype given as a type, a NumPy dtype or a string, as its name (or None)."""
    if dtype is None:
        return None
    return np.dtype(dtype).name


def cast(x: jax.Array, dtype: str | None) -> jax.Array:
    """``x`` in ``dtype``, or unchanged when ``dtype`` is None."""
    return x if dtype is None else x.astype(dtype)
