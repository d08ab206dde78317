"""What the checkpoint tests share: an optimizer with a schedule and a mask, a
small parameter tree with a bfloat16 leaf, and a bit-for-bit comparison."""

import jax
import jax.numpy as jnp
import numpy as np

import gradtx

TX = gradtx.adamw(
    learning_rate=gradtx.exponential_decay(0.05, transition_steps=3, decay_rate=0.7),
    weight_decay=1e-2,
    mask=gradtx.path_mask(exclude=[r"bias$"]),
)


def make_params():
    return {
        "dense": {"kernel": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "bias": jnp.zeros(4)},
        "head": {"kernel": jnp.ones((4, 2)), "bias": jnp.full(2, 0.5, jnp.bfloat16)},
    }


def assert_bit_equal(restored, saved):
    """Same tree, dtypes, shapes and bytes."""
    assert jax.tree.structure(restored) == jax.tree.structure(saved)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(saved)):
        got, want = np.asarray(got), np.asarray(want)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
