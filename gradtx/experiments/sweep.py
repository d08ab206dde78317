"""``gradtx sweep``: every trial of a search as one vmapped, compiled program."""

import dataclasses

import numpy as np

from gradtx.base import Transformation
from gradtx.experiments.training import Curves, stack, train
from gradtx.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """All trials of a sweep.

    Attributes:
      trials: the hyperparameter values of each trial (``{path: value}``).
      optimizers: the optimizer of each trial.
      curves: recorded with batch shape ``(trials, seeds)``.
      scores: mean final score of each trial over seeds (NaN if diverged).
    """

    trials: list[dict[str, float]]
    optimizers: list[Transformation]
    curves: Curves
    scores: np.ndarray

    def ranking(self, higher_is_better: bool) -> list[int]:
        """Trial indices from best to worst; diverged trials last."""
        worst = -np.inf if higher_is_better else np.inf
        keyed = np.where(np.isfinite(self.scores), self.scores, worst)
        order = np.argsort(-keyed if higher_is_better else keyed, kind="stable")
        return [int(i) for i in order]


def run_sweep(
    task: Task,
    trials: list[dict[str, float]],
    optimizers: list[Transformation],
    *,
    seeds: int,
    steps: int,
    eval_every: int,
) -> SweepResult:
    """Trains every trial with every seed as one program (vmap over trials).

    Args:
      task: the task.
      trials: the values of each trial, for the report.
      optimizers: one optimizer per trial, all of one structure.
      seeds: seeds per trial.
      steps: training steps per run.
      eval_every: steps between evaluations.

    Returns:
      The sweep's curves and per-trial scores.

    Raises:
      ValueError: if the optimizers do not share one structure.
    """
    batched = stack(optimizers)
    curves = train(task, batched, seeds=seeds, steps=steps, eval_every=eval_every, trials_axis=True)
    scores = curves.final(task.score_name).mean(axis=-1)
    return SweepResult(trials, optimizers, curves, scores)
