"""Rprop: per-parameter step sizes grown or shrunk by the gradient's sign changes."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.aliases import Alias
from gradtx.base import (
    OptState,
    Params,
    Transformation,
    Updates,
    hyperparameter,
    value_class,
)
from gradtx.combine import chain
from gradtx.transforms.averaging import check_not_schedule
from gradtx.transforms.scale import scale


class ScaleByRpropState(NamedTuple):
    """State of :class:`scale_by_rprop`.

    Attributes:
      step_sizes: each entry's current step size.
      prev_updates: the previous step's updates (zero where the gradient's
        sign flipped), whose signs the next gradient is compared with.
    """

    step_sizes: Updates
    prev_updates: Updates


def _check_arguments(transform: Any, owner: str) -> None:
    """The checks scale_by_rprop and rprop share: their arguments are the same."""
    for name in ("learning_rate", "eta_minus", "eta_plus", "min_step_size", "max_step_size"):
        check_not_schedule(name, getattr(transform, name), owner)
    checks.check_number("learning_rate", transform.learning_rate, low=0.0)
    checks.check_number("eta_minus", transform.eta_minus, low=0.0, high=1.0)
    checks.check_number("eta_plus", transform.eta_plus, low=1.0)
    checks.check_number("min_step_size", transform.min_step_size, low=0.0)
    checks.check_number("max_step_size", transform.max_step_size, low=0.0)
    bounds = checks.concrete_pair(transform.min_step_size, transform.max_step_size)
    if bounds is not None and bounds[0] > bounds[1]:
        raise ValueError(
            f"min_step_size must be <= max_step_size, got {transform.min_step_size!r} > "
            f"{transform.max_step_size!r}"
        )


@value_class
class scale_by_rprop(Transformation):  # noqa: N801 - Optax's name
    """Moves each entry by its own step size, in the direction of the gradient's sign.

    Update rule, per entry, with ``s = g * prev`` (``prev`` the previous update)::

        step <- step                                         where s == 0
        step <- clip(step * eta_plus, min_step_size, max_step_size)    where s > 0
        step <- clip(step * eta_minus, min_step_size, max_step_size)   where s < 0
        u <- 0 where s < 0, else step * sign(g)
        prev <- u

    A sign flip shrinks the step and skips the entry for one step (Rprop-,
    without weight backtracking). Step sizes start at ``learning_rate``; they
    and the updates are computed in float32 or wider and stored in the params'
    dtype. Use :class:`rprop` for descent (this returns ascent directions).

    Args:
      learning_rate: the initial step size, >= 0.
      eta_minus: the factor shrinking a step after a sign flip, in [0, 1].
      eta_plus: the factor growing a step while the sign holds, >= 1.
      min_step_size: the least step size, >= 0.
      max_step_size: the largest step size, >= min_step_size.

    Raises:
      ValueError: if a hyperparameter is out of range.
      TypeError: if a hyperparameter is a schedule or not a number.

    References:
      Riedmiller & Braun, *A Direct Adaptive Method for Faster Backpropagation
      Learning: The RPROP Algorithm*, 1993,
      https://ieeexplore.ieee.org/document/298623. Igel & Hüsken, *Empirical
      Evaluation of the Improved Rprop Learning Algorithms*, 2003,
      https://doi.org/10.1016/S0925-2312(01)00700-7

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_rprop(learning_rate=0.1)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -1.0]), state)
      >>> u, state = tx.update(jnp.array([1.0, 1.0]), state)  # the second entry flipped
      >>> u
      Array([0.12, 0.  ], dtype=float32)
      >>> state.step_sizes
      Array([0.12, 0.05], dtype=float32)
    """

    learning_rate: jax.typing.ArrayLike = hyperparameter(shown=True)
    eta_minus: jax.typing.ArrayLike = hyperparameter(default=0.5)
    eta_plus: jax.typing.ArrayLike = hyperparameter(default=1.2)
    min_step_size: jax.typing.ArrayLike = hyperparameter(default=1e-6)
    max_step_size: jax.typing.ArrayLike = hyperparameter(default=50.0, finite=False)

    def __post_init__(self) -> None:
        _check_arguments(self, "scale_by_rprop")

    def init(self, params: Params) -> OptState:
        return ScaleByRpropState(
            step_sizes=trees.leaf_map(lambda p: trees.filled_like(p, self.learning_rate), params),
            prev_updates=trees.zeros_like(params),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByRpropState, "scale_by_rprop")
        checks.check_trees_match(
            updates, state.step_sizes, tree_name="gradients", reference_name="optimizer state"
        )

        def leaf(g: jax.Array, step: jax.Array, prev: jax.Array) -> tuple[jax.Array, ...]:
            # In float32 or wider: in bfloat16, eta_plus = 1.2 would be 1.203125.
            dtype = numerics.compute_dtype(g.dtype, step.dtype, prev.dtype)
            g_wide, step_wide = g.astype(dtype), step.astype(dtype)
            agreement = g_wide * prev.astype(dtype)
            factor = jnp.where(agreement > 0, self.eta_plus, self.eta_minus)
            new_step = jnp.where(
                agreement == 0,
                step_wide,
                jnp.clip(step_wide * factor, min=self.min_step_size, max=self.max_step_size),
            )
            update = jnp.where(agreement < 0, jnp.zeros_like(g_wide), new_step * jnp.sign(g_wide))
            return update.astype(g.dtype), new_step.astype(step.dtype), update.astype(prev.dtype)

        new_updates, step_sizes, prev_updates = trees.leaf_map_n(
            3, leaf, updates, state.step_sizes, state.prev_updates
        )
        return new_updates, ScaleByRpropState(step_sizes=step_sizes, prev_updates=prev_updates)


@value_class
class rprop(Alias):  # noqa: N801 - Optax's name
    """Rprop: descent by per-parameter step sizes adapted to the gradient's sign changes.

    Update rule: ``u <- -scale_by_rprop(g)`` (see :class:`~gradtx.scale_by_rprop`).
    The chain is Optax's, ``scale_by_rprop -> scale(-1)``.

    Args:
      learning_rate: the initial step size, >= 0.
      eta_minus: the factor shrinking a step after a sign flip, in [0, 1].
      eta_plus: the factor growing a step while the sign holds, >= 1.
      min_step_size: the least step size, >= 0.
      max_step_size: the largest step size, >= min_step_size.

    Raises:
      ValueError: if a hyperparameter is out of range.
      TypeError: if a hyperparameter is a schedule or not a number.

    References:
      Riedmiller & Braun, *A Direct Adaptive Method for Faster Backpropagation
      Learning: The RPROP Algorithm*, 1993,
      https://ieeexplore.ieee.org/document/298623

    Example:
      >>> import gradtx
      >>> gradtx.rprop(1e-3)
      rprop(learning_rate=0.001)
    """

    learning_rate: jax.typing.ArrayLike = hyperparameter(shown=True)
    eta_minus: jax.typing.ArrayLike = hyperparameter(default=0.5)
    eta_plus: jax.typing.ArrayLike = hyperparameter(default=1.2)
    min_step_size: jax.typing.ArrayLike = hyperparameter(default=1e-6)
    max_step_size: jax.typing.ArrayLike = hyperparameter(default=50.0, finite=False)

    def __post_init__(self) -> None:
        _check_arguments(self, "rprop")

    def expand(self) -> chain:
        return chain(
            scale_by_rprop(
                self.learning_rate,
                self.eta_minus,
                self.eta_plus,
                self.min_step_size,
                self.max_step_size,
            ),
            scale(-1.0),
        )
