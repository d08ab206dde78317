"""OrbaxCheckpoints on one device: round trips, refusals, crash safety and damage."""

import gc
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import pytest
from checkpoint_cases import TX, assert_bit_equal, make_params

import gradtx
from gradtx.orbax_checkpoint import OrbaxCheckpoints


@jax.jit
def train_step(params, state):
    # Elementwise gradients: every step changes every moment.
    grads = jax.tree.map(lambda p: (jnp.sin(3 * p) + 0.1).astype(p.dtype), params)
    updates, state = TX.update(grads, state, params)
    return gradtx.apply_updates(params, updates), state


def trained(steps):
    params = make_params()
    state = TX.init(params)
    for _ in range(steps):
        params, state = train_step(params, state)
    return params, state


def step_directories(directory):
    return sorted(entry.name for entry in pathlib.Path(directory).iterdir() if entry.is_dir())


def test_round_trip_is_bit_for_bit_and_stores_a_readable_record(tmp_path):
    params, state = trained(3)
    with OrbaxCheckpoints(tmp_path / "run", TX) as checkpoints:
        assert checkpoints.save(3, params, state) is None
        restored = checkpoints.restore(make_params())
    assert isinstance(restored, gradtx.Checkpoint)
    assert_bit_equal(restored.params, params)
    assert_bit_equal(restored.state, state)
    assert restored.params["head"]["bias"].dtype == jnp.bfloat16
    assert restored.step == 3
    assert restored.config == gradtx.to_config(TX)

    record = json.loads((tmp_path / "run" / "3" / "gradtx" / "metadata").read_text())
    assert record["format"] == "gradtx.OrbaxCheckpoints" and record["version"] == 1
    assert record["step"] == 3 and record["tx"] == repr(TX)
    assert record["config"] == json.loads(json.dumps(gradtx.to_config(TX)))
    assert ["['head']['bias']", "bfloat16", [2]] in record["params"]
    assert ["[0].count", "int32", []] in record["state"]


def test_restore_onto_shape_dtype_structs_and_a_relative_directory(tmp_path, monkeypatch):
    params, state = trained(1)
    monkeypatch.chdir(tmp_path)
    with OrbaxCheckpoints("relative", TX) as checkpoints:
        assert checkpoints.directory == tmp_path / "relative"
        checkpoints.save(1, params, state)
        like = jax.eval_shape(lambda tree: tree, make_params())
        restored = checkpoints.restore(like)
    assert_bit_equal(restored.params, params)
    assert_bit_equal(restored.state, state)
    device = jax.local_devices()[0]
    for leaf in jax.tree.leaves((restored.params, restored.state)):
        assert leaf.sharding == jax.sharding.SingleDeviceSharding(device)


def test_steps_latest_and_step_selection(tmp_path):
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        assert checkpoints.latest_step() is None and checkpoints.all_steps() == []
        with pytest.raises(gradtx.CheckpointError, match=f"{tmp_path} holds no checkpoint"):
            checkpoints.restore(make_params())
        saved = {}
        for step in (1, 2, 5):
            saved[step] = trained(step)
            checkpoints.save(step, *saved[step])
        assert checkpoints.all_steps() == [1, 2, 5] and checkpoints.latest_step() == 5
        latest = checkpoints.restore(make_params())
        chosen = checkpoints.restore(make_params(), step=2)
        with pytest.raises(gradtx.CheckpointError, match=r"step 3: .* \[1, 2, 5\]"):
            checkpoints.restore(make_params(), step=3)
        with pytest.raises(ValueError, match="step 2 is already saved"):
            checkpoints.save(2, *saved[5])
        with pytest.raises(ValueError, match="non-negative integer, got -1"):
            checkpoints.save(-1, *saved[1])
    assert latest.step == 5 and chosen.step == 2
    assert_bit_equal(latest.params, saved[5][0])
    assert_bit_equal(chosen.state, saved[2][1])
    # Steps saved by an earlier run are found by a new one.
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        assert checkpoints.all_steps() == [1, 2, 5]


def test_max_to_keep_deletes_the_oldest_steps(tmp_path):
    params, state = trained(0)
    with OrbaxCheckpoints(tmp_path, TX, max_to_keep=2) as checkpoints:
        for step in (1, 2, 3):
            checkpoints.save(step, params, state)
        assert checkpoints.all_steps() == [2, 3]
    assert step_directories(tmp_path) == ["2", "3"]
    with pytest.raises(ValueError, match="max_to_keep must be None or a positive integer"):
        OrbaxCheckpoints(tmp_path, TX, max_to_keep=0)


def test_another_optimizer_is_refused_naming_the_field(tmp_path):
    params, state = trained(1)
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        checkpoints.save(1, params, state)
    other = gradtx.adamw(
        learning_rate=gradtx.exponential_decay(0.05, transition_steps=3, decay_rate=0.7),
        weight_decay=1e-3,
        mask=gradtx.path_mask(exclude=[r"bias$"]),
    )
    with OrbaxCheckpoints(tmp_path, other) as checkpoints:
        with pytest.raises(gradtx.CheckpointError) as raised:
            checkpoints.restore(make_params())
    message = str(raised.value)
    assert "config['weight_decay'] is 0.01 in the checkpoint but 0.001" in message
    assert f"step 1 in {tmp_path}" in message
    with OrbaxCheckpoints(tmp_path, gradtx.sgd(0.1)) as checkpoints:
        with pytest.raises(gradtx.CheckpointError, match=r"config\['name'\] is 'adamw'"):
            checkpoints.restore(make_params())


def without_dense_bias(params):
    return {"dense": {"kernel": params["dense"]["kernel"]}, "head": params["head"]}


def with_head_kernel(params, kernel):
    return {"dense": params["dense"], "head": {**params["head"], "kernel": kernel}}


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            without_dense_bias,
            r"params\['dense'\]\['bias'\] is in the checkpoint but not in params_like",
        ),
        (
            lambda params: with_head_kernel(params, jnp.ones((4, 3))),
            r"params\['head'\]\['kernel'\] has shape \(4, 2\) in the checkpoint but \(4, 3\)",
        ),
        (
            lambda params: with_head_kernel(params, jnp.ones((4, 2), jnp.float16)),
            r"params\['head'\]\['kernel'\] has dtype float32 in the checkpoint but float16",
        ),
        (
            lambda params: {**params, "extra": jnp.ones(2)},
            r"params\['extra'\] is in params_like but missing from the checkpoint",
        ),
    ],
    ids=["missing-key", "other-shape", "other-dtype", "extra-key"],
)
def test_another_params_tree_is_refused_naming_the_key_path(tmp_path, edit, message):
    params, state = trained(1)
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        checkpoints.save(1, params, state)
        with pytest.raises(gradtx.CheckpointError, match=message):
            checkpoints.restore(edit(make_params()))


def test_a_state_of_another_optimizer_is_refused_at_save_and_nothing_is_written(tmp_path):
    params = make_params()
    foreign_state = gradtx.sgd(0.1, momentum=0.9).init(params)
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        with pytest.raises(gradtx.CheckpointError) as raised:
            checkpoints.save(1, params, foreign_state)
        assert checkpoints.all_steps() == []
    message = str(raised.value)
    assert "the state does not belong to the given tx and params" in message
    assert "state[0]" in message and f"step 1 in {tmp_path}" in message
    assert step_directories(tmp_path) == []
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        with pytest.raises(TypeError, match=r"params\['name'\] = 'dense'"):
            checkpoints.save(1, {"name": "dense"}, ())


def test_async_save_returns_then_wait_makes_it_restorable(tmp_path):
    params, state = trained(2)
    host_params, host_state = jax.device_get((params, state))
    with OrbaxCheckpoints(tmp_path, TX, async_save=True) as checkpoints:
        checkpoints.save(2, params, state)
        # The arrays were copied off the devices: freeing them (as a donating
        # train step does) cannot spoil the save in flight.
        for leaf in jax.tree.leaves((params, state)):
            leaf.delete()
        checkpoints.wait_until_finished()
        assert checkpoints.all_steps() == [2]
        restored = checkpoints.restore(make_params())
        # close() waits for a save still in flight.
        checkpoints.save(4, *trained(4))
    assert_bit_equal(restored.params, host_params)
    assert_bit_equal(restored.state, host_state)
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        assert checkpoints.all_steps() == [2, 4]
        assert_bit_equal(checkpoints.restore(make_params()).state, trained(4)[1])


# Saves step 1, then starts an async save of step 2 whose gradtx record
# stalls once written; the parent kills the process while it is in flight.
STALLED_SAVE = textwrap.dedent(
    """
    import asyncio, sys
    import jax.numpy as jnp
    import orbax.checkpoint as ocp
    import gradtx
    from gradtx.orbax_checkpoint import OrbaxCheckpoints

    write_record = ocp.JsonCheckpointHandler._save_fn

    async def stalled(self, record, directory):
        await write_record(self, record, directory)
        if record["step"] == 2:
            print("stalled", flush=True)
            await asyncio.sleep(600)

    ocp.JsonCheckpointHandler._save_fn = stalled
    tx = gradtx.adam(0.1)
    params = {"w": jnp.arange(64.0)}
    checkpoints = OrbaxCheckpoints(sys.argv[1], tx, async_save=True)
    checkpoints.save(1, params, tx.init(params))
    checkpoints.wait_until_finished()
    checkpoints.save(2, {"w": params["w"] + 1}, tx.init(params))
    checkpoints.wait_until_finished()
    """
)


def test_a_save_killed_midway_leaves_the_previous_step_restorable(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", STALLED_SAVE, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    watchdog = threading.Timer(120, child.kill)  # a child that never stalls fails, not hangs
    watchdog.start()
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "stalled"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        watchdog.cancel()
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    # The killed save wrote into a temporary directory that was never renamed.
    partial = [name for name in step_directories(tmp_path) if name.startswith("2.")]
    assert len(partial) == 1 and "tmp" in partial[0]
    written = [path.parent.name for path in (tmp_path / partial[0]).rglob("metadata")]
    assert written == ["gradtx.orbax-checkpoint-tmp"]  # the record, in its own temporary

    tx = gradtx.adam(0.1)
    params = {"w": jnp.arange(64.0)}
    with OrbaxCheckpoints(tmp_path, tx) as checkpoints:
        assert checkpoints.all_steps() == [1] and checkpoints.latest_step() == 1
        restored = checkpoints.restore(params)
    assert_bit_equal(restored.params, params)
    assert_bit_equal(restored.state, tx.init(params))
    # Opening the directory starts deleting the partial save; a save waits for that.
    with OrbaxCheckpoints(tmp_path, tx) as checkpoints:
        checkpoints.save(3, params, restored.state)
        assert checkpoints.all_steps() == [1, 3]
    assert step_directories(tmp_path) == ["1", "3"]


def truncate_largest_array_file(step_directory):
    files = [path for path in (step_directory / "arrays").rglob("d/*") if path.is_file()]
    largest = max(files, key=lambda path: path.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


def rewrite_record(step_directory, edit):
    path = step_directory / "gradtx" / "metadata"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


def claim_bfloat16_kernel(record):
    for entry in record["params"] + record["state"]:
        if entry[0].endswith("['head']['kernel']"):  # the param and its moments
            entry[1] = "bfloat16"


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda step: (step / "gradtx" / "metadata").unlink(),
            r"its gradtx record \(the 'gradtx' item\) cannot be read \(FileNotFoundError",
        ),
        (
            lambda step: (step / "gradtx" / "metadata").write_text('{"format": '),
            r"its gradtx record .* cannot be read \(JSONDecodeError",
        ),
        (
            lambda step: rewrite_record(step, lambda record: record.update(version=9)),
            "has format version 9; this gradtx reads version 1",
        ),
        (
            lambda step: rewrite_record(step, lambda record: record.update(params="w")),
            "its record's 'params' field is str, not list",
        ),
        (
            lambda step: rewrite_record(step, lambda record: record["state"].append([1, 2])),
            r"malformed array entry \[1, 2\] in state",
        ),
        (
            lambda step: shutil.rmtree(step / "arrays"),
            r"the metadata of its 'arrays' item cannot be read",
        ),
        (
            lambda step: rewrite_record(step, lambda record: record.update(fingerprints={})),
            "its record has no params fingerprints",
        ),
        pytest.param(
            truncate_largest_array_file,
            r"its 'arrays' item cannot be read \(ValueError",
            # Orbax leaves the reads of the other arrays to be closed by the
            # garbage collector, which reports their GeneratorExit as unraisable.
            marks=pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
        ),
    ],
    ids=[
        "record-deleted",
        "record-truncated",
        "record-version",
        "record-field",
        "record-entry",
        "arrays-deleted",
        "fingerprints-missing",
        "array-truncated",
    ],
)
def test_a_damaged_step_gives_a_checkpoint_error(tmp_path, damage, message):
    params = {"w": jnp.linspace(0.0, 1.0, 4096)}
    tx = gradtx.sgd(0.1, momentum=0.9)
    with OrbaxCheckpoints(tmp_path, tx) as checkpoints:
        checkpoints.save(1, params, tx.init(params))
    damage(tmp_path / "1")
    with OrbaxCheckpoints(tmp_path, tx) as checkpoints:
        with pytest.raises(gradtx.CheckpointError, match=message) as raised:
            checkpoints.restore(params)
    assert f"step 1 in {tmp_path}" in str(raised.value)
    gc.collect()  # here, not in a later test: see the array-truncated case


@pytest.mark.parametrize("where", [0.3, 0.5, 0.7])
def test_a_flipped_bit_in_an_array_file_is_refused_by_its_fingerprint(tmp_path, where):
    # The data still decompresses: without the fingerprint, wrong numbers would restore.
    params = {"w": jnp.linspace(0.0, 1.0, 65536).reshape(256, 256)}
    tx = gradtx.sgd(0.1)
    with OrbaxCheckpoints(tmp_path, tx) as checkpoints:
        checkpoints.save(1, params, tx.init(params))
    files = [path for path in (tmp_path / "1" / "arrays").rglob("d/*") if path.is_file()]
    largest = max(files, key=lambda path: path.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    largest.write_bytes(bytes(data))
    with OrbaxCheckpoints(tmp_path, tx) as checkpoints:
        with pytest.raises(
            gradtx.CheckpointError,
            match=r"the array params\['w'\] does not match the fingerprint recorded when it was "
            "saved",
        ):
            checkpoints.restore(params)


def test_a_record_that_disagrees_with_the_stored_arrays_is_refused(tmp_path):
    # Orbax would cast the float32 array to the bfloat16 the record claims.
    params, state = trained(1)
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        checkpoints.save(1, params, state)
    rewrite_record(tmp_path / "1", claim_bfloat16_kernel)
    like = with_head_kernel(make_params(), jnp.ones((4, 2), jnp.bfloat16))
    with OrbaxCheckpoints(tmp_path, TX) as checkpoints:
        with pytest.raises(
            gradtx.CheckpointError,
            match=r"\['params'\]\['head'\]\['kernel'\] is stored as float32\[4, 2\], but its "
            r"gradtx record says bfloat16\[4, 2\]",
        ):
            checkpoints.restore(like)


def test_without_orbax_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "orbax", None)
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    with pytest.raises(ImportError) as raised:
        OrbaxCheckpoints(tmp_path, TX)
    assert str(raised.value) == (
        "gradtx.OrbaxCheckpoints needs orbax-checkpoint: pip install 'gradtx[orbax]'"
    )
    assert not list(tmp_path.iterdir())


def test_close_waits_for_an_async_save(tmp_path):
    params, state = trained(1)
    checkpoints = OrbaxCheckpoints(tmp_path, TX, async_save=True)
    checkpoints.save(1, params, state)
    checkpoints.close()
    assert step_directories(tmp_path) == ["1"]
    assert "OrbaxCheckpoints(" in repr(checkpoints) and str(tmp_path) in repr(checkpoints)
