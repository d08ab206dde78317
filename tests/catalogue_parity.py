"""Runs a gradtx optimizer beside its Optax counterpart on three problems at once.

The parameter tree holds a parabola (a matrix and a vector), a Rosenbrock
function (a (2, 4) leaf: four (x, y) pairs), leaves whose gradients are pure
noise (a 3-D array and a scalar, inside a list and a dict) and a frozen None
leaf. Every step both libraries get the same gradient, evaluated at Optax's
iterate: a last-bit difference cannot grow into a different trajectory, and
what is compared is the update rule, while gradtx's own params still feed
params-dependent rules (weight decay, trust ratios).

``check_against_optax`` runs the pair for ``steps`` steps jitted (one
``lax.scan``, one compilation) and then (in float32) gradtx alone eagerly on
the recorded gradients, and compares each run's updates, params and final
state with Optax's.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
DTYPES = [jnp.float32, jnp.bfloat16]


def dtype_id(dtype: Any) -> str:
    """A test id for a dtype (``float32``)."""
    return jnp.dtype(dtype).name


# float32: the same operations in the same order, up to XLA fusing the two
# programs differently. bfloat16: two ulps of its 8 significant bits, plus
# 2**-7 of the leaf's largest value where a moment rounded apart crosses zero
# (see parity_checks.assert_trees_close); any real difference in a rule is far
# larger. Params sum 100 rounded updates, so their bound grows with the sum.
TOLERANCES = {
    jnp.float32: {"rtol": 1e-5, "atol": 1e-6, "scale_atol": 0.0},
    jnp.bfloat16: {"rtol": 2.0**-6, "atol": 1e-5, "scale_atol": 2.0**-7},
}
PARAMS_TOLERANCES = {
    jnp.float32: {"rtol": 1e-5, "atol": 1e-6},
    jnp.bfloat16: {"rtol": 2.0**-5, "atol": 1e-5},
}


def optax_hyper(dtype: Any) -> Hyperparameter:
    """``h(value)``: how Optax gets decay rates and eps for a run in ``dtype``.

    A Python float for float32 and a float32 array for bfloat16 (so Optax
    computes in float32, as gradtx does); ``h.storage`` is None or bfloat16,
    for Optax's ``mu_dtype`` / ``accumulator_dtype``.
    """
    return Hyperparameter(dtype)


def _initial_params(dtype: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    rosenbrock = np.stack([-1.2 + 0.1 * rng.standard_normal(4), 1.0 + 0.1 * rng.standard_normal(4)])
    tree = {
        "parabola": {
            "kernel": rng.standard_normal((4, 6)),
            "bias": rng.standard_normal(6),
        },
        "rosenbrock": rosenbrock,
        "noise": [rng.standard_normal((2, 3, 4)), {"scalar": np.float64(0.5)}],
    }
    params = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), tree)
    params["frozen"] = None
    return params


# Parabola: 0.5 * sum(curvature * (p - target)**2), curvatures in [0.5, 2].
_RNG = np.random.default_rng(1)
_CURVATURE = {
    "kernel": jnp.asarray(_RNG.uniform(0.5, 2.0, (4, 6)), jnp.float32),
    "bias": jnp.asarray(_RNG.uniform(0.5, 2.0, 6), jnp.float32),
}
_TARGET = {
    "kernel": jnp.asarray(_RNG.standard_normal((4, 6)), jnp.float32),
    "bias": jnp.asarray(_RNG.standard_normal(6), jnp.float32),
}


def _noise(steps: int) -> list[jax.Array]:
    rng = np.random.default_rng(2)
    return [
        jnp.asarray(rng.standard_normal((steps, 2, 3, 4)), jnp.float32),
        jnp.asarray(rng.standard_normal(steps), jnp.float32),
    ]


def loss(params: Any, noise: list[jax.Array]) -> jax.Array:
    """The three problems' sum, in float32, with this step's noise gradients."""
    p = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), params)
    parabola = sum(
        0.5 * jnp.sum(_CURVATURE[name] * (p["parabola"][name] - _TARGET[name]) ** 2)
        for name in ("kernel", "bias")
    )
    x, y = p["rosenbrock"][0], p["rosenbrock"][1]
    rosenbrock = jnp.sum((1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2)
    linear = jnp.sum(noise[0] * p["noise"][0]) + noise[1] * p["noise"][1]["scalar"]
    return parabola + rosenbrock + linear


def gradient_and_loss(params: Any, noise: list[jax.Array]) -> tuple[Any, jax.Array]:
    """The gradient in the params' dtypes (None at the frozen leaf) and the loss."""
    value, grads = jax.value_and_grad(loss)(params, noise)
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
    return grads, value


class Run(NamedTuple):
    """Per-step outputs (stacked on a leading step axis) and the final states."""

    grads: Any
    values: jax.Array
    gradtx_updates: Any
    optax_updates: Any
    gradtx_params: Any
    optax_params: Any
    gradtx_state: Any
    optax_state: Any


def _extra(with_value: bool, value: jax.Array) -> dict[str, Any]:
    return {"value": value} if with_value else {}


def run_jitted(
    gradtx_tx: Any, optax_tx: Any, dtype: Any, *, steps: int = STEPS, with_value: bool = False
) -> Run:
    """Both optimizers, ``steps`` steps in one jitted scan.

    Both are closed over, so their hyperparameters are compile-time constants
    alike: passed as arguments, gradtx's would be float32 values where Optax's
    Python floats fold in double precision (1 - 0.999 differs in the fifth digit).
    """
    params = _initial_params(dtype)
    tx = gradtx_tx

    @jax.jit
    def run(params: Any, noise: list[jax.Array]) -> Any:
        def body(carry: Any, noise_t: list[jax.Array]) -> Any:
            gradtx_params, gradtx_state, optax_params, optax_state = carry
            grads, value = gradient_and_loss(optax_params, noise_t)
            extra = _extra(with_value, value)
            gradtx_updates, gradtx_state = tx.update(grads, gradtx_state, gradtx_params, **extra)
            optax_updates, optax_state = optax_tx.update(grads, optax_state, optax_params, **extra)
            gradtx_params = gradtx.apply_updates(gradtx_params, gradtx_updates)
            optax_params = optax.apply_updates(optax_params, optax_updates)
            carry = (gradtx_params, gradtx_state, optax_params, optax_state)
            return carry, (grads, value, gradtx_updates, optax_updates, gradtx_params, optax_params)

        carry = (params, tx.init(params), params, optax_tx.init(params))
        carry, outputs = jax.lax.scan(body, carry, noise)
        return outputs, carry[1], carry[3]

    outputs, gradtx_state, optax_state = run(params, _noise(steps))
    return Run(*outputs, gradtx_state, optax_state)


def run_eager(gradtx_tx: Any, dtype: Any, grads: Any, values: jax.Array, *, with_value: bool):
    """gradtx alone, eagerly, on the recorded gradients: stacked updates and params, final state."""
    params = _initial_params(dtype)
    state = gradtx_tx.init(params)
    updates_seen, params_seen = [], []
    for step in range(values.shape[0]):
        g = jax.tree.map(lambda leaf, i=step: leaf[i], grads)
        updates, state = gradtx_tx.update(g, state, params, **_extra(with_value, values[step]))
        params = gradtx.apply_updates(params, updates)
        updates_seen.append(updates)
        params_seen.append(params)
    stack = lambda trees: jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)  # noqa: E731
    return stack(updates_seen), stack(params_seen), state


def check_against_optax(
    gradtx_tx: Any,
    optax_tx: Any,
    dtype: Any,
    *,
    steps: int = STEPS,
    with_value: bool = False,
    compare_state: bool = True,
    min_move: float = 1e-2,
    tolerance: dict[str, float] | None = None,
    same_state: Callable[[Any, Any], tuple[Any, Any]] | None = None,
    eager: bool | None = None,
) -> Run:
    """Asserts gradtx_tx matches optax_tx over ``steps`` steps, jitted and eager.

    Args:
      gradtx_tx: the gradtx transformation.
      optax_tx: its Optax counterpart, built for ``dtype`` (see ``optax_hyper``);
        for bfloat16 its state is stored in bfloat16 here (``stored_in``).
      dtype: the params' and gradients' dtype.
      steps: how many steps.
      with_value: pass ``value=loss`` to both updates.
      compare_state: compare the final states whole (same key paths, close leaves).
      min_move: the largest change of a parameter over the run must exceed it.
      tolerance: overrides TOLERANCES[dtype] (rtol, atol, scale_atol) for the
        updates and state; say why where a test passes one.
      same_state: maps (gradtx state, optax state) to two trees that must be close,
        where the whole states cannot be compared.
      eager: also run gradtx eagerly on the recorded gradients and compare it
        with Optax. Defaults to float32 only: an eager update runs the value's
        own compiled step, whatever the dtype, and compiling it costs more than
        the whole jitted run, so one dtype shows the eager path.

    Returns:
      The jitted run.
    """
    if dtype != jnp.float32:
        optax_tx = stored_in(optax_tx, dtype)
    tolerance = tolerance or TOLERANCES[dtype]
    run = run_jitted(gradtx_tx, optax_tx, dtype, steps=steps, with_value=with_value)

    for label, tree in [("updates", run.gradtx_updates), ("params", run.gradtx_params)]:
        assert_dtypes(tree, dtype, label)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            assert np.all(np.isfinite(np.asarray(leaf, np.float64))), (
                f"{label} at {jax.tree_util.keystr(path)} are not finite"
            )
    moved = max(
        float(np.max(np.abs(np.asarray(p[-1], np.float64) - np.asarray(p[0], np.float64))))
        for p in jax.tree.leaves(run.optax_params)
    )
    assert moved > min_move, f"the run barely moved: {moved:.3g}"

    assert_trees_close(run.gradtx_updates, run.optax_updates, **tolerance)
    assert_params_close(
        run.gradtx_params, run.optax_params, run.optax_updates, **PARAMS_TOLERANCES[dtype]
    )
    if compare_state:
        assert_same_layout(run.gradtx_state, run.optax_state, **tolerance)
    if same_state is not None:
        ours, theirs = same_state(run.gradtx_state, run.optax_state)
        assert_trees_close(ours, theirs, **tolerance)

    if eager is None:
        eager = dtype == jnp.float32
    if not eager:
        return run
    updates, params, state = run_eager(
        gradtx_tx, dtype, run.grads, run.values, with_value=with_value
    )
    assert_trees_close(updates, run.optax_updates, **tolerance)
    assert_params_close(params, run.optax_params, run.optax_updates, **PARAMS_TOLERANCES[dtype])
    assert jax.tree.structure(state) == jax.tree.structure(run.gradtx_state)
    assert_trees_close(state, run.gradtx_state, **tolerance)
    return run
