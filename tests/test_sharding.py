"""gradtx.state_shardings on one device: placement, ZeRO on a 1-device mesh, and errors.

The sharded layouts themselves (8 devices) are in tests/multidevice.
"""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

import gradtx

MESH = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
TX = gradtx.adamw(1e-3)


def on_mesh(*spec):
    return NamedSharding(MESH, PartitionSpec(*spec))


def test_state_shardings_follow_the_params_and_match_jit_init():
    params = {"w": jax.device_put(jnp.ones((4, 2)), on_mesh("data")), "b": None}
    shardings = gradtx.state_shardings(TX, params)
    state = jax.jit(TX.init)(params)
    assert jax.tree.structure(shardings) == jax.tree.structure(state)
    assert shardings[0].mu["b"] is None
    assert shardings[0].mu["w"].spec == PartitionSpec("data")
    assert shardings[0].count.spec == PartitionSpec()
    for sharding, leaf in zip(jax.tree.leaves(shardings), jax.tree.leaves(state)):
        assert sharding.is_equivalent_to(leaf.sharding, leaf.ndim)


def test_shard_over_adds_the_axis_to_the_first_free_dimension_it_divides():
    params = {
        "w": jax.ShapeDtypeStruct((3, 4), jnp.float32, sharding=on_mesh()),
        "v": jax.ShapeDtypeStruct((5,), jnp.float32, sharding=on_mesh()),
    }
    shardings = gradtx.state_shardings(TX, params, shard_over="data")
    # A 1-device axis divides every size: the first dimension takes it.
    assert shardings[0].nu["w"].spec == PartitionSpec("data", None)
    assert shardings[0].nu["v"].spec == PartitionSpec("data")
    assert shardings[0].count.spec == PartitionSpec()
    state = jax.jit(TX.init, out_shardings=shardings)(
        jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), params)
    )
    assert state[0].mu["w"].sharding.spec == PartitionSpec("data", None)


def test_a_scalar_only_state_is_replicated_on_the_params_mesh():
    params = {"w": jax.ShapeDtypeStruct((2,), jnp.float32, sharding=on_mesh())}
    tx = gradtx.scale_by_schedule(gradtx.linear_schedule(1.0, 0.0, 10))
    assert gradtx.state_shardings(tx, params).count == on_mesh()


def test_single_device_params_give_single_device_shardings():
    shardings = gradtx.state_shardings(TX, {"w": jnp.ones(3)})
    assert isinstance(shardings[0].mu["w"], SingleDeviceSharding)


def test_shard_over_needs_a_mesh():
    with pytest.raises(ValueError, match=r"shard_over='data' needs params on a jax.sharding.Mesh"):
        gradtx.state_shardings(TX, {"w": jnp.ones(3)}, shard_over="data")


def test_shard_over_names_an_unknown_axis():
    params = {"w": jax.ShapeDtypeStruct((2,), jnp.float32, sharding=on_mesh())}
    with pytest.raises(ValueError, match=r"axis 'fsdp', which the params' mesh does not have"):
        gradtx.state_shardings(TX, params, shard_over="fsdp")


def test_shard_over_must_be_axis_names():
    params = {"w": jax.ShapeDtypeStruct((2,), jnp.float32, sharding=on_mesh())}
    with pytest.raises(TypeError, match=r"shard_over must be a mesh axis name .* got 3"):
        gradtx.state_shardings(TX, params, shard_over=3)


def test_params_on_two_meshes_are_refused_naming_both_paths():
    other = jax.make_mesh((1,), ("model",), axis_types=(jax.sharding.AxisType.Auto,))
    params = {
        "a": jax.ShapeDtypeStruct((2,), jnp.float32, sharding=on_mesh()),
        "b": jax.ShapeDtypeStruct(
            (2,), jnp.float32, sharding=NamedSharding(other, PartitionSpec())
        ),
    }
    with pytest.raises(ValueError, match=r"params\['a'\] on .* but params\['b'\] on .*one mesh"):
        gradtx.state_shardings(TX, params)
