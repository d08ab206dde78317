"""SM3: Adagrad with one accumulator per row, column, ... instead of per entry."""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.aliases import Alias
from gradtx.base import (
    OptState,
    Params,
    ScalarOrSchedule,
    Transformation,
    Updates,
    hyperparameter,
    value_class,
)
from gradtx.combine import chain
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleBySM3State(NamedTuple):
    """State of :class:`scale_by_sm3`.

    Attributes:
      mu: for each parameter, a list of accumulators, one per dimension (of
        that dimension's size): the largest accumulated square along it.
      nu: moving average of the scaled updates (the momentum).
    """

    mu: Updates
    nu: Updates


def _reject_complex(params: Params) -> None:
    if any(jnp.iscomplexobj(leaf) for leaf in trees.leaves(params)):
        raise ValueError("scale_by_sm3 does not support complex parameters")


def _accumulators(p: jax.Array) -> list[jax.Array]:
    """Zeros for each dimension of ``p``; a scalar has one accumulator, of shape ()."""
    if p.ndim == 0:
        return [jnp.zeros((), p.dtype)]
    return [jnp.zeros((size,), p.dtype) for size in p.shape]


def _broadcastable(accumulator: jax.Array, ndim: int, axis: int) -> jax.Array:
    """The accumulator of ``axis`` shaped ``[1, ..., size, ..., 1]`` (rank ``ndim``)."""
    shape = [1] * ndim
    shape[axis] = accumulator.shape[0]
    return accumulator.reshape(shape)


@value_class
class scale_by_sm3(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by SM3's cover-wise accumulated squares, then averages them.

    A leaf of rank ``k >= 2`` keeps one accumulator per row, column, ...
    (``mu[i]`` of shape ``[shape[i]]``); a vector or scalar keeps one per entry.
    Update rule, with ``c2 = 1 - b2`` (``c2 = 1`` when ``b2 == 1``, the paper's
    sum)::

        a <- c2 * g**2 + b2 * min_i mu[i]      (broadcast over the other axes)
        mu[i] <- max of a over all axes but i
        s = g / sqrt(a + eps)                  (0 where a == 0)
        nu <- b1 * nu + (1 - b1) * s
        u <- nu

    The accumulators are computed in float32 or wider and stored in the
    params' dtype. A scalar leaf (which Optax refuses) keeps one accumulator of
    shape ``()``, like a one-entry vector.

    Args:
      b1: decay of the moving average of the scaled updates, in [0, 1].
      b2: decay of the accumulated squares, in [0, 1]; 1 sums them.
      eps: added to the accumulator inside the square root, >= 0.

    Raises:
      ValueError: if a hyperparameter is out of its range, or (at init) if a
        parameter is complex.

    References:
      Anil et al., *Memory-Efficient Adaptive Optimization*, 2019,
      https://arxiv.org/abs/1901.11150

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_sm3(b1=0.0, eps=0.0)
      >>> tx.update(jnp.array([[3.0, 0.0], [0.0, 4.0]]), tx.init(jnp.zeros((2, 2))))[0]
      Array([[1., 0.],
             [0., 1.]], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=1.0, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0)
        checks.check_number("b2", self.b2, low=0.0, high=1.0)
        checks.check_number("eps", self.eps, low=0.0)

    def init(self, params: Params) -> OptState:
        _reject_complex(params)
        return ScaleBySM3State(
            mu=trees.leaf_map(_accumulators, params), nu=trees.zeros_like(params)
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleBySM3State, "scale_by_sm3")
        checks.check_trees_match(
            updates, state.nu, tree_name="gradients", reference_name="optimizer state"
        )
        b1, b2 = self.b1, self.b2
        # Optax's `(1 - b2) if b2 != 1 else 1`, as a select so b2 may be traced.
        new_weight = jnp.where(jnp.asarray(b2) == 1, 1.0, 1 - jnp.asarray(b2))

        def leaf(g: jax.Array, nu: jax.Array, mu: list[jax.Array]) -> tuple[Any, ...]:
            dtype = numerics.compute_dtype(g.dtype, nu.dtype, *(m.dtype for m in mu))
            g_wide = g.astype(dtype)
            if g.ndim < 2:
                previous = mu[0].astype(dtype)
            else:
                covers = [_broadcastable(m.astype(dtype), g.ndim, i) for i, m in enumerate(mu)]
                previous = functools.reduce(jnp.minimum, covers)
            accumulated = new_weight.astype(dtype) * (g_wide * g_wide) + b2 * previous
            inverse_root = jnp.where(accumulated > 0, jax.lax.rsqrt(accumulated + self.eps), 0.0)
            nu_new = numerics.update_moment(g_wide * inverse_root, nu, b1, dtype=dtype)
            if g.ndim < 2:
                new_mu = [accumulated.astype(mu[0].dtype)]
            else:
                axes = range(g.ndim)
                new_mu = [
                    jnp.max(accumulated, axis=tuple(a for a in axes if a != i)).astype(m.dtype)
                    for i, m in enumerate(mu)
                ]
            return nu_new.astype(g.dtype), nu_new.astype(nu.dtype), new_mu

        # The per-leaf lists of accumulators are subtrees of mu: pair them up
        # with the gradients' leaves by flattening mu only down to them.
        is_none = trees.is_none
        flat, treedef = trees.flatten(updates, is_leaf=is_none)
        nus = treedef.flatten_up_to(state.nu)
        mus = treedef.flatten_up_to(state.mu)
        results = [
            (None, None, None) if g is None else leaf(trees.as_array(g), nu, mu)
            for g, nu, mu in zip(flat, nus, mus)
        ]
        new_updates, nu, new_mu = (
            treedef.unflatten([result[i] for result in results]) for i in range(3)
        )
        return new_updates, ScaleBySM3State(mu=new_mu, nu=nu)


@value_class
class sm3(Alias):  # noqa: N801 - Optax's name
    """SM3: ``scale_by_sm3(momentum)`` followed by the learning rate.

    Update rule: see :class:`~gradtx.scale_by_sm3` (with ``b1 = momentum``);
    then ``u <- -learning_rate * u``. Optax's chain ends with
    ``scale(-learning_rate)``; gradtx's ends with
    ``scale_by_learning_rate(learning_rate)``, the same numbers and the same
    (empty) state for a constant learning rate, that also takes a schedule.

    Args:
      learning_rate: a non-negative number (or, gradtx's addition, a schedule).
      momentum: decay of the moving average of the scaled updates, in [0, 1].

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Anil et al., *Memory-Efficient Adaptive Optimization*, 2019,
      https://arxiv.org/abs/1901.11150

    Example:
      >>> import gradtx
      >>> gradtx.sm3(0.1)
      sm3(learning_rate=0.1, momentum=0.9)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    momentum: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)

    def __post_init__(self) -> None:
        checks.check_number("momentum", self.momentum, low=0.0, high=1.0)
        self.expand()  # validates the learning rate

    def expand(self) -> chain:
        return chain(scale_by_sm3(self.momentum), scale_by_learning_rate(self.learning_rate))
