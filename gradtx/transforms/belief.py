"""AdaBelief: Adam scaled by the belief in the gradient, the variance of its prediction error."""

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
    static_field,
    value_class,
)
from gradtx.combine import chain
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByBeliefState(NamedTuple):
    """State of :class:`scale_by_belief`.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      mu: first moment (moving average of gradients).
      nu: second central moment (moving average of the squared prediction
        error ``|g - mu|**2``, plus ``eps_root``).
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    mu: Updates
    nu: Updates


@value_class
class scale_by_belief(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by AdaBelief's bias-corrected moments.

    Update rule, with ``t`` the step (starting at 1)::

        mu <- b1 * mu + (1 - b1) * g
        nu <- b2 * nu + (1 - b2) * |g - mu|**2 + eps_root
        mu_hat = mu / (1 - b1**t)
        (nesterov) mu_hat = b1 * mu / (1 - b1**(t+1)) + (1 - b1) * g / (1 - b1**t)
        nu_hat = nu / (1 - b2**t)
        u <- mu_hat / (sqrt(nu_hat) + eps)

    The moments are stored in the params' dtype and computed in float32 or
    wider; the returned updates are in the gradient's dtype.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second central moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added to the second central moment at every step, >= 0 (must be
        > 0 to differentiate through the update). The paper uses ``eps=1e-8,
        eps_root=0``; Optax's defaults are kept.
      nesterov: use Nesterov momentum.

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Zhuang et al., *AdaBelief Optimizer: Adapting Stepsizes by the Belief in
      Observed Gradients*, 2020, https://arxiv.org/abs/2010.07468

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_belief()
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # the first step is 1 / 0.9: mu_hat = g, nu_hat = (0.9 g)**2
      Array([ 1.1111, -1.1111], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-16, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=1e-16)
    nesterov: bool = static_field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("b2", self.b2, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("eps", self.eps, low=0.0)
        checks.check_number("eps_root", self.eps_root, low=0.0)

    def init(self, params: Params) -> OptState:
        return ScaleByBeliefState(
            count=numerics.zero_count(),
            mu=trees.zeros_like(params),
            nu=numerics.squared_moment_like(params),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByBeliefState, "scale_by_belief")
        checks.check_trees_match(
            updates, state.mu, tree_name="gradients", reference_name="optimizer state"
        )
        count = numerics.safe_increment(state.count)
        correct = numerics.BiasCorrection(count)
        b1, b2 = self.b1, self.b2

        def leaf(g: jax.Array, mu: jax.Array, nu: jax.Array) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            mu_new = numerics.update_moment(g, mu, b1, dtype=dtype)
            prediction_error = g.astype(dtype) - mu_new
            nu_new = (
                numerics.update_moment(numerics.abs_sq(prediction_error), nu, b2, dtype=dtype)
                + self.eps_root
            )
            mu_hat = numerics.debiased_mean(mu_new, g, b1, correct, nesterov=self.nesterov)
            nu_hat = correct(nu_new, b2)
            update = mu_hat / (jnp.sqrt(nu_hat) + self.eps)
            return update.astype(g.dtype), mu_new.astype(mu.dtype), nu_new.astype(nu.dtype)

        new_updates, mu, nu = trees.leaf_map_n(3, leaf, updates, state.mu, state.nu)
        return new_updates, ScaleByBeliefState(count=count, mu=mu, nu=nu)


@value_class
class adabelief(Alias):  # noqa: N801 - Optax's name
    """AdaBelief: ``scale_by_belief`` followed by ``scale_by_learning_rate``.

    Update rule: see :class:`~gradtx.scale_by_belief`; then
    ``u <- -learning_rate(t) * u``.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second central moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added to the second central moment at every step, >= 0.
      nesterov: use Nesterov momentum.

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Zhuang et al., *AdaBelief Optimizer: Adapting Stepsizes by the Belief in
      Observed Gradients*, 2020, https://arxiv.org/abs/2010.07468

    Example:
      >>> import gradtx
      >>> gradtx.adabelief(1e-3)
      adabelief(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-16)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-16, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=1e-16)
    nesterov: bool = static_field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_belief(self.b1, self.b2, self.eps, self.eps_root, nesterov=self.nesterov),
            scale_by_learning_rate(self.learning_rate),
        )
