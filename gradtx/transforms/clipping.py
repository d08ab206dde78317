"""Gradient clipping: element-wise, by global norm, by block RMS, and adaptive (AGC).

Norms are computed in float32 or wider whatever the gradients' dtype: in
float16 a gradient entry of 300 squares to infinity, and in bfloat16 a sum of
many squares keeps only 8 significant bits. The clipped updates come back in
each gradient's dtype. ``None`` leaves (frozen parameters) pass through and do
not count towards any norm; complex leaves contribute ``|x|**2``.
"""

import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, trees
from gradtx.base import (
    EmptyState,
    OptState,
    Params,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)

# Optax names a state for each of these; all keep nothing.
ClipState = EmptyState
ClipByGlobalNormState = EmptyState
AdaptiveGradClipState = EmptyState

# Keeps a unit of exactly zero norm from dividing by zero in adaptive_grad_clip;
# the value is Optax's, so results agree when the guard engages.
_DIVISION_GUARD = 1e-6


def _wide_dtype(x: jax.Array) -> Any:
    """The dtype arithmetic on ``x`` runs in: its own, or float32 if narrower."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _squared_magnitude(x: jax.Array) -> jax.Array:
    """``|x|**2`` in float32 or wider, real even for a complex ``x``."""
    x = x.astype(_wide_dtype(x))
    if jnp.iscomplexobj(x):
        return jnp.square(x.real) + jnp.square(x.imag)
    return jnp.square(x)


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of all the entries of a pytree, as if concatenated in one vector.

    ``sqrt(sum over leaves of sum(|x|**2))``, accumulated in float32 or wider
    (float64 when a leaf is float64), whatever the leaves' dtype. ``None``
    leaves are skipped; Python numbers count as scalars. Like ``optax.tree.norm``
    but without its rounding to the leaves' dtype.

    Args:
      tree: a pytree of arrays (or numbers, or None).

    Returns:
      A scalar array; zero for a tree without leaves.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.global_norm({"a": jnp.array([3.0]), "b": 4.0, "frozen": None})
      Array(5., dtype=float32)
    """
    sums = [jnp.sum(_squared_magnitude(leaf)) for leaf in trees.leaves(tree)]
    if not sums:
        return jnp.zeros([], jnp.float32)
    # Leaf by leaf, in tree order, as Optax adds them: float32 results agree bitwise.
    return jnp.sqrt(functools.reduce(operator.add, sums))


def _check_bound(name: str, value: Any, *, zero_allowed: bool) -> None:
    # Optax reads these as plain numbers: a schedule would fail deep in update.
    if callable(value):
        raise TypeError(f"{name} must be a number or an array, not a schedule, got {value!r}")
    checks.check_number(name, value, low=0.0, low_inclusive=zero_allowed)


@value_class
class clip(Transformation):  # noqa: N801 - Optax's name
    """Clips every entry of the updates to ``[-max_delta, max_delta]``.

    Update rule::

        u <- min(max(u, -max_delta), max_delta)

    Args:
      max_delta: the largest magnitude an entry may keep, >= 0.

    Raises:
      ValueError: if ``max_delta`` is negative or NaN.
      TypeError: if ``max_delta`` is a schedule or not a number.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.clip(1.0).update(jnp.array([-3.0, 0.5, 2.0]), gradtx.EmptyState())[0]
      Array([-1. ,  0.5,  1. ], dtype=float32)
    """

    max_delta: jax.typing.ArrayLike = hyperparameter(finite=False)

    def __post_init__(self) -> None:
        _check_bound("max_delta", self.max_delta, zero_allowed=True)

    def init(self, params: Params) -> OptState:
        del params
        return ClipState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        bound = jnp.asarray(self.max_delta)
        updates = trees.leaf_map(lambda u: jnp.clip(u, -bound, bound).astype(u.dtype), updates)
        return updates, state


@value_class
class clip_by_global_norm(Transformation):  # noqa: N801 - Optax's name
    """Rescales the updates so that their global L2 norm is at most ``max_norm``.

    Update rule, with ``n`` the norm of all the updates together
    (:func:`global_norm`)::

        u <- u                      if n < max_norm
        u <- u / n * max_norm       otherwise

    The whole tree is scaled by one factor, so the direction is kept.

    Args:
      max_norm: the largest global norm, a scalar > 0 (zero is refused: it
        would turn an all-zero update into 0 / 0 = NaN).

    Raises:
      ValueError: if ``max_norm`` is not > 0 or is not a scalar.
      TypeError: if ``max_norm`` is a schedule or not a number.

    References:
      Pascanu, Mikolov & Bengio, *On the difficulty of training recurrent
      neural networks*, 2013, https://arxiv.org/abs/1211.5063

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.clip_by_global_norm(1.0)
      >>> tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))[0]
      {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}
    """

    max_norm: jax.typing.ArrayLike = hyperparameter(finite=False)

    def __post_init__(self) -> None:
        _check_bound("max_norm", self.max_norm, zero_allowed=False)
        _check_scalar("max_norm", self.max_norm)

    def init(self, params: Params) -> OptState:
        del params
        return ClipByGlobalNormState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        max_norm = jnp.asarray(self.max_norm)
        _check_scalar("max_norm", max_norm)
        norm = global_norm(updates)
        keep = norm < max_norm

        def clipped(u: jax.Array) -> jax.Array:
            wide = jnp.promote_types(u.dtype, norm.dtype)
            # Divided first, then multiplied, as in Optax: float32 agrees bitwise.
            scaled = (u.astype(wide) / norm.astype(wide)) * max_norm
            return jnp.where(keep, u, scaled.astype(u.dtype))

        return trees.leaf_map(clipped, updates), state


def _check_scalar(name: str, value: Any) -> None:
    # Shapes are static even under jit, so this never depends on traced values.
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")


@value_class
class clip_by_block_rms(Transformation):  # noqa: N801 - Optax's name
    """Rescales each leaf so that its root-mean-square entry is at most ``threshold``.

    A block is one leaf of the tree (a layer's weight matrix, a bias vector).
    Update rule, per leaf::

        rms = sqrt(mean(|u|**2))
        u <- u / max(1, rms / threshold)

    Args:
      threshold: the largest RMS a leaf may keep, > 0.

    Raises:
      ValueError: if ``threshold`` is not > 0.
      TypeError: if ``threshold`` is a schedule or not a number.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.clip_by_block_rms(1.0)
      >>> tx.update({"a": jnp.array([4.0, 4.0]), "b": jnp.array([0.5])}, tx.init(None))[0]
      {'a': Array([1., 1.], dtype=float32), 'b': Array([0.5], dtype=float32)}
    """

    threshold: jax.typing.ArrayLike = hyperparameter(finite=False)

    def __post_init__(self) -> None:
        _check_bound("threshold", self.threshold, zero_allowed=False)

    def init(self, params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args

        def clipped(u: jax.Array) -> jax.Array:
            rms = jnp.sqrt(jnp.mean(_squared_magnitude(u)))
            denominator = jnp.maximum(1.0, rms / self.threshold)
            return (u.astype(_wide_dtype(u)) / denominator).astype(u.dtype)

        return trees.leaf_map(clipped, updates), state


Axis = int | tuple[int, ...] | None


@value_class
class adaptive_grad_clip(Transformation):  # noqa: N801 - Optax's name
    """Adaptive gradient clipping (AGC): bounds each unit's update by its weights' norm.

    A unit is a slice of a leaf: by default the whole leaf for scalars and
    vectors (and any leaf with at most one non-unit dimension), one output
    column for matrices and rank-3 leaves (norm over axis 0), one output channel
    for convolution kernels (HWIO: axes 0-2; DHWIO: axes 0-3). Per unit, with
    ``|.|`` the L2 norm over the unit::

        limit = clipping * max(|p|, eps)
        u <- u                                  if |u| < limit
        u <- u * limit / max(|u|, 1e-6)         otherwise

    Args:
      clipping: the largest allowed ratio of a unit's update norm to its
        parameter norm, >= 0 (zero makes every update zero).
      eps: the parameter norm assumed at least, so that zero-initialised units
        can move, >= 0.
      axis: the axis or axes a unit's norm runs over, for every leaf; None
        chooses by rank as above (a leaf of rank 6 or more then needs ``axis``).

    Raises:
      ValueError: if ``clipping`` or ``eps`` is negative; at update time if
        params are not given, do not match the updates, or a leaf's rank has
        no default ``axis``.
      TypeError: if ``axis`` is not None, an int or a tuple of ints, or if
        ``clipping`` or ``eps`` is a schedule or not a number.

    References:
      Brock, De, Smith & Simonyan, *High-Performance Large-Scale Image
      Recognition Without Normalization*, 2021, https://arxiv.org/abs/2102.06171

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.adaptive_grad_clip(0.1)
      >>> params = jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([1.0, 0.0]), tx.init(params), params)[0]
      Array([0.5, 0. ], dtype=float32)
    """

    clipping: jax.typing.ArrayLike = hyperparameter(finite=False)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-3, shown=True)
    axis: Axis = static_field(default=None)

    def __post_init__(self) -> None:
        _check_bound("clipping", self.clipping, zero_allowed=True)
        _check_bound("eps", self.eps, zero_allowed=True)
        object.__setattr__(self, "axis", _canonical_axis(self.axis))

    def init(self, params: Params) -> OptState:
        del params
        return AdaptiveGradClipState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del extra_args
        if params is None:
            raise ValueError(checks.PARAMS_REQUIRED.format(name="adaptive_grad_clip"))
        checks.check_trees_match(
            updates, params, tree_name="gradients", reference_name="parameters"
        )
        clipped = jax.tree_util.tree_map_with_path(
            lambda path, u, p: (
                None
                if u is None or p is None
                else self._clip(trees.as_array(u), trees.as_array(p), path)
            ),
            updates,
            params,
            is_leaf=trees.is_none,
        )
        return clipped, state

    def _clip(self, u: jax.Array, p: jax.Array, path: Any) -> jax.Array:
        axis = self.axis if self.axis is not None else _default_axis(u.shape, path)
        wide = jnp.promote_types(_wide_dtype(u), _wide_dtype(p))
        norm_dtype = jnp.finfo(wide).dtype  # real even when the leaves are complex
        update_norm = _unit_norm(u, axis, norm_dtype)
        limit = self.clipping * jnp.maximum(_unit_norm(p, axis, norm_dtype), self.eps)
        scaled = u.astype(wide) * (limit / jnp.maximum(update_norm, _DIVISION_GUARD))
        return jnp.where(update_norm < limit, u, scaled.astype(u.dtype))


def _canonical_axis(axis: Any) -> Axis:
    # A config read back from JSON holds a list; a tuple keeps the value hashable.
    if axis is None:
        return None
    if _is_int(axis):
        return int(axis)
    if isinstance(axis, (tuple, list)) and all(_is_int(a) for a in axis):
        return tuple(int(a) for a in axis)
    raise TypeError(f"axis must be None, an int or a tuple of ints, got {axis!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _default_axis(shape: tuple[int, ...], path: Any) -> tuple[int, ...] | None:
    """The axes of a unit for a leaf of ``shape``, chosen by rank as Optax does."""
    if sum(size != 1 for size in shape) <= 1:
        return None
    if len(shape) in (2, 3):
        return (0,)
    if len(shape) == 4:
        return (0, 1, 2)
    if len(shape) == 5:
        return (0, 1, 2, 3)
    raise ValueError(
        f"adaptive_grad_clip has no default unit for {checks.key_path(path)} "
        f"of shape {shape} (rank {len(shape)}); pass axis=... to choose the axes"
    )


def _unit_norm(x: jax.Array, axis: tuple[int, ...] | int | None, dtype: Any) -> jax.Array:
    """Each unit's L2 norm, in ``dtype``, broadcast back to ``x``'s shape."""
    squares = _squared_magnitude(x).astype(dtype)
    norm = jnp.sqrt(jnp.sum(squares, axis=axis, keepdims=True))
    return jnp.broadcast_to(norm, x.shape)
