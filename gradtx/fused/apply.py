"""One-pass optimizer steps: :func:`fused_apply`.

The plain step, ``tx.update`` followed by :func:`gradtx.apply_updates`, is what
XLA compiles into a few loops per parameter leaf. :func:`fused_apply` traces
that same step, finds the outputs that are per-element functions of a leaf's
arrays (``lift.py``), and computes them with generated native custom calls
(one per 16 leaves) that update params and state in a single pass over memory.
It knows no optimizer: whatever a chain's transformations compute element by
element takes the one pass, and everything else (step counts, schedules, bias
corrections, global norms) stays in JAX exactly as the plain step computes it,
handed to the kernel as a small buffer of scalars.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import (
    GradientTransformation,
    OptState,
    Params,
    Transformation,
    Updates,
)
from gradtx.fused import build, codegen, graph, lift, verify
from gradtx.update import apply_updates

# Leaves per custom call. XLA's compile time grows quadratically with the
# number of operands one custom call aliases to its results (1,000 leaves in
# one call: 50-90 s to compile), while a call costs microseconds to run. With
# 4 to 32 leaves per call, 1,000 leaves compile in ~1 s, about the same.
_LEAVES_PER_CALL = 16


class UnsupportedError(Exception):
    """The fast path does not apply; the plain path gives the answer."""


def _plain_apply(tx: Any, params: Params, state: OptState, grads: Updates) -> Any:
    updates, new_state = tx.update(grads, state, params)
    return apply_updates(params, updates), new_state


def _native_usable() -> bool:
    # One device only: a custom call has no sharding rule, so XLA's partitioner
    # would gather sharded params to run it. Other backends use the plain path.
    return jax.default_backend() == "cpu" and jax.device_count() == 1 and build.load()


class _Plan:
    """The traced plain step and the components the kernels compute."""

    def __init__(self, tx: Any, params: Params, state: OptState, grads: Updates) -> None:
        leaves, self.treedef = jax.tree.flatten((tx, params, state, grads))
        if not all(isinstance(leaf, jax.Array | np.ndarray | float | int) for leaf in leaves):
            raise UnsupportedError
        # Python numbers stay Python numbers, as in the plain step: there
        # ``1 - b1`` is computed in float64 before JAX rounds it to float32.
        self.arrays = [i for i, leaf in enumerate(leaves) if not isinstance(leaf, float | int)]
        constants = list(leaves)

        def flat_step(*arrays: Any) -> Any:
            flat = list(constants)
            for position, array in zip(self.arrays, arrays):
                flat[position] = array
            return _plain_apply(*jax.tree.unflatten(self.treedef, flat))

        self.graph, self.out_tree = graph.trace(flat_step, *(leaves[i] for i in self.arrays))
        params_and_state = jax.tree.structure((params, state))
        first = len(jax.tree.leaves(tx))
        # Output k replaces leaf first + k when the step keeps the state's
        # structure: the kernel then updates that buffer in place.
        input_of_leaf = {leaf: k for k, leaf in enumerate(self.arrays)}
        aliases = (
            {
                k: input_of_leaf[first + k]
                for k in range(len(self.graph.outputs))
                if first + k in input_of_leaf
            }
            if self.out_tree == params_and_state
            else {}
        )
        self.components = lift.lift(self.graph, aliases, rsqrt=rsqrt_form)
        if not self.components:
            raise UnsupportedError
        forms = {component.form for component in self.components}
        if not all(build.register(form) for form in forms):
            raise UnsupportedError
        self.components = _verified(self.graph, self.components)
        if not self.components:
            raise UnsupportedError

    def execute(self, all_leaves: Sequence[Any]) -> Any:
        """The step's outputs, from the kernels and (for the rest) from XLA."""
        leaves = [all_leaves[i] for i in self.arrays]
        computed = {k for component in self.components for k in component.outputs}
        rest = [k for k in range(len(self.graph.outputs)) if k not in computed]
        scalar_nodes = [node for c in self.components for node, _ in c.scalars]
        values = graph.evaluate([*scalar_nodes, *(self.graph.outputs[k] for k in rest)], leaves)
        scalar_values = dict(zip(map(id, scalar_nodes), values))
        outputs: list[Any] = [None] * len(self.graph.outputs)
        for k, value in zip(rest, values[len(scalar_nodes) :]):
            outputs[k] = value
        first = True
        for form, components in _by_form(self.components).items():
            for start in range(0, len(components), _LEAVES_PER_CALL):
                group = components[start : start + _LEAVES_PER_CALL]
                results = _call(form, group, leaves, scalar_values, asynchronous=first)
                first = False
                for component, component_results in zip(group, results):
                    for k, result in zip(component.outputs, component_results):
                        outputs[k] = result
        return jax.tree.unflatten(self.out_tree, outputs)


def _by_form(components: list[lift.Component]) -> dict[lift.Form, list[lift.Component]]:
    """The components grouped by form, in order: each group runs one kernel."""
    groups: dict[lift.Form, list[lift.Component]] = {}
    for component in components:
        groups.setdefault(component.form, []).append(component)
    return groups


def _verified(graph_: graph.Graph, components: list[lift.Component]) -> list[lift.Component]:
    """The components whose kernel computes what XLA does (``verify.py``)."""
    agreeing = {
        id(component)
        for group in _by_form(components).values()
        for component in verify.agreeing(graph_, group, _call)
    }
    return [component for component in components if id(component) in agreeing]


@functools.cache
def rsqrt_form() -> str | None:
    """The kernel's ``rsqrt`` that equals XLA's on this machine, or None.

    XLA computes ``rsqrt`` from the CPU's estimate and one or two Newton
    steps, depending on the CPU (``runtime.h``); each candidate kernel is
    compared bit for bit with XLA's ``rsqrt`` on normal, subnormal, zero and
    infinite inputs, once per process.
    """
    rng = np.random.default_rng(0)
    normal = np.exp(rng.uniform(-87, 88, 2**16 + 3)).astype(np.float32)
    special = np.array([0.0, 1e-40, 1e-45, 1.1754944e-38, np.inf, 1.0, 4.0, 2.0], np.float32)
    x = np.concatenate([normal, special])
    with jax.ensure_compile_time_eval():
        expected = np.asarray(jax.jit(jax.lax.rsqrt)(x))
        for steps in ("2", "1"):
            rsqrt = lift.Instruction(0, "rsqrt", (("in", "0"),), "float32", steps)
            form = lift.Form(1, 0, (), (((rsqrt,), ("t", "0")),), (-1,))
            if not build.register(form):
                return None
            call = jax.ffi.ffi_call(
                codegen.symbol(form), jax.ShapeDtypeStruct(x.shape, jnp.float32)
            )
            got = np.asarray(jax.jit(call)(np.zeros(1, np.float32), x))
            if np.array_equal(got.view(np.int32), expected.view(np.int32)):
                return steps
    return None


def _scalar_row(component: lift.Component, scalar_values: dict[int, Any]) -> list[jax.Array]:
    row = []
    for node, how in component.scalars:
        value = scalar_values[id(node)]
        if how == lift.RECIPROCAL:
            # As XLA computes it when it rewrites a division by this scalar.
            value = jnp.float32(1) / value
        row.append(jnp.asarray(value).astype(jnp.float32))
    return row


def _call(
    form: lift.Form,
    group: list[lift.Component],
    leaves: Sequence[Any],
    scalar_values: dict[int, Any],
    asynchronous: bool = False,
) -> list[list[jax.Array]]:
    """One custom call for ``group``; the results per component, per output.

    With ``asynchronous``, the buffer's spare element is computed so that the
    program is dispatched asynchronously (:func:`_dispatch_weight`).
    """
    count = len(group)
    scalars = [x for component in group for x in _scalar_row(component, scalar_values)]
    arrays = [leaves[c.inputs[slot]] for slot in range(form.inputs) for c in group]
    # One spare element, which the kernel never reads: a call without scalars
    # still passes a buffer.
    spare = jnp.zeros((), jnp.float32)
    read_only = [slot for slot in range(form.inputs) if slot not in form.aliases]
    if asynchronous and read_only:
        spare = _dispatch_weight(arrays[read_only[0] * count])
    buffer = jnp.stack([*scalars, spare])
    shapes = [
        jax.ShapeDtypeStruct(leaves[c.inputs[0]].shape, jnp.float32)
        for _ in form.programs
        for c in group
    ]
    aliases = {
        1 + slot * count + leaf: output * count + leaf
        for output, slot in enumerate(form.aliases)
        if slot >= 0
        for leaf in range(count)
    }
    results = jax.ffi.ffi_call(
        codegen.symbol(form), shapes, input_output_aliases=aliases, vmap_method="sequential"
    )(buffer, *arrays)
    return [
        [results[output * count + leaf] for output in range(len(form.programs))]
        for leaf in range(count)
    ]


def _dispatch_weight(read_only: jax.Array) -> jax.Array:
    """Zero, computed from ``read_only``'s first element with a few thousand flops.

    XLA's CPU client runs a program its cost model puts under 1,000 flops
    inline, in the calling thread, and the model counts a custom call as free:
    a jitted step made of the kernels alone would block the Python thread for
    the whole update instead of being dispatched asynchronously like XLA's own
    step. This weight, handed to the kernel in a slot it never reads, lifts the
    program over that bar. It reads an input no kernel writes, so XLA need not
    copy a donated buffer to order the read. Measured on AdamW with 10M
    parameters, per step: 4.1 ms inline, 3.7 ms dispatched in 10 leaves;
    16.4 ms and 11.7 ms in 1,000 leaves; RMSProp in 1,000 leaves, dispatched
    only through a step count before, returned to Python after 20.1 ms of a
    20.6 ms step.
    """
    ramp = jnp.arange(2048, dtype=jnp.float32) * read_only.reshape(-1)[0]
    return jnp.sum(ramp) * 0


def _traced_apply(tx: Any, params: Params, state: OptState, grads: Updates) -> Any:
    try:
        if not jax.tree.leaves(params) or not _native_usable():
            raise UnsupportedError
        plan = _Plan(tx, params, state, grads)
    except UnsupportedError:
        return _plain_apply(tx, params, state, grads)

    # Differentiated through the plain step, which the kernels repeat exactly.
    @jax.custom_jvp
    def one_pass(tx: Any, params: Params, state: OptState, grads: Updates) -> Any:
        return plan.execute(jax.tree.leaves((tx, params, state, grads)))

    @one_pass.defjvp
    def _(primals: Any, tangents: Any) -> Any:
        return jax.jvp(_plain_apply, primals, tangents)

    return one_pass(tx, params, state, grads)


@functools.cache
def _compiled(donate: bool) -> Callable[..., Any]:
    return jax.jit(_traced_apply, donate_argnums=(1, 2) if donate else ())


def fused_apply(
    tx: Transformation | GradientTransformation,
    params: Params,
    state: OptState,
    grads: Updates,
    *,
    donate: bool = False,
) -> tuple[Params, OptState]:
    """Applies one optimizer step in a single pass over memory when it can.

    Returns what the plain step returns::

        updates, new_state = tx.update(grads, state, params)
        new_params = gradtx.apply_updates(params, updates)

    with the same state structure, dtypes and values. ``fused_apply`` knows no
    optimizer: it traces that plain step, takes every output that is a
    per-element function of one leaf's float32 arrays (the new param and its
    moments or traces, for Adam(W), NAdam(W), SGD with momentum, Lion,
    AdaMax, AMSGrad, Yogi, RAdam, AdaBelief, Adan, AdEMAMix, LAMB, LARS,
    NovoGrad, sign SGD, ... and chains of such pieces, global-norm clipping
    first included) and
    computes them with generated native custom calls (one per 16 leaves) that
    read and write each element once, in place when the buffers are donated.
    Step counts, schedules and bias corrections stay in JAX and reach the
    kernel as data, so changing a hyperparameter never recompiles; so do
    reductions such as ``clip_by_global_norm``'s norm or LAMB's trust ratios,
    which then enter the one pass as scalars. The kernel for a kind of step
    is generated and compiled once per machine (a C++ compiler is needed, a
    few seconds; cached in ``~/.cache/gradtx``). A leaf whose update needs a
    function XLA approximates its own way (``rsqrt``, ``exp``), other dtypes,
    and every leaf on GPU/TPU, several devices or with
    ``GRADTX_DISABLE_NATIVE=1`` take the plain step; the choice is made when
    the step is traced.

    The fast path gives bitwise the results of the plain step compiled by
    ``jax.jit`` (the kernel repeats XLA's operations, roundings, nested
    divisions and fused multiply-adds; where it cannot predict them, or where
    a kernel run against XLA on random data differs in one bit, it leaves the
    leaf to XLA; so are one-element leaves). It is differentiable (through the plain
    step) and works under ``jax.vmap`` (one kernel call per batch element;
    there XLA compiles the plain step differently, and the two agree to a
    rounding).

    Inside your own ``jax.jit``, donate params and state
    (``donate_argnums``) so the kernel updates them in place; without donation
    XLA must copy them first. Called outside ``jax.jit``, ``fused_apply`` jits
    itself, and ``donate=True`` donates ``params`` and ``state`` (the arrays
    passed in are then deleted).

    Args:
      tx: the optimizer, any gradtx transformation (others take the plain path).
      params: the current parameters.
      state: ``tx``'s state for ``params``.
      grads: the gradients, shaped like ``params``.
      donate: outside ``jax.jit`` only: let the step reuse the buffers of
        ``params`` and ``state`` for its results.

    Returns:
      ``(new_params, new_state)``.

    Raises:
      ValueError: as ``tx.update`` and ``apply_updates`` do, e.g. when the
        gradients do not match the parameters.

    Example:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> tx = gradtx.adamw(1e-3, weight_decay=1e-2)
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> step = jax.jit(gradtx.fused_apply, donate_argnums=(1, 2))
      >>> params, state = step(tx, params, state, grads)
      >>> params["w"][0]
      Array([0.99899, 0.99899], dtype=float32)
    """
    leaves = jax.tree.leaves((tx, params, state, grads))
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return _traced_apply(tx, params, state, grads)
    return _compiled(donate)(tx, params, state, grads)
