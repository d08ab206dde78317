"""A small CNN on the digits data with Flax linen, TrainState and gradtx.adamw.

The learning rate decays exponentially, and weight decay skips biases and
LayerNorm scales (a ``path_mask``, which also makes the optimizer serializable).
``gradtx.flax.TrainState`` is Flax's TrainState with gradtx's one-pass step
(where it applies) and the optimizer as data (a new learning rate does not
retrace); ``flax.training.train_state.TrainState`` works the same way with it.

Run: python examples/flax_linen_digits.py [--epochs 2]
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _digits import batches, load, parse_args
from tqdm import tqdm

import gradtx
from gradtx.flax import TrainState

BATCH_SIZE = 32


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(x))  # 8x8 -> 4x4
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.LayerNorm()(nn.Dense(128)(x)))
        return nn.Dense(10)(x)


@jax.jit
def train_step(state: TrainState, images: jax.Array, labels: jax.Array):
    def loss_fn(params):
        logits = state.apply_fn({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


@jax.jit
def accuracy(state: TrainState, images: jax.Array, labels: jax.Array) -> jax.Array:
    logits = state.apply_fn({"params": state.params}, images)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def main() -> float:
    args = parse_args(__doc__.splitlines()[0], epochs=10)
    start = time.perf_counter()
    train_x, train_y, test_x, test_y = load(args.seed)
    steps_per_epoch = len(train_y) // BATCH_SIZE
    tx = gradtx.adamw(
        learning_rate=gradtx.exponential_decay(
            init_value=3e-3, transition_steps=steps_per_epoch, decay_rate=0.8
        ),
        weight_decay=1e-4,
        mask=gradtx.path_mask(exclude=[r"bias$", r"scale$"]),
    )
    print(tx)
    model = CNN()
    params = model.init(jax.random.PRNGKey(args.seed), train_x[:1])["params"]
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    rng = np.random.default_rng(args.seed)
    progress = tqdm(range(args.epochs), desc="epochs")
    for _ in progress:
        losses = []
        for images, labels in batches(train_x, train_y, BATCH_SIZE, rng):
            state, loss = train_step(state, images, labels)
            losses.append(loss)
        progress.set_postfix(loss=f"{float(jnp.mean(jnp.stack(losses))):.4f}")
    test_accuracy = float(accuracy(state, test_x, test_y))
    print(
        f"test accuracy: {test_accuracy:.4f} ({int(state.step)} steps, "
        f"{time.perf_counter() - start:.1f} s)"
    )
    return test_accuracy


if __name__ == "__main__":
    main()
