"""gradtx optimizers drive Flax training exactly as the Optax equivalents do.

Both Flax APIs keep the optimizer as a static attribute (Linen's ``TrainState.tx``
is ``pytree_node=False``; ``nnx.Optimizer`` stores ``tx`` as static), so a gradtx
value must be hashable and comparable; it must also behave like Optax inside.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import gradtx

STEPS = 100
LEARNING_RATE = 1e-2
WEIGHT_DECAY = 0.1


def _data() -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-2.0, 2.0, size=(128, 4))
    targets = np.sin(inputs[:, :1]) + 0.5 * inputs[:, 1:2] * inputs[:, 2:3] - 0.3 * inputs[:, 3:]
    return jnp.asarray(inputs, jnp.float32), jnp.asarray(targets, jnp.float32)


INPUTS, TARGETS = _data()


def is_bias(path: Any) -> bool:
    return jax.tree_util.keystr(path).endswith("['bias']")


def decay_all_but_biases(params: Any) -> Any:
    """A callable weight-decay mask: True for kernels, False for biases."""
    return jax.tree_util.tree_map_with_path(lambda path, _: not is_bias(path), params)


def _gradtx_adamw(mask: Any = decay_all_but_biases) -> Any:
    return gradtx.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY, mask=mask)


def _optax_adamw(mask: Any = decay_all_but_biases) -> Any:
    return optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY, mask=mask)


def _assert_trees_close(actual: Any, expected: Any, rtol: float, atol: float) -> None:
    actual_leaves = jax.tree_util.tree_leaves_with_path(actual)
    expected_leaves = jax.tree.leaves(expected)
    assert len(actual_leaves) == len(expected_leaves)
    for (path, a), e in zip(actual_leaves, expected_leaves):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


# --- Linen + TrainState ---------------------------------------------------------


class LinenMLP(nn.Module):
    hidden: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(1)(jnp.tanh(nn.Dense(self.hidden)(x)))


LINEN_MODEL = LinenMLP()


def _linen_params() -> Any:
    return LINEN_MODEL.init(jax.random.key(0), INPUTS[:1])["params"]


@jax.jit
def _linen_train_step(state: train_state.TrainState) -> tuple[Any, jax.Array]:
    def loss_fn(params):
        predictions = state.apply_fn({"params": params}, INPUTS)
        return jnp.mean((predictions - TARGETS) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def _train_linen(tx: Any) -> tuple[Any, list[float]]:
    state = train_state.TrainState.create(apply_fn=LINEN_MODEL.apply, params=_linen_params(), tx=tx)
    losses = []
    for _ in range(STEPS):
        state, loss = _linen_train_step(state)
        losses.append(float(loss))
    return state, losses


def test_train_state_with_gradtx_adamw_matches_optax():
    state, losses = _train_linen(_gradtx_adamw())
    reference_state, reference_losses = _train_linen(_optax_adamw())
    assert losses[-1] < 0.2 * losses[0]
    assert int(state.step) == STEPS
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5, atol=1e-7)
    _assert_trees_close(state.params, reference_state.params, rtol=1e-5, atol=1e-6)
    # gradtx's state has Optax's structure, field for field.
    adam_state = state.opt_state[0]
    reference_adam_state = reference_state.opt_state[0]
    assert int(adam_state.count) == int(reference_adam_state.count) == STEPS
    _assert_trees_close(adam_state.mu, reference_adam_state.mu, rtol=1e-4, atol=1e-7)
    _assert_trees_close(adam_state.nu, reference_adam_state.nu, rtol=1e-4, atol=1e-9)


def test_train_state_step_is_traced_once_for_equal_optimizers():
    traces = [0]

    @jax.jit
    def step(state):
        traces[0] += 1
        grads = jax.tree.map(jnp.ones_like, state.params)
        return state.apply_gradients(grads=grads)

    for _ in range(2):  # a new but equal optimizer each time: same static tx
        state = train_state.TrainState.create(
            apply_fn=LINEN_MODEL.apply, params=_linen_params(), tx=_gradtx_adamw()
        )
        step(step(state))
    assert traces[0] == 1


def _with_nonzero_biases(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda path, p: p + 0.5 if is_bias(path) else p, params)


@pytest.mark.parametrize("make_tx", [_gradtx_adamw, _optax_adamw], ids=["gradtx", "optax"])
def test_train_state_mask_keeps_biases_out_of_weight_decay(make_tx):
    params = _with_nonzero_biases(_linen_params())
    zero_grads = jax.tree.map(jnp.zeros_like, params)

    masked = train_state.TrainState.create(apply_fn=None, params=params, tx=make_tx())
    masked = masked.apply_gradients(grads=zero_grads)
    unmasked = train_state.TrainState.create(apply_fn=None, params=params, tx=make_tx(None))
    unmasked = unmasked.apply_gradients(grads=zero_grads)

    for (path, new), old, new_unmasked in zip(
        jax.tree_util.tree_leaves_with_path(masked.params),
        jax.tree.leaves(params),
        jax.tree.leaves(unmasked.params),
    ):
        old = np.asarray(old)
        decayed = old * (1 - LEARNING_RATE * WEIGHT_DECAY)
        np.testing.assert_allclose(new_unmasked, decayed, rtol=1e-6)
        if is_bias(path):
            np.testing.assert_array_equal(new, old)
            assert np.all(old != 0)
        else:
            np.testing.assert_allclose(new, decayed, rtol=1e-6)
            assert not np.allclose(new, old, rtol=1e-4, atol=0)


# --- NNX + nnx.Optimizer ----------------------------------------------------------


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.hidden = nnx.Linear(4, 32, rngs=rngs)
        self.out = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jnp.tanh(self.hidden(x)))


@nnx.jit
def _nnx_train_step(model: NnxMLP, optimizer: nnx.Optimizer) -> jax.Array:
    def loss_fn(model):
        return jnp.mean((model(INPUTS) - TARGETS) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def _train_nnx(tx: Any) -> tuple[NnxMLP, nnx.Optimizer, list[float]]:
    model = NnxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    losses = [float(_nnx_train_step(model, optimizer)) for _ in range(STEPS)]
    return model, optimizer, losses


def test_nnx_optimizer_with_gradtx_adamw_matches_optax():
    tx = _gradtx_adamw()
    model, optimizer, losses = _train_nnx(tx)
    reference_model, _, reference_losses = _train_nnx(_optax_adamw())
    assert losses[-1] < 0.2 * losses[0]
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5, atol=1e-7)
    _assert_trees_close(
        nnx.state(model, nnx.Param), nnx.state(reference_model, nnx.Param), rtol=1e-5, atol=1e-6
    )
    assert int(optimizer.step[...]) == STEPS
    # The optimizer keeps the value it was given (as a static attribute).
    assert optimizer.tx == _gradtx_adamw()
    assert optimizer.tx is tx


def test_nnx_optimizer_mask_keeps_biases_out_of_weight_decay():
    model = NnxMLP(nnx.Rngs(0))
    model.hidden.bias[...] = jnp.full((32,), 0.5)
    model.out.bias[...] = jnp.full((1,), -0.5)
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    optimizer = nnx.Optimizer(model, _gradtx_adamw(), wrt=nnx.Param)
    zero_grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    optimizer.update(model, zero_grads)
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for layer in ("hidden", "out"):
        np.testing.assert_array_equal(after[layer]["bias"], before[layer]["bias"])
        assert np.all(before[layer]["bias"] != 0)
        np.testing.assert_allclose(
            after[layer]["kernel"],
            before[layer]["kernel"] * (1 - LEARNING_RATE * WEIGHT_DECAY),
            rtol=1e-6,
        )
        assert not np.allclose(after[layer]["kernel"], before[layer]["kernel"], rtol=1e-4, atol=0)


def test_nnx_optimizer_accepts_a_path_mask_value():
    mask = gradtx.path_mask(exclude=[r"bias$"])
    model, _, losses = _train_nnx(_gradtx_adamw(mask))
    reference_model, _, reference_losses = _train_nnx(_optax_adamw())
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5, atol=1e-7)
    _assert_trees_close(
        nnx.state(model, nnx.Param), nnx.state(reference_model, nnx.Param), rtol=1e-5, atol=1e-6
    )
