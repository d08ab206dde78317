"""Combinators: :class:`chain` composes transformations into an optimizer."""

import collections
import dataclasses
import inspect
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any

import jax

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
    # Its update may have Python side effects: an eager call is not compiled.
    runs_user_code = True
    needs_floating_leaves = False  # the user's code decides what it accepts

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
        if extra_args:
            # Like optax.with_extra_args_support: an update drops the extra
            # arguments it does not name (all of them, for a plain update).
            accepted = _accepted_extra_args(self.transformation.update)
            if accepted is not None:
                extra_args = {k: v for k, v in extra_args.items() if k in accepted}
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


def _accepted_extra_args(update: Any) -> frozenset[str] | None:
    """The keyword arguments ``update`` names beyond the first three; None if it takes any."""
    try:
        parameters = list(inspect.signature(update).parameters.values())
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    named = [
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    return frozenset(named[3:]) | frozenset(
        p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY
    )


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

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

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


class NamedTransforms(Mapping[Hashable, Transformation]):
    """An immutable, ordered mapping from names (or labels) to transformations.

    It is how :class:`named_chain` and :class:`gradtx.partition` hold their
    members: it compares and hashes by its items in order, prints like a dict,
    is written to a config as a JSON object and is a pytree whose children are
    the transformations, so their hyperparameters stay leaves.

    Args:
      items: a mapping, or ``(name, transformation)`` pairs; each
        transformation may be a gradtx or an Optax one.
      argument: how error messages name the collection.

    Raises:
      TypeError: if a name is not hashable or a value is not a transformation.
      ValueError: if a name appears twice.
    """

    __slots__ = ("_items",)
    _items: tuple[tuple[Hashable, Transformation], ...]

    def __init__(self, items: Any = (), argument: str = "transforms") -> None:
        if isinstance(items, Mapping):
            pairs = list(items.items())
        elif isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(
                f"{argument} must be a mapping from names to transformations, got {items!r}"
            )
        else:
            pairs = []
            for position, pair in enumerate(items):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise TypeError(
                        f"{argument}[{position}] must be a (name, transformation) pair, "
                        f"got {pair!r}"
                    )
                pairs.append(tuple(pair))
        names = [name for name, _ in pairs]
        for name in names:
            if not isinstance(name, Hashable):
                raise TypeError(f"{argument} names must be hashable, got {name!r}")
        duplicates = sorted({repr(name) for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"{argument} names must be unique, got {', '.join(duplicates)} more than once "
                f"in {names}"
            )
        members = tuple(
            (name, as_member(member, f"{argument}[{name!r}]")) for name, member in pairs
        )
        object.__setattr__(self, "_items", members)

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __getitem__(self, name: Hashable) -> Transformation:
        for key, member in self._items:
            if key == name:
                return member
        raise KeyError(name)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NamedTransforms):
            return NotImplemented
        return self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{name!r}: {member!r}" for name, member in self._items) + "}"


def _flatten_named(
    named: NamedTransforms,
) -> tuple[list[tuple[Any, Any]], tuple[Hashable, ...]]:
    keyed = [(jax.tree_util.DictKey(name), member) for name, member in named._items]
    return keyed, tuple(name for name, _ in named._items)


def _unflatten_named(names: tuple[Hashable, ...], members: Iterable[Any]) -> NamedTransforms:
    # Bypasses __init__: during tree operations the children may be tracers or
    # placeholders rather than transformations.
    named = object.__new__(NamedTransforms)
    object.__setattr__(named, "_items", tuple(zip(names, members)))
    return named


jax.tree_util.register_pytree_with_keys(
    NamedTransforms,
    _flatten_named,
    _unflatten_named,
    lambda named: ([member for _, member in named._items], tuple(named)),
)


@value_class
class named_chain(Transformation):  # noqa: N801 - Optax's name
    """Applies named transformations in sequence; the state is keyed by name.

    Update rule: ``u <- t_n(...t_2(t_1(u)))`` as in :class:`chain`; the state
    is an ``OrderedDict`` from each name to its transformation's state (as in
    ``optax.named_chain``), so ``state["adam"]`` reads one member's state.

    Args:
      *transforms: ``(name, transformation)`` pairs with unique string names;
        a transformation may be a gradtx or an Optax one.

    Raises:
      TypeError: if an argument is not a pair or holds no transformation.
      ValueError: if a name appears twice.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.named_chain(("momentum", gradtx.trace(0.9)), ("lr", gradtx.scale(-0.1)))
      >>> state = tx.init(jnp.zeros(2))
      >>> list(state)
      ['momentum', 'lr']
      >>> state["momentum"]
      TraceState(trace=Array([0., 0.], dtype=float32))
    """

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    transforms: NamedTransforms = dataclasses.field(default=NamedTransforms())

    def __init__(self, *transforms: Any, **fields: Any) -> None:
        if fields:
            # dataclasses.replace and from_config pass the mapping by name.
            if transforms or set(fields) != {"transforms"}:
                raise TypeError(
                    "named_chain takes (name, transformation) pairs as positional arguments "
                    f"(or only transforms=... by name), got keyword arguments {sorted(fields)}"
                )
            members = fields["transforms"]
        else:
            members = transforms
        object.__setattr__(self, "transforms", NamedTransforms(members, "named_chain"))

    def init(self, params: Params) -> OptState:
        return collections.OrderedDict(
            (name, member.init(params)) for name, member in self.transforms.items()
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        if not isinstance(state, Mapping) or set(state) != set(self.transforms):
            found = sorted(map(str, state)) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                "the state does not belong to this named_chain: expected the names "
                f"{[str(name) for name in self.transforms]}, got {found}"
            )
        new_state = collections.OrderedDict()
        for name, member in self.transforms.items():
            updates, new_state[name] = member.update(updates, state[name], params, **extra_args)
        return updates, new_state

    def __repr__(self) -> str:
        pairs = ", ".join(f"({name!r}, {member!r})" for name, member in self.transforms.items())
        return f"named_chain({pairs})"
