"""path_mask: a serializable mask selecting parameters by regular expressions over paths."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx import masks

PARAMS = {
    "dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
    "norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
    "layers": [{"w": jnp.ones(2)}, {"w": jnp.ones(2)}],
}
NO_BIAS_OR_SCALE = gradtx.path_mask(exclude=[r"bias$", r"scale$"])


def test_paths_are_keys_joined_by_slashes():
    seen = []

    class Recorder(gradtx.path_mask):
        def selects(self, path):
            seen.append(path)
            return True

    Recorder()(PARAMS)
    assert sorted(seen) == [
        "dense/bias",
        "dense/kernel",
        "layers/0/w",
        "layers/1/w",
        "norm/bias",
        "norm/scale",
    ]


def test_exclude_deselects_matching_leaves():
    assert NO_BIAS_OR_SCALE(PARAMS) == {
        "dense": {"kernel": True, "bias": False},
        "norm": {"scale": False, "bias": False},
        "layers": [{"w": True}, {"w": True}],
    }


def test_include_selects_only_matching_leaves_and_exclude_wins():
    mask = gradtx.path_mask(include=[r"^dense/", r"^layers/1/"], exclude=[r"bias$"])
    assert mask(PARAMS) == {
        "dense": {"kernel": True, "bias": False},
        "norm": {"scale": False, "bias": False},
        "layers": [{"w": False}, {"w": True}],
    }


def test_an_empty_mask_selects_everything():
    assert all(jax.tree.leaves(gradtx.path_mask()(PARAMS)))


def test_attribute_keys_use_their_plain_names():
    class Layer(NamedTuple):
        kernel: jax.Array
        bias: jax.Array

    assert NO_BIAS_OR_SCALE(Layer(jnp.ones(2), jnp.ones(2))) == Layer(True, False)


def test_the_mask_leaves_are_python_booleans_even_for_traced_params():
    @jax.jit
    def count_selected(params):
        mask = NO_BIAS_OR_SCALE(params)
        assert all(isinstance(leaf, bool) for leaf in jax.tree.leaves(mask))
        return sum(jax.tree.leaves(mask))

    assert count_selected(PARAMS) == 3


def test_a_path_mask_is_a_hashable_value():
    same = gradtx.path_mask(exclude=(r"bias$", r"scale$"))
    assert same == NO_BIAS_OR_SCALE and hash(same) == hash(NO_BIAS_OR_SCALE)
    assert same != gradtx.path_mask(include=(r"bias$", r"scale$"))
    assert repr(same) == "path_mask(exclude=('bias$', 'scale$'))"
    # Nothing in a path_mask is traced: the mask is one opaque leaf, which is
    # also how Optax's masked() recognises a callable mask.
    assert jax.tree.leaves(same) == [same]
    assert masks.freeze_mask(same) is same


def test_bad_patterns_are_refused_with_their_position():
    with pytest.raises(ValueError, match=r"^exclude\[1\] is not a valid regular expression"):
        gradtx.path_mask(exclude=[r"bias$", r"(unclosed"])
    with pytest.raises(TypeError, match=r"^include\[0\] must be a regular expression string"):
        gradtx.path_mask(include=[3])
    expected = r"exclude must be a list of regular expressions.*\['bias\$'\]"
    with pytest.raises(TypeError, match=expected):
        gradtx.path_mask(exclude="bias$")


def test_config_errors_in_a_mask_name_the_path():
    config = {
        "name": "adamw",
        "learning_rate": 1e-3,
        "mask": {"name": "path_mask", "exclude": ["bias$", "("]},
    }
    with pytest.raises(gradtx.ConfigError, match=r"^mask\.exclude\[1\]: is not a valid regular"):
        gradtx.from_config(config)


def _decayed(tx, params):
    """Which leaves moved under zero gradients: exactly the weight-decayed ones."""
    zeros = jax.tree.map(jnp.zeros_like, params)

    @jax.jit
    def step(tx, params):
        updates, _ = tx.update(zeros, tx.init(params), params)
        return gradtx.apply_updates(params, updates)

    moved = step(tx, params)
    return jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, moved)


@pytest.mark.parametrize(
    "tx",
    [
        gradtx.add_decayed_weights(0.5, mask=NO_BIAS_OR_SCALE),
        gradtx.adamw(0.1, weight_decay=0.5, mask=NO_BIAS_OR_SCALE),
        gradtx.nadamw(0.1, weight_decay=0.5, mask=NO_BIAS_OR_SCALE),
    ],
)
def test_transformations_decay_only_the_selected_leaves_under_jit(tx):
    assert _decayed(tx, PARAMS) == NO_BIAS_OR_SCALE(PARAMS)
    assert gradtx.from_config(gradtx.to_config(tx)) == tx


def test_works_in_flax_train_state():
    nn = pytest.importorskip("flax.linen")
    train_state = pytest.importorskip("flax.training.train_state")

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.LayerNorm()(nn.Dense(3)(x)))

    x = jnp.ones((4, 2))
    model = Model()
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    tx = gradtx.adamw(0.1, weight_decay=0.5, mask=NO_BIAS_OR_SCALE)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    @jax.jit
    def step(state):
        return state.apply_gradients(grads=jax.tree.map(jnp.zeros_like, state.params))

    new = step(state)
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new.params)
    assert moved == {
        "Dense_0": {"kernel": True, "bias": False},
        "LayerNorm_0": {"scale": False, "bias": False},
        "Dense_1": {"kernel": True, "bias": False},
    }


def test_works_in_flax_nnx_optimizer():
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 3, rngs=rngs)
            self.norm = nnx.LayerNorm(3, rngs=rngs)

    model = Model(nnx.Rngs(0))
    tx = gradtx.adamw(0.1, weight_decay=0.5, mask=NO_BIAS_OR_SCALE)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))

    @nnx.jit
    def step(model, optimizer):
        optimizer.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))

    step(model, optimizer)
    after = nnx.state(model, nnx.Param)
    assert not np.array_equal(before["linear"]["kernel"], after["linear"]["kernel"])
    for name in [("linear", "bias"), ("norm", "bias"), ("norm", "scale")]:
        np.testing.assert_array_equal(before[name[0]][name[1]], after[name[0]][name[1]])


def test_optax_accepts_a_path_mask():
    import optax

    params = {"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for tx in (
        optax.adamw(0.1, weight_decay=0.5, mask=NO_BIAS_OR_SCALE),
        gradtx.adamw(0.1, weight_decay=0.5, mask=NO_BIAS_OR_SCALE),
    ):
        updates, _ = tx.update(zeros, tx.init(params), params)
        np.testing.assert_allclose(updates["dense"]["kernel"], [-0.05, -0.05])
        np.testing.assert_allclose(updates["dense"]["bias"], [0.0, 0.0])
