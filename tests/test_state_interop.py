"""A run trained with Optax resumes with gradtx from its checkpoint, and back.

A small Flax Linen model is trained with ``TrainState`` and an Optax optimizer
for ``FIRST`` steps; the state is saved with ``flax.serialization.to_bytes`` or
with Orbax, restored into a ``TrainState`` built with the gradtx optimizer of
the same name (the gradtx state as the target), and trained ``THEN`` more
steps. Params and optimizer state must equal those of an uninterrupted
all-Optax run. The reverse (gradtx first, Optax after) must hold too. This
works because each gradtx state has exactly Optax's layout: the same
NamedTuple names and fields, the same leaves in the same order.

Hyperparameters are Python floats on both sides, and the jitted step closes
over ``tx`` (``TrainState.tx`` is static), so both compile the same constants.
"""

from collections.abc import Callable
from functools import cache
from typing import Any

import flax.linen as nn
import interop_trees
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import serialization
from flax.training import train_state
from interop_trees import layout

import gradtx

FIRST = 10
THEN = 10
# Both libraries run the same float32 operations; the margin covers XLA
# ordering or fusing them differently (a few units in the last place).
RTOL = 1e-6
ATOL = 1e-7


class _Model(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(2)(jnp.tanh(nn.Dense(4)(x)))


MODEL = _Model()
INPUTS = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)), jnp.float32)
TARGETS = jnp.asarray(np.random.default_rng(1).normal(size=(8, 2)), jnp.float32)
# Jitted: an eager init would compile each of its operations at collection.
PARAMS = jax.jit(MODEL.init)(jax.random.key(0), INPUTS)["params"]
NO_BIAS_DECAY = {
    "Dense_0": {"kernel": True, "bias": False},
    "Dense_1": {"kernel": True, "bias": False},
}


def _kernels_only(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, _: jax.tree_util.keystr(path).endswith("['kernel']"), params
    )


def _warmup_cosine(library: Any) -> Any:
    return library.warmup_cosine_decay_schedule(0.0, 2e-2, 4, FIRST + THEN, 1e-3)


def _clip_then_adamw(library: Any) -> Any:
    if library is gradtx and not hasattr(gradtx, "clip_by_global_norm"):
        pytest.skip("gradtx.clip_by_global_norm does not exist yet")
    return library.chain(
        library.clip_by_global_norm(1.0),
        library.adamw(
            _warmup_cosine(library),
            weight_decay=library.linear_schedule(0.1, 0.01, FIRST + THEN),
            mask=_kernels_only,
        ),
    )


# Each factory builds the same optimizer from either library's names.
OPTIMIZERS: dict[str, Callable[[Any], Any]] = {
    "adam": lambda library: library.adam(1e-2),
    "adamw": lambda library: library.adamw(1e-2, weight_decay=0.1),
    "adamw schedule, mask tree": lambda library: library.adamw(
        _warmup_cosine(library), weight_decay=0.1, mask=NO_BIAS_DECAY
    ),
    "sgd momentum nesterov": lambda library: library.sgd(5e-2, momentum=0.9, nesterov=True),
    "chain clip_by_global_norm, adamw schedules, mask callable": _clip_then_adamw,
}


@cache
def _tx(library_name: str, name: str) -> Any:
    # One object per optimizer, so the jitted step (which keys on the static
    # tx) compiles once for it however many tests use it.
    return OPTIMIZERS[name]({"gradtx": gradtx, "optax": optax}[library_name])


def _new_state(tx: Any) -> train_state.TrainState:
    return train_state.TrainState.create(apply_fn=MODEL.apply, params=PARAMS, tx=tx)


@jax.jit
def _step(state: train_state.TrainState) -> train_state.TrainState:
    def loss(params: Any) -> jax.Array:
        return jnp.mean((state.apply_fn({"params": params}, INPUTS) - TARGETS) ** 2)

    return state.apply_gradients(grads=jax.grad(loss)(state.params))


def _train(state: train_state.TrainState, steps: int) -> train_state.TrainState:
    # Plain uncommitted arrays of unchanged dtypes: TrainState.create's Python-int
    # step, from_bytes' NumPy arrays and Orbax's committed arrays would otherwise
    # each compile _step anew (the values are untouched).
    state = jax.tree.map(lambda x: jnp.asarray(np.asarray(x), dtype=jnp.result_type(x)), state)
    for _ in range(steps):
        state = _step(state)
    return state


@cache
def _run(library_name: str, name: str) -> tuple[train_state.TrainState, train_state.TrainState]:
    """An uninterrupted run: the state after FIRST steps and after FIRST + THEN."""
    halfway = _train(_new_state(_tx(library_name, name)), FIRST)
    return halfway, _train(halfway, THEN)


def _save_and_restore(fmt: str, state: Any, target: Any, tmp_path: Any) -> Any:
    if fmt == "flax bytes":
        return serialization.from_bytes(target, serialization.to_bytes(state))
    path = tmp_path / "checkpoint"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, state)
        checkpointer.wait_until_finished()
        if fmt == "orbax, abstract target":
            target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return checkpointer.restore(path, target)


def _assert_same_train_state(actual: Any, expected: Any, rtol: float, atol: float) -> None:
    assert int(actual.step) == int(expected.step)
    interop_trees.assert_trees_close(actual.params, expected.params, rtol=rtol, atol=atol)
    interop_trees.assert_same_state(actual.opt_state, expected.opt_state, rtol=rtol, atol=atol)


@pytest.mark.parametrize("fmt", ["flax bytes", "orbax, abstract target"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_an_optax_run_resumes_with_gradtx(name, fmt, tmp_path):
    trained, expected = _run("optax", name)
    target = _new_state(_tx("gradtx", name))
    restored = _save_and_restore(fmt, trained, target, tmp_path)
    assert restored.tx is target.tx
    assert jax.tree.structure(restored) == jax.tree.structure(target)  # gradtx's own classes
    _assert_same_train_state(restored, trained, rtol=0, atol=0)
    resumed = _train(restored, THEN)
    _assert_same_train_state(resumed, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("fmt", ["flax bytes", "orbax, concrete target"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_gradtx_run_resumes_with_optax(name, fmt, tmp_path):
    trained, _ = _run("gradtx", name)
    _, expected = _run("optax", name)
    target = _new_state(_tx("optax", name))
    restored = _save_and_restore(fmt, trained, target, tmp_path)
    assert jax.tree.structure(restored) == jax.tree.structure(target)  # Optax's own classes
    _assert_same_train_state(restored, trained, rtol=0, atol=0)
    resumed = _train(restored, THEN)
    _assert_same_train_state(resumed, expected, rtol=RTOL, atol=ATOL)


def test_the_resumed_state_has_one_count_for_adamw_with_a_constant_rate():
    trained, _ = _run("optax", "adamw")
    restored = serialization.from_bytes(
        _new_state(_tx("gradtx", "adamw")), serialization.to_bytes(trained)
    )
    for state in (trained.opt_state, restored.opt_state):
        assert int(optax.tree.get(state, "count")) == FIRST
        assert int(gradtx.tree_get(state, "count")) == FIRST
    assert layout(restored.opt_state) == layout(trained.opt_state)


def test_a_state_of_another_optimizer_is_refused():
    """The layouts are strict enough that a mismatch is caught, not silently loaded."""
    trained, _ = _run("optax", "sgd momentum nesterov")
    with pytest.raises(ValueError, match="mu|nu|count|fields"):
        serialization.from_bytes(_new_state(_tx("gradtx", "adam")), serialization.to_bytes(trained))
