"""Memory of one compiled AdamW step against what it must hold.

From XLA's buffer assignment (``compiled.memory_analysis()``): the peak is the
arguments plus the outputs that do not reuse a donated argument plus
temporaries. A step needs at least params + grads + state (mu, nu); anything
above that is a params-sized temporary or a copy.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

import gradtx
from benchmarks import common


def analysis(step: Any, params: Any, state: Any) -> dict[str, int]:
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    memory = compiled.memory_analysis()
    peak = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )
    return {
        "arguments": memory.argument_size_in_bytes,
        "outputs_not_aliased": memory.output_size_in_bytes - memory.alias_size_in_bytes,
        "temporaries": memory.temp_size_in_bytes,
        "peak": peak,
    }


def run(leaves: int = 10) -> dict[str, Any]:
    shape = (common.TOTAL_PARAMS // leaves,)
    params = {f"leaf{i:04d}": jax.ShapeDtypeStruct(shape, jnp.float32) for i in range(leaves)}
    tx, otx = common.gradtx_optimizer("adamw"), common.optax_optimizer("adamw")
    needed = 4 * 4 * common.TOTAL_PARAMS  # params, grads, mu, nu

    optax_step = common.optax_update_step(otx)
    plain_step = common.plain_step(tx)

    results: dict[str, Any] = {"leaves": leaves, "params_grads_state_bytes": needed}
    print(f"{'step':22} {'peak MB':>8} {'temp MB':>8} {'peak / (params+grads+state)':>28}")
    for name, step, init in [
        ("gradtx.fused_apply", lambda p, s, g: gradtx.fused_apply(tx, p, s, g), tx.init),
        ("gradtx update+apply", plain_step, tx.init),
        ("optax", optax_step, otx.init),
    ]:
        row = analysis(step, params, jax.eval_shape(init, params))
        row["peak_over_needed"] = row["peak"] / needed
        results[name] = row
        print(
            f"{name:22} {row['peak'] / 1e6:8.1f} {row['temporaries'] / 1e6:8.2f} "
            f"{row['peak_over_needed']:28.3f}"
        )
    return results
