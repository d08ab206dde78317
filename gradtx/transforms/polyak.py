"""Polyak's step size: the loss's gap to its minimum over the squared gradient norm."""

import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, trees
from gradtx.aliases import Alias, sgd
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

VARIANTS = ("sps", "sps+")


def _squared_norm(tree: Any) -> jax.Array:
    """``sum over leaves of sum(|x|**2)``, in float32 or wider, leaf by leaf in tree order."""
    sums = []
    for leaf in trees.leaves(tree):
        leaf = leaf.astype(jnp.promote_types(leaf.dtype, jnp.float32))
        if jnp.iscomplexobj(leaf):
            sums.append(jnp.sum(jnp.square(leaf.real) + jnp.square(leaf.imag)))
        else:
            sums.append(jnp.sum(jnp.square(leaf)))
    # As optax.tree.norm(squared=True) adds them: a reduction started at zero.
    return functools.reduce(operator.add, sums, jnp.zeros([], jnp.float32))


@value_class
class scale_by_polyak(Transformation):  # noqa: N801 - Optax's name
    """Scales the updates by Polyak's step size, read from the loss passed as ``value=``.

    Update rule, with ``f`` the loss (``update(..., value=f)``) and ``||u||``
    the norm of all the updates together::

        gap = f - f_min                   (sps)
        gap = max(f - f_min, 0)           (sps+)
        step = min(gap / (||u||**2 + eps), max_learning_rate)
        step = 0                          where ||u||**2 + eps <= float64 epsilon
        u <- step * u

    The step is computed in float32 or wider; the updates keep their dtypes.

    Args:
      f_min: a lower bound on the loss (0 for a model that can fit the data
        exactly).
      max_learning_rate: the largest step, >= 0.
      eps: added to the squared norm in the denominator, >= 0.
      variant: ``"sps"`` or ``"sps+"`` (only the non-negative part of the gap).

    Raises:
      ValueError: if a hyperparameter is out of range or ``variant`` is
        unknown.
      TypeError: at update time, if ``value`` (the loss) is not given.

    References:
      Loizou et al., *Stochastic Polyak Step-size for SGD: An Adaptive Learning
      Rate for Fast Convergence*, 2021, https://arxiv.org/abs/2002.10542.
      Garrigos et al., *Function Value Learning: Adaptive Learning Rates Based
      on the Polyak Stepsize and Function Splitting in ERM*, 2023,
      https://arxiv.org/abs/2307.14528

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_polyak()
      >>> g = jnp.array([3.0, 4.0])
      >>> tx.update(g, tx.init(g), value=jnp.array(5.0))[0]  # step 5 / 25
      Array([0.6, 0.8], dtype=float32)
    """

    f_min: jax.typing.ArrayLike = hyperparameter(default=0.0)
    max_learning_rate: jax.typing.ArrayLike = hyperparameter(default=1.0, shown=True, finite=False)
    eps: jax.typing.ArrayLike = hyperparameter(default=0.0)
    variant: str = static_field(default="sps")

    def __post_init__(self) -> None:
        checks.check_number("f_min", self.f_min)
        checks.check_number("max_learning_rate", self.max_learning_rate, low=0.0)
        checks.check_number("eps", self.eps, low=0.0)
        _check_variant(self.variant)

    def init(self, params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params
        if "value" not in extra_args:
            raise TypeError(checks.VALUE_REQUIRED.format(name="scale_by_polyak"))
        squared_norm = _squared_norm(updates)
        gap = jnp.asarray(extra_args["value"] - self.f_min).astype(squared_norm.dtype)
        if self.variant == "sps+":
            gap = jnp.maximum(gap, 0.0)
        denominator = squared_norm + self.eps
        # Optax's guard against dividing by zero: the float64 epsilon, whatever the dtype.
        step = jnp.where(
            denominator <= jnp.finfo(float).eps,
            jnp.zeros_like(denominator),
            jnp.minimum(gap / denominator, self.max_learning_rate),
        )

        def scaled(u: jax.Array) -> jax.Array:
            wide = jnp.promote_types(u.dtype, step.dtype)
            return (step.astype(wide) * u.astype(wide)).astype(u.dtype)

        return trees.leaf_map(scaled, updates), state


def _check_variant(variant: Any) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


@value_class
class polyak_sgd(Alias):  # noqa: N801 - Optax's name
    """SGD with Polyak's step size (SPS), read from the loss passed as ``value=``.

    Update rule, with ``f`` the loss and ``g`` the gradient::

        u <- -scaling(t) * g
        u <- min((f - f_min) / (||u||**2 + eps), max_learning_rate) * u

    (``(f - f_min)`` replaced by its non-negative part for ``variant="sps+"``).
    The chain is Optax's, ``sgd(learning_rate=scaling) -> scale_by_polyak``, so
    the squared norm is that of the scaled updates, as in Optax.

    Args:
      max_learning_rate: the largest step, >= 0.
      scaling: a non-negative factor (or schedule) applied before the step.
      f_min: a lower bound on the loss (0 for a model that can fit the data
        exactly).
      eps: added to the squared norm in the denominator, >= 0.
      variant: ``"sps"`` or ``"sps+"``.

    Raises:
      ValueError: if a hyperparameter is out of range or ``variant`` is
        unknown.
      TypeError: at update time, if ``value`` (the loss) is not given.

    References:
      Loizou et al., *Stochastic Polyak Step-size for SGD: An Adaptive Learning
      Rate for Fast Convergence*, 2021, https://arxiv.org/abs/2002.10542.
      Berrada et al., *Training Neural Networks for and by Interpolation*, 2020,
      https://arxiv.org/abs/1906.05661. Garrigos et al., 2023,
      https://arxiv.org/abs/2307.14528

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.polyak_sgd()
      >>> p = jnp.array([1.0, 2.0])
      >>> tx.update(2 * p, tx.init(p), p, value=jnp.sum(p**2))[0]  # halves p on sum(p**2)
      Array([-0.5, -1. ], dtype=float32)
    """

    max_learning_rate: jax.typing.ArrayLike = hyperparameter(default=1.0, shown=True, finite=False)
    scaling: ScalarOrSchedule = hyperparameter(default=1.0)
    f_min: jax.typing.ArrayLike = hyperparameter(default=0.0)
    eps: jax.typing.ArrayLike = hyperparameter(default=0.0)
    variant: str = static_field(default="sps")

    def __post_init__(self) -> None:
        checks.check_number("scaling", self.scaling, low=0.0)
        self.expand()  # validates every other argument with its own name

    def expand(self) -> chain:
        return chain(
            sgd(learning_rate=self.scaling),
            scale_by_polyak(
                max_learning_rate=self.max_learning_rate,
                f_min=self.f_min,
                eps=self.eps,
                variant=self.variant,
            ),
        )
