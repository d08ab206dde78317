"""Key paths of pytrees as plain strings, for masks and for reading state by name."""

from typing import Any

import jax


def key_name(key: Any) -> str:
    """The plain name of one key-path entry: a dict key, attribute or index.

    Args:
      key: an entry of a JAX key path (``DictKey``, ``GetAttrKey``,
        ``SequenceKey``, ``FlattenedIndexKey``) or any other object.

    Returns:
      ``'bias'`` for ``DictKey('bias')`` or ``GetAttrKey('bias')``, ``'0'`` for
      ``SequenceKey(0)``; ``str(key)`` for anything else.
    """
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_string(path: tuple[Any, ...], separator: str) -> str:
    """A key path as its entries' plain names joined by ``separator``.

    Args:
      path: a JAX key path.
      separator: what to put between the names (``"/"`` or ``"."``).

    Returns:
      e.g. ``"dense/bias"`` for ``(DictKey('dense'), DictKey('bias'))``.
    """
    return separator.join(key_name(key) for key in path)


def children(node: Any) -> list[tuple[str, Any]]:
    """The direct children of a pytree node with their names; [] for a leaf.

    Args:
      node: any pytree node (a NamedTuple, dict, tuple, registered class, ...).

    Returns:
      ``(name, child)`` pairs in the node's flattening order.
    """
    keyed, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    return [(key_name(path[0]), child) for path, child in keyed if path]
