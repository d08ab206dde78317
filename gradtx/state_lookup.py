"""Reading optimizer state by name: :func:`tree_get` and :func:`hyperparams`."""

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp

from gradtx import tree_paths
from gradtx.base import _STATIC, OptState, Transformation
from gradtx.combine import chain, foreign

_NO_DEFAULT = object()
_MAX_LISTED = 20


def tree_get(tree: Any, key: str, default: Any = _NO_DEFAULT) -> Any:
    """The one entry of a pytree (e.g. an optimizer state) whose path ends with ``key``.

    ``key`` is a name such as ``"mu"``, or a dotted path such as ``"2.count"``
    (the ``count`` of the third member of a chain's state) or
    ``"mu.dense.bias"``. Names are NamedTuple fields, dict keys and sequence
    indices; a NamedTuple can also be named by its class, as in Optax's
    ``tree_get``: ``"ScaleByAdamState.count"``. The entry may be a leaf or a
    whole subtree.

    Args:
      tree: any pytree.
      key: the name or dotted path to look for (``[0]``-style indices work too).
      default: returned when nothing matches; without it, no match is an error.

    Returns:
      The matching entry.

    Raises:
      KeyError: if nothing matches and no ``default`` is given (listing the
        names that are there).
      ValueError: if more than one entry matches (listing their paths, any of
        which can be passed instead). A chain's state has one ``count`` per
        counting member, so ``"count"`` alone is ambiguous for e.g. ``adamw``.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> state = gradtx.adam(1e-3).init({"w": jnp.zeros(2)})
      >>> gradtx.tree_get(state, "mu")
      {'w': Array([0., 0.], dtype=float32)}
      >>> int(gradtx.tree_get(state, "ScaleByAdamState.count"))
      0
    """
    dotted = re.sub(r"\[(\d+)\]", r".\1", key)
    parts = tuple((dotted[1:] if key.startswith("[") else dotted).split("."))
    if not all(parts):
        raise ValueError(f"key must be a name or a dotted path such as '0.count', got {key!r}")
    nodes = list(_nodes(tree, ()))
    matches = [(path, node) for path, node in nodes if _ends_with(path, parts)]
    if len(matches) == 1:
        return matches[0][1]
    if len(matches) > 1:
        paths = ", ".join(_describe(path) for path, _ in matches)
        raise ValueError(f"{key!r} is ambiguous: it matches {paths}; pass one of these paths")
    if default is not _NO_DEFAULT:
        return default
    names = sorted({name for path, _ in nodes for names in path for name in names})
    listed = ", ".join(names[:_MAX_LISTED]) + (", ..." if len(names) > _MAX_LISTED else "")
    raise KeyError(f"nothing named {key!r} in the tree; its names are: {listed or 'none'}")


# A path is one tuple of accepted names per step: the key's name, then the
# class name when the step leads to a NamedTuple.
NamePath = tuple[tuple[str, ...], ...]


def _nodes(node: Any, path: NamePath) -> Iterator[tuple[NamePath, Any]]:
    yield path, node
    for name, child in tree_paths.children(node):
        names = (name, type(child).__name__) if hasattr(child, "_fields") else (name,)
        yield from _nodes(child, path + (names,))


def _ends_with(path: NamePath, parts: tuple[str, ...]) -> bool:
    if len(parts) > len(path):
        return False
    tail = path[len(path) - len(parts) :]
    return all(part in names for part, names in zip(parts, tail))


def _describe(path: NamePath) -> str:
    """``0.count`` (or ``ScaleByAdamState.count``) for a path to a NamedTuple field."""
    text = ".".join(names[0] for names in path)
    if len(path) >= 2 and len(path[-2]) == 2:
        text += f" ({path[-2][1]}.{path[-1][0]})"
    return text


def hyperparams(tx: Transformation, state: OptState) -> dict[str, Any]:
    """The value of every hyperparameter of ``tx`` at the step ``state`` is at.

    A schedule is evaluated at the ``count`` in the state, so for a scheduled
    learning rate this is the rate the next ``update`` will use. No wrapper is
    needed (unlike ``optax.inject_hyperparams``), and it works inside
    ``jax.jit``. Keys are the paths :func:`gradtx.from_config` overrides use:
    ``"learning_rate"`` for an alias or a single transformation,
    ``"transforms.1.learning_rate"`` for the second member of a chain. Only
    numeric hyperparameters are listed, not structural options (dtypes,
    ``nesterov``, masks); a member that is not a gradtx value (``foreign``)
    contributes nothing.

    Args:
      tx: a gradtx transformation, alias or chain.
      state: its state, from ``tx.init`` or ``tx.update``.

    Returns:
      A dict from path to a scalar (or array) ``jax.Array``.

    Raises:
      ValueError: if the state does not fit ``tx`` or a schedule has no
        ``count`` in the state to be evaluated at.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.adamw(gradtx.exponential_decay(1.0, transition_steps=1, decay_rate=0.5))
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     _, state = tx.update(params, state, params)
      >>> float(gradtx.hyperparams(tx, state)["learning_rate"])  # 0.5 ** 3
      0.125
    """
    found: dict[str, Any] = {}
    _collect(tx, state, "", found)
    return found


def _collect(tx: Any, state: Any, prefix: str, found: dict[str, Any]) -> None:
    if isinstance(tx, chain):
        if not isinstance(state, tuple) or len(state) != len(tx.transforms):
            raise ValueError(
                f"{prefix or 'the state'}: the state does not belong to this chain of "
                f"{len(tx.transforms)} transformations"
            )
        for position, (member, member_state) in enumerate(zip(tx.transforms, state)):
            _collect(member, member_state, f"{prefix}transforms.{position}.", found)
        return
    if isinstance(tx, foreign) or not isinstance(tx, Transformation):
        return
    count = next(_counts(state), None)
    for field in dataclasses.fields(tx):
        value = getattr(tx, field.name)
        if not field.init or field.metadata.get(_STATIC, False) or value is None:
            continue
        if isinstance(value, Transformation):
            # A wrapper's inner transformation (masked, apply_if_finite, ...).
            _collect(value, _inner_state(state), f"{prefix}{field.name}.", found)
            continue
        if isinstance(value, Mapping) and all(
            isinstance(member, Transformation) for member in value.values()
        ):
            # partition's transformations by label; named_chain's by name.
            states = getattr(state, "inner_states", state)
            for label, member in value.items():
                member_state = states.get(label) if isinstance(states, Mapping) else None
                _collect(
                    member, _inner_state(member_state), f"{prefix}{field.name}.{label}.", found
                )
            continue
        if callable(value):
            if count is None:
                raise ValueError(
                    f"{prefix}{field.name} is a schedule, but the state of "
                    f"{type(tx).__name__} has no count to evaluate it at"
                )
            value = value(count)
        found[prefix + field.name] = jnp.asarray(value)


# Where Optax's wrappers keep the state of the transformation they wrap.
_INNER_STATE_FIELDS = ("inner_state", "inner_opt_state", "fast_state")


def _inner_state(state: Any) -> Any:
    for name in _INNER_STATE_FIELDS:
        if name in getattr(state, "_fields", ()):
            return getattr(state, name)
    return state


def _counts(state: Any) -> Iterator[Any]:
    """The ``count`` fields of the NamedTuples in a state, outside the parameter trees.

    Every ``count`` in a gradtx state advances by one per update, so an alias
    (whose state is its chain's) reads its step from the first one.
    """
    if isinstance(state, Mapping):
        for item in state.values():
            yield from _counts(item)
        return
    if not isinstance(state, tuple):
        return
    if "count" in getattr(state, "_fields", ()):
        yield state.count
    for item in state:
        yield from _counts(item)
