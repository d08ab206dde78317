"""Tree maps that behave like Optax's in the corners: None leaves and Python scalars.

Flax and Optax mark a frozen or absent parameter with ``None``: a transformation
must hand such a leaf back as ``None`` rather than fail. A Python number used as
a leaf (``{"a": 1.0}``) has no ``dtype``; it is treated as the array it becomes.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.shard_alike import shard_alike


def is_none(value: Any) -> bool:
    """Whether ``value`` is ``None``, the marker of a frozen or absent leaf."""
    return value is None


# jaxlib ships PyTreeDef (a C++ class) without type stubs, so jax's own annotations
# of it do not resolve and a type checker finds no methods on what jax.tree.flatten
# returns. Declaring the result as jax.tree_util.PyTreeDef gives the real class where
# stubs exist and Any where they do not.
def flatten(
    tree: Any, is_leaf: Callable[[Any], bool] | None = None
) -> tuple[list[Any], jax.tree_util.PyTreeDef]:
    """``jax.tree.flatten``, its tree definition typed as ``jax.tree_util.PyTreeDef``."""
    return jax.tree.flatten(tree, is_leaf=is_leaf)


def structure(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> jax.tree_util.PyTreeDef:
    """``jax.tree.structure``, typed as ``jax.tree_util.PyTreeDef`` (see :func:`flatten`)."""
    return jax.tree.structure(tree, is_leaf=is_leaf)


def as_array(value: Any) -> Any:
    """A Python or NumPy number as a JAX array; arrays and None unchanged."""
    if value is None or isinstance(value, jax.Array):
        return value
    return jnp.asarray(value)


def leaf_map(function: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """``jax.tree.map`` over non-None leaves, each given as an array.

    A leaf that is None in ``tree`` stays None in the result; the leaves of
    ``rest`` at that place are not looked at (they may be None too).

    Args:
      function: called with one array per tree, at each leaf.
      tree: the tree whose structure the result has.
      *rest: trees with the structure of ``tree`` (None allowed where ``tree``
        has None).

    Returns:
      A tree with ``tree``'s structure.
    """

    def apply(leaf: Any, *others: Any) -> Any:
        if leaf is None:
            return None
        return function(as_array(leaf), *(as_array(other) for other in others))

    return jax.tree.map(apply, tree, *rest, is_leaf=is_none)


def leaf_map_n(count: int, function: Callable[..., tuple[Any, ...]], tree: Any, *rest: Any) -> Any:
    """Like :func:`leaf_map` for a ``function`` returning ``count`` arrays: ``count`` trees.

    A per-leaf tuple could not be told apart from tuple containers in the
    parameter tree itself, so the results are unzipped over the flattened tree.
    None leaves of ``tree`` are None in every result.

    Args:
      count: how many arrays ``function`` returns.
      function: called with one array per tree, at each non-None leaf.
      tree: the tree whose structure the results have.
      *rest: trees with the structure of ``tree``.

    Returns:
      A tuple of ``count`` trees.
    """
    flat, treedef = flatten(tree, is_leaf=is_none)
    others = [treedef.flatten_up_to(other) for other in rest]
    results = []
    for position, leaf in enumerate(flat):
        if leaf is None:
            results.append((None,) * count)
        else:
            results.append(
                function(as_array(leaf), *(as_array(other[position]) for other in others))
            )
    return tuple(treedef.unflatten([result[i] for result in results]) for i in range(count))


def leaves(tree: Any) -> list[Any]:
    """The non-None leaves of ``tree``, as arrays."""
    return [as_array(leaf) for leaf in jax.tree.leaves(tree)]


def placed_like(reference: Any, value: jax.Array) -> jax.Array:
    """``value`` (shaped like ``reference``), given ``reference``'s sharding.

    Eagerly ``jnp.full_like`` already places its result like a concrete array.
    Under ``jax.jit`` on a mesh with ``Auto`` axes a tracer carries no sharding,
    and an array that does not depend on the inputs (zeros) would come out on
    one device (Optax issue #548): a model that only fits sharded could not
    create its state. ``shard_alike`` asks the partitioner to give ``value``
    the sharding it gives ``reference``, so each device creates only its shard.
    On one device, or where the sharding is in the types (``Explicit`` axes),
    it changes nothing.

    Args:
      reference: the parameter (array or tracer).
      value: an array of the same shape, e.g. a fresh moment.

    Returns:
      ``value``, sharded like ``reference``.
    """
    if isinstance(reference, jax.core.Tracer):
        return shard_alike(reference, value)[1]
    return value


def filled_like(leaf: jax.Array, fill: Any, dtype: Any = None) -> jax.Array:
    """An array shaped and sharded like ``leaf``, filled with ``fill``, in ``dtype`` or its own.

    Every params-shaped state leaf gradtx creates from scratch is made here, so
    the optimizer state is born with the parameters' shardings (see
    :func:`placed_like`).
    """
    return placed_like(leaf, jnp.full_like(leaf, fill, dtype=dtype))


def zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Zeros shaped and sharded like each non-None leaf, in ``dtype`` or the leaf's own."""
    return leaf_map(lambda leaf: filled_like(leaf, 0, dtype), tree)
