"""Flax's training loop: ``TrainState.apply_gradients``, the step Flax users run.

Three contenders on the same params and gradients, each ``apply_gradients``
jitted with the state donated: Flax's ``TrainState`` with ``optax.adamw``, the
same class with ``gradtx.adamw`` (the plain ``tx.update`` + ``apply_updates``),
and ``gradtx.flax.TrainState`` (``fused_apply``, the one-pass step where it
applies). Two trees: 10M f32 params in 10 leaves, and the small transformer of
``benchmarks/model.py``. Needs flax; skipped without it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import jax

import gradtx
from benchmarks import common, model


def contender(name: str, state: Any, grads: Any) -> common.Contender:
    jitted = jax.jit(lambda s, g: s.apply_gradients(grads=g), donate_argnums=0)
    box = {"state": state}

    def run(steps: int) -> None:
        for _ in range(steps):
            box["state"] = jitted(box["state"], grads)
        jax.block_until_ready(box["state"].params)

    return common.Contender(name, run)


def race(params: Any, grads: Any, quick: bool) -> dict[str, float]:
    import optax
    from flax.training import train_state

    from gradtx.flax import TrainState

    tx = gradtx.adamw(1e-3, weight_decay=0.1)
    contenders = [
        contender(
            "flax TrainState + optax",
            train_state.TrainState.create(
                apply_fn=None,
                params=common.copy_tree(params),
                tx=optax.adamw(1e-3, weight_decay=0.1),
            ),
            grads,
        ),
        contender(
            "flax TrainState + gradtx",
            train_state.TrainState.create(apply_fn=None, params=common.copy_tree(params), tx=tx),
            grads,
        ),
        contender(
            "gradtx.flax.TrainState",
            TrainState.create(apply_fn=None, params=common.copy_tree(params), tx=tx),
            grads,
        ),
    ]
    rounds, steps = (5, 3) if quick else (15, 5)
    return common.race(contenders, rounds, steps)


def run(quick: bool) -> dict[str, Any] | None:
    if importlib.util.find_spec("flax") is None:
        print("skipped: flax is not installed (pip install -e '.[bench]')")
        return None
    shapes = model.transformer_shapes()
    leaves = jax.tree.leaves(shapes)
    treedef = jax.tree.structure(shapes)
    trees = {
        "10M params, 10 leaves": (common.split_tree(10, seed=0), common.split_tree(10, seed=1)),
        "transformer": (
            treedef.unflatten(jax.tree.leaves(common.shaped_tree([x.shape for x in leaves], 0))),
            treedef.unflatten(
                jax.tree.leaves(common.shaped_tree([x.shape for x in leaves], 1, scale=1e-3))
            ),
        ),
    }
    results = {}
    for name, (params, grads) in trees.items():
        times = race(params, grads, quick)
        baseline = times["flax TrainState + optax"]
        results[name] = {
            "seconds_per_step": times,
            "ratio_to_optax": {key: value / baseline for key, value in times.items()},
        }
        print(f"{name}:")
        for key, seconds in times.items():
            print(f"  {key:26} {seconds * 1e3:8.2f} ms  ({seconds / baseline:.2f}x optax)")
    return results
