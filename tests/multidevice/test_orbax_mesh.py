"""OrbaxCheckpoints across meshes: save from 8 devices, resume on 4, bit for bit.

AdamW runs on a (2, 4) ("data", "model") mesh with FSDP + tensor parallel
shardings; its params and state are saved with their shardings and restored
onto 4 of the devices (a (2, 2) mesh, and a 1-D one), each leaf placed by the
new ``params_like`` and :func:`gradtx.state_shardings`. The gradients are
computed elementwise from the params (no reduction over devices), so every
element takes the same operations on any mesh and the resumed run must equal
the uninterrupted one exactly. Last, two CPU processes (2 devices each) save
and restore one checkpoint as a multi-host run does, and this process restores
it onto its 8 devices.
"""

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checkpoint_cases import assert_bit_equal
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from sharded_cases import data_model_mesh

import gradtx
from gradtx.orbax_checkpoint import OrbaxCheckpoints

P = PartitionSpec
TX = gradtx.adamw(1e-2, weight_decay=1e-2)
SPECS = {"w": P("data", "model"), "b": P("model")}
STEPS = 3


def initial_params():
    rng = np.random.default_rng(0)
    return {
        "w": rng.normal(size=(8, 16)).astype(np.float32),
        "b": (0.1 * rng.normal(size=16)).astype(np.float32),
    }


def shardings_on(mesh, specs=SPECS):
    return {name: NamedSharding(mesh, spec) for name, spec in specs.items()}


def like_on(mesh, specs=SPECS):
    """``params_like`` for a restore onto ``mesh``: shapes, dtypes and new shardings."""
    return {
        name: jax.ShapeDtypeStruct(
            value.shape, value.dtype, sharding=shardings_on(mesh, specs)[name]
        )
        for name, value in initial_params().items()
    }


def train_step(params, state):
    grads = jax.tree.map(lambda p: jnp.sin(3 * p) + 0.1, params)
    updates, state = TX.update(grads, state, params)
    return gradtx.apply_updates(params, updates), state


@functools.cache
def step_on(mesh):
    """The jitted step with its out shardings pinned to ``mesh`` (compiled once per mesh)."""
    state_shardings = gradtx.state_shardings(TX, like_on(mesh))
    return jax.jit(train_step, out_shardings=(shardings_on(mesh), state_shardings))


def run(params, state, mesh, steps):
    step = step_on(mesh)
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@functools.cache
def start_on_eight():
    """Params on the (2, 4) mesh and the state born sharded from them."""
    params = jax.device_put(initial_params(), shardings_on(data_model_mesh()))
    return params, jax.jit(TX.init)(params)


@functools.cache
def after_three():
    return run(*start_on_eight(), data_model_mesh(), STEPS)


def auto_mesh(shape, names, devices):
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)


@functools.cache
def four_device_mesh():
    """4 of the 8 devices as 2 x 2, ("data", "model")."""
    return auto_mesh((2, 2), ("data", "model"), jax.devices()[:4])


def assert_placed(tree, shardings):
    """Every leaf of ``tree`` has the sharding at the same place in ``shardings``."""
    assert jax.tree.structure(tree) == jax.tree.structure(shardings)
    for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.sharding, sharding)
        assert leaf.sharding.mesh == sharding.mesh


def test_the_state_is_born_sharded_on_eight_devices():
    _, state = start_on_eight()
    mesh = data_model_mesh()
    assert state[0].mu["w"].sharding == NamedSharding(mesh, SPECS["w"])
    assert state[0].nu["b"].sharding == NamedSharding(mesh, SPECS["b"])
    assert len(state[0].mu["w"].addressable_shards) == 8


def test_save_on_eight_devices_resume_on_four_bit_for_bit(tmp_path):
    params, state = after_three()
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        checkpoints.save(STEPS, params, state)
        mesh = four_device_mesh()
        like = like_on(mesh)
        restored = checkpoints.restore(like)
    assert restored.step == STEPS and restored.config == gradtx.to_config(TX)
    assert_bit_equal(restored.params, params)
    assert_bit_equal(restored.state, state)

    expected_state = gradtx.state_shardings(TX, like)
    assert_placed(restored.params, shardings_on(mesh))
    assert_placed(restored.state, expected_state)
    # The moments follow their params onto the new mesh; the count is replicated.
    assert restored.state[0].mu["w"].sharding == NamedSharding(mesh, SPECS["w"])
    assert restored.state[0].nu["b"].sharding == NamedSharding(mesh, SPECS["b"])
    assert restored.state[0].count.sharding == NamedSharding(mesh, P())
    for leaf in jax.tree.leaves((restored.params, restored.state)):
        assert leaf.sharding.device_set == set(jax.devices()[:4])

    resumed = run(restored.params, restored.state, mesh, STEPS)
    uninterrupted = run(params, state, data_model_mesh(), STEPS)
    assert_bit_equal(resumed, uninterrupted)
    assert resumed[0]["w"].sharding == NamedSharding(mesh, SPECS["w"])


def test_async_save_on_the_mesh_restores_onto_a_one_dimensional_mesh(tmp_path):
    params, state = after_three()
    with OrbaxCheckpoints(tmp_path, TX, async_save=True) as checkpoints:
        checkpoints.save(STEPS, params, state)
        checkpoints.wait_until_finished()
        assert checkpoints.all_steps() == [STEPS]
        mesh = auto_mesh((4,), ("data",), jax.devices()[4:])
        specs = {"w": P(None, "data"), "b": P()}
        restored = checkpoints.restore(like_on(mesh, specs))
    assert_bit_equal(restored.params, params)
    assert_bit_equal(restored.state, state)
    assert_placed(restored.params, shardings_on(mesh, specs))
    assert_placed(restored.state, gradtx.state_shardings(TX, like_on(mesh, specs)))
    assert restored.state[0].mu["w"].sharding.spec == P(None, "data")


@pytest.mark.parametrize("wrong", ["shape", "optimizer"])
def test_a_mismatch_is_refused_before_any_array_is_read(tmp_path, wrong):
    params, state = start_on_eight()
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        checkpoints.save(0, params, state)
    # Reading an array now fails, so the refusal below comes from the record alone.
    shutil.rmtree(tmp_path / "0" / "arrays")
    mesh = four_device_mesh()
    like = like_on(mesh)
    tx = TX
    if wrong == "shape":
        like["b"] = jax.ShapeDtypeStruct((8,), jnp.float32, sharding=like["b"].sharding)
        message = r"params\['b'\] has shape \(16,\) in the checkpoint but \(8,\)"
    else:
        tx = gradtx.adamw(1e-3, weight_decay=1e-2)
        message = r"config\['learning_rate'\] is 0.01 in the checkpoint but 0.001"
    with OrbaxCheckpoints(tmp_path, tx) as checkpoints:
        with pytest.raises(gradtx.CheckpointError, match=message):
            checkpoints.restore(like)


# One process of a two-process (multi-host) run on CPU, 2 devices each: saves
# step 1 of params sharded over all 4 global devices, restores it, checks its
# own shards and reports which gradtx record files it wrote.
HOST = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    process, directory, address = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(address, num_processes=2, process_id=process)
    import numpy as np
    from etils import epath
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import gradtx
    from gradtx.orbax_checkpoint import OrbaxCheckpoints

    record_writes = []
    write_text = epath.Path.write_text

    def recording(path, *args, **kwargs):
        if "gradtx" in str(path):
            record_writes.append(path.name)
        return write_text(path, *args, **kwargs)

    epath.Path.write_text = recording
    mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
    shardings = {"w": NamedSharding(mesh, P("data", None)), "b": NamedSharding(mesh, P())}
    full = {"w": np.arange(32, dtype=np.float32).reshape(8, 4), "b": np.ones(4, np.float32)}
    params = {
        name: jax.make_array_from_callback(value.shape, shardings[name], value.__getitem__)
        for name, value in full.items()
    }
    tx = gradtx.adamw(1e-2, weight_decay=1e-2)
    with OrbaxCheckpoints(directory, tx) as checkpoints:
        checkpoints.save(1, params, jax.jit(tx.init)(params))
        like = {
            name: jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=shardings[name])
            for name, value in full.items()
        }
        restored = checkpoints.restore(like)
    own_shards_equal = all(
        np.array_equal(np.asarray(shard.data), full[name][shard.index])
        for name, array in restored.params.items()
        for shard in array.addressable_shards
    )
    print(json.dumps({
        "process": jax.process_index(),
        "local_devices": jax.local_device_count(),
        "global_devices": jax.device_count(),
        "own_shards_equal": own_shards_equal,
        "mu_spec": str(restored.state[0].mu["w"].sharding.spec),
        "record_writes": record_writes,
    }))
    """
)


def free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_processes_save_their_shards_and_one_writes_the_record(tmp_path):
    address = f"localhost:{free_port()}"
    env = {**os.environ, "XLA_FLAGS": ""}
    hosts = [
        subprocess.Popen(
            [sys.executable, "-c", HOST, str(process), str(tmp_path), address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for process in (0, 1)
    ]
    reports = []
    try:
        for host in hosts:
            out, err = host.communicate(timeout=240)
            assert host.returncode == 0, err[-4000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for host in hosts:
            host.kill()
            host.wait()
    for process, report in enumerate(reports):
        assert report["process"] == process
        assert report["local_devices"] == 2 and report["global_devices"] == 4
        assert report["own_shards_equal"] and report["mu_spec"] == str(P("data"))
    # Orbax's primary host (process 0) alone writes the record; each process its shards.
    assert "metadata" in reports[0]["record_writes"]
    assert reports[1]["record_writes"] == []
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(tmp_path / "1" / "arrays"))

    # The multi-host checkpoint restores in this one process, onto its 8 devices.
    mesh = auto_mesh((8,), ("data",), jax.devices())
    tx = gradtx.adamw(1e-2, weight_decay=1e-2)
    like = {
        "w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=NamedSharding(mesh, P("data"))),
        "b": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=NamedSharding(mesh, P())),
    }
    with OrbaxCheckpoints(tmp_path, tx) as checkpoints:
        restored = checkpoints.restore(like)
    np.testing.assert_array_equal(restored.params["w"], np.arange(32.0).reshape(8, 4))
    np.testing.assert_array_equal(restored.state[0].mu["w"], np.zeros((8, 4)))
    assert restored.params["w"].sharding == like["w"].sharding
