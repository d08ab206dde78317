"""RAdam: Adam whose adaptive step is rectified while the second moment is unreliable."""

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
    static_field,
    value_class,
)
from gradtx.combine import chain
from gradtx.transforms.adam import ScaleByAdamState
from gradtx.transforms.scale import scale_by_learning_rate


@value_class
class scale_by_radam(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by Rectified Adam's moments.

    Update rule, with ``t`` the step (starting at 1)::

        mu <- b1 * mu + (1 - b1) * g
        nu <- b2 * nu + (1 - b2) * |g|**2
        mu_hat = mu / (1 - b1**t)   (or the Nesterov form, as in scale_by_adam)
        nu_hat = nu / (1 - b2**t)
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        r = sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        u <- r * mu_hat / (sqrt(nu_hat + eps_root) + eps)   if rho >= threshold
        u <- mu_hat                                          otherwise

    ``rho`` estimates the length of the second moment's average; while it is
    below ``threshold`` the variance of the adaptive step is intractable and
    the update is momentum SGD. ``rho_inf`` is computed from ``b2`` in float32
    (or wider), the same ``b2`` as ``b2**t``. The state is Optax's
    ``ScaleByAdamState(count, mu, nu)``; the moments are stored in the params'
    dtype and computed in float32 or wider, the updates are in the gradient's
    dtype.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      threshold: the ``rho`` from which the adaptive step is used, >= 4 (the
        paper uses 5; for ``rho`` in (2, 4) ``r`` is not a real number, and a
        lower threshold would make NaN updates).
      nesterov: use Nesterov momentum.

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Liu et al., *On the Variance of the Adaptive Learning Rate and Beyond*,
      2020, https://arxiv.org/abs/1908.03265

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_radam()
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # the first steps are the bias-corrected mean gradient
      Array([ 2., -3.], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    threshold: jax.typing.ArrayLike = hyperparameter(default=5.0)
    nesterov: bool = static_field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("b2", self.b2, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("eps", self.eps, low=0.0)
        checks.check_number("eps_root", self.eps_root, low=0.0)
        checks.check_number("threshold", self.threshold, low=4.0)

    def init(self, params: Params) -> OptState:
        return ScaleByAdamState(
            count=numerics.zero_count(),
            mu=trees.zeros_like(params),
            nu=numerics.squared_moment_like(params),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByAdamState, "scale_by_radam")
        checks.check_trees_match(
            updates, state.mu, tree_name="gradients", reference_name="optimizer state"
        )
        count = numerics.safe_increment(state.count)
        correct = numerics.BiasCorrection(count)
        b1, b2 = self.b1, self.b2
        b2_power = numerics.decay_power(b2, count)
        # From b2 as b2**t sees it: from a Python float, rho_inf in float64 would
        # not cancel against 2 * t * b2**t / (1 - b2**t) (rho at t = 1 is 1).
        rho_inf = 2.0 / (1.0 - jnp.asarray(b2).astype(b2_power.dtype)) - 1.0
        rho = rho_inf - 2 * count * b2_power / (1 - b2_power)
        adaptive = rho >= self.threshold
        # r is not real for rho < 4; where the adaptive step is not taken it is
        # computed at rho_inf (r = 1), so that its gradient is not NaN either.
        rho_used = jnp.where(adaptive, rho, rho_inf)
        rectification = jnp.sqrt(
            (rho_used - 4.0)
            * (rho_used - 2.0)
            * rho_inf
            / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_used)
        )

        def leaf(g: jax.Array, mu: jax.Array, nu: jax.Array) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            mu_new = numerics.update_moment(g, mu, b1, dtype=dtype)
            nu_new = numerics.update_moment(numerics.abs_sq(g.astype(dtype)), nu, b2, dtype=dtype)
            mu_hat = numerics.debiased_mean(mu_new, g, b1, correct, nesterov=self.nesterov)
            nu_hat = correct(nu_new, b2)
            rectified = (
                rectification.astype(mu_hat.dtype)
                * mu_hat
                / (jnp.sqrt(nu_hat + self.eps_root) + self.eps)
            )
            update = jnp.where(adaptive, rectified, mu_hat)
            return update.astype(g.dtype), mu_new.astype(mu.dtype), nu_new.astype(nu.dtype)

        new_updates, mu, nu = trees.leaf_map_n(3, leaf, updates, state.mu, state.nu)
        return new_updates, ScaleByAdamState(count=count, mu=mu, nu=nu)


@value_class
class radam(Alias):  # noqa: N801 - Optax's name
    """RAdam: ``scale_by_radam`` followed by ``scale_by_learning_rate``.

    Update rule: see :class:`~gradtx.scale_by_radam`; then
    ``u <- -learning_rate(t) * u``.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      threshold: the ``rho`` from which the adaptive step is used, >= 4.
      nesterov: use Nesterov momentum.

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Liu et al., *On the Variance of the Adaptive Learning Rate and Beyond*,
      2020, https://arxiv.org/abs/1908.03265

    Example:
      >>> import gradtx
      >>> gradtx.radam(1e-3)
      radam(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    threshold: jax.typing.ArrayLike = hyperparameter(default=5.0)
    nesterov: bool = static_field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_radam(
                self.b1, self.b2, self.eps, self.eps_root, self.threshold, nesterov=self.nesterov
            ),
            scale_by_learning_rate(self.learning_rate),
        )
