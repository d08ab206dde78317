"""Checkpoints against killed saves, wrong states and crafted files.

test_checkpoint.py covers round trips, damaged files and crash safety; this file
covers what is left when the checksum is valid: a payload built by hand (framed
with checkpoint_files.py's own header) must restore or raise CheckpointError, nothing
else; a save must refuse a state that is not its tx's; and a save must clean up
the temporary files that killed saves left.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import tracemalloc

import jax
import jax.numpy as jnp
import msgpack
import pytest
from checkpoint_scripts import WrappedFile, halfway_save
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradtx
from gradtx import checkpoint_files

TX = gradtx.adam(1e-3)
PARAMS = {"b": jnp.zeros(2, jnp.bfloat16), "w": jnp.ones(3)}
# Every quoted piece of a message is capped at 200 characters; a message quotes a few.
MESSAGE_BOUND = 1200


def frame(payload: bytes) -> bytes:
    return checkpoint_files.header(payload) + payload


def temporary_name(target: str, pid: int, space: str | None = None) -> str:
    """A temporary file name in the form checkpoint_files' docstring documents."""
    return f".{target}.gradtx-{space or checkpoint_files._pid_space()}-{pid}-0123456789abcdef.tmp"


def make_old(path: pathlib.Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def content(tmp_path_factory):
    """The decoded payload of a valid checkpoint of TX and PARAMS."""
    path = tmp_path_factory.mktemp("valid") / "run.ckpt"
    gradtx.save_checkpoint(path, PARAMS, TX.init(PARAMS), TX, step=3)
    payload = path.read_bytes()[len(checkpoint_files.header(b"")) :]
    return msgpack.unpackb(payload)


# --- temporary files of killed saves -------------------------------------------------

BLOCKED_SAVE = halfway_save("time.sleep(120)", size=3)


def test_the_next_save_deletes_what_a_killed_save_left_and_nothing_else(tmp_path):
    tx, params = gradtx.sgd(0.1), {"w": jnp.ones(3)}
    writer = subprocess.Popen([sys.executable, "-c", BLOCKED_SAVE, str(tmp_path / "a.ckpt")])
    try:
        deadline = time.monotonic() + 120
        while not [name for name in os.listdir(tmp_path) if name.startswith(".a.ckpt.gradtx-")]:
            assert writer.poll() is None and time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.05)
        (leftover,) = os.listdir(tmp_path)
        assert re.fullmatch(
            rf"\.a\.ckpt\.gradtx-{checkpoint_files._pid_space()}-{writer.pid}-[0-9a-f]{{16}}\.tmp",
            leftover,
        )
        # Another pid space's (another host, or another container) cannot be
        # checked: kept while fresh, deleted once an hour old.
        elsewhere = temporary_name("a.ckpt", os.getpid(), space="00000000")
        stale = temporary_name("b.ckpt", os.getpid(), space="00000000")
        directory = temporary_name("c.ckpt", dead_pid())
        kept = {
            "notes.txt",
            ".a.ckpt.k3x9_q2a.tmp",  # earlier gradtx's temporary files carry no pid
            temporary_name("a.ckpt", dead_pid()) + ".bak",  # not the whole name
            elsewhere,
            temporary_name("a.ckpt", os.getpid()),  # this process's: it runs
            directory,  # not a file
        }
        for name in kept - {directory}:
            (tmp_path / name).write_bytes(b"x")
        (tmp_path / stale).write_bytes(b"x")
        (tmp_path / directory).mkdir()
        for name in ["notes.txt", ".a.ckpt.k3x9_q2a.tmp", stale, directory]:
            make_old(tmp_path / name, 2 * 3600)
        make_old(tmp_path / elsewhere, 3000)
        gradtx.save_checkpoint(tmp_path / "b.ckpt", params, tx.init(params), tx)
        # The writer is alive (stalled): its temporary file stays.
        assert leftover in os.listdir(tmp_path)
        assert stale not in os.listdir(tmp_path)
        writer.kill()  # SIGKILL: no handler runs, as with kill -9
        writer.wait()
        before = set(os.listdir(tmp_path))
        gradtx.save_checkpoint(tmp_path / "b.ckpt", params, tx.init(params), tx, step=1)
        assert set(os.listdir(tmp_path)) == before - {leftover}
        assert kept <= before
    finally:
        writer.kill()
        writer.wait()


def test_a_fresh_leftover_of_a_process_that_ended_here_is_deleted(tmp_path):
    dead = tmp_path / temporary_name("old.ckpt", dead_pid())
    dead.write_bytes(b"half a checkpoint")
    gradtx.save_checkpoint(tmp_path / "run.ckpt", PARAMS, TX.init(PARAMS), TX)
    assert os.listdir(tmp_path) == ["run.ckpt"]


class _StallingFile(WrappedFile):
    """Wraps a real file; in the stalled thread, the first write waits for an event."""

    def __init__(self, file, stalled, started, release):
        super().__init__(file)
        self.stalled, self.started, self.release = stalled, started, release

    def write(self, data):
        if threading.current_thread() is self.stalled[0] and not self.started.is_set():
            self.started.set()
            assert self.release.wait(60)
        return self.file.write(data)


def test_a_save_in_another_thread_keeps_its_temporary_file(tmp_path, monkeypatch):
    started, release, stalled = threading.Event(), threading.Event(), [None]
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        os,
        "fdopen",
        lambda fd, mode: _StallingFile(real_fdopen(fd, mode), stalled, started, release),
    )
    state = TX.init(PARAMS)
    errors = []

    def save_slowly():
        try:
            gradtx.save_checkpoint(tmp_path / "slow.ckpt", PARAMS, state, TX, step=1)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    thread = threading.Thread(target=save_slowly)
    stalled[0] = thread
    thread.start()
    try:
        assert started.wait(60)
        (in_flight,) = os.listdir(tmp_path)
        gradtx.save_checkpoint(tmp_path / "fast.ckpt", PARAMS, state, TX, step=2)
        assert sorted(os.listdir(tmp_path)) == sorted([in_flight, "fast.ckpt"])
    finally:
        release.set()
        thread.join(60)
    assert not errors
    assert sorted(os.listdir(tmp_path)) == ["fast.ckpt", "slow.ckpt"]
    assert gradtx.restore_checkpoint(tmp_path / "slow.ckpt", tx=TX, params_like=PARAMS).step == 1


# --- save refuses a state that is not its tx's ---------------------------------------


@pytest.mark.parametrize(
    "make_state, message",
    [
        (
            lambda: gradtx.sgd(0.1, momentum=0.9).init(PARAMS),
            r"state\[0\]\.count is in adam\(learning_rate=0\.001, .*\)\.init\(params\) but "
            r"missing from the state",
        ),
        (
            lambda: TX.init({"b": PARAMS["b"], "w": jnp.ones(2)}),
            r"state\[0\]\.mu\['w'\] has shape \(2,\) in the state but \(3,\) in adam\(",
        ),
        (
            lambda: TX.init({**PARAMS, "extra": jnp.ones(1)}),
            r"state\[0\]\.mu\['extra'\] is in the state but not in adam\(",
        ),
        (
            lambda: TX.init({"b": PARAMS["b"].astype(jnp.float32), "w": PARAMS["w"]}),
            r"state\[0\]\.mu\['b'\] has dtype float32 in the state but bfloat16 in adam\(",
        ),
    ],
    ids=["another-optimizer", "other-shapes", "other-params", "other-dtypes"],
)
def test_save_refuses_a_state_of_another_tx_or_params_and_writes_nothing(
    tmp_path, make_state, message
):
    path = tmp_path / "run.ckpt"
    gradtx.save_checkpoint(path, PARAMS, TX.init(PARAMS), TX, step=1)
    before = path.read_bytes()
    with pytest.raises(gradtx.CheckpointError, match=message) as error:
        gradtx.save_checkpoint(path, PARAMS, make_state(), TX, step=2)
    assert str(error.value).startswith(
        f"cannot save {path}: the state does not belong to the given tx and params: state["
    )
    assert str(error.value).endswith("Pass the state that tx.init(params) and tx.update return")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.ckpt"]


def test_save_accepts_a_state_that_differs_from_init_only_in_weak_types(tmp_path):
    state = TX.init(PARAMS)
    weak = (state[0]._replace(count=jnp.asarray(5)), *state[1:])  # a weakly typed int32
    assert jax.eval_shape(lambda: weak[0].count).weak_type
    assert not jax.eval_shape(TX.init, PARAMS)[0].count.weak_type
    path = gradtx.save_checkpoint(tmp_path / "run.ckpt", PARAMS, weak, TX)
    restored = gradtx.restore_checkpoint(path, tx=TX, params_like=PARAMS)
    assert int(restored.state[0].count) == 5


def test_save_refuses_a_step_msgpack_cannot_hold_with_a_value_error(tmp_path):
    with pytest.raises(ValueError, match=r"step must be below 2\*\*63 \(a 64-bit integer\), got "):
        gradtx.save_checkpoint(tmp_path / "run.ckpt", PARAMS, TX.init(PARAMS), TX, step=2**70)
    assert os.listdir(tmp_path) == []


def test_load_state_dict_refuses_a_leaf_that_is_not_an_array():
    opt = gradtx.Optimizer(TX, PARAMS)
    with pytest.raises(
        gradtx.CheckpointError,
        match="cannot load the state dict: checkpoint leaves must be numeric arrays or "
        "numbers, got 'x'",
    ):
        opt.load_state_dict({**opt.state_dict(), "params": {"b": "x", "w": PARAMS["w"]}})


# --- crafted payloads with a valid checksum: explicit cases --------------------------


def with_params(content, *entries):
    return msgpack.packb({**content, "params": list(entries)})


def with_w(content, **changes):
    """The payload with params['w']'s entry changed (path, dtype, shape or raw)."""
    entry = dict(zip(["path", "dtype", "shape", "raw"], content["params"][1]))
    entry.update(changes)
    return with_params(content, content["params"][0], list(entry.values()))


CRAFTED = {
    "top-level-list": (
        lambda c: msgpack.packb(list(c.values())),
        r"its payload is list, not a map of the checkpoint fields",
    ),
    "params-a-dict": (
        lambda c: msgpack.packb({**c, "params": {"w": 1}}),
        r"its 'params' field is dict, not list",
    ),
    "entry-a-dict": (
        lambda c: with_params(c, {"a": 1}),
        r"malformed array entry \{'a': 1\} in params: not a \[key path, dtype name, shape, "
        r"bytes\] list",
    ),
    "shape-a-string": (
        lambda c: with_w(c, shape="3"),
        r"malformed array entry \[\"\['w'\]\", 'float32', '3', .*\] in params",
    ),
    "shape-of-strings": (
        lambda c: with_w(c, shape=["3"]),
        r"malformed array entry params\['w'\]: its shape \['3'\] is not a list of at most 64 "
        "non-negative integers",
    ),
    "negative-size": (lambda c: with_w(c, shape=[-3]), r"params\['w'\]: its shape \[-3\] is not"),
    "bool-size": (lambda c: with_w(c, shape=[True]), r"params\['w'\]: its shape \[True\] is not"),
    "65-dimensions": (lambda c: with_w(c, shape=[1] * 65), r"at most 64 non-negative integers"),
    "huge-sizes": (
        lambda c: with_w(c, shape=[2**32, 2**32]),
        r"params\['w'\] holds 12 bytes, not the 73786976294838206464 of a "
        r"float32\[4294967296, 4294967296\] array",
    ),
    "zero-and-huge-size": (
        lambda c: with_w(c, shape=[0, 2**64 - 1], raw=b""),
        r"params\['w'\] has shape \[0, 18446744073709551615\]: ",
    ),
    "more-bytes": (
        lambda c: with_w(c, raw=bytes(16)),
        r"params\['w'\] holds 16 bytes, not the 12 of a float32\[3\] array",
    ),
    "no-such-dtype": (lambda c: with_w(c, dtype="float33"), r"has unknown dtype 'float33'"),
    "dtype-alias": (
        lambda c: with_w(c, dtype="f4"),
        r"params\['w'\] has unknown dtype 'f4' \(checkpoints name dtypes as NumPy's dtype\.name "
        r"does: 'float32', 'bfloat16', \.\.\.\)",
    ),
    "record-dtype": (lambda c: with_w(c, dtype="(3,)f4,i4"), r"has unknown dtype '\(3,\)f4,i4'"),
    "void-dtype": (
        lambda c: with_w(c, dtype="void"),
        r"params\['w'\] has unsupported dtype 'void': checkpoints hold numeric arrays only",
    ),
    "timedelta-dtype": (
        lambda c: with_w(c, dtype="timedelta64", shape=[1], raw=bytes(8)),
        r"has unsupported dtype 'timedelta64'",
    ),
    "same-path-twice": (
        lambda c: with_params(c, c["params"][1], *c["params"]),
        r"params\['w'\] appears twice in the checkpoint",
    ),
    "missing-field": (
        lambda c: msgpack.packb({key: c[key] for key in c if key != "state"}),
        r"its payload lacks the checkpoint fields \['state'\]",
    ),
    "extra-field": (
        lambda c: msgpack.packb({**c, "extra": 1}),
        r"its payload has unknown fields \['extra'\]",
    ),
    "nan-step": (
        lambda c: msgpack.packb({**c, "step": float("nan")}),
        r"its 'step' field is float, not int",
    ),
    "step-2**70-as-float": (
        lambda c: msgpack.packb({**c, "step": 2.0**70}),
        r"its 'step' field is float, not int",
    ),
    "bool-step": (
        lambda c: msgpack.packb({**c, "step": True}),
        r"step must be a non-negative integer, got True",
    ),
    "step-2**64-1": (
        lambda c: msgpack.packb({**c, "step": 2**64 - 1}),
        r"step must be below 2\*\*63 \(a 64-bit integer\), got 18446744073709551615",
    ),
    "config-not-a-string": (
        lambda c: msgpack.packb({**c, "config": {"name": "adam"}}),
        r"its 'config' field is dict, not str",
    ),
    "config-not-json": (
        lambda c: msgpack.packb({**c, "config": "{"}),
        r"its config is not JSON \(Expecting property name",
    ),
    "config-nested-100000-deep": (
        lambda c: msgpack.packb({**c, "config": "[" * 100_000 + "]" * 100_000}),
        r"its config is not JSON: it nests too deeply",
    ),
    "lists-2000-deep": (
        lambda c: b"\x91" * 2000 + b"\xc0",
        r"cannot be decoded \(it nests deeper than the format's 4 levels\)",
    ),
    "shape-one-level-too-deep": (
        lambda c: with_w(c, shape=[[3]]),
        r"it nests deeper than the format's 4 levels",
    ),
    "count-beyond-the-bytes": (
        lambda c: b"\xdd\xff\xff\xff\xff" + b"\xc0" * 10,
        r"a list or map declares 4294967295 values, more than its bytes",
    ),
    "extension-type": (
        lambda c: msgpack.packb({**c, "step": msgpack.ExtType(5, b"ab")}),
        r"it holds type byte 0xd5 \(an extension\), never written",
    ),
    "timestamp": (
        lambda c: msgpack.packb({**c, "step": msgpack.Timestamp(1)}),
        r"it holds type byte 0xd6 \(an extension\)",
    ),
    "int-map-key": (lambda c: b"\x81\x01\x02", r"int is not allowed for map key"),
    "invalid-utf8": (lambda c: b"\xa2\xff\xfe", r"its payload cannot be decoded \('utf-8'"),
    "value-then-more": (lambda c: msgpack.packb(c) + b"\xc0", r"\(1 bytes follow its value\)"),
    "a-megabyte-path": (
        lambda c: with_params(c, *c["params"], ["x" * 2**20, "float32", [3], bytes(12)]),
        r"paramsxxxxxxxxxx.*\.\.\.x+ is in the checkpoint but not in params_like",
    ),
    "a-megabyte-tx-repr": (
        lambda c: msgpack.packb({**c, "config": '{"name": "sgd"}', "tx": "x" * 2**20}),
        r"config\['name'\] is 'sgd' in the checkpoint but 'adam' .*saved: xxxxx+\.\.\.x+; given: ",
    ),
}


@pytest.mark.parametrize("build, message", list(CRAFTED.values()), ids=list(CRAFTED))
def test_a_crafted_payload_with_a_valid_checksum_gives_a_checkpoint_error(
    tmp_path, content, build, message
):
    path = tmp_path / "crafted.ckpt"
    path.write_bytes(frame(build(content)))
    with pytest.raises(gradtx.CheckpointError, match=message) as error:
        gradtx.restore_checkpoint(path, tx=TX, params_like=PARAMS)
    assert len(str(error.value)) < MESSAGE_BOUND
    assert "\n" not in str(error.value)


def test_a_header_announcing_more_than_the_file_holds_reads_nothing_more(tmp_path, content):
    payload = msgpack.packb(content)
    header = checkpoint_files._HEADER.pack(b"GRADTXCK", 1, 2**64 - 1, bytes(32))
    path = tmp_path / "run.ckpt"
    path.write_bytes(header + payload)
    with pytest.raises(
        gradtx.CheckpointError,
        match=rf"is truncated: the header announces 18446744073709551615 payload bytes, the file "
        rf"holds {len(payload)}",
    ):
        gradtx.restore_checkpoint(path, tx=TX, params_like=PARAMS)


def test_a_crafted_megabyte_allocates_about_a_megabyte(tmp_path):
    # 1000 nested lists, each declaring a million items: MessagePack alone
    # reserved 87 MiB for this 1 MiB payload before the walk bounded it.
    size = 2**20
    nested = (b"\xdd" + size.to_bytes(4, "big")) * 1000
    path = tmp_path / "run.ckpt"
    path.write_bytes(frame(nested + b"\xc0" * (size - len(nested))))
    tracemalloc.start()
    try:
        with pytest.raises(gradtx.CheckpointError, match="declares 1048576 values"):
            gradtx.restore_checkpoint(path, tx=TX, params_like=PARAMS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * size


# --- fuzzing: success or CheckpointError, nothing else -------------------------------

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NAMES = ["float32", "bfloat16", "int32", "bool", "object", "void", "f4", "['w']", "['b']"]
NAMES += ["[0].count", "[0].mu['w']", '{"name": "adam"}', "[[[]]]", "step", "params"]
# JSON text nested n deep: json.loads raises RecursionError past about 1000.
DEEP_JSON = st.integers(1, 5000).map(lambda depth: "[" * depth + "]" * depth)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, 3, -1, 2**31, 2**63 - 1, 2**63, 2**64 - 1]),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(NAMES),
    DEEP_JSON,
    st.binary(max_size=16),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=8,
)
# Entries and fields near valid ones, so the fuzz gets past the fields to the arrays.
ENTRY = st.tuples(
    st.sampled_from(["['w']", "['b']", "[0].count", "[0].mu['w']", "[0].nu['b']", "w", ""]),
    st.sampled_from(["float32", "bfloat16", "int32", "bool", "f4", "object", "void", ""]),
    st.lists(st.integers(-1, 4), max_size=3)
    | st.sampled_from([[2**64 - 1], [0, 2**63], [2**32, 2**32], [[3]], [True], ["3"], "3"]),
    st.binary(max_size=16),
).map(list)
ENTRIES = st.lists(
    st.one_of(ENTRY, ENTRY, ENTRY, SCALARS, st.lists(SCALARS, max_size=4)), max_size=7
)
CONFIG = json.dumps(gradtx.to_config(TX), sort_keys=True)
PAYLOADS = st.one_of(
    VALUES,
    st.fixed_dictionaries(
        {
            "step": st.sampled_from([0, 7, True, -1, 2**63, 2**64 - 1, 1.5, None]),
            "config": st.sampled_from([CONFIG] * 4 + ['{"name": "sgd"}', "{", "[1]", "null"])
            | DEEP_JSON,
            "tx": st.text(max_size=8),
            "params": ENTRIES,
            "state": ENTRIES,
        }
    ),
)


def restores_or_refuses(path: pathlib.Path, data: bytes, *, may_restore: bool = True) -> None:
    """Restoring ``data`` succeeds or raises CheckpointError, within 2 s, with a short message."""
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        gradtx.restore_checkpoint(path, tx=TX, params_like=PARAMS)
        assert may_restore, "a damaged file was restored"
    except gradtx.CheckpointError as error:
        assert len(str(error)) < MESSAGE_BOUND
    assert time.perf_counter() - start < 2


def sub_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from sub_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from sub_paths(item, (*prefix, position))


def replaced(value, where, new):
    if not where:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[where[0]] = replaced(value[where[0]], where[1:], new)
    return copy


@FUZZ
@given(payload=PAYLOADS)
def test_fuzz_arbitrary_payloads_restore_or_raise_checkpoint_error(tmp_path, payload):
    restores_or_refuses(tmp_path / "fuzz.ckpt", frame(msgpack.packb(payload)))


@FUZZ
@given(data=st.data(), new=VALUES)
def test_fuzz_a_valid_payload_with_one_value_replaced(tmp_path, content, data, new):
    where = data.draw(st.sampled_from(list(sub_paths(content))))
    restores_or_refuses(tmp_path / "fuzz.ckpt", frame(msgpack.packb(replaced(content, where, new))))


@FUZZ
@given(raw=st.binary(max_size=128), framed=st.booleans())
def test_fuzz_random_bytes_as_a_file_or_as_a_checksummed_payload(tmp_path, raw, framed):
    restores_or_refuses(tmp_path / "fuzz.ckpt", frame(raw) if framed else raw)


@FUZZ
@given(data=st.data())
def test_fuzz_a_valid_file_with_bytes_flipped_is_refused(tmp_path, content, data):
    file = bytearray(frame(msgpack.packb(content)))
    flips = data.draw(
        st.dictionaries(st.integers(0, len(file) - 1), st.integers(1, 255), min_size=1)
    )
    for position, mask in flips.items():
        file[position] ^= mask
    restores_or_refuses(tmp_path / "fuzz.ckpt", bytes(file), may_restore=False)
