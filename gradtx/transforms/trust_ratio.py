"""Layer-wise trust ratios: scale_by_trust_ratio and the LARS, LAMB and Fromage optimizers."""

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, masks, numerics, trees
from gradtx.aliases import Alias
from gradtx.base import (
    EmptyState,
    OptState,
    Params,
    ScalarOrSchedule,
    Schedule,
    Transformation,
    Updates,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import chain
from gradtx.transforms.adam import scale_by_adam
from gradtx.transforms.masking import masked, static_mask
from gradtx.transforms.momentum import trace
from gradtx.transforms.scale import scale_by_learning_rate
from gradtx.transforms.weight_decay import add_decayed_weights

# Optax names a state for it; it keeps nothing.
ScaleByTrustRatioState = EmptyState


def _safe_norm(x: jax.Array, min_norm: Any) -> jax.Array:
    """``max(||x||, min_norm)`` whose gradient is 0, not NaN, where the norm is clipped.

    Optax's ``safe_norm``, written the same way so the values agree bitwise:
    where the norm is at most ``min_norm`` the norm is taken of ones instead,
    so the unused branch's derivative (``x / ||x||``) never divides by zero.
    """
    norm = jnp.linalg.norm(x, keepdims=True)
    x = jnp.where(norm <= min_norm, jnp.ones_like(x), x)
    norm = jnp.squeeze(norm)
    return jnp.where(norm <= min_norm, min_norm, jnp.linalg.norm(x))


@value_class
class scale_by_trust_ratio(Transformation):  # noqa: N801 - Optax's name
    """Scales each leaf's update by the ratio of the parameter's norm to the update's.

    Update rule, per leaf, with ``||.||`` the L2 norm over the whole leaf::

        p_norm = max(||p||, min_norm)
        u_norm = max(||u||, min_norm)
        ratio = trust_coefficient * p_norm / (u_norm + eps)
        u <- u * ratio          (u unchanged where p_norm or u_norm is 0)

    The norms and the ratio are computed in float32 or wider; the update
    keeps its dtype.

    Args:
      min_norm: the least norm assumed for the parameters and the update, >= 0
        (0: no clipping).
      trust_coefficient: multiplies the ratio, >= 0.
      eps: added to the update's norm in the denominator, >= 0.

    Raises:
      ValueError: if a hyperparameter is negative, or at update time if
        params are not given.

    References:
      You et al., *Large Batch Training of Convolutional Networks*, 2017,
      https://arxiv.org/abs/1708.03888

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_trust_ratio()
      >>> p = jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([0.0, 0.5]), tx.init(p), p)[0]  # the update gets |p| = 5
      Array([0., 5.], dtype=float32)
    """

    min_norm: jax.typing.ArrayLike = hyperparameter(default=0.0)
    trust_coefficient: jax.typing.ArrayLike = hyperparameter(default=1.0)
    eps: jax.typing.ArrayLike = hyperparameter(default=0.0)

    def __post_init__(self) -> None:
        checks.check_number("min_norm", self.min_norm, low=0.0)
        checks.check_number("trust_coefficient", self.trust_coefficient, low=0.0)
        checks.check_number("eps", self.eps, low=0.0)

    def init(self, params: Params) -> OptState:
        del params
        return ScaleByTrustRatioState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del extra_args
        if params is None:
            raise ValueError(checks.PARAMS_REQUIRED.format(name="scale_by_trust_ratio"))
        checks.check_trees_match(
            updates, params, tree_name="gradients", reference_name="parameters"
        )

        def leaf(u: jax.Array, p: jax.Array) -> jax.Array:
            dtype = numerics.compute_dtype(u.dtype, p.dtype)
            wide_u = u.astype(dtype)
            param_norm = _safe_norm(p.astype(dtype), self.min_norm)
            update_norm = _safe_norm(wide_u, self.min_norm)
            ratio = self.trust_coefficient * param_norm / (update_norm + self.eps)
            # Without min_norm a zero parameter (a fresh bias) would never move.
            zero_norm = jnp.logical_or(param_norm == 0.0, update_norm == 0.0)
            ratio = jnp.where(zero_norm, jnp.ones_like(ratio), ratio)
            return (wide_u * ratio).astype(u.dtype)

        return trees.leaf_map(leaf, updates, params), state


def _mask_field(mask: Any, argument: str) -> Any:
    """A lars mask as stored: a bool as it is, a tree frozen, a callable unchanged."""
    if isinstance(mask, bool):
        return mask
    return static_mask(mask, argument)


@value_class
class lars(Alias):  # noqa: N801 - Optax's name
    """LARS: SGD with momentum and a layer-wise trust ratio.

    Update rule, per leaf (the trust ratio on the leaves ``trust_ratio_mask``
    selects, the decay on those ``weight_decay_mask`` selects)::

        g <- g + weight_decay * p
        g <- g * trust_coefficient * ||p|| / (||g|| + eps)
        m <- -learning_rate(t) * g + momentum * m
        u <- m                     (or the Nesterov form)

    The chain is Optax's, ``add_decayed_weights(weight_decay,
    weight_decay_mask) -> masked(scale_by_trust_ratio(...), trust_ratio_mask)
    -> scale_by_learning_rate -> trace(momentum, nesterov)``, so the state is
    Optax's too.

    Args:
      learning_rate: a non-negative number or a schedule.
      weight_decay: L2 coefficient (or schedule) added before the trust ratio,
        >= 0.
      weight_decay_mask: which leaves to decay: True (all), a pytree of
        booleans (a prefix of the params), a callable returning one, or None
        (all, without Optax's masked layer in the state).
      trust_coefficient: multiplies the trust ratio, >= 0.
      eps: added to the update's norm in the trust ratio, >= 0.
      trust_ratio_mask: which leaves get the trust ratio (as for the decay,
        None excepted).
      momentum: the momentum coefficient, >= 0.
      nesterov: use Nesterov momentum.

    Raises:
      ValueError: if a hyperparameter is out of range, or at update time if
        params are not given.
      TypeError: if a mask is not a tree of booleans or a callable.

    References:
      You et al., *Large Batch Training of Convolutional Networks*, 2017,
      https://arxiv.org/abs/1708.03888

    Example:
      >>> import gradtx
      >>> gradtx.lars(0.1, weight_decay=1e-4)
      lars(learning_rate=0.1, weight_decay=0.0001, momentum=0.9)
    """

    learning_rate: ScalarOrSchedule = hyperparameter(shown=True)
    weight_decay: ScalarOrSchedule = hyperparameter(default=0.0, shown=True)
    weight_decay_mask: Any = static_field(default=True)
    trust_coefficient: jax.typing.ArrayLike = hyperparameter(default=0.001)
    eps: jax.typing.ArrayLike = hyperparameter(default=0.0)
    trust_ratio_mask: Any = static_field(default=True)
    momentum: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    nesterov: bool = static_field(default=False)

    def __post_init__(self) -> None:
        mask = self.weight_decay_mask
        stored = mask if mask is None else _mask_field(mask, "weight_decay_mask")
        object.__setattr__(self, "weight_decay_mask", stored)
        object.__setattr__(
            self, "trust_ratio_mask", _mask_field(self.trust_ratio_mask, "trust_ratio_mask")
        )
        checks.check_number("momentum", self.momentum, low=0.0)
        self.expand()  # validates every other argument with its own name

    def expand(self) -> chain:
        return chain(
            add_decayed_weights(self.weight_decay, mask=self.weight_decay_mask),
            masked(
                scale_by_trust_ratio(trust_coefficient=self.trust_coefficient, eps=self.eps),
                mask=self.trust_ratio_mask,
            ),
            scale_by_learning_rate(self.learning_rate),
            trace(decay=self.momentum, nesterov=self.nesterov),
        )


@value_class
class lamb(Alias):  # noqa: N801 - Optax's name
    """LAMB: Adam with decoupled weight decay and a layer-wise trust ratio.

    Update rule, per leaf (see :class:`~gradtx.scale_by_adam` for ``adam(g)``)::

        r <- adam(g) + weight_decay * p
        u <- -learning_rate(t) * r * ||p|| / ||r||

    The chain is Optax's, ``scale_by_adam -> add_decayed_weights(weight_decay,
    mask) -> scale_by_trust_ratio() -> scale_by_learning_rate``.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      weight_decay: decoupled weight-decay coefficient (or schedule), >= 0.
      mask: which leaves to decay (see :class:`~gradtx.add_decayed_weights`).

    Raises:
      ValueError: if a hyperparameter is out of range, or at update time if
        params are not given.

    References:
      You et al., *Large Batch Optimization for Deep Learning: Training BERT in
      76 minutes*, 2020, https://arxiv.org/abs/1904.00962

    Example:
      >>> import gradtx
      >>> gradtx.lamb(1e-3, weight_decay=0.01)
      lamb(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-06, weight_decay=0.01)
    """

    learning_rate: ScalarOrSchedule = hyperparameter(shown=True)
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-6, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    weight_decay: ScalarOrSchedule = hyperparameter(default=0.0, shown=True)
    mask: Any = static_field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", masks.freeze_mask(self.mask))
        self.expand()  # validates every argument with its own name

    def expand(self) -> chain:
        return chain(
            scale_by_adam(b1=self.b1, b2=self.b2, eps=self.eps, eps_root=self.eps_root),
            add_decayed_weights(self.weight_decay, mask=self.mask),
            scale_by_trust_ratio(),
            scale_by_learning_rate(self.learning_rate),
        )


def _fromage_factor(learning_rate: Any) -> Any:
    """``1 / sqrt(1 + learning_rate**2)``, as Optax writes it (Python floats stay floats)."""
    return 1 / (1 + learning_rate**2) ** 0.5


@value_class
class _fromage_learning_rate(Schedule):  # noqa: N801 - a schedule, named like the others
    """Fromage's scaled learning rate for a scheduled one: ``lr(t) / sqrt(1 + lr(t)**2)``."""

    learning_rate: Any = hyperparameter()

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        learning_rate = self.learning_rate(count)
        return _fromage_factor(learning_rate) * learning_rate


@value_class
class _fromage_shrink(Schedule):  # noqa: N801
    """Fromage's weight "decay" for a scheduled learning rate: ``1 / sqrt(1 + lr(t)**2) - 1``."""

    learning_rate: Any = hyperparameter()

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        return _fromage_factor(self.learning_rate(count)) - 1


def _shrink(coefficient: Any) -> add_decayed_weights:
    """``add_decayed_weights(coefficient)`` for Fromage's coefficient, which is negative.

    A user's weight decay must be >= 0 and ``add_decayed_weights`` checks so;
    Fromage's ``1 / sqrt(1 + lr**2) - 1`` shrinks the parameters on purpose, so
    it is set past that check (the rule applied is the same).
    """
    decay = add_decayed_weights()
    object.__setattr__(decay, "weight_decay", coefficient)
    return decay


@value_class
class fromage(Alias):  # noqa: N801 - Optax's name
    """Fromage: Frobenius-matched gradient descent, needing little learning-rate tuning.

    Update rule, per leaf, with ``c = 1 / sqrt(1 + learning_rate(t)**2)``::

        g <- g * max(||p||, min_norm) / max(||g||, min_norm)
        p <- c * (p - learning_rate(t) * g)

    The chain is Optax's, ``scale_by_trust_ratio(min_norm) ->
    scale_by_learning_rate(learning_rate * c) -> add_decayed_weights(c - 1)``
    (with a scheduled learning rate, both derived values are schedules, so the
    state holds their step counts as Optax's does).

    Args:
      learning_rate: a non-negative number or a schedule.
      min_norm: the least norm assumed for the parameters and the gradient, >= 0
        (keeps a zero parameter or gradient from dividing by zero).

    Raises:
      ValueError: if a hyperparameter is negative, or at update time if params
        are not given.

    References:
      Bernstein et al., *On the distance between two neural networks and the
      stability of learning*, 2020, https://arxiv.org/abs/2002.03432

    Example:
      >>> import gradtx
      >>> gradtx.fromage(1e-2)
      fromage(learning_rate=0.01, min_norm=1e-06)
    """

    learning_rate: ScalarOrSchedule = hyperparameter(shown=True)
    min_norm: jax.typing.ArrayLike = hyperparameter(default=1e-6, shown=True)

    def __post_init__(self) -> None:
        checks.check_number("learning_rate", self.learning_rate, low=0.0)
        checks.check_number("min_norm", self.min_norm, low=0.0)

    def expand(self) -> chain:
        if callable(self.learning_rate):
            scaled: Any = _fromage_learning_rate(self.learning_rate)
            shrink = add_decayed_weights(_fromage_shrink(self.learning_rate))
        else:
            factor = _fromage_factor(self.learning_rate)
            scaled = self.learning_rate * factor
            shrink = _shrink(factor - 1)
        return chain(
            scale_by_trust_ratio(self.min_norm),
            scale_by_learning_rate(scaled),
            shrink,
        )
