"""gradtx values work wherever Optax or Flax takes a transformation.

Each case runs a few dozen jitted steps of a gradtx value handed to an Optax (or
Flax) API and of the pure-Optax equivalent, and checks that the parameters after
every step, the final state's values and the state's layout (NamedTuple class
names, fields, dict keys, shapes and dtypes) are the same. The hyperparameters
are Python floats on both sides and the transformation is closed over by the
jitted step, so both compile the same constants.
"""

import sys
from collections.abc import Callable
from typing import Any

import interop_trees
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state
from interop_trees import layout

import gradtx

STEPS = 30
# The two libraries run the same float32 operations; the margin covers XLA
# ordering or fusing them differently (a few units in the last place).
RTOL = 1e-6
ATOL = 1e-7


def _tree(seed: int, transform: Callable[[np.ndarray], np.ndarray] = lambda x: x) -> Any:
    # Built with NumPy: module-level eager JAX ops would each compile at collection.
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> jax.Array:
        return jnp.asarray(transform(rng.normal(size=shape)), jnp.float32)

    return {"w": normal(3, 2), "b": normal(2), "head": {"k": normal(2, 2), "s": normal(2)}}


PARAMS = _tree(0)
OPTIMUM = _tree(1)
CURVATURE = _tree(2, lambda x: 1.0 + 0.5 * np.tanh(x))
MASK = {"w": True, "b": False, "head": {"k": True, "s": False}}
LABELS = {"w": "adam", "b": "sgd", "head": {"k": "adam", "s": "frozen"}}


def _loss(params: Any) -> jax.Array:
    """A convex quadratic with coupled leaves: rounding differences die out, not grow."""
    distance = jax.tree.map(lambda p, o, c: jnp.sum(c * (p - o) ** 2), params, OPTIMUM, CURVATURE)
    coupling = jnp.sum(params["b"] * params["head"]["s"]) + jnp.sum(
        params["w"][:2] * params["head"]["k"]
    )
    return 0.5 * sum(jax.tree.leaves(distance)) + 0.2 * coupling


GRADS = jax.jit(jax.grad(_loss))(PARAMS)


def _matrices_only(tree: Any) -> Any:
    """A callable mask: True for the two-dimensional leaves."""
    return jax.tree.map(lambda x: jnp.ndim(x) == 2, tree)


def assert_trees_close(actual: Any, expected: Any) -> None:
    interop_trees.assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL)


def assert_same_state(actual: Any, expected: Any) -> None:
    interop_trees.assert_same_state(actual, expected, rtol=RTOL, atol=ATOL)


def _train(tx: Any, steps: int = STEPS, **extra_args: Any) -> tuple[list[Any], Any]:
    @jax.jit
    def step(params: Any, state: Any) -> tuple[Any, Any]:
        updates, state = tx.update(jax.grad(_loss)(params), state, params, **extra_args)
        return optax.apply_updates(params, updates), state

    params, state, history = PARAMS, tx.init(PARAMS), []
    for _ in range(steps):
        params, state = step(params, state)
        history.append(params)
    return history, state


def _train_eagerly(tx: Any, steps: int) -> Any:
    params, state = PARAMS, tx.init(PARAMS)
    for _ in range(steps):
        updates, state = tx.update(jax.grad(_loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    return state


def assert_same_run(actual_tx: Any, expected_tx: Any, **extra_args: Any) -> Any:
    """Trains both; the params after every step and the final states agree."""
    history, state = _train(actual_tx, **extra_args)
    expected_history, expected_state = _train(expected_tx, **extra_args)
    for step, (params, expected_params) in enumerate(zip(history, expected_history)):
        try:
            assert_trees_close(params, expected_params)
        except AssertionError as error:
            raise AssertionError(f"params differ after step {step + 1}") from error
    assert_same_state(state, expected_state)
    assert not np.allclose(history[-1]["w"], PARAMS["w"], atol=1e-2)  # the run did move
    return state


# --- to_optax ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "tx",
    [gradtx.adamw(0.05, weight_decay=0.1, mask=MASK), gradtx.sgd(0.1, momentum=0.9)],
    ids=repr,
)
def test_to_optax_is_a_real_optax_transformation_computing_exactly_tx(tx):
    converted = gradtx.to_optax(tx)
    assert isinstance(converted, optax.GradientTransformation)
    assert isinstance(converted, optax.GradientTransformationExtraArgs)
    init, update = converted  # code that unpacks the pair works too
    state = init(PARAMS)
    assert_same_state(state, tx.init(PARAMS))
    for _ in range(2):
        updates, new_state = update(GRADS, state, PARAMS)
        expected_updates, expected_state = tx.update(GRADS, state, PARAMS)
        for a, e in zip(jax.tree.leaves(updates), jax.tree.leaves(expected_updates)):
            np.testing.assert_array_equal(a, e)
        assert_same_state(new_state, expected_state)
        state = new_state
    # Extra arguments are accepted, as GradientTransformationExtraArgs promises.
    update(GRADS, state, PARAMS, value=jnp.float32(1.0))


def test_to_optax_of_an_optax_transformation_computes_the_same():
    converted = gradtx.to_optax(optax.adam(0.05))
    assert isinstance(converted, optax.GradientTransformationExtraArgs)
    assert_same_state(_train_eagerly(converted, 2), _train_eagerly(optax.adam(0.05), 2))


def test_to_optax_refuses_what_is_not_a_transformation():
    with pytest.raises(TypeError, match=r"tx must be a gradient transformation.*0\.1"):
        gradtx.to_optax(0.1)
    with pytest.raises(TypeError, match=r"did you mean adam\(\.\.\.\)"):
        gradtx.to_optax(gradtx.adam)


def test_to_optax_without_optax_says_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "optax", None)  # makes `import optax` fail
    with pytest.raises(ImportError, match="install optax"):
        gradtx.to_optax(gradtx.adam(0.1))


def test_code_that_checks_isinstance_takes_to_optax():
    def optax_only_api(tx: Any) -> Callable[..., Any]:
        if not isinstance(tx, optax.GradientTransformation):
            raise TypeError("an optax.GradientTransformation is required")
        return tx.update

    tx = gradtx.adamw(0.05)
    assert not isinstance(tx, optax.GradientTransformation)
    assert optax_only_api(gradtx.to_optax(tx)) == tx.update


# --- Optax combinators and wrappers -----------------------------------------------


def test_optax_chain_with_gradtx_members():
    def make(library: Any) -> Any:
        return optax.chain(
            optax.clip_by_global_norm(0.5),
            library.scale_by_adam(b1=0.8),
            library.add_decayed_weights(0.1),
            optax.scale(-0.05),
        )

    assert_same_run(make(gradtx), make(optax))


def test_with_extra_args_support():
    tx = optax.with_extra_args_support(gradtx.adam(0.05))
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    # The extra argument is dropped on its way to gradtx's update, as for Optax's.
    assert_same_run(tx, optax.with_extra_args_support(optax.adam(0.05)), value=jnp.float32(1.0))


def test_multi_steps():
    state = assert_same_run(
        optax.MultiSteps(gradtx.adam(0.05), 3), optax.MultiSteps(optax.adam(0.05), 3)
    )
    assert int(state.gradient_step) == STEPS // 3
    converted = optax.MultiSteps(gradtx.adam(0.05), 3).gradient_transformation()
    assert_same_state(converted.init(PARAMS), optax.MultiSteps(optax.adam(0.05), 3).init(PARAMS))


def test_masked():
    assert_same_run(optax.masked(gradtx.adam(0.05), MASK), optax.masked(optax.adam(0.05), MASK))


def test_multi_transform():
    def transforms(library: Any) -> dict[str, Any]:
        return {
            "adam": library.adamw(0.05, weight_decay=0.1),
            "sgd": library.sgd(0.1, momentum=0.9),
            "frozen": optax.set_to_zero(),
        }

    assert_same_run(
        optax.multi_transform(transforms(gradtx), LABELS),
        optax.multi_transform(transforms(optax), LABELS),
    )


def test_apply_if_finite():
    assert_same_run(
        optax.apply_if_finite(gradtx.adam(0.05), 3), optax.apply_if_finite(optax.adam(0.05), 3)
    )


TREE_MAPPED = {
    "adamw": lambda library: library.adamw(0.05, weight_decay=0.1),
    "adamw with a mask": lambda library: library.adamw(0.05, weight_decay=0.1, mask=MASK),
    "masked adam": lambda library: library.masked(library.adam(0.05), MASK),
    "multi_transform": lambda library: library.multi_transform(
        {
            "adam": library.adam(0.05),
            "sgd": library.sgd(0.1, momentum=0.9),
            "frozen": library.set_to_zero(),
        },
        LABELS,
    ),
}


@pytest.mark.parametrize("name", sorted(TREE_MAPPED))
def test_tree_map_params_on_a_gradtx_state(name):
    """tree_map_params inits the transformation on a placeholder to find the params trees."""
    tx, expected_tx = TREE_MAPPED[name](gradtx), TREE_MAPPED[name](optax)

    def fill(tree: Any) -> Any:
        return jax.tree.map(lambda x: jnp.full_like(x, 3.0), tree)

    mapped = optax.tree_utils.tree_map_params(tx, fill, tx.init(PARAMS))
    expected = optax.tree_utils.tree_map_params(expected_tx, fill, expected_tx.init(PARAMS))
    assert_same_state(mapped, expected)
    assert any(np.all(np.asarray(leaf) == 3.0) for leaf in jax.tree.leaves(mapped))


# --- inject_hyperparams -----------------------------------------------------------

INJECTED = {
    "sgd": lambda library: optax.inject_hyperparams(library.sgd)(learning_rate=0.1, momentum=0.9),
    "adam with a schedule": lambda library: optax.inject_hyperparams(library.adam)(
        learning_rate=library.linear_schedule(0.05, 0.001, STEPS), b1=0.8
    ),
}


@pytest.mark.parametrize("name", sorted(INJECTED))
def test_inject_hyperparams(name):
    state = assert_same_run(INJECTED[name](gradtx), INJECTED[name](optax))
    assert int(state.count) == STEPS


def test_inject_hyperparams_adamw_and_a_rate_set_mid_run():
    """optax.tree.set on the injected state changes the rate the jitted update uses."""
    runs = []
    for library in (gradtx, optax):
        tx = optax.inject_hyperparams(library.adamw)(learning_rate=0.05, weight_decay=0.1)

        @jax.jit
        def step(params: Any, state: Any, tx: Any = tx) -> tuple[Any, Any]:
            updates, state = tx.update(jax.grad(_loss)(params), state, params)
            return optax.apply_updates(params, updates), state

        params, state, history = PARAMS, tx.init(PARAMS), []
        for step_number in range(STEPS):
            if step_number == STEPS // 2:
                assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(0.05)
                state = optax.tree.set(
                    state, learning_rate=jnp.float32(0.01), weight_decay=jnp.float32(0.0)
                )
                assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(0.01)
            params, state = step(params, state)
            history.append(params)
        runs.append((history, state))
    (history, state), (expected_history, expected_state) = runs
    for params, expected_params in zip(history, expected_history):
        assert_trees_close(params, expected_params)
    assert_same_state(state, expected_state)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.01)
    assert int(state.count) == STEPS


# --- optax.tree.get / optax.tree.set on gradtx states ----------------------------

LOOKED_UP = {
    "adam": lambda library, schedule: library.adam(0.05),
    "adamw": lambda library, schedule: library.adamw(0.05, weight_decay=0.1),
    "sgd momentum": lambda library, schedule: library.sgd(0.1, momentum=0.9),
    "adamw schedule and mask": lambda library, schedule: library.adamw(schedule, mask=MASK),
}


@pytest.mark.parametrize("name", sorted(LOOKED_UP))
def test_tree_get_and_set_find_what_they_find_in_optax_states(name):
    tx = LOOKED_UP[name](gradtx, gradtx.linear_schedule(0.05, 0.01, 10))
    expected_tx = LOOKED_UP[name](optax, optax.linear_schedule(0.05, 0.01, 10))
    state, expected_state = _train_eagerly(tx, 2), _train_eagerly(expected_tx, 2)
    for key in ("count", "mu", "nu", "trace", "ScaleByAdamState", "TraceState", "MaskedState"):
        try:
            expected = optax.tree.get(expected_state, key)
        except KeyError:  # ambiguous in Optax's state: so it must be in gradtx's
            with pytest.raises(KeyError, match="multiple"):
                optax.tree.get(state, key)
            continue
        found = optax.tree.get(state, key)
        assert layout(found) == layout(expected), key
        assert_trees_close(found, expected)
    counts = optax.tree_utils.tree_get_all_with_path(state, "count")
    expected_counts = optax.tree_utils.tree_get_all_with_path(expected_state, "count")
    assert [path for path, _ in counts] == [path for path, _ in expected_counts]
    assert [int(c) for _, c in counts] == [int(c) for _, c in expected_counts]
    if not expected_counts:
        with pytest.raises(KeyError, match="no values"):
            optax.tree.set(state, count=jnp.int32(100))
        return
    new_state = optax.tree.set(state, count=jnp.int32(100))
    expected_new_state = optax.tree.set(expected_state, count=jnp.int32(100))
    assert_same_state(new_state, expected_new_state)
    # The edited state keeps gradtx's own classes and still drives gradtx's update.
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    updates, _ = tx.update(GRADS, new_state, PARAMS)
    expected_updates, _ = expected_tx.update(GRADS, expected_new_state, PARAMS)
    assert_trees_close(updates, expected_updates)


def test_tree_get_count_of_adamw_with_a_constant_rate_is_unambiguous():
    for library in (gradtx, optax):
        state = library.adamw(0.05, weight_decay=0.1).init(PARAMS)
        assert int(optax.tree.get(state, "count")) == 0


# --- Flax ---------------------------------------------------------------------------


def _train_state_run(tx: Any) -> train_state.TrainState:
    @jax.jit
    def step(state: train_state.TrainState) -> train_state.TrainState:
        return state.apply_gradients(grads=jax.grad(_loss)(state.params))

    state = train_state.TrainState.create(apply_fn=None, params=PARAMS, tx=tx)
    for _ in range(STEPS):
        state = step(state)
    return state


def test_flax_train_state():
    state = _train_state_run(gradtx.adamw(0.05, weight_decay=0.1, mask=_matrices_only))
    expected = _train_state_run(optax.adamw(0.05, weight_decay=0.1, mask=_matrices_only))
    assert int(state.step) == STEPS
    assert_trees_close(state.params, expected.params)
    assert_same_state(state.opt_state, expected.opt_state)


INPUTS = jnp.asarray(np.random.default_rng(3).normal(size=(5, 3)), jnp.float32)
TARGETS = jnp.asarray(np.random.default_rng(4).normal(size=(5, 2)), jnp.float32)


class _Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.hidden = nnx.Linear(3, 4, rngs=rngs)
        self.out = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jnp.tanh(self.hidden(x)))


@nnx.jit
def _nnx_step(model: _Model, optimizer: nnx.Optimizer) -> None:
    grads = nnx.grad(lambda model: jnp.mean((model(INPUTS) - TARGETS) ** 2))(model)
    optimizer.update(model, grads)


# nnx.jit's per-call overhead is large; test_flax_integration.py runs longer.
NNX_STEPS = 10


def _nnx_run(tx: Any) -> tuple[_Model, nnx.Optimizer]:
    model = _Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(NNX_STEPS):
        _nnx_step(model, optimizer)
    return model, optimizer


def test_flax_nnx_optimizer():
    mask = gradtx.path_mask(exclude=[r"bias$"])
    model, optimizer = _nnx_run(gradtx.adamw(0.05, weight_decay=0.1, mask=mask))
    expected_model, expected_optimizer = _nnx_run(optax.adamw(0.05, weight_decay=0.1, mask=mask))
    assert int(optimizer.step[...]) == NNX_STEPS
    assert_trees_close(nnx.state(model, nnx.Param), nnx.state(expected_model, nnx.Param))
    assert layout(optimizer.opt_state) == layout(expected_optimizer.opt_state)
    assert_trees_close(
        nnx.to_pure_dict(nnx.state(optimizer)), nnx.to_pure_dict(nnx.state(expected_optimizer))
    )
