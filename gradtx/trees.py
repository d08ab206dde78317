"""Tree maps that behave like Optax's in the corners: None leaves and Python scalars.

Flax and Optax mark a frozen or absent parameter with ``None``: a transformation
must hand such a leaf back as ``None`` rather than fail. A Python number used as
a leaf (``{"a": 1.0}``) has no ``dtype``; it is treated as the array it becomes.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def is_none(value: Any) -> bool:
    """Whether ``value`` is ``None``, the marker of a frozen or absent leaf."""
    return value is None


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


def leaves(tree: Any) -> list[Any]:
    """The non-None leaves of ``tree``, as arrays."""
    return [as_array(leaf) for leaf in jax.tree.leaves(tree)]


def zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Zeros shaped like each non-None leaf, in ``dtype`` or the leaf's own."""
    return leaf_map(lambda leaf: jnp.zeros_like(leaf, dtype=dtype), tree)
