"""Step time: gradtx.fused_apply against Optax (and torch.optim) on 10M f32 parameters.

For each optimizer and each split of the parameters into leaves, every
contender runs jitted with params and state donated, in the same process, in
alternation (see common.race). Reported per step:

- per call: one jitted step per Python call, the usual training loop. With
  1,000 leaves JAX's own per-array work (thousands of arrays in and out of
  every call) dominates; the "dispatch floor" row is a jitted step that
  computes nothing, for scale.
- in one jit: ten steps inside one ``lax.fori_loop``, the optimizer's cost
  without the per-call overhead.
- roofline: bytes that must move (common.BYTES_PER_PARAM: 28 per parameter
  for Adam(W), 20 for SGD with momentum, Lion and RMSProp, 32 for the
  transformer recipe) / step time / the machine's in-place bandwidth,
  measured by a donated ``x + y`` on 10M f32 (12 bytes per element) raced
  with the steps.
"""

from __future__ import annotations

from typing import Any

import jax

import gradtx
from benchmarks import common

OPTIMIZERS = tuple(common.OPTIMIZERS)  # the table's rows, in this order
LEAF_COUNTS = (10, 100, 1000)
STEPS_IN_LOOP = 10


def loop_contender(name: str, step: Any, params: Any, state: Any, grads: Any) -> common.Contender:
    """``STEPS_IN_LOOP`` steps per call inside one jit; times are per step."""

    def steps(p: Any, s: Any, g: Any) -> Any:
        return jax.lax.fori_loop(0, STEPS_IN_LOOP, lambda _, c: step(c[0], c[1], g), (p, s))

    contender = common.jax_contender(name, steps, params, state, grads)
    contender.steps_per_call = STEPS_IN_LOOP
    return contender


def measure(name: str, leaves: int, rounds: int, steps: int) -> dict[str, Any]:
    import optax

    params = common.split_tree(leaves, seed=0)
    grads = common.split_tree(leaves, seed=1)
    grads = jax.tree.map(lambda g: g * 0.01, grads)
    tx, otx = common.gradtx_optimizer(name), common.optax_optimizer(name)

    def fused_step(p: Any, s: Any, g: Any) -> Any:
        return gradtx.fused_apply(tx, p, s, g)

    def optax_step(p: Any, s: Any, g: Any) -> Any:
        updates, s = otx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    contenders = [
        common.gradtx_fused(tx, params, grads),
        common.gradtx_plain(tx, params, grads),
        common.optax_step(otx, params, grads),
        common.dispatch_floor(params, tx.init(params), grads),
        loop_contender(
            "gradtx.fused_apply, in one jit", fused_step, params, tx.init(params), grads
        ),
        loop_contender("optax, in one jit", optax_step, params, otx.init(params), grads),
        common.bandwidth_probe(),
    ]
    if common.torch_available():
        contenders += common.torch_contenders(name, params, grads)
    per_call = common.race(contenders, rounds, steps)
    for contender in contenders:
        per_call[contender.name] /= getattr(contender, "steps_per_call", 1)
    del contenders
    moved = common.BYTES_PER_PARAM[name] * common.TOTAL_PARAMS
    fused = per_call["gradtx.fused_apply"]
    bandwidth = 12 * common.TOTAL_PARAMS / per_call.pop("in-place x + y")
    return {
        "optimizer": name,
        "leaves": leaves,
        "bandwidth_bytes_per_s": bandwidth,
        "seconds_per_step": per_call,
        "ratio_fused_to_optax": fused / per_call["optax"],
        "ratio_fused_to_optax_in_one_jit": (
            per_call["gradtx.fused_apply, in one jit"] / per_call["optax, in one jit"]
        ),
        "roofline_fused": moved / fused / bandwidth,
        "roofline_fused_in_one_jit": moved / per_call["gradtx.fused_apply, in one jit"] / bandwidth,
        "roofline_optax": moved / per_call["optax"] / bandwidth,
        "roofline": {
            contender: moved / seconds / bandwidth
            for contender, seconds in per_call.items()
            if contender != "dispatch floor"
        },
    }


def run(quick: bool, optimizers: tuple[str, ...] = OPTIMIZERS) -> list[dict[str, Any]]:
    """Measures and prints one row per optimizer and leaf count.

    Args:
      quick: fewer rounds and steps per block, for a smoke test.
      optimizers: names from ``OPTIMIZERS``, measured in this order.

    Returns:
      The rows, as :func:`measure` makes them.
    """
    rounds, steps = (5, 3) if quick else (21, 6)
    results = []
    for name in optimizers:
        for leaves in LEAF_COUNTS:
            row = measure(name, leaves, rounds, steps)
            results.append(row)
            print_row(row)
    return results


def print_header() -> None:
    print(
        f"{'optimizer':18} {'leaves':>6} {'fused ms':>9} {'optax ms':>9} {'ratio':>6} "
        f"{'roofline':>8} {'GB/s':>5} {'floor ms':>9} {'1-jit ratio':>11} "
        f"{'torch fused':>11} {'torch foreach':>13}"
    )


def print_row(row: dict[str, Any]) -> None:
    times = row["seconds_per_step"]

    def ms(key: str) -> str:
        return f"{times[key] * 1e3:.2f}" if key in times else "-"

    print(
        f"{row['optimizer']:18} {row['leaves']:6d} {ms('gradtx.fused_apply'):>9} "
        f"{ms('optax'):>9} {row['ratio_fused_to_optax']:6.2f} {row['roofline_fused']:8.2f} "
        f"{row['bandwidth_bytes_per_s'] / 1e9:5.0f} "
        f"{ms('dispatch floor'):>9} {row['ratio_fused_to_optax_in_one_jit']:11.2f} "
        f"{ms('torch fused'):>11} {ms('torch foreach'):>13}",
        flush=True,
    )
