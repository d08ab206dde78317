"""The contract every registered name keeps, checked on its examples.

One test per registered name (``gradtx.registry.names()``) checks the name's
first example in ``config_examples.EXAMPLES`` that fits the parameter tree
``P`` and reports every broken check at once, one line each, so a fix in the
core shows which names it repaired. A name without an example fails.

Transformations, on ``P = {"w": f32[3, 2], "b": f32[2]}`` (also in bfloat16,
and with an extra frozen leaf ``{"frozen": None}``), ``update`` always given
params (and the loss as ``value=`` for the names in ``EXTRA_ARGS``), two steps
from ``init`` (the second at the params the first produced),
with ``h`` the first floating-point leaf of the transformation:

1. jit: one jitted step taking ``(tx, state, grads, params)``, ``tx`` a pytree.
2. vmap over three values of ``h`` (jitted): each batch member equals the
   jitted step run with that value alone.
3. grad: ``d sum(updates) / dh`` after two steps is finite and agrees with a
   central finite difference, both in float64 (``jax.enable_x64``); where a
   state leaf is stored narrower than float64 (``mu_dtype="bfloat16"``) the
   difference would measure that rounding, so only finiteness is checked.
4. the updates have the params' tree, shapes and dtypes (those of the
   gradients, in float32 and bfloat16); each new state has init's tree,
   shapes, dtypes and weak types (``lax.scan`` refuses a carry whose types
   change).
5. finite outputs for finite inputs.
6. config and repr round trips give an equal value with identical updates.
7. changing ``h`` does not retrace the jitted step.
8. int32 scalars of the state set to 2**31 - 1 stay there (counters that
   restart within a period, PERIODIC_COUNTERS, stay non-negative); outputs
   stay finite.
9. eager results equal ``jax.jit(tx.update)``'s bit for bit (float32).
10. None leaves pass through: the update is None where the gradient is (on the
    first example that fits the parameters with the None leaf).
11. ``jax.eval_shape(tx.init, params)`` on abstract params gives init's tree,
    shapes and dtypes (what ``gradtx.state_shardings`` and checkpoint restores
    read).

A transformation's eager ``update`` runs compiled (gradtx.base), so 9 is bit
for bit. "Equal" in 2 and in the schedules' eager check means within
``VMAP_ULP`` / ``EAGER_JIT_ULP`` units in the last place: under ``jax.jit``
XLA contracts ``a * b + c`` into one fused multiply-add where op-by-op JAX
rounds twice, and a batched program fuses and vectorizes differently from an
unbatched one. The bounds are the largest such differences measured on the
catalogue (3 for warmup_cosine_decay_schedule at a cancellation, 3 for vmap).

Schedules: jit, eager == jit, vmap over and grad with respect to ``h``, config
and repr round trips, at steps on both sides of the examples' boundaries. Other
values are told apart by what their call takes: masks and labels (params) get
round trips and a call giving a tree of Python bools or strings shaped like the
params (also with the None leaf, and on traced params); ``should_skip_update_fn``
values (updates, gradient_step, params) get round trips, jit, eager == jit and a
call with the None leaf. A name's other examples get the round trips only.

An example fits a parameter tree unless a tree it holds (a mask or labels
tree: anything exposing ``.tree``, such as ``gradtx.masks.FrozenTree``) is not a
prefix of that tree's structure.

Speed: every name shares each jitted function (they retrace per structure
anyway); an example costs four compilations (float32, bfloat16, vmap, grad),
and the None-leaf step runs eagerly on primitives the eager check compiled.
"""

import collections
import dataclasses
import functools
import inspect
import json
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from config_examples import EXAMPLES

import gradtx
from gradtx import registry

# Collected at import, before any test or doctest registers a class of its own.
REGISTERED = registry.names()
NAMESPACE = {name: getattr(gradtx, name) for name in gradtx.__all__}

INT32_MAX = 2**31 - 1
# The vmapped values of h, as multiples of it: near h, so still in its range.
FACTORS = (1.0, 0.9, 0.8)
# Steps at which schedules are read: both sides of the examples' boundaries.
COUNTS = (0, 1, 5, 10, 99, 150, 1000, INT32_MAX)
EAGER_JIT_ULP = 3
VMAP_ULP = 3
# Rules that amplify the 1-ulp vmap difference of an inner step: the optimistic
# step 2 * r_t - r_(t-1) on Nesterov Adam's r measures 4 ulp (0 without Nesterov).
# Newton-Schulz (Muon) amplifies a last-bit difference of the momentum along its
# small singular directions: 47 ulp measured for muon, 36 for scale_by_muon.
VMAP_ULP_OF = {"optimistic_adam": 4, "optimistic_adam_v2": 4, "muon": 64, "scale_by_muon": 64}
# The finite difference: a relative step and the agreement demanded of it.
FD_STEP = 1e-4
FD_RTOL = 1e-6

# Names whose update takes params in another form than the gradients (Optax's
# lookahead takes LookaheadParams(fast, slow) and returns updates for both).
PARAMS_FORM: dict[str, Callable[[Any], Any]] = {
    "lookahead": lambda params: gradtx.LookaheadParams.init_synced(params),
}


def as_matrices(tree: Any) -> Any:
    """Every vector of ``tree`` as a one-column matrix (``b: f32[2]`` -> ``f32[2, 1]``)."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0], 1) if x.ndim == 1 else x, tree)


# Names whose update takes matrices only, as Optax's do (Muon's pieces, without
# their dimension numbers): params and gradients both go through the form.
INPUTS_FORM: dict[str, Callable[[Any], Any]] = {
    "scale_by_muon": as_matrices,
    "scale_by_shape": as_matrices,
}

TRACES: collections.Counter[str] = collections.Counter()


def is_none(x: Any) -> bool:
    return x is None


def inputs(dtype: Any, *, frozen: bool = False) -> tuple[dict[str, Any], ...]:
    """Params and two gradients, all shaped like P."""
    trees = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        tree: dict[str, Any] = {
            "w": jnp.asarray(rng.normal(size=(3, 2)), dtype),
            "b": jnp.asarray(rng.normal(size=2), dtype),
        }
        if frozen:
            tree["frozen"] = None
        trees.append(tree)
    return tuple(trees)


F32 = inputs(jnp.float32)
BF16 = inputs(jnp.bfloat16)
FROZEN = inputs(jnp.float32, frozen=True)


# ---------------------------------------------------------------- the hyperparameter h


def float_index(tree: Any) -> int | None:
    """Position of the first floating-point leaf (the hyperparameter h), or None."""
    for position, leaf in enumerate(jax.tree.leaves(tree)):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            return position
    return None


def with_leaf(tree: Any, index: int, value: Any) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, leaves[:index] + [value] + leaves[index + 1 :])


def h_of(tree: Any, index: int) -> Any:
    return jax.tree.leaves(tree)[index]


def scaled(tree: Any, index: int, factor: float) -> Any:
    # Multiplying keeps h's kind (a Python float stays one, an array keeps its
    # dtype and weak type), so the jitted step sees the same abstract value.
    return with_leaf(tree, index, h_of(tree, index) * factor)


def batch_of(tree: Any, index: int) -> jax.Array:
    """The values ``h * FACTORS``, stacked: the batch to vmap over."""
    return jnp.stack([jnp.asarray(h_of(tree, index) * factor) for factor in FACTORS])


def directed(tree: Any, index: int, offset: jax.Array) -> Any:
    """``tree`` with h moved to ``h * (1 + offset)`` (to ``offset`` where h is zero)."""
    h = jnp.asarray(h_of(tree, index))
    return with_leaf(tree, index, h + offset * jnp.where(h == 0, jnp.ones_like(h), h))


def grad_and_difference(evaluate: Callable[[jax.Array], Any]) -> tuple[float, float, Any]:
    """The derivative at offset 0 by jax.grad and by a central difference, in float64.

    ``evaluate(offset)`` returns the value, its derivative and an auxiliary tree.
    """
    _, gradient, aux = evaluate(jnp.zeros((), jnp.float64))
    above = evaluate(jnp.asarray(FD_STEP, jnp.float64))[0]
    below = evaluate(jnp.asarray(-FD_STEP, jnp.float64))[0]
    return float(gradient), float((above - below) / (2 * FD_STEP)), aux


def assert_gradient(gradient: float, difference: float | None) -> None:
    assert np.isfinite(gradient), f"d/dh by jax.grad is {gradient}"
    if difference is None:
        return
    tolerance = FD_RTOL * max(abs(gradient), abs(difference), 1e-12)
    assert abs(gradient - difference) <= tolerance, (
        f"d/dh by jax.grad is {gradient!r}, by a central difference {difference!r}"
    )


# ---------------------------------------------------------------- shared programs


# Extra arguments of ``update`` by name: the loss, for the rules that read it.
EXTRA_ARGS: dict[str, dict[str, Any]] = {
    "polyak_sgd": {"value": 1.5},
    "scale_by_polyak": {"value": 1.5},
    "reduce_on_plateau": {"value": 1.5},
}


def update(tx: Any, grads: Any, state: Any, params: Any) -> Any:
    """``tx.update`` with the extra arguments its name takes (EXTRA_ARGS)."""
    extra = EXTRA_ARGS.get(registry.name_of(type(tx)) or "", {})
    return tx.update(grads, state, params, **{k: jnp.float32(v) for k, v in extra.items()})


def plain_step(tx: Any, state: Any, grads: Any, params: Any) -> Any:
    return update(tx, grads, state, params)


def _counted_step(tx: Any, state: Any, grads: Any, params: Any) -> Any:
    TRACES["step"] += 1
    return update(tx, grads, state, params)


STEP = jax.jit(_counted_step)
STATIC_STEP = jax.jit(plain_step, static_argnums=0)

# Counters that restart within a period by design, as in Optax (the gradient
# accumulation's mini-step, apply_every's, the consecutive non-finite count
# reset by a good step, lookahead's steps since the last sync): at 2**31 - 1
# they must not go negative, but they need not stay there.
PERIODIC_COUNTERS = {
    "MultiSteps": ("mini_step",),
    "accumulate": ("mini_step",),
    "apply_every": ("count",),
    "apply_if_finite": ("notfinite_count",),
    "lookahead": ("steps_since_sync",),
}


@dataclasses.dataclass
class Run:
    """Two steps from init: the second at the params the first produced."""

    params: Any
    state0: Any
    updates1: Any
    state1: Any
    params2: Any
    updates2: Any
    state2: Any

    def outputs(self) -> dict[str, Any]:
        return {
            "updates1": self.updates1,
            "state1": self.state1,
            "updates2": self.updates2,
            "state2": self.state2,
        }


def two_steps(step: Callable[..., Any], tx: Any, params: Any, grads1: Any, grads2: Any) -> Run:
    state0 = tx.init(params)
    updates1, state1 = step(tx, state0, grads1, params)
    params2 = jax.tree.map(
        lambda p, u: None if p is None else (p + u).astype(p.dtype),
        params,
        updates1,
        is_leaf=is_none,
    )
    updates2, state2 = step(tx, state1, grads2, params2)
    return Run(params, state0, updates1, state1, params2, updates2, state2)


@functools.partial(jax.jit, static_argnames="index")
def batched_step(values: Any, tx: Any, state: Any, grads: Any, params: Any, *, index: int) -> Any:
    return jax.vmap(lambda h: update(with_leaf(tx, index, h), grads, state, params))(values)


@functools.partial(jax.jit, static_argnames="index")
def summed_updates(
    offset: jax.Array, tx: Any, params: Any, grads1: Any, grads2: Any, *, index: int
) -> Any:
    """sum(second updates) with h moved by ``offset``, its derivative, and the outputs."""

    def loss(offset: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
        run = two_steps(plain_step, directed(tx, index, offset), params, grads1, grads2)
        total = sum(jnp.sum(u.astype(jnp.float64)) for u in jax.tree.leaves(run.updates2))
        return total, run.outputs()

    (total, outputs), gradient = jax.value_and_grad(loss, has_aux=True)(offset)
    return total, gradient, outputs


SCHEDULE_AT = jax.jit(lambda schedule, count: schedule(count))


def at_counts(schedule: Any, counts: jax.Array) -> jax.Array:
    return jnp.stack([jnp.asarray(schedule(count)) for count in counts])


@functools.partial(jax.jit, static_argnames="index")
def batched_schedule(values: Any, schedule: Any, counts: jax.Array, *, index: int) -> jax.Array:
    return jax.vmap(lambda h: at_counts(with_leaf(schedule, index, h), counts))(values)


@functools.partial(jax.jit, static_argnames="index")
def summed_schedule(offset: jax.Array, schedule: Any, counts: jax.Array, *, index: int) -> Any:
    def loss(offset: jax.Array) -> jax.Array:
        return jnp.sum(at_counts(directed(schedule, index, offset), counts).astype(jnp.float64))

    total, gradient = jax.value_and_grad(loss)(offset)
    return total, gradient, None


CALL = jax.jit(lambda function, *arguments: function(*arguments))


# ---------------------------------------------------------------- comparisons


def leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat]


def describe(leaf: Any) -> str:
    if leaf is None:
        return "None"
    aval = jax.typeof(leaf)
    return aval.str_short(short_dtypes=True) + (" (weak type)" if aval.weak_type else "")


def assert_like(tree: Any, reference: Any, what: str) -> None:
    """``tree`` has ``reference``'s structure (None leaves included), shapes, dtypes, weak types."""
    structure = jax.tree.structure(tree, is_leaf=is_none)
    expected = jax.tree.structure(reference, is_leaf=is_none)
    assert structure == expected, f"{what} has structure {structure}, expected {expected}"
    for (path, leaf), (_, other) in zip(leaves_with_paths(tree), leaves_with_paths(reference)):
        same = (leaf is None) == (other is None)
        if same and leaf is not None:
            got, want = jax.typeof(leaf), jax.typeof(other)
            same = (got.shape, got.dtype, got.weak_type) == (want.shape, want.dtype, want.weak_type)
        assert same, f"{what}{path} is {describe(leaf)}, expected {describe(other)}"


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per element, how many representable floats apart ``a`` and ``b`` are (NaN == NaN)."""
    width = a.dtype.itemsize * 8
    lowest = -(2 ** (width - 1))

    def ordered(x: np.ndarray) -> np.ndarray:
        bits = x.view(f"int{width}").astype(np.int64)
        return np.where(bits < 0, lowest - bits, bits)

    first, second = ordered(a), ordered(b)
    # Across zero the difference could overflow int64 (float64 at the extremes).
    same_side = (first >= 0) == (second >= 0)
    near = np.abs(np.where(same_side, first - second, 0)).astype(np.float64)
    far = np.abs(first).astype(np.float64) + np.abs(second).astype(np.float64)
    distance = np.where(same_side, near, far)
    a_nan, b_nan = np.isnan(a.astype(np.float32)), np.isnan(b.astype(np.float32))
    return np.where(a_nan & b_nan, 0.0, np.where(a_nan | b_nan, np.inf, distance))


def assert_close(actual: Any, expected: Any, what: str, max_ulp: int) -> None:
    """Same structure and dtypes, floats within ``max_ulp`` (NaN equals NaN), the rest equal."""
    assert_like(actual, expected, what)
    for (path, a), (_, b) in zip(leaves_with_paths(actual), leaves_with_paths(expected)):
        if a is None:
            continue
        if jax.dtypes.issubdtype(jax.typeof(a).dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        a, b = np.asarray(a), np.asarray(b)
        if not jnp.issubdtype(a.dtype, jnp.inexact):
            assert np.array_equal(a, b), f"{what}{path}: {a} != {b}"
            continue
        distance = ulp_distance(a, b)
        if distance.size and distance.max() > max_ulp:
            worst = np.unravel_index(np.argmax(distance), distance.shape)
            raise AssertionError(
                f"{what}{path} differs by {distance[worst]:g} ulp (at most {max_ulp} allowed): "
                f"{a[worst]!r} vs {b[worst]!r}"
            )


def assert_finite(tree: Any, what: str) -> None:
    for path, leaf in leaves_with_paths(tree):
        if leaf is not None and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            values = np.asarray(leaf).astype(np.float64)
            assert np.all(np.isfinite(values)), f"{what}{path} is not finite: {values}"


def assert_round_trips(value: Any) -> Any:
    """Config (through JSON) and repr round trips give an equal value; returns the former."""
    config = json.loads(json.dumps(gradtx.to_config(value), allow_nan=False))
    rebuilt = gradtx.from_config(config)
    assert rebuilt == value, f"from_config(to_config(x)) is {rebuilt!r}"
    text = repr(value)
    evaluated = eval(text, dict(NAMESPACE))  # a test may eval a repr; the library never does
    assert evaluated == value, f"eval(repr(x)) of {text} is {evaluated!r}"
    return rebuilt


def held_trees(value: Any) -> Iterator[Any]:
    """The trees shaped like the parameters that ``value`` holds (masks, labels)."""
    if isinstance(value, gradtx.Value):
        for field in dataclasses.fields(value):
            yield from held_trees(getattr(value, field.name, None))
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from held_trees(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from held_trees(item)
    elif getattr(value, "tree", None) is not None:
        yield value.tree


def fits(example: Any, params: Any) -> bool:
    for tree in held_trees(example):
        try:
            jax.tree.structure(tree).flatten_up_to(params)
        except (TypeError, ValueError):
            return False
    return True


# ---------------------------------------------------------------- running checks


class UnmetNeedError(Exception):
    """A check could not run because a result it builds on is missing."""


@dataclasses.dataclass(eq=False)
class Case:
    """One example under test: what its checks computed, and which failed."""

    label: str
    value: Any
    failures: list[str]
    results: dict[str, Any] = dataclasses.field(default_factory=dict)

    def inputs(self, trees: tuple[Any, ...]) -> tuple[Any, ...]:
        """Params (in the form the value's update takes) and two gradients."""
        name = registry.name_of(type(self.value)) or ""
        if name in INPUTS_FORM:
            trees = tuple(INPUTS_FORM[name](tree) for tree in trees)
        params, *grads = trees
        form = PARAMS_FORM.get(name)
        return (form(params) if form else params, *grads)

    def need(self, key: str) -> Any:
        if key not in self.results:
            raise UnmetNeedError(key)
        return self.results[key]

    def run(self, checks: list[tuple[str, Callable[["Case"], None]]]) -> None:
        for label, check in checks:
            try:
                check(self)
            except UnmetNeedError as unmet:
                self.failures.append(f"{self.label}: {label}: not checked ({unmet} failed)")
            except Exception as error:  # every failure is reported, not only the first
                self.failures.append(f"{self.label}: {label}: {short(error)}")


def short(error: Exception) -> str:
    # pytest appends its explanation of a failed assert after the message.
    text = " ".join(str(error).split("\nassert ")[0].split())
    if len(text) > 400:
        text = text[:400] + " ..."
    return text if isinstance(error, AssertionError) else f"{type(error).__name__}: {text}"


def check_round_trips_only(case: Case) -> None:
    assert_round_trips(case.value)


ROUND_TRIPS = [("config/repr round trip", check_round_trips_only)]


# ---------------------------------------------------------------- transformations


def check_jit(case: Case) -> None:
    case.results["jit"] = two_steps(STEP, case.value, *case.inputs(F32))


def check_no_retrace(case: Case) -> None:
    run = case.need("jit")
    index = float_index(case.value)
    if index is None:
        return
    before = TRACES["step"]
    STEP(case.value, run.state1, case.inputs(F32)[2], run.params2)
    assert TRACES["step"] == before, "repeating the second step traced it again"
    STEP(scaled(case.value, index, FACTORS[1]), run.state1, case.inputs(F32)[2], run.params2)
    h = h_of(case.value, index)
    assert TRACES["step"] == before, f"changing h from {h!r} to {h * FACTORS[1]!r} retraced"


def check_vmap(case: Case) -> None:
    run = case.need("jit")
    index = float_index(case.value)
    if index is None:
        return
    tx, grads2, params2, state1 = case.value, case.inputs(F32)[2], run.params2, run.state1
    batched = batched_step(batch_of(tx, index), tx, state1, grads2, params2, index=index)
    for member, factor in enumerate(FACTORS):
        alone = STEP(scaled(tx, index, factor), state1, grads2, params2)
        assert_close(
            jax.tree.map(lambda x, m=member: x[m], batched),
            alone,
            f"batch member {member} (h * {factor}): ",
            VMAP_ULP_OF.get(registry.name_of(type(tx)) or "", VMAP_ULP),
        )


def check_grad(case: Case) -> None:
    index = float_index(case.value)
    if index is None:
        return
    with jax.enable_x64(True):
        params, grads1, grads2 = case.inputs(inputs(jnp.float64))
        gradient, difference, outputs = grad_and_difference(
            lambda offset: summed_updates(offset, case.value, params, grads1, grads2, index=index)
        )
        narrow = any(
            jnp.issubdtype(leaf.dtype, jnp.inexact) and leaf.dtype != jnp.float64
            for leaf in jax.tree.leaves(outputs)
        )
    assert_gradient(gradient, None if narrow else difference)


def check_trees_and_dtypes(case: Case) -> None:
    run = case.need("jit")
    case.results["bfloat16"] = bfloat16 = two_steps(STEP, case.value, *case.inputs(BF16))
    assert_steps_like_inputs(run, "float32")
    assert_steps_like_inputs(bfloat16, "bfloat16")


def assert_steps_like_inputs(run: Run, dtype: str) -> None:
    # Updates are shaped like the params they apply to: here the gradients'
    # tree and dtype, except where PARAMS_FORM wraps the params.
    assert_like(run.updates1, run.params, f"updates ({dtype})")
    assert_like(run.updates2, run.params, f"second updates ({dtype})")
    assert_like(run.state1, run.state0, f"new state ({dtype})")
    assert_like(run.state2, run.state0, f"second new state ({dtype})")


def check_finite(case: Case) -> None:
    for key, dtype in (("jit", "float32"), ("bfloat16", "bfloat16")):
        for what, tree in case.need(key).outputs().items():
            assert_finite(tree, f"{what} ({dtype})")


def check_round_trips(case: Case) -> None:
    rebuilt = assert_round_trips(case.value)
    run = case.need("jit")
    again = two_steps(STEP, rebuilt, *case.inputs(F32))
    for what, tree in again.outputs().items():
        assert_close(tree, run.outputs()[what], f"{what} of the rebuilt value: ", 0)


def check_saturation(case: Case) -> None:
    run = case.need("jit")
    paths = []

    def saturate(path: Any, leaf: Any) -> Any:
        if leaf is not None and jax.typeof(leaf).dtype == jnp.int32 and jnp.ndim(leaf) == 0:
            paths.append(jax.tree_util.keystr(path))
            return jnp.full((), INT32_MAX, jnp.int32)
        return leaf

    state = jax.tree_util.tree_map_with_path(saturate, run.state1, is_leaf=is_none)
    if not paths:
        return
    updates, new_state = STEP(case.value, state, case.inputs(F32)[2], run.params2)
    periodic = PERIODIC_COUNTERS.get(registry.name_of(type(case.value)) or "", ())
    for path, leaf in leaves_with_paths(new_state):
        if path in paths and path.rsplit(".", 1)[-1] in periodic:
            # Counts within a period, reset by design (as in Optax): never negative.
            assert 0 <= int(leaf) < INT32_MAX, f"state{path} went from 2**31 - 1 to {int(leaf)}"
        elif path in paths:
            assert int(leaf) == INT32_MAX, f"state{path} went from 2**31 - 1 to {int(leaf)}"
    assert_finite(updates, "updates at 2**31 - 1")
    assert_finite(new_state, "state at 2**31 - 1")


def check_eager_equals_jit(case: Case) -> None:
    # Float32 only: in bfloat16 every name agreed bit for bit. The jitted step
    # closes over the transformation, as jax.jit(tx.update) does, so its
    # hyperparameters are the same Python constants as eagerly; passed as an
    # argument they are float32 tracers, which round 1 - b2 differently (the
    # difference README documents), and that program is not the one to equal.
    jitted = two_steps(STATIC_STEP, case.value, *case.inputs(F32)).outputs()
    eager = two_steps(plain_step, case.value, *case.inputs(F32)).outputs()
    for what, tree in eager.items():
        assert_close(tree, jitted[what], f"eager vs jitted {what}: ", 0)


def check_none_leaves(case: Case) -> None:
    # Eager: None is handled by Python code, the same under jit; eagerly the
    # step reuses primitives compiled by the eager check instead of compiling.
    params, grads, _ = case.inputs(FROZEN)
    state = case.value.init(params)
    updates, new_state = update(case.value, grads, state, params)
    assert_like(updates, params, "updates with a None leaf")
    assert_like(new_state, state, "new state with a None leaf")


def check_eval_shape(case: Case) -> None:
    # What state_shardings, checkpoint restore targets and Orbax read: the state's
    # shapes without creating it, on abstract params as on real ones.
    run = case.need("jit")
    abstract_params = jax.eval_shape(lambda: run.params)
    assert_like(jax.eval_shape(case.value.init, abstract_params), run.state0, "eval_shape(init)")


TRANSFORMATION_CHECKS = [
    ("1 jit", check_jit),
    ("7 no retrace", check_no_retrace),  # before anything else calls the step with h changed
    ("2 vmap", check_vmap),
    ("3 grad", check_grad),
    ("4 trees and dtypes", check_trees_and_dtypes),
    ("5 finite", check_finite),
    ("6 config/repr round trip", check_round_trips),
    ("8 int32 saturation", check_saturation),
    ("9 eager == jit", check_eager_equals_jit),
    ("11 eval_shape", check_eval_shape),
]
NONE_LEAF_CHECKS = [("10 None leaves", check_none_leaves)]


# ---------------------------------------------------------------- schedules


def count_array(count: int) -> jax.Array:
    return jnp.asarray(count, jnp.int32)


def check_schedule_jit(case: Case) -> None:
    values = [SCHEDULE_AT(case.value, count_array(count)) for count in COUNTS]
    for count, value in zip(COUNTS, values):
        assert jnp.ndim(value) == 0, f"the value at step {count} has shape {jnp.shape(value)}"
        assert_finite(value, f"the value at step {count}")
    case.results["jit"] = values


def check_schedule_eager(case: Case) -> None:
    for count, value in zip(COUNTS, case.need("jit")):
        eager = jnp.asarray(case.value(count_array(count)))
        assert_close(eager, value, f"eager vs jitted value at step {count}", EAGER_JIT_ULP)


def check_schedule_vmap(case: Case) -> None:
    case.need("jit")
    index = float_index(case.value)
    if index is None:
        return
    counts = jnp.asarray(COUNTS, jnp.int32)
    batched = batched_schedule(batch_of(case.value, index), case.value, counts, index=index)
    for member, factor in enumerate(FACTORS):
        schedule = scaled(case.value, index, factor)
        for position, count in enumerate(COUNTS):
            alone = SCHEDULE_AT(schedule, count_array(count))
            what = f"batch member {member} (h * {factor}) at step {count}"
            assert_close(batched[member, position], alone, what, VMAP_ULP)


def check_schedule_grad(case: Case) -> None:
    index = float_index(case.value)
    if index is None:
        return
    with jax.enable_x64(True):
        counts = jnp.asarray(COUNTS, jnp.int32)
        gradient, difference, _ = grad_and_difference(
            lambda offset: summed_schedule(offset, case.value, counts, index=index)
        )
    assert_gradient(gradient, difference)


def check_schedule_round_trips(case: Case) -> None:
    rebuilt = assert_round_trips(case.value)
    for count, value in zip(COUNTS, case.need("jit")):
        again = SCHEDULE_AT(rebuilt, count_array(count))
        assert_close(again, value, f"the rebuilt value at step {count}", 0)


SCHEDULE_CHECKS = [
    ("jit", check_schedule_jit),
    ("eager == jit", check_schedule_eager),
    ("vmap", check_schedule_vmap),
    ("grad", check_schedule_grad),
    ("config/repr round trip", check_schedule_round_trips),
]


# ---------------------------------------------------------------- masks, labels, skip functions


def check_call_on_params(case: Case) -> None:
    for params in (F32[0], FROZEN[0]):
        result = case.value(params)
        structure = jax.tree.structure(result, is_leaf=is_none)
        expected = jax.tree.structure(params, is_leaf=is_none)
        assert structure == expected, f"the call gave {result!r}, expected a tree like {expected}"
        for path, leaf in leaves_with_paths(result):
            assert leaf is None or isinstance(leaf, (bool, str)), (
                f"the call's leaf {path} is {leaf!r}, expected a Python bool or str"
            )
        traced = traced_call(case.value, params)
        assert traced == result, f"on traced params the call gave {traced!r}"


def traced_call(function: Callable[[Any], Any], params: Any) -> Any:
    """What ``function`` returns when the params are tracers (its result is static)."""
    results: list[Any] = []
    jax.make_jaxpr(lambda p: results.append(function(p)) or 0)(params)
    return results[0]


MASK_CHECKS = [*ROUND_TRIPS, ("call on params", check_call_on_params)]


def assert_skip_result(result: Any, what: str) -> None:
    should_skip, info = result
    aval = jax.typeof(should_skip)
    assert aval.shape == () and aval.dtype == jnp.bool_, (
        f"{what}: should_skip is {describe(should_skip)}, expected a bool scalar"
    )
    assert isinstance(info, dict), f"{what}: the second result is {info!r}, expected a dict"
    assert_finite(info, f"{what}: ")


def check_skip_jit(case: Case) -> None:
    params, grads, _ = F32
    result = CALL(case.value, grads, count_array(0), params)
    assert_skip_result(result, "jitted")
    eager = case.value(grads, count_array(0), params)
    assert_skip_result(eager, "eager")
    assert_close(eager, result, "eager vs jitted result", EAGER_JIT_ULP)


def check_skip_none_leaves(case: Case) -> None:
    params, grads, _ = FROZEN
    assert_skip_result(case.value(grads, count_array(0), params), "with a None leaf")


SKIP_CHECKS = [
    *ROUND_TRIPS,
    ("jit and eager == jit", check_skip_jit),
    ("None leaves", check_skip_none_leaves),
]


def required_positionals(value: Any) -> int | None:
    """How many positional arguments a call of ``value`` needs, or None if not callable."""
    if not callable(value):
        return None
    parameters = inspect.signature(value).parameters.values()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in parameters if p.kind in positional and p.default is p.empty)


# What the call of a value that is neither a transformation nor a schedule takes.
CONTRACTS_BY_ARITY = {
    None: ROUND_TRIPS,  # plain data, not callable (MuonDimensionNumbers)
    1: MASK_CHECKS,  # masks and labels: params
    3: SKIP_CHECKS,  # should_skip_update_fn: (updates, gradient_step, params)
}


# ---------------------------------------------------------------- the test


def contract_failures(name: str, examples: list[Any]) -> list[str]:
    failures: list[str] = []
    cases = [Case(f"{name} example {position}", x, failures) for position, x in enumerate(examples)]
    transformations = [case for case in cases if isinstance(case.value, gradtx.Transformation)]
    schedules = [case for case in cases if isinstance(case.value, gradtx.Schedule)]
    for case in cases:
        if case in transformations or case in schedules:
            continue
        checks = CONTRACTS_BY_ARITY.get(required_positionals(case.value))
        if checks is None:
            failures.append(f"{case.label}: no contract for {case.value!r}")
        else:
            case.run(checks)
    for position, case in enumerate(schedules):
        case.run(ROUND_TRIPS if position else SCHEDULE_CHECKS)
    if not transformations:
        return failures
    fitting = [case for case in transformations if fits(case.value, F32[0])]
    if not fitting:
        failures.append(f"{name}: no example fits the params {{'w': f32[3, 2], 'b': f32[2]}}")
    for case in transformations:
        case.run(TRANSFORMATION_CHECKS if fitting and case is fitting[0] else ROUND_TRIPS)
    frozen = [case for case in transformations if fits(case.value, FROZEN[0])]
    if frozen:
        frozen[0].run(NONE_LEAF_CHECKS)
    else:
        failures.append(f"{name}: no example fits the params with a None leaf {{'frozen': None}}")
    return failures


@pytest.mark.parametrize("name", REGISTERED)
def test_contract(name):
    examples = EXAMPLES.get(name)
    if not examples:
        pytest.fail(
            f"{name} is registered but has no example: add one to tests/examples_<family>.py "
            "(or tests/config_examples.py) so the contract can be checked",
            pytrace=False,
        )
    failures = contract_failures(name, examples)
    if failures:
        pytest.fail(f"{len(failures)} broken:\n" + "\n".join(failures), pytrace=False)
