"""Gradient noise: annealed Gaussian noise added to the updates, and noisy SGD."""

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, numerics, trees
from gradtx.aliases import Alias
from gradtx.base import (
    OptState,
    Params,
    ScalarOrSchedule,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import chain
from gradtx.transforms.averaging import check_not_schedule
from gradtx.transforms.scale import scale_by_learning_rate

KeyLike = int | tuple[int, ...] | jax.Array | np.ndarray | None


class AddNoiseState(NamedTuple):
    """State of :class:`add_noise`.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1); the
        noise variance at step ``t = count`` is ``eta / t**gamma``.
      rng_key: the typed PRNG key the next step splits.
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    rng_key: jax.Array


@value_class
class add_noise(Transformation):  # noqa: N801 - Optax's name
    """Adds Gaussian noise of annealed variance to the updates.

    Update rule, with ``t`` the step (starting at 1)::

        key, sample_key <- split(key)
        u <- g + sqrt(eta / t**gamma) * normal(sample_key)

    The sample key is split once more, one key per non-None leaf in flattening
    order, and each leaf's noise is drawn in that leaf's dtype: the same calls
    as Optax, so the same key gives the same noise. The sum is computed in
    float32 or wider and returned in each gradient's dtype.

    The key is a structural option, not a pytree leaf: ``jax.grad`` or
    ``jax.vmap`` over the transformation then sees only ``eta`` and ``gamma``
    (a key can be neither differentiated nor batched alongside them). It is
    stored in a form a config can hold and ``==``/``hash`` can compare:

    * an int seed stays an int, turned into ``jax.random.key(seed)`` by ``init``
      (with ``key_impl``, or JAX's default PRNG implementation);
    * a typed key array (``jax.random.key(0)``) is stored as its key data, a
      tuple of Python ints, with ``key_impl`` set to its implementation's name,
      so ``init`` rebuilds that exact key;
    * a raw uint32 key (``jax.random.PRNGKey(0)``) or a tuple of ints is stored
      as that tuple, read by ``init`` with ``key_impl`` (None: JAX's default).

    A key must be concrete when the transformation is built. To draw different
    noise in, say, vmapped replicas, replace the key in the state:
    ``state._replace(rng_key=key)``.

    Args:
      eta: the base variance of the noise, >= 0.
      gamma: the annealing exponent of the variance, >= 0 (0.55 in the paper).
      key: the random key or int seed. None uses seed 0 with a warning, as
        Optax does.
      key_impl: the PRNG implementation's name (``"threefry2x32"``, ``"rbg"``,
        ...) used to read ``key``; None for JAX's default at ``init`` time.

    Raises:
      ValueError: if ``eta`` or ``gamma`` is negative, or ``key`` is not a
        valid key or seed for ``key_impl``.
      TypeError: if ``key`` is traced or of another type, or ``eta`` or
        ``gamma`` is not a number.

    References:
      Neelakantan et al., *Adding Gradient Noise Improves Learning for Very
      Deep Networks*, 2015, https://arxiv.org/abs/1511.06807

    Example:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> tx = gradtx.add_noise(eta=0.01, gamma=0.55, key=jax.random.key(0))
      >>> tx
      add_noise(eta=0.01, gamma=0.55, key=(0, 0), key_impl='threefry2x32')
      >>> updates, state = tx.update(jnp.zeros(3), tx.init(jnp.zeros(3)))
      >>> updates.shape, int(state.count)
      ((3,), 1)
    """

    eta: jax.typing.ArrayLike = hyperparameter(shown=True)
    gamma: jax.typing.ArrayLike = hyperparameter(shown=True)
    key: KeyLike = static_field(default=None, shown=True)
    key_impl: str | None = static_field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        for name in ("eta", "gamma"):
            check_not_schedule(name, getattr(self, name), "add_noise")
            checks.check_number(name, getattr(self, name), low=0.0)
        key, key_impl = _canonical_key(self.key, self.key_impl)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "key_impl", key_impl)
        try:
            with jax.ensure_compile_time_eval():
                _make_key(key, key_impl)
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(
                f"key {key!r} is not a valid key for the PRNG implementation "
                f"{key_impl or _default_prng_impl()!r}: {error}"
            ) from error

    def init(self, params: Params) -> OptState:
        del params
        return AddNoiseState(
            count=numerics.zero_count(), rng_key=_make_key(self.key, self.key_impl)
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, AddNoiseState, "add_noise")
        count = numerics.safe_increment(state.count)
        dtype = numerics.compute_dtype(jnp.result_type(self.eta), jnp.result_type(self.gamma))
        # Optax's count ** gamma promotes its int32 count to this float dtype
        # too: the same power, so the same deviation to the last bit.
        annealing = count.astype(dtype) ** jnp.asarray(self.gamma, dtype)
        standard_deviation = jnp.sqrt(jnp.asarray(self.eta, dtype) / annealing)
        rng_key, sample_key = jax.random.split(state.rng_key)
        gradients, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample_key, len(gradients))

        def leaf(g: jax.Array, key: jax.Array) -> jax.Array:
            noise = jax.random.normal(key, g.shape, g.dtype, out_sharding=jax.typeof(g).sharding)
            wide = numerics.compute_dtype(g.dtype, standard_deviation.dtype)
            noisy = g.astype(wide) + standard_deviation.astype(wide) * noise.astype(wide)
            return noisy.astype(g.dtype)

        noisy = [leaf(trees.as_array(g), key) for g, key in zip(gradients, keys)]
        return jax.tree.unflatten(treedef, noisy), AddNoiseState(count=count, rng_key=rng_key)


@value_class
class noisy_sgd(Alias):  # noqa: N801 - Optax's name
    """SGD on gradients with annealed Gaussian noise added.

    Update rule, with ``t`` the step (starting at 1)::

        u <- -learning_rate(t) * (g + sqrt(eta / t**gamma) * normal(key))

    The chain is Optax's, ``add_noise(eta, gamma, key) ->
    scale_by_learning_rate(learning_rate)``: the same key draws the same noise
    as ``optax.noisy_sgd``, and the state is Optax's. The key is stored as
    :class:`add_noise` stores it (see there).

    Args:
      learning_rate: a non-negative number or a schedule.
      eta: the base variance of the noise, >= 0.
      gamma: the annealing exponent of the variance, >= 0.
      key: the random key or int seed. None uses seed 0 with a warning, as
        Optax does.
      key_impl: gradtx's addition (keyword-only): the PRNG implementation's
        name used to read ``key``; None for JAX's default at ``init`` time.

    Raises:
      ValueError: if a hyperparameter is negative, or ``key`` is not a valid
        key or seed.
      TypeError: if ``key`` is traced or of another type, or ``eta`` or
        ``gamma`` is a schedule or not a number.

    References:
      Neelakantan et al., *Adding Gradient Noise Improves Learning for Very
      Deep Networks*, 2015, https://arxiv.org/abs/1511.06807

    Example:
      >>> import gradtx
      >>> gradtx.noisy_sgd(1e-2, key=0)
      noisy_sgd(learning_rate=0.01, eta=0.01, gamma=0.55, key=0)
    """

    learning_rate: ScalarOrSchedule = hyperparameter(shown=True)
    eta: jax.typing.ArrayLike = hyperparameter(default=0.01, shown=True)
    gamma: jax.typing.ArrayLike = hyperparameter(default=0.55, shown=True)
    key: KeyLike = static_field(default=None, shown=True)
    key_impl: str | None = static_field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        checks.check_number("learning_rate", self.learning_rate, low=0.0)
        key, key_impl = _canonical_key(self.key, self.key_impl, owner="noisy_sgd")
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "key_impl", key_impl)
        self.expand()  # validates eta, gamma and the key with their own names

    def expand(self) -> chain:
        return chain(
            add_noise(self.eta, self.gamma, self.key, key_impl=self.key_impl),
            scale_by_learning_rate(self.learning_rate),
        )


def _canonical_key(
    key: Any, key_impl: Any, owner: str = "add_noise"
) -> tuple[int | tuple[int, ...], str | None]:
    """The key as an int seed or a tuple of key words, and its implementation's name.

    Called from ``owner``'s ``__post_init__``: a missing key is reported (by
    name) at the line that built ``owner``.
    """
    if key_impl is not None and not isinstance(key_impl, str):
        raise TypeError(f"key_impl must be the name of a PRNG implementation, got {key_impl!r}")
    if key is None:
        warnings.warn(
            f"{owner} got no key; using seed 0. Pass key= (an int seed or a "
            "jax.random.key) so that runs draw the noise you intend.",
            stacklevel=4,
        )
        return 0, key_impl
    if isinstance(key, jax.core.Tracer):
        raise TypeError(
            "key must be concrete when add_noise is built (it is a structural option, "
            "not a traced leaf); to vary it per replica, set the state's rng_key instead"
        )
    if isinstance(key, bool):
        raise TypeError(f"key must be an int seed or a PRNG key, got {key!r}")
    if isinstance(key, int):
        return key, key_impl
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"key must be a single PRNG key, got an array of keys of shape {key.shape}"
            )
        impl = str(jax.random.key_impl(key))
        if key_impl is not None and key_impl != impl:
            raise ValueError(f"key is a {impl!r} key but key_impl is {key_impl!r}")
        return _words(np.asarray(jax.random.key_data(key))), impl
    if isinstance(key, (tuple, list)):
        if not all(isinstance(word, int) and not isinstance(word, bool) for word in key):
            raise TypeError(f"key given as a sequence must hold ints (uint32 words), got {key!r}")
        if not all(0 <= word < 2**32 for word in key):
            raise ValueError(f"key words must be in [0, 2**32), got {key!r}")
        return tuple(key), key_impl
    if isinstance(key, (np.ndarray, np.generic, jax.Array)):
        array = np.asarray(key)
        if array.ndim == 0 and jnp.issubdtype(array.dtype, jnp.integer):
            return int(array), key_impl
        if array.ndim == 1 and array.dtype == np.uint32:
            return _words(array), key_impl
        raise TypeError(
            "key given as an array must be an integer seed (a scalar) or raw uint32 "
            f"key data (a vector), got dtype {array.dtype} and shape {array.shape}"
        )
    raise TypeError(f"key must be an int seed or a PRNG key, got {key!r}")


def _words(data: np.ndarray) -> tuple[int, ...]:
    return tuple(int(word) for word in data.ravel())


def _make_key(key: Any, key_impl: str | None) -> jax.Array:
    """The typed PRNG key ``key`` stands for."""
    if isinstance(key, tuple):
        # Annotated as taking a jax.Array, wrap_key_data takes any uint32 array.
        data = np.asarray(key, np.uint32)
        return jax.random.wrap_key_data(data, impl=key_impl)  # type: ignore[arg-type]
    return jax.random.key(key, impl=key_impl)


def _default_prng_impl() -> str:
    # jax.config's options are attributes set at run time, unknown to mypy.
    return str(getattr(jax.config, "jax_default_prng_impl"))  # noqa: B009
