"""Combinators: :class:`chain` composes transformations into an optimizer."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from gradtx.base import (
    GradientTransformation,
    OptState,
    Params,
    Transformation,
    Updates,
    static_field,
    value_class,
)


@value_class
class foreign(Transformation):  # noqa: N801
    """Wraps a transformation that is not a gradtx value (e.g. an Optax one).

    Optax transformations are tuples of functions; inside a pytree their
    functions would become leaves, which ``jax.jit`` rejects. Wrapped, they are
    static, so a chain mixing gradtx and Optax pieces stays a valid pytree.
    :func:`chain` wraps foreign pieces automatically.

    Args:
      transformation: any object with Optax's ``init``/``update`` methods.
    """

    transformation: Any = static_field()

    def __post_init__(self) -> None:
        if not _is_transformation(self.transformation):
            raise TypeError(
                "transformation must have init and update methods, got "
                f"{self.transformation!r}{_instance_hint(self.transformation)}"
            )

    def init(self, params: Params) -> OptState:
        return self.transformation.init(params)

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        if extra_args and not _takes_extra_args(self.transformation.update):
            # Like optax.with_extra_args_support: a plain update drops them.
            extra_args = {}
        return self.transformation.update(updates, state, params, **extra_args)

    def __repr__(self) -> str:
        return repr(self.transformation)


def as_member(candidate: Any, argument: str) -> Transformation:
    """A wrapper's inner transformation as a gradtx value: Optax ones become ``foreign``.

    Args:
      candidate: a gradtx transformation, or any object with Optax's
        ``init``/``update`` methods.
      argument: how the error message names it (``"inner"``, ``"chain argument 2"``).

    Returns:
      ``candidate`` itself, or ``foreign(candidate)``.

    Raises:
      TypeError: naming ``argument`` if ``candidate`` is not a transformation.
    """
    if isinstance(candidate, Transformation):
        return candidate
    if _is_transformation(candidate):
        return foreign(candidate)
    raise TypeError(
        f"{argument} must be a gradient transformation (with init and update "
        f"methods), got {candidate!r}{_instance_hint(candidate)}"
    )


def _is_transformation(candidate: Any) -> bool:
    # A class such as gradtx.adam has init and update too, but only as unbound
    # methods; accepting it would fail later, far from the mistake.
    return isinstance(candidate, GradientTransformation) and not isinstance(candidate, type)


def _instance_hint(candidate: Any) -> str:
    if isinstance(candidate, type):
        return f" (a class: did you mean {candidate.__name__}(...)?)"
    return ""


def _takes_extra_args(update: Any) -> bool:
    try:
        parameters = inspect.signature(update).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


@value_class
class chain(Transformation):  # noqa: N801 - Optax's name
    """Applies transformations in sequence: the output of one feeds the next.

    Update rule: ``u <- t_n(...t_2(t_1(u)))``; the state is the tuple of the
    members' states, in order (as in ``optax.chain``).

    Args:
      *transforms: gradtx transformations, or any object with Optax's
        ``init``/``update`` methods (Optax transformations included).

    Raises:
      TypeError: if an argument is not a gradient transformation.

    Example:
      >>> import gradtx
      >>> gradtx.chain(gradtx.trace(decay=0.9), gradtx.scale_by_learning_rate(0.1))
      chain(trace(decay=0.9), scale_by_learning_rate(learning_rate=0.1))
    """

    transforms: tuple[Transformation, ...] = dataclasses.field(default=())

    def __init__(self, *transforms: Any, **fields: Any) -> None:
        if fields:
            # dataclasses.replace(a_chain, transforms=...) passes the field by name.
            if transforms or set(fields) != {"transforms"}:
                raise TypeError(
                    "chain takes transformations as positional arguments (or only "
                    f"transforms=... by name), got keyword arguments {sorted(fields)}"
                )
            transforms = tuple(fields["transforms"])
        members = tuple(
            as_member(member, f"chain argument {position}")
            for position, member in enumerate(transforms)
        )
        object.__setattr__(self, "transforms", members)

    def init(self, params: Params) -> OptState:
        return tuple(member.init(params) for member in self.transforms)

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        if not isinstance(state, tuple) or len(state) != len(self.transforms):
            raise ValueError(
                f"the state does not belong to this chain of {len(self.transforms)} "
                f"transformations (got {type(state).__name__} of length "
                f"{len(state) if isinstance(state, tuple) else 'n/a'})"
            )
        new_states = []
        for member, member_state in zip(self.transforms, state):
            updates, member_state = member.update(updates, member_state, params, **extra_args)
            new_states.append(member_state)
        return updates, tuple(new_states)

    def __repr__(self) -> str:
        return f"chain({', '.join(repr(member) for member in self.transforms)})"
