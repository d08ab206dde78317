"""C++ source of a one-pass kernel for a :class:`~gradtx.fused.lift.Form`.

The per-element program comes from the step's own jaxpr (see ``lift.py``);
this module only spells it in C++ around the shared runtime (``runtime.h``):
an XLA FFI handler that takes a buffer of scalars (one row per leaf), then
every leaf's arrays, and runs one loop per leaf that loads each input element
once, evaluates every output's program and stores each output once.
"""

import hashlib

from gradtx.fused.lift import Form, Instruction, Operand

_BINARY_OPERATORS = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
    "gt": ">",
    "lt": "<",
    "ge": ">=",
    "le": "<=",
    "eq": "==",
    "ne": "!=",
    "and": "&&",
    "or": "||",
}
_FUNCTIONS = {
    "sqrt": "std::sqrt",
    "abs": "std::fabs",
    "sign": "gradtx::xla_sign",
    "max": "gradtx::xla_max",
    "min": "gradtx::xla_min",
    "is_finite": "std::isfinite",
}


def symbol(form: Form) -> str:
    """The handler's C symbol (and FFI target name): a digest of the form."""
    return "GradtxStep_" + hashlib.sha256(repr(form).encode()).hexdigest()[:20]


def source(form: Form) -> str:
    """The C++ translation unit that defines :func:`symbol` (``form``)'s handler."""
    name = symbol(form)
    inputs, outputs = form.inputs, len(form.programs)
    aliased = {slot: output for output, slot in enumerate(form.aliases) if slot >= 0}
    # The pointer each input is read from: updated in place, or read only.
    reads = [f"io{slot}" if slot in aliased else f"in{slot}" for slot in range(inputs)]
    # Each array the leaf loop touches: its parameter, and what the handler passes.
    pointers = []
    for slot in range(inputs):
        if slot in aliased:
            pointers.append(
                (f"float* __restrict io{slot}", f"outs[{aliased[slot]}].out[leaf] + lo")
            )
        else:
            pointers.append((f"const float* __restrict in{slot}", f"ins[{slot}].in[leaf] + lo"))
    for output in range(outputs):
        if form.aliases[output] < 0:
            pointers.append((f"float* __restrict out{output}", f"outs[{output}].out[leaf] + lo"))
    parameters = ["const float* s", *(parameter for parameter, _ in pointers), "int64_t n"]
    call = ["s + leaf * kScalars", *(argument for _, argument in pointers), "hi - lo"]

    lines = [f"void {name}Leaf({', '.join(parameters)}) {{"]
    for k, dtype in enumerate(form.scalar_dtypes):
        if dtype == "bool":
            lines.append(f"  const bool s{k} = s[{k}] != 0.0f;")
        else:
            lines.append(f"  const float s{k} = s[{k}];")
    targets = [
        f"io{form.aliases[output]}" if form.aliases[output] >= 0 else f"out{output}"
        for output in range(outputs)
    ]
    if _uses_rsqrt(form):
        # XLA's rsqrt is the CPU's vector estimate refined; the compiler would
        # not vectorize the scalar intrinsic, so the vector one runs on blocks.
        lines += _blocked_loop(form, reads, targets)
        lines.append("  for (; i < n; ++i) {")
    else:
        lines.append("  for (int64_t i = 0; i < n; ++i) {")
    for slot, pointer in enumerate(reads):
        lines.append(f"    const float x{slot} = {pointer}[i];")
    for output, (instructions, _) in enumerate(form.programs):
        for instruction in instructions:
            lines.append("    " + _statement(output, instruction))
    for output, (_, result) in enumerate(form.programs):
        lines.append(f"    {targets[output]}[i] = {_operand(output, result)};")
    lines += ["  }", "}", ""]

    copies = "".join(
        f"      gradtx::CopyIfDistinct(io[{slot}], leaf, lo, hi);\n" for slot in sorted(aliased)
    )
    io_setup = "".join(
        f"  io[{slot}].in = ins[{slot}].in;\n  io[{slot}].out = outs[{output}].out;\n"
        for slot, output in sorted(aliased.items())
    )
    lines.append(
        _HANDLER.format(
            name=name,
            inputs=inputs,
            outputs=outputs,
            scalars=form.scalars,
            io_setup=io_setup,
            copies=copies,
            call=", ".join(call),
        )
    )
    return _PRELUDE + "\n".join(lines)


def _uses_rsqrt(form: Form) -> bool:
    return any(i.op == "rsqrt" for instructions, _ in form.programs for i in instructions)


# Elements per block of the blocked loop: a multiple of the 8 lanes of
# xla_rsqrt8, long enough that each per-instruction loop vectorizes (a loop of
# 8 is unrolled into scalar code), short enough that the block's values stay
# in registers and the L1 cache. Measured on RMSProp, 10M params: 32 or 64
# elements 5.8-6.6 ms, 256 8.1-8.9 ms, 1,024 9.0-9.3 ms (XLA: 8.6-10.3 ms).
_BLOCK = 32


def _blocked_loop(form: Form, reads: list[str], targets: list[str]) -> list[str]:
    """The leaf loop over whole blocks, each value an array of ``_BLOCK`` elements."""
    lanes = f"for (int k = 0; k < {_BLOCK}; ++k)"
    lines = ["  int64_t i = 0;", f"  for (; i + {_BLOCK} <= n; i += {_BLOCK}) {{"]
    for slot, pointer in enumerate(reads):
        lines.append(f"    float xb{slot}[{_BLOCK}];")
        lines.append(f"    {lanes} xb{slot}[k] = {pointer}[i + k];")
    # Outputs recompute the values they share (a new moment that the new
    # param reads): the compiler merges them in scalar code, not in arrays, so
    # each distinct instruction is emitted once and the others refer to it.
    same: dict[tuple[int, str], str] = {}  # (output, temporary) -> array emitted
    emitted: dict[tuple[object, ...], str] = {}

    def array(output: int, operand: Operand) -> str:
        """The block array of a temporary or an input."""
        if operand[0] == "t":
            return same[(output, operand[1])]
        return f"xb{operand[1]}"

    def element(output: int, operand: Operand) -> str:
        if operand[0] in ("t", "in"):
            return array(output, operand) + "[k]"
        return _operand(output, operand)

    live = {
        (output, operand[1])
        for output, (instructions, result) in enumerate(form.programs)
        for operand in [result, *(o for i in instructions for o in i.operands)]
        if operand[0] == "t"
    }
    for output, (instructions, _) in enumerate(form.programs):
        for instruction in instructions:
            if (output, str(instruction.dest)) not in live:
                continue  # a product contracted into a multiply-add
            operands = [element(output, operand) for operand in instruction.operands]
            key = (instruction.op, tuple(operands), instruction.dtype, instruction.param)
            if key in emitted:
                same[(output, str(instruction.dest))] = emitted[key]
                continue
            dest = f"t{output}_{instruction.dest}"
            same[(output, str(instruction.dest))] = emitted[key] = dest
            ctype = "bool" if instruction.dtype == "bool" else "float"
            lines.append(f"    {ctype} {dest}[{_BLOCK}];")
            if instruction.op == "rsqrt" and instruction.operands[0][0] in ("in", "t"):
                source = array(output, instruction.operands[0])
                lines.append(
                    f"    for (int k = 0; k < {_BLOCK}; k += 8) "
                    f"gradtx::xla_rsqrt8<{instruction.param}>({source} + k, {dest} + k);"
                )
            else:
                value = _expression(instruction, operands)
                lines.append(f"    {lanes} {dest}[k] = {value};")
    for output, (_, result) in enumerate(form.programs):
        lines.append(f"    {lanes} {targets[output]}[i + k] = {element(output, result)};")
    lines.append("  }")
    return lines


def _operand(output: int, operand: Operand) -> str:
    kind = operand[0]
    if kind == "in":
        return f"x{operand[1]}"
    if kind == "s":
        return f"s{operand[1]}"
    if kind == "t":
        return f"t{output}_{operand[1]}"
    text, dtype = operand[1], operand[2]
    if dtype == "bool":
        return text
    if text in ("inf", "-inf"):
        return ("-" if text.startswith("-") else "") + "std::numeric_limits<float>::infinity()"
    if text == "nan":
        return "std::numeric_limits<float>::quiet_NaN()"
    return f"{text}f"


def _statement(output: int, instruction: Instruction) -> str:
    ops = [_operand(output, operand) for operand in instruction.operands]
    ctype = "bool" if instruction.dtype == "bool" else "float"
    return f"const {ctype} t{output}_{instruction.dest} = {_expression(instruction, ops)};"


def _expression(instruction: Instruction, ops: list[str]) -> str:
    """The C++ expression of ``instruction`` over its spelled-out operands."""
    op = instruction.op
    if op == "fma":
        value = f"gradtx::fma_or_madd({ops[0]}, {ops[1]}, {ops[2]})"
    elif op == "fms":
        value = f"gradtx::fma_or_madd({ops[0]}, {ops[1]}, -({ops[2]}))"
    elif op == "fnma":
        value = f"gradtx::fma_or_madd(-({ops[0]}), {ops[1]}, {ops[2]})"
    elif op in _BINARY_OPERATORS:
        value = f"{ops[0]} {_BINARY_OPERATORS[op]} {ops[1]}"
    elif op in _FUNCTIONS:
        value = f"{_FUNCTIONS[op]}({', '.join(ops)})"
    elif op == "rsqrt":
        value = f"gradtx::xla_rsqrt<{instruction.param}>({ops[0]})"
    elif op == "neg":
        value = f"-{ops[0]}"
    elif op == "not":
        value = f"!{ops[0]}"
    elif op in ("square", "integer_pow") and (op == "square" or instruction.param == "2"):
        value = f"{ops[0]} * {ops[0]}"
    elif op == "select_n":
        value = f"{ops[0]} ? {ops[2]} : {ops[1]}"
    elif op == "convert_element_type" and instruction.param == "float32->bool":
        value = f"{ops[0]} != 0.0f"
    elif op == "convert_element_type" and instruction.param == "bool->float32":
        value = f"({ops[0]} ? 1.0f : 0.0f)"
    elif op in ("convert_element_type", "copy", "copy_p", "integer_pow", "broadcast_in_dim"):
        value = ops[0]
    else:  # lift.py admits only the operations above
        raise ValueError(f"no C++ for {op}")
    return value


_PRELUDE = """// Generated by gradtx/fused/codegen.py from an optimizer step's jaxpr.
#include <cmath>
#include <limits>

#include "runtime.h"

namespace {

"""

_HANDLER = """constexpr size_t kInputs = {inputs}, kOutputs = {outputs}, kScalars = {scalars};

ffi::Error {name}Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                      ffi::RemainingArgs args, ffi::RemainingRets rets) {{
  const size_t leaves = args.size() / kInputs;
  if (args.size() != kInputs * leaves || rets.size() != kOutputs * leaves ||
      scalars.element_count() != kScalars * leaves + 1) {{
    return ffi::Error::InvalidArgument("gradtx fused kernel: wrong number of buffers");
  }}
  std::vector<int64_t> offsets;
  const std::vector<int64_t> sizes = gradtx::LeafSizes(args, 0, leaves, offsets);
  gradtx::Group ins[kInputs], outs[kOutputs], io[kInputs];
  for (size_t k = 0; k < kInputs; ++k) {{
    if (auto e = gradtx::CollectInputs(args, k * leaves, leaves, &sizes, ins[k]); e.failure()) {{
      return e;
    }}
  }}
  for (size_t m = 0; m < kOutputs; ++m) {{
    if (auto e = gradtx::CollectOutputs(rets, m * leaves, leaves, outs[m]); e.failure()) {{
      return e;
    }}
  }}
{io_setup}  const float* s = scalars.typed_data();
  gradtx::ParallelChunks(pool, offsets.back(), [&](int64_t begin, int64_t end) {{
    gradtx::ForLeavesIn(offsets, begin, end, [&](size_t leaf, int64_t lo, int64_t hi) {{
{copies}      {name}Leaf({call});
    }});
  }});
  return ffi::Error::Success();
}}

}}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL({name}, {name}Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets());
"""
