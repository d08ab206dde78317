"""Muon: momentum orthogonalized by a Newton-Schulz iteration, AdamW for the other leaves."""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, numerics, trees
from gradtx.aliases import adamw, documents_non_finite
from gradtx.base import (
    EmptyState,
    OptState,
    Params,
    ScalarOrSchedule,
    Transformation,
    Updates,
    Value,
    hyperparameter,
    static_field,
    value_class,
)
from gradtx.combine import chain
from gradtx.transforms.muon_matrices import (
    PRECONDITIONINGS,
    MuonDimensionNumbers,
    frozen_spec,
    leaves_and_specs,
    matrix_axes,
    orthogonalize_via_newton_schulz,
)
from gradtx.transforms.partition import partition
from gradtx.transforms.scale import scale_by_learning_rate
from gradtx.transforms.weight_decay import add_decayed_weights

# Optax's coefficients: Jordan's quintic, and Dion's one row per step.
_DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
_DION_NS_COEFFS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
_NS_COEFFS_PRESETS = {"standard": _DEFAULT_NS_COEFFS, "dion": _DION_NS_COEFFS}


class MuonState(NamedTuple):
    """State of :class:`scale_by_muon` (Optax's layout).

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      mu: the momentum (moving average of gradients, decay ``beta``).
      ns_coeffs: the Newton-Schulz coefficients, ``(3,)`` or ``(n, 3)``, float32.
    """

    count: jax.Array  # type: ignore[assignment]  # Optax's field name, shadows tuple.count
    mu: Updates
    ns_coeffs: jax.Array


def _coefficients(value: Any, ns_steps: int) -> tuple[Any, ...]:
    """``ns_coeffs`` as a tuple of Python floats (or of 3-tuples), checked against ns_steps."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError) as error:
        raise TypeError(
            f"ns_coeffs must be three numbers or a tuple of (a, b, c) rows, got {value!r}"
        ) from error
    if array.ndim not in (1, 2) or array.shape[-1] != 3:
        raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got shape {array.shape}")
    if array.ndim == 2 and array.shape[0] > ns_steps:
        raise ValueError(
            f"ns_coeffs has {array.shape[0]} rows, more than ns_steps={ns_steps}: with one "
            "row per step ns_steps must be at least the number of rows (as in Optax), "
            "which then sets the number of steps"
        )
    if array.ndim == 1:
        return tuple(float(c) for c in array)
    return tuple(tuple(float(c) for c in row) for row in array)


def _check_options(instance: Any) -> None:
    if isinstance(instance.ns_steps, bool) or not isinstance(instance.ns_steps, (int, np.integer)):
        raise TypeError(f"ns_steps must be an int, got {instance.ns_steps!r}")
    object.__setattr__(instance, "ns_steps", int(instance.ns_steps))
    checks.check_number("ns_steps", instance.ns_steps, low=0)
    checks.check_number("beta", instance.beta, low=0.0, high=1.0, high_inclusive=False)
    checks.check_number("eps", instance.eps, low=0.0)
    if instance.preconditioning not in PRECONDITIONINGS:
        raise ValueError(
            f"preconditioning must be one of {', '.join(PRECONDITIONINGS)}, "
            f"got {instance.preconditioning!r}"
        )
    object.__setattr__(
        instance, "mu_dtype", numerics.canonical_dtype(instance.mu_dtype, "mu_dtype")
    )


@value_class
class scale_by_muon(Transformation):  # noqa: N801 - Optax's name
    """Orthogonalizes the momentum of each matrix by a Newton-Schulz iteration.

    Update rule, with ``t`` the step (starting at 1), per matrix (or per
    matrix slice, see ``weight_dimension_numbers``)::

        mu <- beta * mu + (1 - beta) * g
        mu_hat = mu / (1 - beta**t)
        (nesterov) mu_hat = beta * mu / (1 - beta**(t+1)) + (1 - beta) * g / (1 - beta**t)
        u <- orthogonalize_via_newton_schulz(mu_hat)      (about U V^T for mu_hat = U S V^T)
        (adaptive) u <- <mu_hat, u> * u

    This is steepest descent under the spectral norm (Bernstein & Newhouse).
    Momentum and iteration are computed in float32 or wider, the momentum
    stored in ``mu_dtype``, the updates in the gradient's dtype. A leaf must
    be a matrix unless its dimension numbers make it one (or a batch of them).

    Args:
      ns_coeffs: the iteration's coefficients ``(a, b, c)``, or one such row
        per step (then ``ns_steps`` must be at least the number of rows, which
        sets the number of steps, as in Optax).
      ns_steps: the number of Newton-Schulz steps, >= 0.
      beta: decay of the momentum, in [0, 1).
      eps: added to the norm the momentum is divided by, >= 0.
      mu_dtype: storage dtype of the momentum; None keeps the params'.
      nesterov: use Nesterov momentum.
      adaptive: scale the update by the dual norm ``<mu_hat, u>`` (Bernstein &
        Newhouse).
      preconditioning: how the iteration's input is rescaled: ``"frobenius"``
        (Optax's default), ``"spectral"``, ``"aol"`` or ``"schatten"`` (see
        :func:`orthogonalize_via_newton_schulz`).
      weight_dimension_numbers: None (every leaf is a ``(fan_in, fan_out)``
        matrix), a :class:`MuonDimensionNumbers` for all leaves, or a tree of
        them and None (a plain matrix) shaped like the params or a prefix of
        them, as nested dicts, lists and tuples; all of these round-trip
        through :func:`gradtx.to_config`. A callable from the gradients to such
        a tree works too (as in Optax) but cannot be written to a config.

    Raises:
      ValueError: if a hyperparameter is out of range, ``ns_coeffs`` has a bad
        shape or ``preconditioning`` is unknown; at update time, naming the
        key path, if a leaf is not a matrix and has no dimension numbers.
      TypeError: if ``ns_steps`` is not an int, or a node of
        ``weight_dimension_numbers`` is not one of the above.

    References:
      Jordan et al., *Muon: An optimizer for hidden layers in neural networks*,
      2024, https://kellerjordan.github.io/posts/muon/. Bernstein & Newhouse,
      *Old Optimizer, New Norm: An Anthology*, 2024,
      https://arxiv.org/abs/2409.20325

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_muon()
      >>> g = jnp.array([[3.0, 0.0], [0.0, 0.1]])
      >>> tx.update(g, tx.init(g))[0].round(2)
      Array([[0.7 , 0.  ],
             [0.  , 1.13]], dtype=float32)
    """

    ns_coeffs: tuple[Any, ...] = static_field(default=_DEFAULT_NS_COEFFS)
    ns_steps: int = static_field(default=5)
    beta: jax.typing.ArrayLike = hyperparameter(default=0.95, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8)
    mu_dtype: str | None = static_field(default=None)
    nesterov: bool = static_field(default=True, kw_only=True)
    adaptive: bool = static_field(default=False, kw_only=True)
    preconditioning: str = static_field(default="frobenius", kw_only=True)
    weight_dimension_numbers: Any = static_field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        _check_options(self)
        object.__setattr__(self, "ns_coeffs", _coefficients(self.ns_coeffs, self.ns_steps))
        object.__setattr__(
            self,
            "weight_dimension_numbers",
            frozen_spec(self.weight_dimension_numbers, "weight_dimension_numbers"),
        )

    def init(self, params: Params) -> OptState:
        return MuonState(
            count=numerics.zero_count(),
            mu=trees.zeros_like(params, self.mu_dtype),
            ns_coeffs=jnp.asarray(self.ns_coeffs),
        )

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        checks.check_state_fields(state, MuonState, "scale_by_muon")
        checks.check_trees_match(
            updates, state.mu, tree_name="gradients", reference_name="optimizer state"
        )
        treedef, leaves = leaves_and_specs(
            self.weight_dimension_numbers, updates, "weight_dimension_numbers"
        )
        count = numerics.safe_increment(state.count)
        correct = numerics.BiasCorrection(count)
        beta = self.beta

        def leaf(g: jax.Array, mu: jax.Array, spec: Any, where: str) -> tuple[jax.Array, ...]:
            matrix_axes(g, spec, f"scale_by_muon: the gradient {where}")
            dtype = numerics.compute_dtype(g.dtype, mu.dtype)
            mu_new = numerics.update_moment(g, mu, beta, dtype=dtype)
            mu_hat = numerics.debiased_mean(mu_new, g, beta, correct, nesterov=self.nesterov)
            update = orthogonalize_via_newton_schulz(
                mu_hat, state.ns_coeffs, self.ns_steps, self.preconditioning, self.eps, spec
            )
            if self.adaptive:
                update = jnp.sum(mu_hat.conj() * update) * update
            return update.astype(g.dtype), mu_new.astype(mu.dtype)

        moments = treedef.flatten_up_to(state.mu)
        results = [
            (None, None) if g is None else leaf(trees.as_array(g), mu, spec, where)
            for (where, g, spec), mu in zip(leaves, moments)
        ]
        new_updates = treedef.unflatten([u for u, _ in results])
        mu = treedef.unflatten([m for _, m in results])
        return new_updates, MuonState(count=count, mu=mu, ns_coeffs=state.ns_coeffs)


@value_class
class scale_by_shape(Transformation):  # noqa: N801 - Optax's name (optax.contrib._muon)
    """Scales each matrix's update by a factor of its shape, as Muon's second step.

    Update rule, with ``fan_in`` and ``fan_out`` the products of a leaf's
    reduction and output axes (its dimension numbers)::

        u <- sqrt(max(1, fan_out / fan_in)) * u               (consistent_rms None)
        u <- consistent_rms * sqrt(max(fan_in, fan_out)) * u  (otherwise)

    The first is Jordan's width scaling; the second (Liu et al.) gives an
    orthogonalized update the RMS ``consistent_rms`` whatever its shape, so
    AdamW's learning rate and weight decay carry over (0.2 matches AdamW's).

    Args:
      weight_dimension_numbers: as for :class:`scale_by_muon`: None (every leaf
        is a matrix), a :class:`MuonDimensionNumbers`, a tree of them and None,
        or a callable (not serializable).
      consistent_rms: None for width scaling, or the target RMS, >= 0.

    Raises:
      ValueError: if ``consistent_rms`` is negative; at update time, naming the
        key path, if a leaf is not a matrix and has no dimension numbers.

    References:
      Jordan et al., *Muon: An optimizer for hidden layers in neural networks*,
      2024, https://kellerjordan.github.io/posts/muon/. Liu et al., *Muon is
      Scalable for LLM Training*, 2025, https://arxiv.org/abs/2502.16982

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_shape()
      >>> tx.update(jnp.ones((1, 4)), tx.init(None))[0]  # sqrt(4 / 1)
      Array([[2., 2., 2., 2.]], dtype=float32)
    """

    weight_dimension_numbers: Any = static_field(default=None)
    consistent_rms: jax.typing.ArrayLike | None = hyperparameter(default=None)

    def __post_init__(self) -> None:
        checks.check_number("consistent_rms", self.consistent_rms, low=0.0)
        object.__setattr__(
            self,
            "weight_dimension_numbers",
            frozen_spec(self.weight_dimension_numbers, "weight_dimension_numbers"),
        )

    def init(self, params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        del params, extra_args
        treedef, leaves = leaves_and_specs(
            self.weight_dimension_numbers, updates, "weight_dimension_numbers"
        )

        def leaf(u: jax.Array, spec: Any, where: str) -> jax.Array:
            reduction, output = matrix_axes(u, spec, f"scale_by_shape: the update {where}")
            fan_in = math.prod(u.shape[axis] for axis in reduction)
            fan_out = math.prod(u.shape[axis] for axis in output)
            if self.consistent_rms is None:
                factor = jnp.sqrt(jnp.maximum(1, fan_out / fan_in))
            else:
                factor = jnp.sqrt(jnp.maximum(fan_in, fan_out)) * self.consistent_rms
            return (jnp.asarray(factor).astype(u.dtype) * u).astype(u.dtype)

        scaled = [
            None if u is None else leaf(trees.as_array(u), spec, where) for where, u, spec in leaves
        ]
        return treedef.unflatten(scaled), state


# ---------------------------------------------------------------- muon


@value_class(pytree=False)
class _muon_labels(Value):  # noqa: N801 - a label function, named like gradtx.path_labels
    """Labels each leaf "muon" or "adam": by rank (2: muon), or by its dimension numbers."""

    weight_dimension_numbers: Any = static_field()

    def __call__(self, params: Any) -> Any:
        spec = self.weight_dimension_numbers
        treedef, leaves = leaves_and_specs(spec, params, "muon_weight_dimension_numbers")
        labels = [None if x is None else _label(x, spec, leaf_spec) for _, x, leaf_spec in leaves]
        return treedef.unflatten(labels)


def _label(leaf: Any, spec: Any, leaf_spec: MuonDimensionNumbers | None) -> str:
    if spec is None:  # Optax's default: the matrices to Muon
        return "muon" if jnp.ndim(leaf) == 2 else "adam"
    return "adam" if leaf_spec is None else "muon"


@documents_non_finite
@value_class
class muon(Transformation):  # noqa: N801 - Optax's name (optax.contrib.muon)
    """Muon for the matrices, AdamW for the other parameters: Optax's partition.

    Update rule, for a matrix ``W`` (a leaf with dimension numbers)::

        u <- scale_by_muon(g)                 (orthogonalized Nesterov momentum)
        u <- scale_by_shape(u)                (sqrt(max(1, fan_out / fan_in)) * u)
        u <- -learning_rate(t) * (u + weight_decay * W)

    and for every other leaf ``adamw(adam_learning_rate, adam_b1, adam_b2, eps,
    adam_eps_root, adam_weight_decay, mu_dtype, nesterov)``. It is
    ``partition({"muon": chain(scale_by_muon, scale_by_shape,
    add_decayed_weights, scale_by_learning_rate), "adam": adamw(...)}, labels)``
    as in Optax, so the state is Optax's ``PartitionState``; ``expand()``
    returns that partition. The weight decay is multiplied by the learning
    rate (as in PyTorch).

    Args:
      learning_rate: a non-negative number or a schedule.
      ns_coeffs: the Newton-Schulz coefficients ``(a, b, c)``, rows of them
        (one per step), or a preset: ``"standard"`` (Jordan's, the default)
        or ``"dion"``.
      ns_steps: the number of Newton-Schulz steps, >= 0.
      beta: decay of the momentum, in [0, 1).
      eps: the iteration's eps, and AdamW's, >= 0.
      weight_decay: decoupled weight decay of the Muon leaves (or schedule), >= 0.
      weight_decay_mask: which of them to decay (see
        :class:`~gradtx.add_decayed_weights`).
      mu_dtype: storage dtype of both first moments; None keeps the params'.
      nesterov: use Nesterov momentum (both optimizers).
      adaptive: scale Muon's updates by the dual norm (see :class:`scale_by_muon`).
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      adam_b1: AdamW's first-moment decay, in [0, 1).
      adam_b2: AdamW's second-moment decay, in [0, 1).
      adam_eps_root: AdamW's eps inside the square root, >= 0.
      adam_weight_decay: AdamW's weight decay, >= 0.
      adam_learning_rate: AdamW's learning rate (or schedule); None uses
        ``learning_rate``.
      muon_weight_dimension_numbers: None (every 2-D leaf goes to Muon, the
        rest to AdamW), or a tree of :class:`MuonDimensionNumbers` and None
        (None: AdamW) with the params' structure or a prefix of it, as nested
        dicts, lists and tuples (serializable); or a callable from the params
        to such a tree (as in Optax; not serializable).
      consistent_rms: None for Jordan's width scaling, or the RMS Muon's
        updates are scaled to (Liu et al. recommend 0.2), >= 0.

    Raises:
      ValueError: if a hyperparameter is out of range, ``ns_coeffs`` is not a
        preset or has a bad shape, or ``preconditioning`` is unknown; at
        ``init``/``update``, naming the key path, if a leaf has no entry in
        ``muon_weight_dimension_numbers``.
      TypeError: if ``ns_steps`` is not an int, or a node of
        ``muon_weight_dimension_numbers`` is not one of the above.

    References:
      Jordan et al., *Muon: An optimizer for hidden layers in neural networks*,
      2024, https://kellerjordan.github.io/posts/muon/. Liu et al., *Muon is
      Scalable for LLM Training*, 2025, https://arxiv.org/abs/2502.16982

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.muon(0.02)
      >>> tx
      muon(learning_rate=0.02, beta=0.95)
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> sorted(state.inner_states)
      ['adam', 'muon']
    """

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    learning_rate: ScalarOrSchedule = hyperparameter()
    ns_coeffs: str | tuple[Any, ...] = static_field(default=_DEFAULT_NS_COEFFS)
    ns_steps: int = static_field(default=5)
    beta: jax.typing.ArrayLike = hyperparameter(default=0.95, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8)
    weight_decay: ScalarOrSchedule = hyperparameter(default=0.0)
    weight_decay_mask: Any = static_field(default=None)
    mu_dtype: str | None = static_field(default=None)
    nesterov: bool = static_field(default=True, kw_only=True)
    adaptive: bool = static_field(default=False, kw_only=True)
    preconditioning: str = static_field(default="frobenius", kw_only=True)
    adam_b1: jax.typing.ArrayLike = hyperparameter(default=0.9, kw_only=True)
    adam_b2: jax.typing.ArrayLike = hyperparameter(default=0.999, kw_only=True)
    adam_eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0, kw_only=True)
    adam_weight_decay: ScalarOrSchedule = hyperparameter(default=0.0, kw_only=True)
    adam_learning_rate: ScalarOrSchedule | None = hyperparameter(default=None, kw_only=True)
    muon_weight_dimension_numbers: Any = static_field(default=None, kw_only=True)
    consistent_rms: jax.typing.ArrayLike | None = hyperparameter(default=None, kw_only=True)

    def __post_init__(self) -> None:
        _check_options(self)
        if isinstance(self.ns_coeffs, str):
            if self.ns_coeffs not in _NS_COEFFS_PRESETS:
                presets = ", ".join(map(repr, _NS_COEFFS_PRESETS))
                raise ValueError(
                    f"ns_coeffs must be one of the presets {presets} or coefficients, "
                    f"got {self.ns_coeffs!r}"
                )
        else:
            object.__setattr__(self, "ns_coeffs", _coefficients(self.ns_coeffs, self.ns_steps))
        checks.check_number("learning_rate", self.learning_rate, low=0.0)
        checks.check_number("adam_learning_rate", self.adam_learning_rate, low=0.0)
        checks.check_number("weight_decay", self.weight_decay, low=0.0)
        checks.check_number("adam_weight_decay", self.adam_weight_decay, low=0.0)
        for name in ("adam_b1", "adam_b2"):
            checks.check_number(name, getattr(self, name), low=0.0, high=1.0, high_inclusive=False)
        checks.check_number("adam_eps_root", self.adam_eps_root, low=0.0)
        object.__setattr__(
            self, "weight_decay_mask", add_decayed_weights(0.0, self.weight_decay_mask).mask
        )
        object.__setattr__(
            self,
            "muon_weight_dimension_numbers",
            frozen_spec(self.muon_weight_dimension_numbers, "muon_weight_dimension_numbers"),
        )
        self.expand()  # validates the rest with the pieces' messages

    def expand(self) -> partition:
        """Returns the partition this optimizer stands for (Optax's composition)."""
        coefficients = self.ns_coeffs
        if isinstance(coefficients, str):
            coefficients = _NS_COEFFS_PRESETS[coefficients]
        spec = self.muon_weight_dimension_numbers
        adam_learning_rate = self.adam_learning_rate
        if adam_learning_rate is None:
            adam_learning_rate = self.learning_rate
        return partition(
            transforms={
                "muon": chain(
                    scale_by_muon(
                        coefficients,
                        self.ns_steps,
                        self.beta,
                        self.eps,
                        self.mu_dtype,
                        nesterov=self.nesterov,
                        adaptive=self.adaptive,
                        preconditioning=self.preconditioning,
                        weight_dimension_numbers=spec,
                    ),
                    scale_by_shape(spec, self.consistent_rms),
                    add_decayed_weights(self.weight_decay, self.weight_decay_mask),
                    scale_by_learning_rate(self.learning_rate),
                ),
                "adam": adamw(
                    learning_rate=adam_learning_rate,
                    b1=self.adam_b1,
                    b2=self.adam_b2,
                    eps=self.eps,
                    eps_root=self.adam_eps_root,
                    weight_decay=self.adam_weight_decay,
                    mu_dtype=self.mu_dtype,
                    nesterov=self.nesterov,
                ),
            },
            param_labels=_muon_labels(spec),
        )

    def init(self, params: Params) -> OptState:
        return self.expand().init(params)

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        return self.expand().update(updates, state, params, **extra_args)
