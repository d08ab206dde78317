"""Shared by the digits examples: data, batches, the command line and a pure-JAX MLP.

scikit-learn ships the 1,797 8x8 digit images, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def load(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as float32 images in [0, 1] (N, 8, 8, 1) and int32 labels.

    Args:
      seed: the seed of the stratified 75/25 train/test split.

    Returns:
      ``(train_images, train_labels, test_images, test_labels)``.
    """
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    return train_x, train_y, test_x, test_y


def batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of shuffled batches, all of ``batch_size`` (the rest is dropped).

    Equal batch shapes keep a jitted step from compiling again.
    """
    order = rng.permutation(len(labels))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        index = order[start : start + batch_size]
        yield images[index], labels[index]


def parse_args(description: str, epochs: int) -> argparse.Namespace:
    """``--epochs`` (fewer for a quick check, as CI does) and ``--seed``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=epochs, help=f"default {epochs}")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def init_mlp(key: jax.Array, sizes: tuple[int, ...] = (64, 256, 10)) -> list[dict[str, jax.Array]]:
    """A ReLU MLP's parameters (He-initialized weights, zero biases), one dict per layer."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]


def logits_of(params: list[dict[str, jax.Array]], images: jax.Array) -> jax.Array:
    """The MLP's logits for a batch of images (flattened)."""
    x = images.reshape(images.shape[0], -1)
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"][None, :])
    return x @ params[-1]["w"] + params[-1]["b"][None, :]


def cross_entropy(
    params: list[dict[str, jax.Array]], images: jax.Array, labels: jax.Array
) -> jax.Array:
    """The MLP's mean cross-entropy loss on a batch."""
    log_probs = jax.nn.log_softmax(logits_of(params, images))
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


@jax.jit
def accuracy(params: list[dict[str, jax.Array]], images: jax.Array, labels: jax.Array) -> jax.Array:
    """The MLP's accuracy on ``images``."""
    return jnp.mean(jnp.argmax(logits_of(params, images), axis=-1) == labels)
