"""Optimizers are values: equality, repr, pytrees, jit without retracing, vmap, grad.

References are Optax, NumPy and central finite differences, never gradtx's own
output.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

NAMESPACE = {name: getattr(gradtx, name) for name in gradtx.__all__}
ABSTRACT_BASES = {"Alias", "Schedule", "Transformation", "Value"}


def halve(count: Any) -> Any:
    """A module-level schedule, so two custom_schedule values can be equal."""
    return 0.5 * jnp.ones_like(count, dtype=jnp.float32)


def no_biases(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not jax.tree_util.keystr(path).endswith("['bias']"), params
    )


class Example(NamedTuple):
    """How to build a value twice, how to change it, and what the change gives."""

    build: Callable[[], Any]
    changes: dict[str, Any] | None  # for dataclasses.replace; None: no field to change
    different: Callable[[], Any]  # a value that must not equal build()
    evaluable: bool = True  # whether eval(repr(x)) can rebuild it


EXAMPLES: dict[str, Example] = {
    "sgd": Example(lambda: gradtx.sgd(0.1), {"learning_rate": 0.2}, lambda: gradtx.sgd(0.2)),
    "sgd_full": Example(
        lambda: gradtx.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        {"momentum": 0.5},
        lambda: gradtx.sgd(0.1, momentum=0.5, nesterov=True, weight_decay=1e-3),
    ),
    "adam": Example(lambda: gradtx.adam(1e-3), {"b1": 0.8}, lambda: gradtx.adam(1e-3, b1=0.8)),
    "adam_schedule": Example(
        lambda: gradtx.adam(gradtx.exponential_decay(1e-3, 100, 0.9), eps_root=1e-9),
        {"learning_rate": gradtx.exponential_decay(1e-3, 100, 0.8)},
        lambda: gradtx.adam(gradtx.exponential_decay(1e-3, 100, 0.8), eps_root=1e-9),
    ),
    "adamw": Example(
        lambda: gradtx.adamw(1e-3, weight_decay=0.1),
        {"weight_decay": 0.2},
        lambda: gradtx.adamw(1e-3, weight_decay=0.2),
    ),
    "adamw_mask_tree": Example(
        lambda: gradtx.adamw(1e-3, mask={"w": True, "b": False}),
        {"mask": {"w": False, "b": True}},
        lambda: gradtx.adamw(1e-3, mask={"w": False, "b": True}),
    ),
    "adamw_mask_callable": Example(
        lambda: gradtx.adamw(1e-3, mask=no_biases),
        {"eps": 1e-6},
        lambda: gradtx.adamw(1e-3, eps=1e-6, mask=no_biases),
        evaluable=False,
    ),
    "adamw_path_mask": Example(
        lambda: gradtx.adamw(1e-3, mask=gradtx.path_mask(exclude=[r"bias$"])),
        {"mask": gradtx.path_mask(exclude=[r"scale$"])},
        lambda: gradtx.adamw(1e-3, mask=gradtx.path_mask(exclude=[r"scale$"])),
    ),
    "path_mask": Example(
        lambda: gradtx.path_mask(include=[r"^encoder/"], exclude=[r"bias$"]),
        {"exclude": (r"scale$",)},
        lambda: gradtx.path_mask(include=[r"^encoder/"], exclude=[r"scale$"]),
    ),
    "nadam": Example(lambda: gradtx.nadam(1e-3), {"b2": 0.99}, lambda: gradtx.nadam(1e-3, b2=0.99)),
    "nadamw": Example(
        lambda: gradtx.nadamw(1e-3, weight_decay=0.01),
        {"learning_rate": 2e-3},
        lambda: gradtx.nadamw(2e-3, weight_decay=0.01),
    ),
    "identity": Example(lambda: gradtx.identity(), None, lambda: gradtx.scale(1.0)),
    "scale": Example(lambda: gradtx.scale(-0.5), {"step_size": 0.5}, lambda: gradtx.scale(0.5)),
    "trace": Example(
        lambda: gradtx.trace(0.9, nesterov=True),
        {"nesterov": False},
        lambda: gradtx.trace(0.9),
    ),
    "trace_dtype": Example(
        lambda: gradtx.trace(0.9, accumulator_dtype=jnp.bfloat16),
        {"accumulator_dtype": "float32"},
        lambda: gradtx.trace(0.9, accumulator_dtype=np.float32),
    ),
    "add_decayed_weights": Example(
        lambda: gradtx.add_decayed_weights(0.1, mask={"w": True}),
        {"weight_decay": 0.3},
        lambda: gradtx.add_decayed_weights(0.3, mask={"w": True}),
    ),
    "scale_by_adam": Example(
        lambda: gradtx.scale_by_adam(b1=0.8, mu_dtype=jnp.bfloat16),
        {"eps_root": 1e-8},
        lambda: gradtx.scale_by_adam(b1=0.8, eps_root=1e-8, mu_dtype=jnp.bfloat16),
    ),
    "scale_by_learning_rate": Example(
        lambda: gradtx.scale_by_learning_rate(0.1, flip_sign=False),
        {"flip_sign": True},
        lambda: gradtx.scale_by_learning_rate(0.1),
    ),
    "chain": Example(
        lambda: gradtx.chain(gradtx.trace(0.9), gradtx.scale_by_learning_rate(0.1)),
        {"transforms": (gradtx.trace(0.8), gradtx.scale_by_learning_rate(0.1))},
        lambda: gradtx.chain(gradtx.trace(0.8), gradtx.scale_by_learning_rate(0.1)),
    ),
    "foreign": Example(
        functools.partial(gradtx.foreign, optax.identity()),
        None,
        lambda: gradtx.foreign(optax.identity()),  # Optax closures compare by identity
        evaluable=False,
    ),
    "constant_schedule": Example(
        lambda: gradtx.constant_schedule(0.1),
        {"value": 0.2},
        lambda: gradtx.constant_schedule(0.2),
    ),
    "linear_schedule": Example(
        lambda: gradtx.linear_schedule(0.1, 0.0, 100, transition_begin=10),
        {"transition_steps": 50},
        lambda: gradtx.linear_schedule(0.1, 0.0, 50, transition_begin=10),
    ),
    "cosine_decay_schedule": Example(
        lambda: gradtx.cosine_decay_schedule(0.1, 100, alpha=0.1),
        {"exponent": 2.0},
        lambda: gradtx.cosine_decay_schedule(0.1, 100, alpha=0.1, exponent=2.0),
    ),
    "warmup_cosine_decay_schedule": Example(
        lambda: gradtx.warmup_cosine_decay_schedule(0.0, 0.1, 10, 100, end_value=1e-3),
        {"peak_value": 0.2},
        lambda: gradtx.warmup_cosine_decay_schedule(0.0, 0.2, 10, 100, end_value=1e-3),
    ),
    "piecewise_constant_schedule": Example(
        lambda: gradtx.piecewise_constant_schedule(0.1, {100: 0.5, 10: 0.1}),
        {"boundaries_and_scales": {10: 0.1}},
        lambda: gradtx.piecewise_constant_schedule(0.1, {10: 0.1}),
    ),
    "join_schedules": Example(
        lambda: gradtx.join_schedules(
            [gradtx.constant_schedule(0.1), gradtx.linear_schedule(0.1, 0.0, 10)], [5]
        ),
        {"boundaries": (6,)},
        lambda: gradtx.join_schedules(
            [gradtx.constant_schedule(0.1), gradtx.linear_schedule(0.1, 0.0, 10)], [6]
        ),
    ),
    "exponential_decay": Example(
        lambda: gradtx.exponential_decay(0.1, 100, 0.9, staircase=True, end_value=0.01),
        {"staircase": False},
        lambda: gradtx.exponential_decay(0.1, 100, 0.9, end_value=0.01),
    ),
    "custom_schedule": Example(
        lambda: gradtx.custom_schedule(halve),
        {"function": jnp.ones_like},
        lambda: gradtx.custom_schedule(jnp.ones_like),
        evaluable=False,
    ),
}


def _public_value_classes() -> set[str]:
    exported = {name: getattr(gradtx, name) for name in gradtx.__all__}
    return {
        name
        for name, obj in exported.items()
        if inspect.isclass(obj) and issubclass(obj, gradtx.Value)
    }


def test_examples_cover_every_public_value_class():
    # The core classes, with their exact reprs; every registered name (the
    # wrappers and the rest of the catalogue too) is covered by tests/test_contract.py.
    built = {type(example.build()).__name__ for example in EXAMPLES.values()}
    concrete = _public_value_classes() - ABSTRACT_BASES
    assert built <= concrete
    for name in ABSTRACT_BASES:
        # The bases carry no fields: there is nothing to build or compare.
        assert not dataclasses.is_dataclass(getattr(gradtx, name)), name


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_built_twice_equal_and_hash_equal(name):
    example = EXAMPLES[name]
    first, second = example.build(), example.build()
    assert first is not second
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_different_hyperparameters_not_equal(name):
    example = EXAMPLES[name]
    assert example.build() != example.different()
    assert not example.build() == example.different()  # both operators


@pytest.mark.parametrize(
    "name", sorted(name for name, example in EXAMPLES.items() if example.evaluable)
)
def test_repr_evaluates_back_to_an_equal_value(name):
    value = EXAMPLES[name].build()
    text = repr(value)
    assert text.startswith(type(value).__name__ + "(")
    assert "object at 0x" not in text
    rebuilt = eval(text, dict(NAMESPACE))
    assert type(rebuilt) is type(value)
    assert rebuilt == value
    assert repr(rebuilt) == text


def test_repr_of_a_chain_reads_like_the_call():
    tx = gradtx.chain(
        gradtx.scale_by_adam(),
        gradtx.scale_by_learning_rate(
            gradtx.exponential_decay(init_value=0.001, transition_steps=1000, decay_rate=0.9)
        ),
    )
    assert repr(tx) == (
        "chain(scale_by_adam(b1=0.9, b2=0.999, eps=1e-08), "
        "scale_by_learning_rate(learning_rate=exponential_decay(init_value=0.001, "
        "transition_steps=1000, decay_rate=0.9)))"
    )


def test_repr_names_non_default_structural_options():
    assert repr(gradtx.sgd(0.1, momentum=0.9, nesterov=True)) == (
        "sgd(learning_rate=0.1, momentum=0.9, nesterov=True)"
    )
    assert "mu_dtype='bfloat16'" in repr(gradtx.scale_by_adam(mu_dtype=jnp.bfloat16))
    assert "no_biases" in repr(gradtx.adamw(1e-3, mask=no_biases))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_dataclasses_replace(name):
    example = EXAMPLES[name]
    value = example.build()
    copy = dataclasses.replace(value)
    assert copy == value and copy is not value
    if example.changes is not None:
        changed = dataclasses.replace(value, **example.changes)
        assert changed == example.different()
        assert value == example.build()  # the original is untouched


def test_replace_validates_like_the_constructor():
    with pytest.raises(ValueError, match=r"b2 must be in \[0, 1\), got 1\.5"):
        dataclasses.replace(gradtx.adam(1e-3), b2=1.5)
    with pytest.raises(ValueError, match="learning_rate must be >= 0, got -1"):
        dataclasses.replace(gradtx.sgd(0.1), learning_rate=-1.0)


def test_replace_recomputes_derived_structure():
    with_decay = gradtx.sgd(0.1, weight_decay=0.1)
    params = {"w": jnp.ones(2)}
    without_decay = dataclasses.replace(with_decay, weight_decay=None)
    assert without_decay == gradtx.sgd(0.1)
    assert len(dataclasses.replace(with_decay, weight_decay=0.0).expand().transforms) == 2
    # Without a decay step, update needs no params.
    updates, _ = without_decay.update(params, without_decay.init(params))
    np.testing.assert_allclose(updates["w"], [-0.1, -0.1])


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_frozen(name):
    value = EXAMPLES[name].build()
    fields = dataclasses.fields(value)
    attribute = fields[0].name if fields else "anything"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, attribute, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(value, attribute)
    assert value == EXAMPLES[name].build()


# --- pytrees -------------------------------------------------------------------


def _leaf_names(value: Any) -> dict[str, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(value)[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_leaves_are_numbers_only(name):
    value = EXAMPLES[name].build()
    if isinstance(value, gradtx.path_mask):
        # Nothing in a path mask is numeric: it is one opaque leaf (which is how
        # Optax's masked() tells a callable mask), held static by transformations.
        assert jax.tree.leaves(value) == [value]
        return
    for leaf in jax.tree.leaves(value):
        assert isinstance(leaf, (int, float, np.ndarray, jax.Array)), leaf
        assert not isinstance(leaf, bool), "booleans must be static"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_flatten_unflatten_round_trip(name):
    value = EXAMPLES[name].build()
    leaves, treedef = jax.tree.flatten(value)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert type(rebuilt) is type(value)
    assert rebuilt == value
    assert hash(rebuilt) == hash(value)
    assert jax.tree.map(lambda x: x, value) == value


def test_numeric_hyperparameters_are_leaves_and_options_are_not():
    adam = gradtx.scale_by_adam(
        b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9, mu_dtype=jnp.bfloat16, nesterov=True
    )
    assert _leaf_names(adam) == {".b1": 0.8, ".b2": 0.99, ".eps": 1e-6, ".eps_root": 1e-9}

    momentum = gradtx.trace(0.7, nesterov=True, accumulator_dtype=jnp.float16)
    assert _leaf_names(momentum) == {".decay": 0.7}

    lr = gradtx.scale_by_learning_rate(0.3, flip_sign=False)
    assert _leaf_names(lr) == {".learning_rate": 0.3}

    decay = gradtx.add_decayed_weights(0.2, mask={"w": True, "b": False})
    assert _leaf_names(decay) == {".weight_decay": 0.2}

    adamw = gradtx.adamw(0.01, b1=0.5, weight_decay=0.3, mask=no_biases)
    assert _leaf_names(adamw) == {
        ".learning_rate": 0.01,
        ".b1": 0.5,
        ".b2": 0.999,
        ".eps": 1e-8,
        ".eps_root": 0.0,
        ".weight_decay": 0.3,
    }
    schedule = gradtx.exponential_decay(0.1, 100, 0.9, staircase=True)
    assert _leaf_names(gradtx.sgd(schedule, momentum=0.9)) == {
        ".learning_rate.init_value": 0.1,
        ".learning_rate.transition_steps": 100,
        ".learning_rate.decay_rate": 0.9,
        ".learning_rate.transition_begin": 0,
        ".momentum": 0.9,
    }


def test_structural_options_live_in_the_tree_definition():
    def treedef(value):
        return jax.tree.structure(value)

    assert treedef(gradtx.trace(0.9)) == treedef(gradtx.trace(0.5))
    assert treedef(gradtx.trace(0.9)) != treedef(gradtx.trace(0.9, nesterov=True))
    assert treedef(gradtx.scale_by_adam()) != treedef(gradtx.scale_by_adam(mu_dtype=jnp.bfloat16))
    assert treedef(gradtx.adamw(0.1, mask={"w": True})) != treedef(
        gradtx.adamw(0.1, mask={"w": False})
    )
    assert treedef(gradtx.adamw(0.1, mask=no_biases)) == treedef(
        gradtx.adamw(0.2, weight_decay=0.5, mask=no_biases)
    )


def test_tree_map_over_hyperparameters():
    doubled = jax.tree.map(lambda x: 2 * x, gradtx.adam(0.1, b1=0.4, b2=0.45, eps=1.0))
    assert (doubled.learning_rate, doubled.b1, doubled.b2, doubled.eps) == (0.2, 0.8, 0.9, 2.0)


# --- a small least-squares problem shared by the transformation tests ----------


def _problem(dtype: Any = jnp.float32) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(32, 4))
    targets = features @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.7 + 0.1 * rng.normal(size=32)
    params = {"w": jnp.zeros(4, dtype), "c": jnp.zeros((), dtype)}
    return jnp.asarray(features, dtype), jnp.asarray(targets, dtype), params


FEATURES, TARGETS, PARAMS = _problem()


def _loss(params: Any, features: Any = FEATURES, targets: Any = TARGETS) -> jax.Array:
    return jnp.mean((features @ params["w"] + params["c"] - targets) ** 2)


def _run(
    tx: Any, steps: int, params: Any = PARAMS, features: Any = FEATURES, targets: Any = TARGETS
) -> tuple[Any, jax.Array]:
    """``steps`` full-batch steps with ``tx``; returns the params and final loss."""

    def body(carry, _):
        params, state = carry
        grads = jax.grad(_loss)(params, features, targets)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
    return params, _loss(params, features, targets)


def _optax_step(tx: Any, params: Any, grads: Any) -> Any:
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)


# --- jit: one trace for many hyperparameter values ------------------------------


def _counting_step() -> tuple[Callable[..., Any], list[int]]:
    traces = [0]

    @jax.jit
    def step(tx, params, state, grads):
        traces[0] += 1
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    return step, traces


GRADS = jax.grad(_loss)(PARAMS)


@pytest.mark.parametrize(
    "build, reference",
    [
        (lambda lr: gradtx.adam(lr), lambda lr: optax.adam(lr)),
        (lambda lr: gradtx.sgd(lr, momentum=0.9), lambda lr: optax.sgd(lr, momentum=0.9)),
        (
            lambda lr: gradtx.adamw(lr, weight_decay=0.1, mask=no_biases),
            lambda lr: optax.adamw(lr, weight_decay=0.1, mask=no_biases),
        ),
        (
            lambda lr: gradtx.adam(gradtx.exponential_decay(lr, 10, 0.5)),
            lambda lr: optax.adam(optax.exponential_decay(lr, 10, 0.5)),
        ),
        (
            lambda lr: gradtx.chain(
                gradtx.trace(0.5),
                gradtx.scale_by_learning_rate(gradtx.cosine_decay_schedule(lr, 50)),
            ),
            lambda lr: optax.chain(
                optax.trace(0.5), optax.scale_by_learning_rate(optax.cosine_decay_schedule(lr, 50))
            ),
        ),
    ],
    ids=["adam", "sgd_momentum", "adamw_masked", "adam_schedule", "chain_schedule"],
)
def test_jit_with_tx_as_argument_traces_once(build, reference):
    step, traces = _counting_step()
    params = {"w": jnp.arange(4.0) / 4, "c": jnp.asarray(0.3, jnp.float32)}
    for lr in (1e-3, 3e-2, 0.1, 0.5):
        tx = build(lr)
        state = tx.init(params)
        new_params, state = step(tx, params, state, GRADS)
        new_params, state = step(tx, new_params, state, GRADS)  # the state's count moves on
        expected = _optax_step_twice(reference(lr), params, GRADS)
        for key in params:
            # With b2 traced, 1 - b2**t is a float32 power computed at run time;
            # Optax's constants round differently, by ~1e-5 of an update.
            np.testing.assert_allclose(new_params[key], expected[key], rtol=1e-5, atol=1e-4 * lr)
    assert traces[0] == 1


def _optax_step_twice(tx: Any, params: Any, grads: Any) -> Any:
    state = tx.init(params)
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_jit_sees_new_values_of_array_hyperparameters_without_retracing():
    step, traces = _counting_step()
    results = []
    for lr in (0.1, 0.2):
        tx = gradtx.sgd(jnp.asarray(lr, jnp.float32))
        results.append(step(tx, PARAMS, tx.init(PARAMS), GRADS)[0]["w"])
    assert traces[0] == 1
    np.testing.assert_allclose(results[1], 2 * results[0], rtol=1e-6)
    np.testing.assert_allclose(results[0], -0.1 * np.asarray(GRADS["w"]), rtol=1e-6)


# --- static use, as Flax does: hashable, closed over ---------------------------


def test_static_argnums_uses_hash_and_equality():
    traces = [0]

    @functools.partial(jax.jit, static_argnums=0)
    def step(tx, params, state, grads):
        traces[0] += 1
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    def build(lr):
        return gradtx.chain(
            gradtx.scale_by_adam(b1=0.8),
            gradtx.add_decayed_weights(0.1, mask={"w": True, "c": False}),
            gradtx.scale_by_learning_rate(gradtx.exponential_decay(lr, 10, 0.5)),
        )

    tx = build(0.01)
    first = step(tx, PARAMS, tx.init(PARAMS), GRADS)[0]
    again = step(build(0.01), PARAMS, build(0.01).init(PARAMS), GRADS)[0]  # equal, new object
    assert traces[0] == 1
    other = step(build(0.02), PARAMS, tx.init(PARAMS), GRADS)[0]
    assert traces[0] == 2

    reference = optax.chain(
        optax.scale_by_adam(b1=0.8),
        optax.add_decayed_weights(0.1, mask={"w": True, "c": False}),
        optax.scale_by_learning_rate(optax.exponential_decay(0.01, 10, 0.5)),
    )
    expected = _optax_step(reference, PARAMS, GRADS)
    for key in PARAMS:
        np.testing.assert_allclose(first[key], expected[key], rtol=1e-6, atol=1e-8)
        np.testing.assert_array_equal(again[key], first[key])
    # Adam's first step has magnitude lr per coordinate, so doubling lr doubles it.
    np.testing.assert_allclose(other["w"], 2 * first["w"], rtol=1e-5)


def test_closed_over_tx_matches_tx_as_argument():
    tx = gradtx.adamw(gradtx.warmup_cosine_decay_schedule(0.0, 0.1, 3, 20), weight_decay=0.01)

    @jax.jit
    def closed(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    as_argument, _ = _counting_step()
    params_a, state_a = PARAMS, tx.init(PARAMS)
    params_b, state_b = PARAMS, tx.init(PARAMS)
    for _ in range(5):
        grads = jax.grad(_loss)(params_a)
        params_a, state_a = closed(params_a, state_a, grads)
        params_b, state_b = as_argument(tx, params_b, state_b, jax.grad(_loss)(params_b))
    reference = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 0.1, 3, 20), weight_decay=0.01)
    params_c, state_c = PARAMS, reference.init(PARAMS)
    for _ in range(5):
        updates, state_c = reference.update(jax.grad(_loss)(params_c), state_c, params_c)
        params_c = optax.apply_updates(params_c, updates)
    for key in PARAMS:
        # As above: traced b1/b2 round differently from constants in float32.
        np.testing.assert_allclose(params_a[key], params_b[key], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(params_a[key], params_c[key], rtol=1e-5, atol=1e-6)


# --- vmap: a learning-rate sweep in one call ------------------------------------

LEARNING_RATES = jnp.array([0.01, 0.03, 0.1, 0.3])
SWEEP_STEPS = 20


@functools.partial(jax.jit, static_argnums=0)
def _final_loss(build: Callable[[Any], Any], lr: Any) -> jax.Array:
    # Only lr is traced, as under vmap: other hyperparameters stay constants, so
    # float32 rounding is the same as in the swept runs. One compile per build.
    return _run(build(lr), SWEEP_STEPS)[1]


def _separate_runs(build: Callable[[Any], Any], learning_rates: Any = LEARNING_RATES) -> Any:
    return np.array([float(_final_loss(build, lr)) for lr in learning_rates])


def test_vmap_over_learning_rates_built_inside():
    def final_loss(lr):
        return _run(gradtx.adam(lr), SWEEP_STEPS)[1]

    swept = jax.jit(jax.vmap(final_loss))(LEARNING_RATES)
    separate = _separate_runs(gradtx.adam)
    np.testing.assert_allclose(swept, separate, rtol=1e-5)
    reference = float(_run(optax.adam(float(LEARNING_RATES[1])), SWEEP_STEPS)[1])
    np.testing.assert_allclose(separate[1], reference, rtol=1e-4)
    assert len(set(np.round(separate, 4))) == len(LEARNING_RATES)  # the sweep matters


def _adamw_with_decay(lr: Any) -> Any:
    return gradtx.adamw(lr, weight_decay=0.05)


def test_vmap_over_a_batched_tx_with_an_in_axes_pytree():
    batched = gradtx.adamw(LEARNING_RATES, weight_decay=0.05)
    in_axes = gradtx.adamw(
        learning_rate=0, b1=None, b2=None, eps=None, eps_root=None, weight_decay=None
    )
    swept = jax.vmap(lambda tx: _run(tx, SWEEP_STEPS)[1], in_axes=(in_axes,))(batched)
    separate = _separate_runs(_adamw_with_decay)
    np.testing.assert_allclose(swept, separate, rtol=1e-5)


def _sgd_with_schedule(lr: Any) -> Any:
    return gradtx.sgd(gradtx.exponential_decay(lr, 5, 0.5), momentum=0.9)


def test_vmap_over_a_schedule_init_value():
    build = _sgd_with_schedule

    swept = jax.vmap(lambda lr: _run(build(lr), SWEEP_STEPS)[1])(LEARNING_RATES / 10)
    separate = _separate_runs(build, LEARNING_RATES / 10)
    np.testing.assert_allclose(swept, separate, rtol=1e-5)


# --- grad with respect to hyperparameters ---------------------------------------

UNROLLED_STEPS = 5


def _finite_difference(function: Callable[[float], Any], x: float, h: float) -> float:
    return float((function(x + h) - function(x - h)) / (2 * h))


@pytest.mark.parametrize(
    "build, at",
    [
        (lambda lr: gradtx.adam(lr), 0.05),
        (lambda lr: gradtx.sgd(lr, momentum=0.9), 0.01),
        # A float transition_steps keeps the schedule in float64 (an int32 count
        # divided by an int gives float32 even under x64, as in Optax).
        (
            lambda v: gradtx.adam(
                gradtx.exponential_decay(init_value=v, transition_steps=2.0, decay_rate=0.5)
            ),
            0.05,
        ),
        (lambda b1: gradtx.adam(0.05, b1=b1), 0.8),
        (lambda wd: gradtx.adamw(0.05, weight_decay=wd), 0.3),
    ],
    ids=["adam_lr", "sgd_lr", "schedule_init_value", "adam_b1", "adamw_weight_decay"],
)
def test_grad_of_unrolled_loss_matches_finite_differences(build, at):
    with jax.enable_x64(True):
        features, targets, params = _problem(jnp.float64)

        def final_loss(x):
            return _run(build(x), UNROLLED_STEPS, params, features, targets)[1]

        gradient = float(jax.jit(jax.grad(final_loss))(jnp.float64(at)))
        expected = _finite_difference(jax.jit(final_loss), at, 1e-6)
        assert jnp.zeros(()).dtype == jnp.float64
    assert jnp.zeros(()).dtype == jnp.float32  # x64 did not leak
    assert abs(expected) > 1e-3  # the hyperparameter matters
    np.testing.assert_allclose(gradient, expected, rtol=1e-6)


def test_grad_with_respect_to_the_tx_itself():
    with jax.enable_x64(True):
        features, targets, params = _problem(jnp.float64)

        @jax.jit
        def final_loss(tx):
            return _run(tx, UNROLLED_STEPS, params, features, targets)[1]

        tx = gradtx.adam(0.05, b1=0.8)
        cotangent = jax.jit(jax.grad(final_loss))(tx)
        assert type(cotangent) is gradtx.adam
        by_lr = _finite_difference(lambda lr: final_loss(gradtx.adam(lr, b1=0.8)), 0.05, 1e-6)
        by_b1 = _finite_difference(lambda b1: final_loss(gradtx.adam(0.05, b1=b1)), 0.8, 1e-6)
        np.testing.assert_allclose(float(cotangent.learning_rate), by_lr, rtol=1e-6)
        np.testing.assert_allclose(float(cotangent.b1), by_b1, rtol=1e-6)


# --- Optax interoperability ---------------------------------------------------


def test_chain_accepts_optax_pieces_and_matches_optax():
    clip = optax.clip_by_global_norm(0.5)
    tx = gradtx.chain(clip, gradtx.scale_by_adam(), gradtx.scale_by_learning_rate(0.1))
    reference = optax.chain(clip, optax.scale_by_adam(), optax.scale_by_learning_rate(0.1))
    params, final_loss = _run(tx, 10)
    expected, expected_loss = _run(reference, 10)
    for key in PARAMS:
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-5, atol=1e-6)
    assert final_loss < 0.5 * _loss(PARAMS)
    assert repr(tx).startswith("chain(")


def test_gradtx_values_work_inside_optax_chain():
    clip = optax.clip(1.0)
    mixed = gradtx.chain(clip, gradtx.adamw(0.05, weight_decay=0.1))
    tx = optax.chain(mixed, optax.scale(0.5))
    reference = optax.chain(clip, optax.adamw(0.05, weight_decay=0.1), optax.scale(0.5))
    params, _ = _run(tx, 10)
    expected, _ = _run(reference, 10)
    for key in PARAMS:
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-5, atol=1e-6)


def test_chain_with_an_optax_piece_jits_with_tx_as_argument():
    step, traces = _counting_step()
    clip = optax.clip_by_global_norm(0.5)  # Optax closures compare by identity: reuse one
    for lr in (0.01, 0.1):
        tx = gradtx.chain(clip, gradtx.adam(lr))
        reference = optax.chain(clip, optax.adam(lr))
        new_params, _ = step(tx, PARAMS, tx.init(PARAMS), GRADS)
        expected = _optax_step(reference, PARAMS, GRADS)
        for key in PARAMS:
            np.testing.assert_allclose(new_params[key], expected[key], rtol=1e-5, atol=1e-4 * lr)
    assert traces[0] == 1
    assert jax.tree.leaves(gradtx.chain(clip, gradtx.adam(0.01)))[0] == 0.01
