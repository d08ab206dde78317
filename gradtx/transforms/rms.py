"""Scaling by root mean squares of past gradients: Adagrad's sum, RMSProp's averages."""

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
from gradtx.transforms.momentum import trace
from gradtx.transforms.scale import identity, scale_by_learning_rate


class ScaleByRssState(NamedTuple):
    """State of :class:`scale_by_rss`.

    Attributes:
      sum_of_squares: the sum of squared gradient magnitudes so far, plus the
        initial accumulator value.
    """

    sum_of_squares: Updates


class ScaleByRmsState(NamedTuple):
    """State of :class:`scale_by_rms` without bias correction.

    Attributes:
      nu: moving average of squared gradient magnitudes.
    """

    nu: Updates


class ScaleByRmsWithCountState(NamedTuple):
    """State of :class:`scale_by_rms` with ``bias_correction=True``.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      nu: moving average of squared gradient magnitudes.
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    nu: Updates


class ScaleByRStdDevState(NamedTuple):
    """State of :class:`scale_by_stddev` without bias correction.

    Attributes:
      mu: moving average of gradients.
      nu: moving average of squared gradient magnitudes.
    """

    mu: Updates
    nu: Updates


class ScaleByRStdDevWithCountState(NamedTuple):
    """State of :class:`scale_by_stddev` with ``bias_correction=True``.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      mu: moving average of gradients.
      nu: moving average of squared gradient magnitudes.
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    mu: Updates
    nu: Updates


@value_class
class scale_by_rss(Transformation):  # noqa: N801 - Optax's name
    """Rescales updates by the root of the sum of all squared gradients so far (Adagrad).

    Update rule::

        s <- s + |g|**2                   (s starts at initial_accumulator_value)
        u <- g / sqrt(s + eps)            (0 where s == 0)

    The sum is computed in float32 or wider and stored in the params' dtype.

    Args:
      initial_accumulator_value: the starting value of the sum, >= 0.
      eps: added to the sum inside the square root, >= 0.

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Duchi et al., *Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization*, 2011, https://jmlr.org/papers/v12/duchi11a.html

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
      >>> tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))[0]
      Array([ 1., -1.], dtype=float32)
    """

    initial_accumulator_value: jax.typing.ArrayLike = hyperparameter(default=0.1, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-7, shown=True)

    def __post_init__(self) -> None:
        checks.check_number("initial_accumulator_value", self.initial_accumulator_value, low=0.0)
        checks.check_number("eps", self.eps, low=0.0)

    def init(self, params: Params) -> OptState:
        return ScaleByRssState(
            sum_of_squares=numerics.squared_moment_like(params, fill=self.initial_accumulator_value)
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, ScaleByRssState, "scale_by_rss")
        checks.check_trees_match(
            updates, state.sum_of_squares, tree_name="gradients", reference_name="optimizer state"
        )

        def leaf(g: jax.Array, stored: jax.Array) -> tuple[jax.Array, jax.Array]:
            dtype = numerics.compute_dtype(g.dtype, stored.dtype)
            total = numerics.abs_sq(g.astype(dtype)) + stored.astype(dtype)
            inverse_root = jnp.where(total > 0, jax.lax.rsqrt(total + self.eps), 0.0)
            return (inverse_root * g.astype(dtype)).astype(g.dtype), total.astype(stored.dtype)

        new_updates, sum_of_squares = trees.leaf_map_n(2, leaf, updates, state.sum_of_squares)
        return new_updates, ScaleByRssState(sum_of_squares=sum_of_squares)


def _inverse_root(square: jax.Array, eps: Any, eps_in_sqrt: bool) -> jax.Array:
    """``1 / sqrt(square + eps)`` or ``1 / (sqrt(square) + eps)``, as Optax writes them."""
    if eps_in_sqrt:
        return jax.lax.rsqrt(square + eps)
    return 1 / (jnp.sqrt(square) + eps)


@value_class(pytree=False)
class _RootMeanSquare(Transformation):
    """What :class:`scale_by_rms` and :class:`scale_by_stddev` share, in Optax's order.

    A dataclass base only: ``centered`` says whether the mean gradient's square
    is subtracted. The subclasses are the registered pytrees and define
    ``update`` themselves, which ``value_class`` then compiles when called
    eagerly (it compiles only methods a decorated class defines).
    """

    # A plain class attribute, not a dataclass field (nor a ClassVar pseudo-field).
    centered = False

    decay: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    initial_scale: jax.typing.ArrayLike = hyperparameter(default=0.0)
    eps_in_sqrt: bool = static_field(default=True)
    bias_correction: bool = static_field(default=False)

    def __post_init__(self) -> None:
        # 1 - decay**t is zero at decay == 1: bias correction would divide by it.
        checks.check_number(
            "decay", self.decay, low=0.0, high=1.0, high_inclusive=not self.bias_correction
        )
        checks.check_number("eps", self.eps, low=0.0)
        checks.check_number("initial_scale", self.initial_scale, low=0.0)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def _state_type(self) -> type:
        if self.centered:
            return ScaleByRStdDevWithCountState if self.bias_correction else ScaleByRStdDevState
        return ScaleByRmsWithCountState if self.bias_correction else ScaleByRmsState

    def init(self, params: Params) -> OptState:
        fields: dict[str, Any] = {}
        if self.bias_correction:
            fields["count"] = numerics.zero_count()
        if self.centered:
            fields["mu"] = trees.zeros_like(params)
        fields["nu"] = numerics.squared_moment_like(params, fill=self.initial_scale)
        return self._state_type()(**fields)

    def _scale(self, updates: Updates, state: OptState) -> tuple[Updates, OptState]:
        state_type = self._state_type()
        checks.check_state_fields(state, state_type, self._name)
        checks.check_trees_match(
            updates, state.nu, tree_name="gradients", reference_name="optimizer state"
        )
        decay = self.decay
        count = numerics.safe_increment(state.count) if self.bias_correction else None
        correct = None if count is None else numerics.BiasCorrection(count)

        def corrected(moment: jax.Array) -> jax.Array:
            return moment if correct is None else correct(moment, decay)

        def leaf(g: jax.Array, nu: jax.Array, *mu: jax.Array) -> tuple[jax.Array, ...]:
            dtype = numerics.compute_dtype(g.dtype, nu.dtype, *(m.dtype for m in mu))
            nu_new = numerics.update_moment(
                numerics.abs_sq(g.astype(dtype)), nu, decay, dtype=dtype
            )
            square = corrected(nu_new)
            moments: tuple[jax.Array, ...] = (nu_new.astype(nu.dtype),)
            if mu:
                mu_new = numerics.update_moment(g, mu[0], decay, dtype=dtype)
                square = square - numerics.abs_sq(corrected(mu_new))
                moments += (mu_new.astype(mu[0].dtype),)
            scaling = _inverse_root(square, self.eps, self.eps_in_sqrt)
            return ((scaling * g.astype(dtype)).astype(g.dtype),) + moments

        if self.centered:
            new_updates, nu, mu = trees.leaf_map_n(3, leaf, updates, state.nu, state.mu)
            fields: dict[str, Any] = {"mu": mu, "nu": nu}
        else:
            new_updates, nu = trees.leaf_map_n(2, leaf, updates, state.nu)
            fields = {"nu": nu}
        if count is not None:
            fields["count"] = count
        return new_updates, state_type(**fields)


@value_class
class scale_by_rms(_RootMeanSquare):  # noqa: N801 - Optax's name
    """Rescales updates by the root of a moving average of squared gradients (RMSProp).

    Update rule, with ``t`` the step (starting at 1)::

        nu <- decay * nu + (1 - decay) * |g|**2     (nu starts at initial_scale)
        nu_hat = nu / (1 - decay**t)                (bias_correction=True)
        nu_hat = nu                                 (otherwise)
        u <- g / sqrt(nu_hat + eps)                 (eps_in_sqrt=True)
        u <- g / (sqrt(nu_hat) + eps)               (eps_in_sqrt=False)

    ``scale_by_rms(decay=b2, eps_in_sqrt=False, bias_correction=True)`` is
    ``scale_by_adam(b1=0, b2=b2)`` without a first moment. The average is
    computed in float32 or wider and stored in the params' dtype. The state is
    Optax's: :class:`ScaleByRmsState`, or :class:`ScaleByRmsWithCountState`
    with bias correction.

    Args:
      decay: decay of the moving average, in [0, 1] ([0, 1) with bias correction).
      eps: added to the denominator, >= 0.
      initial_scale: the starting value of the average, >= 0.
      eps_in_sqrt: add ``eps`` inside the square root (Optax's default) or
        outside it (PyTorch's).
      bias_correction: divide the average by ``1 - decay**t``.

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Hinton, *Overview of mini-batch gradient descent* (lecture 6e), 2012,
      https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_rms(decay=0.75, eps=0.0)
      >>> tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))[0]
      Array([ 2., -2.], dtype=float32)
    """

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        return self._scale(updates, state)


@value_class
class scale_by_stddev(_RootMeanSquare):  # noqa: N801 - Optax's name
    """Rescales updates by the root of a centered moving average of squares (centered RMSProp).

    Update rule, with ``t`` the step (starting at 1)::

        mu <- decay * mu + (1 - decay) * g
        nu <- decay * nu + (1 - decay) * |g|**2     (nu starts at initial_scale)
        mu_hat, nu_hat = mu / (1 - decay**t), nu / (1 - decay**t)
                                                    (bias_correction=True)
        v = nu_hat - |mu_hat|**2                    (the gradients' variance)
        u <- g / sqrt(v + eps)                      (eps_in_sqrt=True)
        u <- g / (sqrt(v) + eps)                    (eps_in_sqrt=False)

    The averages are computed in float32 or wider and stored in the params'
    dtype. The state is Optax's: :class:`ScaleByRStdDevState`, or
    :class:`ScaleByRStdDevWithCountState` with bias correction.

    Args:
      decay: decay of the moving averages, in [0, 1] ([0, 1) with bias correction).
      eps: added to the denominator, >= 0.
      initial_scale: the starting value of the second moment, >= 0.
      eps_in_sqrt: add ``eps`` inside the square root (Optax's default) or
        outside it (PyTorch's).
      bias_correction: divide both averages by ``1 - decay**t``.

    Raises:
      ValueError: if a hyperparameter is out of its range.

    References:
      Graves, *Generating Sequences With Recurrent Neural Networks*, 2013,
      https://arxiv.org/abs/1308.0850

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_stddev(decay=0.5, eps=0.0)
      >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0]
      Array([ 2., -2.], dtype=float32)
    """

    centered = True

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        return self._scale(updates, state)


@value_class
class rmsprop(Alias):  # noqa: N801 - Optax's name
    """RMSProp: scaling by a root mean square, the learning rate, optional momentum.

    Update rule: see :class:`~gradtx.scale_by_rms` (or
    :class:`~gradtx.scale_by_stddev` when ``centered``); then
    ``u <- -learning_rate(t) * u``; then, with a momentum, ``m <- u + momentum
    * m`` and ``u <- m`` (or Nesterov's ``u + momentum * m``). The chain is
    Optax's, ``scale_by_rms | scale_by_stddev -> scale_by_learning_rate ->
    trace | identity``, so the state is Optax's too.

    Args:
      learning_rate: a non-negative number or a schedule.
      decay: decay of the moving averages, in [0, 1].
      eps: added to the denominator, >= 0.
      initial_scale: the starting value of the second moment, >= 0 (PyTorch
        uses 0, TF1 uses 1).
      eps_in_sqrt: add ``eps`` inside the square root (Optax's default) or
        outside it (PyTorch's).
      centered: divide by the gradients' standard deviation rather than their
        root mean square.
      momentum: the momentum coefficient, >= 0, or None for none.
      nesterov: use Nesterov momentum.
      bias_correction: divide the moving averages by ``1 - decay**t``.

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Hinton, *Overview of mini-batch gradient descent* (lecture 6e), 2012,
      https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf.
      Graves, *Generating Sequences With Recurrent Neural Networks*, 2013,
      https://arxiv.org/abs/1308.0850

    Example:
      >>> import gradtx
      >>> gradtx.rmsprop(1e-3, centered=True, momentum=0.9)
      rmsprop(learning_rate=0.001, decay=0.9, eps=1e-08, centered=True, momentum=0.9)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    decay: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    initial_scale: jax.typing.ArrayLike = hyperparameter(default=0.0)
    eps_in_sqrt: bool = static_field(default=True)
    centered: bool = static_field(default=False)
    momentum: jax.typing.ArrayLike | None = hyperparameter(default=None)
    nesterov: bool = static_field(default=False)
    bias_correction: bool = static_field(default=False)

    def __post_init__(self) -> None:
        # trace would name it "decay", which here is the averages' decay.
        checks.check_number("momentum", self.momentum, low=0.0)
        self.expand()  # validates the other arguments with their own names

    def expand(self) -> chain:
        scaling = scale_by_stddev if self.centered else scale_by_rms
        momentum: Transformation = identity()
        if self.momentum is not None:
            momentum = trace(decay=self.momentum, nesterov=self.nesterov)
        return chain(
            scaling(
                self.decay,
                self.eps,
                self.initial_scale,
                eps_in_sqrt=self.eps_in_sqrt,
                bias_correction=self.bias_correction,
            ),
            scale_by_learning_rate(self.learning_rate),
            momentum,
        )


@value_class
class adagrad(Alias):  # noqa: N801 - Optax's name
    """Adagrad: ``scale_by_rss`` followed by ``scale_by_learning_rate``.

    Update rule: see :class:`~gradtx.scale_by_rss`; then
    ``u <- -learning_rate(t) * u``.

    Args:
      learning_rate: a non-negative number or a schedule.
      initial_accumulator_value: the starting value of the sum of squares, >= 0.
      eps: added to the sum inside the square root, >= 0.

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Duchi et al., *Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization*, 2011, https://jmlr.org/papers/v12/duchi11a.html

    Example:
      >>> import gradtx
      >>> gradtx.adagrad(0.1)
      adagrad(learning_rate=0.1, initial_accumulator_value=0.1, eps=1e-07)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    initial_accumulator_value: jax.typing.ArrayLike = hyperparameter(default=0.1, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-7, shown=True)

    def __post_init__(self) -> None:
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_rss(self.initial_accumulator_value, self.eps),
            scale_by_learning_rate(self.learning_rate),
        )
