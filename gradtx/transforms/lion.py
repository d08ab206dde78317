"""Lion: the sign of an interpolation between the momentum and the gradient."""

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
from gradtx.transforms.weight_decay import add_decayed_weights

_MODES = ("hard", "smooth", "refined")


class ScaleByLionState(NamedTuple):
    """State of :class:`scale_by_lion`.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      mu: the momentum (moving average of gradients, decay ``b2``).
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    mu: Updates


@value_class
class scale_by_lion(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by the sign of Lion's interpolated momentum.

    Update rule::

        c <- b1 * mu + (1 - b1) * g
        u <- sign(c)                                  (mode="hard")
        u <- tanh(smooth_beta * c)                    (mode="smooth")
        u <- c if |c| < 1 else sign(c)                (mode="refined")
        mu <- b2 * mu + (1 - b2) * g

    The update uses the momentum of the previous step; the momentum is updated
    after. It is computed in float32 or wider and stored in ``mu_dtype``; the
    updates are in the gradient's dtype.

    Args:
      b1: weight of the momentum in the interpolation giving the update, in [0, 1].
      b2: decay of the momentum, in [0, 1].
      mu_dtype: storage dtype of the momentum; None keeps the params'.
      mode: ``"hard"`` (the sign, Lion's rule), ``"smooth"`` (``tanh``) or
        ``"refined"`` (linear below 1 in magnitude, the sign above).
      smooth_beta: the slope of the ``tanh`` in ``"smooth"`` mode.

    Raises:
      ValueError: if a hyperparameter is out of its range or ``mode`` is unknown.

    References:
      Chen et al., *Symbolic Discovery of Optimization Algorithms*, 2023,
      https://arxiv.org/abs/2302.06675

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_lion()
      >>> tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))[0]
      Array([ 1., -1.], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.99, shown=True)
    mu_dtype: str | None = static_field(default=None)
    mode: str = static_field(default="hard", kw_only=True)
    smooth_beta: jax.typing.ArrayLike = hyperparameter(default=1.0, kw_only=True)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0)
        checks.check_number("b2", self.b2, low=0.0, high=1.0)
        checks.check_number("smooth_beta", self.smooth_beta)
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))

    def init(self, params: Params) -> OptState:
        return ScaleByLionState(
            count=numerics.zero_count(), mu=trees.zeros_like(params, self.mu_dtype)
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByLionState, "scale_by_lion")
        checks.check_trees_match(
            updates, state.mu, tree_name="gradients", reference_name="optimizer state"
        )

        def leaf(g: jax.Array, mu: jax.Array) -> tuple[jax.Array, jax.Array]:
            dtype = numerics.compute_dtype(g.dtype, mu.dtype)
            interpolated = numerics.update_moment(g, mu, self.b1, dtype=dtype)
            if self.mode == "hard":
                direction = jnp.sign(interpolated)
            elif self.mode == "smooth":
                direction = jnp.tanh(self.smooth_beta * interpolated)
            else:
                direction = jnp.where(
                    jnp.abs(interpolated) < 1.0, interpolated, jnp.sign(interpolated)
                )
            mu_new = numerics.update_moment(g, mu, self.b2, dtype=dtype)
            return direction.astype(g.dtype), mu_new.astype(mu.dtype)

        new_updates, mu = trees.leaf_map_n(2, leaf, updates, state.mu)
        count = numerics.safe_increment(state.count)
        return new_updates, ScaleByLionState(count=count, mu=mu)


@value_class
class lion(Alias):  # noqa: N801 - Optax's name
    """Lion: ``scale_by_lion``, decoupled weight decay, then the learning rate.

    Update rule::

        u <- -learning_rate(t) * (sign(b1 * mu + (1 - b1) * g) + weight_decay * p)
        mu <- b2 * mu + (1 - b2) * g

    The chain is Optax's: ``scale_by_lion(b1, b2, mu_dtype) ->
    add_decayed_weights(weight_decay, mask) -> scale_by_learning_rate``. The
    weight decay is multiplied by the learning rate (as in PyTorch); since the
    sign gives updates of magnitude 1, Lion's learning rate is usually 3-10x
    smaller than AdamW's and its weight decay 3-10x larger.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: weight of the momentum in the interpolation giving the update, in [0, 1].
      b2: decay of the momentum, in [0, 1].
      mu_dtype: storage dtype of the momentum; None keeps the params'.
      weight_decay: decoupled weight-decay coefficient (or schedule), >= 0.
      mask: which leaves to decay (see :class:`~gradtx.add_decayed_weights`).

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Chen et al., *Symbolic Discovery of Optimization Algorithms*, 2023,
      https://arxiv.org/abs/2302.06675

    Example:
      >>> import gradtx
      >>> gradtx.lion(3e-4)
      lion(learning_rate=0.0003, b1=0.9, b2=0.99, weight_decay=0.001)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.99, shown=True)
    mu_dtype: str | None = static_field(default=None)
    weight_decay: ScalarOrSchedule = hyperparameter(default=1e-3, shown=True)
    mask: Any = static_field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))
        object.__setattr__(self, "mask", add_decayed_weights(0.0, self.mask).mask)
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_lion(self.b1, self.b2, self.mu_dtype),
            add_decayed_weights(self.weight_decay, self.mask),
            scale_by_learning_rate(self.learning_rate),
        )
