"""Training a task with an optimizer, many seeds (and trials) in one program.

The whole run (every step and every evaluation) is one ``lax.scan`` inside one
``jax.jit``; seeds are a ``vmap`` axis, and so are hyperparameter trials in a
sweep, because an optimizer is a pytree whose hyperparameters are leaves.
"""

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import Transformation
from gradtx.tasks.base import Task
from gradtx.update import apply_updates


@dataclasses.dataclass(frozen=True)
class Curves:
    """What a batch of runs recorded, as NumPy arrays.

    Attributes:
      curve: training-curve values, shape ``batch_shape + (steps,)``.
      eval_steps: the steps at which ``metrics`` were taken, ``(n_evals,)``.
      metrics: name -> values of shape ``batch_shape + (n_evals,)``.
      compile_seconds: time to trace, lower and compile the program.
      run_seconds: wall time of the compiled program.
    """

    curve: np.ndarray
    eval_steps: np.ndarray
    metrics: dict[str, np.ndarray]
    compile_seconds: float
    run_seconds: float

    @property
    def seconds_per_step(self) -> float:
        """Wall time per step of one run (the program's time over steps x runs)."""
        runs = int(np.prod(self.curve.shape[:-1])) or 1
        return self.run_seconds / (self.curve.shape[-1] * runs)

    def final(self, name: str) -> np.ndarray:
        """The last evaluation of metric ``name`` for every run."""
        return self.metrics[name][..., -1]


def make_run(task: Task, steps: int, eval_every: int) -> Callable[[Any, jax.Array], Any]:
    """A pure function ``(tx, key) -> (curve, metrics)`` training ``task`` once.

    Args:
      task: the task.
      steps: training steps, a multiple of ``eval_every``.
      eval_every: steps between evaluations.

    Returns:
      The function; jit and vmap it as needed.

    Raises:
      ValueError: if ``steps`` is not a positive multiple of ``eval_every``.
    """
    if steps <= 0 or eval_every <= 0 or steps % eval_every:
        raise ValueError(
            f"steps must be a positive multiple of eval_every, got steps={steps}, "
            f"eval_every={eval_every}"
        )
    n_evals = steps // eval_every

    def run(tx: Transformation, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        init_key, train_key = jax.random.split(key)
        params = task.init_params(init_key)
        state = tx.init(params)

        def train_step(carry: Any, _: Any) -> tuple[Any, jax.Array]:
            params, state, key = carry
            key, batch_key, loss_key = jax.random.split(key, 3)
            batch = task.sample_batch(batch_key)
            grads, curve_value = jax.grad(task.loss, has_aux=True)(params, batch, loss_key)
            updates, state = tx.update(grads, state, params)
            return (apply_updates(params, updates), state, key), curve_value

        def chunk(carry: Any, _: Any) -> tuple[Any, Any]:
            carry, values = jax.lax.scan(train_step, carry, None, length=eval_every)
            return carry, (values, task.evaluate(carry[0]))

        _, (values, metrics) = jax.lax.scan(chunk, (params, state, train_key), None, length=n_evals)
        return values.reshape(-1), metrics

    return run


def seed_keys(seeds: int, base_seed: int = 0) -> jax.Array:
    """``seeds`` independent PRNG keys."""
    return jax.random.split(jax.random.PRNGKey(base_seed), seeds)


def train(
    task: Task,
    tx: Transformation,
    *,
    seeds: int,
    steps: int,
    eval_every: int,
    trials_axis: bool = False,
    base_seed: int = 0,
) -> Curves:
    """Trains ``task`` with ``tx`` for every seed, as one compiled program.

    Args:
      task: the task.
      tx: the optimizer; with ``trials_axis`` its leaves carry a leading axis
        of trials (a sweep), each trial trained with every seed.
      seeds: number of seeds.
      steps: training steps per run.
      eval_every: steps between evaluations.
      trials_axis: whether ``tx`` is a batch of optimizers (leading axis).
      base_seed: seed of the seed keys.

    Returns:
      The recorded curves; batch shape ``(seeds,)`` or ``(trials, seeds)``.
    """
    program = jax.vmap(make_run(task, steps, eval_every), in_axes=(None, 0))
    if trials_axis:
        program = jax.vmap(program, in_axes=(0, None))
    keys = seed_keys(seeds, base_seed)
    start = time.perf_counter()
    compiled = jax.jit(program).lower(tx, keys).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    values, metrics = jax.block_until_ready(compiled(tx, keys))
    run_seconds = time.perf_counter() - start
    return Curves(
        curve=np.asarray(values),
        eval_steps=np.arange(1, steps // eval_every + 1) * eval_every,
        metrics={name: np.asarray(value) for name, value in metrics.items()},
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
    )


def check_one_structure(transformations: list[Transformation]) -> None:
    """Checks that optimizers differ only in numeric hyperparameters (so they stack).

    Cheap (it compares tree structures only), so the command runs it before training.

    Args:
      transformations: the optimizers of a sweep's trials.

    Raises:
      ValueError: if their structures (static options, schedule kinds) differ.
    """
    structures = {jax.tree.structure(tx) for tx in transformations}
    if len(structures) != 1:
        raise ValueError(
            "all trials must share one structure (only numeric hyperparameters may "
            f"vary); got {len(structures)} different structures"
        )


def stack(transformations: list[Transformation]) -> Transformation:
    """Stacks optimizers of one structure into one whose leaves have a trials axis.

    Args:
      transformations: optimizers that differ only in numeric hyperparameters.

    Returns:
      One optimizer pytree with a leading axis on every leaf.

    Raises:
      ValueError: if their structures (static options, schedule kinds) differ.
    """
    check_one_structure(transformations)
    return jax.tree.map(
        lambda *leaves: jnp.stack([jnp.asarray(x) for x in leaves]), *transformations
    )
