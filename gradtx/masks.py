"""Masks that select which parameters a transformation touches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from gradtx import checks

MaskOrFn = Any | Callable[[Any], Any] | None


class FrozenTree:
    """A hashable, immutable holder for a pytree of booleans used as a mask.

    A dict is not hashable, but a transformation must be (Flax keeps ``tx`` in a
    static field), so a mask tree is stored as its tree definition and leaves.
    Calling it with the parameters returns the mask tree.
    """

    __slots__ = ("_treedef", "_leaves")

    def __init__(self, tree: Any) -> None:
        leaves, treedef = jax.tree.flatten(tree)
        for leaf in leaves:
            if not isinstance(leaf, bool):
                raise TypeError(
                    f"mask leaves must be Python booleans, got {leaf!r}; use a "
                    "callable mask to compute one from the parameters"
                )
        self._treedef = treedef
        self._leaves = tuple(leaves)

    @property
    def tree(self) -> Any:
        """The mask as the pytree it was given as."""
        return jax.tree.unflatten(self._treedef, self._leaves)

    def __call__(self, params: Any) -> Any:
        del params
        return self.tree

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrozenTree):
            return NotImplemented
        return self._treedef == other._treedef and self._leaves == other._leaves

    def __hash__(self) -> int:
        return hash((self._treedef, self._leaves))

    def __repr__(self) -> str:
        return repr(self.tree)


def freeze_mask(mask: MaskOrFn) -> MaskOrFn:
    """Stores a mask tree hashably; callables and None are returned as they are."""
    if mask is None or callable(mask):
        return mask
    return FrozenTree(mask)


def apply_masked(
    function: Callable[[Any, Any], Any], mask: MaskOrFn, updates: Any, params: Any
) -> Any:
    """Applies ``function(update, param)`` to the leaves the mask selects.

    Leaves the mask leaves out pass through unchanged. The mask may be a prefix
    of the parameter tree (``{"encoder": False}`` leaves the whole encoder out).

    Args:
      function: the per-leaf operation.
      mask: None (every leaf), a pytree of booleans, or a callable from params
        to one.
      updates: the updates tree.
      params: the parameter tree, same structure as ``updates``.

    Returns:
      The updates with ``function`` applied where the mask is True.

    Raises:
      ValueError: if the mask is not a prefix of the parameter tree.
    """
    if mask is None:
        return jax.tree.map(function, updates, params)
    mask_tree = mask(params) if callable(mask) else mask
    mask_structure = jax.tree.structure(mask_tree)
    try:
        update_parts = mask_structure.flatten_up_to(updates)
        param_parts = mask_structure.flatten_up_to(params)
    except (ValueError, TypeError) as error:
        checks.check_trees_match(
            mask_tree, params, tree_name="mask", reference_name="parameters"
        )
        raise ValueError(f"the mask is not a prefix of the parameter tree: {error}") from None
    selected = jax.tree.leaves(mask_tree)
    results = [
        jax.tree.map(function, update, param) if keep else update
        for keep, update, param in zip(selected, update_parts, param_parts)
    ]
    return mask_structure.unflatten(results)
