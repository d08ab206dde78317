"""One vmapped sweep of N trials against N separate runs.

    python benchmarks/sweep_speedup.py [--task digits] [--trials 16] [--steps 200] [--repeats 3]

Four ways to train N learning rates of Adam on a task:
  vmapped      one compiled program, trials on a vmap axis (what `gradtx sweep` does);
  step loop    N runs of the usual training loop: Python calls a jitted step per step
               (the optimizer is an argument, so it compiles once for all trials);
  scan runs    N runs of the whole training compiled as one scan, reused for every
               trial (the best case for separate runs);
  closures     N runs each compiled anew, as when the optimizer is a closure over its
               learning rate (Optax); one repeat only.
Run times are medians over --repeats. Writes benchmarks/results/sweep_speedup.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import numpy as np

import gradtx
from gradtx.experiments.training import make_run, seed_keys, stack
from gradtx.tasks import get_task


def _timed(function, *args):
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    return time.perf_counter() - start


def _initial(task, tx, key):
    init_key, train_key = jax.random.split(key)
    params = task.init_params(init_key)
    return params, tx.init(params), train_key


def _train_step(task):
    # The same step as gradtx.experiments.training.make_run, called from Python.
    def step(tx, params, state, key):
        key, batch_key, loss_key = jax.random.split(key, 3)
        grads, _ = jax.grad(task.loss, has_aux=True)(params, task.sample_batch(batch_key), loss_key)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, key

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    task = get_task(args.task)
    run = make_run(task, args.steps, eval_every=args.steps)
    key = seed_keys(1)[0]
    learning_rates = np.geomspace(1e-4, 1e-1, args.trials)
    optimizers = [gradtx.adam(float(lr)) for lr in learning_rates]

    vmapped = jax.jit(jax.vmap(run, in_axes=(0, None)))
    batched = stack(optimizers)
    start = time.perf_counter()
    vmapped_compiled = vmapped.lower(batched, key).compile()
    vmapped_compile = time.perf_counter() - start
    vmapped_times = [_timed(vmapped_compiled, batched, key) for _ in range(args.repeats)]

    single = jax.jit(run)
    start = time.perf_counter()
    single_compiled = single.lower(optimizers[0], key).compile()
    single_compile = time.perf_counter() - start
    separate_times = [
        sum(_timed(single_compiled, tx, key) for tx in optimizers) for _ in range(args.repeats)
    ]

    step_loop = jax.jit(_train_step(task))
    init = jax.jit(lambda tx, key: _initial(task, tx, key))
    evaluate = jax.jit(task.evaluate)

    def loop_run(tx):
        params, state, train_key = init(tx, key)
        for _ in range(args.steps):
            params, state, train_key = step_loop(tx, params, state, train_key)
        return evaluate(params)

    start = time.perf_counter()
    jax.block_until_ready(loop_run(optimizers[0]))
    loop_compile = time.perf_counter() - start  # includes one run
    loop_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for tx in optimizers:
            jax.block_until_ready(loop_run(tx))
        loop_times.append(time.perf_counter() - start)

    closure_total = 0.0
    for tx in optimizers:
        closed = jax.jit(lambda k, tx=tx: run(tx, k))
        start = time.perf_counter()
        jax.block_until_ready(closed(key))
        closure_total += time.perf_counter() - start

    vmapped_run = statistics.median(vmapped_times)
    separate_run = statistics.median(separate_times)
    loop_run_time = statistics.median(loop_times)
    rows = [
        ("vmapped (1 program)", vmapped_compile, vmapped_run, vmapped_compile + vmapped_run),
        ("step loop", loop_compile, loop_run_time, loop_compile + loop_run_time),
        ("scan runs", single_compile, separate_run, single_compile + separate_run),
        ("closures, N compiles", float("nan"), float("nan"), closure_total),
    ]
    print(
        f"{args.trials} trials x {args.steps} steps of adam on {args.task}, "
        f"{platform.processor() or platform.machine()}, {jax.device_count()} "
        f"{jax.default_backend()} device(s)"
    )
    print(f"{'way':24} {'compile s':>10} {'run s (median)':>15} {'total s':>9}")
    for name, compile_s, run_s, total in rows:
        print(f"{name:24} {compile_s:10.2f} {run_s:15.2f} {total:9.2f}")
    vmapped_total = vmapped_compile + vmapped_run
    print("\nspeed-up of the vmapped sweep (other way's time / vmapped time):")
    print(
        f"  vs step loop,  run only {loop_run_time / vmapped_run:5.2f}x, "
        f"with compile {(loop_compile + loop_run_time) / vmapped_total:5.2f}x"
    )
    print(
        f"  vs scan runs,  run only {separate_run / vmapped_run:5.2f}x, "
        f"with compile {(single_compile + separate_run) / vmapped_total:5.2f}x"
    )
    print(f"  vs closures,   with compile {closure_total / vmapped_total:5.2f}x")

    out = pathlib.Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sweep_speedup.json").write_text(
        json.dumps(
            {
                "trials": args.trials,
                "steps": args.steps,
                "repeats": args.repeats,
                "vmapped": {
                    "compile": vmapped_compile,
                    "run_median": vmapped_run,
                    "runs": vmapped_times,
                },
                "separate": {
                    "compile": single_compile,
                    "run_median": separate_run,
                    "runs": separate_times,
                },
                "step_loop": {
                    "compile_and_first_run": loop_compile,
                    "run_median": loop_run_time,
                    "runs": loop_times,
                },
                "closures_total": closure_total,
                "task": args.task,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
