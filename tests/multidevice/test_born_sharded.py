"""Every registered transformation's state is born where its parameters live.

For each registered name, its first example in ``config_examples.EXAMPLES``
that fits ``{"w": f32[8, 4], "b": f32[4]}`` (a mask or labels tree must be a
prefix of that tree, as in test_contract) is initialized by ``jax.jit(tx.init)``
on ``w`` sharded ``P("data", "model")`` and ``b`` sharded ``P("model")`` over a
(2, 4) mesh with Auto axes. Each state leaf shaped like its parameter must
have the parameter's sharding, every other leaf must live on the mesh (a scalar
replicated), and ``gradtx.state_shardings`` must say the same. A state that
does not depend on the params at all (a step counter, a random key) is a
constant jit leaves uncommitted on one device; those, and only those, may be.

The same holds on a mesh with Explicit axes (sharding in the types), where a
train step of AdamW, SGD with momentum, a partition of both (also with a ZeRO
state) and Muon (w split both ways, and over its columns only) equals the
single-device run.
"""

from typing import Any

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
import sharded_cases as cases
from config_examples import EXAMPLES
from jax.sharding import NamedSharding, PartitionSpec
from parity_checks import assert_trees_close
from test_contract import PARAMS_FORM, fits

import gradtx
from gradtx import registry

P = PartitionSpec

SPECS = {"w": P("data", "model"), "b": P("model")}
SHAPES = {"w": (8, 4), "b": (4,)}
# Registered names whose examples hold no transformation (schedules, masks,
# labels, dimension numbers) have no state to place; a name without examples
# stays in, to fail.
TRANSFORMATION_NAMES = [
    name
    for name in registry.names()
    if not EXAMPLES.get(name)
    or any(isinstance(example, gradtx.Transformation) for example in EXAMPLES[name])
]


def plain_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}


def sharded_params(mesh: jax.sharding.Mesh, specs: Any = SPECS) -> dict[str, jax.Array]:
    return jax.device_put(plain_params(), cases.named(mesh, specs))


def first_fitting_example(name: str, params: Any) -> gradtx.Transformation:
    examples = [x for x in EXAMPLES.get(name, []) if isinstance(x, gradtx.Transformation)]
    fitting = [x for x in examples if fits(x, params)]
    if not fitting:
        pytest.fail(
            f"{name}: no example in tests/config_examples.py (or examples_<family>.py) is a "
            f"transformation that fits the params {{'w': f32[8, 4], 'b': f32[4]}}",
            pytrace=False,
        )
    return fitting[0]


def depends_on_inputs(function: Any, *args: Any) -> bool:
    """Whether any output of ``function`` is computed from its inputs (by its jaxpr).

    A value flows forward: an equation with an input that depends on the
    arguments makes all its outputs depend on them. ``shard_alike`` counts,
    as it should: it is what ties a fresh zero moment to its parameter.
    """
    jaxpr = jax.make_jaxpr(function)(*args).jaxpr
    dependent = set(jaxpr.invars)
    for equation in jaxpr.eqns:
        if any(
            isinstance(var, jax.extend.core.Var) and var in dependent for var in equation.invars
        ):
            dependent.update(equation.outvars)
    return any(isinstance(var, jax.extend.core.Var) and var in dependent for var in jaxpr.outvars)


def assert_state_placed(
    tx: gradtx.Transformation, params: Any, init_params: Any, mesh: Any, where: str
) -> Any:
    """jit(tx.init) places the state as the module docstring says; returns the state."""
    state = jax.jit(tx.init)(init_params)
    abstract = jax.eval_shape(tx.init, init_params)
    shardings = gradtx.state_shardings(tx, init_params)
    assert jax.tree.structure(abstract) == jax.tree.structure(state), where
    assert jax.tree.structure(shardings) == jax.tree.structure(state), where
    for (path, leaf), shape in zip(
        jax.tree_util.tree_flatten_with_path(state)[0], jax.tree.leaves(abstract)
    ):
        assert (leaf.shape, leaf.dtype) == (shape.shape, shape.dtype), (
            f"{where}: state{cases.key_path(path)} is {leaf.dtype}{list(leaf.shape)}, "
            f"jax.eval_shape(tx.init) says {shape.dtype}{list(shape.shape)}"
        )
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    if not leaves:
        return state
    off_mesh = [cases.key_path(path) for path, leaf in leaves if not leaf.committed]
    if depends_on_inputs(tx.init, init_params):
        assert off_mesh == [], (
            f"{where}: the state depends on the params, but state{off_mesh[0]} is an "
            "uncommitted constant"
        )
    if not off_mesh:  # with Explicit axes also a constant has the sharding of its type
        cases.assert_born_sharded(state, params, mesh, where)
        cases.assert_same_shardings(state, shardings, where)
        return state
    # No leaf depends on the params: jit makes constants, left on one device (it
    # moves them where they are used); state_shardings replicates them.
    assert len(off_mesh) == len(leaves), (
        f"{where}: state{off_mesh[0]} is an uncommitted constant, but other leaves are committed"
    )
    replicated = NamedSharding(mesh, P())
    for path, sharding in jax.tree_util.tree_flatten_with_path(shardings)[0]:
        assert sharding == replicated, (
            f"{where}: state_shardings{cases.key_path(path)} is {sharding}, not {replicated}"
        )
    for path, leaf in leaves:
        owner = cases.param_of(path, params)
        assert owner is None or leaf.shape != owner[1].shape, (
            f"{where}: state{cases.key_path(path)} is shaped like params{owner[0]} but does "
            "not depend on it, so it is not born sharded like it (make it with "
            "gradtx.trees.filled_like)"
        )
    return state


@pytest.mark.parametrize("name", TRANSFORMATION_NAMES)
def test_every_registered_state_is_born_sharded(name):
    mesh = cases.data_model_mesh()
    params = sharded_params(mesh)
    tx = first_fitting_example(name, params)
    init_params = PARAMS_FORM.get(name, lambda tree: tree)(params)
    assert_state_placed(tx, params, init_params, mesh, f"{name} ({tx!r})")


# ---------------------------------------------------------------- Explicit axes


def tiny_loss(params: Any, batch: Any) -> jax.Array:
    return jnp.mean(jnp.tanh(batch["x"] @ params["w"] + params["b"][None, :]) ** 2)


def tiny_batch() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)}


ADAMW = gradtx.adamw(cases.LEARNING_RATE, weight_decay=0.1)
SGD = gradtx.sgd(cases.LEARNING_RATE, momentum=0.9)
PARTITION = gradtx.partition(
    {"adam": gradtx.adamw(cases.LEARNING_RATE), "sgd": SGD}, {"w": "adam", "b": "sgd"}
)
MUON = gradtx.muon(cases.LEARNING_RATE)
# ZeRO: w split over "model" only, its moments over "data" too.
ZERO_SPECS = {"w": P(None, "model"), "b": P("model")}
EXPLICIT_CASES = {
    "adamw": (ADAMW, SPECS, None),
    "sgd": (SGD, SPECS, None),
    "partition": (PARTITION, SPECS, None),
    "adamw_zero": (ADAMW, ZERO_SPECS, "data"),
    "sgd_zero": (SGD, ZERO_SPECS, "data"),
    # Newton-Schulz's matmuls on a sharded w: run under auto_axes (muon_matrices).
    "muon": (MUON, SPECS, None),
    "muon_columns": (MUON, ZERO_SPECS, None),
}


@pytest.mark.parametrize("case", EXPLICIT_CASES)
def test_explicit_axes_state_is_born_sharded_and_steps_equal_one_device(case):
    tx, specs, shard_over = EXPLICIT_CASES[case]
    device = jax.devices()[0]
    step = cases.train_step(tx, tiny_loss)
    expected_params = jax.device_put(plain_params(), device)
    expected = cases.run_steps(
        jax.jit(step),
        expected_params,
        jax.jit(tx.init)(expected_params),
        jax.device_put(tiny_batch(), device),
    )
    mesh = jax.make_mesh((2, 4), ("data", "model"))  # Explicit axes, JAX's default
    with jax.set_mesh(mesh):
        params = sharded_params(mesh, specs)
        state = assert_state_placed(tx, params, params, mesh, f"{case} on Explicit axes")
        param_shardings = jax.tree.map(lambda leaf: leaf.sharding, params)
        state_shardings = gradtx.state_shardings(tx, params, shard_over=shard_over)
        if shard_over is not None:
            state = jax.jit(tx.init, out_shardings=state_shardings)(params)
        sharded_step = jax.jit(
            step, out_shardings=(param_shardings, state_shardings, NamedSharding(mesh, P()))
        )
        batch = jax.device_put(tiny_batch(), P("data"))
        final_params, final_state, losses = cases.run_steps(sharded_step, params, state, batch)
    if shard_over is not None:
        for path, leaf in jax.tree_util.tree_flatten_with_path(final_state)[0]:
            if leaf.shape == SHAPES["w"]:
                assert leaf.sharding.spec == P("data", "model"), cases.key_path(path)
    np.testing.assert_allclose(losses, expected[2], rtol=cases.RTOL, atol=cases.ATOL)
    assert_trees_close(final_params, expected[0], rtol=cases.RTOL, atol=cases.PARAMS_ATOL)
    assert_trees_close(final_state, expected[1], rtol=cases.RTOL, atol=cases.ATOL)
