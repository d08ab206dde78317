"""gradtx.fingerprints: one number per array that any changed bit or moved element changes."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from gradtx.fingerprints import fingerprints

BASE = np.linspace(-3.0, 3.0, 48, dtype=np.float32).reshape(6, 8)


@pytest.mark.parametrize(
    "dtype",
    [np.float32, np.float16, jnp.bfloat16, np.int8, np.uint32, np.complex64, ml_dtypes.int4],
)
def test_a_changed_element_changes_the_fingerprint(dtype):
    x = jnp.asarray((BASE * 2).astype(dtype))
    y = x.at[2, 5].set(x[2, 5] + jnp.asarray(1, x.dtype))
    assert fingerprints([x]) != fingerprints([y])
    assert fingerprints([x]) == fingerprints([jnp.array(x)])


def test_every_single_bit_flip_of_a_float32_array_is_seen():
    x = np.arange(16, dtype=np.float32)
    reference = fingerprints([x])[0]
    bits = x.view(np.uint32)
    for element in range(x.size):
        for bit in range(32):
            flipped = bits.copy()
            flipped[element] ^= np.uint32(1 << bit)
            assert fingerprints([flipped.view(np.float32)])[0] != reference, (element, bit)


def test_moving_elements_or_reshaping_changes_it():
    x = jnp.asarray(BASE)
    assert fingerprints([x]) != fingerprints([x.T])
    assert fingerprints([x]) != fingerprints([jnp.roll(x, 1)])


def test_booleans_float64_and_empty_arrays():
    mask = jnp.array([True, False, True])
    assert fingerprints([mask]) != fingerprints([~mask])
    assert fingerprints([jnp.zeros(0)]) == [0]
    with jax.enable_x64(True):
        wide = jnp.arange(5, dtype=jnp.float64)
        assert fingerprints([wide]) != fingerprints([wide.at[4].set(4.000000000000001)])


def test_one_per_leaf_in_flattening_order():
    tree = {"b": jnp.ones(2), "a": jnp.zeros(3), "none": None}
    assert fingerprints(tree) == [fingerprints([jnp.zeros(3)])[0], fingerprints([jnp.ones(2)])[0]]
