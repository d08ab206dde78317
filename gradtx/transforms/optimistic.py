"""Optimistic gradient methods: extrapolate with the change since the previous gradient."""

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
from gradtx.transforms.adam import scale_by_adam
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByOptimisticGradientState(NamedTuple):
    """State of :class:`scale_by_optimistic_gradient`.

    Attributes:
      is_initial_step: a bool scalar, True until the first update.
      previous_gradient: the updates received at the previous step.
    """

    is_initial_step: jax.Array
    previous_gradient: Updates


def _check_not_schedule(name: str, value: Any) -> None:
    # Optax types these as schedules in optimistic_gradient_descent but uses
    # them as numbers, so a schedule fails at update time there; refused here.
    if callable(value):
        raise TypeError(f"{name} must be a number or an array, not a schedule, got {value!r}")


@value_class
class scale_by_optimistic_gradient(Transformation):  # noqa: N801 - Optax's name
    """Generalized optimistic gradient: the gradient plus its change since the last step.

    Update rule, with ``g_prev`` the previous step's updates (``g`` itself at
    the first step, so that the first update is ``alpha * g``)::

        u <- (alpha + beta) * g - beta * g_prev

    With ``alpha = beta = 1`` this is ``2 * g - g_prev``, optimistic gradient
    descent. The previous gradient is kept in the params' dtype; the updates
    are computed in float32 or wider and returned in the gradient's dtype.

    Args:
      alpha: coefficient of the current gradient (a number, not a schedule).
      beta: coefficient of the change since the previous gradient, the
        "negative momentum" (a number, not a schedule).

    Raises:
      ValueError: if a hyperparameter is NaN.
      TypeError: if a hyperparameter is a schedule.

    References:
      Mokhtari et al., *A Unified Analysis of Extra-gradient and Optimistic
      Gradient Methods for Saddle Point Problems: Proximal Point Approach*,
      2019, https://arxiv.org/abs/1901.08511

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_optimistic_gradient()
      >>> u, state = tx.update(jnp.array([1.0, 2.0]), tx.init(jnp.zeros(2)))
      >>> tx.update(jnp.array([2.0, 2.0]), state)[0]
      Array([3., 2.], dtype=float32)
    """

    alpha: jax.typing.ArrayLike = hyperparameter(default=1.0, shown=True)
    beta: jax.typing.ArrayLike = hyperparameter(default=1.0, shown=True)

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            _check_not_schedule(name, getattr(self, name))
            checks.check_number(name, getattr(self, name))

    def init(self, params: Params) -> OptState:
        return ScaleByOptimisticGradientState(
            is_initial_step=jnp.array(True), previous_gradient=trees.zeros_like(params)
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(
            state, ScaleByOptimisticGradientState, "scale_by_optimistic_gradient"
        )
        checks.check_trees_match(
            updates,
            state.previous_gradient,
            tree_name="gradients",
            reference_name="optimizer state",
        )
        alpha, beta = self.alpha, self.beta

        def leaf(g: jax.Array, previous: jax.Array) -> tuple[jax.Array, jax.Array]:
            dtype = numerics.compute_dtype(g.dtype, previous.dtype)
            grad = g.astype(dtype)
            # At the first step there is no previous gradient: the current one
            # stands in (Optax issue #1082).
            previous_grad = jnp.where(state.is_initial_step, grad, previous.astype(dtype))
            # jnp.multiply is what `beta * array` runs; spelled out since NumPy's stubs
            # would type it as an ndarray when beta is one.
            update = jnp.multiply(alpha + beta, grad) - jnp.multiply(beta, previous_grad)
            return update.astype(g.dtype), g.astype(previous.dtype)

        new_updates, previous = trees.leaf_map_n(2, leaf, updates, state.previous_gradient)
        return new_updates, ScaleByOptimisticGradientState(
            is_initial_step=jnp.zeros_like(state.is_initial_step), previous_gradient=previous
        )


@value_class
class optimistic_gradient_descent(Alias):  # noqa: N801 - Optax's name
    """Optimistic gradient descent: ``scale_by_optimistic_gradient``, then the learning rate.

    Update rule::

        u <- -learning_rate(t) * ((alpha + beta) * g - beta * g_prev)

    An approximation of the extra-gradient method with one gradient per step;
    it converges in the last iterate on min-max games where gradient descent
    cycles or diverges. The chain is Optax's.

    Args:
      learning_rate: a non-negative number or a schedule.
      alpha: coefficient of the current gradient (a number, not a schedule).
      beta: coefficient of the change since the previous gradient (a number,
        not a schedule).

    Raises:
      ValueError: if a hyperparameter is out of range.
      TypeError: if ``alpha`` or ``beta`` is a schedule.

    References:
      Mokhtari et al., *A Unified Analysis of Extra-gradient and Optimistic
      Gradient Methods for Saddle Point Problems: Proximal Point Approach*,
      2019, https://arxiv.org/abs/1901.08511

    Example:
      >>> import gradtx
      >>> gradtx.optimistic_gradient_descent(0.01)
      optimistic_gradient_descent(learning_rate=0.01, alpha=1.0, beta=1.0)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    alpha: jax.typing.ArrayLike = hyperparameter(default=1.0, shown=True)
    beta: jax.typing.ArrayLike = hyperparameter(default=1.0, shown=True)

    def __post_init__(self) -> None:
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_optimistic_gradient(alpha=self.alpha, beta=self.beta),
            scale_by_learning_rate(self.learning_rate),
        )


@value_class
class optimistic_adam(Alias):  # noqa: N801 - Optax's name
    """Optimistic Adam, Optax's first interface (deprecated in Optax: use ``optimistic_adam_v2``).

    Optax 0.2.8 warns that ``optimistic_adam`` is deprecated in favour of
    :class:`~gradtx.optimistic_adam_v2`; gradtx keeps it, with Optax's
    arguments and chain, for ported code, without the warning.

    Update rule, with ``r`` the Adam direction of :class:`~gradtx.scale_by_adam`
    (``r_prev`` that of the previous step, ``r`` itself at the first)::

        u <- -(learning_rate * r + optimism * (r - r_prev))

    The chain is Optax's: ``scale_by_adam(b1, b2, eps, eps_root, mu_dtype,
    nesterov=nesterov) -> scale_by_optimistic_gradient(alpha=learning_rate,
    beta=optimism) -> scale_by_learning_rate(1.0)`` (the last only flips the
    sign), so the learning rate cannot be a schedule.

    Args:
      learning_rate: a non-negative number (not a schedule).
      optimism: the weight of the change ``r - r_prev``; None uses the learning
        rate, as in the paper.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: storage dtype of the first moment.
      nesterov: use Nesterov momentum in the Adam direction (the default, as
        in Optax).

    Raises:
      ValueError: if ``learning_rate`` is a schedule or a hyperparameter is out
        of range.

    References:
      Daskalakis et al., *Training GANs with Optimism*, 2017,
      https://arxiv.org/abs/1711.00141

    Example:
      >>> import gradtx
      >>> gradtx.optimistic_adam(1e-2, 1.0)
      optimistic_adam(learning_rate=0.01, optimism=1.0, b1=0.9, b2=0.999, eps=1e-08)
    """

    learning_rate: jax.typing.ArrayLike = hyperparameter()
    optimism: jax.typing.ArrayLike | None = hyperparameter(default=None)
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    mu_dtype: str | None = static_field(default=None)
    nesterov: bool = static_field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        if callable(self.learning_rate):
            raise ValueError(
                "this version of optimistic_adam does not support learning rate schedules "
                f"(got learning_rate={self.learning_rate!r}); optimistic_adam_v2 does"
            )
        checks.check_number("learning_rate", self.learning_rate, low=0.0)
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        optimism = self.learning_rate if self.optimism is None else self.optimism
        return chain(
            scale_by_adam(
                self.b1, self.b2, self.eps, self.eps_root, self.mu_dtype, nesterov=self.nesterov
            ),
            scale_by_optimistic_gradient(alpha=self.learning_rate, beta=optimism),
            scale_by_learning_rate(1.0),
        )


@value_class
class optimistic_adam_v2(Alias):  # noqa: N801 - Optax's name
    """Optimistic Adam: the Adam direction, made optimistic, then the learning rate.

    Optax's reworked interface of :class:`~gradtx.optimistic_adam` (same
    algorithm), which takes a schedule for the learning rate.

    Update rule, with ``r`` the Adam direction of :class:`~gradtx.scale_by_adam`
    (``r_prev`` that of the previous step, ``r`` itself at the first)::

        u <- -learning_rate(t) * ((alpha + beta) * r - beta * r_prev)

    The chain is Optax's: ``scale_by_adam(b1, b2, eps, eps_root, mu_dtype,
    nesterov=nesterov) -> scale_by_optimistic_gradient(alpha, beta) ->
    scale_by_learning_rate(learning_rate)``.

    Args:
      learning_rate: a non-negative number or a schedule.
      alpha: coefficient of the current Adam direction (keyword-only, as are
        the arguments after it).
      beta: coefficient of its change since the previous step.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: storage dtype of the first moment.
      nesterov: use Nesterov momentum in the Adam direction (the default, as
        in Optax).

    Raises:
      ValueError: if a hyperparameter is out of range.
      TypeError: if ``alpha`` or ``beta`` is a schedule.

    References:
      Daskalakis et al., *Training GANs with Optimism*, 2017,
      https://arxiv.org/abs/1711.00141

    Example:
      >>> import gradtx
      >>> gradtx.optimistic_adam_v2(1.0, alpha=1e-2)
      optimistic_adam_v2(learning_rate=1.0, alpha=0.01, beta=1.0, b1=0.9, b2=0.999, eps=1e-08)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    alpha: jax.typing.ArrayLike = hyperparameter(default=1.0, shown=True, kw_only=True)
    beta: jax.typing.ArrayLike = hyperparameter(default=1.0, shown=True, kw_only=True)
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True, kw_only=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True, kw_only=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True, kw_only=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0, kw_only=True)
    mu_dtype: str | None = static_field(default=None, kw_only=True)
    nesterov: bool = static_field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_adam(
                self.b1, self.b2, self.eps, self.eps_root, self.mu_dtype, nesterov=self.nesterov
            ),
            scale_by_optimistic_gradient(alpha=self.alpha, beta=self.beta),
            scale_by_learning_rate(self.learning_rate),
        )
