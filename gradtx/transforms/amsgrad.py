"""AMSGrad: Adam whose second moment never decreases (its running maximum)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.aliases import _AdamFamily
from gradtx.base import (
    OptState,
    Params,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import chain
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByAmsgradState(NamedTuple):
    """State of :class:`scale_by_amsgrad`.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      mu: first moment (moving average of gradients).
      nu: second moment (moving average of squared gradient magnitudes).
      nu_max: the elementwise maximum of the (bias-corrected) second moments so
        far.
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    mu: Updates
    nu: Updates
    nu_max: Updates


@value_class
class scale_by_amsgrad(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by AMSGrad's moments: Adam with a non-decreasing denominator.

    Update rule, with ``t`` the step (starting at 1)::

        mu <- b1 * mu + (1 - b1) * g
        nu <- b2 * nu + (1 - b2) * |g|**2
        mu_hat = mu / (1 - b1**t)          (mu if not bias_correction_mu)
        nu_max <- max(nu_max, nu / (1 - b2**t))  (nu if not bias_correction_nu)
        u <- mu_hat / (sqrt(nu_max + eps_root) + eps)

    ``mu`` is stored in ``mu_dtype``, ``nu`` and ``nu_max`` in the params'
    dtype; they are computed in float32 or wider and the updates are in the
    gradient's dtype.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0 (set > 0 to differentiate
        through the update).
      mu_dtype: storage dtype of the first moment; None keeps the params'.
      bias_correction_mu: bias-correct the first moment (False is the paper's
        rule).
      bias_correction_nu: bias-correct the second moment before the maximum
        (False is the paper's rule).

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Reddi, Kale & Kumar, *On the Convergence of Adam and Beyond*, 2018,
      https://arxiv.org/abs/1904.09237

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_amsgrad()
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # the first step has magnitude 1, as Adam's
      Array([ 1., -1.], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    mu_dtype: str | None = static_field(default=None)
    bias_correction_mu: bool = static_field(default=True)
    bias_correction_nu: bool = static_field(default=True)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("b2", self.b2, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("eps", self.eps, low=0.0)
        checks.check_number("eps_root", self.eps_root, low=0.0)
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))

    def init(self, params: Params) -> OptState:
        return ScaleByAmsgradState(
            count=numerics.zero_count(),
            mu=trees.zeros_like(params, self.mu_dtype),
            nu=numerics.squared_moment_like(params),
            nu_max=numerics.squared_moment_like(params),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByAmsgradState, "scale_by_amsgrad")
        checks.check_trees_match(
            updates, state.mu, tree_name="gradients", reference_name="optimizer state"
        )
        count = numerics.safe_increment(state.count)
        correct = numerics.BiasCorrection(count)
        b1, b2 = self.b1, self.b2

        def leaf(
            g: jax.Array, mu: jax.Array, nu: jax.Array, nu_max: jax.Array
        ) -> tuple[jax.Array, ...]:
            mu_new = numerics.update_moment(
                g, mu, b1, dtype=numerics.compute_dtype(g.dtype, mu.dtype)
            )
            nu_dtype = numerics.compute_dtype(g.dtype, nu.dtype, nu_max.dtype)
            nu_new = numerics.update_moment(
                numerics.abs_sq(g.astype(nu_dtype)), nu, b2, dtype=nu_dtype
            )
            mu_hat = correct(mu_new, b1) if self.bias_correction_mu else mu_new
            nu_hat = correct(nu_new, b2) if self.bias_correction_nu else nu_new
            nu_max_new = jnp.maximum(nu_max.astype(nu_dtype), nu_hat)
            update = mu_hat / (jnp.sqrt(nu_max_new + self.eps_root) + self.eps)
            return (
                update.astype(g.dtype),
                mu_new.astype(mu.dtype),
                nu_new.astype(nu.dtype),
                nu_max_new.astype(nu_max.dtype),
            )

        new_updates, mu, nu, nu_max = trees.leaf_map_n(
            4, leaf, updates, state.mu, state.nu, state.nu_max
        )
        return new_updates, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)


@value_class
class amsgrad(_AdamFamily):  # noqa: N801 - Optax's name
    """AMSGrad: ``scale_by_amsgrad`` followed by ``scale_by_learning_rate``.

    Update rule: see :class:`~gradtx.scale_by_amsgrad`; then
    ``u <- -learning_rate(t) * u``.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: storage dtype of the first moment.
      bias_correction_mu: bias-correct the first moment (False is the paper's
        rule).
      bias_correction_nu: bias-correct the second moment before the maximum
        (False is the paper's rule).

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Reddi, Kale & Kumar, *On the Convergence of Adam and Beyond*, 2018,
      https://arxiv.org/abs/1904.09237

    Example:
      >>> import gradtx
      >>> gradtx.amsgrad(1e-3)
      amsgrad(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08)
    """

    bias_correction_mu: bool = static_field(default=True)
    bias_correction_nu: bool = static_field(default=True)

    def expand(self) -> chain:
        return chain(
            scale_by_amsgrad(
                self.b1,
                self.b2,
                self.eps,
                self.eps_root,
                self.mu_dtype,
                self.bias_correction_mu,
                self.bias_correction_nu,
            ),
            scale_by_learning_rate(self.learning_rate),
        )
