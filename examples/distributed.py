"""Many devices: a sharded Flax model, a gradtx optimizer born sharded, an Orbax checkpoint.

An MLP on scikit-learn's digits, its kernels split over a ("data", "model") mesh
(FSDP on "data", tensor parallel on "model"), the batch split over "data". The
optimizer state is created inside ``jax.jit`` and comes out sharded like the
params, with no full copy on any device; every state leaf's sharding is printed.
After a few steps the run is saved with ``gradtx.OrbaxCheckpoints``, restored
onto a mesh of half the devices and continued there, and the continued run is
checked against the one that never stopped. Last, the ZeRO option shards the
moments over "data" even where the params are replicated.

On one machine without accelerators, ``--simulate-devices 8`` (the default)
makes XLA split the CPU into 8 devices; it must be set before JAX starts, which
is why JAX is imported inside ``main``. On many hosts, call
``jax.distributed.initialize()`` first in every process and run the same code
(README, "Many devices and many hosts").

Run: ``pip install -e ".[examples,orbax]" && python examples/distributed.py``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

STEPS = 6
SAVE_AT = 3
BATCH = 128


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--simulate-devices",
        type=int,
        default=8,
        help="split the host CPU into this many devices (0: use the devices JAX finds)",
    )
    parser.add_argument("--checkpoints", help="Orbax directory (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.simulate_devices:
        flag = f"--xla_force_host_platform_device_count={args.simulate_devices}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    with tempfile.TemporaryDirectory() as scratch:
        run(args.checkpoints or os.path.join(scratch, "checkpoints"))
    return 0


def run(directory: str) -> None:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import gradtx

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _digits import load

    devices = np.array(jax.devices())
    data_size = 2 if len(devices) % 2 == 0 and len(devices) >= 4 else 1
    mesh = Mesh(devices.reshape(data_size, -1), ("data", "model"))
    print(f"{len(devices)} devices, mesh {dict(mesh.shape)}")

    def sharded(names: tuple[str | None, ...]) -> Any:
        return nn.with_partitioning(nn.initializers.lecun_normal(), names)

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            x = x.reshape(x.shape[0], -1)
            x = nn.Dense(
                128,
                kernel_init=sharded(("data", "model")),
                bias_init=nn.with_partitioning(nn.initializers.zeros, ("model",)),
            )(x)
            x = nn.relu(x)
            return nn.Dense(10, kernel_init=sharded(("model", None)))(x)

    model = MLP()
    train_x, train_y, _, _ = load()
    sample = jnp.zeros((1, 8, 8, 1))

    def init_params(key: jax.Array) -> Any:
        return model.init(key, sample)["params"]

    # Flax records each kernel's PartitionSpec; a leaf without one is replicated.
    specs = nn.get_partition_spec(jax.eval_shape(init_params, jax.random.key(0)))
    param_shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)
    params = jax.jit(lambda key: nn.unbox(init_params(key)), out_shardings=param_shardings)(
        jax.random.key(0)
    )

    tx = gradtx.adamw(3e-3, weight_decay=1e-4)
    state = jax.jit(tx.init)(params)  # born sharded: no out_shardings needed
    state_shardings = gradtx.state_shardings(tx, params)
    print("\noptimizer state, each leaf's sharding:")
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        expected = jax.tree_util.tree_flatten_with_path(state_shardings)[0]
        assert any(p == path and s.is_equivalent_to(leaf.sharding, leaf.ndim) for p, s in expected)
        print(f"  state{jax.tree_util.keystr(path):40} {str(leaf.shape):10} {leaf.sharding.spec}")

    batch_sharding = NamedSharding(mesh, P("data"))

    def loss_fn(params: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
        logits = model.apply({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def train_step(params: Any, state: Any, images: jax.Array, labels: jax.Array) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, loss

    def compiled_step(param_shardings: Any, state_shardings: Any) -> Any:
        return jax.jit(
            train_step,
            out_shardings=(param_shardings, state_shardings, None),
            donate_argnums=(0, 1),
        )

    def batch(step: int, sharding: Any) -> tuple[jax.Array, jax.Array]:
        start = (step * BATCH) % (len(train_x) - BATCH)
        images, labels = train_x[start : start + BATCH], train_y[start : start + BATCH]
        return jax.device_put(images, sharding), jax.device_put(labels, sharding)

    step_fn = compiled_step(param_shardings, state_shardings)
    print()
    with gradtx.OrbaxCheckpoints(directory, tx) as checkpoints:
        for step in range(STEPS):
            if step == SAVE_AT:
                checkpoints.save(step, params, state)
            params, state, loss = step_fn(params, state, *batch(step, batch_sharding))
            print(f"step {step + 1}: loss {float(loss):.4f}")
        checkpoints.wait_until_finished()

        # Restore onto a mesh of half the devices, as after losing a slice.
        small = Mesh(devices[: max(1, len(devices) // 2)].reshape(data_size, -1), ("data", "model"))
        small_shardings = jax.tree.map(lambda spec: NamedSharding(small, spec), specs)
        params_like = jax.tree.map(
            lambda p, s: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s),
            params,
            small_shardings,
        )
        restored = checkpoints.restore(params_like, step=SAVE_AT)
    print(f"\nrestored step {restored.step} onto mesh {dict(small.shape)}:")
    for path, leaf in jax.tree_util.tree_flatten_with_path(restored.state)[0]:
        devices_used = len(leaf.sharding.device_set)
        print(f"  state{jax.tree_util.keystr(path):40} {leaf.sharding.spec} on {devices_used}")

    small_step = compiled_step(small_shardings, gradtx.state_shardings(tx, params_like))
    again, again_state = restored.params, restored.state
    for step in range(SAVE_AT, STEPS):
        images, labels = batch(step, NamedSharding(small, P("data")))
        again, again_state, loss = small_step(again, again_state, images, labels)
    # Not bit for bit: the loss sums the batch over another split of devices.
    gap = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params))
    )
    print(f"continued on the smaller mesh: loss {float(loss):.4f}, largest param gap {gap:.1e}")
    assert gap < 1e-5, f"the restored run drifted from the one that never stopped by {gap}"

    # ZeRO: params replicated (data parallel), the moments split over "data".
    replicated = jax.tree.map(lambda p: jax.device_put(p, NamedSharding(mesh, P())), params)
    zero = gradtx.state_shardings(tx, replicated, shard_over="data")
    print("\nZeRO (shard_over='data') on replicated params:")
    for path, sharding in jax.tree_util.tree_flatten_with_path(zero)[0]:
        print(f"  state{jax.tree_util.keystr(path):40} {sharding.spec}")


if __name__ == "__main__":
    sys.exit(main())
