"""Minimal neural-network layers in plain JAX for the built-in tasks."""

import jax
import jax.numpy as jnp


def dense_init(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    """A dense layer with LeCun-normal kernel and zero bias."""
    kernel = jax.random.normal(key, (fan_in, fan_out)) / jnp.sqrt(fan_in)
    return {"kernel": kernel, "bias": jnp.zeros(fan_out)}


def dense(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """``x @ kernel + bias`` over the last axis of ``x``."""
    return x @ params["kernel"] + _broadcastable(params["bias"], x.ndim)


def _broadcastable(bias: jax.Array, ndim: int) -> jax.Array:
    # Explicit leading axes: the tests run with jax_numpy_rank_promotion="raise".
    return bias.reshape((1,) * (ndim - 1) + bias.shape)


def conv_init(key: jax.Array, in_channels: int, out_channels: int, size: int = 3) -> dict:
    """A 2-D convolution (HWIO kernel) with LeCun-normal init and zero bias."""
    fan_in = in_channels * size * size
    kernel = jax.random.normal(key, (size, size, in_channels, out_channels)) / jnp.sqrt(fan_in)
    return {"kernel": kernel, "bias": jnp.zeros(out_channels)}


def conv(params: dict[str, jax.Array], x: jax.Array, stride: int = 1) -> jax.Array:
    """A 'SAME' convolution of NHWC images, as image patches times the kernel.

    Written as patches and a matrix product rather than ``lax.conv``: under
    ``vmap`` over optimizer trials (each with its own kernel) this stays a
    batched matrix product, where a vmapped convolution becomes a grouped
    convolution that is slow on CPUs.
    """
    kernel = params["kernel"]
    size, _, in_channels, out_channels = kernel.shape
    patches = jax.lax.conv_general_dilated_patches(
        x,
        filter_shape=(size, size),
        window_strides=(stride, stride),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    # Patches come channel-major: (in_channels, size, size) per output pixel.
    flat_kernel = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(
        in_channels * size * size, out_channels
    )
    return patches @ flat_kernel + _broadcastable(params["bias"], patches.ndim)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer labels."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of argmax predictions equal to the labels."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
