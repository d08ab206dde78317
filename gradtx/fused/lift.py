"""Which outputs of a step are per-element functions, and the loop that computes them.

A parameter leaf's new value and its new state leaves (moments, traces) are,
element by element, functions of the same element of a few arrays (the param,
its gradient, its state leaves) and of scalars (step counts, learning rates,
bias corrections, a global norm). :func:`lift` finds these outputs in a step's
:class:`~gradtx.fused.graph.Graph`, groups the outputs that read the same
arrays into one :class:`Component` (one leaf: one pass over its memory) and
writes each component as a :class:`Form`: the per-element program in a
canonical order, with the component's own arrays and scalars replaced by
positions, so every leaf of the same optimizer shares one compiled loop.

The program keeps XLA's arithmetic so that the kernel is bitwise the plain
path: a division by a scalar is a multiplication by the scalar's reciprocal
when that scalar has no other user (XLA's algebraic simplifier rewrites it so),
other divisions nest as the simplifier nests them (``(a / b) / c`` is
``a / (b * c)``, see ``_xla_divisions``), and an addition or subtraction of a
product is one fused multiply-add exactly where LLVM contracts one inside
XLA's loop for that output: the product has that one use, and of two products
the one LLVM's reassociation pass ranks first, in the loop that computes it
(see ``_loop_ranks``). Scalars computed from reductions (a global norm, trust
ratios) come from the same XLA operations in both steps. Where the model
knows it cannot follow XLA (a product by a constant one, which XLA folds;
``rsqrt`` where the kernel's form of it, the CPU's estimate and Newton steps,
was not found equal to XLA's on this machine) the output is left to XLA, and
``verify.py`` checks each kernel against XLA before use.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gradtx.fused.graph import Graph, Node, evaluate, postorder, reachable

_F32 = np.dtype(np.float32)
_BOOL = np.dtype(np.bool_)

# Elementwise primitives the kernel computes, by the number of operands. rsqrt
# only in the form found equal to XLA's on this machine (see ``lift``); not
# exp, log, tanh or pow, which XLA approximates its own way.
UNARY = frozenset(
    {"neg", "sqrt", "rsqrt", "abs", "sign", "square", "integer_pow", "not", "is_finite", "copy"}
)
UNARY |= {"convert_element_type", "copy_p"}
BINARY = frozenset({"add", "sub", "mul", "div", "max", "min", "and", "or"})
COMPARISONS = frozenset({"gt", "lt", "ge", "le", "eq", "ne"})

# How a scalar enters the loop: as it is, or as its reciprocal.
VALUE, RECIPROCAL = "value", "reciprocal"

Operand = tuple[str, ...]  # ("in", k), ("s", k), ("lit", text, dtype) or ("t", k)


class NotElementwiseError(Exception):
    """An output that the kernel cannot compute; XLA computes it."""


@dataclasses.dataclass(frozen=True)
class Instruction:
    """``dest = op(*operands)``; ``op`` is a primitive's name or fma/fms/fnma."""

    dest: int
    op: str
    operands: tuple[Operand, ...]
    dtype: str
    param: str = ""


@dataclasses.dataclass(frozen=True)
class Form:
    """A component's per-element program, independent of which leaf it is.

    Attributes:
      inputs: the number of arrays read.
      scalars: the number of scalars, in the order of ``Component.scalars``.
      scalar_dtypes: "float32" or "bool" for each scalar.
      programs: per output, the instructions and the operand that is the result.
      aliases: per output, the input it overwrites in place, or -1.
    """

    inputs: int
    scalars: int
    scalar_dtypes: tuple[str, ...]
    programs: tuple[tuple[tuple[Instruction, ...], Operand], ...]
    aliases: tuple[int, ...]


@dataclasses.dataclass
class Component:
    """Outputs of one leaf computed in one pass.

    Attributes:
      outputs: positions of the outputs among the step's flat outputs.
      inputs: positions of the arrays read among the step's flat inputs.
      scalars: the scalar nodes read, each with how it enters (VALUE or RECIPROCAL).
      form: the program, shared by every component of the same shape of step.
    """

    outputs: list[int]
    inputs: list[int]
    scalars: list[tuple[Node, str]]
    form: Form


def lift(
    graph: Graph, aliases: dict[int, int], rsqrt: Callable[[], str | None] = lambda: None
) -> list[Component]:
    """The components of ``graph``'s outputs that the kernel can compute.

    Args:
      graph: the traced step.
      aliases: for an output, the input it replaces (a param, a state leaf);
        the kernel then updates that input's buffer in place.
      rsqrt: gives the kernel's form of XLA's ``rsqrt`` found equal to it on
        this machine (the number of Newton steps after the CPU's estimate), or
        None: outputs that need ``rsqrt`` are then left to XLA. Called only
        for a step that needs it.

    Returns:
      The components; outputs not in any are left to XLA.
    """
    scalar_users = count_scalar_users(graph)
    separate = materialized(graph)
    cones: dict[int, tuple[list[Node], set[int]]] = {}
    # Arrays that XLA reads anyway, for an output the kernel cannot compute: a
    # kernel for the other outputs of that leaf would add a pass, not save one.
    read_by_xla: set[int] = set()
    for position, node in enumerate(graph.outputs):
        try:
            cones[position] = _cone(node)
        except NotElementwiseError:
            if node.kind == "op":
                read_by_xla |= _array_inputs(node)
    groups = _connected(cones)
    components = []
    # Leaves of the same structure (most leaves of most steps) share a form:
    # the first is lifted, the others reuse its form with their own inputs
    # and scalars.
    templates: dict[tuple[Any, ...], tuple[Form, list[tuple[int, str]]] | None] = {}
    constants: dict[int, Any] = {}
    for outputs in groups:
        if any(cones[position][1] & read_by_xla for position in outputs):
            continue
        inputs = sorted(set().union(*(cones[position][1] for position in outputs)))
        key, walked = _structure(
            graph, outputs, cones, inputs, aliases, scalar_users, separate, constants
        )
        if key in templates:
            template = templates[key]
            if template is not None:
                form, slots = template
                scalars = [(walked[index], how) for index, how in slots]
                components.append(Component(outputs, inputs, scalars, form))
            continue
        try:
            component = _component(
                graph, outputs, cones, inputs, aliases, scalar_users, separate, rsqrt
            )
        except NotElementwiseError:
            templates[key] = None
            continue
        components.append(component)
        position_of = {id(node): index for index, node in enumerate(walked)}
        if all(id(node) in position_of for node, _ in component.scalars):
            slots = [(position_of[id(node)], how) for node, how in component.scalars]
            templates[key] = (component.form, slots)
    return components


def _structure(
    graph: Graph,
    outputs: list[int],
    cones: dict[int, tuple[list[Node], set[int]]],
    inputs: list[int],
    aliases: dict[int, int],
    scalar_users: dict[int, int],
    separate: set[int],
    constants: dict[int, Any],
) -> tuple[tuple[Any, ...], list[Node]]:
    """What ``_component`` reads of these outputs, with the leaf's own values
    replaced by positions; and the scalars, in the order the key meets them.

    Two components with the same key get the same form: the operations, their
    order, which are computed in loops of their own, the scalars' dtypes,
    constants and whether each has one user (XLA's reciprocal rewrite) are all
    in the key.
    """
    input_slot = {index: slot for slot, index in enumerate(inputs)}
    local: dict[int, int] = {}
    walked: list[Node] = []
    scalar_index: dict[int, int] = {}
    parts: list[Any] = []

    def constant(node: Node) -> Any:
        if id(node) not in constants:
            value = _constant(node)
            constants[id(node)] = None if value is None else (value.tobytes(), str(value.dtype))
        return constants[id(node)]

    def code(arg: Node) -> tuple[Any, ...]:
        if id(arg) in local:
            return ("t", local[id(arg)])
        if arg.kind == "input" and arg.shape:
            return ("in", input_slot.get(arg.index, -1), str(arg.dtype))
        if arg.kind == "literal":
            value = np.asarray(arg.value)
            return ("lit", value.tobytes(), str(value.dtype), value.shape)
        folded = constant(arg) if not arg.shape else None
        if folded is not None:
            return ("c", *folded)
        if id(arg) not in scalar_index:
            scalar_index[id(arg)] = len(walked)
            walked.append(arg)
        users = scalar_users.get(id(arg), 0) == 1
        return ("s", scalar_index[id(arg)], users, str(arg.dtype), arg.shape)

    for position in outputs:
        order, _ = cones[position]
        for node in order:
            if id(node) in local:
                parts.append(("again", local[id(node)]))
                continue
            local[id(node)] = len(local)
            params = (node.params.get("y"), str(node.params.get("new_dtype")))
            arguments = tuple(code(arg) for arg in node.args)
            parts.append((node.name, str(node.dtype), params, arguments, id(node) in separate))
        target = aliases.get(position, -1)
        parts.append(("output", code(graph.outputs[position]), input_slot.get(target, -1)))
    return tuple(parts), walked


def _array_inputs(node: Node) -> set[int]:
    """The arrays ``node`` reads element by element (not through a reduction).

    A reduction (a global norm) is computed by XLA in the one-pass step too,
    as a scalar for the kernels, so the arrays it reads do not count.
    """
    reached = reachable([node], lambda top: bool(top.shape))
    return {top.index for top in reached if top.kind == "input" and top.shape}


def count_scalar_users(graph: Graph) -> dict[int, int]:
    """How many operations read each scalar node, over the whole step."""
    users: dict[int, int] = {}
    for node in reachable(graph.outputs, lambda _: True):
        for arg in node.args:
            if not arg.shape:
                users[id(arg)] = users.get(id(arg), 0) + 1
    return users


def _cone(output: Node) -> tuple[list[Node], set[int]]:
    """The op nodes computing ``output`` (operands first) and the inputs it reads."""
    shape = output.shape
    if output.kind != "op" or output.dtype != _F32 or int(np.prod(shape)) <= 1:
        raise NotElementwiseError
    order, _ = postorder(output, lambda node: node.kind == "op" and node.shape == shape)
    inputs: set[int] = set()
    for node in order:
        _check_op(node)
        for arg in node.args:
            if not arg.shape or (arg.kind == "literal" and arg.value.size == 1):
                _check_scalar(arg)
            elif arg.shape != shape:
                raise NotElementwiseError
            elif arg.kind == "input":
                if arg.dtype != _F32:
                    raise NotElementwiseError
                inputs.add(arg.index)
            elif arg.kind != "op":
                raise NotElementwiseError
    return order, inputs


def _check_op(node: Node) -> None:
    name = node.name
    if node.dtype not in (_F32, _BOOL) or node.primitive.multiple_results:
        raise NotElementwiseError
    if name in UNARY or name in BINARY or name in COMPARISONS:
        pass
    elif name == "select_n" and len(node.args) == 3:
        pass
    elif name == "broadcast_in_dim" and not node.args[0].shape:
        pass  # a scalar, read in every element (jnp.zeros_like, jnp.where)
    else:
        raise NotElementwiseError
    # JAX emits x**y as a chain of products; beyond y = 2 they would need
    # their own contraction rules.
    if name == "integer_pow" and node.params["y"] not in (1, 2):
        raise NotElementwiseError
    if name == "convert_element_type" and node.args[0].dtype not in (_F32, _BOOL):
        raise NotElementwiseError
    for arg in node.args:
        if arg.dtype not in (_F32, _BOOL):
            raise NotElementwiseError


def _check_scalar(node: Node) -> None:
    # A scalar computed from a reduction (a global norm, a trust ratio) is
    # fine: the one-pass step computes it with the same XLA operations.
    if node.dtype not in (_F32, _BOOL):
        raise NotElementwiseError


def _connected(cones: dict[int, tuple[list[Node], set[int]]]) -> list[list[int]]:
    """Outputs grouped so that two outputs reading the same input share a group."""
    parent = {position: position for position in cones}

    def root(position: int) -> int:
        while parent[position] != position:
            parent[position] = parent[parent[position]]
            position = parent[position]
        return position

    reader: dict[int, int] = {}
    for position, (_, inputs) in cones.items():
        for index in inputs:
            if index in reader:
                parent[root(position)] = root(reader[index])
            else:
                reader[index] = position
    groups: dict[int, list[int]] = {}
    for position in cones:
        groups.setdefault(root(position), []).append(position)
    return list(groups.values())


def _component(
    graph: Graph,
    outputs: list[int],
    cones: dict[int, tuple[list[Node], set[int]]],
    inputs: list[int],
    aliases: dict[int, int],
    scalar_users: dict[int, int],
    separate: set[int],
    rsqrt: Callable[[], str | None],
) -> Component:
    shapes = {graph.outputs[position].shape for position in outputs}
    if len(shapes) != 1:
        raise NotElementwiseError
    if not inputs:
        raise NotElementwiseError
    input_slot = {index: slot for slot, index in enumerate(inputs)}
    scalars: list[tuple[Node, str]] = []
    scalar_slot: dict[tuple[int, str], int] = {}

    def scalar(node: Node, how: str) -> Operand:
        key = (id(node), how)
        if key not in scalar_slot:
            scalar_slot[key] = len(scalars)
            scalars.append((node, how))
        return ("s", str(scalar_slot[key]))

    programs = []
    for position in outputs:
        order, _ = cones[position]
        programs.append(
            _program(
                order, graph.outputs[position], input_slot, scalar, scalar_users, separate, rsqrt
            )
        )
    used_aliases = []
    for position in outputs:
        target = aliases.get(position)
        slot = input_slot.get(target, -1) if target is not None else -1
        used_aliases.append(slot if slot not in used_aliases else -1)
    form = Form(
        inputs=len(inputs),
        scalars=len(scalars),
        scalar_dtypes=tuple(str(node.dtype) for node, _ in scalars),
        programs=tuple(programs),
        aliases=tuple(used_aliases),
    )
    return Component(outputs, inputs, scalars, form)


def _program(
    order: Sequence[Node],
    output: Node,
    input_slot: dict[int, int],
    scalar: Callable[[Node, str], Operand],
    scalar_users: dict[int, int],
    separate: set[int],
    rsqrt: Callable[[], str | None],
) -> tuple[tuple[Instruction, ...], Operand]:
    """The instructions computing ``output``, with XLA's contractions."""

    def by_reciprocal(node: Node) -> bool:
        return _is_scalar_division(node) and scalar_users.get(id(node.args[1]), 0) == 1

    order, output, separate = _xla_divisions(order, output, by_reciprocal, separate)
    uses: dict[int, int] = {}
    for node in order:
        for arg in node.args:
            uses[id(arg)] = uses.get(id(arg), 0) + 1
    local = {id(node): k for k, node in enumerate(order)}
    ranks = _loop_ranks(output, separate)

    def operand(arg: Node) -> Operand:
        constant = _constant(arg)
        if constant is not None:
            return literal_value(constant)
        if arg.kind == "op" and arg.shape:
            return ("t", str(local[id(arg)]))
        if arg.kind == "input" and arg.shape:
            return ("in", str(input_slot[arg.index]))
        if arg.kind == "literal":
            return literal(arg)
        return scalar(arg, VALUE)

    def literal(arg: Node) -> Operand:
        return literal_value(np.asarray(arg.value))

    def literal_value(value: np.ndarray) -> Operand:
        if value.dtype == _BOOL:
            return ("lit", "true" if bool(value.reshape(-1)[0]) else "false", "bool")
        return ("lit", float(np.float32(value.reshape(-1)[0])).hex(), "float32")

    def factors(arg: Node) -> tuple[Operand, Operand] | None:
        """The factors of a product LLVM may contract into its one user, else None.

        Products of two scalars are computed before the loop and are never
        contracted; a division by a scalar is a product by its reciprocal.
        """
        if arg.kind != "op" or not arg.shape or uses.get(id(arg), 0) != 1:
            return None
        if arg.name == "mul":
            return operand(arg.args[0]), operand(arg.args[1])
        if arg.name == "square" or (arg.name == "integer_pow" and arg.params["y"] == 2):
            return operand(arg.args[0]), operand(arg.args[0])
        if by_reciprocal(arg):
            return operand(arg.args[0]), scalar(arg.args[1], RECIPROCAL)
        return None

    instructions = []
    for node in order:
        dest = local[id(node)]
        dtype = str(node.dtype)
        name = node.name
        args = node.args
        left_factors = factors(args[0]) if name in ("add", "sub") else None
        right_factors = factors(args[1]) if name in ("add", "sub") else None
        rank = ranks.get(id(node), {})
        if left_factors and right_factors:
            # Two products: LLVM contracts the one its reassociation pass puts
            # first, the lower-ranked; the left one when their ranks tie,
            # unless the left one has a factor the loop negates (a traced
            # -lr): LLVM then makes the sum a subtraction of that product
            # from the other, and contracts the other (RMSProp's Nesterov
            # trace, measured). verify.py checks every such choice.
            left_rank, right_rank = rank.get(id(args[0]), 0), rank.get(id(args[1]), 0)
            tie_goes_right = name == "add" and left_rank == right_rank and _negated(args[0])
            if right_rank < left_rank or tie_goes_right:
                left_factors = None
        if left_factors:
            right_factors = None
        if left_factors:
            op = "fma" if name == "add" else "fms"
            ops = (*left_factors, operand(args[1]))
            instructions.append(Instruction(dest, op, ops, dtype))
        elif right_factors:
            op = "fma" if name == "add" else "fnma"
            ops = (*right_factors, operand(args[0]))
            instructions.append(Instruction(dest, op, ops, dtype))
        elif by_reciprocal(node):
            product = (operand(args[0]), scalar(args[1], RECIPROCAL))
            instructions.append(Instruction(dest, "mul", product, dtype))
        else:
            param = ""
            if name == "integer_pow":
                param = str(node.params["y"])
            elif name == "rsqrt":
                steps = rsqrt()
                if steps is None:
                    raise NotElementwiseError
                param = steps
            elif name == "convert_element_type":
                param = f"{args[0].dtype}->{np.dtype(node.params['new_dtype'])}"
            instructions.append(
                Instruction(dest, name, tuple(operand(a) for a in args), dtype, param)
            )
    return tuple(instructions), operand(output)


def _xla_divisions(
    order: Sequence[Node],
    output: Node,
    by_reciprocal: Callable[[Node], bool],
    separate: set[int],
) -> tuple[list[Node], Node, set[int]]:
    """``output``'s operations with divisions nested as XLA's simplifier nests them.

    A division that stays a division (not a product by a scalar's reciprocal)
    absorbs divisions among its operands: ``(a / b) / c`` is ``a / (b * c)``,
    ``a / (b / c)`` is ``(a * c) / b`` and ``(a / b) / (c / d)`` is
    ``(a * d) / (b * c)``, each product with the operands in that order; a
    division by an array's square root is a product by its ``rsqrt`` (and by
    an ``rsqrt``, a product by the square root). A product by a constant one
    is its other operand.

    Returns:
      The new operations (operands first), the new output node and
      ``separate`` with the rebuilt nodes of its members.
    """
    rebuilt: dict[int, Node] = {}
    separate = set(separate)

    def divided(node: Node) -> bool:
        return node.kind == "op" and node.name == "div" and bool(node.shape)

    def op(primitive: Any, like: Node, *args: Node) -> Node:
        return Node("op", like.shape, like.dtype, primitive=primitive, args=args)

    for node in order:
        args = tuple(rebuilt.get(id(arg), arg) for arg in node.args)
        new = node if args == node.args else dataclasses.replace(node, args=args)
        other = _other_than_one(args) if node.name == "mul" else None
        if other is not None and other.shape == node.shape:
            # x * 1 is x (clip_by_global_norm(1.0) closed over).
            new = other
        elif divided(node) and not by_reciprocal(node):
            top, bottom = args
            top_divided = divided(top) and not by_reciprocal(top)
            bottom_divided = divided(bottom) and not by_reciprocal(bottom)
            if bottom.kind == "op" and bottom.name in ("sqrt", "rsqrt") and bottom.shape:
                # a / sqrt(b) is a * rsqrt(b), and a / rsqrt(b) is a * sqrt(b).
                inverse = jax.lax.rsqrt_p if bottom.name == "sqrt" else jax.lax.sqrt_p
                new = op(jax.lax.mul_p, node, top, op(inverse, bottom, *bottom.args))
            elif top_divided and bottom_divided:
                a, b = top.args
                c, d = bottom.args
                new = op(
                    jax.lax.div_p,
                    node,
                    op(jax.lax.mul_p, node, a, d),
                    op(jax.lax.mul_p, node, b, c),
                )
            elif top_divided:
                a, b = top.args
                new = op(jax.lax.div_p, node, a, op(jax.lax.mul_p, node, b, bottom))
            elif bottom_divided:
                b, c = bottom.args
                new = op(jax.lax.div_p, node, op(jax.lax.mul_p, node, top, c), b)
        if new is not node:
            rebuilt[id(node)] = new
            if id(node) in separate:
                separate.add(id(new))
    output = rebuilt.get(id(output), output)
    operations, _ = postorder(output, lambda node: node.kind == "op" and node.shape == output.shape)
    return operations, output, separate


# Scalar operations XLA fuses into the loop that uses them (others reach the
# loop as a parameter: reductions, divisions, square roots, powers, ...).
_FUSED_SCALAR_OPS = frozenset(
    {"add", "sub", "mul", "neg", "max", "min", "select_n", "convert_element_type"}
    | {"and", "or", "not"}
    | COMPARISONS
)
# Operations that LLVM does not count in a value's rank (or that vanish).
_RANKLESS = frozenset({"neg", "not", "convert_element_type", "copy", "copy_p", "broadcast_in_dim"})
# Operations that leave a value as it is when the dtype does not change.
_NO_OPS = frozenset({"convert_element_type", "copy", "copy_p"})
# Array operations XLA does not duplicate into several loops: computed once,
# they reach each loop that uses them as a parameter.
_EXPENSIVE = frozenset({"div", "sqrt", "rsqrt"})


def materialized(graph: Graph) -> set[int]:
    """The array values XLA computes in a loop of their own and others load.

    The step's outputs (a new moment that the new param also reads), and the
    expensive values that more than one of XLA's loops reads. A loop loads
    another output instead of computing it again, so what lies beneath that
    output is not read by this loop (RMSProp with momentum: the new params
    load the new trace, and only the trace's loop reads the ``rsqrt``).
    """

    def array_op(node: Node) -> bool:
        return node.kind == "op" and bool(node.shape)

    chains = {id(node): _stored_chain(node) for node in graph.outputs}
    outputs = set().union(*chains.values())
    # The outputs' loops, and the reductions' (loops of their own too).
    roots = list(graph.outputs) + [
        node
        for node in reachable(graph.outputs, lambda _: True)
        if node.kind == "op" and not node.shape and any(arg.shape for arg in node.args)
    ]
    readers: dict[int, int] = {}
    for root in roots:
        own = chains.get(id(root), set())
        start = [root] if root.shape else [arg for arg in root.args if arg.shape]

        def computed_here(node: Node, own: set[int] = own) -> bool:
            return array_op(node) and (id(node) in own or id(node) not in outputs)

        for node in reachable(start, computed_here):
            if computed_here(node) and node.name in _EXPENSIVE:
                readers[id(node)] = readers.get(id(node), 0) + 1
    return outputs | {key for key, count in readers.items() if count > 1}


def _stored_chain(node: Node) -> set[int]:
    """``node`` and, beneath casts that change nothing (XLA removes them), what is stored."""
    values: set[int] = set()
    while node.kind == "op" and node.shape:
        values.add(id(node))
        if not _changes_nothing(node):
            break
        node = node.args[0]
    return values


def _changes_nothing(node: Node) -> bool:
    """Whether ``node`` is a cast or copy to its operand's dtype (XLA removes it)."""
    return node.kind == "op" and node.name in _NO_OPS and node.args[0].dtype == node.dtype


def _loop_ranks(output: Node, separate: set[int]) -> dict[int, dict[int, int]]:
    """For each operation of ``output``, the ranks of the XLA loop that computes it.

    A value in ``separate`` (another output, say a new moment that the new
    param reads) is computed in its own loop, with that loop's ranks, and
    only loaded by the loops that read it; the kernel computes it once, as
    its own loop would.
    """
    ranks_of: dict[int, dict[int, int]] = {}
    pending, done = [output], set()
    while pending:
        root = pending.pop()
        if id(root) in done:
            continue
        done.add(id(root))
        rank, operations, stops = _llvm_ranks(root, separate)
        for node in operations:
            ranks_of.setdefault(id(node), rank)
        pending.extend(node for node in stops if node.kind == "op" and id(node) in separate)
    return ranks_of


def _llvm_ranks(output: Node, separate: set[int]) -> tuple[dict[int, int], list[Node], list[Node]]:
    """The rank LLVM's reassociation pass gives each value of ``output``'s loop.

    XLA's loop body loads the fusion's scalar parameters first, then each
    array parameter where it is first used, operand by operand, left first
    (values in ``separate`` are parameters: XLA computes them in a loop of
    their own); the pass numbers loads in that order, and an operation ranks
    one above its highest-ranked operand. Constants rank 0. The ranks decide
    which of two products an addition contracts.

    Returns:
      The ranks, the operations of the loop (operands first) and the values
      it loads.
    """

    def emitted_in_loop(node: Node) -> bool:
        inlined = bool(node.shape) or node.name in _FUSED_SCALAR_OPS
        return node.kind == "op" and inlined and (node is output or id(node) not in separate)

    operations, stops = postorder(output, emitted_in_loop)
    loads = [node for node in stops if node.kind != "literal"]
    scalars = [node for node in loads if not node.shape]
    arrays = [node for node in loads if node.shape]
    rank = {id(node): position + 1 for position, node in enumerate(scalars + arrays)}
    for node in operations:
        highest = max((rank.get(id(arg), 0) for arg in node.args), default=0)
        rank[id(node)] = highest + (0 if node.name in _RANKLESS else 1)
    return rank, operations, stops


def scalars_loaded(nodes: Sequence[Node]) -> list[Node]:
    """The scalars an XLA loop loads to compute the scalar ``nodes``.

    XLA fuses the cheap scalar operations (``_FUSED_SCALAR_OPS``) into every
    loop that reads them, so the loop loads what lies beneath: the step's
    scalar inputs and the results of other operations (reductions, powers,
    divisions). Values XLA folds from literals are not loaded.
    """

    def fused(node: Node) -> bool:
        return node.kind == "op" and not node.shape and node.name in _FUSED_SCALAR_OPS

    return [
        node
        for node in reachable(nodes, fused)
        if not fused(node) and node.kind != "literal" and _constant(node) is None
    ]


def _negated(product: Node) -> bool:
    """Whether a factor of ``product`` is a scalar the loop negates (``x * -1``)."""

    def minus_one(node: Node) -> bool:
        constant = _constant(node)
        return constant is not None and float(constant) == -1.0

    for factor in product.args:
        while _changes_nothing(factor):
            factor = factor.args[0]
        if factor.kind == "op" and not factor.shape:
            if factor.name == "neg" or (factor.name == "mul" and any(map(minus_one, factor.args))):
                return True
    return False


def _constant(node: Node) -> np.ndarray | None:
    """The value of a scalar computed from literals only (XLA folds it), else None."""
    if node.shape:
        return None
    if node.kind == "literal":
        return np.asarray(node.value)
    if node.kind != "op" or node.name not in _FUSED_SCALAR_OPS:
        return None
    if node.folded:
        return node.folded[0]
    values = [_constant(arg) for arg in node.args]
    if any(value is None for value in values):
        return None
    # Evaluated now (even inside a trace): it depends on literals only.
    with jax.ensure_compile_time_eval():
        (result,) = evaluate([node], [])
    constant = np.asarray(result)
    node.folded = (constant,)
    return constant


def _other_than_one(args: tuple[Node, ...]) -> Node | None:
    """In a product of two, the factor beside a constant one, or None."""
    if _is_one(args[0]):
        return args[1]
    if _is_one(args[1]):
        return args[0]
    return None


def _is_one(node: Node) -> bool:
    """Whether ``node`` is a scalar constant one (a product by it is folded away)."""
    value = _constant(node)
    return value is not None and value.dtype == _F32 and float(value) == 1.0


def _is_scalar_division(node: Node) -> bool:
    """``array / scalar`` for a computed scalar (a literal divisor stays a division)."""
    return (
        node.kind == "op"
        and node.name == "div"
        and bool(node.args[0].shape)
        and not node.args[1].shape
        and node.args[1].kind != "literal"
    )
