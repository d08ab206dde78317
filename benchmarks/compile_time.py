"""Compile time (trace + lower + compile) of one AdamW step, gradtx against Optax.

Each measurement builds a fresh jitted function (nothing is reused from a
cache) with params and state donated, and times ``jit(...).trace``,
``.lower()`` and ``.compile()`` on abstract 1,000-element leaves. The "floor"
is a step that returns params and state unchanged: what XLA spends on the
thousands of donated arguments and results alone, before any optimizer.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import jax
import jax.numpy as jnp

import gradtx
from benchmarks import common

LEAF_COUNTS = (100, 1000, 3000)


def compile_seconds(step: Any, params: Any, state: Any) -> dict[str, float]:
    jitted = jax.jit(lambda p, s, g: step(p, s, g), donate_argnums=(0, 1))
    gc.collect()
    start = time.perf_counter()
    traced = jitted.trace(params, state, params)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    lowered.compile()
    done = time.perf_counter()
    return {
        "trace": traced_at - start,
        "lower": lowered_at - traced_at,
        "compile": done - lowered_at,
        "total": done - start,
    }


def measure(leaves: int) -> dict[str, Any]:
    params = {f"leaf{i:04d}": jax.ShapeDtypeStruct((1000,), jnp.float32) for i in range(leaves)}
    tx, otx = common.gradtx_optimizer("adamw"), common.optax_optimizer("adamw")

    optax_step = common.optax_update_step(otx)
    plain_step = common.plain_step(tx)

    row = {
        "leaves": leaves,
        "floor": compile_seconds(lambda p, s, g: (p, s), params, jax.eval_shape(tx.init, params)),
        "gradtx.fused_apply": compile_seconds(
            lambda p, s, g: gradtx.fused_apply(tx, p, s, g), params, jax.eval_shape(tx.init, params)
        ),
        "gradtx update+apply": compile_seconds(plain_step, params, jax.eval_shape(tx.init, params)),
        "optax": compile_seconds(optax_step, params, jax.eval_shape(otx.init, params)),
    }
    row["ratio_fused_to_optax"] = row["gradtx.fused_apply"]["total"] / row["optax"]["total"]
    return row


def run(quick: bool) -> list[dict[str, Any]]:
    counts = LEAF_COUNTS[:2] if quick else LEAF_COUNTS
    print(
        f"{'leaves':>6} {'fused s':>8} {'(compile)':>9} {'gradtx plain s':>14} {'optax s':>8} "
        f"{'ratio':>6} {'floor s':>8}"
    )
    results = []
    for leaves in counts:
        row = measure(leaves)
        results.append(row)
        print(
            f"{leaves:6d} {row['gradtx.fused_apply']['total']:8.2f} "
            f"{row['gradtx.fused_apply']['compile']:9.2f} "
            f"{row['gradtx update+apply']['total']:14.2f} {row['optax']['total']:8.2f} "
            f"{row['ratio_fused_to_optax']:6.2f} {row['floor']['total']:8.2f}",
            flush=True,
        )
    if len(results) == 3:
        for name in ("gradtx.fused_apply", "optax", "floor"):
            growth = results[2][name]["total"] / results[1][name]["total"]
            print(f"  {name}: 3,000 leaves / 1,000 leaves = {growth:.1f}x (linear would be 3.0x)")
        above_floor = [r["gradtx.fused_apply"]["total"] - r["floor"]["total"] for r in results]
        print(
            f"  gradtx.fused_apply above the floor: {above_floor[1]:.2f} s -> "
            f"{above_floor[2]:.2f} s = {above_floor[2] / above_floor[1]:.1f}x"
        )
    return results
