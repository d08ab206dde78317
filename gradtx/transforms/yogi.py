"""Yogi: Adam whose second moment moves additively, by the sign of its error."""

from typing import Any

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
from gradtx.transforms.adam import ScaleByAdamState
from gradtx.transforms.scale import scale_by_learning_rate


@value_class
class scale_by_yogi(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by Yogi's moments.

    Update rule, with ``t`` the step (starting at 1)::

        mu <- b1 * mu + (1 - b1) * g
        nu <- nu - (1 - b2) * sign(nu - |g|**2) * |g|**2
        mu_hat = mu / (1 - b1**t)
        nu_hat = nu / (1 - b2**t)
        u <- mu_hat / (sqrt(nu_hat + eps_root) + eps)

    Both moments start at ``initial_accumulator_value`` and are bias-corrected
    as Adam's (Optax's rule). The state is Optax's ``ScaleByAdamState(count,
    mu, nu)``; the moments are stored in the params' dtype and computed in
    float32 or wider, the updates are in the gradient's dtype.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: rate of the second moment's additive change, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      initial_accumulator_value: the moments' starting value, >= 0.

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Zaheer et al., *Adaptive Methods for Nonconvex Optimization*, 2018,
      https://proceedings.neurips.cc/paper/2018/file/90365351ccc7437a1309dc64e4db32a3-Paper.pdf

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_yogi()
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(2)  # close to 1 in magnitude, as Adam's first step
      Array([ 1., -1.], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-3, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    initial_accumulator_value: jax.typing.ArrayLike = hyperparameter(default=1e-6)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("b2", self.b2, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("eps", self.eps, low=0.0)
        checks.check_number("eps_root", self.eps_root, low=0.0)
        checks.check_number("initial_accumulator_value", self.initial_accumulator_value, low=0.0)

    def init(self, params: Params) -> OptState:
        def filled(p: jax.Array) -> jax.Array:
            return jnp.full_like(p, self.initial_accumulator_value)

        return ScaleByAdamState(
            count=numerics.zero_count(),
            mu=trees.leaf_map(filled, params),
            nu=numerics.squared_moment_like(params, fill=self.initial_accumulator_value),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByAdamState, "scale_by_yogi")
        checks.check_trees_match(
            updates, state.mu, tree_name="gradients", reference_name="optimizer state"
        )
        count = numerics.safe_increment(state.count)
        correct = numerics.BiasCorrection(count)
        b1, b2 = self.b1, self.b2

        def leaf(g: jax.Array, mu: jax.Array, nu: jax.Array) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            mu_new = numerics.update_moment(g, mu, b1, dtype=dtype)
            g_sq = numerics.abs_sq(g.astype(dtype))
            nu_old = nu.astype(dtype)
            nu_new = nu_old - (1 - b2) * jnp.sign(nu_old - g_sq) * g_sq
            mu_hat = correct(mu_new, b1)
            nu_hat = correct(nu_new, b2)
            update = mu_hat / (jnp.sqrt(nu_hat + self.eps_root) + self.eps)
            return update.astype(g.dtype), mu_new.astype(mu.dtype), nu_new.astype(nu.dtype)

        new_updates, mu, nu = trees.leaf_map_n(3, leaf, updates, state.mu, state.nu)
        return new_updates, ScaleByAdamState(count=count, mu=mu, nu=nu)


@value_class
class yogi(Alias):  # noqa: N801 - Optax's name
    """Yogi: ``scale_by_yogi`` followed by ``scale_by_learning_rate``.

    Update rule: see :class:`~gradtx.scale_by_yogi` (with its default
    ``eps_root`` and ``initial_accumulator_value``, as Optax's alias); then
    ``u <- -learning_rate(t) * u``.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: rate of the second moment's additive change, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Zaheer et al., *Adaptive Methods for Nonconvex Optimization*, 2018,
      https://proceedings.neurips.cc/paper/2018/file/90365351ccc7437a1309dc64e4db32a3-Paper.pdf

    Example:
      >>> import gradtx
      >>> gradtx.yogi(1e-2)
      yogi(learning_rate=0.01, b1=0.9, b2=0.999, eps=0.001)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-3, shown=True)

    def __post_init__(self) -> None:
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_yogi(self.b1, self.b2, self.eps),
            scale_by_learning_rate(self.learning_rate),
        )
