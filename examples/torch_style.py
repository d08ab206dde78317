"""The torch.optim way: a stateful gradtx.Optimizer with gradient accumulation.

Each optimizer step averages the gradients of 4 micro-batches (``accumulate``,
then ``step()``, then ``zero_grad()``). Halfway through, the run is saved to a
checkpoint, a new Optimizer is built as a restarted process would, and the run
resumes from the checkpoint. The MLP, its loss and the data come from ``_digits.py``.

Run: python examples/torch_style.py [--epochs 2]
"""

from __future__ import annotations

import pathlib
import tempfile
import time

import jax
import numpy as np
from _digits import accuracy, batches, cross_entropy, init_mlp, load, parse_args
from tqdm import tqdm

import gradtx

MICRO_BATCH = 8
ACCUMULATION_STEPS = 4  # an effective batch of 32

loss_and_grads = jax.jit(jax.value_and_grad(cross_entropy))


def new_optimizer(seed: int) -> gradtx.Optimizer:
    tx = gradtx.adamw(
        learning_rate=gradtx.exponential_decay(3e-3, transition_steps=200, decay_rate=0.5),
        weight_decay=1e-4,
    )
    return gradtx.Optimizer(tx, init_mlp(jax.random.PRNGKey(seed)))


def train_epoch(opt: gradtx.Optimizer, train_x, train_y, rng: np.random.Generator) -> float:
    for images, labels in batches(train_x, train_y, MICRO_BATCH * ACCUMULATION_STEPS, rng):
        opt.zero_grad()
        for micro_images, micro_labels in zip(
            np.split(images, ACCUMULATION_STEPS), np.split(labels, ACCUMULATION_STEPS)
        ):
            loss, grads = loss_and_grads(opt.params, micro_images, micro_labels)
            opt.accumulate(grads)
        opt.step()  # applies the mean of the accumulated gradients
    return float(loss)


def main() -> float:
    args = parse_args(__doc__.splitlines()[0], epochs=20)
    start = time.perf_counter()
    train_x, train_y, test_x, test_y = load(args.seed)
    rng = np.random.default_rng(args.seed)
    checkpoint_dir = tempfile.TemporaryDirectory()
    checkpoint = pathlib.Path(checkpoint_dir.name) / "digits.ckpt"

    opt = new_optimizer(args.seed)
    progress = tqdm(range(args.epochs), desc="epochs")
    for epoch in progress:
        if epoch == args.epochs // 2:
            gradtx.save_checkpoint(checkpoint, opt.params, opt.state, opt.tx, step=opt.step_count)
            # As a restarted process would: a fresh optimizer, then the checkpoint.
            # restore_checkpoint refuses a different optimizer config or model.
            opt = new_optimizer(seed=args.seed + 1)
            opt.load_state_dict(
                gradtx.restore_checkpoint(checkpoint, tx=opt.tx, params_like=opt.params)
            )
            progress.write(f"resumed from {checkpoint.name} at step {opt.step_count}")
        loss = train_epoch(opt, train_x, train_y, rng)
        progress.set_postfix(loss=f"{loss:.4f}", lr=f"{opt.learning_rate:.2e}")
    checkpoint_dir.cleanup()
    test_accuracy = float(accuracy(opt.params, test_x, test_y))
    print(f"Optimizer.step compiled {opt.compile_count} time(s) in {opt.step_count} steps")
    print(f"test accuracy: {test_accuracy:.4f} ({time.perf_counter() - start:.1f} s)")
    return test_accuracy


if __name__ == "__main__":
    main()
