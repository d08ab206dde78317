"""The task interface: what ``gradtx compare``/``sweep``/``tune-lr`` train on.

A task is a small value holding pure functions: how to initialise parameters,
how to draw a training batch, the training loss, and how to evaluate trained
parameters. Everything is jittable and vmappable, so many seeds or many
hyperparameter trials train as one compiled program.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

Params = Any
Batch = Any


@dataclasses.dataclass(frozen=True)
class Task:
    """A small learning problem.

    Attributes:
      name: the name used on the command line (``--task``).
      description: one line for ``--help`` and reports.
      init_params: ``key -> params``.
      sample_batch: ``key -> batch`` drawing one training batch.
      loss: ``(params, batch, key) -> (loss, curve_value)``: the objective to
        minimise and the value recorded on the training curve (the loss
        itself for supervised tasks, the episode return for RL).
      evaluate: ``params -> dict[str, scalar]`` metrics of trained parameters;
        must include ``score_name``.
      score_name: the headline metric (e.g. ``"test_accuracy"``).
      higher_is_better: whether a larger score is better.
      curve_name: what the training curve records (e.g. ``"train loss"``).
      curve_target: the curve value whose first crossing (of a trailing
        mean) defines convergence speed.
      curve_higher_is_better: the direction in which the curve improves.
      steps: default number of training steps.
      eval_every: steps between evaluations recorded on the curves.
      train_score_name: the score on training data, for the generalization
        gap (``train_score - score``), or None where it has no meaning.
      validation_loss: ``params -> scalar`` held-out loss (for ``tune-lr``).
    """

    name: str
    description: str
    init_params: Callable[[jax.Array], Params]
    sample_batch: Callable[[jax.Array], Batch]
    loss: Callable[[Params, Batch, jax.Array], tuple[jax.Array, jax.Array]]
    evaluate: Callable[[Params], dict[str, jax.Array]]
    score_name: str
    higher_is_better: bool
    curve_name: str
    curve_target: float
    curve_higher_is_better: bool
    steps: int
    eval_every: int
    train_score_name: str | None
    validation_loss: Callable[[Params], jax.Array]
