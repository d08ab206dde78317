"""Numerical parity with Optax: same trees, same gradients, 100 jitted steps.

Every case runs a gradtx optimizer and its Optax counterpart side by side inside
one jitted step function, on a nested parameter tree (dicts, lists, tuples,
scalars and arrays of several ranks), with fresh random gradients at every step,
and compares the updates and the parameters of every step.

gradtx's states have Optax's layout, so the final states are compared whole
(structure and leaves) as well.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity_checks import (
    Hyperparameter,
    assert_dtypes,
    assert_params_close,
    assert_same_layout,
    assert_trees_close,
    stored_in,
)

import gradtx

STEPS = 100

# Shapes of the parameter tree: nested dicts, a list holding a tuple and a
# dict, a scalar and arrays of rank 1 to 3. Small: compiling dominates the time.
TEMPLATE = {
    "dense": {"kernel": (3, 4), "bias": (4,)},
    "blocks": [((), (2, 2, 2)), {"gamma": (5,)}],
}

# Masks for the tree above: a full boolean tree and a prefix of it.
FULL_MASK = {
    "dense": {"kernel": True, "bias": False},
    "blocks": [(True, True), {"gamma": False}],
}
PREFIX_MASK = {"dense": True, "blocks": False}

DTYPES = [jnp.float32, jnp.bfloat16]

# float32: the two libraries run the same operations in the same order, so
# they agree to the last bits; the tolerance only absorbs XLA fusing the two
# programs differently. bfloat16 keeps 8 significant bits (a relative spacing
# of 2**-8 to 2**-7): a single rounding that lands differently moves a value
# by one ulp, and rtol = 2**-6 allows two such ulps, while any real
# difference in the update rule (a missing factor, a wrong step) is far larger.
TOLERANCES = {
    jnp.float32: {"rtol": 1e-5, "atol": 1e-6},
    jnp.bfloat16: {"rtol": 2.0**-6, "atol": 1e-5},
}
# Params are sums of updates, each rounded to bfloat16 where it is added; the
# reference Optax rounds its float32 updates once, at apply_updates, where
# gradtx rounds them in each transformation too, so over 100 steps the params'
# error bound (see assert_params_close) is twice the updates'.
PARAMS_TOLERANCES = {
    jnp.float32: TOLERANCES[jnp.float32],
    jnp.bfloat16: {"rtol": 2.0**-5, "atol": 1e-5},
}


def _is_shape(node: Any) -> bool:
    return isinstance(node, tuple) and all(isinstance(size, int) for size in node)


def random_tree(seed: int, dtype: Any, leading: tuple[int, ...] = ()) -> Any:
    """A tree shaped like TEMPLATE, standard-normal entries, leaves in ``dtype``."""
    rng = np.random.default_rng(seed)
    shapes, treedef = jax.tree.flatten(TEMPLATE, is_leaf=_is_shape)
    leaves = [
        rng.standard_normal(leading + shape, dtype=np.float32).astype(dtype) for shape in shapes
    ]
    return jax.tree.unflatten(treedef, leaves)


def matrices_only(params: Any) -> Any:
    """A callable mask: decay only parameters with two or more dimensions."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


class Run(NamedTuple):
    """Per-step outputs (stacked on a leading step axis) and final states."""

    gradtx_updates: Any
    optax_updates: Any
    gradtx_params: Any
    optax_params: Any
    gradtx_state: Any
    optax_state: Any


def run_both(gradtx_tx: Any, optax_tx: Any, dtype: Any, *, traced: bool = False) -> Run:
    """Runs both optimizers for STEPS jitted steps on the same gradients.

    Args:
      gradtx_tx: the gradtx transformation.
      optax_tx: its Optax counterpart.
      dtype: dtype of the params and gradients.
      traced: pass ``gradtx_tx`` as an argument of the jitted step, so its
        numeric hyperparameters are traced leaves; otherwise it is closed over
        and its hyperparameters are compile-time constants, as in Optax.
    """
    params = random_tree(0, dtype)
    gradients = random_tree(1, dtype, leading=(STEPS,))
    if dtype != jnp.float32:
        optax_tx = stored_in(optax_tx, dtype)

    def step(tx: Any, carry: Any, grads: Any) -> Any:
        gradtx_params, gradtx_state, optax_params, optax_state = carry
        gradtx_updates, gradtx_state = tx.update(grads, gradtx_state, gradtx_params)
        optax_updates, optax_state = optax_tx.update(grads, optax_state, optax_params)
        gradtx_params = gradtx.apply_updates(gradtx_params, gradtx_updates)
        optax_params = optax.apply_updates(optax_params, optax_updates)
        carry = (gradtx_params, gradtx_state, optax_params, optax_state)
        return carry, (gradtx_updates, optax_updates, gradtx_params, optax_params)

    if traced:
        jitted = jax.jit(step)
        call = functools.partial(jitted, gradtx_tx)
    else:
        call = jax.jit(functools.partial(step, gradtx_tx))

    carry = (params, gradtx_tx.init(params), params, optax_tx.init(params))
    outputs = []
    for index in range(STEPS):
        carry, output = call(carry, jax.tree.map(lambda g, i=index: g[i], gradients))
        outputs.append(output)
    stacked = jax.tree.map(lambda *steps: np.stack(steps), *outputs)
    return Run(*stacked, carry[1], carry[3])


def _adam_moments(gradtx_state: Any, optax_state: Any) -> tuple[Any, Any]:
    return (gradtx_state.count, gradtx_state.mu, gradtx_state.nu), (
        optax_state.count,
        optax_state.mu,
        optax_state.nu,
    )


def _first(extract: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Applies ``extract`` to the first member of two chains' states."""
    return lambda gradtx_state, optax_state: extract(gradtx_state[0], optax_state[0])


def _trace(gradtx_state: Any, optax_state: Any) -> tuple[Any, Any]:
    return gradtx_state.trace, optax_state.trace


def in_dtype(schedule: Callable[[Any], Any], dtype: Any) -> Callable[[Any], Any]:
    """An Optax schedule whose value is cast to ``dtype``.

    Optax adds ``schedule(count) * p`` to the updates as is, so a float32
    weight-decay schedule turns bfloat16 updates into float32 ones; gradtx
    casts the decay to the updates' dtype (constant or scheduled alike) and
    keeps them bfloat16. Optax given the cast schedule does gradtx's arithmetic.
    """
    return lambda count: jnp.asarray(schedule(count)).astype(dtype)


class Case(NamedTuple):
    gradtx_tx: Any
    # An Optax transformation, or a function to one from the function ``h`` that
    # Optax's decay rates and eps go through (see HYPERPARAMETERS) and, where it
    # has a ``dtype`` argument too, from the params' dtype.
    optax_tx: Any
    # Maps (gradtx final state, optax final state) to two trees that must match.
    same_state: Callable[[Any, Any], tuple[Any, Any]] | None = None


def adam_h(h: Any) -> dict[str, Any]:
    """Adam's default decay rates and eps, through ``h``, and its ``mu_dtype``."""
    return {"b1": h(0.9), "b2": h(0.999), "eps": h(1e-8), "mu_dtype": h.storage}


def _cases() -> dict[str, Case]:
    gradtx_warmup = gradtx.warmup_cosine_decay_schedule(0.0, 0.1, 10, 80, end_value=1e-3)
    optax_warmup = optax.warmup_cosine_decay_schedule(0.0, 0.1, 10, 80, end_value=1e-3)
    gradtx_steps = gradtx.piecewise_constant_schedule(0.1, {20: 0.5, 60: 0.1})
    optax_steps = optax.piecewise_constant_schedule(0.1, {20: 0.5, 60: 0.1})
    gradtx_decay = gradtx.exponential_decay(1e-2, 10, 0.5, transition_begin=5, end_value=1e-4)
    optax_decay = optax.exponential_decay(1e-2, 10, 0.5, transition_begin=5, end_value=1e-4)
    adam_state = _first(_adam_moments)
    return {
        # Transformations.
        "scale_by_learning_rate": Case(
            gradtx.scale_by_learning_rate(0.05), optax.scale_by_learning_rate(0.05)
        ),
        "scale_by_learning_rate-schedule": Case(
            gradtx.scale_by_learning_rate(gradtx_warmup),
            optax.scale_by_learning_rate(optax_warmup),
        ),
        "scale_by_learning_rate-no-flip": Case(
            gradtx.scale_by_learning_rate(gradtx_steps, flip_sign=False),
            optax.scale_by_learning_rate(optax_steps, flip_sign=False),
        ),
        "scale": Case(gradtx.scale(-0.3), optax.scale(-0.3)),
        "identity": Case(gradtx.identity(), optax.identity()),
        "trace": Case(
            gradtx.trace(0.9), lambda h: optax.trace(h(0.9), accumulator_dtype=h.storage), _trace
        ),
        "trace-nesterov": Case(
            gradtx.trace(0.8, nesterov=True),
            lambda h: optax.trace(h(0.8), nesterov=True, accumulator_dtype=h.storage),
            _trace,
        ),
        "scale_by_adam": Case(
            gradtx.scale_by_adam(),
            lambda h: optax.scale_by_adam(h(0.9), h(0.999), h(1e-8), mu_dtype=h.storage),
            _adam_moments,
        ),
        "scale_by_adam-nesterov": Case(
            gradtx.scale_by_adam(b1=0.85, b2=0.99, nesterov=True),
            lambda h: optax.scale_by_adam(
                b1=h(0.85), b2=h(0.99), eps=h(1e-8), mu_dtype=h.storage, nesterov=True
            ),
            _adam_moments,
        ),
        "scale_by_adam-eps_root": Case(
            gradtx.scale_by_adam(eps=1e-6, eps_root=1e-4),
            lambda h: optax.scale_by_adam(
                h(0.9), h(0.999), eps=h(1e-6), eps_root=h(1e-4), mu_dtype=h.storage
            ),
            _adam_moments,
        ),
        "add_decayed_weights": Case(
            gradtx.add_decayed_weights(0.1), optax.add_decayed_weights(0.1)
        ),
        "add_decayed_weights-schedule": Case(
            gradtx.add_decayed_weights(gradtx_decay),
            lambda dtype: optax.add_decayed_weights(in_dtype(optax_decay, dtype)),
        ),
        "add_decayed_weights-mask-tree": Case(
            gradtx.add_decayed_weights(0.1, FULL_MASK),
            optax.add_decayed_weights(0.1, FULL_MASK),
        ),
        "add_decayed_weights-mask-prefix": Case(
            gradtx.add_decayed_weights(0.1, PREFIX_MASK),
            optax.add_decayed_weights(0.1, PREFIX_MASK),
        ),
        "add_decayed_weights-mask-callable": Case(
            gradtx.add_decayed_weights(0.1, matrices_only),
            optax.add_decayed_weights(0.1, matrices_only),
        ),
        # Aliases.
        "sgd": Case(gradtx.sgd(0.05), optax.sgd(0.05)),
        "sgd-momentum": Case(
            gradtx.sgd(0.05, momentum=0.9),
            lambda h: optax.sgd(0.05, momentum=h(0.9), accumulator_dtype=h.storage),
            _first(_trace),
        ),
        "sgd-nesterov": Case(
            gradtx.sgd(0.05, momentum=0.9, nesterov=True),
            lambda h: optax.sgd(0.05, momentum=h(0.9), accumulator_dtype=h.storage, nesterov=True),
        ),
        "sgd-schedule": Case(
            gradtx.sgd(gradtx_warmup, momentum=0.5),
            lambda h: optax.sgd(optax_warmup, momentum=h(0.5), accumulator_dtype=h.storage),
        ),
        # gradtx's SGD weight decay is the classic L2 term added before momentum.
        "sgd-weight_decay": Case(
            gradtx.sgd(0.05, momentum=0.9, weight_decay=1e-2),
            lambda h: optax.chain(
                optax.add_decayed_weights(1e-2),
                optax.sgd(0.05, momentum=h(0.9), accumulator_dtype=h.storage),
            ),
        ),
        "adam": Case(gradtx.adam(1e-2), lambda h: optax.adam(1e-2, **adam_h(h)), adam_state),
        "adam-schedule": Case(
            gradtx.adam(gradtx_steps),
            lambda h: optax.adam(optax_steps, **adam_h(h)),
            adam_state,
        ),
        "adam-eps_root": Case(
            gradtx.adam(1e-2, eps_root=1e-8),
            lambda h: optax.adam(1e-2, eps_root=h(1e-8), **adam_h(h)),
            adam_state,
        ),
        "adamw": Case(
            gradtx.adamw(1e-2, weight_decay=0.05),
            lambda h: optax.adamw(1e-2, weight_decay=0.05, **adam_h(h)),
            adam_state,
        ),
        "adamw-mask-tree": Case(
            gradtx.adamw(1e-2, weight_decay=0.05, mask=FULL_MASK),
            lambda h: optax.adamw(1e-2, weight_decay=0.05, mask=FULL_MASK, **adam_h(h)),
        ),
        "adamw-mask-callable": Case(
            gradtx.adamw(gradtx_warmup, weight_decay=0.05, mask=matrices_only),
            lambda h: optax.adamw(optax_warmup, weight_decay=0.05, mask=matrices_only, **adam_h(h)),
        ),
        "nadam": Case(gradtx.nadam(1e-2), lambda h: optax.nadam(1e-2, **adam_h(h)), adam_state),
        "nadamw": Case(
            gradtx.nadamw(1e-2, weight_decay=0.05),
            lambda h: optax.nadamw(1e-2, weight_decay=0.05, **adam_h(h)),
            adam_state,
        ),
        "nadamw-mask": Case(
            gradtx.nadamw(1e-2, weight_decay=0.05, mask=PREFIX_MASK),
            lambda h: optax.nadamw(1e-2, weight_decay=0.05, mask=PREFIX_MASK, **adam_h(h)),
        ),
        # Chains.
        "chain": Case(
            gradtx.chain(
                gradtx.add_decayed_weights(1e-3, matrices_only),
                gradtx.trace(0.5, nesterov=True),
                gradtx.scale_by_adam(b1=0.8),
                gradtx.scale(0.5),
                gradtx.scale_by_learning_rate(gradtx_warmup),
            ),
            lambda h: optax.chain(
                optax.add_decayed_weights(1e-3, matrices_only),
                optax.trace(h(0.5), nesterov=True, accumulator_dtype=h.storage),
                optax.scale_by_adam(b1=h(0.8), b2=h(0.999), eps=h(1e-8), mu_dtype=h.storage),
                optax.scale(0.5),
                optax.scale_by_learning_rate(optax_warmup),
            ),
        ),
        "chain-with-optax-member": Case(
            gradtx.chain(
                gradtx.scale_by_adam(),
                optax.add_decayed_weights(0.05, FULL_MASK),
                gradtx.scale_by_learning_rate(1e-2),
            ),
            lambda h: optax.adamw(1e-2, weight_decay=0.05, mask=FULL_MASK, **adam_h(h)),
            adam_state,
        ),
        "optax-chain-with-gradtx-members": Case(
            optax.chain(gradtx.trace(0.9), gradtx.scale_by_learning_rate(gradtx_steps)),
            lambda h: optax.sgd(optax_steps, momentum=h(0.9), accumulator_dtype=h.storage),
            _first(_trace),
        ),
    }


CASES = _cases()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(name, dtype):
    case = CASES[name]
    optax_tx = case.optax_tx
    if not hasattr(optax_tx, "update"):
        takes_dtype = "dtype" in inspect.signature(optax_tx).parameters
        optax_tx = optax_tx(dtype) if takes_dtype else optax_tx(Hyperparameter(dtype))
    run = run_both(case.gradtx_tx, optax_tx, dtype)
    tolerance = TOLERANCES[dtype]

    # Updates come back in the gradients' dtype and params keep theirs.
    assert_dtypes(run.gradtx_updates, dtype)
    assert_dtypes(run.gradtx_params, dtype)
    scale_atol = 2.0**-7 if dtype == jnp.bfloat16 else 0.0
    assert_trees_close(run.gradtx_updates, run.optax_updates, **tolerance, scale_atol=scale_atol)
    assert_params_close(
        run.gradtx_params, run.optax_params, run.optax_updates, **PARAMS_TOLERANCES[dtype]
    )
    # The runs did move: the last params are far from the first.
    first = jax.tree.map(lambda p: p[0], run.gradtx_params)
    last = jax.tree.map(lambda p: p[-1], run.gradtx_params)
    moved = max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(last))
    )
    assert moved > 1e-2

    if case.same_state is not None:
        gradtx_part, optax_part = case.same_state(run.gradtx_state, run.optax_state)
        assert_trees_close(gradtx_part, optax_part, **tolerance, scale_atol=scale_atol)
    assert_same_layout(run.gradtx_state, run.optax_state, **tolerance, scale_atol=scale_atol)


def test_the_tree_covers_dicts_lists_tuples_and_scalars():
    tree = random_tree(0, jnp.float32)
    shapes = {np.shape(leaf) for leaf in jax.tree.leaves(tree)}
    assert () in shapes and any(len(shape) >= 3 for shape in shapes)
    assert isinstance(tree["blocks"], list) and isinstance(tree["blocks"][0], tuple)


@pytest.mark.parametrize(
    "params",
    [
        (np.ones(2, np.float32), np.full(3, -2.0, np.float32)),
        # Three leaves: once mistaken for Adam's per-leaf (update, mu, nu) result.
        (np.ones(2, np.float32), np.full(3, -2.0, np.float32), np.float32(0.5)),
        {"a": [(np.ones(2, np.float32),)], "b": (np.float32(3.0), np.zeros(1, np.float32))},
    ],
    ids=["pair", "triple", "nested"],
)
def test_adam_on_trees_of_tuples(params):
    tx, reference = gradtx.adam(0.1), optax.adam(0.1)
    state, optax_state = tx.init(params), reference.init(params)
    grads = params
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        expected, optax_state = reference.update(grads, optax_state, params)
        assert_trees_close(updates, expected, **TOLERANCES[jnp.float32])
        assert_trees_close(state[0].mu, optax_state[0].mu, **TOLERANCES[jnp.float32])
        grads = jax.tree.map(lambda g: -0.5 * g + 0.25, grads)


# With the gradtx optimizer passed to jit as an argument, its hyperparameters
# are float32 tracers, so ``1 - b2`` is rounded to float32 (0.0010000467 for
# b2=0.999) where Optax, closing over a Python float, computes it in float64
# (0.001); against such an Optax, Adam's updates differ by up to a relative
# ~1e-4 (the one observable effect of tracing). Optax given float32 array
# hyperparameters does the same arithmetic as traced gradtx, and so is the
# reference here.
TRACED_CASES = {
    "adam": (
        gradtx.adam(1e-2),
        lambda h, dtype: optax.adam(h(1e-2), b1=h(0.9), b2=h(0.999), eps=h(1e-8)),
    ),
    "nadamw": (
        gradtx.nadamw(1e-2, weight_decay=0.05, mask=FULL_MASK),
        lambda h, dtype: optax.nadamw(
            h(1e-2), b1=h(0.9), b2=h(0.999), eps=h(1e-8), weight_decay=h(0.05), mask=FULL_MASK
        ),
    ),
    "sgd-weight_decay": (
        gradtx.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda h, dtype: optax.chain(
            optax.add_decayed_weights(h(1e-2)), optax.sgd(h(0.05), h(0.9), nesterov=True)
        ),
    ),
    "schedules": (
        gradtx.chain(
            gradtx.add_decayed_weights(gradtx.exponential_decay(1e-2, 10, 0.5, staircase=True)),
            gradtx.scale_by_learning_rate(
                gradtx.join_schedules(
                    [
                        gradtx.linear_schedule(0.0, 0.1, 20),
                        gradtx.cosine_decay_schedule(0.1, 50, alpha=0.1),
                    ],
                    [20],
                )
            ),
        ),
        lambda h, dtype: optax.chain(
            optax.add_decayed_weights(
                in_dtype(optax.exponential_decay(1e-2, 10, 0.5, staircase=True), dtype)
            ),
            optax.scale_by_learning_rate(
                optax.join_schedules(
                    [
                        optax.linear_schedule(0.0, 0.1, 20),
                        optax.cosine_decay_schedule(0.1, 50, alpha=0.1),
                    ],
                    [20],
                )
            ),
        ),
    ),
}


@pytest.mark.parametrize(
    ("name", "dtype"),
    [(name, jnp.float32) for name in sorted(TRACED_CASES)]
    # In bfloat16, two cases cover the weak typing of traced hyperparameters
    # (a strongly typed float32 one would promote bfloat16 moments).
    + [("nadamw", jnp.bfloat16), ("schedules", jnp.bfloat16)],
    ids=lambda v: jnp.dtype(v).name if not isinstance(v, str) else v,
)
def test_matches_optax_with_traced_hyperparameters(name, dtype):
    gradtx_tx, make_optax = TRACED_CASES[name]
    hyperparameter = jnp.float32
    run = run_both(gradtx_tx, make_optax(hyperparameter, dtype), dtype, traced=True)
    assert_dtypes(run.gradtx_updates, dtype)
    scale_atol = 2.0**-7 if dtype == jnp.bfloat16 else 0.0
    assert_trees_close(
        run.gradtx_updates, run.optax_updates, **TOLERANCES[dtype], scale_atol=scale_atol
    )
    assert_params_close(
        run.gradtx_params, run.optax_params, run.optax_updates, **PARAMS_TOLERANCES[dtype]
    )
