"""add_noise: the same noise as Optax 0.2.8 for the same key, key handling, errors.

The parity cases run gradtx (an argument of the jitted function, so eta and
gamma are traced) and Optax (closed over) side by side in one ``lax.scan`` of
120 steps on a small nested tree with a None leaf, and gradtx's eager update
against Optax's jitted one for 100 steps: bit for bit, in float32 and in
bfloat16.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

STEPS = 120
EAGER_STEPS = 100
TEMPLATE = {"dense": {"w": (3, 2), "b": (2,)}, "stack": [(2, 2), ()], "frozen": None}


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


def comparable(tree: Any) -> Any:
    """Typed PRNG keys as their key data, so that NumPy can compare them."""

    def unwrap(leaf: Any) -> Any:
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(leaf)
        return leaf

    return jax.tree.map(unwrap, tree)


def assert_trees_equal(actual: Any, expected: Any, **tolerance: float) -> None:
    """Same trees; values bit for bit, or within ``tolerance`` if one is given."""
    is_none = lambda x: x is None  # noqa: E731
    assert str(jax.tree.structure(actual, is_leaf=is_none)) == str(
        jax.tree.structure(expected, is_leaf=is_none)
    )
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(comparable(actual))[0],
        jax.tree.leaves(comparable(expected)),
    ):
        a, b = np.asarray(a), np.asarray(b)
        where = f"at {jax.tree_util.keystr(path)}"
        if tolerance:
            np.testing.assert_allclose(
                a.astype(np.float64), b.astype(np.float64), err_msg=where, **tolerance
            )
        else:
            assert a.dtype == b.dtype, where
            np.testing.assert_array_equal(a, b, err_msg=where)


def run_pair(tx: Any, reference: Any, params: Any, grads: Any) -> Any:
    """Per-step ``(updates, state)`` of ``tx`` (traced) and ``reference`` (closed over)."""

    def run(tx: Any, grads: Any) -> Any:
        def step(carry: Any, g: Any) -> Any:
            state, reference_state = carry
            updates, state = tx.update(g, state, params)
            reference_updates, reference_state = reference.update(g, reference_state, params)
            return (state, reference_state), (
                (updates, state),
                (reference_updates, reference_state),
            )

        return jax.lax.scan(step, (tx.init(params), reference.init(params)), grads)[1]

    return jax.jit(run)(tx, grads)


def eager_run(tx: Any, params: Any, grads: Any, steps: int) -> Any:
    state, outputs = tx.init(params), []
    for index in range(steps):
        updates, state = tx.update(jax.tree.map(lambda x, i=index: x[i], grads), state, params)
        outputs.append(comparable((updates, state)))
    return jax.tree.map(lambda *xs: np.stack(xs), *outputs)


def in_dtype(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def optax_noise(eta: float, gamma: float, key: Any, dtype: Any) -> Any:
    """Optax's add_noise doing gradtx's arithmetic for gradients of ``dtype``.

    gradtx adds the noise in float32 or wider. Optax, given Python floats,
    adds bfloat16 noise to bfloat16 gradients in bfloat16 (after rounding the
    deviation to bfloat16); given float32 arrays it adds in float32 and
    returns float32 updates, which rounded to bfloat16 are gradtx's. The noise
    itself is drawn in the gradients' dtype either way.
    """
    if dtype == jnp.float32:
        return optax.add_noise(eta, gamma, key)
    return optax.add_noise(jnp.float32(eta), jnp.float32(gamma), key)


KEYS = {
    "seed": lambda: 3,
    "typed": lambda: jax.random.key(42),
    "rbg": lambda: jax.random.key(5, impl="rbg"),
}


@pytest.mark.parametrize(
    "key, dtype, eager",
    [
        ("seed", jnp.float32, True),
        ("typed", jnp.bfloat16, True),
        ("typed", jnp.float32, False),
        ("rbg", jnp.bfloat16, False),
    ],
)
def test_add_noise_is_optax_bit_for_bit(key, dtype, eager):
    params = random_tree(0, dtype)
    grads = random_tree(1, dtype, leading=(STEPS,))
    tx = gradtx.add_noise(0.3, 0.55, KEYS[key]())
    (updates, state), (expected, expected_state) = run_pair(
        tx, optax_noise(0.3, 0.55, KEYS[key](), dtype), params, grads
    )
    # The same key splits and the same normal draws, in the same order.
    assert_trees_equal(state, expected_state)
    np.testing.assert_array_equal(state.count, np.arange(1, STEPS + 1))
    assert_trees_equal(updates, in_dtype(expected, dtype))
    for leaf in jax.tree.leaves(updates):
        assert leaf.dtype == dtype
    if eager:
        # One update call per step, as in a loop without jit.
        eager_updates, eager_state = eager_run(tx, params, grads, EAGER_STEPS)
        assert_trees_equal(eager_state, first(comparable(expected_state), EAGER_STEPS))
        assert_trees_equal(eager_updates, first(in_dtype(expected, dtype), EAGER_STEPS))


def first(tree: Any, steps: int) -> Any:
    return jax.tree.map(lambda x: x[:steps], tree)


def test_add_noise_deviation_is_annealed():
    tx = gradtx.add_noise(eta=4.0, gamma=1.0, key=0)
    zeros = jnp.zeros(20_000)
    state = tx.init(zeros)
    for step in range(1, 101):
        updates, state = tx.update(zeros, state)
        if step in (1, 4, 100):
            np.testing.assert_allclose(np.std(updates), np.sqrt(4.0 / step), rtol=0.03)


def test_add_noise_keys_are_stored_as_config_data():
    seed = gradtx.add_noise(0.1, 0.5, 3)
    assert seed.key == 3 and seed.key_impl is None
    assert gradtx.add_noise(0.1, 0.5, np.int64(3)) == seed
    assert gradtx.add_noise(0.1, 0.5, jnp.asarray(3)) == seed
    typed = gradtx.add_noise(0.1, 0.5, jax.random.key(3))
    assert typed.key == (0, 3) and typed.key_impl == "threefry2x32"
    raw = gradtx.add_noise(0.1, 0.5, jax.random.PRNGKey(3))
    assert raw.key == (0, 3) and raw.key_impl is None
    assert gradtx.add_noise(0.1, 0.5, [0, 3]) == raw == gradtx.add_noise(0.1, 0.5, (0, 3))
    rbg = gradtx.add_noise(0.1, 0.5, jax.random.key(3, impl="rbg"))
    assert rbg.key_impl == "rbg" and len(rbg.key) == 4
    for tx in (seed, typed, raw, rbg):
        assert isinstance(hash(tx), int)
        config = gradtx.to_config(tx)
        assert gradtx.from_config(config) == tx
        assert eval(repr(tx), {"add_noise": gradtx.add_noise}) == tx  # noqa: S307
    assert repr(typed) == "add_noise(eta=0.1, gamma=0.5, key=(0, 3), key_impl='threefry2x32')"
    assert gradtx.to_config(rbg)["key"] == [0, 3, 0, 3]


@pytest.mark.parametrize(
    "key",
    [
        lambda: 5,
        lambda: jax.random.key(5),
        lambda: jax.random.key(5, impl="rbg"),
        lambda: jax.random.key(5, impl="unsafe_rbg"),
    ],
)
def test_add_noise_init_rebuilds_optax_key(key):
    state = gradtx.add_noise(0.1, 0.5, key()).init({"w": jnp.ones(2)})
    expected = optax.add_noise(0.1, 0.5, key()).init({"w": jnp.ones(2)})
    assert jax.random.key_impl(state.rng_key) == jax.random.key_impl(expected.rng_key)
    assert_trees_equal(state, expected)


def test_add_noise_raw_key_is_the_wrapped_key():
    state = gradtx.add_noise(0.1, 0.5, jax.random.PRNGKey(9)).init(jnp.ones(2))
    expected = optax.add_noise(0.1, 0.5, jax.random.wrap_key_data(jax.random.PRNGKey(9))).init(
        jnp.ones(2)
    )
    assert_trees_equal(state, expected)


def test_add_noise_continues_an_optax_state():
    params = random_tree(0, jnp.float32)
    grads = random_tree(1, jnp.float32)
    optax_tx = optax.add_noise(0.2, 0.55, 4)
    optax_update = jax.jit(optax_tx.update)
    _, state = optax_update(grads, optax_tx.init(params))
    expected, expected_state = optax_update(grads, state)
    updates, new_state = gradtx.add_noise(0.2, 0.55, 4).update(grads, state)
    assert type(new_state).__name__ == type(expected_state).__name__ == "AddNoiseState"
    assert new_state._fields == expected_state._fields
    assert_trees_equal(updates, expected)
    assert_trees_equal(new_state.rng_key, expected_state.rng_key)


def test_add_noise_none_and_python_scalar_leaves():
    tx = gradtx.add_noise(0.5, 0.55, 0)
    tree = {"a": jnp.ones(3), "frozen": None, "s": jnp.asarray(2.0)}
    updates, _ = tx.update(tree, tx.init(tree))
    expected, _ = optax.add_noise(0.5, 0.55, 0).update(
        tree, optax.add_noise(0.5, 0.55, 0).init(tree)
    )
    assert updates["frozen"] is None
    # Two programs that XLA may fuse differently (one multiply-add rounded
    # once or twice): within an ulp of the gradients' magnitude, 1.
    assert_trees_equal(updates, expected, rtol=0, atol=2**-23)
    scalar, _ = tx.update({"a": jnp.ones(3), "frozen": None, "s": 2.0}, tx.init(tree))
    assert_trees_equal(scalar, updates)


def test_add_noise_draws_optax_noise_exactly():
    # With eta = 1 and gamma = 0 the deviation is exactly 1 and 0 + 1 * noise
    # is exact however it is fused: the updates are the noise itself.
    tree = {"a": jnp.zeros((4, 3)), "frozen": None, "b": [jnp.zeros(5, jnp.bfloat16)]}
    tx, reference = gradtx.add_noise(1.0, 0.0, 21), optax.add_noise(1.0, 0.0, 21)
    state, reference_state = tx.init(tree), reference.init(tree)
    reference_update = jax.jit(reference.update)
    for _ in range(3):
        noise, state = tx.update(tree, state)
        expected, reference_state = reference_update(tree, reference_state)
        assert_trees_equal(noise, expected)
        assert_trees_equal(state, reference_state)


def test_add_noise_vmap_and_grad_over_eta():
    tx = gradtx.add_noise(0.5, 0.55, 0)
    g = jnp.zeros(4)
    state = tx.init(g)

    @jax.jit
    def noise(eta: jax.Array) -> jax.Array:
        return dataclasses.replace(tx, eta=eta).update(g, state)[0]

    etas = jnp.asarray([0.25, 1.0, 4.0])
    batched = jax.vmap(noise)(etas)
    for row, eta in zip(batched, etas):
        np.testing.assert_allclose(row, noise(eta), rtol=1e-6)
    # At step 1 the deviation is sqrt(eta): d noise / d eta = noise / (2 eta).
    np.testing.assert_allclose(jax.jacobian(noise)(1.0), noise(1.0) / 2, rtol=1e-6)
    # The key is structure: grad over the whole transformation sees eta and gamma only.
    grads = jax.jit(jax.grad(lambda tx: tx.update(jnp.ones(4), state)[0].sum()))(tx)
    assert isinstance(grads, gradtx.add_noise) and grads.key == tx.key


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"eta": -0.1}, ValueError, "eta must be >= 0, got -0.1"),
        ({"gamma": -1.0}, ValueError, "gamma must be >= 0, got -1.0"),
        ({"eta": gradtx.constant_schedule(0.1)}, TypeError, "eta must be a number"),
        ({"key": "seed"}, TypeError, "key must be an int seed or a PRNG key, got 'seed'"),
        ({"key": True}, TypeError, "key must be an int seed or a PRNG key, got True"),
        ({"key": 1.5}, TypeError, "key must be an int seed or a PRNG key, got 1.5"),
        ({"key": (1, 2, 3)}, ValueError, r"key \(1, 2, 3\) is not a valid key for .*threefry2x32"),
        ({"key": (0, 2**32)}, ValueError, r"key words must be in \[0, 2\*\*32\)"),
        ({"key": (0, 1.0)}, TypeError, "must hold ints"),
        ({"key": np.array([1, 2], np.int32)}, TypeError, "raw uint32 key data"),
        ({"key": 0, "key_impl": "nope"}, ValueError, "is not a valid key for the PRNG .*nope"),
        ({"key": 0, "key_impl": 3}, TypeError, "key_impl must be the name"),
        ({"key": 2**70}, ValueError, "is not a valid key"),
    ],
)
def test_add_noise_errors_name_the_argument(arguments, error, message):
    arguments = {"eta": 0.1, "gamma": 0.55, "key": 0} | arguments
    with pytest.raises(error, match=message):
        gradtx.add_noise(**arguments)


def test_add_noise_key_errors():
    with pytest.raises(
        ValueError, match=r"a single PRNG key, got an array of keys of shape \(2,\)"
    ):
        gradtx.add_noise(0.1, 0.5, jax.random.split(jax.random.key(0)))
    with pytest.raises(ValueError, match="key is a 'rbg' key but key_impl is 'threefry2x32'"):
        gradtx.add_noise(0.1, 0.5, jax.random.key(0, impl="rbg"), key_impl="threefry2x32")
    with pytest.raises(TypeError, match="key must be concrete"):
        jax.jit(lambda key: gradtx.add_noise(0.1, 0.5, key).eta)(jax.random.key(0))
    with pytest.warns(UserWarning, match="add_noise got no key; using seed 0"):
        tx = gradtx.add_noise(0.1, 0.5)
    assert tx.key == 0
    with pytest.raises(ValueError, match="add_noise was given a"):
        gradtx.add_noise(0.1, 0.5, 0).update(jnp.ones(2), gradtx.EmptyState())


def test_add_noise_is_a_value():
    tx = gradtx.add_noise(0.01, 0.55, 0)
    assert repr(tx) == "add_noise(eta=0.01, gamma=0.55, key=0)"
    assert tx == gradtx.add_noise(eta=0.01, gamma=0.55, key=0)
    assert tx != gradtx.add_noise(0.01, 0.55, 1)
    assert jax.tree.leaves(tx) == [0.01, 0.55]
