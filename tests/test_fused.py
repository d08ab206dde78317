"""gradtx.fused_apply: the native one-pass step equals the plain step, bit for bit.

Both paths are compared under ``jax.jit`` (the kernel reproduces XLA's compiled
arithmetic, including its fused multiply-adds, not the op-by-op eager one).
Every comparison also checks that the fast path was really taken (or really
not taken) by looking for the custom call in the lowered program.
"""

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.fused import build

NATIVE = build.compiler() is not None and not build.disabled()
needs_native = pytest.mark.skipif(not NATIVE, reason="no C++ compiler or native kernel disabled")


def plain_apply(tx, params, state, grads):
    updates, state = tx.update(grads, state, params)
    return gradtx.apply_updates(params, updates), state


def make_params(seed=0):
    # More leaves than one custom call takes (16), a leaf spanning several work
    # chunks (32768 elements), one-element leaves (which take XLA's path) and
    # an empty leaf.
    key = jax.random.PRNGKey(seed)
    shapes = [(40_000,), (3, 5), (), (0,), (7, 1, 3), (1, 1)] + [(11 * i + 2,) for i in range(14)]
    return {
        f"leaf{i:02d}": jax.random.normal(jax.random.fold_in(key, i), shape)
        for i, shape in enumerate(shapes)
    }


def gradients(params, step):
    # Magnitudes from 1e-3 to 10 so the moments see very different scales.
    key = jax.random.PRNGKey(1000 + step)
    scale = 10.0 ** (step % 5 - 3)
    return jax.tree.map(
        lambda p: scale * jax.random.normal(jax.random.fold_in(key, p.size), p.shape), params
    )


def fresh_jit(function, **kwargs):
    # jax.jit shares its trace cache between jits of the same function, and the
    # path is chosen when tracing: wrap it so every test traces anew.
    return jax.jit(lambda *args: function(*args), **kwargs)


def uses_kernel(tx, params, state, grads):
    text = fresh_jit(gradtx.fused_apply).lower(tx, params, state, grads).as_text()
    return "GradtxStep_" in text


def assert_identical(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def compare_steps(tx, params, steps=4, closed_over=False):
    """Runs both paths from the same inputs at every step; returns nothing, asserts."""
    if closed_over:
        fused = jax.jit(lambda p, s, g: gradtx.fused_apply(tx, p, s, g))
        plain = jax.jit(lambda p, s, g: plain_apply(tx, p, s, g))
    else:
        fused_jit, plain_jit = fresh_jit(gradtx.fused_apply), jax.jit(plain_apply)
        fused = lambda p, s, g: fused_jit(tx, p, s, g)  # noqa: E731
        plain = lambda p, s, g: plain_jit(tx, p, s, g)  # noqa: E731
    state = tx.init(params)
    for step in range(steps):
        grads = gradients(params, step)
        expected = plain(params, state, grads)
        assert_identical(fused(params, state, grads), expected)
        params, state = expected


OPTIMIZERS = {
    "adam": gradtx.adam(1e-3),
    "adamw": gradtx.adamw(1e-3, weight_decay=0.1),
    "adamw_schedules": gradtx.adamw(
        gradtx.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 10),
        weight_decay=gradtx.linear_schedule(0.1, 0.0, 5),
    ),
    "adamw_mask": gradtx.adamw(
        1e-3, weight_decay=0.1, mask=gradtx.path_mask(exclude=[r"leaf0[2-4]", r"leaf1"])
    ),
    "adamw_callable_mask": gradtx.adamw(
        1e-3, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    ),
    "sgd": gradtx.sgd(0.1),
    "sgd_momentum": gradtx.sgd(0.1, momentum=0.9),
    "sgd_nesterov": gradtx.sgd(0.05, momentum=0.9, nesterov=True),
    "sgd_weight_decay": gradtx.sgd(0.1, momentum=0.9, weight_decay=1e-2),
    "sgd_weight_decay_only": gradtx.sgd(gradtx.exponential_decay(0.1, 2, 0.5), weight_decay=1e-2),
    "adam_chain": gradtx.chain(gradtx.scale_by_adam(b1=0.5), gradtx.scale_by_learning_rate(0.1)),
    "adamw_chain": gradtx.chain(
        gradtx.scale_by_adam(),
        gradtx.add_decayed_weights(0.01),
        gradtx.scale_by_learning_rate(1e-3),
    ),
    "momentum_chain": gradtx.chain(
        gradtx.trace(decay=0.5), gradtx.scale_by_learning_rate(2.0, flip_sign=False)
    ),
    "adam_then_scale": gradtx.chain(gradtx.scale_by_adam(), gradtx.scale(-0.1)),
    # The catalogue: no optimizer is known to the fast path, each is derived
    # from its own update rule.
    "lion": gradtx.lion(1e-3, weight_decay=0.1),
    "adamax": gradtx.adamax(1e-3),
    "adamaxw": gradtx.adamaxw(1e-3),
    "amsgrad": gradtx.amsgrad(1e-3),
    "yogi": gradtx.yogi(1e-3),
    "sign_sgd": gradtx.sign_sgd(1e-3),
    "signum": gradtx.signum(1e-3),
    "radam": gradtx.radam(1e-3),
    "ademamix": gradtx.ademamix(1e-3),
    "optimistic_gradient_descent": gradtx.optimistic_gradient_descent(1e-3),
}

OPTIMIZERS |= {
    # Two contracted products in one sum, as XLA orders them.
    "nadam": gradtx.nadam(3e-3, b1=0.8, b2=0.99),
    "nadamw": gradtx.nadamw(1e-2, weight_decay=0.05, eps_root=1e-9),
    "adabelief": gradtx.adabelief(1e-3),
    "adan": gradtx.adan(1e-3),
    "clip_then_adam": gradtx.chain(gradtx.clip(0.5), gradtx.adam(1e-3)),
    # A reduction first (a global norm, trust ratios), then the one pass.
    "transformer_recipe": gradtx.chain(
        gradtx.clip_by_global_norm(1.0),
        gradtx.adamw(
            gradtx.warmup_cosine_decay_schedule(0.0, 1e-3, 2, 10),
            b2=0.95,
            weight_decay=0.1,
            mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
        ),
    ),
    "lars": gradtx.lars(1e-3),
    "lamb": gradtx.lamb(1e-3),
    "novograd": gradtx.novograd(1e-3),
}

# XLA's rsqrt (the CPU's estimate refined), which the kernel repeats. With
# momentum, the new params load the new trace (a loop of its own), so only
# the trace's loop reads the rsqrt, which it computes inline; centered, the
# subtraction nu - mu**2 contracts into the multiply-add XLA's loop has.
OPTIMIZERS |= {
    "rmsprop": gradtx.rmsprop(1e-3),
    "rmsprop_momentum": gradtx.rmsprop(1e-3, momentum=0.9),
    "rmsprop_centered": gradtx.rmsprop(1e-3, centered=True),
    "rmsprop_centered_momentum": gradtx.rmsprop(1e-3, centered=True, momentum=0.9),
    # The trace's two products rank equal and one has the negated learning
    # rate: LLVM turns that sum into a subtraction and contracts the other.
    "rmsprop_nesterov": gradtx.rmsprop(1e-3, momentum=0.9, nesterov=True),
    "adagrad": gradtx.adagrad(1e-2),
}

# What the fast path leaves to XLA: per-row maxima (SM3). The result is still
# the plain path's.
PARTLY_PLAIN = {
    "sm3": gradtx.sm3(1e-3),
}


@needs_native
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fast_path_equals_plain_path(name):
    tx = OPTIMIZERS[name]
    params = make_params()
    assert uses_kernel(tx, params, tx.init(params), params)
    compare_steps(tx, params)


@needs_native
@pytest.mark.parametrize("name", sorted(PARTLY_PLAIN))
def test_what_the_fast_path_leaves_to_xla_still_equals_the_plain_path(name):
    tx, params = PARTLY_PLAIN[name], make_params()
    assert not uses_kernel(tx, params, tx.init(params), params)
    compare_steps(tx, params, steps=3)


@needs_native
@pytest.mark.parametrize("name", ["adamw", "sgd_weight_decay"])
def test_several_threads_and_denormals(name):
    # Past 2**20 elements a call also runs on XLA's pool threads, which must
    # flush denormals to zero like XLA's own code (tiny gradients make some).
    tx = OPTIMIZERS[name]
    params = {"big": jax.random.normal(jax.random.PRNGKey(3), (2**20 + 12_345,))}
    grads = {"big": params["big"] * jnp.float32(1e-37)}
    state = tx.init(params)
    expected = jax.jit(plain_apply)(tx, params, state, grads)
    assert_identical(fresh_jit(gradtx.fused_apply)(tx, params, state, grads), expected)


@needs_native
@pytest.mark.parametrize(
    "name",
    ["adamw", "lion", "sgd_nesterov", "rmsprop", "rmsprop_centered_momentum", "rmsprop_nesterov"],
)
def test_fast_path_equals_plain_path_with_tx_closed_over(name):
    # Closed over, the hyperparameters are Python floats that XLA sees as
    # constants (1 - b1 is then rounded from float64); the kernel must agree.
    tx, params = OPTIMIZERS[name], make_params()
    step = jax.jit(lambda p, s, g: gradtx.fused_apply(tx, p, s, g))
    assert "GradtxStep_" in step.lower(params, tx.init(params), params).as_text()
    compare_steps(tx, params, closed_over=True)


@needs_native
def test_traced_hyperparameters_in_float32_arrays():
    tx = gradtx.adamw(jnp.float32(2e-3), b1=jnp.float32(0.8), weight_decay=jnp.float32(0.2))
    compare_steps(tx, make_params(), steps=3)


@needs_native
def test_changing_the_learning_rate_does_not_recompile():
    params = make_params()
    tx = gradtx.adamw(1e-3, weight_decay=0.1)
    state = tx.init(params)
    step = fresh_jit(gradtx.fused_apply)
    for learning_rate in (1e-3, 3e-3, 1e-2):
        tx = gradtx.adamw(learning_rate, weight_decay=0.1)
        params, state = step(tx, params, state, gradients(params, 0))
    assert step._cache_size() == 1


@needs_native
def test_donated_buffers_are_updated_in_place():
    params = make_params()
    tx = gradtx.adamw(1e-3)
    state = tx.init(params)
    grads = gradients(params, 0)
    expected = jax.jit(plain_apply)(tx, params, state, grads)
    step = fresh_jit(gradtx.fused_apply, donate_argnums=(1, 2))
    compiled = step.lower(tx, params, state, grads).compile()
    # No defensive copy of params or state and no params-sized temporary.
    assert not re.search(r"copy\(%(params|state)", compiled.as_text())
    params_bytes = sum(p.nbytes for p in jax.tree.leaves(params))
    assert compiled.memory_analysis().temp_size_in_bytes < 0.1 * params_bytes
    assert_identical(step(tx, params, state, grads), expected)
    assert params["leaf00"].is_deleted()


@needs_native
@pytest.mark.parametrize("tx", [gradtx.rmsprop(1e-3), gradtx.sgd(0.1, momentum=0.9)])
def test_a_step_without_a_count_is_still_dispatched_asynchronously(tx):
    # XLA's CPU client runs a program under 1,000 flops in the calling thread;
    # these states hold no step count, so only the kernel's spare operand
    # carries the program over that bar, without copying a donated buffer.
    params = make_params()
    state = tx.init(params)
    grads = gradients(params, 0)
    step = fresh_jit(gradtx.fused_apply, donate_argnums=(1, 2))
    compiled = step.lower(tx, params, state, grads).compile()
    assert "custom-call" in compiled.as_text()
    assert compiled.cost_analysis()["flops"] >= 1000
    assert not re.search(r"copy\(%(params|state)", compiled.as_text())
    params_bytes = sum(p.nbytes for p in jax.tree.leaves(params))
    assert compiled.memory_analysis().temp_size_in_bytes < 0.1 * params_bytes
    expected = jax.jit(plain_apply)(tx, params, state, grads)
    assert_identical(step(tx, params, state, grads), expected)


@needs_native
def test_outside_jit_it_compiles_itself_and_donates_on_request():
    params = make_params()
    tx = gradtx.sgd(0.1, momentum=0.9)
    state = tx.init(params)
    grads = gradients(params, 0)
    expected = jax.jit(plain_apply)(tx, params, state, grads)
    assert_identical(gradtx.fused_apply(tx, params, state, grads), expected)
    assert not params["leaf00"].is_deleted()
    assert_identical(gradtx.fused_apply(tx, params, state, grads, donate=True), expected)
    assert params["leaf00"].is_deleted()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_other_dtypes_take_the_plain_path(dtype):
    params = jax.tree.map(lambda p: p.astype(dtype), make_params())
    tx = gradtx.adamw(1e-3)
    state = tx.init(params)
    grads = jax.tree.map(lambda g: g.astype(dtype), gradients(params, 0))
    assert not uses_kernel(tx, params, state, grads)
    assert_identical(
        fresh_jit(gradtx.fused_apply)(tx, params, state, grads),
        jax.jit(plain_apply)(tx, params, state, grads),
    )


def test_float64_takes_the_plain_path():
    with jax.enable_x64(True):
        params = jax.tree.map(lambda p: p.astype(jnp.float64), make_params())
        tx = gradtx.adam(1e-3)
        state = tx.init(params)
        grads = jax.tree.map(lambda g: g.astype(jnp.float64), gradients(params, 0))
        assert not uses_kernel(tx, params, state, grads)
        assert_identical(
            fresh_jit(gradtx.fused_apply)(tx, params, state, grads),
            jax.jit(plain_apply)(tx, params, state, grads),
        )


@needs_native
def test_float64_hyperparameters_under_x64_take_the_plain_path():
    # A float64 b1 makes the plain path compute the moments in float64.
    with jax.enable_x64(True):
        params = jax.tree.map(lambda p: p.astype(jnp.float32), make_params())
        tx = gradtx.adam(1e-3, b1=np.float64(0.9))
        assert not uses_kernel(tx, params, tx.init(params), params)
        tx = gradtx.adam(1e-3)  # Python floats stay weakly typed: fast path
        assert uses_kernel(tx, params, tx.init(params), params)
        compare_steps(tx, params, steps=2)
        compare_steps(tx, params, steps=2, closed_over=True)


@pytest.mark.parametrize(
    "tx",
    [
        gradtx.adam(1e-3, mu_dtype="bfloat16"),
        gradtx.chain(
            gradtx.trace(decay=0.9, accumulator_dtype="bfloat16"),
            gradtx.scale_by_learning_rate(0.1),
        ),
    ],
    ids=["bf16_moments", "bf16_trace"],
)
def test_other_state_dtypes_take_the_plain_path(tx):
    params = make_params()
    state = tx.init(params)
    grads = gradients(params, 0)
    assert not uses_kernel(tx, params, state, grads)
    assert_identical(
        fresh_jit(gradtx.fused_apply)(tx, params, state, grads),
        jax.jit(plain_apply)(tx, params, state, grads),
    )


def test_disabled_kernel_takes_the_plain_path(monkeypatch):
    monkeypatch.setenv(build.DISABLE_ENV, "1")
    assert not gradtx.fused.native_kernel_available()
    params = make_params()
    tx = gradtx.adamw(1e-3)
    state = tx.init(params)
    grads = gradients(params, 0)
    assert not uses_kernel(tx, params, state, grads)
    assert_identical(
        fresh_jit(gradtx.fused_apply)(tx, params, state, grads),
        jax.jit(plain_apply)(tx, params, state, grads),
    )


def test_mismatched_gradients_raise_the_plain_path_error():
    params = make_params()
    tx = gradtx.adamw(1e-3)
    grads = dict(gradients(params, 0))
    del grads["leaf03"]
    with pytest.raises(ValueError, match="leaf03"):
        fresh_jit(gradtx.fused_apply)(tx, params, tx.init(params), grads)


@needs_native
def test_vmap_over_learning_rates():
    # Under vmap the kernel runs once per batch element, while XLA compiles the
    # batched plain step without fusing ``p + (-lr) * u`` into one multiply-add:
    # the two differ by a rounding of ``lr * u``, not bit for bit.
    params = make_params()
    state = gradtx.adamw(1e-3).init(params)
    grads = gradients(params, 0)

    def sweep(apply):
        def run(learning_rate):
            return apply(gradtx.adamw(learning_rate, weight_decay=0.1), params, state, grads)

        return jax.jit(jax.vmap(run))(jnp.array([1e-3, 1e-2, 1e-1]))

    fused, plain = sweep(gradtx.fused_apply), sweep(plain_apply)
    assert jax.tree.structure(fused) == jax.tree.structure(plain)
    for actual, expected in zip(jax.tree.leaves(fused), jax.tree.leaves(plain)):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-8)


@needs_native
@pytest.mark.parametrize("name", ["adamw", "lion", "sgd_weight_decay"])
def test_differentiable_like_the_plain_path(name):
    tx = OPTIMIZERS[name]
    params = make_params()
    state = tx.init(params)
    grads = gradients(params, 1)

    def loss(apply, learning_rate, params):
        new_tx = dataclasses.replace(tx, learning_rate=learning_rate)
        new_params, _ = apply(new_tx, params, state, grads)
        return sum(jnp.sum(jnp.sin(p)) for p in jax.tree.leaves(new_params))

    fused = jax.jit(jax.grad(lambda lr, p: loss(gradtx.fused_apply, lr, p), argnums=(0, 1)))
    plain = jax.jit(jax.grad(lambda lr, p: loss(plain_apply, lr, p), argnums=(0, 1)))
    expected = plain(0.01, params)
    # The tangents come from the plain step, compiled inside another program:
    # the derivative in the learning rate sums 40,000 terms in another order,
    # and Adam's first steps amplify roundings in the derivative in the params.
    for actual, wanted in zip(jax.tree.leaves(fused(0.01, params)), jax.tree.leaves(expected)):
        np.testing.assert_allclose(actual, wanted, rtol=2e-5, atol=2e-7)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_the_kernel_builds_where_gplusplus_is_installed():
    # CI runs in a fresh venv with g++: the lazy build must succeed there.
    if build.disabled():
        pytest.skip(f"{build.DISABLE_ENV} is set")
    assert gradtx.fused.native_kernel_available()


def test_a_failed_build_warns_once_and_falls_back(tmp_path):
    script = textwrap.dedent(
        """
        import logging, jax, jax.numpy as jnp, gradtx
        logging.basicConfig(level=logging.WARNING)
        tx = gradtx.adam(1e-3)
        params = {"w": jnp.ones(3)}
        for _ in range(2):
            text = jax.jit(gradtx.fused_apply).lower(tx, params, tx.init(params), params).as_text()
        assert "GradtxStep_" not in text
        print(gradtx.fused_apply(tx, params, tx.init(params), params)[0]["w"])
        """
    )
    env = dict(os.environ, CXX="false", GRADTX_CACHE_DIR=str(tmp_path))
    env.pop(build.DISABLE_ENV, None)
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.count("native CPU optimizer kernel is unavailable") == 1
    assert "0.999" in completed.stdout


@needs_native
def test_the_kernels_rsqrt_is_xlas():
    from gradtx.fused import apply

    assert apply.rsqrt_form() in ("1", "2")
    x = np.abs(np.asarray(jax.random.normal(jax.random.PRNGKey(5), (1003,)))) * 1e3
    tx = gradtx.chain(gradtx.scale_by_rms(), gradtx.scale(-1.0))
    params = {"w": jnp.asarray(x, jnp.float32)}
    assert uses_kernel(tx, params, tx.init(params), params)
    compare_steps(tx, params, steps=2)


@needs_native
def test_a_kernel_that_differs_from_xla_in_one_constant_is_refused():
    import dataclasses

    from gradtx.fused import apply, build, verify

    tx, params = gradtx.adam(1e-3), make_params()
    state = tx.init(params)
    with jax.ensure_compile_time_eval():
        plan = apply._Plan(tx, params, state, params)
    group = [c for c in plan.components if c.form == plan.components[0].form]
    assert verify.agreeing(plan.graph, group, apply._call) == group

    def nudged(operand):
        if operand[0] != "lit" or operand[2] != "float32":
            return operand
        value = np.nextafter(np.float32(float.fromhex(operand[1])), np.float32(np.inf))
        return ("lit", float(value).hex(), "float32")

    programs = []
    for instructions, result in group[0].form.programs:
        changed = tuple(
            dataclasses.replace(i, operands=tuple(nudged(o) for o in i.operands))
            for i in instructions
        )
        programs.append((changed, result))
    wrong = dataclasses.replace(group[0].form, programs=tuple(programs))
    assert wrong != group[0].form and build.register(wrong)
    wrong_group = [dataclasses.replace(c, form=wrong) for c in group]
    assert verify.agreeing(plan.graph, wrong_group, apply._call) == []


@needs_native
def test_a_value_beneath_another_output_is_read_by_that_output_loop_only():
    from gradtx.fused import apply, lift, verify

    # RMSProp with momentum, hyperparameters traced: the new params load the
    # new trace, so the rsqrt is computed in the trace's loop alone (not a
    # loop of its own), and that loop computes -lr from lr, which verify.py's
    # XLA program must compute in its loop too, as the plain step does.
    tx = jax.tree.map(jnp.asarray, OPTIMIZERS["rmsprop_momentum"])
    params = {"w": jnp.ones((5000,))}
    with jax.ensure_compile_time_eval():
        plan = apply._Plan(tx, params, tx.init(params), params)
    rsqrts = [n for n in graph_nodes(plan.graph) if n.kind == "op" and n.name == "rsqrt"]
    assert len(rsqrts) == 1 and id(rsqrts[0]) not in lift.materialized(plan.graph)
    (component,) = plan.components
    scalars = [node for node, _ in component.scalars]
    loaded = lift.scalars_loaded(scalars)
    # The loop loads the hyperparameters themselves; -lr is computed in it.
    assert loaded and all(node.kind == "input" for node in loaded)
    assert any(node.kind == "op" for node in scalars)
    assert verify.agreeing(plan.graph, plan.components, apply._call) == plan.components


def graph_nodes(graph):
    from gradtx.fused import graph as graph_lib

    return list(graph_lib.reachable(graph.outputs, lambda node: node.kind == "op"))


@needs_native
def test_a_product_by_one_is_folded_and_small_leaves_are_checked_at_their_own_size():
    from gradtx.fused import apply

    # clip_by_global_norm(1.0) closed over multiplies by a literal one, which
    # XLA folds, and so does the kernel. XLA's loops for 34 to 47 elements in
    # one dimension (not (5, 7)) then contract nu's update another
    # way: verify.py checks each small shape at that shape and leaves these
    # leaves to XLA.
    tx = OPTIMIZERS["transformer_recipe"]
    shapes = [(40_000,), (100, 35), (1, 35), (35,), (47,), (48,), (33,), (2, 46), (5, 7)]
    key = jax.random.PRNGKey(3)
    params = {
        f"w{i}": jax.random.normal(jax.random.fold_in(key, i), shape)
        for i, shape in enumerate(shapes)
    }
    with jax.ensure_compile_time_eval():
        plan = apply._Plan(tx, params, tx.init(params), params)
    out_shapes = {plan.graph.outputs[c.outputs[0]].shape for c in plan.components}
    assert out_shapes == {(40_000,), (100, 35), (48,), (33,), (2, 46), (5, 7)}
    compare_steps(tx, params, steps=3, closed_over=True)


@needs_native
def test_leaves_of_one_structure_share_a_form_with_their_own_scalars():
    from gradtx.fused import apply

    # LAMB's trust ratio is a scalar of each leaf: the form is shared, the
    # scalars are not.
    tx = gradtx.lamb(1e-3)
    params = {f"w{i}": jnp.full((50 + i,), 1.0 + i) for i in range(6)}
    with jax.ensure_compile_time_eval():
        plan = apply._Plan(tx, params, tx.init(params), params)
    assert len(plan.components) == 6
    assert len({c.form for c in plan.components}) == 1
    rows = [tuple(id(node) for node, _ in c.scalars) for c in plan.components]
    assert len(set(rows)) == 6
