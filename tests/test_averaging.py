"""ema and lookahead: parity with Optax 0.2.8 over 120 steps, value semantics, errors.

Each parity case runs the gradtx transformation (an argument of the jitted
function, so its hyperparameters are traced leaves) and its Optax counterpart
(closed over, as Optax is used) in one ``lax.scan``, on a small nested tree with
a None leaf and fresh random gradients at every step. The eager cases call
gradtx's update once per step, outside jit, and compare with the same Optax run.
"""

import dataclasses
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

STEPS = 120
EAGER_STEPS = 100
TEMPLATE = {"dense": {"w": (3, 2), "b": (2,)}, "stack": [(2, 2), ()], "frozen": None}
DTYPES = [jnp.float32, jnp.bfloat16]

# float32: the same operations in the same order as Optax, except that gradtx
# forms 1 - decay in float32 where Optax subtracts Python floats in double
# precision (one rounding apart), and XLA fusing two programs differently.
# bfloat16: the values are of order 1, where an ulp is 2**-8 to 2**-7; a
# float32 difference of one rounding can flip the rounding of a stored
# bfloat16 average, and that ulp decays away only over the next steps. The
# bounds allow two such ulps, far below a real difference in a rule.
TOLERANCES = {
    jnp.float32: {"rtol": 1e-5, "atol": 1e-6},
    jnp.bfloat16: {"rtol": 2.0**-6, "atol": 2.0**-7},
}


def _is_shape(node: Any) -> bool:
    return isinstance(node, tuple) and all(isinstance(size, int) for size in node)


def random_tree(seed: int, dtype: Any, leading: tuple[int, ...] = ()) -> Any:
    """A tree shaped like TEMPLATE (None stays None), standard-normal leaves."""
    rng = np.random.default_rng(seed)

    def leaf(shape: Any) -> Any:
        if shape is None:
            return None
        return jnp.asarray(rng.standard_normal(leading + shape, dtype=np.float32), dtype)

    return jax.tree.map(leaf, TEMPLATE, is_leaf=lambda x: x is None or _is_shape(x))


def assert_trees_close(actual: Any, expected: Any, **tolerance: float) -> None:
    is_none = lambda x: x is None  # noqa: E731
    assert str(jax.tree.structure(actual, is_leaf=is_none)) == str(
        jax.tree.structure(expected, is_leaf=is_none)
    ), "different trees (gradtx's and Optax's state classes print alike)"
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)
    ):
        assert np.shape(a) == np.shape(b), jax.tree_util.keystr(path)
        np.testing.assert_allclose(
            np.asarray(a, np.float64),
            np.asarray(b, np.float64),
            err_msg=f"at {jax.tree_util.keystr(path)}",
            **tolerance,
        )


def assert_dtypes(tree: Any, reference: Any) -> None:
    for (path, leaf), other in zip(
        jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(reference)
    ):
        assert leaf.dtype == other.dtype, jax.tree_util.keystr(path)


def run_pair(
    tx: Any, reference: Any, params: Any, grads: Any, *, apply: bool = False, reference_params=None
) -> Any:
    """Per-step ``(updates, state, params)`` of ``tx`` and of ``reference``, in one jitted scan.

    ``tx`` is an argument of the jitted function (its hyperparameters are
    traced); the Optax ``reference`` is closed over, as Optax is used. After
    each step the reference's floating-point state is cast back to the dtypes
    its init gave, which is gradtx's storage rule (and lets the scan carry it).
    """
    reference_params = params if reference_params is None else reference_params

    def run(tx: Any, params: Any, reference_params: Any, grads: Any) -> Any:
        reference_init = reference.init(reference_params)

        def step(carry: Any, g: Any) -> Any:
            p, state, rp, reference_state = carry
            updates, state = tx.update(g, state, p)
            reference_updates, reference_state = reference.update(g, reference_state, rp)
            reference_state = jax.tree.map(
                lambda new, old: new.astype(old.dtype), reference_state, reference_init
            )
            if apply:
                p = gradtx.apply_updates(p, updates)
                rp = optax.apply_updates(rp, reference_updates)
            carry = (p, state, rp, reference_state)
            return carry, ((updates, state, p), (reference_updates, reference_state, rp))

        carry = (params, tx.init(params), reference_params, reference_init)
        return jax.lax.scan(step, carry, grads)[1]

    return jax.jit(run)(tx, params, reference_params, grads)


def eager_run(tx: Any, params: Any, grads: Any, steps: int, apply: bool = False) -> Any:
    """Per-step ``(updates, state, params)``, one Python call per step, no jit."""
    state, outputs = tx.init(params), []
    for index in range(steps):
        g = jax.tree.map(lambda x, i=index: x[i], grads)
        updates, state = tx.update(g, state, params)
        if apply:
            params = gradtx.apply_updates(params, updates)
        outputs.append((updates, state, params))
    return jax.tree.map(lambda *xs: np.stack(xs), *outputs)


def first(tree: Any, steps: int) -> Any:
    return jax.tree.map(lambda x: x[:steps], tree)


def hyperparameters(dtype: Any) -> Any:
    """How Optax gets its hyperparameters for params of ``dtype``.

    Given Python floats, Optax computes bfloat16 updates in bfloat16, rounding
    the hyperparameters themselves (0.9 becomes 0.8984375); given float32
    arrays, it computes in float32 as gradtx does, so that Optax is the
    bfloat16 reference.
    """
    if dtype == jnp.float32:
        return lambda value: value
    return lambda value: jnp.asarray(value, jnp.float32)


def as_dtype(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), tree)


# ---------------------------------------------------------------- ema


EMA_CASES = [
    # dtype, decay, debias, accumulator_dtype, eager
    (jnp.float32, 0.9, True, None, True),
    (jnp.bfloat16, 0.9, True, None, True),
    (jnp.float32, 0.99, False, None, False),
    (jnp.bfloat16, 0.99, False, None, False),
    (jnp.float32, 0.8, True, jnp.bfloat16, False),
    (jnp.bfloat16, 0.95, True, jnp.float32, False),
]


@pytest.mark.parametrize("dtype, decay, debias, accumulator_dtype, eager", EMA_CASES)
def test_ema_matches_optax(dtype, decay, debias, accumulator_dtype, eager):
    params = random_tree(0, dtype)
    grads = random_tree(1, dtype, leading=(STEPS,))
    tx = gradtx.ema(decay, debias=debias, accumulator_dtype=accumulator_dtype)
    h = hyperparameters(dtype)
    reference = optax.ema(h(decay), debias, accumulator_dtype=accumulator_dtype)
    (updates, state, _), (expected, expected_state, _) = run_pair(tx, reference, params, grads)
    assert_dtypes(updates, grads)
    storage = params if accumulator_dtype is None else as_dtype(params, accumulator_dtype)
    assert_dtypes(first(state.ema, 1), storage)
    # A bfloat16 average flips its rounding on a one-ulp float32 difference.
    narrowest = jnp.bfloat16 if jnp.bfloat16 in (dtype, accumulator_dtype) else jnp.float32
    tolerance = TOLERANCES[narrowest]
    assert_trees_close(updates, expected, **tolerance)
    assert_trees_close(state.ema, expected_state.ema, **tolerance)
    np.testing.assert_array_equal(state.count, expected_state.count)
    np.testing.assert_array_equal(state.count, np.arange(1, STEPS + 1))
    if eager:
        eager_updates, eager_state, _ = eager_run(tx, params, grads, EAGER_STEPS)
        assert_trees_close(eager_updates, first(expected, EAGER_STEPS), **tolerance)
        assert_trees_close(eager_state.ema, first(expected_state.ema, EAGER_STEPS), **tolerance)
        # An eager update is compiled step by step (see gradtx.base), the scan
        # as one program; XLA may fuse a multiply and an add into one rounding
        # in one and not the other, which moves a value by an ulp.
        ulp = {"rtol": 1e-6, "atol": 1e-7} if dtype == jnp.float32 else tolerance
        assert_trees_close(eager_updates, first(updates, EAGER_STEPS), **ulp)


def test_ema_bfloat16_does_not_round_the_decay():
    # In bfloat16 0.999 is 1.0: an average updated in bfloat16 would never move.
    tx = gradtx.ema(0.999, debias=False)
    ones = jnp.ones(2, jnp.bfloat16)
    state = tx.init(jnp.zeros(2, jnp.bfloat16))
    updates, state = tx.update(ones, state)
    assert updates.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(updates, np.float32), 0.001, rtol=2**-7)


def test_ema_python_scalar_and_none_leaves():
    tx = gradtx.ema(0.5)
    params = {"a": 1.0, "b": None, "c": jnp.ones(2)}
    state = tx.init(params)
    assert state.ema["b"] is None
    updates, state = tx.update({"a": 2.0, "b": None, "c": jnp.full(2, 2.0)}, state)
    assert updates["b"] is None
    np.testing.assert_allclose(updates["a"], 2.0)  # debiased: a constant averages to itself
    np.testing.assert_allclose(updates["c"], [2.0, 2.0])


def test_ema_state_loads_from_optax():
    params = random_tree(0, jnp.float32)
    grads = random_tree(1, jnp.float32)
    optax_state = optax.ema(0.9).init(params)
    _, optax_state = optax.ema(0.9).update(grads, optax_state)
    state = flax.serialization.from_state_dict(
        gradtx.ema(0.9).init(params), flax.serialization.to_state_dict(optax_state)
    )
    assert type(state) is gradtx.EmaState and state._fields == optax_state._fields
    expected, _ = optax.ema(0.9).update(grads, optax_state)
    actual, _ = gradtx.ema(0.9).update(grads, state)
    assert_trees_close(actual, expected, rtol=1e-6, atol=1e-7)


def test_ema_vmap_and_grad_over_decay():
    tx = gradtx.ema(0.9)
    g = jnp.asarray([1.0, -2.0])
    state = tx.init(g)
    _, state = tx.update(g, state)

    @jax.jit
    def second_update(decay: jax.Array) -> jax.Array:
        return dataclasses.replace(tx, decay=decay).update(2 * g, state)[0]

    decays = jnp.asarray([0.5, 0.9])
    batched = jax.vmap(second_update)(decays)
    for row, decay in zip(batched, decays):
        np.testing.assert_allclose(row, second_update(decay), rtol=1e-6)
    # The first step, at decay 0.9, left 0.1 * g; the second, debiased, gives
    # (decay * 0.1 * g + (1 - decay) * 2 * g) / (1 - decay**2), with sum(g) = -1.
    derivative = jax.grad(lambda d: second_update(d).sum())(0.5)
    expected = jax.grad(lambda d: -(0.1 * d + 2 * (1 - d)) / (1 - d**2))(0.5)
    np.testing.assert_allclose(derivative, expected, rtol=1e-5)


@pytest.mark.parametrize("decay", [-0.1, 1.5, float("nan")])
def test_ema_rejects_a_decay_out_of_range(decay):
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\]"):
        gradtx.ema(decay)


def test_ema_errors_name_the_argument_and_the_path():
    with pytest.raises(TypeError, match="decay must be a number"):
        gradtx.ema(gradtx.constant_schedule(0.9))
    tx = gradtx.ema(0.9)
    state = tx.init({"a": jnp.ones(2), "b": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"\['b'\] is missing from the gradients"):
        tx.update({"a": jnp.ones(2)}, state)
    with pytest.raises(ValueError, match=r"\['b'\] has shape \(2,\)"):
        tx.update({"a": jnp.ones(2), "b": jnp.ones(2)}, state)


def test_ema_is_a_value():
    tx = gradtx.ema(0.9, debias=False, accumulator_dtype=jnp.bfloat16)
    assert repr(tx) == "ema(decay=0.9, debias=False, accumulator_dtype='bfloat16')"
    assert tx == gradtx.ema(0.9, False, "bfloat16")
    assert hash(tx) == hash(gradtx.ema(0.9, False, "bfloat16"))
    assert jax.tree.leaves(tx) == [0.9]


# ---------------------------------------------------------------- lookahead


def lookahead_case(name: str, dtype: Any) -> tuple[Any, Any]:
    """A gradtx lookahead and its Optax counterpart."""
    h = hyperparameters(dtype)
    return {
        "sgd": (
            gradtx.lookahead(gradtx.sgd(0.05), sync_period=5, slow_step_size=0.5),
            optax.lookahead(optax.sgd(h(0.05)), sync_period=5, slow_step_size=h(0.5)),
        ),
        "sgd-momentum-reset": (
            gradtx.lookahead(gradtx.sgd(0.05, momentum=0.9), 3, 0.3, reset_state=True),
            optax.lookahead(optax.sgd(h(0.05), momentum=h(0.9)), 3, h(0.3), reset_state=True),
        ),
        "adam-reset": (
            gradtx.lookahead(gradtx.adam(0.01), 6, 0.5, reset_state=True),
            optax.lookahead(optax.adam(h(0.01), b1=h(0.9), b2=h(0.999)), 6, h(0.5), True),
        ),
        "adam-every-step": (
            gradtx.lookahead(gradtx.adam(0.01, b2=0.99), 1, 0.8),
            optax.lookahead(optax.adam(h(0.01), b1=h(0.9), b2=h(0.99)), 1, h(0.8)),
        ),
    }[name]


def assert_trajectory_close(
    actual: Any, expected: Any, start: Any, rtol: float, atol: float
) -> None:
    """Compares params at every step, allowing rounding that accumulates.

    The params after step t are a sum of t updates, so their rounding errors
    add up: the bound is ``atol + rtol * (|p_0| + sum of |p_s - p_(s-1)| for s <= t)``.
    """
    for (path, a), b, p0 in zip(
        jax.tree_util.tree_flatten_with_path(actual)[0],
        jax.tree.leaves(expected),
        jax.tree.leaves(start),
    ):
        a, b, p0 = (np.asarray(x, np.float64) for x in (a, b, p0))
        steps = np.abs(np.diff(np.concatenate([p0[None], b]), axis=0))
        bound = atol + rtol * (np.abs(p0) + np.cumsum(steps, axis=0))
        error = np.abs(a - b)
        worst = np.unravel_index(np.argmax(error - bound), error.shape)
        assert np.all(error <= bound), (
            f"params at {jax.tree_util.keystr(path)} differ by {error[worst]:.3g} at "
            f"(step, index) {worst}, more than the bound {bound[worst]:.3g}"
        )


def assert_lookahead_runs_close(run: Any, expected: Any, start: Any, dtype: Any) -> None:
    updates, state, params = run
    _, expected_state, expected_params = expected
    tolerance = TOLERANCES[jnp.dtype(dtype).type]
    assert isinstance(params, gradtx.LookaheadParams)
    assert_dtypes(first(updates.fast, 1), start.fast)
    assert_dtypes(first(updates.slow, 1), start.slow)
    # The whole trajectory of both copies, every step.
    assert_trajectory_close(params.fast, expected_params.fast, start.fast, **tolerance)
    assert_trajectory_close(params.slow, expected_params.slow, start.slow, **tolerance)
    np.testing.assert_array_equal(state.steps_since_sync, expected_state.steps_since_sync)
    assert_trees_close(state.fast_state, expected_state.fast_state, **tolerance)


LOOKAHEAD_CASES = [
    # name, dtype, eager
    ("sgd", jnp.float32, False),
    ("sgd", jnp.bfloat16, False),
    ("sgd-momentum-reset", jnp.float32, True),
    ("sgd-momentum-reset", jnp.bfloat16, True),
    ("adam-reset", jnp.float32, False),
    ("adam-reset", jnp.bfloat16, False),
    ("adam-every-step", jnp.float32, False),
]


@pytest.mark.parametrize("name, dtype, eager", LOOKAHEAD_CASES)
def test_lookahead_matches_optax(name, dtype, eager):
    tx, reference = lookahead_case(name, dtype)
    params = gradtx.LookaheadParams.init_synced(random_tree(0, dtype))
    grads = random_tree(1, dtype, leading=(STEPS,))
    run, expected = run_pair(
        tx, reference, params, grads, apply=True, reference_params=optax.LookaheadParams(*params)
    )
    assert_lookahead_runs_close(run, expected, params, dtype)
    period = tx.sync_period
    np.testing.assert_array_equal(run[1].steps_since_sync, np.arange(1, STEPS + 1) % period)
    # After every synchronization the two copies are equal (up to the rounding
    # of fast + (u - (1 - alpha) * difference) against slow + alpha * difference).
    synced = lambda tree: jax.tree.map(lambda x: x[period - 1 :: period], tree)  # noqa: E731
    tolerance = TOLERANCES[jnp.dtype(dtype).type]
    assert_trees_close(synced(run[2].fast), synced(run[2].slow), **tolerance)
    if eager:
        eager = eager_run(tx, params, grads, EAGER_STEPS, apply=True)
        assert_lookahead_runs_close(eager, first(expected, EAGER_STEPS), params, dtype)


def test_lookahead_slow_weights_follow_the_paper():
    # Zhang et al., Algorithm 1, with plain gradient steps on a fixed gradient.
    tx = gradtx.lookahead(gradtx.sgd(0.1), sync_period=3, slow_step_size=0.5)
    params = gradtx.LookaheadParams.init_synced(jnp.zeros(2))
    state = tx.init(params)
    fast = slow = np.zeros(2)
    for step in range(1, 10):
        updates, state = tx.update(jnp.ones(2), state, params)
        params = gradtx.apply_updates(params, updates)
        fast = fast - 0.1
        if step % 3 == 0:
            slow = slow + 0.5 * (fast - slow)
            fast = slow
        np.testing.assert_allclose(params.fast, fast, rtol=1e-6)
        np.testing.assert_allclose(params.slow, slow, rtol=1e-6)


def test_lookahead_takes_optax_inner_and_optax_params():
    tx = gradtx.lookahead(optax.sgd(0.1), 2, 0.5)
    assert isinstance(tx.fast_optimizer, gradtx.foreign)
    params = optax.LookaheadParams.init_synced({"w": jnp.ones(2)})
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update({"w": jnp.ones(2)}, state, params)
        assert type(updates) is optax.LookaheadParams  # so optax.apply_updates matches it
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params.slow["w"], [0.9, 0.9])
    np.testing.assert_allclose(params.fast["w"], [0.8, 0.8])


def test_lookahead_none_and_python_scalar_leaves():
    tx = gradtx.lookahead(gradtx.sgd(0.5), 1, 0.5)
    params = gradtx.LookaheadParams.init_synced({"a": 1.0, "frozen": None, "c": jnp.ones(2)})
    state = tx.init(params)
    updates, state = tx.update({"a": 1.0, "frozen": None, "c": jnp.ones(2)}, state, params)
    assert updates.fast["frozen"] is None and updates.slow["frozen"] is None
    params = gradtx.apply_updates(params, updates)
    np.testing.assert_allclose(params.slow["a"], 0.75)
    np.testing.assert_allclose(params.fast["c"], [0.75, 0.75])


def test_lookahead_reset_state_restarts_the_fast_optimizer():
    tx = gradtx.lookahead(gradtx.adam(0.1), 2, 0.5, reset_state=True)
    params = gradtx.LookaheadParams.init_synced(jnp.zeros(2))
    state = tx.init(params)
    _, state = tx.update(jnp.ones(2), state, params)
    assert int(state.fast_state[0].count) == 1
    _, state = tx.update(jnp.ones(2), state, params)
    assert int(state.fast_state[0].count) == 0
    np.testing.assert_array_equal(state.fast_state[0].mu, [0.0, 0.0])


def test_lookahead_vmap_and_grad_over_slow_step_size():
    tx = gradtx.lookahead(gradtx.sgd(0.1), 1, 0.5)
    params = gradtx.LookaheadParams.init_synced(jnp.ones(2))
    state = tx.init(params)

    @jax.jit
    def slow_update(alpha: jax.Array) -> jax.Array:
        return (
            dataclasses.replace(tx, slow_step_size=alpha).update(jnp.ones(2), state, params)[0].slow
        )

    alphas = jnp.asarray([0.25, 0.5, 1.0])
    np.testing.assert_allclose(
        jax.vmap(slow_update)(alphas), -0.1 * np.outer(alphas, np.ones(2)), rtol=1e-6
    )
    np.testing.assert_allclose(jax.grad(lambda a: slow_update(a).sum())(0.5), -0.2, rtol=1e-6)


def test_lookahead_init_warns_on_bare_params_like_optax():
    tx = gradtx.lookahead(gradtx.sgd(0.1), 2, 0.5)
    with pytest.warns(UserWarning, match="without a 'fast' attribute"):
        state = tx.init({"w": jnp.ones(2)})
    expected = tx.init(gradtx.LookaheadParams.init_synced({"w": jnp.ones(2)}))
    assert jax.tree.structure(state) == jax.tree.structure(expected)


def test_lookahead_init_synced():
    params = {"w": jnp.ones(2)}
    pair = gradtx.LookaheadParams.init_synced(params)
    assert pair == gradtx.LookaheadParams(fast=params, slow=params)
    assert gradtx.LookaheadParams._fields == optax.LookaheadParams._fields
    assert gradtx.LookaheadState._fields == optax.LookaheadState._fields


@pytest.mark.parametrize(
    "sync_period, error, message",
    [
        (0, ValueError, "sync_period must be >= 1, got 0"),
        (-3, ValueError, "sync_period must be >= 1, got -3"),
        (2.5, TypeError, "sync_period must be an integer, got 2.5"),
        (True, TypeError, "sync_period must be a concrete integer, got True"),
    ],
)
def test_lookahead_rejects_a_bad_sync_period(sync_period, error, message):
    with pytest.raises(error, match=message):
        gradtx.lookahead(gradtx.sgd(0.1), sync_period, 0.5)


def test_lookahead_accepts_integer_arrays_as_sync_period():
    tx = gradtx.lookahead(gradtx.sgd(0.1), np.int64(4), 0.5)
    assert tx.sync_period == 4 and type(tx.sync_period) is int


def test_lookahead_errors():
    with pytest.raises(ValueError, match=r"slow_step_size must be in \[0, 1\], got 1.5"):
        gradtx.lookahead(gradtx.sgd(0.1), 2, 1.5)
    with pytest.raises(TypeError, match="slow_step_size must be a number"):
        gradtx.lookahead(gradtx.sgd(0.1), 2, gradtx.constant_schedule(0.5))
    with pytest.raises(TypeError, match=r"fast_optimizer must be .* did you mean sgd\(...\)"):
        gradtx.lookahead(gradtx.sgd, 2, 0.5)
    tx = gradtx.lookahead(gradtx.sgd(0.1), 2, 0.5)
    params = gradtx.LookaheadParams.init_synced({"w": jnp.ones(2), "b": jnp.ones(3)})
    state = tx.init(params)
    grads = {"w": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="lookahead needs the current parameters"):
        tx.update(grads, state)
    with pytest.raises(TypeError, match="lookahead needs params as gradtx.LookaheadParams"):
        tx.update(grads, state, params.fast)
    with pytest.raises(TypeError, match="gradients with respect to params.fast only"):
        tx.update(params, state, params)
    with pytest.raises(ValueError, match=r"\['b'\] is missing from the gradients"):
        tx.update({"w": jnp.ones(2)}, state, params)
    uneven = gradtx.LookaheadParams(fast=params.fast, slow={"w": jnp.ones(2), "b": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"\['b'\] has shape \(2,\) in the params.slow"):
        tx.update(grads, state, uneven)
    with pytest.raises(ValueError, match="lookahead was given a"):
        tx.update(grads, state.fast_state, params)


def test_lookahead_is_a_value():
    tx = gradtx.lookahead(gradtx.adam(1e-3), 3, 0.5, reset_state=True)
    assert repr(tx) == (
        "lookahead(fast_optimizer=adam(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08), "
        "sync_period=3, slow_step_size=0.5, reset_state=True)"
    )
    assert tx == gradtx.lookahead(gradtx.adam(1e-3), 3, 0.5, True)
    assert tx != gradtx.lookahead(gradtx.adam(1e-3), 4, 0.5, True)
    # The inner optimizer's hyperparameters stay leaves; the period is structure.
    assert jax.tree.leaves(tx) == [0.001, 0.9, 0.999, 1e-08, 0.0, 0.5]
