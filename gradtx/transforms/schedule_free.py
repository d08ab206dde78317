"""Schedule-Free learning: interpolation and averaging in place of momentum and decay.

:class:`schedule_free` wraps a base optimizer (without momentum);
:class:`schedule_free_sgd` and :class:`schedule_free_adamw` are Optax's two
ready-made ones. Evaluate the model at :func:`schedule_free_eval_params`.
"""

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.aliases import documents_non_finite, sgd
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
from gradtx.combine import as_member, chain
from gradtx.schedules import warmup_constant_schedule
from gradtx.transforms.rms import scale_by_rms
from gradtx.transforms.scale import evaluate, scale_by_learning_rate
from gradtx.transforms.weight_decay import add_decayed_weights


class ScheduleFreeState(NamedTuple):
    """State of :class:`schedule_free` (Optax's layout).

    Attributes:
      b1: the interpolation coefficient, kept for
        :func:`schedule_free_eval_params`.
      weight_sum: the sum of the averaging weights ``max_lr**weight_lr_power``
        so far.
      step_count: int32 step number, starting at 1 (saturates at 2**31 - 1);
        the learning-rate schedule is read at it.
      max_lr: the largest learning rate seen so far.
      base_optimizer_state: the base optimizer's state.
      z: the base optimizer's iterate, one array per parameter, in
        ``state_dtype`` (or the params').
    """

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: OptState
    z: Params


def _scalar_dtype(params: Params) -> Any:
    """The dtype of the state's scalars: the params' narrowest, at least float32.

    Optax stores them in the params' narrowest dtype; in bfloat16 ``weight_sum``
    would stop growing after a few hundred steps (its ulp exceeds a weight),
    freezing the averaging coefficient.
    """
    dtypes = [jnp.result_type(leaf) for leaf in trees.leaves(params)]
    real = [jnp.finfo(d).dtype for d in dtypes if jnp.issubdtype(d, jnp.inexact)]
    if not real:
        return jnp.dtype(jnp.float32)
    return numerics.compute_dtype(min(real, key=lambda d: d.itemsize))


def schedule_free_eval_params(state: OptState, params: Params) -> Params:
    """The parameters to evaluate a :class:`schedule_free` model at (Optax's function).

    Training runs at the interpolation ``y = b1 * x + (1 - b1) * z``; the
    averaged sequence ``x``, the one to evaluate, is recovered as::

        x = (y - (1 - b1) * z) / b1

    Args:
      state: the state of :class:`schedule_free` (a :class:`ScheduleFreeState`,
        gradtx's or Optax's).
      params: the current (training) parameters ``y``.

    Returns:
      ``x``, with the params' tree and dtypes.

    Raises:
      ValueError: if ``state`` is not a schedule-free state.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.schedule_free_sgd(0.5)
      >>> params = jnp.array([1.0, 2.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state, params)  # the gradient of |p|**2 / 2
      >>> params = gradtx.apply_updates(params, updates)
      >>> gradtx.schedule_free_eval_params(state, params)
      Array([0.5, 1. ], dtype=float32)
    """
    b1 = getattr(state, "b1", None)
    z = getattr(state, "z", None)
    if b1 is None or z is None:
        raise ValueError(
            "schedule_free_eval_params needs the state of schedule_free (a "
            f"ScheduleFreeState), got a {type(state).__name__}"
        )
    checks.check_trees_match(params, z, tree_name="params", reference_name="optimizer state")

    def leaf(y: jax.Array, z: jax.Array) -> jax.Array:
        dtype = numerics.compute_dtype(y.dtype, z.dtype, jnp.result_type(b1))
        coefficient = jnp.asarray(b1, dtype)
        x = (y.astype(dtype) - (1 - coefficient) * z.astype(dtype)) / coefficient
        return x.astype(y.dtype)

    return trees.leaf_map(leaf, params, z)


@documents_non_finite
@value_class
class schedule_free(Transformation):  # noqa: N801 - Optax's name
    """Makes a base optimizer schedule-free (Defazio et al., 2024).

    The base optimizer (without momentum: momentum is replaced by the
    interpolation) moves ``z``; the parameters trained on are ``y``; ``x``, the
    weighted average of the ``z``, is the one to evaluate
    (:func:`schedule_free_eval_params`). With ``t`` the step, starting at 1::

        max_lr <- max(max_lr, lr(t));  w = max_lr**weight_lr_power
        c = w / (weight_sum + w);      weight_sum <- weight_sum + w
        z <- z + base_optimizer(g at y)
        x <- (1 - c) * x + c * z       (x recomputed from y and the old z)
        y <- b1 * x + (1 - b1) * z     (the update is the new y minus y)

    No decaying schedule is needed (use a warmup); ``x`` is never stored. The
    scalars of the state are kept in float32 or wider (Optax: in the params'
    dtype); ``z`` is updated in float32 or wider and stored in
    ``state_dtype`` (or the params' dtype).

    Args:
      base_optimizer: the optimizer computing the steps of ``z`` (gradtx or
        Optax), e.g. ``sgd(lr)`` or Adam with ``b1=0``.
      learning_rate: the base optimizer's learning rate (a number or a
        schedule, with warmup but no decay), >= 0; it sets the averaging weights.
      b1: the interpolation coefficient, in (0, 1].
      weight_lr_power: the power of ``max_lr`` in the averaging weights, >= 0
        (down-weights the warmup steps).
      state_dtype: storage dtype of ``z``; None keeps the params'.

    Raises:
      TypeError: if ``base_optimizer`` is not a transformation.
      ValueError: if a hyperparameter is out of range, or at update time if
        params are not given.

    References:
      Defazio et al., *The Road Less Scheduled*, 2024,
      https://arxiv.org/abs/2405.15682

    Example:
      >>> import gradtx
      >>> gradtx.schedule_free(gradtx.sgd(0.1), learning_rate=0.1)
      schedule_free(base_optimizer=sgd(learning_rate=0.1), learning_rate=0.1, b1=0.9)
    """

    base_optimizer: Transformation = hyperparameter(shown=True)
    learning_rate: ScalarOrSchedule = hyperparameter(shown=True)
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    weight_lr_power: jax.typing.ArrayLike = hyperparameter(default=2.0)
    state_dtype: str | None = static_field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_optimizer", as_member(self.base_optimizer, "base_optimizer"))
        checks.check_number("learning_rate", self.learning_rate, low=0.0)
        checks.check_number("b1", self.b1, low=0.0, high=1.0, low_inclusive=False)
        checks.check_number("weight_lr_power", self.weight_lr_power, low=0.0)
        object.__setattr__(
            self, "state_dtype", numerics.canonical_dtype(self.state_dtype, "state_dtype")
        )

    def init(self, params: Params) -> OptState:
        dtype = _scalar_dtype(params)
        # A copy, not params itself: z and the params may both be donated to a
        # jitted step.
        z = trees.leaf_map(lambda p: jnp.array(p, dtype=self.state_dtype or p.dtype), params)
        return ScheduleFreeState(
            b1=jnp.asarray(self.b1, dtype),
            weight_sum=jnp.zeros([], dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=self.base_optimizer.init(params),
            z=z,
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        if params is None:
            raise ValueError(checks.PARAMS_REQUIRED.format(name="schedule_free"))
        checks.check_state_fields(state, ScheduleFreeState, "schedule_free")
        checks.check_trees_match(
            updates, state.z, tree_name="gradients", reference_name="optimizer state"
        )
        dtype = jnp.result_type(state.max_lr)
        learning_rate = jnp.asarray(evaluate(self.learning_rate, state.step_count), dtype)
        max_lr = jnp.maximum(state.max_lr, learning_rate)
        weight = max_lr ** jnp.asarray(self.weight_lr_power, dtype)
        weight_sum = state.weight_sum + weight
        # Optax's guard: a zero learning rate (warmup's first step) gives 0/0.
        coefficient = jnp.where(
            jnp.isnan(weight) | jnp.isnan(weight_sum),
            jnp.full(weight.shape, jnp.nan, dtype),
            jnp.nan_to_num(weight / weight_sum, nan=0.0, posinf=jnp.inf),
        )
        base_updates, base_state = self.base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra_args
        )

        def leaf(
            z: jax.Array, step: jax.Array, y: jax.Array, g: jax.Array
        ) -> tuple[jax.Array, jax.Array]:
            wide = numerics.compute_dtype(z.dtype, step.dtype, y.dtype, dtype)
            b1 = jnp.asarray(self.b1, wide)
            c = coefficient.astype(wide)
            z_old, y_wide = z.astype(wide), y.astype(wide)
            z_stored = (z_old + step.astype(wide)).astype(z.dtype)
            # The stored z, rounded to its dtype, enters y: the next step then
            # recovers x from y and z exactly (as Optax, whose z is rounded too).
            z_new = z_stored.astype(wide)
            # x recomputed rather than stored: the same memory as the base
            # optimizer, and right even if y was changed by another transformation.
            x_old = (y_wide - (1 - b1) * z_old) / b1
            x_new = (1 - c) * x_old + c * z_new
            y_new = b1 * x_new + (1 - b1) * z_new
            return (y_new - y_wide).astype(g.dtype), z_stored

        new_updates, z = trees.leaf_map_n(2, leaf, state.z, base_updates, params, updates)
        return new_updates, ScheduleFreeState(
            b1=state.b1,
            weight_sum=weight_sum,
            step_count=numerics.safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=z,
        )


def _check_warmup_steps(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"warmup_steps must be None or an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"warmup_steps must be None or an int >= 1, got {value!r}")


class _ScheduleFreeAlias(Transformation):
    """A ready-made :class:`schedule_free` optimizer; init and update delegate to it."""

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    learning_rate: ScalarOrSchedule
    warmup_steps: int | None
    b1: jax.typing.ArrayLike
    weight_lr_power: jax.typing.ArrayLike
    state_dtype: str | None

    def _check(self) -> None:
        _check_warmup_steps(self.warmup_steps)
        if self.warmup_steps is not None and callable(self.learning_rate):
            raise TypeError(
                "learning_rate must be a number when warmup_steps is given (the warmup "
                f"schedule is built from it), got {self.learning_rate!r}"
            )
        object.__setattr__(
            self, "state_dtype", numerics.canonical_dtype(self.state_dtype, "state_dtype")
        )
        self.expand()  # validates every argument with its own name

    def _schedule(self) -> ScalarOrSchedule:
        """The learning rate, with Optax's linear warmup from 0 if ``warmup_steps`` is set."""
        learning_rate = self.learning_rate
        if self.warmup_steps is None:
            return learning_rate
        assert not callable(learning_rate)  # refused with warmup_steps by _check
        return warmup_constant_schedule(0.0, learning_rate, self.warmup_steps)

    def _base_optimizer(self, learning_rate: ScalarOrSchedule) -> Transformation:
        raise NotImplementedError

    def expand(self) -> schedule_free:
        """Returns the :class:`schedule_free` wrapper this optimizer stands for."""
        learning_rate = self._schedule()
        return schedule_free(
            self._base_optimizer(learning_rate),
            learning_rate,
            self.b1,
            self.weight_lr_power,
            self.state_dtype,
        )

    def init(self, params: Params) -> OptState:
        return self.expand().init(params)

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        return self.expand().update(updates, state, params, **extra_args)


@documents_non_finite
@value_class
class schedule_free_sgd(_ScheduleFreeAlias):  # noqa: N801 - Optax's name
    """Schedule-Free SGD: :class:`schedule_free` around plain SGD.

    Update rule: :class:`schedule_free` with base optimizer
    ``u <- -lr(t) * (g + weight_decay * y)``; with ``warmup_steps`` the
    learning rate ramps linearly from 0 to ``learning_rate``
    (:class:`~gradtx.warmup_constant_schedule`). The wrapped chain is Optax's,
    ``[add_decayed_weights(weight_decay) ->] sgd(lr)`` (the decay step is there
    whenever ``weight_decay`` is not None), so the state is too.

    Args:
      learning_rate: the SGD learning rate, >= 0 (a schedule if
        ``warmup_steps`` is None).
      warmup_steps: the length of the linear warmup, an int >= 1, or None.
      b1: the interpolation coefficient, in (0, 1].
      weight_decay: L2 weight decay (multiplied by the learning rate), >= 0,
        or None for none.
      weight_lr_power: the power of ``max_lr`` in the averaging weights, >= 0.
      state_dtype: storage dtype of ``z``; None keeps the params'.

    Raises:
      TypeError: if ``warmup_steps`` is not an int, or is given with a
        schedule as ``learning_rate``.
      ValueError: if a hyperparameter is out of range.

    References:
      Defazio et al., *The Road Less Scheduled*, 2024,
      https://arxiv.org/abs/2405.15682

    Example:
      >>> import gradtx
      >>> gradtx.schedule_free_sgd(1.0, warmup_steps=10)
      schedule_free_sgd(learning_rate=1.0, warmup_steps=10, b1=0.9)
    """

    learning_rate: ScalarOrSchedule = hyperparameter(default=1.0, shown=True)
    warmup_steps: int | None = static_field(default=None)
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    weight_decay: jax.typing.ArrayLike | None = hyperparameter(default=None)
    weight_lr_power: jax.typing.ArrayLike = hyperparameter(default=2.0)
    state_dtype: str | None = static_field(default=None)

    def __post_init__(self) -> None:
        self._check()

    def _base_optimizer(self, learning_rate: ScalarOrSchedule) -> Transformation:
        # Optax's sgd without momentum: identity -> scale_by_learning_rate.
        optimizer: Transformation = sgd(learning_rate)
        if self.weight_decay is not None:
            optimizer = chain(add_decayed_weights(self.weight_decay), optimizer)
        return optimizer


@documents_non_finite
@value_class
class schedule_free_adamw(_ScheduleFreeAlias):  # noqa: N801 - Optax's name
    """Schedule-Free AdamW: :class:`schedule_free` around AdamW without momentum.

    Update rule: :class:`schedule_free` with base optimizer ``u <- -lr(t) *
    (g / (sqrt(nu_hat) + eps) + weight_decay * y)``, ``nu`` the bias-corrected
    moving average of ``|g|**2``. The wrapped chain is Optax's,
    ``scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True) ->
    add_decayed_weights(weight_decay) -> scale_by_learning_rate(lr)`` (Adam
    with ``b1=0`` without its zero first moment), so the state is too.

    Args:
      learning_rate: the AdamW learning rate, >= 0 (a schedule if
        ``warmup_steps`` is None).
      warmup_steps: the length of the linear warmup from 0, an int >= 1, or None.
      b1: the interpolation coefficient, in (0, 1].
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      weight_decay: decoupled weight decay (multiplied by the learning rate), >= 0.
      weight_lr_power: the power of ``max_lr`` in the averaging weights, >= 0.
      state_dtype: storage dtype of ``z``; None keeps the params'.

    Raises:
      TypeError: if ``warmup_steps`` is not an int, or is given with a
        schedule as ``learning_rate``.
      ValueError: if a hyperparameter is out of range.

    References:
      Defazio et al., *The Road Less Scheduled*, 2024,
      https://arxiv.org/abs/2405.15682

    Example:
      >>> import gradtx
      >>> gradtx.schedule_free_adamw(1e-3, warmup_steps=100)
      schedule_free_adamw(learning_rate=0.001, warmup_steps=100, b1=0.9, b2=0.999, eps=1e-08)
    """

    learning_rate: ScalarOrSchedule = hyperparameter(default=0.0025, shown=True)
    warmup_steps: int | None = static_field(default=None)
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    weight_decay: jax.typing.ArrayLike = hyperparameter(default=0.0)
    weight_lr_power: jax.typing.ArrayLike = hyperparameter(default=2.0)
    state_dtype: str | None = static_field(default=None)

    def __post_init__(self) -> None:
        # Checked here too: scale_by_rms would name them decay and eps.
        checks.check_number("b2", self.b2, low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("eps", self.eps, low=0.0)
        self._check()

    def _base_optimizer(self, learning_rate: ScalarOrSchedule) -> Transformation:
        return chain(
            scale_by_rms(decay=self.b2, eps=self.eps, eps_in_sqrt=False, bias_correction=True),
            add_decayed_weights(self.weight_decay),
            scale_by_learning_rate(learning_rate),
        )
