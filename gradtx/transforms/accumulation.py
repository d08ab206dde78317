"""Gradient accumulation: apply an optimizer once every k mini-batches.

:class:`MultiSteps` is Optax's wrapper of the same name, as a value;
:class:`accumulate` is the same rule and the same state under gradtx's names.
:class:`apply_every` is Optax's simpler variant, a member of a chain.
"""

import numbers
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from gradtx import checks, numerics, trees
from gradtx.base import (
    OptState,
    Params,
    ScheduleLike,
    Transformation,
    Updates,
    Value,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import as_member


class ShouldSkipUpdateFunction(Protocol):
    """Decides whether a mini-step's gradients are thrown away (Optax's protocol).

    Called as ``fn(updates, gradient_step, params)``; returns a bool scalar
    (True: skip) and a pytree stored in ``MultiStepsState.skip_state``.
    """

    def __call__(
        self, updates: Updates, gradient_step: jax.typing.ArrayLike, params: Params | None
    ) -> tuple[jax.typing.ArrayLike, Any]: ...


@value_class
class skip_not_finite(Value):  # noqa: N801 - Optax's name
    """A ``should_skip_update_fn`` that skips mini-steps holding a NaN or an Inf.

    An instance is a function with Optax's signature, so it works with both
    :class:`gradtx.MultiSteps` and ``optax.MultiSteps`` (unlike Optax's own,
    it is called for an instance: ``skip_not_finite()``).

    Returns (when called):
      ``(should_skip, {"should_skip": should_skip, "num_not_finite": n})``
      with ``n`` the int32 number of non-finite elements in ``updates``.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> skip, info = gradtx.skip_not_finite()({"w": jnp.array([1.0, jnp.inf])}, 0, None)
      >>> bool(skip), int(info["num_not_finite"])
      (True, 1)
    """

    def __call__(
        self, updates: Updates, gradient_step: jax.typing.ArrayLike, params: Params | None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        del gradient_step, params
        counts = [jnp.sum(jnp.logical_not(jnp.isfinite(leaf))) for leaf in trees.leaves(updates)]
        num_not_finite = jnp.sum(jnp.stack(counts)) if counts else jnp.zeros([], jnp.int32)
        should_skip = num_not_finite > 0
        return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


@value_class
class skip_large_updates(Value):  # noqa: N801 - Optax's name
    """A ``should_skip_update_fn`` that skips mini-steps with a large squared norm.

    Skips when ``not (sum_i ||u_i||**2 < max_squared_norm)``, so a NaN norm is
    skipped too. The norm is computed in float32 or wider; the one stored in
    the state has the gradients' dtype, as in Optax. Usable as
    ``optax.MultiSteps(..., should_skip_update_fn=gradtx.skip_large_updates(42.0))``
    in place of ``functools.partial(optax.skip_large_updates, max_squared_norm=42.0)``.

    Args:
      max_squared_norm: the largest accepted squared global norm, >= 0.

    Raises:
      ValueError: if ``max_squared_norm`` is negative.

    Returns (when called):
      ``(should_skip, {"should_skip": should_skip, "norm_squared": norm_sq})``.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> skip, info = gradtx.skip_large_updates(4.0)(jnp.array([1.0, 2.0]), 0, None)
      >>> bool(skip), float(info["norm_squared"])
      (True, 5.0)
    """

    max_squared_norm: jax.typing.ArrayLike = hyperparameter(finite=False)

    def __post_init__(self) -> None:
        checks.check_number("max_squared_norm", self.max_squared_norm, low=0.0)

    def __call__(
        self, updates: Updates, gradient_step: jax.typing.ArrayLike, params: Params | None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        del gradient_step, params
        leaves = trees.leaves(updates)
        if leaves:
            dtype = jnp.result_type(*leaves)
            wide = jnp.promote_types(dtype, jnp.float32)
            norm_sq = jnp.sum(
                jnp.stack([jnp.sum(numerics.abs_sq(leaf.astype(wide))).real for leaf in leaves])
            )
        else:
            dtype = wide = jnp.dtype(jnp.float32)
            norm_sq = jnp.zeros([], wide)
        should_skip = jnp.logical_not(norm_sq < self.max_squared_norm)
        return should_skip, {"should_skip": should_skip, "norm_squared": norm_sq.astype(dtype)}


class MultiStepsState(NamedTuple):
    """State of :class:`MultiSteps` and :class:`accumulate` (Optax's layout).

    Attributes:
      mini_step: int32 number of gradients accumulated since the last update.
      gradient_step: int32 number of updates handed to the inner optimizer.
      inner_opt_state: the inner optimizer's state.
      acc_grads: the accumulated gradients (their mean, or sum), one array
        per parameter, in the accumulator dtype.
      skip_state: what ``should_skip_update_fn`` last returned besides its
        decision (``()`` without one).
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_opt_state: OptState
    acc_grads: Updates
    skip_state: Any = ()


def _check_every_k(name: str, value: Any) -> Any:
    """An int >= 1 (as a Python int) or a callable schedule; raises naming ``name``."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Integral) or callable(value)):
        raise TypeError(
            f"{name} must be an int >= 1 or a schedule (a callable from the gradient "
            f"step to the number of mini-steps), got {value!r}"
        )
    if callable(value):
        return value
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def _check_skip_fn(value: Any) -> None:
    if isinstance(value, type):
        raise TypeError(
            f"should_skip_update_fn must be a function, got the class {value.__name__}"
            f" (did you mean {value.__name__}(...)?)"
        )
    if value is not None and not callable(value):
        raise TypeError(f"should_skip_update_fn must be None or a function, got {value!r}")


class _MultiStepsRule(Transformation):
    """The accumulation rule shared by :class:`MultiSteps` and :class:`accumulate`."""

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    # Set by each subclass to its own field names.
    _inner_name: str
    _every_k_name: str
    use_grad_mean: bool
    should_skip_update_fn: ShouldSkipUpdateFunction | None
    accumulator_dtype: str | None

    @property
    def inner_opt(self) -> Transformation:
        """The wrapped optimizer (Optax's property)."""
        return getattr(self, self._inner_name)

    def _mini_steps(self, gradient_step: jax.Array) -> Any:
        every_k = getattr(self, self._every_k_name)
        if not callable(every_k):
            return every_k
        k = jnp.asarray(every_k(gradient_step))
        if not jnp.issubdtype(k.dtype, jnp.integer):
            # A float schedule (gradtx's schedules return floats) would turn the
            # int32 counters into floats; 3.9999 from a linear schedule means 4.
            k = jnp.round(k)
        return k.astype(jnp.int32)

    def _skip(self, updates: Updates, gradient_step: jax.Array, params: Params | None) -> Any:
        if self.should_skip_update_fn is None:
            return jnp.array(False, jnp.bool_), ()
        should_skip, skip_state = self.should_skip_update_fn(updates, gradient_step, params)
        should_skip = jnp.asarray(should_skip)
        if (should_skip.dtype, should_skip.shape) != (jnp.bool_, ()):
            raise ValueError(
                "should_skip_update_fn must return a bool scalar array first, got dtype "
                f"{should_skip.dtype} and shape {should_skip.shape}"
            )
        return should_skip, skip_state

    def init(self, params: Params) -> OptState:
        gradient_step = numerics.zero_count()
        _, skip_state = self._skip(trees.zeros_like(params), gradient_step, params)
        return MultiStepsState(
            mini_step=numerics.zero_count(),
            gradient_step=gradient_step,
            inner_opt_state=self.inner_opt.init(params),
            acc_grads=trees.zeros_like(params, self.accumulator_dtype),
            skip_state=skip_state,
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        checks.check_trees_match(
            updates, state.acc_grads, tree_name="gradients", reference_name="optimizer state"
        )
        inner = self.inner_opt
        k = self._mini_steps(state.gradient_step)
        should_skip, skip_state = self._skip(updates, state.gradient_step, params)
        mini_step = numerics.safe_increment(state.mini_step) % k

        def inner_update(accumulated: Updates, inner_state: OptState) -> Any:
            grads = trees.leaf_map(lambda a, u: a.astype(u.dtype), accumulated, updates)
            return inner.update(grads, inner_state, params, **extra_args)

        shapes = jax.eval_shape(inner_update, state.acc_grads, state.inner_opt_state)[0]
        zero_updates = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def skip(acc_grads: Updates, inner_state: OptState) -> tuple[Any, ...]:
            return zero_updates, acc_grads, inner_state, state.mini_step, state.gradient_step

        def accumulate_only(acc_grads: Updates, inner_state: OptState) -> tuple[Any, ...]:
            accumulated = self._accumulate(updates, acc_grads, state.mini_step)
            stored = trees.leaf_map(lambda new, old: new.astype(old.dtype), accumulated, acc_grads)
            return zero_updates, stored, inner_state, mini_step, state.gradient_step

        def accumulate_and_apply(acc_grads: Updates, inner_state: OptState) -> tuple[Any, ...]:
            # The inner optimizer gets the mean before it is rounded to the
            # accumulator's dtype, as in Optax.
            accumulated = self._accumulate(updates, acc_grads, state.mini_step)
            new_updates, new_inner_state = inner_update(accumulated, inner_state)
            new_inner_state = jax.tree.map(
                lambda new, old: jnp.asarray(new).astype(jnp.asarray(old).dtype),
                new_inner_state,
                inner_state,
            )
            # Zeros rather than Optax's (1 - emit) * acc: a NaN that reached the
            # accumulator does not outlive the step that applied it.
            return (
                new_updates,
                trees.zeros_like(acc_grads),
                new_inner_state,
                mini_step,
                numerics.safe_increment(state.gradient_step),
            )

        # A switch, not Optax's select over an always-computed inner update: the
        # inner optimizer runs (and allocates its new state) only every k-th step.
        branch = jnp.where(should_skip, 0, jnp.where(state.mini_step == k - 1, 2, 1))
        new_updates, acc_grads, inner_state, new_mini_step, gradient_step = jax.lax.switch(
            branch,
            (skip, accumulate_only, accumulate_and_apply),
            state.acc_grads,
            state.inner_opt_state,
        )
        return new_updates, MultiStepsState(
            mini_step=new_mini_step,
            gradient_step=gradient_step,
            inner_opt_state=inner_state,
            acc_grads=acc_grads,
            skip_state=skip_state,
        )

    def _accumulate(self, updates: Updates, acc_grads: Updates, count: jax.Array) -> Updates:
        """The new running mean (or sum), in float32 or wider: not yet rounded for storage."""

        def leaf(g: jax.Array, acc: jax.Array) -> jax.Array:
            # Whatever the accumulator's storage dtype, so 1 / (count + 1) is not
            # rounded to bfloat16.
            dtype = jnp.promote_types(jnp.promote_types(g.dtype, acc.dtype), jnp.float32)
            wide_g, wide_acc = g.astype(dtype), acc.astype(dtype)
            if self.use_grad_mean:
                # Welford's running mean, as Optax: acc + (g - acc) / (count + 1).
                new = wide_acc + (wide_g - wide_acc) / (count + 1).astype(dtype)
            else:
                new = wide_g + wide_acc
            return new

        return trees.leaf_map(leaf, updates, acc_grads)

    def has_updated(self, state: OptState) -> jax.Array:
        """Whether the last ``update`` applied the inner optimizer (Optax's method).

        Args:
          state: a :class:`MultiStepsState`.

        Returns:
          A bool scalar.
        """
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> Transformation:
        """The transformation itself: a gradtx value already has ``init``/``update``."""
        return self


@value_class
class MultiSteps(_MultiStepsRule):
    """Accumulates gradients over mini-steps and applies ``opt`` every k-th one.

    Update rule, with ``n`` the mini-step within the current gradient step and
    ``k = every_k_schedule(gradient_step)``::

        acc <- acc + (g - acc) / (n + 1)    (the mean; acc + g if not use_grad_mean)
        if n == k - 1:  u, opt_state <- opt.update(acc, opt_state, params); acc <- 0
        else:           u <- 0

    So ``k`` mini-batches of size ``B`` train like one batch of size ``k*B``
    (for losses that average over the batch). A mini-step that
    ``should_skip_update_fn`` rejects changes nothing but ``skip_state`` and
    returns zero updates. Only one params-sized buffer is kept (the
    accumulator); the inner optimizer runs only on the k-th step. State and
    numbers are ``optax.MultiSteps``'s, so either's checkpoints load into the
    other, except where Optax's arithmetic is a bug or rounds needlessly:

    - between updates the returned zeros are zeros (Optax returns ``0 * u``
      of an inner step it throws away: NaN if that step is not finite);
    - after an update the accumulator is reset to zeros (Optax's
      ``0 * acc`` keeps a NaN that reached it for the rest of training);
    - a bfloat16 accumulator is updated in float32 and rounded once (Optax
      computes the running mean in bfloat16);
    - ``accumulator_dtype=None`` keeps the params' dtype on every step
      (Optax's accumulator turns float32 after the first one).

    Args:
      opt: the optimizer to wrap (gradtx or Optax).
      every_k_schedule: the number of mini-steps per update: an int >= 1, or a
        schedule from the gradient step to a (rounded) number of mini-steps.
      use_grad_mean: average the accumulated gradients (else sum them).
      should_skip_update_fn: None, :class:`skip_not_finite`,
        :class:`skip_large_updates` or any function with Optax's signature
        ``(updates, gradient_step, params) -> (should_skip, skip_state)`` (a
        plain function cannot be written to a config).
      accumulator_dtype: dtype of the accumulator (default float32); None keeps
        the params'. Accumulation is done in float32 or wider.

    Raises:
      TypeError: if ``opt`` is not a transformation, ``every_k_schedule`` is
        neither an int nor callable or ``should_skip_update_fn`` is not callable.
      ValueError: if ``every_k_schedule`` is an int < 1.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.MultiSteps(gradtx.sgd(1.0), every_k_schedule=2)
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([1.0, 2.0]), state)
      >>> updates, bool(tx.has_updated(state))
      (Array([0., 0.], dtype=float32), False)
      >>> updates, state = tx.update(jnp.array([3.0, 4.0]), state)
      >>> updates, bool(tx.has_updated(state))
      (Array([-2., -3.], dtype=float32), True)
    """

    _inner_name = "opt"
    _every_k_name = "every_k_schedule"

    opt: Transformation = hyperparameter(shown=True)
    every_k_schedule: int | ScheduleLike = static_field(shown=True)
    use_grad_mean: bool = static_field(default=True)
    should_skip_update_fn: ShouldSkipUpdateFunction | None = hyperparameter(default=None)
    accumulator_dtype: str | None = static_field(default="float32")

    def __post_init__(self) -> None:
        object.__setattr__(self, "opt", as_member(self.opt, "opt"))
        every_k = _check_every_k("every_k_schedule", self.every_k_schedule)
        object.__setattr__(self, "every_k_schedule", every_k)
        _check_skip_fn(self.should_skip_update_fn)
        dtype = numerics.canonical_dtype(self.accumulator_dtype, "accumulator_dtype")
        object.__setattr__(self, "accumulator_dtype", dtype)


@value_class
class accumulate(_MultiStepsRule):  # noqa: N801 - gradtx's name for MultiSteps
    """Gradient accumulation: the mean of ``every_k`` gradients, applied by ``inner``.

    The rule, state (:class:`MultiStepsState`) and numbers are those of
    :class:`MultiSteps` (and of ``optax.MultiSteps``); only the argument names
    differ, and the options are keyword-only::

        acc <- acc + (g - acc) / (n + 1)      n = 0 .. every_k - 1
        at n == every_k - 1:  u <- inner(acc); acc <- 0;  otherwise u <- 0

    Args:
      inner: the optimizer to apply to the accumulated gradients.
      every_k: mini-steps per update, an int >= 1 or a schedule of the
        gradient step.
      use_grad_mean: average the accumulated gradients (else sum them).
      should_skip_update_fn: as for :class:`MultiSteps`.
      accumulator_dtype: dtype of the single accumulator (default float32);
        None keeps the params'.

    Raises:
      TypeError: if ``inner`` is not a transformation or ``every_k`` is neither
        an int nor callable.
      ValueError: if ``every_k`` is an int < 1.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.accumulate(gradtx.sgd(1.0), every_k=2)
      >>> state = tx.init(jnp.zeros(2))
      >>> _, state = tx.update(jnp.array([1.0, 2.0]), state)
      >>> tx.update(jnp.array([3.0, 4.0]), state)[0]
      Array([-2., -3.], dtype=float32)
    """

    _inner_name = "inner"
    _every_k_name = "every_k"

    inner: Transformation = hyperparameter(shown=True)
    every_k: int | ScheduleLike = static_field(shown=True)
    use_grad_mean: bool = static_field(default=True, kw_only=True)
    should_skip_update_fn: ShouldSkipUpdateFunction | None = hyperparameter(
        default=None, kw_only=True
    )
    accumulator_dtype: str | None = static_field(default="float32", kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inner", as_member(self.inner, "inner"))
        object.__setattr__(self, "every_k", _check_every_k("every_k", self.every_k))
        _check_skip_fn(self.should_skip_update_fn)
        dtype = numerics.canonical_dtype(self.accumulator_dtype, "accumulator_dtype")
        object.__setattr__(self, "accumulator_dtype", dtype)


class ApplyEvery(NamedTuple):
    """State of :class:`apply_every` (Optax's name and layout).

    Attributes:
      count: int32 position in the current window of ``k`` steps.
      grad_acc: the sum of the gradients seen in the current window.
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    grad_acc: Updates


@value_class
class apply_every(Transformation):  # noqa: N801 - Optax's name
    """Sums ``k`` consecutive updates and emits the sum every k-th step.

    Update rule, with ``c = count mod k``::

        acc <- g if c == 0 else acc + g
        u <- acc if c == k - 1 else 0

    Unlike :class:`MultiSteps` this is a member of a chain, not a wrapper:
    transformations before it still update their state on every step.

    Args:
      k: the window length, an int >= 1.

    Raises:
      TypeError: if ``k`` is not an integer.
      ValueError: if ``k`` < 1.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.apply_every(2)
      >>> _, state = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
      >>> tx.update(jnp.ones(2), state)[0]
      Array([2., 2.], dtype=float32)
    """

    k: jax.typing.ArrayLike = hyperparameter(default=1, shown=True)

    def __post_init__(self) -> None:
        concrete = checks.concrete_value(self.k)
        if isinstance(self.k, bool) or (
            concrete is not None and not jnp.issubdtype(concrete.dtype, jnp.integer)
        ):
            raise TypeError(f"k must be an integer >= 1, got {self.k!r}")
        checks.check_number("k", self.k, low=1)

    def init(self, params: Params) -> OptState:
        return ApplyEvery(count=numerics.zero_count(), grad_acc=trees.zeros_like(params))

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_trees_match(
            updates, state.grad_acc, tree_name="gradients", reference_name="optimizer state"
        )
        k = jnp.asarray(self.k).astype(jnp.int32)
        position = state.count % k
        keep, emit = position != 0, position == k - 1

        def add(g: jax.Array, acc: jax.Array) -> jax.Array:
            dtype = jnp.promote_types(g.dtype, acc.dtype)
            # A select, not Optax's keep * acc: 0 * inf would carry a NaN into
            # every later window.
            return jnp.where(keep, acc.astype(dtype), jnp.zeros([], dtype)) + g.astype(dtype)

        grad_acc = trees.leaf_map(add, updates, state.grad_acc)
        new_updates = trees.leaf_map(
            lambda acc, g: jnp.where(emit, acc, jnp.zeros([], acc.dtype)).astype(g.dtype),
            grad_acc,
            updates,
        )
        grad_acc = trees.leaf_map(lambda acc, old: acc.astype(old.dtype), grad_acc, state.grad_acc)
        count = numerics.safe_increment(state.count) % k
        return new_updates, ApplyEvery(count=count, grad_acc=grad_acc)
