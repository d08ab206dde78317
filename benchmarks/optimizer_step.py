"""Optimizer.step against a hand-written jitted, donated AdamW step.

Both run the same gradtx.adamw on the same parameters in the same process. Each
repeat times a block of steps (ending with ``block_until_ready``); the two
contenders alternate repeat by repeat so a busy machine slows both alike. The
table gives the median time per step over the repeats and the ratio
Optimizer.step / hand-written step, which should stay below 1.1.

Run: python benchmarks/optimizer_step.py [--repeats 30] [--steps 20] [--out FILE.json]
Writes benchmarks/results/optimizer_step.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax

import gradtx

# name -> leaf shapes: a small MLP (overhead-dominated) and a ~4M-parameter one.
SIZES: dict[str, list[tuple[int, ...]]] = {
    "small (8 leaves, 68k params)": [
        (64, 256),
        (256,),
        (256, 128),
        (128,),
        (128, 64),
        (64,),
        (64, 10),
        (10,),
    ],
    "large (8 leaves, 4.2M params)": [
        (512, 2048),
        (2048,),
        (2048, 1024),
        (1024,),
        (1024, 512),
        (512,),
        (512, 10),
        (10,),
    ],
}


def make_tree(shapes: list[tuple[int, ...]], seed: int) -> dict[str, jax.Array]:
    keys = jax.random.split(jax.random.PRNGKey(seed), len(shapes))
    return {f"leaf{i}": jax.random.normal(k, s) for i, (k, s) in enumerate(zip(keys, shapes))}


def time_block(run_steps: Callable[[], Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(run_steps())
    return time.perf_counter() - start


def measure(shapes: list[tuple[int, ...]], repeats: int, steps: int) -> dict[str, float]:
    tx = gradtx.adamw(learning_rate=1e-3, weight_decay=1e-4)
    grads = make_tree(shapes, seed=1)

    def hand_step_fn(tx, params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    hand_step = jax.jit(hand_step_fn, donate_argnums=(1, 2))
    hand = {"params": make_tree(shapes, seed=0)}
    hand["state"] = tx.init(hand["params"])

    def run_hand() -> Any:
        for _ in range(steps):
            hand["params"], hand["state"] = hand_step(tx, hand["params"], hand["state"], grads)
        return hand["params"]

    opt = gradtx.Optimizer(tx, make_tree(shapes, seed=0))

    def run_optimizer() -> Any:
        for _ in range(steps):
            opt.step(grads)
        return opt.params

    for run in (run_hand, run_optimizer):  # compile and warm up
        time_block(run)
    hand_times, optimizer_times = [], []
    for _ in range(repeats):
        hand_times.append(time_block(run_hand) / steps)
        optimizer_times.append(time_block(run_optimizer) / steps)
    assert opt.compile_count == 1, opt.compile_count
    hand_median = statistics.median(hand_times)
    optimizer_median = statistics.median(optimizer_times)
    return {
        "hand_written_step_us": hand_median * 1e6,
        "optimizer_step_us": optimizer_median * 1e6,
        "ratio": optimizer_median / hand_median,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).parent / "results" / "optimizer_step.json",
    )
    args = parser.parse_args()
    results = {name: measure(shapes, args.repeats, args.steps) for name, shapes in SIZES.items()}
    print(f"{'model':32} {'hand-written':>14} {'Optimizer.step':>15} {'ratio':>7}")
    for name, row in results.items():
        print(
            f"{name:32} {row['hand_written_step_us']:11.1f} us {row['optimizer_step_us']:12.1f} us "
            f"{row['ratio']:7.3f}"
        )
    report = {
        "benchmark": "Optimizer.step vs hand-written jitted donated step (gradtx.adamw)",
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "jax": jax.__version__,
        "devices": [str(device) for device in jax.devices()],
        "machine": platform.machine(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
