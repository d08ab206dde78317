"""Checkpoints: parameters, optimizer state and optimizer config in one safe file.

The file is a short binary header followed by a MessagePack payload::

    magic b"GRADTXCK" | format version (uint32) | payload length (uint64)
    | SHA-256 of the payload (32 bytes) | payload

The payload holds the step, the optimizer's config (:func:`gradtx.config.to_config`,
as JSON text), its ``repr`` and every array as ``(key path, dtype name, shape, raw
bytes)``. Nothing is pickled, so loading a file runs no code. Restoring checks the
checksum, the optimizer config and the tree of every array against what the caller
expects, and raises :class:`CheckpointError` on the first difference instead of
mixing a checkpoint into the wrong run.
"""

import hashlib
import json
import math
import os
import pathlib
import struct
import tempfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from gradtx.base import OptState, Params, Transformation
from gradtx.config import to_config

PathLike = str | os.PathLike[str]

_MAGIC = b"GRADTXCK"
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ32s")  # magic, format version, payload length, SHA-256


class CheckpointError(ValueError):
    """A checkpoint (or state dict) cannot be restored into the given run.

    Raised for a file that is not a gradtx checkpoint, is truncated or corrupted,
    was saved with a different optimizer config, or holds a different tree of
    arrays than the run expects. The message names the file (or the state
    dict) and the first difference.
    """


class Checkpoint(NamedTuple):
    """What :func:`restore_checkpoint` returns.

    It has the same fields as :meth:`gradtx.Optimizer.state_dict`, so
    ``opt.load_state_dict(checkpoint)`` resumes an optimizer object.

    Attributes:
      params: the parameters, in the structure of ``params_like``.
      state: the optimizer state, in the structure of ``tx.init(params_like)``.
      step: the step number given to :func:`save_checkpoint`.
      config: the optimizer config stored with the state.
    """

    params: Params
    state: OptState
    step: int
    config: dict[str, Any]


def save_checkpoint(
    path: PathLike, params: Params, state: OptState, tx: Transformation, *, step: int = 0
) -> pathlib.Path:
    """Writes params, optimizer state and the optimizer's config to ``path``.

    The write is atomic: the data goes to a temporary file in the same
    directory, is flushed and fsynced, then renamed over ``path``. If saving
    fails or the process dies midway, the previous file at ``path`` is intact.

    Args:
      path: the file to write; its directory must exist.
      params: the parameter pytree.
      state: the optimizer state for ``params`` (from ``tx.init`` / ``tx.update``).
      tx: the optimizer; its config is stored so restoring can check it.
      step: the training step to record, >= 0.

    Returns:
      The path written, as a ``pathlib.Path``.

    Raises:
      ValueError: if ``step`` is negative or not an integer.
      TypeError: if a leaf is not a numeric array or a number.
      gradtx.config.ConfigError: if ``tx`` cannot be written to a config (a
        lambda mask or schedule; the message says what to use instead).

    Example:
      >>> import gradtx, jax.numpy as jnp, tempfile, os
      >>> tx = gradtx.adam(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
      >>> _ = gradtx.save_checkpoint(path, params, tx.init(params), tx, step=10)
      >>> gradtx.restore_checkpoint(path, tx=tx, params_like=params).step
      10
    """
    step = check_step(step)
    payload = msgpack.packb(
        {
            "step": step,
            "config": json.dumps(to_config(tx), sort_keys=True),
            "tx": repr(tx),
            "params": _encode_tree(params),
            "state": _encode_tree(state),
        },
        use_bin_type=True,
    )
    header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    path = pathlib.Path(path)
    _write_atomically(path, header, payload)
    return path


def restore_checkpoint(path: PathLike, *, tx: Transformation, params_like: Params) -> Checkpoint:
    """Reads a checkpoint written by :func:`save_checkpoint` and checks it fits.

    Args:
      path: the checkpoint file.
      tx: the optimizer of the run being resumed; its config must equal the
        stored one.
      params_like: a pytree with the structure, shapes and dtypes of the
        parameters (arrays or ``jax.ShapeDtypeStruct``); restored arrays get
        its leaves' shardings where they are committed to one.

    Returns:
      A :class:`Checkpoint` with params, state, step and config.

    Raises:
      CheckpointError: if the file is not a gradtx checkpoint, is truncated or
        corrupted, was saved with another optimizer config (naming the first
        differing field), or its arrays do not fit ``params_like`` (naming the
        key path).
      FileNotFoundError: if ``path`` does not exist.

    Example:
      See :func:`save_checkpoint`.
    """
    path = pathlib.Path(path)
    payload = _read_payload(path)
    try:
        config = json.loads(payload["config"])
        check_config(config, tx, source="the checkpoint", saved_tx=payload["tx"])
        params = fit_leaves(
            _decode_leaves(payload["params"]),
            params_like,
            name="params",
            source="the checkpoint",
            target="params_like",
        )
        state_like = jax.eval_shape(tx.init, params_like)
        state = fit_leaves(
            _decode_leaves(payload["state"]),
            state_like,
            name="state",
            source="the checkpoint",
            target="tx.init(params_like)",
        )
        step = check_step(payload["step"])
    except ValueError as error:
        raise CheckpointError(f"cannot restore {path}: {error}") from None
    return Checkpoint(
        params=_place(params, params_like),
        state=_place(state, state_like),
        step=step,
        config=config,
    )


def check_config(stored: Any, tx: Transformation, *, source: str, saved_tx: str | None) -> None:
    """Raises ValueError naming the first field where ``tx``'s config differs.

    Args:
      stored: the stored config, as parsed from JSON.
      tx: the optimizer it must describe.
      source: where ``stored`` comes from, for the message (``"the checkpoint"``).
      saved_tx: the ``repr`` of the optimizer that was saved, if known.

    Raises:
      ValueError: if ``to_config(tx)`` differs from ``stored``.
    """
    given = json.loads(json.dumps(to_config(tx), sort_keys=True))
    difference = _first_difference(stored, given, "config")
    if difference is not None:
        where, saved_value, given_value = difference
        saved = f"saved: {saved_tx}; " if saved_tx is not None else ""
        raise ValueError(
            f"it was saved with a different optimizer: {where} is {saved_value!r} in {source} "
            f"but {given_value!r} for the given tx ({saved}given: {tx!r}). Restore with the "
            "optimizer it was saved with; change hyperparameters afterwards."
        )


def _first_difference(saved: Any, given: Any, where: str) -> tuple[str, Any, Any] | None:
    if isinstance(saved, dict) and isinstance(given, dict):
        # The class name first: a different class differs in its fields too.
        for key in sorted(set(saved) | set(given), key=lambda key: (key != "name", str(key))):
            missing = "<missing>"
            difference = _first_difference(
                saved.get(key, missing), given.get(key, missing), f"{where}[{key!r}]"
            )
            if difference is not None:
                return difference
        return None
    if isinstance(saved, list) and isinstance(given, list) and len(saved) == len(given):
        for position, (saved_item, given_item) in enumerate(zip(saved, given)):
            difference = _first_difference(saved_item, given_item, f"{where}[{position}]")
            if difference is not None:
                return difference
        return None
    if type(saved) is not type(given) or saved != given:
        return where, saved, given
    return None


def fit_leaves(
    leaves: list[tuple[str, Any]], like: Any, *, name: str, source: str, target: str
) -> Any:
    """Arranges ``(key path, array)`` pairs in the structure of ``like``, checking them.

    The pairs are matched to ``like``'s leaves by key path, so their order does
    not matter.

    Args:
      leaves: the arrays (or anything with ``shape`` and ``dtype``) with their
        key paths (``jax.tree_util.keystr``), in flattening order.
      like: the tree they must fit (arrays or ``jax.ShapeDtypeStruct``).
      name: how messages call the tree (``"params"``).
      source: where ``leaves`` come from (``"the checkpoint"``).
      target: what ``like`` is (``"params_like"``).

    Returns:
      The arrays, unflattened with ``like``'s tree structure.

    Raises:
      ValueError: naming the first key path that is missing, extra, or has
        another shape or dtype.
    """
    like_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    like_paths = [jax.tree_util.keystr(path) for path, _ in like_leaves]
    by_path = dict(leaves)
    for path in like_paths:
        if path not in by_path:
            raise ValueError(f"{name}{path} is in {target} but missing from {source}")
    expected = set(like_paths)
    for path in by_path:
        if path not in expected:
            raise ValueError(f"{name}{path} is in {source} but not in {target}")
    arrays = [by_path[path] for path in like_paths]
    for path, array, (_, like_leaf) in zip(like_paths, arrays, like_leaves):
        like_shape = tuple(like_leaf.shape) if hasattr(like_leaf, "shape") else np.shape(like_leaf)
        like_dtype = np.dtype(
            like_leaf.dtype if hasattr(like_leaf, "dtype") else np.asarray(like_leaf).dtype
        )
        if array.shape != like_shape:
            raise ValueError(
                f"{name}{path} has shape {array.shape} in {source} but {like_shape} in {target}"
            )
        if array.dtype != like_dtype:
            raise ValueError(
                f"{name}{path} has dtype {array.dtype.name} in {source} but "
                f"{like_dtype.name} in {target}"
            )
    return jax.tree.unflatten(treedef, arrays)


def leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    """The leaves of ``tree`` as ``(key path, leaf)`` pairs, in flattening order."""
    return [
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def host_leaves(tree: Any) -> list[tuple[str, np.ndarray]]:
    """The leaves of ``tree`` as ``(key path, fresh NumPy copy)`` pairs.

    Raises:
      TypeError: if a leaf is not a numeric array or a number.
    """
    return [(path, host_copy(leaf)) for path, leaf in leaves_with_paths(tree)]


def host_copy(leaf: Any) -> np.ndarray:
    """A fresh NumPy copy of an array leaf (never a view of a device buffer).

    Raises:
      TypeError: if the leaf is not an array or a number.
    """
    array = np.array(jax.device_get(leaf), copy=True)
    if not _is_numeric(array.dtype):
        raise TypeError(f"checkpoint leaves must be numeric arrays or numbers, got {leaf!r:.80}")
    return array


def _is_numeric(dtype: np.dtype) -> bool:
    """Numbers and booleans, bfloat16 and the other ml_dtypes included."""
    return bool(jnp.issubdtype(dtype, jnp.number)) or dtype == np.bool_


def _encode_tree(tree: Any) -> list[list[Any]]:
    return [
        [path, array.dtype.name, list(array.shape), array.tobytes()]
        for path, array in host_leaves(tree)
    ]


def _decode_leaves(entries: Any) -> list[tuple[str, np.ndarray]]:
    leaves = []
    for entry in entries:
        if not (
            isinstance(entry, list)
            and len(entry) == 4
            and [type(item) for item in entry] == [str, str, list, bytes]
            and all(isinstance(size, int) and size >= 0 for size in entry[2])
        ):
            raise ValueError(f"malformed array entry {entry!r:.80}")
        path, dtype_name, shape, raw = entry
        try:
            dtype = jnp.dtype(dtype_name)
        except TypeError:
            raise ValueError(f"{path} has unknown dtype {dtype_name!r}") from None
        if not _is_numeric(dtype):
            raise ValueError(f"{path} has unsupported dtype {dtype_name!r}")
        shape = tuple(shape)
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise ValueError(
                f"{path} holds {len(raw)} bytes, not the {math.prod(shape) * dtype.itemsize} "
                f"of a {dtype_name}{list(shape)} array"
            )
        leaves.append((path, np.frombuffer(raw, dtype=dtype).reshape(shape)))
    return leaves


def _place(tree: Any, like: Any) -> Any:
    """Device arrays placed like ``like``'s leaves.

    An array committed to a sharding (or a ``ShapeDtypeStruct`` with one) gets
    that sharding; otherwise the array stays uncommitted on the default device,
    as freshly initialized parameters are, so a jitted step that ran before the
    restore is not compiled again.
    """

    def place(array: np.ndarray, like_leaf: Any) -> jax.Array:
        sharding = getattr(like_leaf, "sharding", None)
        if sharding is None or (isinstance(like_leaf, jax.Array) and not like_leaf.committed):
            return jnp.array(array)
        return jax.device_put(array, sharding)

    return jax.tree.map(place, tree, like)


def check_step(step: Any) -> int:
    """``step`` as an int; raises ValueError unless it is a non-negative integer."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return int(step)


def _read_payload(path: pathlib.Path) -> dict[str, Any]:
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        if data and not _MAGIC.startswith(data[: len(_MAGIC)]):
            raise CheckpointError(f"{path} is not a gradtx checkpoint (unknown header)")
        raise CheckpointError(
            f"{path} is truncated: {len(data)} bytes, shorter than the {_HEADER.size}-byte header"
        )
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise CheckpointError(f"{path} is not a gradtx checkpoint (unknown header)")
    if version != _FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this gradtx reads "
            f"version {_FORMAT_VERSION}"
        )
    payload = data[_HEADER.size :]
    if len(payload) < length:
        raise CheckpointError(
            f"{path} is truncated: the header announces {length} payload bytes, "
            f"the file holds {len(payload)}"
        )
    if len(payload) > length:
        raise CheckpointError(
            f"{path} is corrupted: {len(payload) - length} unexpected bytes after the payload"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(
            f"{path} is corrupted: the SHA-256 checksum of its payload does not match its header"
        )
    try:
        content = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise CheckpointError(
            f"{path} is corrupted: its payload cannot be decoded ({error})"
        ) from None
    expected = {"step": int, "config": str, "tx": str, "params": list, "state": list}
    if not isinstance(content, Mapping) or any(
        not isinstance(content.get(key), kind) for key, kind in expected.items()
    ):
        raise CheckpointError(f"{path} is corrupted: its payload lacks the checkpoint fields")
    return dict(content)


def _write_atomically(path: pathlib.Path, *chunks: bytes) -> None:
    directory = path.parent
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: pathlib.Path) -> None:
    """Makes the rename durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
