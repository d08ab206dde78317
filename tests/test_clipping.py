"""Clipping and constraining transformations: parity with Optax 0.2.8, corners, errors.

Each parity case runs the gradtx transformation (passed to the jitted function
as an argument, so its hyperparameters are traced) and its Optax counterpart
side by side in one ``lax.scan`` of 100 steps, on a small nested tree with a
None leaf and fresh random gradients at every step, whose scale varies so that
clipping engages at some steps and not at others.
"""

import functools
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

STEPS = 100
EAGER_STEPS = 3
TEMPLATE = {"dense": {"w": (3, 2), "b": (2,)}, "stack": [()], "frozen": None}
DTYPES = [jnp.float32, jnp.bfloat16]

# Elementwise tolerances: |gradtx - optax| <= rtol * |optax| + atol * max|optax|,
# the maximum taken over the leaf (all steps), so entries near zero are judged
# on the leaf's scale. float32: the same operations as Optax, in the same order;
# the tolerance only absorbs XLA fusing two programs differently (a few ulps).
# bfloat16: Optax computes norms in bfloat16, gradtx in float32, so one rounding
# lands differently now and then (an ulp is 2**-8 to 2**-7 relative), and the
# parameters then drift apart by an ulp or two of their own scale. Any real
# difference in a rule (a missing factor, a wrong branch) is far larger.
TOLERANCES = {
    jnp.float32: {"rtol": 1e-5, "atol": 1e-5},
    jnp.bfloat16: {"rtol": 2.0**-6, "atol": 2.0**-5},
}
# gradtx on bfloat16 against Optax in float32 on the same inputs, rounded once
# to bfloat16: equal but for an f32 ulp of fusion flipping a rounding.
ONE_BF16_ULP = {"rtol": 2.0**-8, "atol": 0.0}


def _is_shape(node: Any) -> bool:
    return isinstance(node, tuple) and all(isinstance(size, int) for size in node)


def random_tree(rng: np.random.Generator, dtype: Any, leading: tuple[int, ...] = ()) -> Any:
    """A tree shaped like TEMPLATE (None stays None), standard-normal leaves.

    Built in NumPy and converted once: eager JAX would compile a kernel per op.
    """

    def leaf(shape: Any) -> Any:
        if shape is None:
            return None
        return jnp.asarray(rng.standard_normal(leading + shape, dtype=np.float32).astype(dtype))

    return jax.tree.map(leaf, TEMPLATE, is_leaf=lambda x: x is None or _is_shape(x))


@functools.cache
def gradient_steps(dtype: Any, *, nans: bool = False) -> Any:
    """STEPS gradients stacked on a leading axis, with a step-dependent scale.

    The scale runs from about 0.05 to 2.7, so global norms (about 4 times the
    scale) fall on both sides of the thresholds used below.
    """
    rng = np.random.default_rng(1)
    scales = np.exp(rng.uniform(-3.0, 1.0, size=STEPS)).astype(np.float32)
    stacked = random_tree(rng, np.float32, leading=(STEPS,))

    def scaled(g: jax.Array) -> jax.Array:
        g = np.asarray(g) * scales.reshape((STEPS,) + (1,) * (g.ndim - 1))
        if nans:
            g = np.where(rng.uniform(size=g.shape) < 0.1, np.nan, g)
        return jnp.asarray(g.astype(dtype))

    return jax.tree.map(scaled, stacked)


class Case(NamedTuple):
    name: str
    gradtx_tx: Any
    optax_tx: Any
    nonnegative_params: bool = False
    nans: bool = False
    # One rule computed in float32: on bfloat16 inputs it equals Optax's float32
    # result rounded once to bfloat16 (a chain rounds between its members).
    upcast_exact: bool = True
    # Adam's second moment in bfloat16 adds (1 - 0.999) * g**2 below the
    # resolution of nu (and b2 itself rounds to 1): an ulp of difference in the
    # gradient sends it down another rounding path, so only dtypes are compared.
    bf16_state_comparable: bool = True


CASES = [
    Case("clip", gradtx.clip(0.5), optax.clip(0.5)),
    Case("clip_by_global_norm", gradtx.clip_by_global_norm(1.0), optax.clip_by_global_norm(1.0)),
    Case("clip_by_block_rms", gradtx.clip_by_block_rms(0.5), optax.clip_by_block_rms(0.5)),
    Case("adaptive_grad_clip", gradtx.adaptive_grad_clip(0.1), optax.adaptive_grad_clip(0.1)),
    Case("zero_nans", gradtx.zero_nans(), optax.zero_nans(), nans=True),
    Case(
        "clip_then_sgd",
        gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.scale(-0.1)),
        optax.chain(optax.clip_by_global_norm(1.0), optax.scale(-0.1)),
        upcast_exact=False,
    ),
    Case(
        "sgd_then_keep_params_nonnegative",
        gradtx.chain(gradtx.scale(-0.5), gradtx.keep_params_nonnegative()),
        optax.chain(optax.scale(-0.5), optax.keep_params_nonnegative()),
        nonnegative_params=True,
        upcast_exact=False,
    ),
    Case(
        "transformer_recipe",
        gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-3)),
        optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)),
        upcast_exact=False,
        bf16_state_comparable=False,
    ),
]


def initial_params(case: Case, dtype: Any) -> Any:
    params = random_tree(np.random.default_rng(0), dtype)
    if case.nonnegative_params:
        params = jax.tree.map(jnp.abs, params)
    return params


def upcast(tree: Any) -> Any:
    return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


class Run(NamedTuple):
    """One case's final carry and per-step outputs (stacked on a leading axis)."""

    gradtx_state: Any
    optax_state: Any
    gradtx_updates: Any
    optax_updates: Any
    reference_updates: Any
    gradtx_params: Any
    optax_params: Any


def _step(case: Case, with_reference: bool, gradtx_tx: Any, carry: Any, grads: Any) -> Any:
    gradtx_params, gradtx_state, optax_params, optax_state = carry
    gradtx_updates, gradtx_state = gradtx_tx.update(grads, gradtx_state, gradtx_params)
    optax_updates, optax_state = case.optax_tx.update(grads, optax_state, optax_params)
    reference = None
    if with_reference:  # Optax in float32 on the very inputs gradtx saw.
        float32_params = upcast(gradtx_params)
        reference, _ = case.optax_tx.update(
            upcast(grads), case.optax_tx.init(float32_params), float32_params
        )
    carry = (
        gradtx.apply_updates(gradtx_params, gradtx_updates),
        gradtx_state,
        optax.apply_updates(optax_params, optax_updates),
        optax_state,
    )
    return carry, (gradtx_updates, optax_updates, reference, carry[0], carry[2])


def _scan_all(flags: tuple[bool, ...], gradtx_txs: Any, params: Any, gradients: Any) -> Any:
    def step(carries: Any, grads: Any) -> Any:
        results = [
            _step(case, flag, tx, carry, g)
            for case, flag, tx, carry, g in zip(CASES, flags, gradtx_txs, carries, grads)
        ]
        return tuple(r[0] for r in results), tuple(r[1] for r in results)

    carries = tuple(
        (p, tx.init(p), p, case.optax_tx.init(p)) for case, tx, p in zip(CASES, gradtx_txs, params)
    )
    return jax.lax.scan(step, carries, gradients)


@functools.cache
def jitted_runs(dtype: Any) -> dict[str, Run]:
    """Every case for STEPS steps in one jitted scan (one compilation per dtype).

    The gradtx transformations are arguments of the jitted function, so their
    hyperparameters are traced; the Optax ones are closed over.
    """
    params = tuple(initial_params(case, dtype) for case in CASES)
    gradients = tuple(gradient_steps(dtype, nans=case.nans) for case in CASES)
    flags = tuple(case.upcast_exact and dtype == jnp.bfloat16 for case in CASES)
    run = jax.jit(functools.partial(_scan_all, flags))
    finals, outputs = run(tuple(case.gradtx_tx for case in CASES), params, gradients)
    return {
        case.name: Run(final[1], final[3], *output)
        for case, final, output in zip(CASES, finals, outputs)
    }


def assert_trees_close(actual: Any, expected: Any, *, rtol: float, atol: float) -> None:
    """Same structure and dtypes; values within the tolerances described above."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.dtype == e.dtype, (a.dtype, e.dtype)
        a, e = np.asarray(a, np.float32), np.asarray(e, np.float32)
        scale = float(np.abs(e).max()) if e.size else 0.0
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol * scale)


@jax.jit
def jitted_update(tx: Any, grads: Any, params: Any) -> Any:
    """One gradtx update from a fresh state; the transformation is traced."""
    return tx.update(grads, tx.init(params), params)[0]


@functools.partial(jax.jit, static_argnums=0)
def optax_update(tx: Any, grads: Any, params: Any) -> Any:
    """One Optax update from a fresh state."""
    return tx.update(grads, tx.init(params), params)[0]


def state_dict(state: Any) -> Any:
    # Optax's EmptyState is another class than gradtx's: compare as serialized.
    return flax.serialization.to_state_dict(state)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_optax_for_100_jitted_steps(case, dtype):
    run = jitted_runs(dtype)[case.name]
    tolerance = TOLERANCES[dtype]
    assert_trees_close(run.gradtx_updates, run.optax_updates, **tolerance)
    assert_trees_close(run.gradtx_params, run.optax_params, **tolerance)
    assert run.gradtx_updates["frozen"] is None and run.gradtx_params["frozen"] is None
    if run.reference_updates is not None:
        rounded = jax.tree.map(
            lambda r, u: r.astype(u.dtype), run.reference_updates, run.gradtx_updates
        )
        assert_trees_close(run.gradtx_updates, rounded, **ONE_BF16_ULP)
    if dtype == jnp.float32 or case.bf16_state_comparable:
        assert_trees_close(state_dict(run.gradtx_state), state_dict(run.optax_state), **tolerance)
    else:
        dtypes = jax.tree.map(lambda x: x.dtype, state_dict(run.gradtx_state))
        assert dtypes == jax.tree.map(lambda x: x.dtype, state_dict(run.optax_state))


def test_the_cases_clip_at_some_steps_and_not_at_others():
    runs = jitted_runs(jnp.float32)
    updates = jax.tree.leaves(runs["clip_by_global_norm"].gradtx_updates)
    norms = np.sqrt(sum(np.square(u).reshape(STEPS, -1).sum(axis=1) for u in updates))
    clipped = np.isclose(norms, 1.0, rtol=1e-5)
    assert 10 < clipped.sum() < STEPS - 10
    gradients = gradient_steps(jnp.float32, nans=True)
    assert 0 < np.mean(jax.tree.leaves(jax.tree.map(jnp.isnan, gradients))[0]) < 0.5
    updates = runs["zero_nans"].gradtx_updates
    assert not any(np.isnan(leaf).any() for leaf in jax.tree.leaves(updates))
    last_gradients = jax.tree.map(lambda g: np.isnan(g[-1]).any(), gradients)
    found_nan = runs["zero_nans"].gradtx_state.found_nan
    assert jax.tree.map(bool, found_nan) == jax.tree.map(bool, last_gradients)


# Eager JAX compiles a kernel per operation and shape, so the loop is short and
# bfloat16 is run only for the rules that compute norms.
EAGER_CASES = [(case, jnp.float32) for case in CASES] + [
    (case, jnp.bfloat16)
    for case in CASES
    if case.name in ("clip_by_global_norm", "adaptive_grad_clip")
]


@pytest.mark.parametrize(
    "case, dtype",
    EAGER_CASES,
    ids=[f"{case.name}-{jnp.dtype(dtype).name}" for case, dtype in EAGER_CASES],
)
def test_eager_steps_equal_jitted_steps(case, dtype):
    jitted_updates = jitted_runs(dtype)[case.name].gradtx_updates
    params = initial_params(case, dtype)
    gradients = gradient_steps(dtype, nans=case.nans)
    state = case.gradtx_tx.init(params)
    for index in range(EAGER_STEPS):
        grads = jax.tree.map(lambda g, i=index: g[i], gradients)
        updates, state = case.gradtx_tx.update(grads, state, params)
        params = gradtx.apply_updates(params, updates)
        expected = jax.tree.map(lambda u, i=index: u[i], jitted_updates)
        assert_trees_close(updates, expected, **TOLERANCES[dtype])


def test_state_layouts_are_optax():
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2), "frozen": None}
    for tx in (
        gradtx.clip(1.0),
        gradtx.clip_by_global_norm(1.0),
        gradtx.clip_by_block_rms(1.0),
        gradtx.adaptive_grad_clip(0.1),
        gradtx.keep_params_nonnegative(),
    ):
        assert tx.init(params) == gradtx.EmptyState()
    assert gradtx.ClipState is gradtx.ClipByGlobalNormState is gradtx.EmptyState
    assert gradtx.AdaptiveGradClipState is gradtx.NonNegativeParamsState is gradtx.EmptyState
    state = gradtx.zero_nans().init(params)
    reference = optax.zero_nans().init(params)
    assert type(state).__name__ == type(reference).__name__ == "ZeroNansState"
    assert state._fields == reference._fields == ("found_nan",)
    assert state.found_nan["frozen"] is None
    for leaf, expected in zip(jax.tree.leaves(state), jax.tree.leaves(reference)):
        assert (leaf.dtype, leaf.shape) == (expected.dtype, expected.shape) == (jnp.bool_, ())


@pytest.mark.parametrize("name", ["zero_nans", "transformer_recipe"])
def test_an_optax_trained_state_loads_unchanged(name):
    case = next(c for c in CASES if c.name == name)
    run = jitted_runs(jnp.float32)[name]
    template = case.gradtx_tx.init(initial_params(case, jnp.float32))
    loaded = flax.serialization.from_state_dict(template, state_dict(run.optax_state))
    assert jax.tree.structure(loaded) == jax.tree.structure(run.gradtx_state)
    assert_trees_close(loaded, run.gradtx_state, **TOLERANCES[jnp.float32])
    # And it keeps training: one more step from the loaded state.
    grads = jax.tree.map(lambda g: g[0], gradient_steps(jnp.float32, nans=case.nans))
    last_params = jax.tree.map(lambda p: p[-1], run.gradtx_params)
    updates, _ = case.gradtx_tx.update(grads, loaded, last_params)
    assert jax.tree.structure(updates) == jax.tree.structure(grads)


@pytest.mark.parametrize(
    "name, first, second",
    [
        ("clip_by_global_norm", 1.0, 2.0),
        ("clip", 0.5, 0.25),
        ("clip_by_block_rms", 0.5, 0.25),
        ("adaptive_grad_clip", 0.1, 0.05),
    ],
)
def test_a_new_hyperparameter_value_does_not_retrace(name, first, second):
    traces = 0

    @jax.jit
    def step(tx, grads, params):
        nonlocal traces
        traces += 1
        return tx.update(grads, tx.init(params), params)[0]

    params = random_tree(np.random.default_rng(0), jnp.float32)
    grads = jax.tree.map(lambda g: g[0] * 3.0, gradient_steps(jnp.float32))
    for value in (first, second):
        result = step(getattr(gradtx, name)(value), grads, params)
        expected = optax_update(getattr(optax, name)(value), grads, params)
        assert_trees_close(result, expected, **TOLERANCES[jnp.float32])
    assert traces == 1


def test_traced_hyperparameters_keep_bfloat16_updates():
    # Optax's clip_by_global_norm fails here (lax.select of float32 and bfloat16).
    params = random_tree(np.random.default_rng(0), jnp.bfloat16)
    grads = jax.tree.map(lambda g: g[0] * 3.0, gradient_steps(jnp.bfloat16))
    txs = (
        gradtx.clip(jnp.float32(0.5)),
        gradtx.clip_by_global_norm(jnp.float32(1.0)),
        gradtx.clip_by_block_rms(jnp.float32(0.5)),
        gradtx.adaptive_grad_clip(jnp.float32(0.1), eps=jnp.float32(1e-3)),
        gradtx.keep_params_nonnegative(),
        gradtx.zero_nans(),
    )
    results = jax.jit(lambda txs, g, p: [tx.update(g, tx.init(p), p)[0] for tx in txs])(
        txs, grads, params
    )
    for updates in results:
        assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda g: g.dtype, grads)


def test_clip_by_global_norm_vmaps_over_max_norm():
    grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}

    def clipped(max_norm):
        tx = gradtx.clip_by_global_norm(max_norm)
        return tx.update(grads, tx.init(grads))[0]

    result = jax.vmap(clipped)(jnp.array([1.0, 2.5, 10.0]))
    np.testing.assert_allclose(result["a"][:, 0], [0.6, 1.5, 3.0], rtol=1e-6)
    np.testing.assert_allclose(result["b"][:, 0], [0.8, 2.0, 4.0], rtol=1e-6)


def test_global_norm_matches_optax_and_skips_none():
    tree = random_tree(np.random.default_rng(3), jnp.float32)
    np.testing.assert_array_equal(gradtx.global_norm(tree), optax.tree.norm(tree))
    assert gradtx.global_norm({}) == 0.0
    assert gradtx.global_norm({"frozen": None}).dtype == jnp.float32
    np.testing.assert_allclose(gradtx.global_norm({"a": 3.0, "b": [jnp.array([4.0]), None]}), 5.0)


def test_norms_are_computed_in_float32_for_half_precision():
    # 300**2 overflows float16: Optax's norm is inf and the update collapses to zero.
    grads = {"a": jnp.array([300.0, 400.0], jnp.float16)}
    updates = jitted_update(gradtx.clip_by_global_norm(1.0), grads, grads)
    assert updates["a"].dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(updates["a"], np.float32), [0.6, 0.8], rtol=1e-3)
    assert gradtx.global_norm(grads).dtype == jnp.float32
    np.testing.assert_allclose(gradtx.global_norm(grads), 500.0)
    rms = jitted_update(gradtx.clip_by_block_rms(1.0), grads, grads)
    assert np.isfinite(np.asarray(rms["a"], np.float32)).all()
    assert float(np.abs(np.asarray(rms["a"], np.float32)).max()) > 0.5


def test_python_scalar_leaves():
    # Closed over, the numbers stay Python floats while update is traced.
    grads = {"a": 3.0, "b": jnp.array([4.0]), "frozen": None}
    params = {"a": 2.0, "b": jnp.array([1.0]), "frozen": None}
    as_arrays = jax.tree.map(jnp.asarray, grads)
    param_arrays = jax.tree.map(jnp.asarray, params)
    pairs = [
        (gradtx.clip(1.0), optax.clip(1.0)),
        (gradtx.clip_by_global_norm(1.0), optax.clip_by_global_norm(1.0)),
        (gradtx.clip_by_block_rms(1.0), optax.clip_by_block_rms(1.0)),
        (gradtx.adaptive_grad_clip(0.5), optax.adaptive_grad_clip(0.5)),
        (gradtx.zero_nans(), optax.zero_nans()),
        (gradtx.keep_params_nonnegative(), optax.keep_params_nonnegative()),
    ]

    def both(tx, reference):
        updates, _ = tx.update(grads, tx.init(params), params)
        expected, _ = reference.update(as_arrays, reference.init(param_arrays), param_arrays)
        return updates, expected

    results = jax.jit(lambda: [both(tx, reference) for tx, reference in pairs])()
    for updates, expected in results:
        assert updates["frozen"] is None
        assert_trees_close(updates, expected, **TOLERANCES[jnp.float32])
    # And eagerly, where a Python number meets concrete arithmetic.
    tx = gradtx.clip_by_global_norm(1.0)
    updates, _ = tx.update({"a": 3.0, "b": 4.0}, tx.init(None))
    np.testing.assert_allclose([updates["a"], updates["b"]], [0.6, 0.8], rtol=1e-6)


def test_complex_leaves_match_optax():
    rng = np.random.default_rng(5)

    def complex_tree():
        return {
            "w": jnp.asarray(
                rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2)), jnp.complex64
            ),
            "b": jnp.asarray(rng.standard_normal(2) + 1j * rng.standard_normal(2), jnp.complex64),
        }

    grads, params = complex_tree(), complex_tree()
    pairs = [
        (gradtx.clip_by_global_norm(1.0), optax.clip_by_global_norm(1.0)),
        (gradtx.clip_by_block_rms(0.5), optax.clip_by_block_rms(0.5)),
        (gradtx.adaptive_grad_clip(0.3), optax.adaptive_grad_clip(0.3)),
        (gradtx.zero_nans(), optax.zero_nans()),
    ]

    def both(tx, reference):
        expected, _ = reference.update(grads, reference.init(params), params)
        return tx.update(grads, tx.init(params), params)[0], expected

    results, norms = jax.jit(
        lambda: (
            [both(tx, reference) for tx, reference in pairs],
            (gradtx.global_norm(grads), optax.tree.norm(grads)),
        )
    )()
    for updates, expected in results:
        for key in grads:
            assert updates[key].dtype == jnp.complex64
            np.testing.assert_allclose(updates[key], expected[key], rtol=1e-6)
    assert norms[0].dtype == jnp.float32
    np.testing.assert_allclose(*norms, rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, (0, 1), [1]])
def test_adaptive_grad_clip_axis_matches_optax(axis):
    rng = np.random.default_rng(6)
    params = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)}
    grads = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)}
    tx = gradtx.adaptive_grad_clip(0.2, axis=axis)
    optax_axis = tuple(axis) if isinstance(axis, list) else axis
    reference = optax.adaptive_grad_clip(0.2, axis=optax_axis)
    updates = jitted_update(tx, grads, params)
    expected = optax_update(reference, grads, params)
    assert_trees_close(updates, expected, **TOLERANCES[jnp.float32])
    assert not np.allclose(updates["w"], grads["w"]), "the case should clip"


@pytest.mark.parametrize("clipping, eps", [(0.3, 1e-3), (0.2, 3.0)])
def test_adaptive_grad_clip_default_units_by_rank_match_optax(clipping, eps):
    # Unit norms here are about 1 to 4: eps = 3 engages, then it is what bounds.
    rng = np.random.default_rng(7)
    shapes = {
        "scalar": (),
        "vector": (5,),
        "row": (1, 4),
        "heads": (2, 2, 2),
        "kernel": (2, 2, 3, 4),
        "conv3d": (2, 2, 2, 2, 3),
    }
    params = {k: jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for k, s in shapes.items()}
    grads = {k: jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for k, s in shapes.items()}
    updates = jitted_update(gradtx.adaptive_grad_clip(clipping, eps=eps), grads, params)
    expected = optax_update(optax.adaptive_grad_clip(clipping, eps=eps), grads, params)
    assert_trees_close(updates, expected, **TOLERANCES[jnp.float32])


def test_keep_params_nonnegative_keeps_the_update_dtype():
    params = jnp.array([1.0, 0.5, 2.0], jnp.float32)
    updates = jnp.array([-2.0, 0.25, -1.0], jnp.bfloat16)
    tx = gradtx.keep_params_nonnegative()
    result, _ = tx.update(updates, tx.init(params), params)
    assert result.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(result, np.float32), [-1.0, 0.25, -1.0])


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: gradtx.clip(-1.0), r"max_delta must be >= 0, got -1.0"),
        (lambda: gradtx.clip(float("nan")), r"max_delta must be >= 0"),
        (lambda: gradtx.clip_by_global_norm(0.0), r"max_norm must be > 0, got 0.0"),
        (lambda: gradtx.clip_by_global_norm(-1.0), r"max_norm must be > 0"),
        (lambda: gradtx.clip_by_global_norm(jnp.ones(2)), r"max_norm must be a scalar"),
        (lambda: gradtx.clip_by_block_rms(0.0), r"threshold must be > 0, got 0.0"),
        (lambda: gradtx.adaptive_grad_clip(-0.1), r"clipping must be >= 0, got -0.1"),
        (lambda: gradtx.adaptive_grad_clip(0.1, eps=-1.0), r"eps must be >= 0, got -1.0"),
    ],
)
def test_out_of_range_hyperparameters_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: gradtx.adaptive_grad_clip(0.1, axis="0"), r"axis must be None, an int"),
        (lambda: gradtx.adaptive_grad_clip(0.1, axis=(0, 1.5)), r"axis must be None, an int"),
        (lambda: gradtx.adaptive_grad_clip(0.1, axis=True), r"axis must be None, an int"),
        (
            lambda: gradtx.clip_by_global_norm(gradtx.constant_schedule(1.0)),
            r"max_norm must be a number or an array, not a schedule",
        ),
        (lambda: gradtx.clip("big"), r"max_delta must be a number"),
    ],
)
def test_wrong_types_are_refused(build, message):
    with pytest.raises(TypeError, match=message):
        build()


@pytest.mark.parametrize("tx", [gradtx.adaptive_grad_clip(0.1), gradtx.keep_params_nonnegative()])
def test_transformations_that_need_params_say_so(tx):
    grads = {"w": jnp.ones(2)}
    name = type(tx).__name__
    with pytest.raises(ValueError, match=rf"{name} needs the current parameters"):
        tx.update(grads, tx.init(grads))


@pytest.mark.parametrize("tx", [gradtx.adaptive_grad_clip(0.1), gradtx.keep_params_nonnegative()])
def test_params_that_do_not_match_name_the_key_path(tx):
    grads = {"w": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"\['b'\] is in the gradients but not in the parameters"):
        tx.update(grads, tx.init(grads), {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"\['b'\] has shape \(3,\) in the gradients but \(2,\)"):
        tx.update(grads, tx.init(grads), {"w": jnp.ones(2), "b": jnp.ones(2)})


def test_zero_nans_names_the_key_path_of_a_mismatch():
    tx = gradtx.zero_nans()
    state = tx.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"\['b'\] is in the gradients but not in the optimizer"):
        tx.update({"w": jnp.ones(2), "b": jnp.ones(2)}, state)


def test_adaptive_grad_clip_names_a_leaf_without_a_default_unit():
    grads = {"deep": jnp.ones((2,) * 6)}
    tx = gradtx.adaptive_grad_clip(0.1)
    with pytest.raises(ValueError, match=r"\['deep'\] of shape \(2, 2, 2, 2, 2, 2\).*axis="):
        tx.update(grads, tx.init(grads), grads)
    clipped = jitted_update(gradtx.adaptive_grad_clip(0.1, axis=(0, 1)), grads, grads)
    assert clipped["deep"].shape == (2,) * 6


def test_values_print_compare_and_keep_a_list_axis_as_a_tuple():
    tx = gradtx.adaptive_grad_clip(0.1, axis=[0, 1])
    assert tx.axis == (0, 1)
    assert tx == gradtx.adaptive_grad_clip(0.1, 1e-3, (0, 1))
    assert hash(tx) == hash(gradtx.adaptive_grad_clip(0.1, axis=(0, 1)))
    assert repr(tx) == "adaptive_grad_clip(clipping=0.1, eps=0.001, axis=(0, 1))"
    assert repr(gradtx.clip_by_global_norm(1.0)) == "clip_by_global_norm(max_norm=1.0)"
    assert repr(gradtx.zero_nans()) == "zero_nans()"
    assert jax.tree.leaves(gradtx.chain(gradtx.clip(0.5), gradtx.clip_by_block_rms(2.0))) == [
        0.5,
        2.0,
    ]
