"""Orbax checkpoints: sharded and multi-host params, optimizer state and config.

gradtx has two checkpoint formats; both store the params, the optimizer state,
the step and the optimizer's config, and both refuse to restore into another
optimizer or another tree of arrays, naming the first difference.

- :func:`gradtx.save_checkpoint` / :func:`gradtx.restore_checkpoint` write one
  MessagePack file, atomically, with no extra dependency. Every array passes
  through the host of one process, so use it for a single host and a model
  that fits in its memory.
- :class:`OrbaxCheckpoints` (needs ``pip install 'gradtx[orbax]'``) writes a
  directory of numbered steps through ``orbax.checkpoint.CheckpointManager``.
  Each process writes only its own shards (TensorStore), the save can run in
  the background while training goes on, and restoring places every array
  directly onto the shardings of the run being resumed, which may be another
  mesh with another number of devices. Use it for sharded and multi-host
  training, large models, and when a save must not stall the training loop.

A step directory holds two Orbax items: ``arrays`` (``{"params": ...,
"state": ...}``, saved with their shardings) and ``gradtx``, a JSON record of
the format version, the step, ``to_config(tx)``, ``repr(tx)`` and the key path,
dtype, shape and 32-bit fingerprint (:mod:`gradtx.fingerprints`) of every
array. Restoring reads and checks the record before touching any array, and
compares the restored arrays' fingerprints with it (Orbax keeps no checksum of
the bytes, so a corrupted data file would otherwise restore wrong numbers).

Orbax makes the saves atomic and multi-host: every process calls ``save`` and
``restore``; the arrays go to a temporary directory that the primary process
renames into place once every process has written, so a save killed midway
leaves the previous steps restorable and is never listed (the next
:class:`OrbaxCheckpoints` on the directory deletes it, in the background,
before its first save). The JSON record is written by the primary process only.

Restoring passes Orbax an explicit handler and arguments for every item, so
nothing stored in a checkpoint chooses the code that reads it: no pickle is
loaded and no module is imported by a name read from a file.
"""

import os
import pathlib
import types
from typing import Any

import jax
import numpy as np

from gradtx.base import OptState, Params, Transformation
from gradtx.checkpoint import (
    Checkpoint,
    check_config,
    check_state_fits,
    check_step,
    fit_leaves,
    leaves_with_paths,
    numeric_dtype,
)
from gradtx.checkpoint_files import CheckpointError
from gradtx.checks import capped, capped_repr
from gradtx.config import to_config
from gradtx.fingerprints import fingerprints
from gradtx.sharding import state_shardings

PathLike = str | os.PathLike[str]

MISSING_ORBAX = "gradtx.OrbaxCheckpoints needs orbax-checkpoint: pip install 'gradtx[orbax]'"
_FORMAT = "gradtx.OrbaxCheckpoints"
_FORMAT_VERSION = 1
_ARRAYS = "arrays"  # the Orbax item of params and state
_RECORD = "gradtx"  # the Orbax item of the JSON record
_RECORD_FIELDS = {
    "format": str,
    "version": int,
    "step": int,
    "config": dict,
    "tx": str,
    "params": list,
    "state": list,
    "fingerprints": dict,
}


def _import_orbax() -> types.ModuleType:
    try:
        import orbax.checkpoint as ocp  # type: ignore[import-untyped]
    except ImportError:
        raise ImportError(MISSING_ORBAX) from None
    return ocp


class OrbaxCheckpoints:
    """Numbered checkpoints of params, optimizer state and config, through Orbax.

    A sibling of :func:`gradtx.save_checkpoint` for sharded and multi-host
    runs (see the module docstring for when to use which). Every process of a
    multi-host run creates one on the same directory and calls :meth:`save`
    and :meth:`restore` with its part of the same global arrays.

    Args:
      directory: where the steps go (one subdirectory each); created if
        missing. A relative path is taken from the current directory.
      tx: the optimizer; its config is stored with each step and a restore
        refuses a checkpoint of another config.
      async_save: if True, :meth:`save` returns once the arrays are copied off
        the devices and writes them in a background thread; call
        :meth:`wait_until_finished` (or :meth:`close`) before reading them.
      max_to_keep: keep only this many latest steps (deleting older ones after
        each save); None keeps all.

    Raises:
      ImportError: if orbax-checkpoint is not installed.
      ValueError: if ``max_to_keep`` is not None or a positive integer.

    Example:
      >>> import gradtx, jax.numpy as jnp, tempfile
      >>> from gradtx.orbax_checkpoint import OrbaxCheckpoints
      >>> tx = gradtx.adamw(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> with OrbaxCheckpoints(tempfile.mkdtemp(), tx) as checkpoints:
      ...     checkpoints.save(10, params, tx.init(params))
      ...     restored = checkpoints.restore(params)
      >>> restored.step, restored.params["w"].tolist()
      (10, [1.0, 1.0, 1.0])
    """

    def __init__(
        self,
        directory: PathLike,
        tx: Transformation,
        *,
        async_save: bool = False,
        max_to_keep: int | None = None,
    ) -> None:
        if max_to_keep is not None and (
            isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1
        ):
            raise ValueError(
                f"max_to_keep must be None or a positive integer, got {capped_repr(max_to_keep)}"
            )
        ocp = _import_orbax()
        self._ocp = ocp
        self._directory = pathlib.Path(directory).absolute()
        self._tx = tx
        # One handler per item and argument type, given up front: Orbax then
        # never picks a handler from the handler names a checkpoint stores.
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        arrays_handler = ocp.StandardCheckpointHandler()
        record_handler = ocp.JsonCheckpointHandler()
        registry.add(_ARRAYS, ocp.args.StandardSave, arrays_handler)
        registry.add(_ARRAYS, ocp.args.StandardRestore, arrays_handler)
        registry.add(_RECORD, ocp.args.JsonSave, record_handler)
        registry.add(_RECORD, ocp.args.JsonRestore, record_handler)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=bool(async_save),
            create=True,
            # Deletes the temporary directories of saves killed midway.
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(
            self._directory, options=options, handler_registry=registry
        )

    @property
    def directory(self) -> pathlib.Path:
        """The absolute directory the steps are in."""
        return self._directory

    def save(self, step: int, params: Params, state: OptState) -> None:
        """Saves params and optimizer state as step ``step``, with their shardings.

        Every process of a multi-host run calls it with the same step and its
        part of the same global arrays. With ``async_save=True`` it returns
        once the arrays are copied off the devices, so the next training step
        may donate or overwrite them; the files are written in the background
        and the step appears in :meth:`all_steps` once complete. A save first
        waits for the previous background save to finish, and computes every
        array's fingerprint (one pass on the devices, a number per array to
        the host) before it returns.

        Args:
          step: the training step, >= 0, not saved yet in this directory.
          params: the parameter pytree (arrays, sharded or not).
          state: the optimizer state for ``params``; its key paths, shapes and
            dtypes must be those of ``tx.init(params)``.

        Raises:
          ValueError: if ``step`` is negative, not an integer, 2**63 or more,
            or already saved in the directory.
          TypeError: if a leaf is not a numeric array or a number.
          CheckpointError: if ``state`` is not a state of ``tx`` for
            ``params`` (naming the first differing key path); nothing is
            written then.
          gradtx.config.ConfigError: if ``tx`` cannot be written to a config.
        """
        step = check_step(step)
        params_record = _leaf_record(params, "params")
        state_record = _leaf_record(state, "state")
        check_state_fits(
            _recorded_leaves(state_record, "state"),
            self._tx,
            params,
            f"cannot save step {step} in {self._directory}",
        )
        record = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "step": step,
            "config": to_config(self._tx),
            "tx": repr(self._tx),
            "params": params_record,
            "state": state_record,
            # Orbax keeps no checksum of the bytes: restore compares these.
            "fingerprints": {
                "params": _fingerprints_by_path(params),
                "state": _fingerprints_by_path(state),
            },
        }
        ocp = self._ocp
        args = ocp.args.Composite(
            **{
                _ARRAYS: ocp.args.StandardSave({"params": params, "state": state}),
                _RECORD: ocp.args.JsonSave(record),
            }
        )
        try:
            # force: save whatever step is asked, not only those past the latest.
            self._manager.save(step, args=args, force=True)
        except ocp.checkpoint_manager.StepAlreadyExistsError:
            raise ValueError(
                f"step {step} is already saved in {self._directory}; steps are never "
                "overwritten, save under a new step"
            ) from None

    def restore(self, params_like: Params, *, step: int | None = None) -> Checkpoint:
        """Restores a step onto the shardings of ``params_like``, after checking it fits.

        The JSON record is checked first (the optimizer config against
        ``tx``'s, the key paths, shapes and dtypes against ``params_like`` and
        ``tx.init(params_like)``); only then are the arrays read, each process
        reading just the shards its devices hold. The mesh may differ from the
        one saved from (another shape, another number of devices).

        Args:
          params_like: the parameters' structure, shapes, dtypes and
            placement: arrays, or ``jax.ShapeDtypeStruct`` with a
            ``sharding``. Params are restored onto those shardings (a leaf
            without one: onto the first local device) and the state onto
            :func:`gradtx.state_shardings` of them.
          step: the step to restore; None restores the latest.

        Returns:
          A :class:`gradtx.Checkpoint` with params, state, step and config.

        Raises:
          CheckpointError: if the directory holds no step (or not ``step``),
            the step was saved with another optimizer config (naming the
            first differing field) or holds another tree of arrays (naming
            the key path), or an item of the step is missing or damaged.
          ValueError: if ``step`` is not a non-negative integer.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"cannot restore: {self._directory} holds no checkpoint")
        else:
            step = check_step(step)
            if step not in self.all_steps():
                raise CheckpointError(
                    f"cannot restore step {step}: {self._directory} holds no such checkpoint "
                    f"(its steps: {capped_repr(self.all_steps())})"
                )
        where = f"step {step} in {self._directory}"
        record = self._read_record(step, where)
        params_target = _targets(params_like)
        state_shapes = jax.eval_shape(self._tx.init, params_target)
        try:
            check_config(record["config"], self._tx, source="the checkpoint", saved_tx=record["tx"])
            fit_leaves(
                _recorded_leaves(record["params"], "params"),
                params_target,
                name="params",
                source="the checkpoint",
                target="params_like",
            )
            fit_leaves(
                _recorded_leaves(record["state"], "state"),
                state_shapes,
                name="state",
                source="the checkpoint",
                target="tx.init(params_like)",
            )
        except ValueError as error:
            raise CheckpointError(f"cannot restore {where}: {error}") from None
        state_target = jax.tree.map(
            lambda shape, sharding: jax.ShapeDtypeStruct(
                shape.shape, shape.dtype, sharding=sharding
            ),
            state_shapes,
            state_shardings(self._tx, params_target),
        )
        ocp = self._ocp
        target = {"params": params_target, "state": state_target}
        self._check_stored_arrays(step, target, where)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{_ARRAYS: ocp.args.StandardRestore(target)})
            )[_ARRAYS]
        except Exception as error:  # Orbax and TensorStore raise many types
            raise _damaged(where, f"its {_ARRAYS!r} item cannot be read", error) from None
        _check_restored(restored, target, where)
        for name in ("params", "state"):
            _check_fingerprints(restored[name], record["fingerprints"], name, where)
        return Checkpoint(
            params=restored["params"], state=restored["state"], step=step, config=record["config"]
        )

    def _read_record(self, step: int, where: str) -> dict[str, Any]:
        """The JSON record of ``step``, its fields checked (not yet against the run)."""
        ocp = self._ocp
        try:
            record = self._manager.restore(
                step, args=ocp.args.Composite(**{_RECORD: ocp.args.JsonRestore()})
            )[_RECORD]
        except Exception as error:  # Orbax raises many types
            raise _damaged(
                where, f"its gradtx record (the {_RECORD!r} item) cannot be read", error
            ) from None
        if not isinstance(record, dict):
            raise CheckpointError(
                f"{where} is damaged: its gradtx record is {type(record).__name__}, not a map"
            )
        if record.get("format") != _FORMAT:
            raise CheckpointError(
                f"{where} is not a checkpoint of {_FORMAT}: its record's format is "
                f"{capped_repr(record.get('format'))}"
            )
        if record.get("version") != _FORMAT_VERSION:
            raise CheckpointError(
                f"{where} has format version {capped_repr(record.get('version'))}; this "
                f"gradtx reads version {_FORMAT_VERSION}"
            )
        for key, kind in _RECORD_FIELDS.items():
            if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
                raise CheckpointError(
                    f"{where} is damaged: its record's {key!r} field is "
                    f"{type(record.get(key)).__name__}, not {kind.__name__}"
                )
        extra = sorted(set(record) - set(_RECORD_FIELDS))
        if extra:
            raise CheckpointError(f"{where} is damaged: its record has unknown fields {extra}")
        if record["step"] != step:
            raise CheckpointError(
                f"{where} is damaged: its record names step {capped_repr(record['step'])}"
            )
        return record

    def _check_stored_arrays(self, step: int, target: Any, where: str) -> None:
        """Refuses a step whose stored arrays disagree with its (checked) record.

        Orbax casts a stored array to the target's dtype, so a record that
        lies about the arrays would otherwise go unnoticed.
        """
        ocp = self._ocp
        try:
            stored = self._manager.item_metadata(step)[_ARRAYS]
            stored_leaves = ocp.tree.to_flat_dict(getattr(stored, "tree", stored))
        except Exception as error:  # Orbax and TensorStore raise many types
            raise _damaged(
                where, f"the metadata of its {_ARRAYS!r} item cannot be read", error
            ) from None
        expected = ocp.tree.to_flat_dict(ocp.tree.serialize_tree(target, keep_empty_nodes=True))
        for key, like in expected.items():
            name = "".join(f"[{part!r}]" for part in key)
            leaf = stored_leaves.get(key)
            if leaf is None or not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
                raise CheckpointError(f"{where} is damaged: the array {name} is missing")
            if tuple(leaf.shape) != tuple(like.shape) or np.dtype(leaf.dtype) != np.dtype(
                like.dtype
            ):
                raise CheckpointError(
                    f"{where} is damaged: the array {name} is stored as "
                    f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}, but its gradtx record says "
                    f"{np.dtype(like.dtype).name}{list(like.shape)}"
                )

    def latest_step(self) -> int | None:
        """The latest complete step, or None if there is none."""
        latest = self._manager.latest_step()
        return None if latest is None else int(latest)

    def all_steps(self) -> list[int]:
        """The complete steps, in increasing order."""
        return sorted(int(step) for step in self._manager.all_steps())

    def wait_until_finished(self) -> None:
        """Blocks until a background save (``async_save=True``) has been written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for background saves, then releases Orbax's threads and resources."""
        self._manager.close()

    def __enter__(self) -> "OrbaxCheckpoints":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OrbaxCheckpoints({str(self._directory)!r}, {capped(repr(self._tx))})"


def _leaf_record(tree: Any, name: str) -> list[list[Any]]:
    """``[key path, dtype name, shape]`` for each leaf, without reading any array.

    Raises:
      TypeError: if a leaf is not a numeric array or a number.
    """
    record = []
    for path, leaf in leaves_with_paths(tree):
        shape = _shape_of(leaf, name, path)
        record.append([path, shape.dtype.name, list(shape.shape)])
    return record


def _shape_of(leaf: Any, name: str, path: str) -> jax.ShapeDtypeStruct:
    """The shape and dtype of an array leaf (a ``ShapeDtypeStruct`` too), read, not computed.

    Raises:
      TypeError: if the leaf is not a numeric array or a number.
    """
    try:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            leaf = jax.eval_shape(lambda: leaf)  # a Python number, as JAX would type it
        shape = jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype)
        numeric_dtype(shape.dtype.name, f"{name}{path}")
    except (TypeError, ValueError):
        raise TypeError(
            f"checkpoint leaves must be numeric arrays or numbers, got {name}{capped(path)} = "
            f"{capped_repr(leaf)}"
        ) from None
    return shape


def _fingerprints_by_path(tree: Any) -> dict[str, int]:
    paths = [path for path, _ in leaves_with_paths(tree)]
    return dict(zip(paths, fingerprints(tree)))


def _check_fingerprints(tree: Any, recorded: dict[str, Any], name: str, where: str) -> None:
    """Raises CheckpointError naming the first array whose bytes changed since the save."""
    stored = recorded.get(name)
    if not isinstance(stored, dict):
        raise CheckpointError(f"{where} is damaged: its record has no {name} fingerprints")
    for path, value in _fingerprints_by_path(tree).items():
        if stored.get(path) != value:
            raise CheckpointError(
                f"{where} is damaged: the array {name}{capped(path)} does not match the "
                "fingerprint recorded when it was saved (its data files were changed or "
                "corrupted)"
            )


def _recorded_leaves(entries: list[Any], name: str) -> list[tuple[str, jax.ShapeDtypeStruct]]:
    """The ``(key path, shape and dtype)`` pairs of a record field, checked.

    Raises:
      ValueError: naming the first malformed entry.
    """
    leaves = []
    for entry in entries:
        if not (
            isinstance(entry, list)
            and [type(item) for item in entry] == [str, str, list]
            and all(type(size) is int and size >= 0 for size in entry[2])
        ):
            raise ValueError(
                f"malformed array entry {capped_repr(entry)} in {name}: not a "
                "[key path, dtype name, shape] list"
            )
        path, dtype_name, shape = entry
        dtype = numeric_dtype(dtype_name, f"{name}{capped(path)}")
        leaves.append((path, jax.ShapeDtypeStruct(tuple(shape), dtype)))
    return leaves


def _check_restored(restored: Any, target: Any, where: str) -> None:
    """Raises CheckpointError unless each restored leaf is an array placed as its target."""
    restored_leaves = jax.tree_util.tree_flatten_with_path(restored)[0]
    target_leaves = jax.tree_util.tree_flatten_with_path(target)[0]
    if [path for path, _ in restored_leaves] != [path for path, _ in target_leaves]:
        raise CheckpointError(f"{where} is damaged: Orbax restored another tree of arrays")
    for (path, array), (_, like) in zip(restored_leaves, target_leaves):
        if not (
            isinstance(array, jax.Array)
            and array.shape == like.shape
            and array.dtype == like.dtype
            and array.sharding.is_equivalent_to(like.sharding, array.ndim)
        ):
            raise CheckpointError(
                f"{where} is damaged: Orbax restored {jax.tree_util.keystr(path)} as "
                f"{capped_repr(array)}, not a {like.dtype.name}{list(like.shape)} array on "
                f"{capped_repr(like.sharding)}"
            )


def _targets(params_like: Params) -> Any:
    """``params_like`` as the shapes, dtypes and shardings to restore onto.

    A leaf without a sharding goes to the first device of this process.
    """
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def target(path: tuple[Any, ...], leaf: Any) -> jax.ShapeDtypeStruct:
        shape = _shape_of(leaf, "params_like", jax.tree_util.keystr(path))
        sharding = getattr(leaf, "sharding", None)
        return jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding or default)

    return jax.tree_util.tree_map_with_path(target, params_like)


def _damaged(where: str, what: str, error: Exception) -> CheckpointError:
    """The error for an item Orbax could not read, quoting the root cause briefly."""
    root: BaseException = error
    while root.__cause__ is not None:  # TensorStore's reason is at the bottom
        root = root.__cause__
    reason = str(root).strip().split("\n", 1)[0]
    return CheckpointError(
        f"{where} is damaged or incomplete: {what} ({type(root).__name__}: {capped(reason)})"
    )
