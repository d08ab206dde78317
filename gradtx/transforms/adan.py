"""Adan: adaptive Nesterov momentum from moving averages of gradients and their differences."""

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


class ScaleByAdanState(NamedTuple):
    """State of :class:`scale_by_adan` (Optax's field names and order).

    Attributes:
      m: moving average of the gradients.
      v: moving average of the differences of consecutive gradients.
      n: moving average of the squared Nesterov-corrected gradient.
      g: the previous gradient.
      t: int32 number of updates so far (saturates at 2**31 - 1).
    """

    m: Updates
    v: Updates
    n: Updates
    g: Updates
    t: jax.Array


@value_class
class scale_by_adan(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by Adan's bias-corrected moment estimates.

    Update rule (Algorithm 1 of the paper), with ``t`` the step (starting at 1)
    and ``d = g - g_prev`` (zero at the first step)::

        m <- b1 * m + (1 - b1) * g
        v <- b2 * v + (1 - b2) * d
        n <- b3 * n + (1 - b3) * |g + (1 - b2) * d|**2
        m_hat, v_hat, n_hat = m / (1 - b1**t), v / (1 - b2**t), n / (1 - b3**t)
        u <- (m_hat + (1 - b2) * v_hat) / (sqrt(n_hat + eps_root) + eps)

    As in Optax, ``b1``, ``b2`` and ``b3`` are the weights of the past (the
    paper's ``1 - beta``). The gradient difference enters ``n`` and ``u`` with
    Optax 0.2.8's weight ``1 - b2``; the paper's Algorithm 1 and the authors'
    code weight it by the paper's ``1 - beta2``, which is ``b2`` here (0.92
    rather than 0.08 by default; Optax pull request #1715). gradtx keeps
    Optax's numbers so that results and states carry over. The moments are
    computed in float32 or wider and stored in the params' dtype; the updates
    are in the gradient's dtype.

    Args:
      b1: decay of the moving average of gradients, in [0, 1).
      b2: decay of the moving average of gradient differences, in [0, 1).
      b3: decay of the moving average of the squared term, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0 (set > 0 to differentiate
        through the update).

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Xie et al., *Adan: Adaptive Nesterov Momentum Algorithm for Faster
      Optimizing Deep Models*, 2022, https://arxiv.org/abs/2208.06677

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adan()
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # the first step has magnitude 1 whatever the gradient's
      Array([ 1., -1.], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.98, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.92, shown=True)
    b3: jax.typing.ArrayLike = hyperparameter(default=0.99, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("b2", self.b2, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("b3", self.b3, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("eps", self.eps, low=0.0)
        checks.check_number("eps_root", self.eps_root, low=0.0)

    def init(self, params: Params) -> OptState:
        return ScaleByAdanState(
            m=trees.zeros_like(params),
            v=trees.zeros_like(params),
            n=numerics.squared_moment_like(params),
            g=trees.zeros_like(params),
            t=numerics.zero_count(),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByAdanState, "scale_by_adan")
        checks.check_trees_match(
            updates, state.m, tree_name="gradients", reference_name="optimizer state"
        )
        first = state.t == 0
        t = numerics.safe_increment(state.t)
        correct = numerics.BiasCorrection(t)
        b1, b2, b3 = self.b1, self.b2, self.b3

        def leaf(
            g: jax.Array, m: jax.Array, v: jax.Array, n: jax.Array, g_prev: jax.Array
        ) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, m.dtype, v.dtype, n.dtype)
            grad = g.astype(dtype)
            difference = jnp.where(first, jnp.zeros_like(grad), grad - g_prev.astype(dtype))
            m_new = numerics.update_moment(grad, m, b1, dtype=dtype)
            v_new = numerics.update_moment(difference, v, b2, dtype=dtype)
            corrected = grad + (1 - b2) * difference
            n_new = numerics.update_moment(numerics.abs_sq(corrected), n, b3, dtype=dtype)
            m_hat = correct(m_new, b1)
            v_hat = correct(v_new, b2)
            n_hat = correct(n_new, b3)
            update = (m_hat + (1 - b2) * v_hat) / (jnp.sqrt(n_hat + self.eps_root) + self.eps)
            return (
                update.astype(g.dtype),
                m_new.astype(m.dtype),
                v_new.astype(v.dtype),
                n_new.astype(n.dtype),
                g.astype(g_prev.dtype),
            )

        new_updates, m, v, n, g = trees.leaf_map_n(
            5, leaf, updates, state.m, state.v, state.n, state.g
        )
        return new_updates, ScaleByAdanState(m=m, v=v, n=n, g=g, t=t)


@value_class
class adan(Alias):  # noqa: N801 - Optax's name
    """Adan: ``scale_by_adan``, decoupled weight decay, then the learning rate.

    Update rule: see :class:`~gradtx.scale_by_adan`; then
    ``u <- -learning_rate(t) * (u + weight_decay * p)``. The chain is Optax's,
    ``scale_by_adan -> add_decayed_weights(weight_decay, mask) ->
    scale_by_learning_rate``. (The paper's proximal form divides by ``1 +
    weight_decay * learning_rate`` instead; Optax adds the decay as AdamW does.)

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the moving average of gradients, in [0, 1).
      b2: decay of the moving average of gradient differences, in [0, 1).
      b3: decay of the moving average of the squared term, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0 (Optax's default here is
        1e-8, that of ``scale_by_adan`` 0).
      weight_decay: decoupled weight-decay coefficient (or schedule), >= 0.
      mask: which leaves to decay (see :class:`~gradtx.add_decayed_weights`).

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Xie et al., *Adan: Adaptive Nesterov Momentum Algorithm for Faster
      Optimizing Deep Models*, 2022, https://arxiv.org/abs/2208.06677

    Example:
      >>> import gradtx
      >>> gradtx.adan(1e-3, weight_decay=0.02)
      adan(learning_rate=0.001, b1=0.98, b2=0.92, b3=0.99, eps=1e-08, weight_decay=0.02)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.98, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.92, shown=True)
    b3: jax.typing.ArrayLike = hyperparameter(default=0.99, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=1e-8)
    weight_decay: ScalarOrSchedule = hyperparameter(default=0.0, shown=True)
    mask: Any = static_field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", add_decayed_weights(0.0, self.mask).mask)
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_adan(self.b1, self.b2, self.b3, self.eps, self.eps_root),
            add_decayed_weights(self.weight_decay, self.mask),
            scale_by_learning_rate(self.learning_rate),
        )
