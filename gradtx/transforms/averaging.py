"""Averaging: an exponential moving average of updates, and the lookahead wrapper."""

import operator
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.base import (
    OptState,
    Params,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import as_member


def check_not_schedule(name: str, value: Any, owner: str) -> None:
    """Raises TypeError naming ``name`` if ``value`` is a callable (a schedule).

    Args:
      name: the argument's name, used in the message.
      value: the argument.
      owner: the transformation's name, used in the message.

    Raises:
      TypeError: if ``value`` is callable: ``owner`` takes a number here, as in Optax.
    """
    if callable(value):
        raise TypeError(
            f"{name} must be a number or an array ({owner} takes no schedule here), got {value!r}"
        )


class EmaState(NamedTuple):
    """State of :class:`ema`.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      ema: the moving average, one array per parameter (None where the
        parameter is None).
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    ema: Updates


@value_class
class ema(Transformation):  # noqa: N801 - Optax's name
    """Replaces updates by an exponential moving average of them.

    Update rule, with ``t`` the step (starting at 1)::

        m <- decay * m + (1 - decay) * g
        u <- m / (1 - decay**t)          (debias=True)
        u <- m                           (debias=False)

    Unlike :class:`trace` (``m <- decay * m + g``), the new update enters with
    weight ``1 - decay``, so a constant gradient averages to itself. The average
    is computed in float32 or wider, stored in ``accumulator_dtype`` (or the
    params' dtype) and returned in each gradient's dtype.

    Args:
      decay: the decay rate, in [0, 1]. With ``debias=True`` a decay of 1
        divides by zero, as in Optax.
      debias: divide by ``1 - decay**t``, removing the bias towards the zero
        initial value.
      accumulator_dtype: storage dtype of the average; None keeps the params'.

    Raises:
      ValueError: if ``decay`` is outside [0, 1].
      TypeError: if ``decay`` is not a number (e.g. a schedule).

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.ema(decay=0.5, debias=False)
      >>> u, s = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
      >>> tx.update(jnp.ones(2), s)[0]
      Array([0.75, 0.75], dtype=float32)
    """

    decay: jax.typing.ArrayLike = hyperparameter(shown=True)
    debias: bool = static_field(default=True)
    accumulator_dtype: str | None = static_field(default=None)

    def __post_init__(self) -> None:
        check_not_schedule("decay", self.decay, "ema")
        checks.check_number("decay", self.decay, low=0.0, high=1.0)
        object.__setattr__(
            self,
            "accumulator_dtype",
            numerics.canonical_dtype(self.accumulator_dtype, "accumulator_dtype"),
        )

    def init(self, params: Params) -> OptState:
        return EmaState(
            count=numerics.zero_count(),
            ema=trees.zeros_like(params, dtype=self.accumulator_dtype),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, EmaState, "ema")
        checks.check_trees_match(
            updates, state.ema, tree_name="gradients", reference_name="optimizer state"
        )
        count = numerics.safe_increment(state.count)
        correct = numerics.BiasCorrection(count)

        def leaf(g: jax.Array, stored: jax.Array) -> tuple[jax.Array, jax.Array]:
            # In the storage dtype the decay itself would be rounded (in
            # bfloat16, 0.999 is 1.0 and the average would never move).
            dtype = numerics.compute_dtype(g.dtype, stored.dtype, jnp.result_type(self.decay))
            # An array before ``1 - decay``: a Python float would be subtracted
            # in double precision eagerly but in float32 under jit.
            decay = jnp.asarray(self.decay, dtype)
            average = numerics.update_moment(g, stored, decay, dtype=dtype)
            update = correct(average, decay) if self.debias else average
            return update.astype(g.dtype), average.astype(stored.dtype)

        new_updates, new_ema = trees.leaf_map_n(2, leaf, updates, state.ema)
        return new_updates, EmaState(count=count, ema=new_ema)


class LookaheadState(NamedTuple):
    """State of :class:`lookahead`.

    Attributes:
      fast_state: the state of the fast optimizer.
      steps_since_sync: int32 number of fast steps since the slow and fast
        parameters were last synchronized, in ``[0, sync_period)``.
    """

    fast_state: OptState
    steps_since_sync: jax.Array


class LookaheadParams(NamedTuple):
    """The two copies of the parameters that :class:`lookahead` updates.

    Compute the gradients at ``fast``; evaluate and serve ``slow``, which
    generalizes better (Zhang et al., 2019).

    Attributes:
      fast: the fast parameters, moved by the fast optimizer at every step.
      slow: the slow parameters, moved towards ``fast`` every ``sync_period`` steps.
    """

    fast: Params
    slow: Params

    @classmethod
    def init_synced(cls, params: Params) -> "LookaheadParams":
        """Both copies set to ``params``: the usual start of training.

        Args:
          params: the initial parameters.

        Returns:
          ``LookaheadParams(fast=params, slow=params)``.
        """
        return cls(fast=params, slow=params)


_NOT_LOOKAHEAD_PARAMS = (
    "lookahead needs params as gradtx.LookaheadParams(fast=..., slow=...) (start with "
    "gradtx.LookaheadParams.init_synced(params)), got {kind}"
)


@value_class
class lookahead(Transformation):  # noqa: N801 - Optax's name
    """Lookahead: k fast steps forward, then the slow weights take a step towards them.

    The parameters are a :class:`LookaheadParams` pair. At every step the fast
    optimizer moves ``fast``; on every ``sync_period``-th step, after that fast
    step, ``slow`` moves a fraction of the way to ``fast`` and ``fast`` is reset
    to it::

        fast <- fast + fast_optimizer(g)                     (every step)
        slow <- slow + slow_step_size * (fast - slow)        (every k-th step)
        fast <- slow                                         (every k-th step)

    Both are returned as one update, a :class:`LookaheadParams` of the same type
    as ``params``, to apply unchanged with :func:`gradtx.apply_updates`.
    Gradients must be taken with respect to ``params.fast``.

    Args:
      fast_optimizer: the inner optimizer (a gradtx transformation, or an
        Optax one, which is wrapped in :class:`gradtx.foreign`).
      sync_period: k, the number of fast steps between synchronizations, an
        integer >= 1. Structural: it is a Python int, never traced (Optax too
        needs it concrete to check it).
      slow_step_size: alpha, the fraction of the way the slow parameters move,
        in [0, 1].
      reset_state: reinitialize the fast optimizer's state at each
        synchronization.

    Raises:
      ValueError: if ``sync_period`` < 1 or ``slow_step_size`` is outside [0, 1].
      TypeError: if ``sync_period`` is not an integer, or ``fast_optimizer``
        not a transformation.

    References:
      Zhang, Lucas, Hinton & Ba, *Lookahead Optimizer: k steps forward, 1 step
      back*, 2019, https://arxiv.org/abs/1907.08610

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.lookahead(gradtx.sgd(0.5), sync_period=2, slow_step_size=0.5)
      >>> params = gradtx.LookaheadParams.init_synced(jnp.ones(2))
      >>> state = tx.init(params)
      >>> for _ in range(2):
      ...     updates, state = tx.update(jnp.ones(2), state, params)
      ...     params = gradtx.apply_updates(params, updates)
      >>> params.slow  # halfway from 1 to the fast weights' 0
      Array([0.5, 0.5], dtype=float32)
    """

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    fast_optimizer: Transformation = hyperparameter(shown=True)
    sync_period: int = static_field(shown=True)
    slow_step_size: jax.typing.ArrayLike = hyperparameter(shown=True)
    reset_state: bool = static_field(default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fast_optimizer", as_member(self.fast_optimizer, "fast_optimizer"))
        object.__setattr__(self, "sync_period", _as_period(self.sync_period))
        check_not_schedule("slow_step_size", self.slow_step_size, "lookahead")
        checks.check_number("slow_step_size", self.slow_step_size, low=0.0, high=1.0)

    def init(self, params: Params) -> OptState:
        fast = getattr(params, "fast", None)
        if fast is None:
            # Optax accepts the bare parameters here too, with a warning.
            warnings.warn(
                "lookahead.init got params without a 'fast' attribute; taking them as "
                "the fast parameters. Pass gradtx.LookaheadParams.init_synced(params).",
                stacklevel=2,
            )
            fast = params
        return LookaheadState(
            fast_state=self.fast_optimizer.init(fast),
            steps_since_sync=numerics.zero_count(),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        checks.check_state_fields(state, LookaheadState, "lookahead")
        if params is None:
            raise ValueError(checks.PARAMS_REQUIRED.format(name="lookahead"))
        if not (hasattr(params, "fast") and hasattr(params, "slow")):
            raise TypeError(_NOT_LOOKAHEAD_PARAMS.format(kind=type(params).__name__))
        if hasattr(updates, "fast") and hasattr(updates, "slow"):
            raise TypeError(
                "lookahead takes the gradients with respect to params.fast only, got "
                f"a {type(updates).__name__} of fast and slow gradients"
            )
        checks.check_trees_match(
            updates, params.fast, tree_name="gradients", reference_name="params.fast"
        )
        checks.check_trees_match(
            params.slow, params.fast, tree_name="params.slow", reference_name="params.fast"
        )
        fast_updates, fast_state = self.fast_optimizer.update(
            updates, state.fast_state, params.fast, **extra_args
        )
        sync_next = state.steps_since_sync == self.sync_period - 1

        def leaf(u: jax.Array, fast: jax.Array, slow: jax.Array) -> tuple[jax.Array, jax.Array]:
            dtype = numerics.compute_dtype(
                u.dtype, fast.dtype, slow.dtype, jnp.result_type(self.slow_step_size)
            )
            step_size = jnp.asarray(self.slow_step_size, dtype)
            synced = sync_next.astype(dtype)
            u_wide = u.astype(dtype)
            # The fast weights after this step, measured from the slow ones.
            difference = fast.astype(dtype) + u_wide - slow.astype(dtype)
            slow_update = step_size * synced * difference
            fast_update = u_wide - synced * (1 - step_size) * difference
            return fast_update.astype(u.dtype), slow_update.astype(slow.dtype)

        new_fast, new_slow = trees.leaf_map_n(2, leaf, fast_updates, params.fast, params.slow)

        if self.reset_state:
            # A select rather than Optax's blend (1 - s) * state + s * init:
            # equal for finite values, but an inf or NaN in the old state
            # cannot leak into the fresh one (0 * inf is NaN), and a PRNG key
            # in the state (add_noise's) can be reset too.
            initial = self.fast_optimizer.init(params.fast)
            fast_state = jax.tree.map(
                lambda current, fresh: jnp.where(sync_next, fresh, current), fast_state, initial
            )

        steps_since_sync = (state.steps_since_sync + 1) % self.sync_period
        return _like(params, new_fast, new_slow), LookaheadState(
            fast_state=fast_state, steps_since_sync=steps_since_sync
        )


def _as_period(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, jax.core.Tracer):
        raise TypeError(f"sync_period must be a concrete integer, got {value!r}")
    try:
        period = operator.index(value)
    except TypeError as error:
        raise TypeError(f"sync_period must be an integer, got {value!r}") from error
    if period < 1:
        raise ValueError(f"sync_period must be >= 1, got {value!r}")
    return period


def _like(params: Any, fast: Any, slow: Any) -> Any:
    """A pair of updates of the same type as ``params``, so the two trees match."""
    if isinstance(params, tuple) and hasattr(params, "_replace"):
        return params._replace(fast=fast, slow=slow)
    return LookaheadParams(fast=fast, slow=slow)
