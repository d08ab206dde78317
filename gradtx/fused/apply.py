"""One-pass optimizer steps: :func:`fused_apply`.

The plain step, ``tx.update`` followed by :func:`gradtx.apply_updates`, is what
XLA compiles into a few loops per parameter leaf. For the optimizers it
recognises, :func:`fused_apply` instead emits native custom calls (one per 16
leaves) that update params and state in a single pass over memory (see
``kernel.cc``). Everything that is not per-element work stays in JAX: step
counts, schedules, bias corrections and the other scalar coefficients are
computed exactly as the plain path computes them and handed to the kernel in a
small buffer.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics, trees
from gradtx.base import (
    GradientTransformation,
    OptState,
    Params,
    Transformation,
    Updates,
)
from gradtx.fused import build
from gradtx.fused.plan import (
    Plan,
    UnsupportedError,
    count_of,
    flatten_state,
    flattened,
    nest_state,
    plan_for,
    with_count,
)
from gradtx.transforms.adam import scale_by_adam
from gradtx.transforms.scale import (
    evaluate,
)
from gradtx.update import apply_updates

_F32 = np.dtype(np.float32)
_Arrays = tuple[jax.Array, ...]

# Leaves per custom call. XLA's compile time grows quadratically with the
# number of operands one custom call aliases to its results (1,000 leaves in
# one call: 50-90 s to compile), while a call costs microseconds to run. With
# 4 to 32 leaves per call, 1,000 leaves compile in ~1 s, about the same.
_LEAVES_PER_CALL = 16


def _groups(count: int) -> list[slice]:
    return [slice(start, start + _LEAVES_PER_CALL) for start in range(0, count, _LEAVES_PER_CALL)]


def _float32_leaves(tree: Any, treedef: Any, shapes: Sequence[tuple[int, ...]]) -> list[Any]:
    """The leaves of ``tree`` if it is a float32 tree shaped like the params."""
    if jax.tree.structure(tree) != treedef:
        raise UnsupportedError
    leaves = jax.tree.leaves(tree)
    for leaf, shape in zip(leaves, shapes):
        if not isinstance(leaf, jax.Array | np.ndarray) or leaf.dtype != _F32:
            raise UnsupportedError
        if tuple(leaf.shape) != shape:
            raise UnsupportedError
    return leaves


def _elementwise(value: Any) -> jax.Array:
    """A hyperparameter the plain path multiplies float32 arrays by, as float32.

    The plain path computes in float32 only if the value is weakly typed (a
    Python number) or at most float32; a float64 array (with x64 enabled)
    would promote the whole computation, which the kernel does not do.
    """
    if jnp.ndim(value) != 0 or jnp.result_type(value, jnp.float32) != _F32:
        raise UnsupportedError
    return jnp.asarray(value, jnp.float32)


def _scalar_factor(value: Any) -> jax.Array:
    """A learning rate or weight decay: the plain path casts it to float32 itself."""
    if jnp.ndim(value) != 0:
        raise UnsupportedError
    return jnp.asarray(value).astype(jnp.float32)


def _inverse_correction(decay: Any, count: jax.Array) -> jax.Array:
    # numerics.bias_correction divides by (1 - decay**count).astype(float32);
    # XLA compiles a division by a broadcast scalar into a multiplication by
    # the scalar's reciprocal, and the kernel does the same.
    correction = (1 - numerics.decay_power(decay, count)).astype(jnp.float32)
    return 1 / correction


def _decay_flags(plan: Plan, params: Params, count: int) -> tuple[bool, ...]:
    """Which leaves ``add_decayed_weights`` decays, as ``masking.masked_update`` selects them."""
    if plan.decay is None:
        return (False,) * count
    mask = plan.members[plan.decay].mask  # type: ignore[attr-defined]
    if mask is None:
        return (True,) * count
    mask_tree = mask(params) if callable(mask) else mask
    try:
        structure = trees.structure(mask_tree)
        parts = structure.flatten_up_to(params)
        flags: list[bool] = []
        for keep, part in zip(jax.tree.leaves(mask_tree), parts):
            flags.extend([bool(keep)] * len(jax.tree.leaves(part)))
    except (ValueError, TypeError, jax.errors.JAXTypeError):
        raise UnsupportedError from None
    if len(flags) != count:
        raise UnsupportedError
    return tuple(flags)


def _learning_rate_factor(plan: Plan, state: OptState) -> jax.Array:
    member = plan.members[plan.learning_rate]
    step_size = evaluate(member.learning_rate, count_of(state[plan.learning_rate]))  # type: ignore[attr-defined]
    if member.flip_sign:  # type: ignore[attr-defined]
        step_size = -jnp.asarray(step_size)
    return _scalar_factor(step_size)


def _weight_decay_factor(plan: Plan, state: OptState) -> jax.Array:
    if plan.decay is None:
        return jnp.zeros((), jnp.float32)
    weight_decay = plan.members[plan.decay].weight_decay  # type: ignore[attr-defined]
    return _scalar_factor(evaluate(weight_decay, count_of(state[plan.decay])))


def _advance_counts(plan: Plan, state: OptState, new_state: list[Any]) -> None:
    for index in (plan.decay, plan.learning_rate):
        if index is not None and count_of(state[index]) is not None:
            count = numerics.safe_increment(count_of(state[index]))
            new_state[index] = with_count(state[index], count)
    # One count is enough to keep the step dispatched asynchronously.
    for index in (plan.learning_rate, plan.decay, plan.adam):
        if index is not None and count_of(new_state[index]) is not None:
            count = _dispatched_asynchronously(count_of(new_state[index]))
            new_state[index] = with_count(new_state[index], count)
            return


def _dispatched_asynchronously(count: jax.Array) -> jax.Array:
    """``count`` unchanged, computed through a few thousand flops.

    XLA's CPU client runs a program its cost model puts under 1,000 flops
    inline, in the calling thread, and the model counts a custom call as free:
    a jitted step made of the kernel alone would block the Python thread for
    the whole update instead of being dispatched asynchronously like XLA's own
    step. Measured on AdamW with 10M parameters, per step: 4.1 ms inline, 3.7 ms
    dispatched in 10 leaves; 16.4 ms and 11.7 ms in 1,000 leaves. Inside a
    larger program (a whole training step) this is moot.
    """
    ramp = jnp.arange(2048, dtype=jnp.float32) * count.astype(jnp.float32)
    return count + (jnp.sum(ramp) * 0).astype(count.dtype)


class _Leaves:
    """The float32 leaves of a step, split between the kernel and XLA.

    Arrays of exactly one element take XLA's path: XLA compiles them as scalar
    code, where LLVM picks other multiply-adds to fuse depending on which
    operands are constants, so no single kernel formula matches it bit for bit.
    They are rare (a learned temperature, say) and cost nothing to update.
    """

    def __init__(self, params: Params, grads: Updates) -> None:
        flat, self.treedef = trees.flatten(params)
        self.shapes = [tuple(np.shape(x)) for x in flat]
        self.count = len(flat)
        self.params = self.like_params(params)
        self.grads = self.like_params(grads)
        self.in_kernel = [i for i, shape in enumerate(self.shapes) if math.prod(shape) != 1]

    def like_params(self, tree: Any) -> list[Any]:
        """The leaves of a float32 tree shaped like the params."""
        return _float32_leaves(tree, self.treedef, self.shapes)

    def kernel_part(self, leaves: Sequence[Any]) -> tuple[Any, ...]:
        if not leaves:  # sgd without momentum has no traces
            return ()
        return tuple(leaves[i] for i in self.in_kernel)

    def plain_step(self, tx: Any, params: Params, state: OptState, grads: Updates) -> Any:
        """The plain step when some leaves need it (XLA drops what is unused)."""
        if len(self.in_kernel) == self.count:
            return None
        return _plain_apply(tx, params, state, grads)

    def merge(self, from_kernel: Sequence[Any], plain_tree: Any) -> Any:
        merged = jax.tree.leaves(plain_tree) if plain_tree is not None else [None] * self.count
        for position, leaf in zip(self.in_kernel, from_kernel):
            merged[position] = leaf
        return self.treedef.unflatten(merged)


# ---------------------------------------------------------------------------
# Adam family.


@dataclasses.dataclass(frozen=True)
class _AdamConfig:
    nesterov: bool
    decay_flags: tuple[bool, ...]

    def leaf_flags(self, group: slice) -> np.ndarray:
        return np.asarray(self.decay_flags[group], np.int8)


def _adam_kernel(
    config: _AdamConfig, scalars: jax.Array, p: _Arrays, g: _Arrays, mu: _Arrays, nu: _Arrays
) -> tuple[_Arrays, _Arrays, _Arrays]:
    new_p: list[jax.Array] = []
    new_mu: list[jax.Array] = []
    new_nu: list[jax.Array] = []
    for group in _groups(len(p)):
        n = len(p[group])
        outputs = jax.ffi.ffi_call(
            "gradtx_adam",
            [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (*p[group], *mu[group], *nu[group])],
            # Operand 0 is the scalar buffer, then params, grads, mu, nu.
            input_output_aliases={
                **{1 + i: i for i in range(n)},
                **{1 + 2 * n + i: n + i for i in range(n)},
                **{1 + 3 * n + i: 2 * n + i for i in range(n)},
            },
            vmap_method="sequential",
        )(
            scalars,
            *p[group],
            *g[group],
            *mu[group],
            *nu[group],
            nesterov=config.nesterov,
            leaf_flags=config.leaf_flags(group),
        )
        new_p += outputs[:n]
        new_mu += outputs[n : 2 * n]
        new_nu += outputs[2 * n :]
    return tuple(new_p), tuple(new_mu), tuple(new_nu)


def _adam_reference(
    config: _AdamConfig, scalars: jax.Array, p: _Arrays, g: _Arrays, mu: _Arrays, nu: _Arrays
) -> tuple[_Arrays, _Arrays, _Arrays]:
    """The kernel's arithmetic in JAX (used to differentiate through it)."""
    (
        one_minus_b1,
        b1,
        one_minus_b2,
        b2,
        inv_c1,
        inv_c2,
        inv_next_c1,
        eps_root,
        eps,
        weight_decay,
        neg_lr,
    ) = scalars
    new_p, new_mu, new_nu = [], [], []
    for p_i, g_i, mu_i, nu_i, decay in zip(p, g, mu, nu, config.decay_flags):
        mu_i = one_minus_b1 * g_i + b1 * mu_i
        nu_i = one_minus_b2 * (g_i * g_i) + b2 * nu_i
        if config.nesterov:
            mu_hat = b1 * (mu_i * inv_next_c1) + one_minus_b1 * (g_i * inv_c1)
        else:
            mu_hat = mu_i * inv_c1
        update = mu_hat / (jnp.sqrt(nu_i * inv_c2 + eps_root) + eps)
        if decay:
            update = update + weight_decay * p_i
        new_p.append(p_i + neg_lr * update)
        new_mu.append(mu_i)
        new_nu.append(nu_i)
    return tuple(new_p), tuple(new_mu), tuple(new_nu)


_adam_update = jax.custom_jvp(_adam_kernel, nondiff_argnums=(0,))
_adam_update.defjvp(
    lambda config, primals, tangents: jax.jvp(
        functools.partial(_adam_reference, config), primals, tangents
    )
)


def _adam_step(tx: Any, plan: Plan, params: Params, state: OptState, grads: Updates) -> Any:
    adam = cast(scale_by_adam, plan.members[plan.adam])  # type: ignore[index]
    adam_state = state[plan.adam]  # type: ignore[index]
    leaves = _Leaves(params, grads)
    mu, nu = leaves.like_params(adam_state.mu), leaves.like_params(adam_state.nu)
    count = numerics.safe_increment(adam_state.count)
    b1, b2 = adam.b1, adam.b2
    scalars = jnp.stack(
        [
            _elementwise(1 - b1),
            _elementwise(b1),
            _elementwise(1 - b2),
            _elementwise(b2),
            _inverse_correction(b1, count),
            _inverse_correction(b2, count),
            _inverse_correction(b1, numerics.safe_increment(count)),
            _elementwise(adam.eps_root),
            _elementwise(adam.eps),
            _weight_decay_factor(plan, state),
            _learning_rate_factor(plan, state),
        ]
    )
    config = _AdamConfig(
        nesterov=adam.nesterov,
        decay_flags=leaves.kernel_part(_decay_flags(plan, params, leaves.count)),
    )
    new_p, new_mu, new_nu = _adam_update(
        config, scalars, *map(leaves.kernel_part, (leaves.params, leaves.grads, mu, nu))
    )

    plain = leaves.plain_step(tx, params, state, grads)
    plain_adam_state = plain[1][plan.adam] if plain else None
    new_state = list(state)
    new_state[plan.adam] = adam_state._replace(  # type: ignore[index]
        count=count,
        mu=leaves.merge(new_mu, plain_adam_state and plain_adam_state.mu),
        nu=leaves.merge(new_nu, plain_adam_state and plain_adam_state.nu),
    )
    _advance_counts(plan, state, new_state)
    return leaves.merge(new_p, plain and plain[0]), tuple(new_state)


# ---------------------------------------------------------------------------
# SGD family.


@dataclasses.dataclass(frozen=True)
class _SgdConfig:
    has_momentum: bool
    nesterov: bool
    decay_flags: tuple[bool, ...]

    def leaf_flags(self, group: slice) -> np.ndarray:
        return np.asarray(self.decay_flags[group], np.int8)


def _sgd_kernel(
    config: _SgdConfig, scalars: jax.Array, p: _Arrays, g: _Arrays, t: _Arrays
) -> tuple[_Arrays, _Arrays]:
    new_p: list[jax.Array] = []
    new_t: list[jax.Array] = []
    for group in _groups(len(p)):
        n = len(p[group])
        traces = t[group] if config.has_momentum else ()
        outputs = jax.ffi.ffi_call(
            "gradtx_sgd",
            [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (*p[group], *traces)],
            # Operand 0 is the scalar buffer, then params, grads and the traces.
            input_output_aliases={
                **{1 + i: i for i in range(n)},
                **{1 + 2 * n + i: n + i for i in range(len(traces))},
            },
            vmap_method="sequential",
        )(
            scalars,
            *p[group],
            *g[group],
            *traces,
            has_momentum=config.has_momentum,
            nesterov=config.nesterov,
            leaf_flags=config.leaf_flags(group),
        )
        new_p += outputs[:n]
        new_t += outputs[n:]
    return tuple(new_p), tuple(new_t)


def _sgd_reference(
    config: _SgdConfig, scalars: jax.Array, p: _Arrays, g: _Arrays, t: _Arrays
) -> tuple[_Arrays, _Arrays]:
    """The kernel's arithmetic in JAX (used to differentiate through it)."""
    weight_decay, momentum, neg_lr = scalars
    new_p, new_t = [], []
    traces = t if config.has_momentum else (None,) * len(p)
    for p_i, g_i, t_i, decay in zip(p, g, traces, config.decay_flags):
        if decay:
            g_i = g_i + weight_decay * p_i
        direction = g_i
        if config.has_momentum:
            t_i = g_i + momentum * t_i
            direction = g_i + momentum * t_i if config.nesterov else t_i
            new_t.append(t_i)
        new_p.append(p_i + neg_lr * direction)
    return tuple(new_p), tuple(new_t)


_sgd_update = jax.custom_jvp(_sgd_kernel, nondiff_argnums=(0,))
_sgd_update.defjvp(
    lambda config, primals, tangents: jax.jvp(
        functools.partial(_sgd_reference, config), primals, tangents
    )
)


def _sgd_step(tx: Any, plan: Plan, params: Params, state: OptState, grads: Updates) -> Any:
    leaves = _Leaves(params, grads)
    momentum = plan.members[plan.momentum] if plan.momentum is not None else None
    traces = leaves.like_params(state[plan.momentum].trace) if plan.momentum is not None else []
    scalars = jnp.stack(
        [
            _weight_decay_factor(plan, state),
            _elementwise(momentum.decay) if momentum else jnp.zeros((), jnp.float32),  # type: ignore[attr-defined]
            _learning_rate_factor(plan, state),
        ]
    )
    config = _SgdConfig(
        has_momentum=momentum is not None,
        nesterov=bool(momentum is not None and momentum.nesterov),  # type: ignore[attr-defined]
        decay_flags=leaves.kernel_part(_decay_flags(plan, params, leaves.count)),
    )
    new_p, new_t = _sgd_update(
        config, scalars, *map(leaves.kernel_part, (leaves.params, leaves.grads, traces))
    )

    plain = leaves.plain_step(tx, params, state, grads)
    new_state = list(state)
    if plan.momentum is not None:
        plain_trace = plain[1][plan.momentum].trace if plain else None
        new_state[plan.momentum] = state[plan.momentum]._replace(
            trace=leaves.merge(new_t, plain_trace)
        )
    _advance_counts(plan, state, new_state)
    return leaves.merge(new_p, plain and plain[0]), tuple(new_state)


# ---------------------------------------------------------------------------
# The public entry point.


def _plain_apply(tx: Any, params: Params, state: OptState, grads: Updates) -> Any:
    updates, new_state = tx.update(grads, state, params)
    return apply_updates(params, updates), new_state


def _native_usable() -> bool:
    # One device only: a custom call has no sharding rule, so XLA's partitioner
    # would gather sharded params to run it. Other backends use the plain path.
    return jax.default_backend() == "cpu" and jax.device_count() == 1 and build.load()


def _traced_apply(tx: Any, params: Params, state: OptState, grads: Updates) -> Any:
    try:
        flat_tx, lengths = flattened(tx)
        flat_state = flatten_state(state, lengths)
        plan = plan_for(flat_tx)
        plan.check_state(flat_state)
        if not jax.tree.leaves(params) or not _native_usable():
            raise UnsupportedError
        step = _adam_step if plan.adam is not None else _sgd_step
        new_params, new_state = step(flat_tx, plan, params, flat_state, grads)
        return new_params, nest_state(new_state, lengths)
    except UnsupportedError:
        return _plain_apply(tx, params, state, grads)


@functools.cache
def _compiled(donate: bool) -> Callable[..., Any]:
    return jax.jit(_traced_apply, donate_argnums=(1, 2) if donate else ())


def fused_apply(
    tx: Transformation | GradientTransformation,
    params: Params,
    state: OptState,
    grads: Updates,
    *,
    donate: bool = False,
) -> tuple[Params, OptState]:
    """Applies one optimizer step in a single pass over memory when it can.

    Returns what the plain step returns::

        updates, new_state = tx.update(grads, state, params)
        new_params = gradtx.apply_updates(params, updates)

    with the same state structure, dtypes and values. When ``tx`` is
    :class:`~gradtx.adam`, :class:`~gradtx.adamw`, :class:`~gradtx.nadam`,
    :class:`~gradtx.nadamw` or :class:`~gradtx.sgd` (or the chain one of them
    expands to), every leaf of params, grads and state is float32, the backend
    is a single CPU device and the native kernel could be built, the
    per-element work is done by native custom calls (one per 16 leaves) that
    read and write each element once, in place when the buffers are donated.
    Hyperparameters and schedules are evaluated in JAX and passed to the kernel
    as data, so changing them never recompiles. In every other case (other
    optimizers, bfloat16 or float64 leaves, GPU/TPU, several devices,
    ``GRADTX_DISABLE_NATIVE=1``) it runs the plain step; the choice is made when
    the step is traced.

    The fast path gives bitwise the results of the plain step compiled by
    ``jax.jit`` (the kernel repeats XLA's operations, roundings and fused
    multiply-adds; one-element leaves, for which XLA's code differs, are left
    to XLA). It is differentiable (through the plain formula) and works under
    ``jax.vmap`` (one kernel call per batch element; there XLA compiles the
    plain step differently, and the two agree to a rounding).

    Inside your own ``jax.jit``, donate params and state
    (``donate_argnums``) so the kernel updates them in place; without donation
    XLA must copy them first. Called outside ``jax.jit``, ``fused_apply`` jits
    itself, and ``donate=True`` donates ``params`` and ``state`` (the arrays
    passed in are then deleted).

    Args:
      tx: the optimizer, any gradtx transformation (others take the plain path).
      params: the current parameters.
      state: ``tx``'s state for ``params``.
      grads: the gradients, shaped like ``params``.
      donate: outside ``jax.jit`` only: let the step reuse the buffers of
        ``params`` and ``state`` for its results.

    Returns:
      ``(new_params, new_state)``.

    Raises:
      ValueError: as ``tx.update`` and ``apply_updates`` do, e.g. when the
        gradients do not match the parameters.

    Example:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> tx = gradtx.adamw(1e-3, weight_decay=1e-2)
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> step = jax.jit(gradtx.fused_apply, donate_argnums=(1, 2))
      >>> params, state = step(tx, params, state, grads)
      >>> params["w"][0]
      Array([0.99899, 0.99899], dtype=float32)
    """
    leaves = jax.tree.leaves((tx, params, state, grads))
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return _traced_apply(tx, params, state, grads)
    return _compiled(donate)(tx, params, state, grads)
