"""AdEMAMix: Adam with a mixture of a fast and a slow moving average of gradients.

Also its simplified form (one accumulated momentum, no slow average), which
Optax's contrib has beside it.
"""

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
from gradtx.transforms.scale import evaluate, scale_by_learning_rate
from gradtx.transforms.weight_decay import add_decayed_weights


class ScaleByAdemamixState(NamedTuple):
    """State of :class:`scale_by_ademamix` (Optax's layout).

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1); the
        bias corrections use it.
      count_m2: int32 number of updates so far; ``b3`` and ``alpha`` are read
        at it.
      m1: the fast moving average of the gradients.
      m2: the slow moving average of the gradients.
      nu: the moving average of the squared gradient magnitudes.
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    count_m2: jax.Array
    m1: Updates
    m2: Updates
    nu: Updates


def _check_decay(name: str, value: Any) -> None:
    checks.check_number(name, value, low=0.0, high=1.0, high_inclusive=False)


@value_class
class scale_by_ademamix(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by AdEMAMix's mixture of two moving averages.

    Update rule, with ``t`` the step (starting at 1) and ``b3``, ``alpha``
    read at ``t - 1`` when they are schedules::

        m1 <- b1 * m1 + (1 - b1) * g           (fast, bias-corrected below)
        m2 <- b3 * m2 + (1 - b3) * g           (slow, never bias-corrected)
        nu <- b2 * nu + (1 - b2) * |g|**2
        u <- (m1 / (1 - b1**t) + alpha * m2) / (sqrt(nu / (1 - b2**t) + eps_root) + eps)

    The slow average is not bias-corrected so that it fills slowly; the paper
    warms ``alpha`` and ``b3`` up with schedules for long runs. The moments are
    computed in float32 or wider and stored in ``mu_dtype`` (all three, as in
    Optax) or the params' dtype.

    Args:
      b1: decay of the fast average, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      b3: decay of the slow average, in [0, 1), or a schedule.
      alpha: weight of the slow average, >= 0, or a schedule.
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: storage dtype of ``m1``, ``m2`` and ``nu``; None keeps the params'.

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Pagliardini et al., *The AdEMAMix Optimizer: Better, Faster, Older*,
      2024, https://arxiv.org/abs/2409.03137

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_ademamix(alpha=5.0)
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # 1 from the fast average, 5 * 1e-4 from the slow one
      Array([ 1.0005, -1.0005], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    b3: ScalarOrSchedule = hyperparameter(default=0.9999, shown=True)
    alpha: ScalarOrSchedule = hyperparameter(default=6.0, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    mu_dtype: str | None = static_field(default=None)

    def __post_init__(self) -> None:
        _check_decay("b1", self.b1)
        _check_decay("b2", self.b2)
        _check_decay("b3", self.b3)
        checks.check_number("alpha", self.alpha, low=0.0)
        checks.check_number("eps", self.eps, low=0.0)
        checks.check_number("eps_root", self.eps_root, low=0.0)
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))

    def init(self, params: Params) -> OptState:
        return ScaleByAdemamixState(
            count=numerics.zero_count(),
            count_m2=numerics.zero_count(),
            m1=trees.zeros_like(params, self.mu_dtype),
            m2=trees.zeros_like(params, self.mu_dtype),
            nu=numerics.squared_moment_like(params, self.mu_dtype),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByAdemamixState, "scale_by_ademamix")
        checks.check_trees_match(
            updates, state.m1, tree_name="gradients", reference_name="optimizer state"
        )
        b3 = evaluate(self.b3, state.count_m2)
        alpha = evaluate(self.alpha, state.count_m2)
        count = numerics.safe_increment(state.count)
        correct = numerics.BiasCorrection(count)
        b1, b2 = self.b1, self.b2

        def leaf(g: jax.Array, m1: jax.Array, m2: jax.Array, nu: jax.Array) -> tuple[Any, ...]:
            dtype = numerics.compute_dtype(g.dtype, m1.dtype, m2.dtype, nu.dtype)
            m1_new = numerics.update_moment(g, m1, b1, dtype=dtype)
            m2_new = numerics.update_moment(g, m2, b3, dtype=dtype)
            nu_new = numerics.update_moment(numerics.abs_sq(g.astype(dtype)), nu, b2, dtype=dtype)
            m1_hat = correct(m1_new, b1)
            nu_hat = correct(nu_new, b2)
            update = (m1_hat + alpha * m2_new) / (jnp.sqrt(nu_hat + self.eps_root) + self.eps)
            return (
                update.astype(g.dtype),
                m1_new.astype(m1.dtype),
                m2_new.astype(m2.dtype),
                nu_new.astype(nu.dtype),
            )

        new_updates, m1, m2, nu = trees.leaf_map_n(4, leaf, updates, state.m1, state.m2, state.nu)
        return new_updates, ScaleByAdemamixState(
            count=count,
            count_m2=numerics.safe_increment(state.count_m2),
            m1=m1,
            m2=m2,
            nu=nu,
        )


@value_class
class ademamix(Alias):  # noqa: N801 - Optax's name
    """AdEMAMix: AdamW with a mixture of a fast and a slow momentum.

    Update rule: see :class:`~gradtx.scale_by_ademamix`; then
    ``u <- -learning_rate(t) * (u + weight_decay * p)``. The chain is Optax's,
    ``scale_by_ademamix -> add_decayed_weights(weight_decay, mask) ->
    scale_by_learning_rate``. Best suited to long runs: the slow average
    (``b3`` near 1) remembers tens of thousands of steps.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the fast average, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      b3: decay of the slow average, in [0, 1), or a schedule.
      alpha: weight of the slow average, >= 0, or a schedule (the alias's
        default, 5.0, is Optax's; the piece's is 6.0).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: storage dtype of the moments.
      weight_decay: decoupled weight-decay coefficient (or schedule), >= 0.
      mask: which leaves to decay (see :class:`~gradtx.add_decayed_weights`).

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Pagliardini et al., *The AdEMAMix Optimizer: Better, Faster, Older*,
      2024, https://arxiv.org/abs/2409.03137

    Example:
      >>> import gradtx
      >>> gradtx.ademamix(1e-3, b3=gradtx.linear_schedule(0.9, 0.9999, 1000))
      ademamix(learning_rate=0.001, b1=0.9, b2=0.999, b3=linear_schedule(init_value=0.9, end_value=0.9999, transition_steps=1000), alpha=5.0, eps=1e-08)
    """  # noqa: E501

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    b3: ScalarOrSchedule = hyperparameter(default=0.9999, shown=True)
    alpha: ScalarOrSchedule = hyperparameter(default=5.0, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    mu_dtype: str | None = static_field(default=None)
    weight_decay: ScalarOrSchedule = hyperparameter(default=0.0)
    mask: Any = static_field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))
        object.__setattr__(self, "mask", add_decayed_weights(0.0, self.mask).mask)
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_ademamix(
                self.b1, self.b2, self.b3, self.alpha, self.eps, self.eps_root, self.mu_dtype
            ),
            add_decayed_weights(self.weight_decay, self.mask),
            scale_by_learning_rate(self.learning_rate),
        )


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """State of :class:`scale_by_simplified_ademamix` (Optax's layout).

    Attributes:
      t: int32 number of updates so far (saturates at 2**31 - 1).
      m: the accumulated momentum (a sum, not an average, of past gradients).
      n: the moving average of the squared gradient magnitudes.
    """

    t: jax.Array
    m: Updates
    n: Updates


@value_class
class scale_by_simplified_ademamix(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by Simplified AdEMAMix (Morwani et al., 2025).

    One momentum, accumulated rather than averaged, mixed with the current
    gradient. With ``t`` the step (starting at 1) and ``alpha`` read at
    ``t - 1`` when it is a schedule::

        m <- b1 * m + g
        n <- b2 * n + (1 - b2) * |g|**2
        u <- (m + alpha * g) / (sqrt(n / (1 - b2**t) + eps_root) + eps)

    With ``alpha = 0`` this is Adam up to a rescaling of the learning rate and
    ``b1``. The moments are computed in float32 or wider and stored in the
    params' dtype.

    Args:
      b1: decay of the momentum, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      alpha: weight of the current gradient, >= 0, or a schedule.
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Morwani et al., *Connections between Schedule-Free Optimizers, AdEMAMix,
      and Accelerated SGD Variants*, 2025, https://arxiv.org/abs/2502.02431

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_simplified_ademamix(alpha=1.0)
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # (m + alpha * g) / |g| with m = g
      Array([ 2., -2.], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.99, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.95, shown=True)
    alpha: ScalarOrSchedule = hyperparameter(default=0.0, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)

    def __post_init__(self) -> None:
        _check_decay("b1", self.b1)
        _check_decay("b2", self.b2)
        checks.check_number("alpha", self.alpha, low=0.0)
        checks.check_number("eps", self.eps, low=0.0)
        checks.check_number("eps_root", self.eps_root, low=0.0)

    def init(self, params: Params) -> OptState:
        return ScaleBySimplifiedAdEMAMixState(
            t=numerics.zero_count(),
            m=trees.zeros_like(params),
            n=numerics.squared_moment_like(params),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(
            state, ScaleBySimplifiedAdEMAMixState, "scale_by_simplified_ademamix"
        )
        checks.check_trees_match(
            updates, state.m, tree_name="gradients", reference_name="optimizer state"
        )
        alpha = evaluate(self.alpha, state.t)
        t = numerics.safe_increment(state.t)
        correct = numerics.BiasCorrection(t)
        b1, b2 = self.b1, self.b2

        def leaf(g: jax.Array, m: jax.Array, n: jax.Array) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, m.dtype, n.dtype)
            wide_g = g.astype(dtype)
            m_new = wide_g + b1 * m.astype(dtype)
            n_new = numerics.update_moment(numerics.abs_sq(wide_g), n, b2, dtype=dtype)
            n_hat = correct(n_new, b2)
            update = (m_new + alpha * wide_g) / (jnp.sqrt(n_hat + self.eps_root) + self.eps)
            return update.astype(g.dtype), m_new.astype(m.dtype), n_new.astype(n.dtype)

        new_updates, m, n = trees.leaf_map_n(3, leaf, updates, state.m, state.n)
        return new_updates, ScaleBySimplifiedAdEMAMixState(t=t, m=m, n=n)


@value_class
class simplified_ademamix(Alias):  # noqa: N801 - Optax's name
    """Simplified AdEMAMix: one accumulated momentum mixed with the current gradient.

    Update rule: see :class:`~gradtx.scale_by_simplified_ademamix`; then
    ``u <- -learning_rate(t) * (u + weight_decay * p)``. The chain is Optax's,
    ``scale_by_simplified_ademamix -> add_decayed_weights(weight_decay, mask)
    -> scale_by_learning_rate``.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the momentum, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      alpha: weight of the current gradient, >= 0, or a schedule.
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      weight_decay: decoupled weight-decay coefficient (or schedule), >= 0.
      mask: which leaves to decay (see :class:`~gradtx.add_decayed_weights`).

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Morwani et al., *Connections between Schedule-Free Optimizers, AdEMAMix,
      and Accelerated SGD Variants*, 2025, https://arxiv.org/abs/2502.02431

    Example:
      >>> import gradtx
      >>> gradtx.simplified_ademamix(1e-4, alpha=2.0)
      simplified_ademamix(learning_rate=0.0001, b1=0.99, b2=0.95, alpha=2.0, eps=1e-08)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.99, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.95, shown=True)
    alpha: ScalarOrSchedule = hyperparameter(default=0.0, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    weight_decay: ScalarOrSchedule = hyperparameter(default=0.0)
    mask: Any = static_field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", add_decayed_weights(0.0, self.mask).mask)
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_simplified_ademamix(self.b1, self.b2, self.alpha, self.eps, self.eps_root),
            add_decayed_weights(self.weight_decay, self.mask),
            scale_by_learning_rate(self.learning_rate),
        )
