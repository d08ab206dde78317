"""AdaMax: Adam with the second moment replaced by an exponentially weighted infinity norm."""

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
from gradtx.transforms.weight_decay import add_decayed_weights


@value_class
class scale_by_adamax(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by AdaMax's bias-corrected mean over a decaying maximum.

    Update rule, with ``t`` the step (starting at 1)::

        mu <- b1 * mu + (1 - b1) * g
        nu <- max(|g| + eps, b2 * nu)
        u <- mu / (1 - b1**t) / nu

    The infinity moment needs no bias correction. The state is Optax's
    ``ScaleByAdamState(count, mu, nu)``; the moments are stored in the params'
    dtype and computed in float32 or wider, the updates are in the gradient's
    dtype.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the infinity moment, in [0, 1] (1 keeps the running maximum).
      eps: added to ``|g|`` before the maximum, >= 0 (keeps the denominator
        away from zero).

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Kingma & Ba, *Adam: A Method for Stochastic Optimization*, 2014, section
      7.1, https://arxiv.org/abs/1412.6980

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adamax()
      >>> updates, state = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> updates.round(4)  # the first step has magnitude 1 whatever the gradient's
      Array([ 1., -1.], dtype=float32)
    """

    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)

    def __post_init__(self) -> None:
        checks.check_number("b1", self.b1, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("b2", self.b2, low=0.0, high=1.0)
        checks.check_number("eps", self.eps, low=0.0)

    def init(self, params: Params) -> OptState:
        return ScaleByAdamState(
            count=numerics.zero_count(),
            mu=trees.zeros_like(params),
            nu=trees.zeros_like(params),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByAdamState, "scale_by_adamax")
        checks.check_trees_match(
            updates, state.mu, tree_name="gradients", reference_name="optimizer state"
        )
        count = numerics.safe_increment(state.count)
        correct = numerics.BiasCorrection(count)
        b1, b2 = self.b1, self.b2

        def leaf(g: jax.Array, mu: jax.Array, nu: jax.Array) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            mu_new = numerics.update_moment(g, mu, b1, dtype=dtype)
            nu_new = jnp.maximum(jnp.abs(g.astype(dtype)) + self.eps, b2 * nu.astype(dtype))
            update = correct(mu_new, b1) / nu_new
            return update.astype(g.dtype), mu_new.astype(mu.dtype), nu_new.astype(nu.dtype)

        new_updates, mu, nu = trees.leaf_map_n(3, leaf, updates, state.mu, state.nu)
        return new_updates, ScaleByAdamState(count=count, mu=mu, nu=nu)


@value_class
class adamax(Alias):  # noqa: N801 - Optax's name
    """AdaMax: ``scale_by_adamax`` followed by ``scale_by_learning_rate``.

    Update rule: see :class:`~gradtx.scale_by_adamax`; then
    ``u <- -learning_rate(t) * u``.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the infinity moment, in [0, 1].
      eps: added to ``|g|`` before the maximum, >= 0.

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Kingma & Ba, *Adam: A Method for Stochastic Optimization*, 2014, section
      7.1, https://arxiv.org/abs/1412.6980

    Example:
      >>> import gradtx
      >>> gradtx.adamax(2e-3)
      adamax(learning_rate=0.002, b1=0.9, b2=0.999, eps=1e-08)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)

    def __post_init__(self) -> None:
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_adamax(self.b1, self.b2, self.eps),
            scale_by_learning_rate(self.learning_rate),
        )


@value_class
class adamaxw(Alias):  # noqa: N801 - Optax's name
    """AdaMaxW: AdaMax with decoupled weight decay.

    Update rule: ``u <- -learning_rate(t) * (adamax_update + weight_decay * p)``,
    the decay applied to the leaves ``mask`` selects. The chain is
    ``scale_by_adamax -> add_decayed_weights -> scale_by_learning_rate``, so the
    weight decay is multiplied by the learning rate (as in PyTorch).

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the infinity moment, in [0, 1].
      eps: added to ``|g|`` before the maximum, >= 0.
      weight_decay: decoupled weight-decay coefficient (or schedule), >= 0.
      mask: which leaves to decay (see :class:`~gradtx.add_decayed_weights`).

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, 2019,
      https://arxiv.org/abs/1711.05101

    Example:
      >>> import gradtx
      >>> gradtx.adamaxw(2e-3, weight_decay=0.01)
      adamaxw(learning_rate=0.002, b1=0.9, b2=0.999, eps=1e-08, weight_decay=0.01)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    weight_decay: ScalarOrSchedule = hyperparameter(default=1e-4, shown=True)
    mask: Any = static_field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", add_decayed_weights(0.0, self.mask).mask)
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_adamax(self.b1, self.b2, self.eps),
            add_decayed_weights(self.weight_decay, self.mask),
            scale_by_learning_rate(self.learning_rate),
        )
