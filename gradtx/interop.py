"""Handing a gradtx transformation to code that insists on Optax's own type."""

from typing import TYPE_CHECKING

from gradtx.base import GradientTransformation
from gradtx.combine import as_member

if TYPE_CHECKING:
    import optax


def to_optax(tx: GradientTransformation) -> "optax.GradientTransformationExtraArgs":
    """Returns ``tx`` as an ``optax.GradientTransformationExtraArgs``.

    gradtx values already have Optax's ``init``/``update`` methods, so
    ``optax.chain``, ``optax.masked``, Flax's ``TrainState`` and ``nnx.Optimizer``
    take them as they are. Some code goes further and checks
    ``isinstance(tx, optax.GradientTransformation)`` or unpacks the pair
    (``init, update = tx``); for that code, this returns the real Optax
    NamedTuple, whose two functions are ``tx.init`` and ``tx.update`` themselves,
    so the states and updates are exactly ``tx``'s. ``update`` takes (and passes
    on) extra keyword arguments, as ``GradientTransformationExtraArgs`` promises.

    Optax is imported only when this is called: gradtx itself does not need it.

    Args:
      tx: a gradtx transformation, or any object with Optax's ``init`` and
        ``update`` methods (which is wrapped in :class:`gradtx.foreign` first).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` computing what ``tx`` computes.

    Raises:
      ImportError: if Optax is not installed.
      TypeError: if ``tx`` is not a gradient transformation.

    Example:
      >>> import gradtx, optax, jax.numpy as jnp
      >>> tx = gradtx.to_optax(gradtx.sgd(0.1))
      >>> isinstance(tx, optax.GradientTransformation)
      True
      >>> params = {"w": jnp.ones(2)}
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> updates["w"]
      Array([-0.1, -0.1], dtype=float32)
    """
    try:
        import optax
    except ImportError as error:
        raise ImportError(
            "gradtx.to_optax needs Optax, which is not installed; install it with "
            "`pip install optax`"
        ) from error
    member = as_member(tx, "tx")
    return optax.GradientTransformationExtraArgs(init=member.init, update=member.update)
