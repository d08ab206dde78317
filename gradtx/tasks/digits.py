"""Image classification: a small CNN on scikit-learn's bundled 8x8 digits."""

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.tasks import nn
from gradtx.tasks.base import Task

BATCH_SIZE = 64
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1

Split = tuple[np.ndarray, np.ndarray]


def load_digits_split(seed: int = 0) -> tuple[Split, Split, Split]:
    """The 1,797 digits images (scaled to [0, 1], NHWC) in three fixed splits.

    The data ship with scikit-learn, so nothing is downloaded. 20% is the test
    split, 10% a validation split (used by ``tune-lr``), the rest trains.

    Args:
      seed: seed of the fixed shuffle that makes the splits.

    Returns:
      ``((train_x, train_y), (validation_x, validation_y), (test_x, test_y))``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(len(labels) * TEST_FRACTION)
    n_validation = int(len(labels) * VALIDATION_FRACTION)
    test = order[:n_test]
    validation = order[n_test : n_test + n_validation]
    train = order[n_test + n_validation :]
    return (
        (images[train], labels[train]),
        (images[validation], labels[validation]),
        (images[test], labels[test]),
    )


def _init(key: jax.Array) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "conv1": nn.conv_init(k1, 1, 16),
        "conv2": nn.conv_init(k2, 16, 32),
        "head": nn.dense_init(k3, 4 * 4 * 32, 10),
    }


def _logits(params: dict, images: jax.Array) -> jax.Array:
    x = jax.nn.relu(nn.conv(params["conv1"], images))
    x = jax.nn.relu(nn.conv(params["conv2"], x, stride=2))
    return nn.dense(params["head"], x.reshape(x.shape[0], -1))


def make_task() -> Task:
    """The ``digits`` task: 10-way classification, score = test accuracy."""
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = jax.tree.map(
        jnp.asarray, load_digits_split()
    )

    def sample_batch(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        index = jax.random.randint(key, (BATCH_SIZE,), 0, train_x.shape[0])
        return train_x[index], train_y[index]

    def loss(
        params: dict, batch: tuple[jax.Array, jax.Array], key: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        del key
        images, labels = batch
        value = nn.cross_entropy(_logits(params, images), labels)
        return value, value

    def evaluate(params: dict) -> dict[str, jax.Array]:
        train_logits = _logits(params, train_x)
        test_logits = _logits(params, test_x)
        return {
            "train_loss": nn.cross_entropy(train_logits, train_y),
            "test_loss": nn.cross_entropy(test_logits, test_y),
            "train_accuracy": nn.accuracy(train_logits, train_y),
            "test_accuracy": nn.accuracy(test_logits, test_y),
        }

    return Task(
        name="digits",
        description="small CNN on scikit-learn's 8x8 digits (1,259 train / 359 test images)",
        init_params=_init,
        sample_batch=sample_batch,
        loss=loss,
        evaluate=evaluate,
        score_name="test_accuracy",
        higher_is_better=True,
        curve_name="train loss",
        curve_target=0.3,
        curve_higher_is_better=False,
        steps=300,
        eval_every=30,
        train_score_name="train_accuracy",
        validation_loss=lambda params: nn.cross_entropy(_logits(params, val_x), val_y),
    )
