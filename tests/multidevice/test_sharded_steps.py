"""Sharded training steps equal the single-device run, with the state born where it is used.

Four layouts of a 2-layer MLP on 8 simulated devices, each a jitted step with
its in/out shardings pinned, three steps: data parallel (params replicated,
batch over "data"), FSDP (kernels and bias split over "data"), FSDP + tensor
parallel on a (2, 4) mesh, and ZeRO (params replicated, state split over
"data" by ``gradtx.state_shardings(..., shard_over="data")``). Each runs
adamw, sgd with momentum, a partition of the two, and muon, against one
single-device run per optimizer. The compiled programs show where the
optimizer communicates: AdamW's update gathers no moment in FSDP, ZeRO adds
only the all-gathers of the updated params, and Muon's Newton-Schulz
iteration all-reduces (or all-gathers) on every step.
"""

import collections
import functools
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest
import sharded_cases as cases
from jax.sharding import NamedSharding, PartitionSpec
from parity_checks import assert_trees_close

import gradtx

P = PartitionSpec

OPTIMIZERS = {
    "adamw": gradtx.adamw(cases.LEARNING_RATE, weight_decay=0.1),
    "sgd": gradtx.sgd(cases.LEARNING_RATE, momentum=0.9),
    "partition": gradtx.partition(
        {
            "adam": gradtx.adamw(cases.LEARNING_RATE),
            "sgd": gradtx.sgd(cases.LEARNING_RATE, momentum=0.9),
        },
        {"dense": {"kernel": "adam", "bias": "sgd"}, "out": {"kernel": "adam"}},
    ),
    "muon": gradtx.muon(cases.LEARNING_RATE),
}
# The update rules without a reduction over a leaf: their update is elementwise.
ELEMENTWISE = ("adamw", "sgd", "partition")

REPLICATED = {"dense": {"kernel": P(), "bias": P()}, "out": {"kernel": P()}}


class Layout(NamedTuple):
    mesh: Any
    param_specs: Any
    shard_over: str | None = None


LAYOUTS = {
    "data_parallel": Layout(cases.data_mesh, REPLICATED),
    "fsdp": Layout(
        cases.data_mesh,
        {
            "dense": {"kernel": P("data", None), "bias": P("data")},
            "out": {"kernel": P("data", None)},
        },
    ),
    "fsdp_tp": Layout(cases.data_model_mesh, cases.FSDP_TP_SPECS),
    "zero": Layout(cases.data_mesh, REPLICATED, shard_over="data"),
}
CASES = [(layout, optimizer) for layout in LAYOUTS for optimizer in OPTIMIZERS]


class Run(NamedTuple):
    """A run's final params, state and losses, and what it started from."""

    params: Any
    state: Any
    losses: np.ndarray
    initial_params: Any = None
    born_state: Any = None
    born_shardings: Any = None
    hlo_text: str = ""


@functools.cache
def reference(optimizer: str) -> Run:
    """The single-device run: every array on jax.devices()[0]."""
    tx = OPTIMIZERS[optimizer]
    device = jax.devices()[0]
    params = jax.device_put(cases.initial_params(), device)
    batch = jax.device_put(cases.fixed_batch(), device)
    state = jax.jit(tx.init)(params)
    return Run(*cases.run_steps(jax.jit(cases.train_step(tx)), params, state, batch))


@functools.cache
def sharded(layout_name: str, optimizer: str) -> Run:
    """The run under a layout, its state born by ``jax.jit(tx.init)`` on the sharded params."""
    tx = OPTIMIZERS[optimizer]
    layout = LAYOUTS[layout_name]
    mesh = layout.mesh()
    param_shardings = cases.named(mesh, layout.param_specs)
    batch_sharding = NamedSharding(mesh, P("data"))
    params = jax.device_put(cases.initial_params(), param_shardings)
    batch = jax.device_put(cases.fixed_batch(), batch_sharding)
    born = jax.jit(tx.init)(params)
    born_shardings = state_shardings = gradtx.state_shardings(tx, params)
    state = born
    if layout.shard_over is not None:
        state_shardings = gradtx.state_shardings(tx, params, shard_over=layout.shard_over)
        state = jax.jit(tx.init, out_shardings=state_shardings)(params)
    step = jax.jit(
        cases.train_step(tx),
        in_shardings=(param_shardings, state_shardings, batch_sharding),
        out_shardings=(param_shardings, state_shardings, NamedSharding(mesh, P())),
    )
    # Compiled once: the program that runs is the one whose collectives are read.
    compiled = step.lower(params, state, batch).compile()
    final_params, final_state, losses = cases.run_steps(compiled, params, state, batch)
    return Run(
        final_params,
        final_state,
        losses,
        initial_params=params,
        born_state=born,
        born_shardings=born_shardings,
        hlo_text=compiled.as_text(),
    )


# ---------------------------------------------------------------- (a) born sharded


@pytest.mark.parametrize("layout, optimizer", CASES)
def test_state_is_born_with_the_params_shardings(layout, optimizer):
    run = sharded(layout, optimizer)
    where = f"{optimizer} under {layout}"
    cases.assert_born_sharded(run.born_state, run.initial_params, LAYOUTS[layout].mesh(), where)
    cases.assert_same_shardings(run.born_state, run.born_shardings, where)


# ---------------------------------------------------------------- (b) equal to one device


@pytest.mark.parametrize("layout, optimizer", CASES)
def test_three_sharded_steps_equal_the_single_device_run(layout, optimizer):
    run, expected = sharded(layout, optimizer), reference(optimizer)
    np.testing.assert_allclose(run.losses, expected.losses, rtol=cases.RTOL, atol=cases.ATOL)
    assert_trees_close(run.params, expected.params, rtol=cases.RTOL, atol=cases.PARAMS_ATOL)
    assert_trees_close(run.state, expected.state, rtol=cases.RTOL, atol=cases.ATOL)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_zero_keeps_every_moment_sharded_over_data(optimizer):
    run = sharded("zero", optimizer)
    for path, leaf in jax.tree_util.tree_flatten_with_path(run.state)[0]:
        owner = cases.param_of(path, run.params)
        if owner is None or leaf.shape != owner[1].shape:
            continue  # counts, Muon's coefficients: nothing to split
        spec = leaf.sharding.spec
        assert "data" in spec, (
            f"{optimizer}: state{cases.key_path(path)} {leaf.shape} after {cases.STEPS} ZeRO "
            f"steps is {spec}, not split over 'data'"
        )
        assert leaf.addressable_shards[0].data.size == leaf.size // 8, cases.key_path(path)


# ---------------------------------------------------------------- (c) what the programs send


def kernel_shapes() -> list[tuple[int, ...]]:
    params = cases.initial_params()
    return [params["dense"]["kernel"].shape, params["out"]["kernel"].shape]


@pytest.mark.parametrize("layout", ["fsdp", "fsdp_tp"])
def test_adamw_update_gathers_no_full_moment(layout):
    # The update alone: the step's forward pass gathers FSDP kernels by design.
    run = sharded(layout, "adamw")
    text = cases.update_program(OPTIMIZERS["adamw"], run.initial_params)
    assert cases.full_size_all_gathers(text, kernel_shapes()) == [], cases.collectives(text)


def test_the_full_moment_check_finds_the_gather_of_a_replicated_state():
    # The check above can fail: the same update with the state pinned replicated
    # must gather the sharded gradients to full kernels to update the moments.
    run = sharded("fsdp", "adamw")
    tx = OPTIMIZERS["adamw"]
    mesh = LAYOUTS["fsdp"].mesh()
    replicated = jax.tree.map(
        lambda _: NamedSharding(mesh, P()), gradtx.state_shardings(tx, run.initial_params)
    )
    text = cases.update_program(tx, run.initial_params, replicated)
    gathered = set(cases.full_size_all_gathers(text, kernel_shapes()))
    assert gathered == set(kernel_shapes()), cases.collectives(text)


@pytest.mark.parametrize("optimizer", ELEMENTWISE)
def test_zero_adds_only_all_gathers_of_the_updated_params(optimizer):
    # Muon is left out: Newton-Schulz on a momentum split over "data" needs
    # collectives of its own on every iteration (test_muon_update_communicates).
    data_parallel = collections.Counter(
        cases.collectives(sharded("data_parallel", optimizer).hlo_text)
    )
    zero = collections.Counter(cases.collectives(sharded("zero", optimizer).hlo_text))
    added, removed = zero - data_parallel, data_parallel - zero
    param_shapes = {np.shape(leaf) for leaf in jax.tree.leaves(cases.initial_params())}
    # XLA may turn the gradients' all-reduce into a reduce-scatter: that is allowed.
    unexpected = [
        (op, shapes)
        for op, shapes in added.elements()
        if op != "reduce-scatter" and not (op == "all-gather" and set(shapes) <= param_shapes)
    ]
    assert unexpected == [], f"ZeRO added {unexpected} to the data-parallel program"
    assert all(op == "all-reduce" for op, _ in removed), f"ZeRO dropped {removed}"
    if removed:
        assert any(op == "reduce-scatter" for op, _ in added), f"ZeRO dropped {removed}"
    gathered = {shape for op, shapes in added.elements() if op == "all-gather" for shape in shapes}
    assert gathered == param_shapes, f"ZeRO all-gathers {gathered}, not every param"


# ---------------------------------------------------------------- Muon on a model-sharded kernel


@functools.cache
def muon_kernel_run() -> tuple[Run, Run]:
    """Three Muon updates of one (16, 32) kernel split over "model", sharded and on one device."""
    tx = gradtx.muon(cases.LEARNING_RATE)
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(16, 32)).astype(np.float32)
    gradients = [{"w": rng.normal(size=(16, 32)).astype(np.float32)} for _ in range(cases.STEPS)]
    runs = []
    for sharding in (
        NamedSharding(cases.data_model_mesh(), P(None, "model")),
        jax.sharding.SingleDeviceSharding(jax.devices()[0]),
    ):
        params = {"w": jax.device_put(kernel, sharding)}
        state = jax.jit(tx.init)(params)
        update = jax.jit(tx.update)
        for grads in gradients:
            updates, state = update(jax.device_put(grads, sharding), state, params)
            params = gradtx.apply_updates(params, updates)
        runs.append(Run(params, state, np.zeros(0)))
    return runs[0], runs[1]


def test_muon_on_a_model_sharded_kernel_equals_one_device():
    run, expected = muon_kernel_run()
    assert run.params["w"].sharding.spec == P(None, "model")
    assert_trees_close(run.params, expected.params, rtol=cases.RTOL, atol=cases.PARAMS_ATOL)
    assert_trees_close(run.state, expected.state, rtol=cases.RTOL, atol=cases.ATOL)


def test_muon_update_communicates_where_adamw_does_not():
    # On a kernel split over "model" along its columns, X X^T sums over the
    # split axis: every Newton-Schulz step all-reduces the partial Gram
    # matrix (16 x 16), while AdamW's elementwise update sends nothing.
    params = cases.muon_kernel_cases()["(16, 32) P(None, 'model')"]
    muon = cases.collectives(cases.update_program(gradtx.muon(cases.LEARNING_RATE), params))
    grams = [
        shapes
        for op, shapes in muon
        if op == "all-reduce" and (16, 16) in {cases.squeezed(shape) for shape in shapes}
    ]
    assert len(grams) == 5, muon  # ns_steps
    assert cases.collectives(cases.update_program(OPTIMIZERS["adamw"], params)) == []
