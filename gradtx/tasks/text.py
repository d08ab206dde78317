"""Sequence modelling: a character-level GRU language model on Python source.

The corpus is a fixed set of modules from the running interpreter's standard
library, so it is available offline on every machine that runs gradtx.
"""

import pathlib
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.tasks import nn
from gradtx.tasks.base import Task

MODULES = (
    "textwrap.py",
    "heapq.py",
    "bisect.py",
    "colorsys.py",
    "fnmatch.py",
    "shlex.py",
    "string.py",
)
# Printable ASCII plus newline; anything else maps to the last symbol.
ALPHABET = "\n" + "".join(chr(code) for code in range(32, 127))
UNKNOWN = len(ALPHABET)
VOCABULARY = len(ALPHABET) + 1
SEQUENCE_LENGTH = 32
BATCH_SIZE = 32
EMBEDDING = 32
HIDDEN = 64
EVAL_SEQUENCES = 64


def load_corpus(stdlib: str | None = None) -> np.ndarray:
    """The corpus as int32 symbol ids.

    Args:
      stdlib: the standard-library folder; by default the running Python's.

    Returns:
      A 1-D array of symbol ids.

    Raises:
      FileNotFoundError: if none of the modules is found.
    """
    folder = pathlib.Path(stdlib or sysconfig.get_paths()["stdlib"])
    texts = [
        (folder / name).read_text(encoding="utf-8") for name in MODULES if (folder / name).is_file()
    ]
    if not texts:
        raise FileNotFoundError(f"none of {MODULES} found in {folder}")
    lookup = {symbol: index for index, symbol in enumerate(ALPHABET)}
    return np.array([lookup.get(c, UNKNOWN) for c in "\n".join(texts)], dtype=np.int32)


def _split(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """80% train, 10% validation, 10% test, as contiguous stretches."""
    n = len(ids)
    return ids[: int(0.8 * n)], ids[int(0.8 * n) : int(0.9 * n)], ids[int(0.9 * n) :]


def _init(key: jax.Array) -> dict:
    k_embed, k_gates, k_candidate, k_head = jax.random.split(key, 4)
    fan_in = EMBEDDING + HIDDEN
    return {
        "embedding": jax.random.normal(k_embed, (VOCABULARY, EMBEDDING)) * 0.1,
        "gates": nn.dense_init(k_gates, fan_in, 2 * HIDDEN),
        "candidate": nn.dense_init(k_candidate, fan_in, HIDDEN),
        "head": nn.dense_init(k_head, HIDDEN, VOCABULARY),
    }


def _logits(params: dict, inputs: jax.Array) -> jax.Array:
    """Next-symbol logits for every position of ``inputs`` (batch, time)."""
    embedded = params["embedding"][inputs]

    def gru_step(hidden: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        both = jnp.concatenate([x, hidden], axis=-1)
        update, reset = jnp.split(jax.nn.sigmoid(nn.dense(params["gates"], both)), 2, axis=-1)
        candidate = jnp.tanh(
            nn.dense(params["candidate"], jnp.concatenate([x, reset * hidden], axis=-1))
        )
        hidden = (1 - update) * hidden + update * candidate
        return hidden, hidden

    initial = jnp.zeros((inputs.shape[0], HIDDEN))
    _, hiddens = jax.lax.scan(gru_step, initial, jnp.swapaxes(embedded, 0, 1))
    return nn.dense(params["head"], jnp.swapaxes(hiddens, 0, 1))


def _sequence_loss(params: dict, windows: jax.Array) -> jax.Array:
    return nn.cross_entropy(_logits(params, windows[:, :-1]), windows[:, 1:])


def _fixed_windows(ids: np.ndarray) -> jax.Array:
    """Evenly spaced evaluation windows, the same for every run."""
    starts = np.linspace(0, len(ids) - SEQUENCE_LENGTH - 2, EVAL_SEQUENCES).astype(int)
    return jnp.asarray(np.stack([ids[s : s + SEQUENCE_LENGTH + 1] for s in starts]))


def make_task() -> Task:
    """The ``text`` task: score = test perplexity (lower is better)."""
    train_ids, validation_ids, test_ids = _split(load_corpus())
    train_device = jnp.asarray(train_ids)
    train_eval, validation_eval, test_eval = (
        _fixed_windows(ids) for ids in (train_ids, validation_ids, test_ids)
    )
    offsets = jnp.arange(SEQUENCE_LENGTH + 1)[None, :]

    def sample_batch(key: jax.Array) -> jax.Array:
        starts = jax.random.randint(key, (BATCH_SIZE, 1), 0, len(train_ids) - SEQUENCE_LENGTH - 1)
        return train_device[starts + offsets]

    def loss(params: dict, windows: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        del key
        value = _sequence_loss(params, windows)
        return value, value

    def evaluate(params: dict) -> dict[str, jax.Array]:
        train_loss = _sequence_loss(params, train_eval)
        test_loss = _sequence_loss(params, test_eval)
        return {
            "train_loss": train_loss,
            "test_loss": test_loss,
            "train_perplexity": jnp.exp(train_loss),
            "test_perplexity": jnp.exp(test_loss),
        }

    return Task(
        name="text",
        description="character-level GRU language model on Python standard-library source",
        init_params=_init,
        sample_batch=sample_batch,
        loss=loss,
        evaluate=evaluate,
        score_name="test_perplexity",
        higher_is_better=False,
        curve_name="train loss",
        curve_target=2.2,
        curve_higher_is_better=False,
        steps=300,
        eval_every=30,
        train_score_name="train_perplexity",
        validation_loss=lambda params: _sequence_loss(params, validation_eval),
    )
