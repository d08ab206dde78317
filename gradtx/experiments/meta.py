"""Learning a hyperparameter by gradient descent through unrolled training.

The optimizer is a pytree whose hyperparameters are leaves, so the validation
loss after ``K`` training steps is a differentiable function of, say, the
learning rate: ``dL_val / d log(lr)`` comes from ``jax.grad`` through the
unrolled steps. This is the hypergradient idea of Maclaurin et al., *Gradient-
based Hyperparameter Optimization through Reversible Learning* (2015,
https://arxiv.org/abs/1502.03492) and Baydin et al., *Online Learning Rate
Adaptation with Hypergradient Descent* (2018, https://arxiv.org/abs/1703.04782).
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.aliases import adam
from gradtx.base import Transformation
from gradtx.experiments.leaves import get_leaf, set_leaf
from gradtx.experiments.training import seed_keys
from gradtx.tasks.base import Task
from gradtx.update import apply_updates

# Hyperparameters that live in (0, 1): tuned in logit space so they stay there.
UNIT_INTERVAL = frozenset({"b1", "b2", "momentum", "decay", "decay_rate"})


def search_space(path: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``(to_value, from_value)``: sigmoid/logit for (0, 1) hyperparameters, else exp/log."""
    if path.split(".")[-1] in UNIT_INTERVAL:
        return jax.nn.sigmoid, lambda v: jnp.log(v) - jnp.log1p(-v)
    return jnp.exp, jnp.log


def tunable_value(tx: Transformation, path: str) -> float:
    """The starting value of the hyperparameter at ``path``, checked to be tunable.

    Args:
      tx: the optimizer.
      path: dotted path of the hyperparameter.

    Returns:
      Its value as a float.

    Raises:
      ValueError: if ``path`` is not a hyperparameter of ``tx``, its value is
        not a single number, or it is outside its search space ((0, 1) for
        the hyperparameters in ``UNIT_INTERVAL``, else (0, inf)).
    """
    value = np.asarray(get_leaf(tx, path))
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.number):
        raise ValueError(
            f"{path} must be a single number to be tuned, got an array of shape "
            f"{value.shape}, dtype {value.dtype}"
        )
    initial = float(value)
    unit = path.split(".")[-1] in UNIT_INTERVAL
    if not (0 < initial < 1 if unit else 0 < initial < np.inf):
        interval = "(0, 1)" if unit else "(0, inf)"
        raise ValueError(f"{path} must be in {interval} to be tuned, got {initial}")
    return initial


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """Outcome of :func:`tune_hyperparameter`.

    Attributes:
      path: the tuned hyperparameter's path.
      initial_value: where the search started.
      learned_value: where it ended.
      history: the value after each meta-step, starting with the initial one.
      meta_losses: the validation loss at each meta-step.
      initial_validation_loss: mean validation loss after ``unroll`` steps
        with the initial value, on held-out seeds.
      learned_validation_loss: the same with the learned value.
    """

    path: str
    initial_value: float
    learned_value: float
    history: list[float]
    meta_losses: list[float]
    initial_validation_loss: float
    learned_validation_loss: float


def unrolled_validation_loss(task: Task, unroll: int) -> Callable[[Any, jax.Array], jax.Array]:
    """``(tx, key) -> validation loss`` after ``unroll`` training steps from a fresh init."""

    def loss(tx: Transformation, key: jax.Array) -> jax.Array:
        init_key, train_key = jax.random.split(key)
        params = task.init_params(init_key)

        def step(carry: Any, key: jax.Array) -> tuple[Any, None]:
            params, state = carry
            batch_key, loss_key = jax.random.split(key)
            grads, _ = jax.grad(task.loss, has_aux=True)(
                params, task.sample_batch(batch_key), loss_key
            )
            updates, state = tx.update(grads, state, params)
            return (apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(
            step, (params, tx.init(params)), jax.random.split(train_key, unroll)
        )
        return task.validation_loss(params)

    return loss


def tune_hyperparameter(
    task: Task,
    tx: Transformation,
    *,
    path: str = "learning_rate",
    unroll: int = 30,
    meta_steps: int = 20,
    meta_learning_rate: float = 0.1,
    seeds: int = 2,
    eval_seeds: int = 4,
    progress: Callable[[int, float, float], None] | None = None,
) -> TuneResult:
    """Learns a hyperparameter of ``tx`` on ``task``'s validation loss.

    The hyperparameter is optimised with Adam in log space (so it stays
    positive and steps are relative), or in logit space for those that live in
    (0, 1) (``b1``, ``b2``, ``momentum``, ``decay``, ``decay_rate``); each
    meta-step averages the hypergradient over ``seeds`` fresh initialisations
    and data orders.

    Args:
      task: the task (its ``validation_loss`` is the meta-objective).
      tx: the optimizer; its value at ``path`` is the starting point.
      path: dotted path of the hyperparameter (e.g. ``learning_rate``).
      unroll: training steps differentiated through.
      meta_steps: hypergradient steps.
      meta_learning_rate: Adam step size in the search space (log or logit).
      seeds: runs averaged per meta-step.
      eval_seeds: held-out seeds on which initial and learned values are
        compared at the end (rounded up to a multiple of ``seeds``).
      progress: called as ``progress(meta_step, value, meta_loss)``.

    Returns:
      The learned value, its history, and the before/after validation losses.

    Raises:
      ValueError: as :func:`tunable_value`.
    """
    initial = tunable_value(tx, path)
    to_value, from_value = search_space(path)
    objective = unrolled_validation_loss(task, unroll)

    def meta_loss(position: jax.Array, keys: jax.Array) -> jax.Array:
        candidate = set_leaf(tx, path, to_value(position))
        losses = jax.vmap(objective, in_axes=(None, 0))(candidate, keys)
        return jnp.mean(losses)

    # One compiled function serves the meta-steps and the final comparison, so
    # the unrolled program is compiled once.
    loss_and_grad = jax.jit(jax.value_and_grad(meta_loss))
    meta_tx = adam(meta_learning_rate)
    position = from_value(jnp.asarray(initial, jnp.float32))
    meta_state = meta_tx.init(position)

    history, losses = [initial], []
    for step in range(meta_steps):
        value, grad = loss_and_grad(position, seed_keys(seeds, base_seed=1000 + step))
        # A diverged unroll gives a NaN hypergradient: step back towards
        # smaller values instead of poisoning the search.
        grad = jnp.where(jnp.isfinite(grad), grad, 1.0)
        updates, meta_state = meta_tx.update(grad, meta_state)
        position = apply_updates(position, updates)
        history.append(float(to_value(position)))
        losses.append(float(value))
        if progress is not None:
            progress(step, history[-1], losses[-1])

    def held_out_loss(position: jax.Array) -> float:
        rounds = max(1, -(-eval_seeds // seeds))
        return float(
            np.mean(
                [
                    loss_and_grad(position, seed_keys(seeds, base_seed=999_999 + r))[0]
                    for r in range(rounds)
                ]
            )
        )

    return TuneResult(
        path=path,
        initial_value=initial,
        learned_value=history[-1],
        history=history,
        meta_losses=losses,
        initial_validation_loss=held_out_loss(from_value(jnp.asarray(initial, jnp.float32))),
        learned_validation_loss=held_out_loss(position),
    )
