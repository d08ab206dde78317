"""Checkpoints: round trips, every refusal, crash safety and bit-for-bit resume."""

import hashlib
import os
import struct
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
from checkpoint_cases import TX, make_params
from checkpoint_scripts import WrappedFile, halfway_save

import gradtx


def saved(tmp_path, tx=TX, step=7, name="run.ckpt"):
    params = make_params()
    state = tx.init(params)
    # One real update, so the state holds non-trivial moments.
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.3, params)
    updates, state = tx.update(grads, state, params)
    params = gradtx.apply_updates(params, updates)
    path = gradtx.save_checkpoint(tmp_path / name, params, state, tx, step=step)
    return path, params, state


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_restores_params_state_step_and_config_exactly(tmp_path):
    path, params, state = saved(tmp_path)
    assert path == tmp_path / "run.ckpt"
    restored = gradtx.restore_checkpoint(path, tx=TX, params_like=make_params())
    assert isinstance(restored, gradtx.Checkpoint)
    assert_trees_equal(restored.params, params)
    assert_trees_equal(restored.state, state)
    assert restored.params["head"]["bias"].dtype == jnp.bfloat16
    assert restored.step == 7
    assert restored.config == gradtx.to_config(TX)
    assert isinstance(restored.params["dense"]["kernel"], jax.Array)


def test_restore_accepts_shape_dtype_structs_and_keeps_shardings(tmp_path):
    path, params, _ = saved(tmp_path)
    abstract = jax.eval_shape(make_params)
    restored = gradtx.restore_checkpoint(path, tx=TX, params_like=abstract)
    assert_trees_equal(restored.params, params)
    like = make_params()
    restored = gradtx.restore_checkpoint(path, tx=TX, params_like=like)
    # Uncommitted like fresh parameters, so a jitted step does not compile again.
    assert not restored.params["dense"]["kernel"].committed
    device = jax.devices()[0]
    committed = jax.device_put(like, device)
    restored = gradtx.restore_checkpoint(path, tx=TX, params_like=committed)
    assert restored.params["dense"]["kernel"].committed
    assert restored.params["dense"]["kernel"].sharding == committed["dense"]["kernel"].sharding


def test_the_file_is_a_header_and_a_msgpack_payload_never_a_pickle(tmp_path):
    path, _, _ = saved(tmp_path)
    data = path.read_bytes()
    magic, version, length, digest = struct.unpack_from("<8sIQ32s", data)
    assert (magic, version) == (b"GRADTXCK", 1)
    payload = data[struct.calcsize("<8sIQ32s") :]
    assert len(payload) == length and hashlib.sha256(payload).digest() == digest
    content = msgpack.unpackb(payload)
    assert sorted(content) == ["config", "params", "state", "step", "tx"]
    assert content["params"][0][:3] == ["['dense']['bias']", "float32", [4]]
    assert b"\x80\x04" not in data[:2]  # not a pickle protocol header


@pytest.mark.parametrize(
    "other, message",
    [
        (gradtx.adam(0.05), r"config\['name'\] is 'adamw' in the checkpoint but 'adam'"),
        (
            gradtx.adamw(TX.learning_rate, b2=0.99, weight_decay=1e-2, mask=TX.mask),
            r"config\['b2'\] is 0.999 in the checkpoint but 0.99 for the given tx",
        ),
        (
            gradtx.adamw(0.05, weight_decay=1e-2, mask=TX.mask),
            r"config\['learning_rate'\] is \{.*'exponential_decay'.*\} in the checkpoint but 0.05",
        ),
        (
            gradtx.adamw(TX.learning_rate, weight_decay=1e-2),
            r"config\['mask'\] is \{.*\} in the checkpoint but None",
        ),
    ],
)
def test_a_different_optimizer_is_refused_naming_the_field(tmp_path, other, message):
    path, _, _ = saved(tmp_path)
    with pytest.raises(gradtx.CheckpointError, match=message) as error:
        gradtx.restore_checkpoint(path, tx=other, params_like=make_params())
    assert str(error.value).startswith(f"cannot restore {path}: it was saved with a different")
    assert "saved: adamw(learning_rate=exponential_decay(" in str(error.value)


def test_a_different_model_is_refused_naming_the_key_path(tmp_path):
    path, _, _ = saved(tmp_path)
    renamed = make_params()
    renamed["head"]["scale"] = renamed["head"].pop("bias")
    with pytest.raises(
        gradtx.CheckpointError,
        match=r"params\['head'\]\['scale'\] is in params_like but missing from the checkpoint",
    ):
        gradtx.restore_checkpoint(path, tx=TX, params_like=renamed)
    smaller = make_params()
    del smaller["head"]
    with pytest.raises(
        gradtx.CheckpointError,
        match=r"params\['head'\]\['bias'\] is in the checkpoint but not in params_like",
    ):
        gradtx.restore_checkpoint(path, tx=TX, params_like=smaller)
    wider = make_params()
    wider["dense"]["kernel"] = jnp.zeros((3, 5))
    with pytest.raises(
        gradtx.CheckpointError,
        match=r"params\['dense'\]\['kernel'\] has shape \(3, 4\) in the checkpoint but \(3, 5\) "
        "in params_like",
    ):
        gradtx.restore_checkpoint(path, tx=TX, params_like=wider)
    single = make_params()
    single["head"]["bias"] = single["head"]["bias"].astype(jnp.float32)
    with pytest.raises(
        gradtx.CheckpointError,
        match=r"params\['head'\]\['bias'\] has dtype bfloat16 in the checkpoint but float32",
    ):
        gradtx.restore_checkpoint(path, tx=TX, params_like=single)


def _rewrite(path, payload, *, version=1, length=None, digest=None):
    header = struct.pack(
        "<8sIQ32s",
        b"GRADTXCK",
        version,
        len(payload) if length is None else length,
        hashlib.sha256(payload).digest() if digest is None else digest,
    )
    path.write_bytes(header + payload)


def _payload(path):
    return path.read_bytes()[struct.calcsize("<8sIQ32s") :]


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda data: data[:-10],
            r"is truncated: the header announces \d+ payload bytes, the file holds \d+",
        ),
        (lambda data: data[:30], r"is truncated: 30 bytes, shorter than the 52-byte header"),
        (lambda data: b"", r"is truncated: 0 bytes"),
        (lambda data: data + b"\0", r"is corrupted: 1 unexpected bytes after the payload"),
        (
            lambda data: data[:-100] + bytes([data[-100] ^ 1]) + data[-99:],
            r"is corrupted: the SHA-256 checksum of its payload does not match its header",
        ),
        (
            lambda data: b'{"not": "a checkpoint"}' * 4,
            r"is not a gradtx checkpoint \(unknown header\)",
        ),
        (lambda data: b"\x80\x04\x95", r"is not a gradtx checkpoint"),
    ],
    ids=["truncated", "shorter-than-header", "empty", "trailing", "bit-flip", "json", "pickle"],
)
def test_a_damaged_file_gives_a_clear_error(tmp_path, damage, message):
    path, _, _ = saved(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(gradtx.CheckpointError, match=message):
        gradtx.restore_checkpoint(path, tx=TX, params_like=make_params())


def test_entries_are_matched_by_key_path_not_by_order(tmp_path):
    path, params, _ = saved(tmp_path)
    content = msgpack.unpackb(_payload(path))
    _rewrite(path, msgpack.packb({**content, "params": content["params"][::-1]}))
    restored = gradtx.restore_checkpoint(path, tx=TX, params_like=make_params())
    assert_trees_equal(restored.params, params)


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        gradtx.restore_checkpoint(tmp_path / "nothing.ckpt", tx=TX, params_like=make_params())


def test_a_newer_format_version_is_refused(tmp_path):
    path, _, _ = saved(tmp_path)
    _rewrite(path, _payload(path), version=2)
    with pytest.raises(
        gradtx.CheckpointError, match="has checkpoint format version 2; this gradtx reads version 1"
    ):
        gradtx.restore_checkpoint(path, tx=TX, params_like=make_params())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda content: b"\xc1", r"is corrupted: its payload cannot be decoded"),
        (
            lambda content: msgpack.packb({"step": 1}),
            "is corrupted: its payload lacks the checkpoint fields",
        ),
        (
            lambda content: msgpack.packb({**content, "params": [["x", "float32"]]}),
            r"malformed array entry \['x', 'float32'\]",
        ),
        (
            lambda content: msgpack.packb({**content, "params": [["x", "float32", [-1], b""]]}),
            r"malformed array entry",
        ),
        (
            lambda content: msgpack.packb(
                {
                    **content,
                    "params": [[*content["params"][0][:3], b"\0\0"], *content["params"][1:]],
                }
            ),
            r"\['dense'\]\['bias'\] holds 2 bytes, not the 16 of a float32\[4\] array",
        ),
        (
            lambda content: msgpack.packb(
                {**content, "params": [[content["params"][0][0], "object", [4], b""]]}
            ),
            r"\['dense'\]\['bias'\] has unsupported dtype 'object'",
        ),
        (
            lambda content: msgpack.packb(
                {**content, "params": [[content["params"][0][0], "nonsense", [4], b""]]}
            ),
            r"\['dense'\]\['bias'\] has unknown dtype 'nonsense'",
        ),
    ],
    ids=[
        "not-msgpack",
        "missing-fields",
        "malformed-entry",
        "negative-size",
        "wrong-byte-count",
        "object",
        "unknown",
    ],
)
def test_a_well_checksummed_but_malformed_payload_is_refused(tmp_path, edit, message):
    path, _, _ = saved(tmp_path)
    content = msgpack.unpackb(_payload(path))
    payload = edit(content)
    _rewrite(path, payload)
    with pytest.raises(gradtx.CheckpointError, match=message):
        gradtx.restore_checkpoint(path, tx=TX, params_like=make_params())


def test_save_refuses_bad_steps_and_leaves(tmp_path):
    params = make_params()
    state = TX.init(params)
    for step in (-1, 1.5, True):
        with pytest.raises(ValueError, match=f"step must be a non-negative integer, got {step!r}"):
            gradtx.save_checkpoint(tmp_path / "x", params, state, TX, step=step)
    gradtx.save_checkpoint(tmp_path / "x", params, state, TX, step=np.int64(3))
    with pytest.raises(TypeError, match="checkpoint leaves must be numeric arrays or numbers"):
        gradtx.save_checkpoint(tmp_path / "y", {"name": "dense"}, (), gradtx.sgd(0.1))
    assert sorted(os.listdir(tmp_path)) == ["x"]


def test_save_refuses_an_optimizer_that_has_no_config(tmp_path):
    tx = gradtx.adamw(1e-3, mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params))
    params = make_params()
    with pytest.raises(
        gradtx.ConfigError, match=r"mask: cannot write the Python callable .*gradtx\.path_mask"
    ):
        gradtx.save_checkpoint(tmp_path / "run.ckpt", params, tx.init(params), tx)
    assert os.listdir(tmp_path) == []


class _FailingFile(WrappedFile):
    """Wraps a real file; the second write (the payload) fails halfway."""

    def __init__(self, file, fail):
        super().__init__(file)
        self.fail, self.writes = fail, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 2:
            self.file.write(data[: len(data) // 2])
            self.file.flush()
            self.fail()
        return self.file.write(data)


def test_a_failure_mid_write_keeps_the_previous_checkpoint_and_no_temporary_file(
    tmp_path, monkeypatch
):
    path, params, state = saved(tmp_path, step=1)
    before = path.read_bytes()
    real_fdopen = os.fdopen

    def disk_full():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(
        os, "fdopen", lambda fd, mode: _FailingFile(real_fdopen(fd, mode), disk_full)
    )
    with pytest.raises(OSError, match="No space left on device"):
        gradtx.save_checkpoint(path, params, state, TX, step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.ckpt"]
    assert gradtx.restore_checkpoint(path, tx=TX, params_like=make_params()).step == 1


CRASH_SCRIPT = halfway_save("os._exit(17)", size=1000)


def test_a_process_killed_mid_save_leaves_the_previous_checkpoint_intact(tmp_path):
    tx = gradtx.sgd(0.1)
    path = tmp_path / "run.ckpt"
    params = {"w": jnp.ones(1000)}
    gradtx.save_checkpoint(path, params, tx.init(params), tx, step=1)
    before = path.read_bytes()
    result = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(path)], capture_output=True)
    assert result.returncode == 17, result.stderr.decode()
    assert path.read_bytes() == before
    leftovers = [name for name in os.listdir(tmp_path) if name != "run.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".run.ckpt.")  # the dead write
    restored = gradtx.restore_checkpoint(path, tx=tx, params_like=params)
    assert restored.step == 1
    np.testing.assert_array_equal(restored.params["w"], np.ones(1000))


# The training run of the resume test. The parent executes this source too, so
# both processes run the same program.
RESUME_SCRIPT = textwrap.dedent(
    """
    import sys

    import jax
    import jax.numpy as jnp
    import numpy as np

    import gradtx

    TX = gradtx.adamw(
        learning_rate=gradtx.exponential_decay(0.05, transition_steps=4, decay_rate=0.6),
        weight_decay=1e-2,
        mask=gradtx.path_mask(exclude=[r"bias$"]),
    )


    def initial_params():
        key = jax.random.PRNGKey(0)
        return {"w": jax.random.normal(key, (8, 4)) * 0.1, "bias": jnp.zeros(4)}


    def loss(params, step):
        key = jax.random.fold_in(jax.random.PRNGKey(1), step)
        x = jax.random.normal(key, (32, 8))
        y = jnp.sin(x[:, :4])
        return jnp.mean((jnp.tanh(x @ params["w"] + params["bias"][None, :]) - y) ** 2)


    @jax.jit
    def train_step(tx, params, state, step):
        grads = jax.grad(loss)(params, step)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state


    def run(params, state, start, stop):
        for step in range(start, stop):
            params, state = train_step(TX, params, state, step)
        return params, state


    def run_optimizer(opt, stop):
        gradient = jax.jit(jax.grad(loss))
        while opt.step_count < stop:
            opt.step(gradient(opt.params, opt.step_count))
        return opt.params, opt.state


    def leaves(tree):
        return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


    if __name__ == "__main__":
        plain_path, optimizer_path, out, total = sys.argv[1:]
        restored = gradtx.restore_checkpoint(plain_path, tx=TX, params_like=initial_params())
        plain = run(restored.params, restored.state, restored.step, int(total))
        opt = gradtx.Optimizer(TX, initial_params())
        opt.load_state_dict(
            gradtx.restore_checkpoint(optimizer_path, tx=TX, params_like=initial_params())
        )
        resumed = run_optimizer(opt, int(total))
        np.savez(out, *leaves(plain), *leaves(resumed))
    """
)


def test_resuming_in_a_new_process_continues_the_run_bit_for_bit(tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    run = {"__name__": "resume_script"}
    exec(compile(RESUME_SCRIPT, str(script), "exec"), run)
    total, split = 12, 5
    params = run["initial_params"]()
    straight = run["run"](params, run["TX"].init(params), 0, total)
    straight_optimizer = run["run_optimizer"](gradtx.Optimizer(run["TX"], params), total)

    first_half = run["run"](params, run["TX"].init(params), 0, split)
    gradtx.save_checkpoint(tmp_path / "plain.ckpt", *first_half, run["TX"], step=split)
    opt = gradtx.Optimizer(run["TX"], params)
    run["run_optimizer"](opt, split)
    gradtx.save_checkpoint(
        tmp_path / "optimizer.ckpt", opt.params, opt.state, opt.tx, step=opt.step_count
    )

    out = tmp_path / "resumed.npz"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "plain.ckpt"),
            str(tmp_path / "optimizer.ckpt"),
            str(out),
            str(total),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    with np.load(out) as resumed_file:
        resumed = [resumed_file[f"arr_{i}"] for i in range(len(resumed_file.files))]
    expected = run["leaves"](straight) + run["leaves"](straight_optimizer)
    assert len(resumed) == len(expected)
    for got, want in zip(resumed, expected):
        assert got.dtype == want.dtype
        assert np.array_equal(got, want)
    # The run moved: resuming from the initial state would not match.
    assert not np.array_equal(expected[0], np.asarray(jax.tree.leaves(params)[0]))
