"""Adam's scaling by bias-corrected first and second moments."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.base import (
    OptState,
    Params,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)


class ScaleByAdamState(NamedTuple):
    """State of :class:`scale_by_adam`.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      mu: first moment (moving average of gradients).
      nu: second moment (moving average of squared gradient magnitudes).
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    mu: Updates
    nu: Updates


@value_class
class scale_by_adam(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by Adam's bias-corrected moment estimates.

    Update rule, with ``t`` the step (starting at 1)::

        mu <- b1 * mu + (1 - b1) * g
        nu <- b2 * nu + (1 - b2) * |g|**2
        mu_hat = mu / (1 - b1**t)
        (nesterov) mu_hat = b1 * mu / (1 - b1**(t+1)) + (1 - b1) * g / (1 - b1**t)
        nu_hat = nu / (1 - b2**t)
        u <- mu_hat / (sqrt(nu_hat + eps_root) + eps)

    The moments may be stored in another precision (``mu_dtype``, ``nu_dtype``);
    they are computed in the wider of the gradient's and the storage dtype and
    the returned updates are in the gradient's dtype.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0 (set > 0 to differentiate
        through the update, e.g. for meta-learning).
      mu_dtype: storage dtype of the first moment; None keeps the params'.
      nu_dtype: storage dtype of the second moment; None keeps the params'
        (float32 for float16 params, whose range would flush it to zero).
      nesterov: use Nesterov momentum (NAdam).

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Kingma & Ba, *Adam: A Method for Stochastic Optimization*, 2014,
      https://arxiv.org/abs/1412.6980. Dozat, *Incorporating Nesterov Momentum
      into Adam*, 2016, https://openreview.net/pdf?id=OM0jvwB8jIp57ZJjtNEZ

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adam()
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # the first step has magnitude 1 whatever the gradient's
      Array([ 1., -1.], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    mu_dtype: str | None = static_field(default=None)
    nu_dtype: str | None = static_field(default=None)
    nesterov: bool = static_field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("b2", self.b2, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("eps", self.eps, low=0.0)
        checks.check_number("eps_root", self.eps_root, low=0.0)
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))
        object.__setattr__(self, "nu_dtype", numerics.canonical_dtype(self.nu_dtype, "nu_dtype"))

    def init(self, params: Params) -> OptState:
        return ScaleByAdamState(
            count=numerics.zero_count(),
            mu=trees.zeros_like(params, self.mu_dtype),
            nu=numerics.squared_moment_like(params, self.nu_dtype),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByAdamState, "scale_by_adam")
        checks.check_trees_match(
            updates, state.mu, tree_name="gradients", reference_name="optimizer state"
        )
        count = numerics.safe_increment(state.count)
        correct = numerics.BiasCorrection(count)
        b1, b2 = self.b1, self.b2

        def leaf(g: jax.Array, mu: jax.Array, nu: jax.Array) -> tuple[jax.Array, ...]:
            # Updated in float32 or wider whatever the storage dtype, so that
            # b1, b2 and eps are not rounded to bfloat16/float16.
            mu_new = numerics.update_moment(
                g, mu, b1, dtype=numerics.compute_dtype(g.dtype, mu.dtype)
            )
            nu_dtype = numerics.compute_dtype(g.dtype, nu.dtype)
            nu_new = numerics.update_moment(
                numerics.abs_sq(numerics.cast(g, nu_dtype)), nu, b2, dtype=nu_dtype
            )
            mu_hat = numerics.debiased_mean(mu_new, g, b1, correct, nesterov=self.nesterov)
            nu_hat = correct(nu_new, b2)
            update = mu_hat / (jnp.sqrt(nu_hat + self.eps_root) + self.eps)
            return (
                numerics.cast(update, g.dtype),
                numerics.cast(mu_new, mu.dtype),
                numerics.cast(nu_new, nu.dtype),
            )

        new_updates, mu, nu = trees.leaf_map_n(3, leaf, updates, state.mu, state.nu)
        return new_updates, ScaleByAdamState(count=count, mu=mu, nu=nu)
