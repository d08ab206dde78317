"""ADOPT: Adam normalizing each gradient by the second moment of the previous ones."""

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.aliases import Alias
from gradtx.base import (
    OptState,
    Params,
    ScalarOrSchedule,
    ScheduleLike,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import chain
from gradtx.transforms.adam import ScaleByAdamState
from gradtx.transforms.scale import evaluate, scale_by_learning_rate


def _check_clip_value_fn(value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            "clip_value_fn must be None (Optax's default, step**0.25) or a schedule (a "
            f"callable from the step count to the clipping value), got {value!r}"
        )


def _clip_value(clip_value_fn: ScheduleLike | None, count: jax.Array, dtype: Any) -> jax.Array:
    """The clipping bound at step ``count`` (0 at the first step), in ``dtype``."""
    if clip_value_fn is None:
        # Optax's default, lambda x: x**0.25, as built-in behaviour a config can hold.
        return count.astype(dtype) ** 0.25
    return jnp.asarray(evaluate(clip_value_fn, count)).astype(dtype)


@value_class
class scale_by_adopt(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by the ADOPT rule (Taniguchi et al., 2024).

    Each gradient is normalized by the second moment of the *previous* ones,
    then averaged; the first step only initializes ``nu``. With ``t`` the
    step count before this update (0 at the first)::

        c = clip_value_fn(t)                                 (default t**0.25)
        m_in = clip(g / max(sqrt(nu), eps), -c, c)           (nu before this step)
        nu <- |g|**2                     if t == 0, else b2 * nu + (1 - b2) * |g|**2
        mu <- mu                         if t == 0, else b1 * mu + (1 - b1) * m_in
        u <- mu                          (nesterov: b1 * mu + (1 - b1) * m_in)

    The moments are computed in float32 or wider, ``mu`` stored in
    ``mu_dtype`` (or the params' dtype), ``nu`` in the params' dtype; the
    updates are returned in the gradients' dtype.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: lower bound of the denominator ``sqrt(nu)``, >= 0.
      mu_dtype: storage dtype of the first moment; None keeps the params'.
      nesterov: use Nesterov momentum.
      use_clipping: clip the normalized gradients to ``[-c, c]`` (recommended,
        especially when training from scratch).
      clip_value_fn: the clipping bound as a function of the step count: None
        for Optax's default ``t**0.25`` (a config can hold it), a gradtx
        schedule, or any callable (which a config cannot hold).

    Raises:
      ValueError: if a hyperparameter is out of its range.
      TypeError: if ``clip_value_fn`` is not callable.

    References:
      Taniguchi et al., *ADOPT: Modified Adam Can Converge with Any beta2 with
      the Optimal Rate*, 2024, https://arxiv.org/abs/2411.02853

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adopt()
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), state)  # initializes nu
      >>> updates
      Array([0., 0.], dtype=float32)
      >>> [round(float(u), 4) for u in tx.update(jnp.array([2.0, -3.0]), state)[0]]
      [0.1, -0.1]
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.9999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-6, shown=True)
    mu_dtype: str | None = static_field(default=None)
    nesterov: bool = static_field(default=False, kw_only=True)
    use_clipping: bool = static_field(default=True, kw_only=True)
    clip_value_fn: ScheduleLike | None = hyperparameter(default=None, kw_only=True)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("b2", self.b2, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("eps", self.eps, low=0.0)
        _check_clip_value_fn(self.clip_value_fn)
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))

    def init(self, params: Params) -> OptState:
        return ScaleByAdamState(
            count=numerics.zero_count(),
            mu=trees.zeros_like(params, self.mu_dtype),
            nu=numerics.squared_moment_like(params),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByAdamState, "scale_by_adopt")
        checks.check_trees_match(
            updates, state.mu, tree_name="gradients", reference_name="optimizer state"
        )
        started = state.count > 0
        # The first step initializes nu with |g|**2 and leaves mu at zero.
        b1 = jnp.where(started, self.b1, 1.0)
        b2 = jnp.where(started, self.b2, 0.0)

        def leaf(g: jax.Array, mu: jax.Array, nu: jax.Array) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            wide_g = g.astype(dtype)
            normalized = wide_g / jnp.maximum(jnp.sqrt(nu.astype(dtype)), self.eps)
            if self.use_clipping:
                bound = _clip_value(self.clip_value_fn, state.count, dtype)
                normalized = jnp.clip(normalized, -bound, bound)
            nu_new = numerics.update_moment(numerics.abs_sq(wide_g), nu, b2, dtype=dtype)
            mu_new = numerics.update_moment(normalized, mu, b1, dtype=dtype)
            if self.nesterov:
                update = numerics.update_moment(normalized, mu_new, b1, dtype=dtype)
            else:
                update = mu_new
            return update.astype(g.dtype), mu_new.astype(mu.dtype), nu_new.astype(nu.dtype)

        new_updates, mu, nu = trees.leaf_map_n(3, leaf, updates, state.mu, state.nu)
        count = numerics.safe_increment(state.count)
        return new_updates, ScaleByAdamState(count=count, mu=mu, nu=nu)


@value_class
class adopt(Alias):  # noqa: N801 - Optax's name
    """ADOPT: :class:`scale_by_adopt` followed by ``scale_by_learning_rate``.

    Update rule: see :class:`~gradtx.scale_by_adopt`; then
    ``u <- -learning_rate(t) * u``. Adam's robustness to ``b2`` improves: the
    rule converges for any ``b2`` without Adam's dependence on it.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: lower bound of the denominator, >= 0.
      mu_dtype: storage dtype of the first moment.
      nesterov: use Nesterov momentum.
      use_clipping: clip the normalized gradients (recommended).
      clip_value_fn: the clipping bound as a function of the step count; None
        for Optax's default ``t**0.25``.

    Raises:
      ValueError: if a hyperparameter is out of range.
      TypeError: if ``clip_value_fn`` is not callable.

    References:
      Taniguchi et al., *ADOPT: Modified Adam Can Converge with Any beta2 with
      the Optimal Rate*, 2024, https://arxiv.org/abs/2411.02853

    Example:
      >>> import gradtx
      >>> gradtx.adopt(1e-3)
      adopt(learning_rate=0.001, b1=0.9, b2=0.9999, eps=1e-06)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.9999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-6, shown=True)
    mu_dtype: str | None = static_field(default=None)
    nesterov: bool = static_field(default=False, kw_only=True)
    use_clipping: bool = static_field(default=True, kw_only=True)
    clip_value_fn: ScheduleLike | None = hyperparameter(default=None, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_adopt(
                self.b1,
                self.b2,
                self.eps,
                self.mu_dtype,
                nesterov=self.nesterov,
                use_clipping=self.use_clipping,
                clip_value_fn=self.clip_value_fn,
            ),
            scale_by_learning_rate(self.learning_rate),
        )
