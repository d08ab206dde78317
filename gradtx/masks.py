"""Masks that select which parameters a transformation touches."""

import re
from collections.abc import Callable, Iterable
from typing import Any

import jax

from gradtx import tree_paths, trees
from gradtx.base import Value, static_field, value_class

MaskOrFn = Any | Callable[[Any], Any] | None


class FrozenTree:
    """A hashable, immutable holder for a pytree of booleans used as a mask.

    A dict is not hashable, but a transformation must be (Flax keeps ``tx`` in a
    static field), so a mask tree is stored as its tree definition and leaves.
    Calling it with the parameters returns the mask tree.
    """

    __slots__ = ("_treedef", "_leaves")

    def __init__(self, tree: Any) -> None:
        leaves, treedef = trees.flatten(tree)
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


@value_class(pytree=False)
class path_mask(Value):  # noqa: N801 - named like the other gradtx values
    """Selects parameters by regular expressions over their paths: a mask value.

    Each leaf's path is its keys joined by ``/``: ``params["dense"]["bias"]`` is
    ``"dense/bias"``, ``params["layers"][0]["w"]`` is ``"layers/0/w"`` and an
    attribute ``model.bias`` is ``"bias"`` (in ``nnx.Optimizer``, ``"linear/bias"``
    for ``model.linear.bias``). A leaf is selected when its path
    matches (``re.search``) one of ``include`` (or ``include`` is empty) and
    none of ``exclude``. Unlike a lambda, a ``path_mask`` prints, compares,
    hashes and round-trips through :func:`gradtx.to_config`, so it works as a
    static mask in ``jax.jit``, Flax's ``TrainState`` and config files.

    Args:
      include: patterns a path must match one of; empty selects every leaf.
      exclude: patterns that deselect a leaf, e.g. ``[r"bias$", r"scale$"]`` to
        leave biases and normalization scales out of weight decay.

    Raises:
      TypeError: if ``include`` or ``exclude`` is a bare string rather than a
        list, or a pattern is not a string.
      ValueError: if a pattern is not a valid regular expression.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> mask = gradtx.path_mask(exclude=[r"bias$", r"scale$"])
      >>> params = {"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)},
      ...           "norm": {"scale": jnp.ones(2)}}
      >>> mask(params)
      {'dense': {'bias': False, 'kernel': True}, 'norm': {'scale': False}}
      >>> tx = gradtx.adamw(1e-3, weight_decay=0.1, mask=mask)
    """

    include: tuple[str, ...] = static_field(default=())
    exclude: tuple[str, ...] = static_field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", _patterns("include", self.include))
        object.__setattr__(self, "exclude", _patterns("exclude", self.exclude))

    def selects(self, path: str) -> bool:
        """Whether the leaf at ``path`` (e.g. ``"dense/bias"``) is selected.

        Args:
          path: a leaf's keys joined by ``/``.

        Returns:
          True if the leaf is in the mask.
        """
        included = not self.include or any(re.search(p, path) for p in self.include)
        return included and not any(re.search(p, path) for p in self.exclude)

    def __call__(self, params: Any) -> Any:
        """The mask for ``params``: a tree of Python booleans of the same structure.

        Args:
          params: the parameter tree (only its key paths are read, so traced
            parameters are fine).

        Returns:
          A tree with ``params``' structure and a boolean per leaf.
        """
        return jax.tree_util.tree_map_with_path(
            lambda path, _: self.selects(tree_paths.path_string(path, "/")), params
        )


def _patterns(name: str, patterns: Iterable[str]) -> tuple[str, ...]:
    if isinstance(patterns, str):
        # A bare string would otherwise be read as one pattern per character.
        raise TypeError(
            f"{name} must be a list of regular expressions, got {patterns!r}; write [{patterns!r}]"
        )
    patterns = tuple(patterns)
    for position, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            raise TypeError(
                f"{name}[{position}] must be a regular expression string, got {pattern!r}"
            )
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"{name}[{position}] is not a valid regular expression: {error} in {pattern!r}"
            ) from None
    return patterns


def freeze_mask(mask: MaskOrFn) -> MaskOrFn:
    """Stores a mask tree hashably; callables and None are returned as they are."""
    if mask is None or callable(mask):
        return mask
    return FrozenTree(mask)
