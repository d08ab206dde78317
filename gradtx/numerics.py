"""Numerical helpers shared by the transformations."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, trees


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


def compute_dtype(*dtypes: Any) -> Any:
    """The dtype a moment or trace is updated in: the widest given, at least float32.

    Half-precision arithmetic would round the hyperparameters themselves (in
    bfloat16, 0.999 is 1.0 and 0.9 is 0.8984375, Optax issue #1414) and
    underflow ``eps`` (1e-8 is 0 in float16), so leaves stored in bfloat16 or
    float16 are updated in float32 and only stored narrow.

    Args:
      *dtypes: the dtypes of the arrays taking part (gradient, stored moment).

    Returns:
      Their promoted dtype, promoted again with float32.
    """
    result = jnp.float32
    for dtype in dtypes:
        result = jnp.promote_types(result, dtype)
    return result


def decay_power(decay: Any, count: jax.Array) -> jax.Array:
    """``decay**count`` in float32 or wider, the same eagerly and under ``jax.jit``.

    The count is converted to a float first: with an integer exponent JAX
    computes the power eagerly by repeated multiplication (0.999**3 is off by
    ~2e-5 relative) but under ``jit`` by XLA's ``pow``, so results would depend
    on whether the step is jitted.

    Args:
      decay: a decay rate (number or scalar array).
      count: an integer step count.

    Returns:
      The power, a float32 (or wider) scalar.
    """
    base = jnp.asarray(decay)
    base = base.astype(compute_dtype(base.dtype))
    return jnp.power(base, jnp.asarray(count).astype(base.dtype))


class BiasCorrection:
    """Divides moving averages by ``1 - decay**count``, for every leaf of one update.

    Each factor is computed once per decay and dtype, not once per leaf: a
    per-leaf factor costs a third of the time to trace a 1,000-leaf Adam step
    and puts thousands of scalar operations into the program for XLA to merge.
    The factor is computed in float32 or wider and only then cast to the
    moment's dtype: in bfloat16 ``decay**count`` rounds to 1 and the division
    would be by zero.

    Args:
      count: the number of averaged steps (>= 1).
    """

    def __init__(self, count: jax.Array) -> None:
        self.count = count
        # Keyed by the decay's identity; the decay is kept so the id stays its.
        self._factors: dict[int, tuple[Any, Callable[[Any], jax.Array]]] = {}
        self._following: BiasCorrection | None = None

    def factor(self, decay: Any, dtype: Any) -> jax.Array:
        """``1 - decay**count`` in ``dtype``."""
        if id(decay) not in self._factors:
            self._factors[id(decay)] = (decay, casts_of(1 - decay_power(decay, self.count)))
        return self._factors[id(decay)][1](dtype)

    def following(self) -> "BiasCorrection":
        """The correction of the next step, ``count + 1`` (Nesterov's look-ahead)."""
        if self._following is None:
            self._following = BiasCorrection(safe_increment(self.count))
        return self._following

    def __call__(self, moment: jax.Array, decay: Any) -> jax.Array:
        """``moment / (1 - decay**count)``, in the moment's dtype."""
        return moment / self.factor(decay, moment.dtype)


def casts_of(value: Any) -> Callable[[Any], jax.Array]:
    """``dtype -> jnp.asarray(value).astype(dtype)``, each dtype's cast made once.

    For a hyperparameter that multiplies every leaf in the leaf's own dtype
    (so bfloat16 updates stay bfloat16): one cast per dtype, not per leaf.
    """
    array = jnp.asarray(value)
    made: dict[Any, jax.Array] = {}

    def cast_to(dtype: Any) -> jax.Array:
        key = np.dtype(dtype)
        if key not in made:
            made[key] = cast(array, dtype)
        return made[key]

    return cast_to


def update_moment(g: jax.Array, moment: jax.Array, decay: Any, *, dtype: Any) -> jax.Array:
    """An exponential moving average step, ``(1 - decay) * g + decay * moment``, in ``dtype``.

    Args:
      g: the new observation (a gradient).
      moment: the stored average.
      decay: the decay rate.
      dtype: the dtype to compute in (see :func:`compute_dtype`).

    Returns:
      The new average, in ``dtype`` (cast it to the storage dtype afterwards).
    """
    return (1 - decay) * cast(g, dtype) + decay * cast(moment, dtype)


def canonical_dtype(dtype: Any, name: str = "dtype") -> str | None:
    """A state dtype given as a type, a NumPy dtype or a string, as its name (or None).

    A moment or accumulator holds a running average: stored in an integer type
    it would be truncated to zero, so only floating and complex types are
    accepted.

    Args:
      dtype: the dtype given, or None (the parameters' own).
      name: the argument's name, for the message.

    Returns:
      The dtype's name, e.g. ``"bfloat16"``, or None.

    Raises:
      ValueError: if ``dtype`` is not a dtype, or is not floating or complex.
    """
    if dtype is None:
        return None
    try:
        resolved = np.dtype(dtype)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a floating dtype such as 'float32' or 'bfloat16', "
            f"got {checks.capped_repr(dtype)}"
        ) from None
    if not jnp.issubdtype(resolved, jnp.inexact):
        raise ValueError(
            f"{name} must be a floating (or complex) dtype such as 'float32' or "
            f"'bfloat16', got {resolved.name!r}: a moment stored in it would be "
            "truncated"
        )
    return resolved.name


def squared_moment_like(params: Any, dtype: str | None = None, fill: Any = 0.0) -> Any:
    """A running average of squared gradients for ``params``, filled with ``fill``.

    Stored in ``dtype`` if given, else in each parameter's dtype, except that
    float16 parameters get float32: float16's smallest value is 6e-8, so the
    square of any gradient below ~2e-4 (times ``1 - b2``, below ~8e-3) is
    flushed to zero and the step is silently too large. bfloat16 has float32's
    range and keeps its own dtype (as in Optax).

    Args:
      params: the parameter tree (None leaves stay None).
      dtype: the storage dtype asked for (``nu_dtype``), or None.
      fill: the initial value.

    Returns:
      A tree shaped like ``params``.
    """

    def like(p: jax.Array) -> jax.Array:
        stored = dtype or (jnp.float32 if p.dtype == jnp.float16 else p.dtype)
        return trees.filled_like(p, fill, stored)

    return trees.leaf_map(like, params)


def cast(x: jax.Array, dtype: Any) -> jax.Array:
    """``x`` in ``dtype``, or ``x`` itself when ``dtype`` is None or changes nothing.

    The same result as ``astype``, ten times cheaper to trace when the dtype
    already matches, which is every cast of a float32 leaf.
    """
    if dtype is None or (x.dtype == dtype and not x.weak_type):
        return x
    return x.astype(dtype)


def debiased_mean(
    mu: jax.Array, g: jax.Array, b1: Any, correct: BiasCorrection, *, nesterov: bool
) -> jax.Array:
    """The bias-corrected first moment, or its Nesterov look-ahead (Optax's rule).

    ``mu / (1 - b1**t)``, or with ``nesterov`` ``b1 * mu / (1 - b1**(t+1)) +
    (1 - b1) * g / (1 - b1**t)`` (Dozat, 2016), in ``mu``'s dtype.

    Args:
      mu: the updated first moment, in its compute dtype.
      g: the gradient.
      b1: the first moment's decay.
      correct: the bias correction of step ``t`` (>= 1).
      nesterov: use the Nesterov form.

    Returns:
      The estimate of the mean gradient.
    """
    if not nesterov:
        return correct(mu, b1)
    # jnp.multiply is what `b1 * array` runs; spelled out since NumPy's stubs would
    # type it as an ndarray when b1 is one.
    return jnp.multiply(b1, correct.following()(mu, b1)) + (1 - b1) * correct(cast(g, mu.dtype), b1)
