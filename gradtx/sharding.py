"""Where the optimizer state lives on a mesh: the sharding of every state leaf.

A gradtx state is born sharded: ``jax.jit(tx.init)(params)`` on sharded params
gives every params-shaped leaf its parameter's sharding (each device creates
only its shard, see :func:`gradtx.trees.placed_like`) and the scalars replicated.
:func:`state_shardings` gives that placement up front, without creating the
state, as a tree to pass as ``out_shardings`` or as an Orbax restore target,
and optionally shards the state more finely than the params (ZeRO).
"""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, Sharding

from gradtx import checks
from gradtx.base import Params, Transformation

AxisNames = str | Sequence[str]


def state_shardings(
    tx: Transformation, params: Params, *, shard_over: AxisNames | None = None
) -> Any:
    """The sharding of every leaf of ``tx.init(params)``, without creating the state.

    It is the placement ``jax.jit(tx.init)(params)`` gives (a params-shaped leaf
    sharded like its parameter, everything else replicated on the parameters'
    mesh), worked out by compiling ``tx.init`` on abstract arrays: nothing is
    allocated, so it also serves a model that does not fit on one device.

    With ``shard_over`` (ZeRO stage 1, Rajbhandari et al.), every state array of
    one or more dimensions is also split over those mesh axes: along its first
    dimension that is not sharded yet and whose size the axes divide. Moments
    of parameters replicated for data parallelism then take ``1 / n`` of the
    memory on each of the ``n`` devices. The update is the same numbers; the
    price is the all-gather that brings the updated parameters back to their
    own sharding. A leaf with no such dimension (a scalar count, a vector of
    odd length) keeps its sharding.

    Pin the placement in the training step, since the compiler is otherwise
    free to choose another one for the new state::

        shardings = gradtx.state_shardings(tx, params, shard_over="data")
        state = jax.jit(tx.init, out_shardings=shardings)(params)
        step = jax.jit(train_step, out_shardings=(param_shardings, shardings))

    Args:
      tx: the optimizer.
      params: the parameter tree: arrays (their ``sharding`` is read) or
        ``jax.ShapeDtypeStruct`` with a ``sharding`` (what ``jax.eval_shape``
        and Flax's partitioning metadata give). None leaves are frozen
        parameters. Leaves without a sharding are taken as replicated.
      shard_over: a mesh axis name, or several, to shard the state over too.

    Returns:
      A tree with the structure of ``tx.init(params)`` holding a
      ``jax.sharding.Sharding`` at each array leaf (None where the state has
      None).

    Raises:
      ValueError: if ``shard_over`` is given but no parameter is on a
        ``jax.sharding.Mesh`` (a ``NamedSharding``), names an axis the mesh does
        not have, or the params' shardings are on different meshes.
      TypeError: if ``shard_over`` is not a string or a sequence of strings.

    Example:
      >>> import gradtx, jax, jax.numpy as jnp, numpy as np
      >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec
      >>> mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
      >>> sharding = NamedSharding(mesh, PartitionSpec("data"))
      >>> params = {"w": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=sharding)}
      >>> shardings = gradtx.state_shardings(gradtx.adam(1e-3), params, shard_over="data")
      >>> state = shardings[0]
      >>> state.mu["w"].spec == PartitionSpec("data"), state.count.spec == PartitionSpec()
      (True, True)
    """
    axes = _axis_names(shard_over)
    abstract = jax.tree.map(_abstract, params)
    mesh = _mesh_of(abstract)
    if axes and mesh is None:
        raise ValueError(
            f"shard_over={checks.capped_repr(shard_over)} needs params on a "
            "jax.sharding.Mesh (a NamedSharding), but no parameter has one"
        )
    placed = jax.jit(tx.init).trace(abstract).lower().compile().output_shardings
    shapes = jax.eval_shape(tx.init, abstract)

    def finish(shape: jax.ShapeDtypeStruct, sharding: Sharding) -> Sharding:
        if mesh is not None and not isinstance(sharding, NamedSharding):
            # A leaf that does not depend on the params (a count, a scalar-only
            # state) is a constant jit leaves on one device: replicate it.
            sharding = NamedSharding(mesh, PartitionSpec())
        if axes and isinstance(sharding, NamedSharding):
            sharding = _sharded_over(sharding, shape.shape, axes)
        return sharding

    return jax.tree.map(finish, shapes, placed)


def _axis_names(shard_over: AxisNames | None) -> tuple[str, ...]:
    if shard_over is None:
        return ()
    if isinstance(shard_over, str):
        return (shard_over,)
    if isinstance(shard_over, Sequence) and all(isinstance(axis, str) for axis in shard_over):
        return tuple(shard_over)
    raise TypeError(
        "shard_over must be a mesh axis name or a sequence of them, got "
        f"{checks.capped_repr(shard_over)}"
    )


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    """A parameter as a ``ShapeDtypeStruct`` that keeps its sharding."""
    sharding = getattr(leaf, "sharding", None)
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    array = leaf if hasattr(leaf, "shape") and hasattr(leaf, "dtype") else np.asarray(leaf)
    return jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=sharding)


def _mesh_of(abstract: Any) -> Any:
    """The one mesh the parameters' ``NamedSharding`` s are on, or None."""
    meshes: list[tuple[Any, Any]] = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        sharding = leaf.sharding
        if isinstance(sharding, NamedSharding) and all(sharding.mesh != mesh for _, mesh in meshes):
            meshes.append((path, sharding.mesh))
    if len(meshes) > 1:
        (first_path, first), (other_path, other) = meshes[:2]
        raise ValueError(
            f"the params are on different meshes: params{checks.key_path(first_path)} on "
            f"{first} but params{checks.key_path(other_path)} on {other}; state_shardings "
            "needs one mesh"
        )
    return meshes[0][1] if meshes else None


def _sharded_over(
    sharding: NamedSharding, shape: tuple[int, ...], axes: tuple[str, ...]
) -> NamedSharding:
    """``sharding`` with ``axes`` added on the first free dimension they divide."""
    mesh = sharding.mesh
    missing = [axis for axis in axes if axis not in mesh.shape]
    if missing:
        raise ValueError(
            f"shard_over names the axis {missing[0]!r}, which the params' mesh does not "
            f"have (its axes: {', '.join(repr(axis) for axis in mesh.axis_names)})"
        )
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    used = {axis for entry in spec for axis in _entry_axes(entry)}
    free_axes = tuple(axis for axis in axes if axis not in used)
    if not free_axes:
        return sharding
    size = int(np.prod([mesh.shape[axis] for axis in free_axes]))
    for dim, entry in enumerate(spec):
        if entry is None and shape[dim] % size == 0 and shape[dim] >= size:
            spec[dim] = free_axes[0] if len(free_axes) == 1 else free_axes
            return NamedSharding(mesh, PartitionSpec(*spec), memory_kind=sharding.memory_kind)
    return sharding


def _entry_axes(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    if isinstance(entry, str):
        return (entry,)
    return tuple(entry)
