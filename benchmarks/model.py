"""A model-sized case: AdamW on a small Flax transformer's parameter tree.

The tree has the realistic mix of a few large matrices (embeddings, attention
and MLP kernels) and many small biases and LayerNorm scales; weight decay
skips biases and scales, as usual. Needs flax (the shapes come from the
model's own ``init``); skipped without it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import jax
import jax.numpy as jnp

import gradtx
from benchmarks import common

VOCAB, WIDTH, DEPTH, HEADS, MLP, LENGTH = 8192, 512, 6, 8, 2048, 256


def transformer_shapes() -> Any:
    import flax.linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS)(nn.LayerNorm()(x))
            h = nn.Dense(MLP)(nn.LayerNorm()(x))
            return x + nn.Dense(WIDTH)(nn.gelu(h))

    class Transformer(nn.Module):
        @nn.compact
        def __call__(self, tokens: jax.Array) -> jax.Array:
            x = nn.Embed(VOCAB, WIDTH)(tokens)
            x = x + self.param("positions", nn.initializers.normal(0.02), (LENGTH, WIDTH))
            for _ in range(DEPTH):
                x = Block()(x)
            return nn.LayerNorm()(x) @ self.variables["params"]["Embed_0"]["embedding"].T

    tokens = jnp.zeros((1, LENGTH), jnp.int32)
    return jax.eval_shape(Transformer().init, jax.random.PRNGKey(0), tokens)["params"]


def decayed(params: Any) -> Any:
    """Weight decay on matrices only, not on biases and LayerNorm scales."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(getattr(k, "key", "") in ("bias", "scale") for k in path), params
    )


def run(quick: bool) -> dict[str, Any] | None:
    if importlib.util.find_spec("flax") is None:
        print("skipped: flax is not installed (pip install -e '.[bench]')")
        return None
    import optax

    shapes = transformer_shapes()
    leaves = jax.tree.leaves(shapes)
    treedef = jax.tree.structure(shapes)
    params = treedef.unflatten(jax.tree.leaves(common.shaped_tree([x.shape for x in leaves], 0)))
    grads = treedef.unflatten(
        jax.tree.leaves(common.shaped_tree([x.shape for x in leaves], 1, scale=1e-3))
    )
    count = sum(x.size for x in leaves)
    mask = decayed(params)
    tx = gradtx.adamw(1e-3, weight_decay=0.1, mask=gradtx.path_mask(exclude=["bias$", "scale$"]))
    otx = optax.adamw(1e-3, weight_decay=0.1, mask=mask)
    contenders = [
        common.gradtx_fused(tx, params, grads),
        common.gradtx_plain(tx, params, grads),
        common.optax_step(otx, params, grads),
    ]
    if common.torch_available():
        contenders += common.torch_contenders("adamw", params, grads)
    rounds, steps = (5, 3) if quick else (15, 5)
    times = common.race(contenders, rounds, steps)
    result = {
        "model": f"transformer: {DEPTH} blocks, width {WIDTH}, vocabulary {VOCAB}",
        "params": count,
        "leaves": len(leaves),
        "seconds_per_step": times,
        "ratio_fused_to_optax": times["gradtx.fused_apply"] / times["optax"],
    }
    print(f"{result['model']}: {count / 1e6:.1f}M params in {len(leaves)} leaves")
    for name, seconds in times.items():
        print(f"  {name:22} {seconds * 1e3:8.2f} ms  ({seconds / times['optax']:.2f}x optax)")
    return result
