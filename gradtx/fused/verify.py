"""A generated kernel checked against XLA before the one-pass step uses it.

``lift.py`` models what XLA and LLVM do to a step's arithmetic (which
divisions become products, which products fuse into multiply-adds, in which
order a loop loads its values), and the model has limits: LLVM ranks values by
where XLA's loop loads them, which depends on fusion decisions the jaxpr does
not show. So before a kind of kernel computes a step, :func:`agrees_with_xla`
runs it and XLA side by side on random data shaped like the step: XLA
compiles the same outputs from the same operations of the traced step, for up
to two of the kernel's leaves (so that a scalar read by several leaves has
several users there too), with the kernel's scalars as parameters. A kernel
that differs in one bit on one element is not used; its leaves take the plain
step. The check costs one small XLA compilation per kind of kernel and step.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gradtx.fused import graph as graph_lib
from gradtx.fused import lift

# Elements per array: every code path of the kernel (blocks of 8, the tail)
# and enough elements that a rare difference in rounding shows.
_SIZE = 8 * 512 + 5

Call = Callable[
    [lift.Form, list[lift.Component], Sequence[Any], dict[int, Any]], list[list[jax.Array]]
]


def agrees_with_xla(graph: graph_lib.Graph, components: list[lift.Component], call: Call) -> bool:
    """Whether the kernel of ``components`` (one form) computes what XLA does, bit for bit.

    Args:
      graph: the traced step.
      components: components of one form, as ``lift.lift`` gives them.
      call: runs the kernel, as ``apply._call`` does.

    Returns:
      True if every output of the kernel equals XLA's on the random data.
    """
    sample = components[:2]
    rng = np.random.default_rng(0)
    arrays: dict[int, np.ndarray] = {}
    for component in sample:
        for index in component.inputs:
            values = rng.standard_normal(_SIZE).astype(np.float32)
            values[::2] = np.abs(values[::2])  # moments and second moments are >= 0
            arrays[index] = values
    scalars: dict[int, Any] = {}
    for component in sample:
        for node, _ in component.scalars:
            if node.dtype == np.bool_:
                scalars[id(node)] = np.bool_(rng.random() < 0.5)
            else:
                scalars[id(node)] = np.float32(rng.uniform(0.1, 0.9))
    outputs = [graph.outputs[k] for component in sample for k in component.outputs]
    extra_users = _scalars_used_elsewhere(graph, sample)
    array_keys, scalar_keys = sorted(arrays), sorted(scalars)

    def reference(array_values: list[Any], scalar_values: list[Any]) -> list[Any]:
        inputs: list[Any] = [None] * len(graph.inputs)
        for index, value in zip(array_keys, array_values):
            inputs[index] = value
        known = dict(zip(scalar_keys, scalar_values))
        values = graph_lib.evaluate(outputs, inputs, known=known, shape=(_SIZE,))
        # A scalar that the step reads elsewhere too is returned, so that it
        # has another user here as well (XLA rewrites a division by a scalar
        # with one user into a product by its reciprocal).
        return values + [known[key] for key in extra_users]

    with jax.ensure_compile_time_eval():
        expected = jax.jit(reference)(
            [arrays[k] for k in array_keys], [scalars[k] for k in scalar_keys]
        )
        leaves: list[Any] = [None] * len(graph.inputs)
        for index, value in arrays.items():
            leaves[index] = value
        results = call(sample[0].form, sample, leaves, scalars)
    got = [np.asarray(value) for per_component in results for value in per_component]
    return all(_same_bits(a, np.asarray(e)) for a, e in zip(got, expected))


def _scalars_used_elsewhere(graph: graph_lib.Graph, sample: list[lift.Component]) -> list[int]:
    """The sample's scalars that the step reads more often than the sample does."""
    users = lift.count_scalar_users(graph)
    in_sample: dict[int, int] = {}
    for component in sample:
        cones = [graph.outputs[k] for k in component.outputs]

        def elementwise(node: graph_lib.Node, shape: tuple[int, ...] = cones[0].shape) -> bool:
            return node.kind == "op" and node.shape == shape

        for node in graph_lib.reachable(cones, elementwise):
            if not elementwise(node):
                continue
            for arg in node.args:
                if not arg.shape:
                    in_sample[id(arg)] = in_sample.get(id(arg), 0) + 1
    keys = {id(node) for component in sample for node, _ in component.scalars}
    return sorted(key for key in keys if users.get(key, 0) > in_sample.get(key, 0))


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit, except that any NaN equals any NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    both_nan = np.isnan(a) & np.isnan(b) if a.dtype.kind == "f" else np.zeros(a.shape, bool)
    bits_a = a.view(np.uint32) if a.dtype == np.float32 else a
    bits_b = b.view(np.uint32) if b.dtype == np.float32 else b
    return bool(np.all((bits_a == bits_b) | both_nan))
