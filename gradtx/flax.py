"""Flax's ``TrainState`` and ``nnx.Optimizer`` with gradtx's one-pass step.

``from gradtx.flax import TrainState`` is a drop-in for
``flax.training.train_state.TrainState``, and ``gradtx.flax.Optimizer`` for
``flax.nnx.Optimizer`` (both need Flax installed, as the ``examples`` extra
does). In ``TrainState`` two things change:

- ``apply_gradients`` runs :func:`gradtx.fused_apply`: the one-pass native
  step where it applies (AdamW and its family on float32 params on one CPU
  device), the plain ``tx.update`` + ``apply_updates`` everywhere else, with
  the same numbers bit for bit.
- ``tx`` is a pytree field, not a static one: its hyperparameters are leaves
  of the state, so ``state.replace(tx=dataclasses.replace(state.tx,
  learning_rate=3e-4))`` changes the learning rate inside a jitted step
  without tracing it again (Flax's keeps ``tx`` static, so any change retraces).

``Optimizer.update`` runs :func:`gradtx.fused_apply` too; its ``tx`` stays a
static attribute, as in nnx.
"""

from typing import Any

import jax
from flax import nnx, struct
from flax.linen.fp8_ops import OVERWRITE_WITH_GRADIENT
from flax.training import train_state

from gradtx.base import Value
from gradtx.checks import capped_repr
from gradtx.fused import fused_apply


class TrainState(train_state.TrainState):
    """A Flax ``TrainState`` whose step is :func:`gradtx.fused_apply` and whose ``tx`` is data.

    Fields, ``create`` and ``apply_gradients(grads=...)`` are Flax's, so code
    written for ``flax.training.train_state.TrainState`` (subclasses with
    extra fields, ``batch_stats``, checkpointing the state) works unchanged.

    Args:
      step: the number of ``apply_gradients`` calls so far.
      apply_fn: usually ``model.apply`` (static).
      params: the parameters ``tx`` updates.
      tx: a gradtx optimizer; a pytree field, so its numeric hyperparameters
        are traced like the params.
      opt_state: ``tx``'s state.

    Raises:
      TypeError: from ``create``, if ``tx`` is not a gradtx transformation (an
        Optax one has no pytree of hyperparameters: use Flax's own class).

    Example:
      >>> import dataclasses, gradtx, jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from gradtx.flax import TrainState
      >>> model = nn.Dense(2)
      >>> params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
      >>> state = TrainState.create(apply_fn=model.apply, params=params, tx=gradtx.adamw(1e-3))
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> traces = []
      >>> @jax.jit
      ... def step(state, grads):
      ...     traces.append(1)
      ...     return state.apply_gradients(grads=grads)
      >>> state = step(state, grads)
      >>> lowered = state.replace(tx=dataclasses.replace(state.tx, learning_rate=1e-4))
      >>> int(step(lowered, grads).step), len(traces)  # one trace for both rates
      (2, 1)
    """

    tx: Any = struct.field(pytree_node=True)

    @classmethod
    def create(cls, *, apply_fn: Any, params: Any, tx: Any, **kwargs: Any) -> "TrainState":
        """Builds the state with ``opt_state = tx.init(params)`` and ``step = 0``, as Flax's.

        Args:
          apply_fn: usually ``model.apply``.
          params: the parameters (or a dict with ``OVERWRITE_WITH_GRADIENT``
            variables next to ``"params"``, as Flax's fp8 layers keep them).
          tx: a gradtx optimizer.
          **kwargs: the fields a subclass adds.

        Returns:
          The new state.

        Raises:
          TypeError: if ``tx`` is not a gradtx transformation.
        """
        if not isinstance(tx, Value):
            raise TypeError(
                "gradtx.flax.TrainState needs a gradtx optimizer (its hyperparameters are "
                f"leaves of the state), got {capped_repr(tx)}; use "
                "flax.training.train_state.TrainState for an Optax one"
            )
        return super().create(apply_fn=apply_fn, params=params, tx=tx, **kwargs)

    def apply_gradients(self, *, grads: Any, **kwargs: Any) -> "TrainState":
        """One optimizer step through :func:`gradtx.fused_apply`; ``step`` + 1.

        As in Flax, variables under ``OVERWRITE_WITH_GRADIENT`` are replaced by
        their gradients rather than updated by ``tx``.

        Args:
          grads: gradients shaped like ``params``.
          **kwargs: other fields to replace (``batch_stats=...``).

        Returns:
          The state after the step.

        Raises:
          ValueError: as ``tx.update`` does, e.g. when ``grads`` do not match
            the params (naming the key path).
        """
        overwrite = isinstance(grads, dict) and OVERWRITE_WITH_GRADIENT in grads
        params = self.params["params"] if overwrite else self.params
        trained_grads = grads["params"] if overwrite else grads
        new_params, opt_state = fused_apply(self.tx, params, self.opt_state, trained_grads)
        if overwrite:
            new_params = {
                "params": new_params,
                OVERWRITE_WITH_GRADIENT: grads[OVERWRITE_WITH_GRADIENT],
            }
        return self.replace(
            step=self.step + 1,
            params=new_params,
            opt_state=opt_state,
            **kwargs,
        )


class Optimizer(nnx.Optimizer):
    """``flax.nnx.Optimizer`` whose ``update`` is :func:`gradtx.fused_apply`.

    Built and called exactly as nnx's (``Optimizer(model, tx, wrt=nnx.Param)``,
    ``optimizer.update(model, grads)`` inside ``nnx.jit``); the params and
    state it produces are bit for bit those of ``nnx.Optimizer`` with the same
    gradtx ``tx``, through the one-pass native step where it applies. Extra
    arguments for ``tx.update`` (``value=loss``) take nnx's plain path.

    Args:
      model: the nnx module.
      tx: a gradtx optimizer.
      wrt: which variables to train (``nnx.Param``), as in nnx.
      **kwargs: other arguments of ``nnx.Optimizer`` (``graph=``).

    Raises:
      TypeError: if ``tx`` is not a gradtx transformation.

    Example:
      >>> import gradtx, jax.numpy as jnp
      >>> from flax import nnx
      >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
      >>> from gradtx.flax import Optimizer
      >>> optimizer = Optimizer(model, gradtx.adamw(1e-3), wrt=nnx.Param)
      >>> grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 3)))))(model)
      >>> _ = optimizer.update(model, grads)
      >>> int(optimizer.step[...])
      1
    """

    def __init__(self, model: Any, tx: Any, *, wrt: Any, **kwargs: Any) -> None:
        if not isinstance(tx, Value):
            raise TypeError(
                f"gradtx.flax.Optimizer needs a gradtx optimizer, got {capped_repr(tx)}; use "
                "flax.nnx.Optimizer for an Optax one"
            )
        super().__init__(model, tx, wrt=wrt, **kwargs)

    def update(self, model: Any, grads: Any, /, **kwargs: Any) -> Any:
        """Applies one step to ``model``'s ``wrt`` variables and the state; ``step`` + 1.

        Args:
          model: the module being trained.
          grads: its gradients (``nnx.grad``).
          **kwargs: extra arguments of ``tx.update``; with any, nnx's plain path runs.

        Returns:
          What was added to the parameters (new minus old values: it is
          computed only if used under ``jit``), shaped like them.
        """
        if kwargs:
            return super().update(model, grads, **kwargs)
        graph = getattr(self, "graph", None)
        params = nnx.as_pure(nnx.state(model, self.wrt, graph=graph))
        gradients = nnx.as_pure(nnx.state(grads, self.wrt, graph=graph))
        new_params, new_state = fused_apply(self.tx, params, nnx.as_pure(self.opt_state), gradients)
        nnx.update(model, new_params)
        nnx.update(self.opt_state, nnx.state(new_state, graph=graph))
        self.step[...] += 1
        return jax.tree.map(lambda new, old: new - old, new_params, params)
