"""Shared pieces of the performance benchmarks: trees, contenders, timing, the machine.

Timing rule: contenders run in the same process and alternate block by block
(each block is a few steps ended by ``block_until_ready``), so a shared, busy
machine slows all of them alike; the reported figure is the median over blocks
and comparisons are ratios of medians.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gradtx

TOTAL_PARAMS = 10_000_000
PAUSE = 0.02  # seconds of idleness before every timed block

# Bytes that must move per f32 parameter: reads of params, grads and each state
# buffer, writes of params and each state buffer.
BYTES_PER_PARAM = {
    "sgd_momentum": 20,
    "adam": 28,
    "adamw": 28,
    "lion": 20,
    "rmsprop": 20,
    # AdamW's 28, plus the global norm's own read of the grads before the update.
    "transformer_recipe": 32,
}


def decay_every_other_leaf(params: dict[str, Any]) -> dict[str, bool]:
    """The weight-decay mask of the transformer recipe, by leaf name.

    The real recipe decays only leaves with ``ndim >= 2`` (no biases or norm
    scales), but :func:`split_tree` makes only 1-D leaves, so that rule would
    decay nothing and leave the decay out of the step. Decaying every other
    leaf keeps a mixed mask, decayed and undecayed leaves, as in a real model.
    """
    return {name: i % 2 == 0 for i, name in enumerate(sorted(params))}


def transformer_recipe(lib: Any) -> Any:
    """Global-norm clipping, then AdamW with warmup and cosine decay."""
    schedule = lib.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=1e-3, warmup_steps=100, decay_steps=10_000, end_value=1e-5
    )
    return lib.chain(
        lib.clip_by_global_norm(1.0),
        lib.adamw(schedule, b1=0.9, b2=0.95, weight_decay=0.1, mask=decay_every_other_leaf),
    )


# Builders taking the library, gradtx or optax (same names and signatures), so
# both sides of a comparison get the same hyperparameters.
OPTIMIZERS: dict[str, Callable[[Any], Any]] = {
    "sgd_momentum": lambda lib: lib.sgd(1e-2, momentum=0.9),
    "adam": lambda lib: lib.adam(1e-3),
    "adamw": lambda lib: lib.adamw(1e-3, weight_decay=1e-4),
    "lion": lambda lib: lib.lion(1e-4, weight_decay=1e-2),
    # Both libraries' defaults, spelled out so that a change to either shows.
    "rmsprop": lambda lib: lib.rmsprop(1e-3, decay=0.9, eps=1e-8),
    "transformer_recipe": transformer_recipe,
}


def gradtx_optimizer(name: str) -> gradtx.Transformation:
    return OPTIMIZERS[name](gradtx)


def optax_optimizer(name: str) -> Any:
    import optax

    return OPTIMIZERS[name](optax)


def split_tree(leaves: int, total: int = TOTAL_PARAMS, seed: int = 0) -> dict[str, jax.Array]:
    """``total`` f32 parameters in ``leaves`` equal 1-D leaves."""
    return shaped_tree([(total // leaves,)] * leaves, seed)


def shaped_tree(shapes: list[tuple[int, ...]], seed: int = 0, scale: float = 0.1) -> dict:
    rng = np.random.default_rng(seed)
    return {
        f"leaf{i:04d}": jnp.asarray(rng.standard_normal(shape, np.float32) * scale)
        for i, shape in enumerate(shapes)
    }


def copy_tree(tree: Any) -> Any:
    return jax.tree.map(jnp.copy, tree)


class Contender:
    """A stateful step: ``run(steps)`` advances it and waits for the result."""

    def __init__(self, name: str, run: Callable[[int], None]) -> None:
        self.name = name
        self.run = run


def jax_contender(name: str, step: Callable, params: Any, state: Any, grads: Any) -> Contender:
    """``step(params, state, grads) -> (params, state)``, jitted with donation."""
    jitted = jax.jit(step, donate_argnums=(0, 1))
    box = {"params": copy_tree(params), "state": state}

    def run(steps: int) -> None:
        for _ in range(steps):
            box["params"], box["state"] = jitted(box["params"], box["state"], grads)
        jax.block_until_ready(box["params"])

    return Contender(name, run)


def gradtx_fused(tx: Any, params: Any, grads: Any) -> Contender:
    return jax_contender(
        "gradtx.fused_apply",
        lambda p, s, g: gradtx.fused_apply(tx, p, s, g),
        params,
        tx.init(params),
        grads,
    )


def plain_step(tx: Any) -> Callable:
    """``(params, state, grads) -> (params, state)`` through ``tx.update`` + ``apply_updates``."""

    def step(p: Any, s: Any, g: Any) -> Any:
        updates, s = tx.update(g, s, p)
        return gradtx.apply_updates(p, updates), s

    return step


def optax_update_step(tx: Any) -> Callable:
    """The same step for an Optax optimizer, with ``optax.apply_updates``."""
    import optax

    def step(p: Any, s: Any, g: Any) -> Any:
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    return step


def gradtx_plain(tx: Any, params: Any, grads: Any) -> Contender:
    return jax_contender("gradtx update+apply", plain_step(tx), params, tx.init(params), grads)


def optax_step(tx: Any, params: Any, grads: Any) -> Contender:
    return jax_contender("optax", optax_update_step(tx), params, tx.init(params), grads)


def dispatch_floor(params: Any, state: Any, grads: Any) -> Contender:
    """A step that computes nothing: what JAX itself costs per call for these trees."""
    return jax_contender("dispatch floor", lambda p, s, g: (p, s), params, state, grads)


def bandwidth_probe(elements: int = TOTAL_PARAMS) -> Contender:
    """The in-place ``x + y`` of :func:`in_place_bandwidth`, raced like a step.

    Timed in alternation with the steps, it gives the bandwidth under the same
    load: ``12 * elements / seconds`` bytes per second.
    """
    add = jax.jit(lambda x, y: x + y, donate_argnums=0)
    box = {"x": jnp.ones(elements, jnp.float32)}
    y = jnp.full(elements, 1e-7, jnp.float32)

    def run(steps: int) -> None:
        for _ in range(steps):
            box["x"] = add(box["x"], y)
        box["x"].block_until_ready()

    return Contender("in-place x + y", run)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def torch_contenders(name: str, params: Any, grads: Any) -> list[Contender]:
    """torch.optim with ``fused=True`` and ``foreach=True`` on the same tensors.

    Empty for optimizers without a like-for-like torch rule: torch has no Lion,
    its RMSprop adds ``eps`` outside the square root (Optax's default adds it
    inside), and the transformer recipe (clipping, schedule, mask) is not
    rebuilt in torch here.
    """
    if name not in ("sgd_momentum", "adam", "adamw"):
        return []
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    contenders = []
    for variant in ("fused", "foreach"):
        tensors = [torch.from_numpy(np.array(p)).requires_grad_() for p in jax.tree.leaves(params)]
        for tensor, grad in zip(tensors, jax.tree.leaves(grads)):
            tensor.grad = torch.from_numpy(np.array(grad))
        kwargs = {variant: True}
        if name == "sgd_momentum":
            optimizer = torch.optim.SGD(tensors, lr=1e-2, momentum=0.9, **kwargs)
        elif name == "adam":
            optimizer = torch.optim.Adam(tensors, lr=1e-3, **kwargs)
        else:
            optimizer = torch.optim.AdamW(tensors, lr=1e-3, weight_decay=1e-4, **kwargs)
        try:
            optimizer.step()
        except (RuntimeError, TypeError):  # e.g. no fused kernel for this optimizer on CPU
            continue

        def run(steps: int, optimizer: Any = optimizer) -> None:
            for _ in range(steps):
                optimizer.step()

        contenders.append(Contender(f"torch {variant}", run))
    return contenders


def race(contenders: list[Contender], rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per step of each contender, timed in alternation.

    The order rotates every round and each block starts after a short pause:
    thread pools (XLA's, torch's OpenMP) spin for a while after their work, and
    would otherwise slow down whichever contender always comes next.
    """
    for contender in contenders:  # compile and warm up
        contender.run(2)
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for round_index in range(rounds):
        shift = round_index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            time.sleep(PAUSE)
            start = time.perf_counter()
            contender.run(steps)
            times[contender.name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def in_place_bandwidth(elements: int = TOTAL_PARAMS, rounds: int = 5, repeats: int = 20) -> float:
    """Bytes per second of a jitted, donated, in-place ``x + y`` on f32 arrays.

    The median of each round of ``repeats`` calls; the best round is reported,
    since a busy machine can only make a round slower than the memory allows.
    """
    add = jax.jit(lambda x, y: x + y, donate_argnums=0)
    x = jnp.ones(elements, jnp.float32)
    y = jnp.full(elements, 1e-7, jnp.float32)
    x = add(x, y).block_until_ready()
    medians = []
    for _ in range(rounds):
        time.sleep(PAUSE)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            x = add(x, y).block_until_ready()
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return 12 * elements / min(medians)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "native_kernel": gradtx.fused.native_kernel_available(),
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for module in ("jaxlib", "optax", "flax", "torch"):
        if importlib.util.find_spec(module) is not None:
            info[module] = __import__(module).__version__
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = os.getloadavg()[0]
    return info
