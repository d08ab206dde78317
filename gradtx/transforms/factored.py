"""Adafactor: scaling by a factored (row times column) estimate of the squared gradients."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, numerics, trees
from gradtx.aliases import Alias
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
from gradtx.combine import chain
from gradtx.transforms.averaging import ema
from gradtx.transforms.clipping import clip_by_block_rms
from gradtx.transforms.scale import scale, scale_by_learning_rate
from gradtx.transforms.weight_decay import add_decayed_weights


class FactoredState(NamedTuple):
    """State of :class:`scale_by_factored_rms`.

    A leaf that is factored keeps ``v_row`` and ``v_col`` (its shape without
    the largest, resp. the second largest, dimension) and a ``(1,)`` placeholder
    in ``v``; a leaf that is not keeps ``v`` (its own shape) and placeholders in
    ``v_row`` and ``v_col``, as in Optax.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      v_row: moving averages of the squared gradients' means along the largest
        dimension.
      v_col: the same along the second largest dimension.
      v: moving averages of the squared gradients of the leaves not factored.
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    v_row: Updates
    v_col: Updates
    v: Updates


def _factored_dims(
    shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int
) -> tuple[int, int] | None:
    """The (second largest, largest) dimensions to factor over, or None (Optax's rule)."""
    if not factored or len(shape) < 2:
        return None
    sorted_dims = np.argsort(shape)
    if shape[sorted_dims[-2]] < min_dim_size_to_factor:
        return None
    return int(sorted_dims[-2]), int(sorted_dims[-1])


def _decay_rate_pow(step: jax.Array, exponent: Any) -> jax.Array:
    """Adafactor's second-moment decay at ``step`` (from 0): ``1 - (step + 1)**-exponent``.

    Optax's rule, where Optax's is finite. The step is made a float before
    adding one, so that at the saturated count 2**31 - 1 it does not wrap to a
    negative number; and ``step + 1`` is at least 1, so that the steps before a
    ``step_offset`` have decay 0 (the statistics are the last squared gradient)
    where Optax's decay is nan or -inf.
    """
    t = jnp.maximum(jnp.asarray(step).astype(jnp.float32) + 1, 1.0)
    return 1.0 - t ** (-jnp.asarray(exponent))


@value_class
class scale_by_factored_rms(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by a factored estimate of the gradients' root mean square.

    For a leaf with two dimensions of size at least ``min_dim_size_to_factor``
    (``r`` the second largest, ``c`` the largest), with ``t`` the step from 0::

        beta = decay_rate_fn(t - step_offset, decay_rate)  # 1 - (t+1)**-decay_rate
        s = |g|**2 + epsilon
        v_row <- beta * v_row + (1 - beta) * mean(s, axis=c)
        v_col <- beta * v_col + (1 - beta) * mean(s, axis=r)
        u <- g / sqrt(v_row / mean(v_row, axis=r) (x) v_col)   (outer product)

    and for any other leaf ``v <- beta * v + (1 - beta) * s`` and
    ``u <- g / sqrt(v)``. The statistics are computed in float32 or wider and
    stored in the params' dtype.

    Args:
      factored: factor the statistics of leaves of rank >= 2.
      decay_rate: the exponent of the decay schedule, >= 0.
      step_offset: subtracted from the step (the first step of a fine-tuning
        phase), >= 0. Until the step reaches it the default decay is 0 (Optax's
        is nan there).
      min_dim_size_to_factor: factor a leaf only if two of its dimensions have
        at least this size.
      epsilon: added to the squared gradients, >= 0.
      decay_rate_fn: ``decay_rate_fn(step, decay_rate)`` gives the decay at
        ``step``; None is Optax's default, ``1 - (step + 1)**-decay_rate``. A
        Python function here cannot be written to a config.

    Raises:
      ValueError: if a hyperparameter is out of its range, or at update time
        if params are not given.

    References:
      Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear
      Memory Cost*, 2018, https://arxiv.org/abs/1804.04235. Zhai et al.,
      *Scaling Vision Transformers*, 2021, https://arxiv.org/abs/2106.04560

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_factored_rms(min_dim_size_to_factor=2)
      >>> p = jnp.zeros((2, 3))
      >>> [v.shape for v in tx.init(p)[1:]]  # v_row, v_col, v
      [(2,), (3,), (1,)]
      >>> tx.update(jnp.full((2, 3), 5.0), tx.init(p), p)[0]
      Array([[1., 1., 1.],
             [1., 1., 1.]], dtype=float32)
    """

    factored: bool = static_field(default=True)
    decay_rate: jax.typing.ArrayLike = hyperparameter(default=0.8, shown=True)
    step_offset: jax.typing.ArrayLike = hyperparameter(default=0)
    min_dim_size_to_factor: int = static_field(default=128)
    epsilon: jax.typing.ArrayLike = hyperparameter(default=1e-30)
    decay_rate_fn: Callable[[Any, Any], Any] | None = static_field(default=None)

    def __post_init__(self) -> None:
        checks.check_number("decay_rate", self.decay_rate, low=0.0)
        checks.check_number("step_offset", self.step_offset, low=0.0)
        checks.check_number("epsilon", self.epsilon, low=0.0)
        size = self.min_dim_size_to_factor
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"min_dim_size_to_factor must be an integer >= 0, got {size!r}")
        if self.decay_rate_fn is not None and not callable(self.decay_rate_fn):
            raise TypeError(f"decay_rate_fn must be a function or None, got {self.decay_rate_fn!r}")

    def _dims(self, shape: tuple[int, ...]) -> tuple[int, int] | None:
        return _factored_dims(shape, self.factored, self.min_dim_size_to_factor)

    def init(self, params: Params) -> OptState:
        def statistics(p: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
            placeholder = jnp.zeros((1,), p.dtype)
            dims = self._dims(p.shape)
            if dims is None:
                return placeholder, placeholder, trees.filled_like(p, 0)
            second, largest = dims
            row = jnp.zeros(np.delete(p.shape, largest).tolist(), p.dtype)
            col = jnp.zeros(np.delete(p.shape, second).tolist(), p.dtype)
            return row, col, placeholder

        v_row, v_col, v = trees.leaf_map_n(3, statistics, params)
        return FactoredState(count=numerics.zero_count(), v_row=v_row, v_col=v_col, v=v)

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del extra_args
        if params is None:
            raise ValueError(checks.PARAMS_REQUIRED.format(name="scale_by_factored_rms"))
        checks.check_state_fields(state, FactoredState, "scale_by_factored_rms")
        # The state's leaves are reduced or (1,) placeholders: shapes are the params'.
        checks.check_trees_match(
            updates, params, tree_name="gradients", reference_name="parameters"
        )
        decay_rate_fn = self.decay_rate_fn or _decay_rate_pow
        beta = jnp.asarray(decay_rate_fn(state.count - self.step_offset, self.decay_rate))

        def leaf(
            g: jax.Array, v_row: jax.Array, v_col: jax.Array, v: jax.Array, p: jax.Array
        ) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, v_row.dtype, v_col.dtype, v.dtype)
            decay = beta.astype(numerics.compute_dtype(beta.dtype, dtype))
            g_wide = g.astype(dtype)
            squared = numerics.abs_sq(g_wide) + self.epsilon
            dims = self._dims(p.shape)
            if dims is None:
                v_new = decay * v.astype(dtype) + (1.0 - decay) * squared
                update = g_wide * v_new**-0.5
                return update.astype(g.dtype), v_row, v_col, v_new.astype(v.dtype)
            second, largest = dims
            row = decay * v_row.astype(dtype) + (1.0 - decay) * jnp.mean(squared, axis=largest)
            col = decay * v_col.astype(dtype) + (1.0 - decay) * jnp.mean(squared, axis=second)
            # v_row lacks the largest axis: the second's index drops if it came after.
            second_in_row = second - 1 if second > largest else second
            row_factor = (row / jnp.mean(row, axis=second_in_row, keepdims=True)) ** -0.5
            col_factor = col**-0.5
            update = (
                g_wide
                * jnp.expand_dims(row_factor, axis=largest)
                * jnp.expand_dims(col_factor, axis=second)
            )
            return update.astype(g.dtype), row.astype(v_row.dtype), col.astype(v_col.dtype), v

        new_updates, v_row, v_col, v = trees.leaf_map_n(
            4, leaf, updates, state.v_row, state.v_col, state.v, params
        )
        count = numerics.safe_increment(state.count)
        return new_updates, FactoredState(count=count, v_row=v_row, v_col=v_col, v=v)


@value_class
class scale_by_param_block_rms(Transformation):  # noqa: N801 - Optax's name
    """Multiplies each leaf's updates by the root mean square of its parameters.

    A block is one leaf (a weight matrix, a bias vector). Update rule, per leaf::

        u <- u * max(sqrt(mean(|p|**2)), min_scale)

    The root mean square is computed in float32 or wider; its gradient is
    finite (zero) where ``min_scale`` engages, as in Optax.

    Args:
      min_scale: the smallest factor, >= 0.

    Raises:
      ValueError: if ``min_scale`` is negative, or at update time if params
        are not given.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_param_block_rms()
      >>> tx.update(jnp.ones(2), tx.init(None), jnp.array([3.0, -3.0]))[0]
      Array([3., 3.], dtype=float32)
    """

    min_scale: jax.typing.ArrayLike = hyperparameter(default=1e-3, shown=True)

    def __post_init__(self) -> None:
        checks.check_number("min_scale", self.min_scale, low=0.0)

    def init(self, params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del extra_args
        if params is None:
            raise ValueError(checks.PARAMS_REQUIRED.format(name="scale_by_param_block_rms"))
        checks.check_trees_match(
            updates, params, tree_name="gradients", reference_name="parameters"
        )

        def scaled(u: jax.Array, p: jax.Array) -> jax.Array:
            dtype = numerics.compute_dtype(u.dtype, p.dtype)
            p_wide = p.astype(dtype)
            rms = jnp.sqrt(jnp.mean(numerics.abs_sq(p_wide)))
            small = rms <= self.min_scale
            # Optax's safe_root_mean_squares: the second root, of ones where the
            # minimum engages, keeps the gradient of the unused branch finite.
            safe = jnp.sqrt(jnp.mean(numerics.abs_sq(jnp.where(small, 1.0, p_wide))))
            factor = jnp.where(small, self.min_scale, safe)
            return (u.astype(dtype) * factor).astype(u.dtype)

        return trees.leaf_map(scaled, updates, params), state


@value_class
class adafactor(Alias):  # noqa: N801 - Optax's name
    """Adafactor: factored second-moment scaling, clipping, relative step sizes.

    The chain is Optax's, each optional step present unless its argument is
    None (or False)::

        scale_by_factored_rms(factored, decay_rate, decay_offset,
                              min_dim_size_to_factor, eps)
        -> clip_by_block_rms(clipping_threshold)
        -> scale_by_learning_rate(learning_rate, flip_sign=False)
        -> scale_by_param_block_rms()            (multiply_by_parameter_scale)
        -> ema(momentum, debias=False, accumulator_dtype=dtype_momentum)
        -> add_decayed_weights(weight_decay_rate, weight_decay_mask)
        -> scale(-1)

    so the state is Optax's too, and ``update`` needs the params.

    Args:
      learning_rate: a non-negative number, a schedule, or None (no scaling:
        with ``multiply_by_parameter_scale`` the step is relative to the
        parameters' scale).
      min_dim_size_to_factor: factor a leaf's statistics only if two of its
        dimensions have at least this size.
      decay_rate: the exponent of the second-moment decay schedule, >= 0.
      decay_offset: the first step of a fine-tuning phase, >= 0.
      multiply_by_parameter_scale: multiply each leaf's step by its
        parameters' root mean square.
      clipping_threshold: the largest root mean square of a leaf's update,
        > 0 (Optax advises >= 1), or None for no clipping.
      momentum: the decay of a moving average of the updates, in [0, 1], or
        None for none.
      dtype_momentum: storage dtype of that moving average.
      weight_decay_rate: the weight-decay coefficient (or schedule), >= 0, or
        None for none.
      eps: added to the squared gradients, >= 0.
      factored: factor the statistics of leaves of rank >= 2.
      weight_decay_mask: which leaves to decay (see
        :class:`~gradtx.add_decayed_weights`).

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear
      Memory Cost*, 2018, https://arxiv.org/abs/1804.04235

    Example:
      >>> import gradtx
      >>> gradtx.adafactor(1e-2, momentum=0.9)
      adafactor(learning_rate=0.01, momentum=0.9)
    """

    learning_rate: ScalarOrSchedule | None = hyperparameter(default=None, shown=True)
    min_dim_size_to_factor: int = static_field(default=128)
    decay_rate: jax.typing.ArrayLike = hyperparameter(default=0.8)
    decay_offset: jax.typing.ArrayLike = hyperparameter(default=0)
    multiply_by_parameter_scale: bool = static_field(default=True)
    clipping_threshold: jax.typing.ArrayLike | None = hyperparameter(default=1.0, finite=False)
    momentum: jax.typing.ArrayLike | None = hyperparameter(default=None)
    dtype_momentum: Any = static_field(default="float32")
    weight_decay_rate: ScalarOrSchedule | None = hyperparameter(default=None)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-30)
    factored: bool = static_field(default=True)
    weight_decay_mask: Any = static_field(default=None)

    def __post_init__(self) -> None:
        # The pieces name these otherwise (threshold, decay, weight_decay, ...).
        checks.check_number("decay_rate", self.decay_rate, low=0.0)
        checks.check_number("decay_offset", self.decay_offset, low=0.0)
        checks.check_number(
            "clipping_threshold", self.clipping_threshold, low=0.0, low_inclusive=False
        )
        checks.check_number("momentum", self.momentum, low=0.0, high=1.0)
        checks.check_number("weight_decay_rate", self.weight_decay_rate, low=0.0)
        checks.check_number("eps", self.eps, low=0.0)
        object.__setattr__(
            self, "dtype_momentum", numerics.canonical_dtype(self.dtype_momentum, "dtype_momentum")
        )
        object.__setattr__(
            self, "weight_decay_mask", add_decayed_weights(0.0, self.weight_decay_mask).mask
        )
        self.expand()  # validates the rest

    def expand(self) -> chain:
        steps: list[Transformation] = [
            scale_by_factored_rms(
                self.factored,
                self.decay_rate,
                self.decay_offset,
                self.min_dim_size_to_factor,
                self.eps,
            )
        ]
        if self.clipping_threshold is not None:
            steps.append(clip_by_block_rms(self.clipping_threshold))
        if self.learning_rate is not None:
            steps.append(scale_by_learning_rate(self.learning_rate, flip_sign=False))
        if self.multiply_by_parameter_scale:
            steps.append(scale_by_param_block_rms())
        if self.momentum is not None:
            steps.append(ema(self.momentum, debias=False, accumulator_dtype=self.dtype_momentum))
        if self.weight_decay_rate is not None:
            steps.append(add_decayed_weights(self.weight_decay_rate, self.weight_decay_mask))
        steps.append(scale(-1))
        return chain(*steps)
