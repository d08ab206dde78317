"""A small CNN on the digits data with Flax nnx, nnx.Optimizer and gradtx.adamw.

The same model and optimizer as flax_linen_digits.py: the learning rate decays
exponentially, and weight decay skips biases and LayerNorm scales.
``gradtx.flax.Optimizer`` is ``nnx.Optimizer`` with gradtx's one-pass step where
it applies; ``nnx.Optimizer`` itself works the same way with a gradtx optimizer.

Run: python examples/flax_nnx_digits.py [--epochs 2]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _digits import batches, load, parse_args
from flax import nnx
from tqdm import tqdm

import gradtx
from gradtx.flax import Optimizer

BATCH_SIZE = 32


class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 32, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), strides=(2, 2), rngs=rngs)  # 8x8 -> 4x4
        self.dense = nnx.Linear(4 * 4 * 64, 128, rngs=rngs)
        self.norm = nnx.LayerNorm(128, rngs=rngs)
        self.head = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.conv2(nnx.relu(self.conv1(x))))
        x = x.reshape(x.shape[0], -1)
        return self.head(nnx.relu(self.norm(self.dense(x))))


@nnx.jit
def train_step(model: CNN, optimizer: Optimizer, images: jax.Array, labels: jax.Array):
    def loss_fn(model: CNN) -> jax.Array:
        logits = model(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def accuracy(model: CNN, images: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(model(images), axis=-1) == labels)


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
    model = CNN(nnx.Rngs(args.seed))
    optimizer = Optimizer(model, tx, wrt=nnx.Param)  # nnx.Optimizer with the one-pass step

    rng = np.random.default_rng(args.seed)
    progress = tqdm(range(args.epochs), desc="epochs")
    for _ in progress:
        losses = [
            train_step(model, optimizer, images, labels)
            for images, labels in batches(train_x, train_y, BATCH_SIZE, rng)
        ]
        progress.set_postfix(loss=f"{float(jnp.mean(jnp.stack(losses))):.4f}")
    test_accuracy = float(accuracy(model, test_x, test_y))
    print(
        f"test accuracy: {test_accuracy:.4f} ({int(optimizer.step[...])} steps, "
        f"{time.perf_counter() - start:.1f} s)"
    )
    return test_accuracy


if __name__ == "__main__":
    main()
