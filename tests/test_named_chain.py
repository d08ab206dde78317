"""named_chain: parity with optax.named_chain, its OrderedDict state, errors and value semantics."""

import collections
import dataclasses

import jax
import jax.numpy as jnp
import optax
import pytest
from masking_parity import (
    assert_trees_close,
    assert_trees_equal,
    gradients,
    leaf_layout,
    nested_params,
    run,
)

import gradtx


def members(library):
    return (
        ("decay", library.add_decayed_weights(0.01)),
        ("adam", library.scale_by_adam(b2=0.99)),
        ("lr", library.scale(-0.05)),
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("jit", [True, False])
def test_trajectory_matches_optax(dtype, jit):
    tx = gradtx.named_chain(*members(gradtx))
    # bfloat16: gradtx's coefficients stay float32, so chain gradtx's own members.
    reference = optax.named_chain(*members(optax if dtype == jnp.float32 else gradtx))
    params = nested_params(dtype)
    grads = gradients(params)
    final, state = run(tx, params, grads, jit=jit)
    expected, expected_state = run(reference, params, grads, jit=True)
    assert type(state) is type(expected_state) is collections.OrderedDict
    assert list(state) == list(expected_state) == ["decay", "adam", "lr"]
    assert leaf_layout(state) == leaf_layout(expected_state)
    if dtype == jnp.float32:
        assert_trees_close(final, expected, dtype)
    elif jit:
        assert_trees_equal(final, expected)
    else:
        assert_trees_close(final, expected, dtype)


def test_a_member_state_is_read_by_name():
    tx = gradtx.named_chain(("momentum", gradtx.trace(0.9)), ("lr", gradtx.scale(-0.1)))
    state = tx.init({"w": jnp.ones(2)})
    assert isinstance(state["momentum"], gradtx.TraceState)
    assert state["lr"] == gradtx.EmptyState()


def test_extra_args_reach_the_members_that_take_them():
    seen = []

    def update(updates, state, params=None, **extra_args):
        seen.append(extra_args)
        return updates, state

    recorder = optax.GradientTransformationExtraArgs(optax.identity().init, update)
    tx = gradtx.named_chain(("scale", gradtx.scale(2.0)), ("recorder", recorder))
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)), value=3.0)
    assert seen == [{"value": 3.0}]


def test_values_print_compare_and_jit():
    tx = gradtx.named_chain(("a", gradtx.trace(0.9)), ("b", gradtx.scale(-0.1)))
    assert repr(tx) == "named_chain(('a', trace(decay=0.9)), ('b', scale(step_size=-0.1)))"
    assert tx == gradtx.named_chain(("a", gradtx.trace(0.9)), ("b", gradtx.scale(-0.1)))
    assert tx != gradtx.named_chain(("b", gradtx.scale(-0.1)), ("a", gradtx.trace(0.9)))
    assert hash(tx) == hash(gradtx.named_chain(("a", gradtx.trace(0.9)), ("b", gradtx.scale(-0.1))))
    assert jax.tree.leaves(tx) == [0.9, -0.1]
    replaced = dataclasses.replace(tx, transforms={"c": gradtx.identity()})
    assert replaced == gradtx.named_chain(("c", gradtx.identity()))
    params = {"w": jnp.ones(2)}
    updates, _ = jax.jit(lambda t, s, g: t.update(g, s))(tx, tx.init(params), params)
    assert updates["w"].tolist() == pytest.approx([-0.1, -0.1])
    assert gradtx.named_chain().init(params) == collections.OrderedDict()


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="names must be unique, got 'a' more than once"):
        gradtx.named_chain(("a", gradtx.identity()), ("a", gradtx.scale(2.0)))
    with pytest.raises(TypeError, match=r"named_chain\[0\] must be a \(name, transformation\)"):
        gradtx.named_chain(gradtx.identity())
    with pytest.raises(TypeError, match=r"named_chain\['a'\] must be a gradient transformation"):
        gradtx.named_chain(("a", 1.0))
    with pytest.raises(TypeError, match="or only transforms=... by name"):
        gradtx.named_chain(("a", gradtx.identity()), transforms={})
    tx = gradtx.named_chain(("a", gradtx.identity()))
    with pytest.raises(ValueError, match=r"expected the names \['a'\], got \['b'\]"):
        tx.update(jnp.ones(1), {"b": gradtx.EmptyState()})
