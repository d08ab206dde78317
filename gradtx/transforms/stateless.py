"""Stateless transformations built from a plain function of the updates."""

from collections.abc import Callable
from typing import Any

import jax

from gradtx import trees
from gradtx.base import (
    EmptyState,
    OptState,
    Params,
    Transformation,
    Updates,
    static_field,
    value_class,
)


def _check_callable(name: str, function: Any) -> None:
    if not callable(function):
        raise TypeError(f"{name} must be a callable, got {function!r}")


@value_class
class stateless(Transformation):  # noqa: N801 - Optax's name
    """A transformation that applies ``f(updates, params)`` and keeps no state.

    Update rule: ``u <- f(u, p)`` (``p`` may be None). The state is
    ``EmptyState()``. It holds a plain Python function, so it prints,
    compares (by the function's identity) and works in ``jax.jit``, but it
    cannot be written to a config: write a :class:`gradtx.Transformation`
    subclass and register it for that.

    Args:
      f: a function from the updates tree and the params tree (or None) to
        the new updates tree.

    Raises:
      TypeError: if ``f`` is not callable.

    Example:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> tx = gradtx.stateless(lambda u, p: jax.tree.map(lambda x: 2 * x, u))
      >>> tx.update(jnp.ones(2), tx.init(jnp.ones(2)))[0]
      Array([2., 2.], dtype=float32)
    """

    # The user's function may have Python side effects: an eager call is not compiled.
    runs_user_code = True
    needs_floating_leaves = False  # the user's code decides what it accepts

    f: Callable[[Updates, Params | None], Updates] = static_field()

    def __post_init__(self) -> None:
        _check_callable("f", self.f)

    def init(self, params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del state, extra_args
        return self.f(updates, params), EmptyState()


@value_class
class stateless_with_tree_map(Transformation):  # noqa: N801 - Optax's name
    """A transformation that applies ``f(update, param)`` to each leaf and keeps no state.

    Update rule, per leaf: ``u_i <- f(u_i, p_i)``, or ``f(u_i, None)`` when
    ``update`` is called without params. ``None`` leaves of the updates stay
    ``None``. The state is ``EmptyState()``. Like :class:`stateless` it
    cannot be written to a config.

    Args:
      f: a function from one update array and its parameter array (or None)
        to the new update array.

    Raises:
      TypeError: if ``f`` is not callable.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.stateless_with_tree_map(lambda u, p: u + p)
      >>> p = {"w": jnp.ones(2)}
      >>> tx.update({"w": jnp.ones(2)}, tx.init(p), p)[0]
      {'w': Array([2., 2.], dtype=float32)}
    """

    # The user's function may have Python side effects: an eager call is not compiled.
    runs_user_code = True
    needs_floating_leaves = False  # the user's code decides what it accepts

    f: Callable[[jax.Array, jax.Array | None], jax.Array] = static_field()

    def __post_init__(self) -> None:
        _check_callable("f", self.f)

    def init(self, params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del state, extra_args
        if params is None:
            return trees.leaf_map(lambda u: self.f(u, None), updates), EmptyState()
        return trees.leaf_map(self.f, updates, params), EmptyState()
