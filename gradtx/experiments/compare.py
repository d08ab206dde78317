"""``gradtx compare``: several optimizers, several seeds, one table."""

import dataclasses
from collections.abc import Callable

import numpy as np

from gradtx.base import Transformation
from gradtx.experiments import metrics
from gradtx.experiments.training import Curves, train
from gradtx.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class Entry:
    """One optimizer's runs: its label, the optimizer and what was recorded."""

    label: str
    tx: Transformation
    curves: Curves


def run_comparison(
    task: Task,
    optimizers: list[tuple[str, Transformation]],
    *,
    seeds: int,
    steps: int,
    eval_every: int,
    on_done: Callable[[Entry], None] | None = None,
) -> list[Entry]:
    """Trains ``task`` with every optimizer over ``seeds`` seeds.

    Every optimizer sees the same seeds (initialisations and batch orders).

    Args:
      task: the task.
      optimizers: ``(label, optimizer)`` pairs.
      seeds: seeds per optimizer.
      steps: training steps per run.
      eval_every: steps between evaluations.
      on_done: called after each optimizer (for progress bars).

    Returns:
      One entry per optimizer, in order.
    """
    entries = []
    for label, tx in optimizers:
        curves = train(task, tx, seeds=seeds, steps=steps, eval_every=eval_every)
        entries.append(Entry(label, tx, curves))
        if on_done is not None:
            on_done(entries[-1])
    return entries


def gap(task: Task, curves: Curves) -> np.ndarray | None:
    """How much worse each run scores on test than on train, or None (RL)."""
    if task.train_score_name is None:
        return None
    train_score, test_score = curves.final(task.train_score_name), curves.final(task.score_name)
    if task.higher_is_better:
        return metrics.generalization_gap(train_score, test_score)
    return metrics.generalization_gap(test_score, train_score)


def summary(task: Task, entry: Entry) -> dict[str, float | int | str | None]:
    """The table row of one optimizer: speed, score and generalization gap."""
    curves = entry.curves
    to_target = metrics.steps_to_target(
        curves.curve, task.curve_target, higher_is_better=task.curve_higher_is_better
    )
    reached = np.isfinite(to_target)
    score_mean, score_std, _ = metrics.summarize(curves.final(task.score_name))
    gaps = gap(task, curves)
    final_curve = metrics.trailing_mean(curves.curve)[..., -1]
    return {
        "optimizer": entry.label,
        "seeds_reached": int(reached.sum()),
        "seeds": int(to_target.size),
        "steps_to_target": float(np.median(to_target[reached])) if reached.any() else None,
        "seconds_to_target": (
            float(np.median(to_target[reached]) * curves.seconds_per_step)
            if reached.any()
            else None
        ),
        "score_mean": score_mean,
        "score_std": score_std,
        "gap_mean": metrics.summarize(gaps)[0] if gaps is not None else None,
        "final_curve": metrics.summarize(final_curve)[0],
        "compile_seconds": curves.compile_seconds,
        "run_seconds": curves.run_seconds,
    }
