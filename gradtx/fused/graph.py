"""An optimizer step as a graph of primitive operations, read from its jaxpr.

The one-pass step does not know any optimizer: it traces the plain step
(``tx.update`` then ``apply_updates``) with :func:`jax.make_jaxpr`, inlines the
nested ``jit`` calls (``jnp.where``, ``jnp.clip``, ...) and keeps the result as
:class:`Node` objects. :mod:`gradtx.fused.lift` then finds which outputs are
per-element functions of the inputs, and :func:`evaluate` runs the rest (step
counts, schedules, global norms) as ordinary JAX operations.
"""

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jax_core

# Calls whose body is inlined: they only name a function (jit) or group
# operations for differentiation rules that the plain forward pass ignores.
_INLINED = frozenset({"pjit", "jit", "closed_call", "core_call"})


@dataclasses.dataclass(eq=False)
class Node:
    """One value of the step: an input, a literal or the result of a primitive.

    Attributes:
      kind: "input", "literal" or "op".
      shape: the value's shape.
      dtype: the value's dtype.
      index: for an input, its position among the flat inputs.
      value: for a literal, the value.
      primitive: for an op, the primitive.
      args: for an op, its operands.
      params: for an op, the primitive's parameters.
      output: for an op, which of the primitive's results this is.
    """

    kind: str
    shape: tuple[int, ...]
    dtype: Any
    index: int = -1
    value: Any = None
    primitive: Any = None
    args: tuple["Node", ...] = ()
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    output: int = 0
    siblings: list["Node"] = dataclasses.field(default_factory=list, repr=False)
    # The value of a scalar computed from literals alone, once folded (lift.py).
    folded: tuple[Any, ...] = dataclasses.field(default=(), repr=False)

    @property
    def name(self) -> str:
        return self.primitive.name if self.primitive is not None else self.kind


@dataclasses.dataclass
class Graph:
    """The step's inputs and outputs as nodes (flat, in ``jax.tree.leaves`` order)."""

    inputs: list[Node]
    outputs: list[Node]


def trace(function: Callable[..., Any], *args: Any) -> tuple[Graph, Any]:
    """The graph of ``function(*args)`` and the tree structure of its result."""
    closed, out_shape = jax.make_jaxpr(function, return_shape=True)(*args)
    inputs = [
        Node("input", tuple(v.aval.shape), _dtype(v.aval), index=i)
        for i, v in enumerate(closed.jaxpr.invars)
    ]
    constants = [_literal(np.asarray(c)) for c in closed.consts]
    outputs = _inline(closed.jaxpr, [*constants, *inputs])
    return Graph(inputs, outputs), jax.tree.structure(out_shape)


def _dtype(aval: Any) -> Any:
    """A NumPy dtype, or JAX's own for PRNG keys and tokens (never elementwise)."""
    dtype = getattr(aval, "dtype", None)
    try:
        return np.dtype(dtype)
    except TypeError:
        return dtype


def _literal(value: Any) -> Node:
    array = np.asarray(value)
    return Node("literal", array.shape, array.dtype, value=array)


def _inline(jaxpr: Any, arguments: Sequence[Node]) -> list[Node]:
    env: dict[Any, Node] = dict(zip([*jaxpr.constvars, *jaxpr.invars], arguments))

    def read(atom: Any) -> Node:
        if isinstance(atom, jax_core.Literal):
            return _literal(atom.val)
        return env[atom]

    for eqn in jaxpr.eqns:
        operands = [read(atom) for atom in eqn.invars]
        if eqn.primitive.name in _INLINED and "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"]
            consts = [_literal(np.asarray(c)) for c in getattr(inner, "consts", ())]
            results = _inline(getattr(inner, "jaxpr", inner), [*consts, *operands])
        else:
            results = [
                Node(
                    "op",
                    tuple(getattr(v.aval, "shape", ())),
                    _dtype(v.aval),
                    primitive=eqn.primitive,
                    args=tuple(operands),
                    params=dict(eqn.params),
                    output=position,
                )
                for position, v in enumerate(eqn.outvars)
            ]
            for result in results:
                result.siblings = results
        for var, result in zip(eqn.outvars, results):
            env[var] = result
    return [read(atom) for atom in jaxpr.outvars]


def reachable(roots: Iterable[Node], follow: Callable[[Node], bool]) -> Iterator[Node]:
    """Every node reachable from ``roots``, once each, through the operands of
    the nodes ``follow`` accepts."""
    pending, seen = list(roots), set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if follow(node):
            pending.extend(node.args)


def postorder(root: Node, expand: Callable[[Node], bool]) -> tuple[list[Node], list[Node]]:
    """The nodes ``root`` depends on, through the nodes ``expand`` accepts.

    Iterative (a deep chain must not hit Python's recursion limit), left
    operand first.

    Returns:
      The accepted nodes, operands before the operations that read them, and
      the others (where the walk stopped), in the order the walk met them.
    """
    order: list[Node] = []
    stops: list[Node] = []
    seen: set[int] = set()
    pending: list[tuple[Node, bool]] = [(root, False)]
    while pending:
        node, expanded = pending.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        if expand(node):
            pending.append((node, True))
            # Reversed so that the left operand is met first.
            pending.extend((arg, False) for arg in reversed(node.args))
        else:
            stops.append(node)
    return order, stops


def evaluate(
    nodes: Sequence[Node],
    inputs: Sequence[Any],
    known: dict[int, Any] | None = None,
    shape: tuple[int, ...] | None = None,
) -> list[Any]:
    """The values of ``nodes`` computed with JAX from the step's flat ``inputs``.

    Only what ``nodes`` depend on is evaluated; under ``jax.jit`` these are the
    same operations the plain step would emit.

    Args:
      nodes: the values wanted.
      inputs: the step's flat inputs (only those the nodes read are used).
      known: values given instead of computed, by ``id`` of their node.
      shape: for elementwise nodes only: the shape scalars are broadcast to,
        instead of the traced one (the arrays given then have that shape).
    """
    memo: dict[int, Any] = dict(known or {})

    def value(node: Node) -> Any:
        if id(node) in memo:
            return memo[id(node)]
        if node.kind == "input":
            return inputs[node.index]
        if node.kind == "literal":
            return node.value
        return memo[id(node)]

    for node in nodes:
        operations, _ = postorder(node, lambda n: n.kind == "op" and id(n) not in memo)
        for operation in operations:
            if id(operation) not in memo:  # a sibling's binding may have set it
                _bind(operation, [value(arg) for arg in operation.args], memo, shape)
    return [value(node) for node in nodes]


def _bind(
    node: Node, operands: list[Any], memo: dict[int, Any], shape: tuple[int, ...] | None
) -> None:
    params = node.primitive.get_bind_params(node.params)
    if shape is not None and node.name == "broadcast_in_dim" and node.shape:
        params = {**params, "shape": shape, "broadcast_dimensions": ()}
    results = node.primitive.bind(*operands, **params)
    if not node.primitive.multiple_results:
        results = [results]
    for sibling in node.siblings or [node]:
        memo[id(sibling)] = results[sibling.output]
