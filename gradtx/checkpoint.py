"""Checkpoints: parameters, optimizer state and optimizer config in one safe file.

The payload holds the step, the optimizer's config (:func:`gradtx.config.to_config`,
as JSON text), its ``repr`` and every array as ``(key path, dtype name, shape, raw
bytes)``. Restoring checks the optimizer config and the tree of every array
against what the caller expects, and raises :class:`CheckpointError` on the first
difference instead of mixing a checkpoint into the wrong run. The file around the
payload (header, checksum, bounded decoding, atomic writes and the cleanup of
temporary files killed saves left) is :mod:`gradtx.checkpoint_files`.
"""

import json
import math
import os
import pathlib
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from gradtx.base import OptState, Params, Transformation
from gradtx.checkpoint_files import (
    CheckpointError,
    check_structure,
    header,
    read_framed,
    write_atomically,
)
from gradtx.checks import capped, capped_repr
from gradtx.config import to_config

PathLike = str | os.PathLike[str]

_FIELDS = {"step": int, "config": str, "tx": str, "params": list, "state": list}
_MAX_STEP = 2**63 - 1  # int64, the widest count JAX holds; MessagePack stops at 2**64
_MAX_NDIM = 64  # NumPy's limit
# The canonical names (``dtype.name``) of numeric dtypes, ml_dtypes' included.
_DTYPE_NAME = re.compile(
    r"bool|u?int[0-9]{1,3}|b?float[0-9]{1,3}(_[a-z0-9]{1,16})?|b?complex[0-9]{1,3}"
)


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
    fails or the process dies midway, the previous file at ``path`` is intact;
    the next save to the directory deletes the temporary file a killed save
    left (see :mod:`gradtx.checkpoint_files` for which files it deletes).

    Args:
      path: the file to write; its directory must exist.
      params: the parameter pytree.
      state: the optimizer state for ``params`` (from ``tx.init`` / ``tx.update``);
        its key paths, shapes and dtypes must be those of ``tx.init(params)``.
      tx: the optimizer; its config is stored so restoring can check it.
      step: the training step to record, >= 0.

    Returns:
      The path written, as a ``pathlib.Path``.

    Raises:
      ValueError: if ``step`` is negative, not an integer or 2**63 or more.
      TypeError: if a leaf is not a numeric array or a number.
      CheckpointError: if ``state`` is not a state of ``tx`` for ``params``
        (naming the first differing key path); nothing is written then.
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
    path = pathlib.Path(path)
    config = json.dumps(to_config(tx), sort_keys=True)
    params_leaves, state_leaves = host_leaves(params), host_leaves(state)
    check_state_fits(state_leaves, tx, params, f"cannot save {path}")
    payload = msgpack.packb(
        {
            "step": step,
            "config": config,
            "tx": repr(tx),
            "params": _encode(params_leaves),
            "state": _encode(state_leaves),
        },
        use_bin_type=True,
    )
    write_atomically(path, header(payload), payload)
    return path


def check_state_fits(
    state_leaves: list[tuple[str, Any]], tx: Transformation, params: Params, where: str
) -> None:
    """Refuses to save a state that restoring with ``tx`` and ``params`` would refuse.

    The same check as restoring (key paths, shapes and dtypes against
    ``tx.init``), so a state that saves also restores; weak types do not count.
    Both checkpoint formats run it before writing anything.

    Args:
      state_leaves: the state's ``(key path, array or ShapeDtypeStruct)`` pairs.
      tx: the optimizer.
      params: the parameters (arrays or ``ShapeDtypeStruct``).
      where: what is being saved, for the message (``"cannot save run.ckpt"``).

    Raises:
      CheckpointError: naming the first key path that differs.
    """
    expected = f"{capped(repr(tx))}.init(params)"
    try:
        fit_leaves(
            state_leaves,
            jax.eval_shape(tx.init, params),
            name="state",
            source="the state",
            target=expected,
        )
    except ValueError as error:
        raise CheckpointError(
            f"{where}: the state does not belong to the given tx and params: "
            f"{error}. Pass the state that tx.init(params) and tx.update return"
        ) from None


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
        key path). Any file, crafted ones with a valid checksum included, gives
        this error or a checkpoint, never another exception.
      FileNotFoundError: if ``path`` does not exist.

    Example:
      See :func:`save_checkpoint`.
    """
    path = pathlib.Path(path)
    payload = _read_payload(path)
    try:
        config = _parse_config(payload["config"])
        check_config(config, tx, source="the checkpoint", saved_tx=payload["tx"])
        params = fit_leaves(
            _decode_leaves(payload["params"], "params"),
            params_like,
            name="params",
            source="the checkpoint",
            target="params_like",
        )
        state_like = jax.eval_shape(tx.init, params_like)
        state = fit_leaves(
            _decode_leaves(payload["state"], "state"),
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


def _parse_config(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("its config is not JSON: it nests too deeply") from None
    except ValueError as error:
        raise ValueError(f"its config is not JSON ({capped(str(error))})") from None


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
        saved = f"saved: {capped(saved_tx)}; " if saved_tx is not None else ""
        raise ValueError(
            f"it was saved with a different optimizer: {capped(where)} is "
            f"{capped_repr(saved_value)} in {source} but {capped_repr(given_value)} for the "
            f"given tx ({saved}given: "
            f"{capped(repr(tx))}). Restore with the optimizer it was saved with; change "
            "hyperparameters afterwards."
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
    if len(by_path) != len(leaves):
        seen: set[str] = set()
        for path, _ in leaves:
            if path in seen:
                raise ValueError(f"{name}{capped(path)} appears twice in {source}")
            seen.add(path)
    for path in like_paths:
        if path not in by_path:
            raise ValueError(f"{name}{path} is in {target} but missing from {source}")
    expected = set(like_paths)
    for path in by_path:
        if path not in expected:
            raise ValueError(f"{name}{capped(path)} is in {source} but not in {target}")
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


def _encode(leaves: list[tuple[str, np.ndarray]]) -> list[list[Any]]:
    return [[path, array.dtype.name, list(array.shape), array.tobytes()] for path, array in leaves]


def _decode_leaves(entries: list[Any], name: str) -> list[tuple[str, np.ndarray]]:
    """The ``(key path, array)`` pairs of the payload's ``name`` field, checked.

    Raises:
      ValueError: naming the first malformed entry and what is wrong with it.
    """
    leaves = []
    for entry in entries:
        if not (
            isinstance(entry, list) and [type(item) for item in entry] == [str, str, list, bytes]
        ):
            raise ValueError(
                f"malformed array entry {capped_repr(entry)} in {name}: not a "
                "[key path, dtype name, shape, bytes] list"
            )
        path, dtype_name, shape, raw = entry
        where = f"{name}{capped(path)}"
        dtype = numeric_dtype(dtype_name, where)
        if len(shape) > _MAX_NDIM or not all(type(size) is int and size >= 0 for size in shape):
            raise ValueError(
                f"malformed array entry {where}: its shape {capped_repr(shape)} is not a list "
                f"of at most {_MAX_NDIM} non-negative integers"
            )
        size = math.prod(shape) * dtype.itemsize
        if len(raw) != size:
            raise ValueError(
                f"{where} holds {len(raw)} bytes, not the {size} of a {dtype_name}"
                f"{capped_repr(shape)} array"
            )
        try:
            array = np.frombuffer(raw, dtype=dtype).reshape(shape)
        except ValueError as error:  # a zero size next to sizes NumPy cannot index
            raise ValueError(f"{where} has shape {capped_repr(shape)}: {error}") from None
        leaves.append((path, array))
    return leaves


def numeric_dtype(dtype_name: str, where: str) -> np.dtype:
    """The numeric dtype a stored name (``dtype.name``) stands for; ValueError naming
    ``where`` for any other string (both checkpoint formats read dtypes through it)."""
    # Only canonical numeric names reach NumPy: it parses other strings as
    # record layouts, and warns about some aliases.
    try:
        dtype = jnp.dtype(dtype_name) if _DTYPE_NAME.fullmatch(dtype_name) else None
    except TypeError:
        dtype = None
    if dtype is not None and dtype.name == dtype_name and _is_numeric(dtype):
        return dtype
    if dtype is not None or dtype_name in np.sctypeDict:
        raise ValueError(
            f"{where} has unsupported dtype {capped_repr(dtype_name)}: checkpoints hold numeric "
            "arrays only"
        )
    raise ValueError(
        f"{where} has unknown dtype {capped_repr(dtype_name)} (checkpoints name dtypes as NumPy's "
        "dtype.name does: 'float32', 'bfloat16', ...)"
    )


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
    """``step`` as an int; raises ValueError unless it is an integer in [0, 2**63)."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {capped_repr(step)}")
    if step > _MAX_STEP:
        raise ValueError(f"step must be below 2**63 (a 64-bit integer), got {capped_repr(step)}")
    return int(step)


def _read_payload(path: pathlib.Path) -> dict[str, Any]:
    with path.open("rb") as file:
        payload = read_framed(file, path)
    try:
        check_structure(payload)
        content = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise CheckpointError(
            f"{path} is corrupted: its payload cannot be decoded ({capped(str(error))})"
        ) from None
    if not isinstance(content, dict):
        raise CheckpointError(
            f"{path} is corrupted: its payload is {type(content).__name__}, not a map of the "
            "checkpoint fields"
        )
    missing = [key for key in _FIELDS if key not in content]
    if missing:
        raise CheckpointError(
            f"{path} is corrupted: its payload lacks the checkpoint fields {capped_repr(missing)}"
        )
    extra = [key for key in content if key not in _FIELDS]
    if extra:
        raise CheckpointError(
            f"{path} is corrupted: its payload has unknown fields {capped_repr(extra)}"
        )
    for key, kind in _FIELDS.items():
        if not isinstance(content[key], kind):
            raise CheckpointError(
                f"{path} is corrupted: its {key!r} field is {type(content[key]).__name__}, "
                f"not {kind.__name__}"
            )
    return content
