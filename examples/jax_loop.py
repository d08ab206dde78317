"""A pure-JAX research loop: the optimizer is an argument of the jitted step.

The step donates the params and optimizer-state buffers (updated in place) and
takes ``tx`` like any other pytree, so halfway through the run the learning rate
is lowered with ``dataclasses.replace`` and the step is not compiled again.
The MLP, its loss and the data come from ``_digits.py``.

Run: python examples/jax_loop.py [--epochs 2]
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import numpy as np
from _digits import accuracy, batches, cross_entropy, init_mlp, load, parse_args
from tqdm import tqdm

import gradtx

BATCH_SIZE = 32
compile_count = 0  # incremented while the step is traced, i.e. once per compilation


@functools.partial(jax.jit, donate_argnums=(1, 2))
def train_step(tx: gradtx.Transformation, params, state, images, labels):
    global compile_count
    compile_count += 1
    loss, grads = jax.value_and_grad(cross_entropy)(params, images, labels)
    updates, state = tx.update(grads, state, params)
    return gradtx.apply_updates(params, updates), state, loss


def main() -> float:
    args = parse_args(__doc__.splitlines()[0], epochs=20)
    start = time.perf_counter()
    train_x, train_y, test_x, test_y = load(args.seed)
    tx = gradtx.adamw(learning_rate=3e-3, weight_decay=1e-4)
    params = init_mlp(jax.random.PRNGKey(args.seed))
    state = tx.init(params)

    rng = np.random.default_rng(args.seed)
    progress = tqdm(range(args.epochs), desc="epochs")
    for epoch in progress:
        if epoch == args.epochs // 2:
            # A new optimizer value with a lower learning rate: same pytree
            # structure, new leaf values, so the compiled step is reused.
            tx = dataclasses.replace(tx, learning_rate=tx.learning_rate / 10)
            progress.write(f"epoch {epoch}: learning rate lowered to {tx.learning_rate:g}")
        for images, labels in batches(train_x, train_y, BATCH_SIZE, rng):
            params, state, loss = train_step(tx, params, state, images, labels)
        progress.set_postfix(loss=f"{float(loss):.4f}", lr=f"{tx.learning_rate:g}")
    test_accuracy = float(accuracy(params, test_x, test_y))
    print(f"train_step compiled {compile_count} time(s) for 2 learning rates")
    print(f"test accuracy: {test_accuracy:.4f} ({time.perf_counter() - start:.1f} s)")
    return test_accuracy


if __name__ == "__main__":
    main()
