"""Masking: apply a transformation to some parameters and pass the rest through."""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from gradtx import checks, masks, trees
from gradtx.base import (
    OptState,
    Params,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import as_member


class MaskedState(NamedTuple):
    """State of :class:`masked`.

    Attributes:
      inner_state: the inner transformation's state, built on the parameters
        with every masked-out leaf replaced by :class:`MaskedNode`, so it holds
        nothing for those leaves.
    """

    inner_state: Any


class MaskedNode(NamedTuple):
    """Stands in for a masked-out leaf: a pytree node with no children.

    ``jax.tree.map`` passes over it, so the inner transformation of
    :class:`masked` neither sees nor stores anything for that leaf. To map a
    function over a masked state together with the parameters, pass
    ``is_leaf=lambda x: isinstance(x, gradtx.MaskedNode)``.
    """


def static_mask(mask: Any, argument: str) -> Any:
    """A mask in the hashable form a transformation stores: a callable or a ``FrozenTree``.

    NumPy and concrete JAX boolean scalars (``jnp.array(True)``) become Python
    booleans, since a mask decides the tree structure and must be static.

    Args:
      mask: a pytree of booleans (or a single boolean), or a callable from a
        tree to one (a :class:`gradtx.path_mask` included).
      argument: how error messages name it.

    Returns:
      ``mask`` itself if callable, else a ``gradtx.masks.FrozenTree``.

    Raises:
      TypeError: naming ``argument`` if the mask is None, traced or has a leaf
        that is not a boolean.
    """
    if mask is None:
        raise TypeError(
            f"{argument} must be a pytree of booleans, a callable returning one, or a "
            "gradtx.path_mask; got None"
        )
    if callable(mask):
        return mask
    try:
        return masks.FrozenTree(jax.tree.map(lambda leaf: _as_bool(leaf, argument), mask))
    except TypeError as error:
        message = str(error)
        if not message.startswith(argument):
            message = f"{argument}: {message}"
        raise TypeError(message) from None


def _as_bool(leaf: Any, argument: str) -> Any:
    if isinstance(leaf, jax.core.Tracer):
        raise TypeError(
            f"{argument} must be static (Python booleans), got a traced value; build the "
            "transformation outside jax.jit"
        )
    if isinstance(leaf, (np.ndarray, np.generic, jax.Array)):
        array = np.asarray(leaf)
        if array.shape == () and array.dtype == np.bool_:
            return bool(array)
    return leaf


def mask_tree_for(mask: Any, tree: Any) -> Any:
    """The mask tree for ``tree``: ``mask(tree)`` for a callable mask, else the stored tree."""
    return mask(tree) if callable(mask) else mask


def _leaf_paths(tree: Any) -> list[tuple[Any, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=trees.is_none)[0]
    return [path for path, _ in leaves]


def check_prefix(prefix: Any, tree: Any, *, prefix_name: str, tree_name: str) -> None:
    """Raises ValueError naming the key path where ``prefix`` is not a prefix of ``tree``.

    Args:
      prefix: the mask or label tree.
      tree: the updates or parameters.
      prefix_name: how the message calls ``prefix`` (``"mask"``).
      tree_name: how the message calls ``tree`` (``"updates"``).

    Raises:
      ValueError: if ``prefix``'s structure is not a prefix of ``tree``'s.
    """
    try:
        trees.structure(prefix).flatten_up_to(tree)
        return
    except (ValueError, TypeError):
        pass
    prefix_paths = _leaf_paths(prefix)
    tree_paths = _leaf_paths(tree)
    for path in prefix_paths:
        if not any(candidate[: len(path)] == path for candidate in tree_paths):
            raise ValueError(
                f"{checks.key_path(path)} is in the {prefix_name} but not in the {tree_name}"
            )
    for path in tree_paths:
        if not any(path[: len(candidate)] == candidate for candidate in prefix_paths):
            raise ValueError(
                f"{checks.key_path(path)} is in the {tree_name} but not in the {prefix_name}"
            )
    raise ValueError(
        f"the {prefix_name} is not a prefix of the {tree_name}: they have the same key "
        f"paths but different container types: {jax.tree.structure(prefix)} vs "
        f"{jax.tree.structure(tree)}"
    )


def mask_out(tree: Any, mask_tree: Any) -> Any:
    """``tree`` with every part the mask sets False replaced by :class:`MaskedNode`."""
    return jax.tree.map(lambda keep, part: part if keep else MaskedNode(), mask_tree, tree)


def masked_init(inner: Transformation, mask_tree: Any, params: Params) -> MaskedState:
    """The :class:`MaskedState` of ``inner`` restricted to the leaves ``mask_tree`` selects.

    Args:
      inner: the transformation to restrict.
      mask_tree: a tree of booleans, a prefix of ``params``.
      params: the parameters.

    Returns:
      ``MaskedState(inner.init(params with masked-out leaves as MaskedNode))``.
    """
    if is_params_placeholder(params):
        return MaskedState(inner_state=inner.init(params))
    check_prefix(mask_tree, params, prefix_name="mask", tree_name="parameters")
    return MaskedState(inner_state=inner.init(mask_out(params, mask_tree)))


def is_params_placeholder(params: Any) -> bool:
    """Whether ``params`` is the stand-in ``optax.tree_utils.tree_map_params`` calls init with.

    Optax's own ``masked`` passes it down unmasked (it has no leaves to mask),
    so that ``tree_map_params`` can find the params-shaped parts of a state.
    """
    cls = type(params)
    return cls.__name__ == "_ParamsPlaceholder" and cls.__module__.startswith("optax")


def masked_update(
    inner: Transformation,
    mask_tree: Any,
    updates: Updates,
    state: OptState,
    params: Params | None,
    extra_args: Mapping[str, Any],
    *,
    mask_compatible_extra_args: bool,
) -> tuple[Updates, MaskedState]:
    """One update of ``inner`` on the leaves ``mask_tree`` selects; the others pass through.

    Args:
      inner: the transformation to restrict.
      mask_tree: a tree of booleans, a prefix of ``updates``.
      updates: the updates.
      state: a :class:`MaskedState` from :func:`masked_init`.
      params: the parameters, or None.
      extra_args: extra keyword arguments for ``inner.update``.
      mask_compatible_extra_args: also mask the extra arguments that have the
        structure of ``updates``.

    Returns:
      The new updates and the new :class:`MaskedState`.
    """
    check_prefix(mask_tree, updates, prefix_name="mask", tree_name="updates")
    if not hasattr(state, "inner_state"):
        raise ValueError(
            f"the state does not belong to masked: expected a MaskedState, got "
            f"{type(state).__name__}"
        )
    if mask_compatible_extra_args:
        structure = trees.structure(updates)
        extra_args = {
            name: mask_out(value, mask_tree) if trees.structure(value) == structure else value
            for name, value in extra_args.items()
        }
    inner_updates, inner_state = inner.update(
        mask_out(updates, mask_tree),
        state.inner_state,
        None if params is None else mask_out(params, mask_tree),
        **extra_args,
    )
    new_updates = jax.tree.map(
        lambda keep, new, old: new if keep else old, mask_tree, inner_updates, updates
    )
    return new_updates, MaskedState(inner_state=inner_state)


@value_class
class masked(Transformation):  # noqa: N801 - Optax's name
    """Applies ``inner`` to the leaves the mask selects; the others pass through unchanged.

    Update rule, per leaf ``i``::

        u_i <- inner(u)_i    where mask_i is True
        u_i <- u_i           where mask_i is False

    ``inner`` sees the updates, parameters and its state with every masked-out
    leaf replaced by :class:`MaskedNode`, so it keeps state only for the
    selected leaves (exactly Optax's layout: ``MaskedState(inner_state)``).

    Args:
      inner: the transformation to apply (a gradtx or an Optax one).
      mask: which leaves ``inner`` applies to: a pytree of booleans with the
        structure of the parameters or a prefix of it (``{"encoder": False}``
        covers the whole encoder), a single boolean, or a callable from the
        parameters (at ``init``) or updates (at ``update``) to such a tree,
        e.g. a :class:`gradtx.path_mask`, which also round-trips through
        :func:`gradtx.to_config`. The mask must be static.
      mask_compatible_extra_args: also mask the extra keyword arguments of
        ``update`` whose tree structure is that of the updates.

    Raises:
      TypeError: if ``inner`` is not a transformation, or ``mask`` is None or
        has a leaf that is not a boolean.
      ValueError: at ``init``/``update``, naming the key path, if the mask is
        not a prefix of the parameter tree.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.masked(gradtx.scale(10.0), {"w": True, "b": False})
      >>> grads = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> tx.update(grads, tx.init(grads))[0]
      {'b': Array([1., 1.], dtype=float32), 'w': Array([10., 10.], dtype=float32)}
    """

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    inner: Transformation = hyperparameter()
    mask: Any | Callable[[Any], Any] = static_field()
    mask_compatible_extra_args: bool = static_field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inner", as_member(self.inner, "inner"))
        object.__setattr__(self, "mask", static_mask(self.mask, "mask"))

    def init(self, params: Params) -> OptState:
        return masked_init(self.inner, mask_tree_for(self.mask, params), params)

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        return masked_update(
            self.inner,
            mask_tree_for(self.mask, updates),
            updates,
            state,
            params,
            extra_args,
            mask_compatible_extra_args=self.mask_compatible_extra_args,
        )
