"""Popular optimizers, each a short :class:`~gradtx.chain` of transformations.

An alias is itself a value: ``adamw(learning_rate=1e-3)`` prints, compares and
serializes as ``adamw`` with its arguments, while its state and updates are
exactly those of the chain returned by :meth:`Alias.expand`.
"""

import dataclasses
from typing import Any, TypeVar

import jax

from gradtx import checks, numerics
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
from gradtx.transforms.adam import scale_by_adam
from gradtx.transforms.momentum import trace
from gradtx.transforms.scale import identity, scale_by_learning_rate
from gradtx.transforms.weight_decay import add_decayed_weights

ClassT = TypeVar("ClassT", bound=type)

NON_FINITE_NOTE = """

    Non-finite gradients:
      A NaN or infinite gradient is not skipped: it spreads into the state this
      optimizer keeps (moments, momentum) and into the parameters, so every
      later update is NaN as well. To skip such steps and keep the state as it
      was, wrap the optimizer: ``gradtx.apply_if_finite(tx,
      max_consecutive_errors=...)``, or ``gradtx.MultiSteps(tx, 1,
      should_skip_update_fn=gradtx.skip_not_finite())``.
    """


def documents_non_finite(cls: ClassT) -> ClassT:
    """Ends an optimizer's docstring with :data:`NON_FINITE_NOTE` (once)."""
    if cls.__doc__ and "Non-finite gradients:" not in cls.__doc__:
        cls.__doc__ = cls.__doc__.rstrip() + NON_FINITE_NOTE
    return cls


class Alias(Transformation):
    """An optimizer defined as a chain; init and update delegate to it.

    Every subclass's docstring ends with :data:`NON_FINITE_NOTE`, written here
    once rather than in each optimizer.
    """

    needs_floating_leaves = False  # leaves integer leaves to its members' rules

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        documents_non_finite(cls)

    def expand(self) -> chain:
        """Returns the chain of transformations this optimizer stands for."""
        raise NotImplementedError

    def init(self, params: Params) -> OptState:
        return self.expand().init(params)

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        return self.expand().update(updates, state, params, **extra_args)


def _is_python_zero(value: Any) -> bool:
    # Decided on the Python type, never on an array's value: a traced weight
    # decay (optax.inject_hyperparams) must give the same chain as a concrete one.
    return value is None or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0
    )


@value_class
class sgd(Alias):  # noqa: N801 - Optax's name
    """Stochastic gradient descent, with optional momentum and L2 weight decay.

    Update rule (torch.optim.SGD's)::

        g <- g + weight_decay * p          (if weight_decay is given)
        m <- g + momentum * m              (if momentum is not None)
        u <- -learning_rate * m            (or the Nesterov form of m)

    The chain is Optax's, ``[trace(momentum, nesterov, accumulator_dtype)] ->
    scale_by_learning_rate(learning_rate)``, so its state is Optax's too; with
    a weight decay it is ``chain(add_decayed_weights(weight_decay), <that
    chain>)``, the state of ``optax.chain(optax.add_decayed_weights(wd),
    optax.sgd(...))``. The decay
    step is there unless ``weight_decay`` is None or a Python number equal to
    zero (decided on the type, so a traced or array weight decay always has
    it); without it ``update`` needs no params.

    Args:
      learning_rate: a non-negative number or a schedule.
      momentum: the momentum coefficient, or None for plain SGD.
      nesterov: use Nesterov momentum.
      accumulator_dtype: storage dtype of the momentum buffer; None keeps the
        params'.
      weight_decay: gradtx's addition (keyword-only): L2 penalty coefficient
        (or schedule) added to the gradient before momentum, >= 0.

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Robbins & Monro, *A Stochastic Approximation Method*, 1951. Sutskever et
      al., *On the importance of initialization and momentum in deep
      learning*, 2013.

    Example:
      >>> import gradtx
      >>> gradtx.sgd(0.1, momentum=0.9)
      sgd(learning_rate=0.1, momentum=0.9)
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    momentum: jax.typing.ArrayLike | None = hyperparameter(default=None)
    nesterov: bool = static_field(default=False)
    accumulator_dtype: str | None = static_field(default=None)
    weight_decay: ScalarOrSchedule | None = hyperparameter(default=None, kw_only=True)
    # Fixed at construction: whether the chain has a weight-decay step.
    has_weight_decay: bool = dataclasses.field(
        init=False, repr=False, metadata={"gradtx_static": True}
    )

    def __post_init__(self) -> None:
        checks.check_number("learning_rate", self.learning_rate, low=0.0)
        checks.check_number("momentum", self.momentum, low=0.0)
        checks.check_number("weight_decay", self.weight_decay, low=0.0)
        object.__setattr__(
            self,
            "accumulator_dtype",
            numerics.canonical_dtype(self.accumulator_dtype, "accumulator_dtype"),
        )
        object.__setattr__(self, "has_weight_decay", not _is_python_zero(self.weight_decay))

    def expand(self) -> chain:
        if self.momentum is None:
            momentum: Transformation = identity()
        else:
            momentum = trace(
                decay=self.momentum,
                nesterov=self.nesterov,
                accumulator_dtype=self.accumulator_dtype,
            )
        plain = chain(momentum, scale_by_learning_rate(self.learning_rate))
        if self.has_weight_decay:
            assert self.weight_decay is not None  # None is no weight decay
            # The state of optax.chain(optax.add_decayed_weights(wd), optax.sgd(...)),
            # the usual way to write this optimizer with Optax.
            return chain(add_decayed_weights(self.weight_decay), plain)
        return plain


@value_class(pytree=False)
class _AdamFamily(Alias):
    """The arguments every Adam-family alias shares, in Optax's order.

    A dataclass base only (subclasses are the registered pytrees); its
    ``__post_init__`` normalizes ``mu_dtype`` and validates through ``expand``.
    """

    learning_rate: ScalarOrSchedule = hyperparameter()
    b1: jax.typing.ArrayLike = hyperparameter(default=0.9, shown=True)
    b2: jax.typing.ArrayLike = hyperparameter(default=0.999, shown=True)
    eps: jax.typing.ArrayLike = hyperparameter(default=1e-8, shown=True)
    eps_root: jax.typing.ArrayLike = hyperparameter(default=0.0)
    mu_dtype: str | None = static_field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu_dtype", numerics.canonical_dtype(self.mu_dtype, "mu_dtype"))
        self.expand()  # validates every argument with its own name


@value_class
class adam(_AdamFamily):  # noqa: N801
    """Adam: ``scale_by_adam`` followed by ``scale_by_learning_rate``.

    Update rule: see :class:`~gradtx.scale_by_adam`; then
    ``u <- -learning_rate(t) * u``.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: storage dtype of the first moment.
      nesterov: use Nesterov momentum (this is NAdam).

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Kingma & Ba, *Adam: A Method for Stochastic Optimization*, 2014,
      https://arxiv.org/abs/1412.6980

    Example:
      >>> import gradtx
      >>> gradtx.adam(1e-3)
      adam(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08)
    """

    nesterov: bool = static_field(default=False, kw_only=True)

    def expand(self) -> chain:
        return chain(
            scale_by_adam(
                self.b1, self.b2, self.eps, self.eps_root, self.mu_dtype, nesterov=self.nesterov
            ),
            scale_by_learning_rate(self.learning_rate),
        )


@value_class
class adamw(_AdamFamily):  # noqa: N801
    """AdamW: Adam with decoupled weight decay.

    Update rule: ``u <- -learning_rate(t) * (adam_update + weight_decay * p)``,
    the decay applied to the leaves ``mask`` selects. The chain is
    ``scale_by_adam -> add_decayed_weights -> scale_by_learning_rate``.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: storage dtype of the first moment.
      weight_decay: decoupled weight-decay coefficient (or schedule), >= 0.
      mask: which leaves to decay (see :class:`~gradtx.add_decayed_weights`).
      nesterov: use Nesterov momentum (this is NAdamW).

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, 2019,
      https://arxiv.org/abs/1711.05101

    Example:
      >>> import gradtx
      >>> gradtx.adamw(1e-3, weight_decay=0.01)
      adamw(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08, weight_decay=0.01)
    """

    weight_decay: ScalarOrSchedule = hyperparameter(default=1e-4, shown=True)
    mask: Any = static_field(default=None)
    nesterov: bool = static_field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", add_decayed_weights(0.0, self.mask).mask)
        super().__post_init__()

    def expand(self) -> chain:
        return chain(
            scale_by_adam(
                self.b1, self.b2, self.eps, self.eps_root, self.mu_dtype, nesterov=self.nesterov
            ),
            add_decayed_weights(self.weight_decay, self.mask),
            scale_by_learning_rate(self.learning_rate),
        )


@value_class
class nadam(_AdamFamily):  # noqa: N801
    """NAdam: Adam with Nesterov momentum (``adam(..., nesterov=True)``).

    Update rule: see :class:`~gradtx.scale_by_adam` with ``nesterov=True``.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: storage dtype of the first moment.

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Dozat, *Incorporating Nesterov Momentum into Adam*, 2016,
      https://openreview.net/pdf?id=OM0jvwB8jIp57ZJjtNEZ
    """

    def expand(self) -> chain:
        return adam(
            self.learning_rate,
            self.b1,
            self.b2,
            self.eps,
            self.eps_root,
            self.mu_dtype,
            nesterov=True,
        ).expand()


@value_class
class nadamw(_AdamFamily):  # noqa: N801
    """NAdamW: AdamW with Nesterov momentum (``adamw(..., nesterov=True)``).

    Update rule: see :class:`~gradtx.adamw` and :class:`~gradtx.scale_by_adam`.

    Args:
      learning_rate: a non-negative number or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: storage dtype of the first moment.
      weight_decay: decoupled weight-decay coefficient (or schedule), >= 0.
      mask: which leaves to decay.

    Raises:
      ValueError: if a hyperparameter is out of range.

    References:
      Dozat, 2016; Loshchilov & Hutter, 2019.
    """

    weight_decay: ScalarOrSchedule = hyperparameter(default=1e-4, shown=True)
    mask: Any = static_field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", add_decayed_weights(0.0, self.mask).mask)
        super().__post_init__()

    def expand(self) -> chain:
        return adamw(
            self.learning_rate,
            self.b1,
            self.b2,
            self.eps,
            self.eps_root,
            self.mu_dtype,
            self.weight_decay,
            self.mask,
            nesterov=True,
        ).expand()
