"""Sign-based descent: the sign of the gradient (signSGD) or of its moving average (Signum)."""

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.aliases import Alias
from gradtx.base import (
    EmptyState,
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
from gradtx.transforms.averaging import check_not_schedule, ema
from gradtx.transforms.scale import scale_by_learning_rate


@value_class
class scale_by_sign(Transformation):  # noqa: N801 - Optax's name
    """Replaces each entry of the updates by its sign.

    Update rule::

        u <- sign(g)          (-1, 0 or 1; g / |g| for a complex entry)

    Keeps no state; the updates keep the gradients' dtype.

    References:
      Bernstein et al., *signSGD: Compressed Optimisation for Non-Convex
      Problems*, 2018, https://arxiv.org/abs/1802.04434

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_sign()
      >>> tx.update(jnp.array([-2.0, 0.0, 0.5]), tx.init(jnp.zeros(3)))[0]
      Array([-1.,  0.,  1.], dtype=float32)
    """

    def init(self, params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        return trees.leaf_map(jnp.sign, updates), state


@value_class
class sign_sgd(Alias):  # noqa: N801 - Optax's name
    """signSGD: descent along the signs of the gradient's entries.

    Update rule, with ``t`` the step count::

        u <- -learning_rate(t) * sign(g)

    The chain is Optax's, ``scale_by_sign -> scale_by_learning_rate``.

    Args:
      learning_rate: a non-negative number or a schedule.

    Raises:
      ValueError: if a numeric ``learning_rate`` is negative.

    References:
      Bernstein et al., *signSGD: Compressed Optimisation for Non-Convex
      Problems*, 2018, https://arxiv.org/abs/1802.04434. Balles et al., *The
      Geometry of Sign Gradient Descent*, 2020, https://arxiv.org/abs/2002.08056

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.sign_sgd(0.1)
      >>> tx.update(jnp.array([-2.0, 0.5]), tx.init(jnp.zeros(2)))[0]
      Array([ 0.1, -0.1], dtype=float32)
    """

    learning_rate: ScalarOrSchedule = hyperparameter(shown=True)

    def __post_init__(self) -> None:
        checks.check_number("learning_rate", self.learning_rate, low=0.0)

    def expand(self) -> chain:
        return chain(scale_by_sign(), scale_by_learning_rate(self.learning_rate))


@value_class
class signum(Alias):  # noqa: N801 - Optax's name
    """Signum: descent along the signs of a moving average of the gradients.

    Update rule, with ``t`` the step count::

        m <- beta * m + (1 - beta) * g
        u <- -learning_rate(t) * sign(m)

    The chain is Optax's, ``ema(beta, debias=False) -> scale_by_sign ->
    scale_by_learning_rate`` (debiasing would not change the sign), so the
    state is Optax's too: ``(EmaState(count, ema), EmptyState(), ...)``.

    Args:
      learning_rate: a non-negative number or a schedule.
      beta: decay of the moving average, in [0, 1].
      accumulator_dtype: storage dtype of the moving average; None keeps the
        params'. It is updated in float32 or wider whatever the storage.

    Raises:
      ValueError: if ``learning_rate`` is negative or ``beta`` is outside [0, 1].
      TypeError: if ``beta`` is a schedule or not a number.

    References:
      Bernstein et al., *signSGD: Compressed Optimisation for Non-Convex
      Problems*, 2018, https://arxiv.org/abs/1802.04434. Zhao et al.,
      *Deconstructing What Makes a Good Optimizer for Language Models*, 2024,
      https://arxiv.org/abs/2407.07972

    Example:
      >>> import gradtx
      >>> gradtx.signum(1e-3)
      signum(learning_rate=0.001, beta=0.9)
    """

    learning_rate: ScalarOrSchedule = hyperparameter(shown=True)
    beta: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    accumulator_dtype: str | None = static_field(default=None)

    def __post_init__(self) -> None:
        checks.check_number("learning_rate", self.learning_rate, low=0.0)
        check_not_schedule("beta", self.beta, "signum")
        checks.check_number("beta", self.beta, low=0.0, high=1.0)
        object.__setattr__(
            self,
            "accumulator_dtype",
            numerics.canonical_dtype(self.accumulator_dtype, "accumulator_dtype"),
        )

    def expand(self) -> chain:
        return chain(
            ema(self.beta, debias=False, accumulator_dtype=self.accumulator_dtype),
            scale_by_sign(),
            scale_by_learning_rate(self.learning_rate),
        )
