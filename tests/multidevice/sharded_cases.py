"""What the sharded tests share: a tiny MLP, meshes, placement checks and HLO collectives.

Run as a script (with 8 simulated devices) it prints the collectives Muon's
update compiles to on sharded kernels, the table the docs quote::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/multidevice/sharded_cases.py
"""

import collections
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import gradtx

LEARNING_RATE = 1e-2
STEPS = 3
BATCH_SIZE = 16

# A sharded step sums the batch's gradients in another order than one device
# does (each device sums its shard, then an all-reduce adds the partial sums),
# so the two runs differ in the last bits. The state stays within RTOL/ATOL.
# The params take a looser ATOL: Adam divides a moment by the root of the
# squared one, so where a gradient changes sign the first moment is a
# cancellation and its last-bit difference shows at the scale of a learning
# rate step. Measured beyond RTOL: 3.9e-7 (adamw, data parallel and FSDP),
# 8e-8 (muon), 0 (sgd); the bound is 1e-4 of one step, a few thousandths of
# what a wrong rule (a lost weight decay: lr * 0.1 * |w| ~ 3e-4) would give.
RTOL = 1e-6
ATOL = 1e-7
PARAMS_ATOL = 1e-4 * LEARNING_RATE

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
# "%x = f32[16,32]{1,0} all-gather(...)", its asynchronous form "all-gather-start(",
# and a combined one whose result is a tuple "(f32[32]{0}, f32[16,32]{1,0})".
_COLLECTIVE_LINE = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_ARRAY_TYPE = re.compile(r"\b[a-z]+[0-9]*\[([0-9,]*)\]")


def auto_mesh(shape: tuple[int, ...], names: tuple[str, ...]) -> jax.sharding.Mesh:
    """A mesh with Auto axes (JAX 0.10's make_mesh defaults to Explicit ones)."""
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names))


# The FSDP + tensor-parallel placement on the (2, 4) mesh.
FSDP_TP_SPECS = {
    "dense": {"kernel": PartitionSpec("data", "model"), "bias": PartitionSpec("model")},
    "out": {"kernel": PartitionSpec("model", "data")},
}


@functools.cache
def data_mesh() -> jax.sharding.Mesh:
    """The 8 devices as one "data" axis."""
    return auto_mesh((8,), ("data",))


@functools.cache
def data_model_mesh() -> jax.sharding.Mesh:
    """The 8 devices as 2 x 4, ("data", "model")."""
    return auto_mesh((2, 4), ("data", "model"))


def initial_params() -> dict[str, Any]:
    """The MLP's parameters as NumPy arrays (placed by each test)."""
    rng = np.random.default_rng(0)
    return {
        "dense": {
            "kernel": (0.3 * rng.normal(size=(16, 32))).astype(np.float32),
            "bias": (0.1 * rng.normal(size=32)).astype(np.float32),
        },
        "out": {"kernel": (0.3 * rng.normal(size=(32, 8))).astype(np.float32)},
    }


def fixed_batch() -> dict[str, np.ndarray]:
    """The one batch every step trains on."""
    rng = np.random.default_rng(1)
    return {
        "x": rng.normal(size=(BATCH_SIZE, 16)).astype(np.float32),
        "y": rng.normal(size=(BATCH_SIZE, 8)).astype(np.float32),
    }


def mlp_loss(params: Any, batch: dict[str, jax.Array]) -> jax.Array:
    """Mean squared error of a 2-layer tanh MLP."""
    hidden = jnp.tanh(batch["x"] @ params["dense"]["kernel"] + params["dense"]["bias"][None, :])
    return jnp.mean((hidden @ params["out"]["kernel"] - batch["y"]) ** 2)


def train_step(tx: gradtx.Transformation, loss: Callable[..., jax.Array] = mlp_loss) -> Any:
    """``(params, state, batch) -> (params, state, loss)``: one step of ``tx`` on ``loss``."""

    def step(params: Any, state: Any, batch: Any) -> tuple[Any, Any, jax.Array]:
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, value

    return step


def run_steps(step: Callable[..., Any], params: Any, state: Any, batch: Any) -> tuple[Any, ...]:
    """``STEPS`` steps from ``(params, state)``: the final params and state, and the losses."""
    losses = []
    for _ in range(STEPS):
        params, state, value = step(params, state, batch)
        losses.append(float(value))
    return params, state, np.asarray(losses)


def named(mesh: jax.sharding.Mesh, specs: Any) -> Any:
    """A tree of ``PartitionSpec`` as ``NamedSharding`` on ``mesh``."""
    return jax.tree.map(
        lambda spec: NamedSharding(mesh, spec),
        specs,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


# ---------------------------------------------------------------- placement checks


def key_path(path: Sequence[Any]) -> str:
    """A key path as text, ``['dense']['kernel']``."""
    return jax.tree_util.keystr(tuple(path)) or "<root>"


def param_of(state_path: Sequence[Any], params: Any) -> tuple[str, Any] | None:
    """The parameter a state leaf at ``state_path`` belongs to, by the end of its key path.

    A moment of ``params["dense"]["kernel"]`` sits at a path ending in
    ``['dense']['kernel']`` (``[0].mu['dense']['kernel']``); the longest such
    parameter path wins. Returns its key path and leaf, or None.
    """
    found = None
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if len(path) <= len(state_path) and tuple(state_path[-len(path) :]) == tuple(path):
            if found is None or len(path) > len(found[0]):
                found = (path, leaf)
    return None if found is None else (key_path(found[0]), found[1])


def assert_born_sharded(state: Any, params: Any, mesh: jax.sharding.Mesh, where: str) -> None:
    """Each params-shaped leaf has its param's sharding; every other leaf is on the mesh.

    Scalars must be replicated over the whole mesh; other leaves that are not
    shaped like their parameter (factored or per-dimension statistics, Muon's
    coefficients) must at least live on the mesh's devices.
    """
    devices = set(mesh.devices.flat)
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        at = f"{where}: state{key_path(path)}"
        sharding = leaf.sharding
        assert sharding.device_set == devices, (
            f"{at} is on the devices {sorted(d.id for d in sharding.device_set)}, not the "
            f"mesh's {sorted(d.id for d in devices)} ({sharding})"
        )
        owner = param_of(path, params)
        if owner is not None and leaf.shape == owner[1].shape:
            assert sharding.is_equivalent_to(owner[1].sharding, leaf.ndim), (
                f"{at} {leaf.shape} has the sharding {sharding}, not that of "
                f"params{owner[0]}: {owner[1].sharding}"
            )
        elif leaf.ndim == 0:
            assert sharding.is_fully_replicated, f"{at} (a scalar) is not replicated: {sharding}"


def assert_same_shardings(state: Any, expected: Any, where: str) -> None:
    """``state``'s leaves placed as the sharding tree ``expected`` says, leaf by leaf."""
    assert jax.tree.structure(state) == jax.tree.structure(expected), where
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_flatten_with_path(state)[0], jax.tree.leaves(expected)
    ):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (
            f"{where}: state{key_path(path)} has the sharding {leaf.sharding}, but "
            f"state_shardings says {sharding}"
        )


# ---------------------------------------------------------------- HLO collectives


def collectives(hlo_text: str) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
    """Every collective of a compiled HLO module: its op and the shapes of its result."""
    found = []
    for line in hlo_text.splitlines():
        match = _COLLECTIVE_LINE.search(line)
        if match:
            shapes = tuple(
                tuple(int(size) for size in dims.split(",") if size)
                for dims in _ARRAY_TYPE.findall(match.group(1))
            )
            found.append((match.group(2), shapes))
    return found


def squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` without its size-1 dimensions."""
    return tuple(size for size in shape if size != 1)


def full_size_all_gathers(
    hlo_text: str, full_shapes: Sequence[tuple[int, ...]]
) -> list[tuple[int, ...]]:
    """The all-gathered results shaped like one of ``full_shapes`` (or its transpose).

    Size-1 dimensions are ignored: Muon gathers its momentum with a batch
    dimension of 1 in front (its vmap over stacked matrices).
    """
    targets = {squeezed(shape) for shape in full_shapes}
    targets |= {shape[::-1] for shape in targets}
    return [
        shape
        for op, shapes in collectives(hlo_text)
        if op == "all-gather"
        for shape in shapes
        if squeezed(shape) in targets
    ]


def update_program(
    tx: gradtx.Transformation, params: Any, state_shardings: Any | None = None
) -> str:
    """The compiled HLO of ``tx.update(grads, state, params)`` with grads placed like params.

    The state is pinned to ``state_shardings`` (default: the placement
    :func:`gradtx.state_shardings` gives) in and out.
    """
    param_shardings = jax.tree.map(lambda leaf: leaf.sharding, params)
    if state_shardings is None:
        state_shardings = gradtx.state_shardings(tx, params)
    update = jax.jit(
        tx.update,
        in_shardings=(param_shardings, state_shardings, param_shardings),
        out_shardings=(param_shardings, state_shardings),
    )
    state = jax.eval_shape(tx.init, params)
    return update.lower(params, state, params).compile().as_text()


def muon_kernel_cases() -> dict[str, Any]:
    """Muon's measured layouts: one kernel over "model" (wide and tall), and the FSDP+TP MLP."""
    mesh = data_model_mesh()
    over_model = NamedSharding(mesh, PartitionSpec(None, "model"))
    params = initial_params()
    return {
        "(16, 32) P(None, 'model')": {
            "w": jax.ShapeDtypeStruct((16, 32), jnp.float32, sharding=over_model)
        },
        "(32, 16) P(None, 'model')": {
            "w": jax.ShapeDtypeStruct((32, 16), jnp.float32, sharding=over_model)
        },
        "FSDP+TP MLP": jax.tree.map(
            lambda value, sharding: jax.ShapeDtypeStruct(
                value.shape, value.dtype, sharding=sharding
            ),
            params,
            named(mesh, FSDP_TP_SPECS),
        ),
    }


def _print_muon_collectives() -> None:
    tx = gradtx.muon(LEARNING_RATE)
    for name, params in muon_kernel_cases().items():
        found = collectives(update_program(tx, params))
        print(f"{name}: {dict(collections.Counter(op for op, _ in found))}")
        for (op, shapes), count in collections.Counter(found).items():
            print(f"    {count:3d} x {op} -> {', '.join(map(str, shapes))}")


if __name__ == "__main__":
    _print_muon_collectives()
