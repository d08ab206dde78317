"""Metrics of training curves: convergence speed and the generalization gap."""

import numpy as np

SMOOTHING_WINDOW = 10


def trailing_mean(curve: np.ndarray, window: int = SMOOTHING_WINDOW) -> np.ndarray:
    """The mean of the last ``window`` values at each step (fewer at the start).

    Args:
      curve: values along the last axis.
      window: the number of values averaged, >= 1.

    Returns:
      An array of the same shape.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    cumulative = np.cumsum(np.asarray(curve, dtype=np.float64), axis=-1)
    shifted = np.zeros_like(cumulative)
    shifted[..., window:] = cumulative[..., :-window]
    counts = np.minimum(np.arange(1, curve.shape[-1] + 1), window)
    return (cumulative - shifted) / counts


def steps_to_target(
    curve: np.ndarray,
    target: float,
    *,
    higher_is_better: bool = False,
    window: int = SMOOTHING_WINDOW,
) -> np.ndarray:
    """Steps until the trailing mean of a curve first reaches ``target``.

    The count is 1-based: a curve at the target from its first value took one
    step. Runs that never reach it, or diverge (NaN), give NaN.

    Args:
      curve: values along the last axis (e.g. per-step training loss).
      target: the value to reach.
      higher_is_better: whether reaching means ``>= target`` (e.g. a return)
        rather than ``<= target`` (a loss).
      window: the trailing-mean window that smooths minibatch noise.

    Returns:
      The step count for each curve (float, NaN where never reached).
    """
    smoothed = trailing_mean(curve, window)
    reached = smoothed >= target if higher_is_better else smoothed <= target
    reached &= ~np.isnan(smoothed)
    first = np.argmax(reached, axis=-1).astype(np.float64) + 1
    return np.where(reached.any(axis=-1), first, np.nan)


def generalization_gap(train_score: np.ndarray, test_score: np.ndarray) -> np.ndarray:
    """Train minus test score (e.g. accuracy): how much the model overfits."""
    return np.asarray(train_score) - np.asarray(test_score)


def summarize(values: np.ndarray) -> tuple[float, float, int]:
    """Mean and standard deviation over finite values, and how many there were."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    return float(finite.mean()), float(finite.std()), int(finite.size)
