"""A 32-bit fingerprint of each array, computed where the array lives.

Orbax stores array bytes without a checksum: a flipped bit in a data file
restores as a wrong number, silently. The fingerprint of every leaf is saved
with a checkpoint and compared after a restore. It is computed by one jitted
pass on the devices holding the array (a sharded array is summed over its
shards, an all-reduce of one number), so no array travels to a host; the
integer arithmetic wraps, so the result does not depend on how the array is
sharded or on the order of the sum.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}
# Constants of Murmur3's finalizer and the golden ratio: a changed bit or a swapped
# pair of elements changes the sum.
_GOLDEN = 0x9E3779B1
_MIX_1 = 0x85EBCA6B
_MIX_2 = 0xC2B2AE35


def _words(x: jax.Array) -> jax.Array:
    """The bits of each element of ``x`` as uint32 (64-bit ones folded in half)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if jnp.iscomplexobj(x):
        real, imaginary = _words(jnp.real(x)), _words(jnp.imag(x))
        return real ^ (imaginary * jnp.uint32(_GOLDEN))
    if np.dtype(x.dtype).itemsize not in _UNSIGNED or jnp.dtype(x.dtype).name.startswith(
        ("int4", "uint4", "int2", "uint2", "float4")
    ):
        # Sub-byte types: every value is exact in float32.
        x = x.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(x, _UNSIGNED[np.dtype(x.dtype).itemsize])
    if bits.dtype == jnp.uint64:
        return (bits >> 32).astype(jnp.uint32) ^ bits.astype(jnp.uint32)
    return bits.astype(jnp.uint32)


def _fingerprint(x: jax.Array) -> jax.Array:
    words = _words(x)
    position = jnp.zeros(words.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(words.ndim)):
        position += jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis) * jnp.uint32(stride)
        stride = (stride * words.shape[axis]) % 2**32
    mixed = (words ^ (position * jnp.uint32(_GOLDEN))) * jnp.uint32(_MIX_1)
    mixed = (mixed ^ (mixed >> 15)) * jnp.uint32(_MIX_2)
    return jnp.sum(mixed ^ (mixed >> 13), dtype=jnp.uint32)


_fingerprints = jax.jit(lambda leaves: [_fingerprint(jnp.asarray(leaf)) for leaf in leaves])


def fingerprints(tree: Any) -> list[int]:
    """One 32-bit fingerprint per leaf of ``tree``, in flattening order.

    Args:
      tree: a pytree of arrays (sharded, on any devices) or numbers.

    Returns:
      The fingerprints as Python ints in ``[0, 2**32)``.
    """
    leaves = jax.tree.leaves(tree)
    return [int(value) for value in jax.device_get(_fingerprints(leaves))]
