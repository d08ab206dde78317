"""A generated kernel checked against XLA before the one-pass step uses it.

``lift.py`` models what XLA and LLVM do to a step's arithmetic (which
divisions become products, which products fuse into multiply-adds, in which
order a loop loads its values), and the model has limits: LLVM ranks values by
where XLA's loop loads them, which depends on fusion decisions the jaxpr does
not show. So before a kind of kernel computes a step, :func:`agreeing` runs it and
XLA side by side on random data shaped like the step: XLA compiles the same
outputs from the same operations of the traced step, for two of the kernel's
leaves standing for the large ones (so that a scalar read by several leaves
has several users there too) and for one leaf of each small shape,
with the scalars XLA's loop loads as parameters (what the loop computes from
them, a negated learning rate say, it computes there, as in the plain step;
LLVM ranks a computed value differently from a loaded one). A kernel that
differs in one bit on one element is not used for the leaves it stands for;
they take the plain step. The check costs one small XLA compilation per kind of kernel and step.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gradtx.fused import graph as graph_lib
from gradtx.fused import lift

# Elements of the arrays that stand for large leaves: every code path of the
# kernel (blocks of 8, the tail) and enough elements that a rare difference
# in rounding shows.
_SIZE = 8 * 512 + 5
# XLA's loop for a small leaf is compiled for its shape, and LLVM contracts
# some differently (clip_by_global_norm(1.0) + AdamW: leaves of 34 to 47
# elements differ, of 20 to 33 or 48 to 79 do not, nor (5, 7) or (2, 46)):
# each shape of fewer than _SIZE elements is checked at that shape, up to this
# many shapes per kind of kernel; leaves of further small shapes take the
# plain step.
_SMALL_SHAPES = 64

Call = Callable[
    [lift.Form, list[lift.Component], Sequence[Any], dict[int, Any]], list[list[jax.Array]]
]


def agreeing(
    graph: graph_lib.Graph, components: list[lift.Component], call: Call
) -> list[lift.Component]:
    """The components (of one form) whose kernel computes what XLA does, bit for bit.

    The kernel and XLA run on random data for two components at ``_SIZE``
    elements, standing for every leaf of that size or more, and for one
    component of each shape with fewer elements, at that shape. A difference
    at ``_SIZE`` refuses every component; one at a small shape refuses the
    components of that shape.

    Args:
      graph: the traced step.
      components: components of one form, as ``lift.lift`` gives them.
      call: runs the kernel, as ``apply._call`` does.

    Returns:
      The components whose kernel agrees with XLA, in their order.
    """
    large = components[:2]
    shapes = [_shape(graph, component) for component in components]
    small: dict[tuple[int, ...], lift.Component] = {}
    for component, shape in zip(components, shapes):
        if _is_small(shape) and shape not in small and len(small) < _SMALL_SHAPES:
            small[shape] = component
    sample = [*large, *small.values()]
    agrees = _run(graph, sample, [(_SIZE,)] * len(large) + list(small), call)
    if not all(agrees[: len(large)]):
        return []
    checked = dict(zip(small, agrees[len(large) :]))
    return [
        component
        for component, shape in zip(components, shapes)
        if not _is_small(shape) or checked.get(shape, False)
    ]


def _shape(graph: graph_lib.Graph, component: lift.Component) -> tuple[int, ...]:
    return tuple(graph.outputs[component.outputs[0]].shape)


def _is_small(shape: tuple[int, ...]) -> bool:
    return int(np.prod(shape, dtype=np.int64)) < _SIZE


def _run(
    graph: graph_lib.Graph,
    sample: list[lift.Component],
    shapes: list[tuple[int, ...]],
    call: Call,
) -> list[bool]:
    """For each component of ``sample``, whether the kernel equals XLA on it.

    Each component's arrays have the shape given for it; scalars are random.
    """
    rng = np.random.default_rng(0)
    users = lift.count_scalar_users(graph)
    # Each entry has arrays and scalars of its own (a component may stand for
    # the large leaves and be checked at its own shape too; a scalar's users
    # decide how XLA divides by it): the kernel reads the arrays at positions
    # after the step's inputs, and the scalars from copies of their nodes.
    # The random scalars are those XLA's loop loads (``lift.scalars_loaded``):
    # the cheap scalar operations above them are computed in XLA's loop, as
    # the plain step computes them (LLVM ranks a computed scalar, a negated
    # learning rate say, differently from a loaded one), and for the kernel
    # by XLA beforehand, as ``fused_apply`` computes them.
    arrays: list[list[np.ndarray]] = []
    sources: list[list[graph_lib.Node]] = []
    loaded: list[list[Any]] = []
    extra: list[list[graph_lib.Node]] = []
    leaves: list[Any] = [None] * len(graph.inputs)
    renamed = []
    for component, shape in zip(sample, shapes):
        own = []
        for _ in component.inputs:
            values = rng.standard_normal(shape).astype(np.float32)
            values.reshape(-1)[::2] = np.abs(values.reshape(-1)[::2])  # moments are >= 0
            own.append(values)
        arrays.append(own)
        positions = list(range(len(leaves), len(leaves) + len(own)))
        leaves += own
        sources.append(lift.scalars_loaded([node for node, _ in component.scalars]))
        loaded.append([_random_scalar(rng, node) for node in sources[-1]])
        copies = [(dataclasses.replace(node), how) for node, how in component.scalars]
        renamed.append(dataclasses.replace(component, inputs=positions, scalars=copies))
        extra.append(_scalars_used_elsewhere(users, graph, component))

    def known_scalars(entry: int, values: list[Any]) -> dict[int, Any]:
        return {id(node): value for node, value in zip(sources[entry], values)}

    def reference(array_values: list[list[Any]], loaded_values: list[list[Any]]) -> list[Any]:
        values, returned = [], []
        for entry, (component, shape, own, own_loaded, others) in enumerate(
            zip(sample, shapes, array_values, loaded_values, extra)
        ):
            inputs: list[Any] = [None] * len(graph.inputs)
            for index, value in zip(component.inputs, own):
                inputs[index] = value
            known = known_scalars(entry, own_loaded)
            outputs = [graph.outputs[k] for k in component.outputs]
            # A leaf's own shape is the traced one; a stand-in's is given.
            stand_in = shape if shape != _shape(graph, component) else None
            results = graph_lib.evaluate([*outputs, *others], inputs, known=known, shape=stand_in)
            values += results[: len(outputs)]
            # A scalar that the step reads elsewhere too is returned, so that
            # it has another user here as well (XLA rewrites a division by a
            # scalar with one user into a product by its reciprocal).
            returned += results[len(outputs) :]
        return values + returned

    def kernel_scalars(loaded_values: list[list[Any]]) -> list[list[Any]]:
        return [
            graph_lib.evaluate(
                [node for node, _ in component.scalars],
                [None] * len(graph.inputs),
                known=known_scalars(entry, own_loaded),
            )
            for entry, (component, own_loaded) in enumerate(zip(sample, loaded_values))
        ]

    with jax.ensure_compile_time_eval():
        expected = jax.jit(reference)(arrays, loaded)
        computed = jax.jit(kernel_scalars)(loaded)
        by_copy = {
            id(copy): value
            for component, values in zip(renamed, computed)
            for (copy, _), value in zip(component.scalars, values)
        }
        results = call(sample[0].form, renamed, leaves, by_copy)
    agrees = []
    position = 0
    for per_component in results:
        wanted = expected[position : position + len(per_component)]
        position += len(per_component)
        agrees.append(
            all(_same_bits(np.asarray(a), np.asarray(e)) for a, e in zip(per_component, wanted))
        )
    return agrees


def _scalars_used_elsewhere(
    users: dict[int, int], graph: graph_lib.Graph, component: lift.Component
) -> list[graph_lib.Node]:
    """The component's scalars that the step reads more often than the component does.

    Args:
      users: how many operations read each scalar (``lift.count_scalar_users``).
      graph: the traced step.
      component: one component.
    """
    cones = [graph.outputs[k] for k in component.outputs]
    shape = cones[0].shape

    def elementwise(node: graph_lib.Node) -> bool:
        return node.kind == "op" and node.shape == shape

    own: dict[int, int] = {}
    for node in graph_lib.reachable(cones, elementwise):
        if elementwise(node):
            for arg in node.args:
                if not arg.shape:
                    own[id(arg)] = own.get(id(arg), 0) + 1
    return [node for node, _ in component.scalars if users.get(id(node), 0) > own.get(id(node), 0)]


def _random_scalar(rng: np.random.Generator, node: graph_lib.Node) -> Any:
    """A random value of ``node``'s dtype: a step count, a flag or a hyperparameter."""
    dtype = np.dtype(node.dtype)
    if dtype == np.bool_:
        return np.bool_(rng.random() < 0.5)
    if dtype.kind in "iu":
        return dtype.type(rng.integers(1, 100))
    return dtype.type(rng.uniform(0.1, 0.9))


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit, except that any NaN equals any NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    both_nan = np.isnan(a) & np.isnan(b) if a.dtype.kind == "f" else np.zeros(a.shape, bool)
    bits_a = a.view(np.uint32) if a.dtype == np.float32 else a
    bits_b = b.view(np.uint32) if b.dtype == np.float32 else b
    return bool(np.all((bits_a == bits_b) | both_nan))
