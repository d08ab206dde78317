"""Runs a transformation over a sequence of gradients, jitted (one scan) or eagerly.

Shared by the tests of the wrappers (apply_if_finite, MultiSteps, accumulate,
apply_every), which compare gradtx with Optax step by step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

# A small nested tree with a frozen (None) leaf, as Flax marks one.
SHAPES = {"a": {"w": (3, 2), "b": (2,)}, "c": (3,), "frozen": None}


def _is_shape(node):
    return node is None or isinstance(node, tuple)


def random_tree(rng, dtype, *, leading=(), scale=1.0):
    """A tree shaped like SHAPES (each leaf with extra ``leading`` axes)."""

    def leaf(shape):
        if shape is None:
            return None
        return jnp.asarray(scale * rng.normal(size=leading + shape), dtype)

    return jax.tree.map(leaf, SHAPES, is_leaf=_is_shape)


def gradients(steps, dtype, *, seed=0, bad=None, scaled=None):
    """Stacked gradients for ``steps`` steps.

    Args:
      steps: the number of steps (the leading axis).
      dtype: the gradients' dtype.
      seed: the random seed.
      bad: {step: value} puts ``value`` (NaN, Inf) into one element that step,
        in a leaf that changes from one bad step to the next.
      scaled: {step: factor} multiplies that step's gradients by ``factor``.
    """
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, jnp.float32, leading=(steps,))
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [np.array(leaf) for leaf in leaves]
    for position, (step, value) in enumerate(sorted((bad or {}).items())):
        leaf = leaves[position % len(leaves)]
        leaf[(step,) + (0,) * (leaf.ndim - 1)] = value
    for step, factor in (scaled or {}).items():
        for leaf in leaves:
            leaf[step] *= factor
    return treedef.unflatten([jnp.asarray(leaf, dtype) for leaf in leaves])


def step_of(stacked, step):
    """One step's slice of a stacked tree."""
    return jax.tree.map(lambda leaf: leaf[step], stacked)


def params_like(dtype, seed=1):
    return random_tree(np.random.default_rng(seed), dtype)


def run_jitted(tx, params, grads):
    """(updates, params, state) after every step, stacked, from one jitted scan."""
    return run_jitted_all([tx], params, grads)[0]


def run_jitted_all(txs, params, grads):
    """run_jitted for several transformations, compiled together (once, not per tx)."""

    def run_one(tx, params, grads):
        def body(carry, g):
            params, state = carry
            updates, state = tx.update(g, state, params)
            return (optax.apply_updates(params, updates), state), (updates, state)

        updates, states = jax.lax.scan(body, (params, tx.init(params)), grads)[1]
        return updates, applied(params, updates), states

    run = jax.jit(lambda params, grads: [run_one(tx, params, grads) for tx in txs])
    return run(params, grads)


def applied(params, stacked_updates):
    """The params after each step, p_t = p_(t-1) + u_t, from the stacked updates.

    Computed by a loop of its own rather than taken from the scan that made the
    updates: there XLA may fuse the add into the update's arithmetic (an FMA in
    one program and not in another), so equal updates could give params that
    differ in the last bit.
    """

    def body(params, updates):
        params = optax.apply_updates(params, updates)
        return params, params

    return jax.lax.scan(body, params, stacked_updates)[1]


def run_eager(tx, params, grads, steps):
    """As run_jitted, without jit, for the first ``steps`` steps."""
    state = tx.init(params)
    outputs = []
    for step in range(steps):
        updates, state = tx.update(step_of(grads, step), state, params)
        params = optax.apply_updates(params, updates)
        outputs.append((updates, params, state))
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outputs)


def head(stacked, steps):
    """The first ``steps`` steps of a stacked tree."""
    return jax.tree.map(lambda leaf: leaf[:steps], stacked)


def assert_leaves_close(actual, expected, *, rtol=0.0, atol=0.0):
    """Leaf by leaf (jax.tree.leaves): same count, dtype and shape, close values.

    With the default tolerances the values must be equal (NaN equal to NaN).
    """
    actual_leaves, expected_leaves = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert len(actual_leaves) == len(expected_leaves)
    for position, (a, e) in enumerate(zip(actual_leaves, expected_leaves)):
        a, e = jnp.asarray(a), jnp.asarray(e)
        assert a.dtype == e.dtype, (position, a.dtype, e.dtype)
        assert a.shape == e.shape, (position, a.shape, e.shape)
        a, e = np.asarray(a.astype(jnp.float32)), np.asarray(e.astype(jnp.float32))
        if rtol == 0.0 and atol == 0.0:
            np.testing.assert_array_equal(a, e, err_msg=f"leaf {position}")
        else:
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"leaf {position}")
