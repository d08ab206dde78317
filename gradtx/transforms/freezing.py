"""Freezing: zero updates for some parameters, or optimize only the others."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import trees
from gradtx.base import (
    EmptyState,
    OptState,
    Params,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import as_member
from gradtx.transforms.masking import masked, static_mask
from gradtx.transforms.partition import partition


@value_class
class set_to_zero(Transformation):  # noqa: N801 - Optax's name
    """Replaces every update by zeros, so the parameters stay where they are.

    Update rule: ``u <- 0`` (in each update's shape and dtype; ``None`` leaves
    stay ``None``). Inside ``jax.jit`` the computation of the discarded updates
    is usually dropped. Use it in :class:`gradtx.partition`, or :class:`freeze`.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.set_to_zero().update(jnp.ones(2), gradtx.EmptyState())[0]
      Array([0., 0.], dtype=float32)
    """

    needs_floating_leaves = False  # does no arithmetic on the leaves

    def init(self, params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        return trees.leaf_map(jnp.zeros_like, updates), state


@value_class
class freeze(Transformation):  # noqa: N801 - Optax's name
    """Zeroes the updates of the leaves the mask selects (freezes them); others pass through.

    Update rule, per leaf ``i``: ``u_i <- 0`` where ``mask_i`` is True, else
    ``u_i`` unchanged. It is ``masked(set_to_zero(), mask)``, so its state is
    ``MaskedState(inner_state=EmptyState())``, exactly Optax's. Chain it before
    an optimizer to keep frozen leaves fixed; the optimizer still keeps state
    for them (use :class:`selective_transform` to avoid that).

    Args:
      mask: which leaves to freeze: True (all), False (none), a pytree of
        booleans with the structure of the parameters or a prefix of it, or a
        callable from params to one (e.g. a :class:`gradtx.path_mask`). It
        must be static.

    Raises:
      TypeError: if the mask is None or has a leaf that is not a boolean.
      ValueError: at ``init``/``update``, naming the key path, if the mask does
        not fit the parameters.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.freeze({"a": True, "b": False})
      >>> grads = {"a": jnp.ones(1), "b": jnp.ones(2)}
      >>> tx.update(grads, tx.init(grads))[0]
      {'a': Array([0.], dtype=float32), 'b': Array([1., 1.], dtype=float32)}
    """

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    mask: Any | Callable[[Any], Any] = static_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", static_mask(self.mask, "mask"))

    def _masked(self) -> masked:
        return masked(set_to_zero(), self.mask)

    def init(self, params: Params) -> OptState:
        return self._masked().init(params)

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        return self._masked().update(updates, state, params, **extra_args)


@value_class
class selective_transform(Transformation):  # noqa: N801 - Optax's name
    """Optimizes only the leaves that are not frozen; frozen ones get zero updates and no state.

    Update rule: ``partition({"train": optimizer, "freeze": set_to_zero()},
    labels)`` with ``labels_i = "freeze" if freeze_mask_i else "train"``, so
    the state is Optax's ``PartitionState({"freeze": ..., "train": ...})`` and
    ``optimizer`` keeps state only for the trained leaves.

    Args:
      optimizer: the transformation for the trained leaves.
      freeze_mask: which leaves to freeze: True (all), False (none), a pytree
        of booleans with the structure of the parameters or a prefix of it,
        or (gradtx's addition) a callable from params to one, such as a
        :class:`gradtx.path_mask`. It must be static.

    Raises:
      TypeError: if ``optimizer`` is not a transformation or ``freeze_mask`` is
        None or has a leaf that is not a boolean.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.selective_transform(gradtx.sgd(1.0), freeze_mask={"a": True, "b": False})
      >>> grads = {"a": jnp.ones(1), "b": jnp.ones(2)}
      >>> tx.update(grads, tx.init(grads))[0]
      {'a': Array([0.], dtype=float32), 'b': Array([-1., -1.], dtype=float32)}
    """

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    optimizer: Transformation = hyperparameter()
    freeze_mask: Any | Callable[[Any], Any] = static_field(kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", as_member(self.optimizer, "optimizer"))
        object.__setattr__(self, "freeze_mask", static_mask(self.freeze_mask, "freeze_mask"))

    def _labels(self, params: Params) -> Any:
        mask = self.freeze_mask(params)
        return jax.tree.map(lambda frozen: "freeze" if frozen else "train", mask)

    def _partition(self) -> partition:
        return partition({"train": self.optimizer, "freeze": set_to_zero()}, self._labels)

    def init(self, params: Params) -> OptState:
        return self._partition().init(params)

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        return self._partition().update(updates, state, params, **extra_args)
