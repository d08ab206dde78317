"""A stateful optimizer object for the ``torch.optim`` way of working.

:class:`Optimizer` holds the parameters, the optimizer state and a gradient
accumulation buffer, and updates them with one jit-compiled, buffer-donating
function. The transformation is an argument of that function, not a constant
baked into it, so changing a hyperparameter never recompiles.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checkpoint, checks, trees
from gradtx.base import GradientTransformation, OptState, Params, Transformation, Updates
from gradtx.combine import chain, foreign
from gradtx.config import to_config
from gradtx.fused import fused_apply
from gradtx.state_lookup import hyperparams

_NOTHING_ACCUMULATED = (
    "step() has no gradients to apply: call accumulate(gradients) first, or pass "
    "them directly with step(gradients)"
)


class Optimizer:
    """Parameters, optimizer state and a gradient buffer, updated in place.

    ``step(gradients)`` applies one update and returns the new parameters. For
    gradient accumulation, ``accumulate(gradients)`` adds into a buffer,
    ``step()`` applies the buffer's mean (or sum) and ``zero_grad()`` empties it;
    as in ``torch.optim``, ``step()`` does not empty the buffer by itself.

    The update is one ``jax.jit`` function of ``(tx, params, state, gradients)``
    that donates the params and state buffers, so it runs in place and costs
    what a hand-written jitted step costs. It compiles once per parameter
    structure: steps, accumulated steps and hyperparameter changes through
    :meth:`set_hyperparams` reuse that compilation (see :attr:`compile_count`).

    Because the buffers are donated, the arrays returned by ``step`` (and
    :attr:`params`, :attr:`state`) are invalidated by the next ``step``: read
    ``opt.params`` again after each step rather than keeping old arrays. The
    ``params`` given to the constructor are copied and stay valid.

    Args:
      tx: the optimizer, a gradtx transformation (an Optax one is wrapped with
        :class:`~gradtx.foreign` and then has no settable hyperparameters).
      params: the initial parameters (any pytree of arrays).
      reduction: how ``step()`` combines accumulated gradients: ``"mean"``
        divides their sum by the number of ``accumulate`` calls, ``"sum"``
        does not.

    Raises:
      TypeError: if ``tx`` is not a gradient transformation.
      ValueError: if ``reduction`` is not ``"mean"`` or ``"sum"``.

    Example:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> opt = gradtx.Optimizer(gradtx.sgd(learning_rate=0.1), {"w": jnp.ones(2)})
      >>> opt.step({"w": jnp.ones(2)})
      {'w': Array([0.9, 0.9], dtype=float32)}
      >>> opt.accumulate({"w": jnp.full(2, 1.0)})
      >>> opt.accumulate({"w": jnp.full(2, 3.0)})
      >>> opt.step()["w"]  # the mean gradient is 2
      Array([0.7, 0.7], dtype=float32)
      >>> opt.set_hyperparams(learning_rate=0.01)
      >>> opt.learning_rate, opt.step_count, opt.compile_count
      (0.01, 2, 1)
    """

    def __init__(
        self,
        tx: Transformation | GradientTransformation,
        params: Params,
        *,
        reduction: Literal["mean", "sum"] = "mean",
    ) -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self._reduction = reduction
        self._params = jax.tree.map(lambda leaf: jnp.array(leaf, copy=True), params)
        tx = _as_transformation(tx)
        self._state = tx.init(self._params)
        self._tx, self._traced_tx = tx, _with_array_leaves(tx, None)
        self._step_count = 0
        self._compile_count = 0
        self._buffer: Updates | None = None
        self._accumulated = 0

        def update(
            tx: Transformation, params: Params, state: OptState, gradients: Updates
        ) -> tuple[Params, OptState]:
            self._compile_count += 1  # runs only while tracing, i.e. once per compile
            # The one-pass native step where it applies (same results as
            # tx.update + apply_updates); params and state are donated below.
            return fused_apply(tx, params, state, gradients)

        def accumulate(buffer: Updates, gradients: Updates) -> Updates:
            checks.check_trees_match(
                gradients, buffer, tree_name="gradients", reference_name="accumulated gradients"
            )
            return jax.tree.map(lambda b, g: (b + g).astype(b.dtype), buffer, gradients)

        self._update = jax.jit(update, donate_argnums=(1, 2))
        self._accumulate = jax.jit(accumulate, donate_argnums=0)
        self._zeros = jax.jit(lambda gradients: jax.tree.map(jnp.zeros_like, gradients))
        # Dividing inside the update would cost a pass over the gradients on every
        # step; a separate function costs it only when accumulating.
        self._mean = jax.jit(
            lambda buffer, count: jax.tree.map(lambda b: b / count.astype(b.dtype), buffer)
        )

    @property
    def params(self) -> Params:
        """The current parameters (invalidated by the next :meth:`step`)."""
        return self._params

    @property
    def state(self) -> OptState:
        """The current optimizer state (invalidated by the next :meth:`step`)."""
        return self._state

    @property
    def step_count(self) -> int:
        """The number of updates applied so far."""
        return self._step_count

    @property
    def compile_count(self) -> int:
        """How many times the update function has been traced and compiled."""
        return self._compile_count

    @property
    def num_accumulated(self) -> int:
        """The number of ``accumulate`` calls since the last :meth:`zero_grad`."""
        return self._accumulated

    @property
    def tx(self) -> Transformation:
        """The optimizer; assigning a new one keeps params and state.

        Assigning a transformation whose state has the same structure never
        recompiles when only numeric hyperparameters changed (including the
        numbers inside a schedule); replacing a number by a schedule, or
        changing a structural option, compiles once more. A schedule brings a
        step ``count`` into the state (Optax's layout): it starts at the steps
        taken so far, and every other leaf of the state is kept.

        Raises:
          ValueError: on assignment, if the new optimizer needs a state of
            another structure than the current one.
        """
        return self._tx

    @tx.setter
    def tx(self, tx: Transformation | GradientTransformation) -> None:
        tx = _as_transformation(tx)
        if trees.structure(tx) != trees.structure(self._tx):
            try:
                checkpoint.fit_leaves(
                    checkpoint.leaves_with_paths(jax.eval_shape(tx.init, self._params)),
                    self._state,
                    name="state",
                    source="the new tx's state",
                    target="the current state",
                )
            except ValueError as error:
                self._state = _regrafted_state(tx, self._params, self._state, self._step_count)
                if self._state is None:
                    raise ValueError(
                        f"{tx!r} needs another optimizer state than {self._tx!r} ({error}); "
                        "create a new Optimizer for it"
                    ) from None
            self._traced_tx = _with_array_leaves(tx, None)
        else:
            self._traced_tx = _with_array_leaves(tx, self._traced_tx)
        self._tx = tx

    @property
    def learning_rate(self) -> float:
        """The learning rate the next step uses (a schedule read at the state's count).

        Raises:
          AttributeError: if the optimizer has no single ``learning_rate`` field.
        """
        try:
            value = _locate(self._tx, "learning_rate").learning_rate
        except ValueError as error:
            raise AttributeError(str(error)) from None
        if callable(value):
            # Read where the update reads it: at the count in the state.
            (value,) = [
                value
                for path, value in hyperparams(self._tx, self._state).items()
                if path.rsplit(".", 1)[-1] == "learning_rate"
            ]
        return float(value)

    def step(self, gradients: Updates | None = None) -> Params:
        """Applies one update and returns the new parameters.

        Args:
          gradients: the gradients, with the structure of the params; None
            applies the accumulated gradients instead (their mean, or their sum
            with ``reduction="sum"``).

        Returns:
          The new parameters (also at :attr:`params`).

        Raises:
          RuntimeError: if ``gradients`` is None and nothing was accumulated,
            or if gradients are given while accumulated ones are waiting.
          ValueError: naming the key path where the gradients do not fit the
            params.
        """
        if gradients is None:
            if self._buffer is None:
                raise RuntimeError(_NOTHING_ACCUMULATED)
            gradients = self._buffer
            if self._reduction == "mean":
                gradients = self._mean(gradients, jnp.float32(self._accumulated))
        elif self._buffer is not None:
            raise RuntimeError(
                f"step(gradients) was called while {self._accumulated} accumulated "
                "gradients are waiting: call step() to apply them, or zero_grad() to "
                "drop them first"
            )
        self._params, self._state = self._update(
            self._traced_tx, self._params, self._state, gradients
        )
        self._step_count += 1
        return self._params

    def accumulate(self, gradients: Updates) -> None:
        """Adds ``gradients`` into the accumulation buffer (in their dtype).

        Args:
          gradients: gradients with the structure and shapes of the params.

        Raises:
          ValueError: naming the key path where the gradients do not fit.
        """
        if self._buffer is None:
            checks.check_trees_match(
                gradients, self._params, tree_name="gradients", reference_name="parameters"
            )
            self._buffer = self._zeros(gradients)
        self._buffer = self._accumulate(self._buffer, gradients)
        self._accumulated += 1

    def zero_grad(self) -> None:
        """Empties the accumulation buffer."""
        self._buffer = None
        self._accumulated = 0

    def set_hyperparams(self, **hyperparameters: Any) -> None:
        """Changes hyperparameters of the optimizer, keeping params and state.

        Each name is a field of the transformation (``learning_rate`` of
        ``adamw``, ``b2`` of ``adam``, ...); the new value replaces it with
        ``dataclasses.replace``, so it is validated like a constructor
        argument. For a :class:`~gradtx.chain`, the name must be a field of
        exactly one member (searched recursively), which is replaced; for
        anything else, build the new transformation and assign it to
        :attr:`tx`. Changing a number to another number never recompiles.

        Args:
          **hyperparameters: field names and their new values (numbers or
            schedules).

        Raises:
          ValueError: if a name is not a field (listing the fields), is a field
            of several chain members, or a value is out of range.

        Example:
          >>> import gradtx, jax.numpy as jnp
          >>> opt = gradtx.Optimizer(gradtx.adamw(1e-3), {"w": jnp.ones(2)})
          >>> opt.set_hyperparams(learning_rate=1e-4, weight_decay=0.0)
          >>> opt.tx
          adamw(learning_rate=0.0001, b1=0.9, b2=0.999, eps=1e-08, weight_decay=0.0)
        """
        tx = self._tx
        for name, value in hyperparameters.items():
            tx = _replace_field(tx, name, value)
        self.tx = tx

    def state_dict(self) -> dict[str, Any]:
        """The step count, params, state and optimizer config, as host arrays.

        Returns:
          A dict with ``"params"`` and ``"state"`` (pytrees of NumPy copies),
          ``"step"`` (int) and ``"config"`` (from :func:`gradtx.config.to_config`).
          The accumulation buffer is not included.
        """
        return {
            "params": jax.tree.map(checkpoint.host_copy, self._params),
            "state": jax.tree.map(checkpoint.host_copy, self._state),
            "step": self._step_count,
            "config": to_config(self._tx),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any] | checkpoint.Checkpoint) -> None:
        """Resumes from :meth:`state_dict` output or a restored checkpoint.

        Args:
          state_dict: a mapping with ``"params"``, ``"state"``, ``"step"`` and
            ``"config"``, or the :class:`~gradtx.Checkpoint` returned by
            :func:`~gradtx.restore_checkpoint`.

        Raises:
          CheckpointError: if a key is missing, the config differs from this
            optimizer's (naming the field), the params or state do not fit
            this optimizer's (naming the key path) or hold a leaf that is not
            a numeric array.
        """
        if isinstance(state_dict, checkpoint.Checkpoint):
            state_dict = state_dict._asdict()
        missing = [key for key in ("params", "state", "step", "config") if key not in state_dict]
        if missing:
            raise checkpoint.CheckpointError(
                f"the state dict lacks {', '.join(map(repr, missing))}; it must come from "
                "Optimizer.state_dict() or restore_checkpoint()"
            )
        try:
            checkpoint.check_config(
                state_dict["config"], self._tx, source="the state dict", saved_tx=None
            )
            params = checkpoint.fit_leaves(
                checkpoint.host_leaves(state_dict["params"]),
                self._params,
                name="params",
                source="the state dict",
                target="the optimizer's params",
            )
            state = checkpoint.fit_leaves(
                checkpoint.host_leaves(state_dict["state"]),
                self._state,
                name="state",
                source="the state dict",
                target="the optimizer's state",
            )
            step = checkpoint.check_step(state_dict["step"])
        except (TypeError, ValueError) as error:  # TypeError: a leaf that is not an array
            raise checkpoint.CheckpointError(f"cannot load the state dict: {error}") from None
        # Device copies of host copies: donating them later cannot touch the caller's arrays.
        self._params = jax.tree.map(jnp.asarray, params)
        self._state = jax.tree.map(jnp.asarray, state)
        self._step_count = step

    def __repr__(self) -> str:
        return f"Optimizer({self._tx!r}, step_count={self._step_count})"


def _as_transformation(tx: Any) -> Transformation:
    if isinstance(tx, Transformation):
        return tx
    if isinstance(tx, GradientTransformation):
        return foreign(tx)
    raise TypeError(f"tx must be a gradient transformation (with init and update), got {tx!r}")


def _with_array_leaves(tx: Transformation, like: Transformation | None) -> Transformation:
    """``tx`` with its numeric leaves as device arrays typed like ``like``'s.

    Arrays are passed to the jitted step without a host-to-device conversion
    per call. Matching ``like``'s dtype and weak type keeps the traced types,
    hence the compilation, unchanged when a number is swapped for another
    (``np.float32(0.1)`` where ``0.1`` was, say).
    """
    leaves, treedef = trees.flatten(tx)
    old_leaves = jax.tree.leaves(like) if like is not None else [None] * len(leaves)
    return treedef.unflatten([_array_like(leaf, old) for leaf, old in zip(leaves, old_leaves)])


def _array_like(value: Any, like: jax.Array | None) -> jax.Array:
    if like is None or np.shape(value) != like.shape:
        return jnp.asarray(value)
    if like.weak_type:
        # A Python scalar is how JAX makes a weakly typed array.
        python_type = {"b": bool, "i": int, "u": int, "f": float, "c": complex}[like.dtype.kind]
        return jnp.asarray(python_type(value))
    return jnp.asarray(value, dtype=like.dtype)


def _fields(tx: Any) -> list[str]:
    if isinstance(tx, chain) or not dataclasses.is_dataclass(tx):
        return []
    return [field.name for field in dataclasses.fields(tx) if field.init]


def _holders(tx: Any, name: str) -> list[int]:
    """Positions of the chain members that hold field ``name``, directly or nested."""
    assert isinstance(tx, chain)
    return [
        position
        for position, member in enumerate(tx.transforms)
        if name in _fields(member) or (isinstance(member, chain) and _holders(member, name))
    ]


def _locate(tx: Any, name: str) -> Any:
    """The transformation whose field ``name`` :func:`_replace_field` would change."""
    if name in _fields(tx):
        return tx
    if isinstance(tx, chain):
        holders = _holders(tx, name)
        if len(holders) == 1:
            return _locate(tx.transforms[holders[0]], name)
        if holders:
            members = ", ".join(f"{p} ({type(tx.transforms[p]).__name__})" for p in holders)
            raise ValueError(
                f"{name!r} is a field of several members of {tx!r} (positions {members}); "
                "set it on the chain yourself and assign the result to Optimizer.tx"
            )
    raise ValueError(
        f"{tx!r} has no hyperparameter {name!r}; its fields are: {_describe_fields(tx)}"
    )


def _describe_fields(tx: Any) -> str:
    if isinstance(tx, chain):
        return "; ".join(
            f"member {position} ({type(member).__name__}): {_describe_fields(member)}"
            for position, member in enumerate(tx.transforms)
        )
    return ", ".join(_fields(tx)) or "none"


def _replace_field(tx: Any, name: str, value: Any) -> Any:
    if name in _fields(tx):
        return dataclasses.replace(tx, **{name: value})
    _locate(tx, name)  # raises for a missing or ambiguous name
    members = list(tx.transforms)
    (position,) = _holders(tx, name)
    members[position] = _replace_field(members[position], name, value)
    return chain(*members)


def _regrafted_state(tx: Any, params: Any, state: Any, steps: int) -> Any:
    """``state`` moved into the layout of ``tx``'s, or None if that needs more than counts.

    Leaves at the same key path are kept; a ``count`` only the new layout has
    (a number replaced by a schedule) starts at the current step count; a
    ``count`` only the old one has is dropped.
    """
    fresh = tx.init(params)
    old = {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
    }
    existing_counts = [leaf for path, leaf in old.items() if path.endswith(".count")]
    leaves = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(fresh)[0]:
        key = jax.tree_util.keystr(path)
        if key in old and jnp.shape(old[key]) == jnp.shape(leaf):
            leaves.append(old[key])
        elif key.endswith(".count") and jnp.ndim(leaf) == 0:
            count = existing_counts[0] if existing_counts else steps
            # A copy: the state's buffers are donated, each must be its own.
            leaves.append(jnp.array(count, jnp.asarray(leaf).dtype, copy=True))
        else:
            return None
    return jax.tree.unflatten(jax.tree.structure(fresh), leaves)
