"""NovoGrad: momentum of gradients normalized by a per-layer second moment."""

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


class ScaleByNovogradState(NamedTuple):
    """State of :class:`scale_by_novograd`.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      mu: first moment (momentum of the normalized gradients plus weight decay).
      nu: per-leaf second moment: a scalar per parameter array, the moving
        average of the gradient's squared norm.
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    mu: Updates
    nu: Updates


def _check_not_schedule(name: str, value: Any) -> None:
    # Optax's scale_by_novograd multiplies the params by the weight decay; a
    # schedule there fails at update time in Optax, so it is refused here.
    if callable(value):
        raise TypeError(f"{name} must be a number or an array, not a schedule, got {value!r}")


@value_class
class scale_by_novograd(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by NovoGrad's layer-wise normalized momentum.

    Update rule, per parameter array (leaf) ``p`` with gradient ``g`` and
    ``t`` the step (starting at 1)::

        nu <- ||g||**2                                     (t == 1)
        nu <- b2 * nu + (1 - b2) * ||g||**2                (t > 1)
        a = g / (sqrt(nu + eps_root) + eps) + weight_decay * p
        mu <- a                                            (t == 1)
        mu <- b1 * mu + a                                  (t > 1)
        u <- mu

    ``nu`` is one scalar per leaf, which is what makes NovoGrad use half
    Adam's memory. As in Optax, the momentum is ``b1 * mu + a`` (no ``1 - b1``
    factor on ``a``), and ``update`` needs the params. The moments are computed
    in float32 or wider and stored in ``mu_dtype`` (``mu``) and the params'
    dtype (``nu``); the updates are in the gradient's dtype.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      weight_decay: coefficient of the params added to the normalized
        gradient, >= 0 (a number, not a schedule).
      mu_dtype: storage dtype of the first moment; None keeps the params'.

    Raises:
      ValueError: if a hyperparameter is out of its range, or at update time
        if params are not given.
      TypeError: if ``weight_decay`` is a schedule.

    References:
      Ginsburg et al., *Stochastic Gradient Methods with Layer-wise Adaptive
      Moments for Training of Deep Networks*, 2019,
      https://arxiv.org/abs/1905.11286

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_novograd()
      >>> p = jnp.zeros(2)
      >>> tx.update(jnp.array([3.0, -4.0]), tx.init(p), p)[0]  # g / ||g|| at the first step
      Array([ 0.6, -0.8], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.25, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    weight_decay: jax.typing.ArrayLike = hyperparameter(default=0.0)
    mu_dtype: str | None = static_field(default=None)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("b2", self.b2, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("eps", self.eps, low=0.0)
        checks.check_number("eps_root", self.eps_root, low=0.0)
        _check_not_schedule("weight_decay", self.weight_decay)
        checks.check_number("weight_decay", self.weight_decay, low=0.0)
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))

    def init(self, params: Params) -> OptState:
        return ScaleByNovogradState(
            count=numerics.zero_count(),
            mu=trees.zeros_like(params, self.mu_dtype),
            nu=trees.leaf_map(lambda p: jnp.zeros([], p.dtype), params),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del extra_args
        if params is None:
            raise ValueError(checks.PARAMS_REQUIRED.format(name="scale_by_novograd"))
        checks.check_state_fields(state, ScaleByNovogradState, "scale_by_novograd")
        checks.check_trees_match(
            updates, state.mu, tree_name="gradients", reference_name="optimizer state"
        )
        checks.check_trees_match(
            updates, params, tree_name="gradients", reference_name="parameters"
        )
        count = numerics.safe_increment(state.count)
        first = count == 1
        b1, b2 = self.b1, self.b2

        def leaf(g: jax.Array, p: jax.Array, mu: jax.Array, nu: jax.Array) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            grad = g.astype(dtype)
            squared_norm = (jnp.linalg.norm(grad) ** 2).astype(dtype)
            nu_new = jnp.where(
                first, squared_norm, numerics.update_moment(squared_norm, nu, b2, dtype=dtype)
            )
            normalized = grad / (jnp.sqrt(nu_new + self.eps_root) + self.eps)
            normalized = normalized + self.weight_decay * p.astype(dtype)
            mu_new = jnp.where(first, normalized, b1 * mu.astype(dtype) + normalized)
            mu_new = mu_new.astype(mu.dtype)
            return mu_new.astype(g.dtype), mu_new, nu_new.astype(nu.dtype)

        new_updates, mu, nu = trees.leaf_map_n(3, leaf, updates, params, state.mu, state.nu)
        return new_updates, ScaleByNovogradState(count=count, mu=mu, nu=nu)


@value_class
class novograd(Alias):  # noqa: N801 - Optax's name
    """NovoGrad: ``scale_by_novograd`` followed by ``scale_by_learning_rate``.

    Update rule: see :class:`~gradtx.scale_by_novograd`; then
    ``u <- -learning_rate(t) * u``. The chain is Optax's.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0 (Optax's
        default here is 1e-6, that of ``scale_by_novograd`` 1e-8).
      eps_root: added inside the square root, >= 0.
      weight_decay: coefficient of the params added to the normalized
        gradient, >= 0 (a number, not a schedule).

    Raises:
      ValueError: if a hyperparameter is out of range.
      TypeError: if ``weight_decay`` is a schedule.

    References:
      Ginsburg et al., *Stochastic Gradient Methods with Layer-wise Adaptive
      Moments for Training of Deep Networks*, 2019,
      https://arxiv.org/abs/1905.11286. Li et al., *Jasper: An End-to-End
      Convolutional Neural Acoustic Model*, 2019, https://arxiv.org/abs/1904.03288

    Example:
      >>> import gradtx
      >>> gradtx.novograd(1e-3)
      novograd(learning_rate=0.001, b1=0.9, b2=0.25, eps=1e-06)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.25, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-6, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    weight_decay: jax.typing.ArrayLike = hyperparameter(default=0.0)

    def __post_init__(self) -> None:
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_novograd(self.b1, self.b2, self.eps, self.eps_root, self.weight_decay),
            scale_by_learning_rate(self.learning_rate),
        )
