"""Tables, data files and plots written by the ``gradtx`` command."""

import csv
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from gradtx.experiments.compare import Entry, summary
from gradtx.experiments.metrics import trailing_mean
from gradtx.experiments.outputs import atomic_write_text
from gradtx.experiments.sweep import SweepResult
from gradtx.tasks.base import Task


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns (numbers right-aligned)."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric)
        ).rstrip()

    return "\n".join(
        [line([str(h) for h in header]), line(["-" * w for w in widths])]
        + [line(row) for row in cells]
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) or value is None


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def compare_table(task: Task, entries: list[Entry]) -> tuple[str, list[dict[str, Any]]]:
    """The comparison table as text, and its rows as dicts."""
    rows = [summary(task, entry) for entry in entries]
    target = f"{'>=' if task.curve_higher_is_better else '<='} {task.curve_target:g}"
    header = [
        "optimizer",
        f"steps to {task.curve_name} {target}",
        "seconds",
        "reached",
        f"{task.score_name} (mean ± std)",
        "gap",
        f"final {task.curve_name}",
    ]
    body = [
        [
            row["optimizer"],
            row["steps_to_target"],
            row["seconds_to_target"],
            f"{row['seeds_reached']}/{row['seeds']}",
            f"{row['score_mean']:.4g} ± {row['score_std']:.2g}",
            row["gap_mean"],
            row["final_curve"],
        ]
        for row in rows
    ]
    return format_table(header, body), rows


def write_compare_data(
    out: pathlib.Path, task: Task, entries: list[Entry], rows: list[dict[str, Any]]
) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes every curve to ``curves.csv`` and the summary to ``results.json``."""
    lines: list[list[str | int | float]] = [["optimizer", "seed", "step", "metric", "value"]]
    for entry in entries:
        curves = entry.curves
        for seed, values in enumerate(curves.curve):
            lines += [
                [entry.label, seed, step + 1, task.curve_name, float(v)]
                for step, v in enumerate(values)
            ]
        for name, values in curves.metrics.items():
            for seed, series in enumerate(values):
                lines += [
                    [entry.label, seed, int(step), name, float(v)]
                    for step, v in zip(curves.eval_steps, series)
                ]
    csv_path = out / "curves.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(lines)
    json_path = out / "results.json"
    payload = {
        "task": task.name,
        "score": task.score_name,
        "curve": task.curve_name,
        "curve_target": task.curve_target,
        "optimizers": {entry.label: repr(entry.tx) for entry in entries},
        "summary": rows,
    }
    atomic_write_text(json_path, json.dumps(payload, indent=2, default=_json_default))
    return csv_path, json_path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_compare(path: pathlib.Path, task: Task, entries: list[Entry]) -> None:
    """Training curves (mean and min-max band over seeds) and the score over steps."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for entry in entries:
        smoothed = trailing_mean(entry.curves.curve)
        steps = np.arange(1, smoothed.shape[-1] + 1)
        (line,) = left.plot(steps, np.nanmean(smoothed, axis=0), label=entry.label)
        left.fill_between(
            steps,
            np.nanmin(smoothed, axis=0),
            np.nanmax(smoothed, axis=0),
            color=line.get_color(),
            alpha=0.2,
        )
        scores = entry.curves.metrics[task.score_name]
        right.plot(
            entry.curves.eval_steps,
            np.nanmean(scores, axis=0),
            marker="o",
            markersize=3,
            color=line.get_color(),
            label=entry.label,
        )
        right.fill_between(
            entry.curves.eval_steps,
            np.nanmin(scores, axis=0),
            np.nanmax(scores, axis=0),
            color=line.get_color(),
            alpha=0.2,
        )
    left.axhline(task.curve_target, color="grey", linestyle=":", linewidth=1)
    if not task.curve_higher_is_better:
        left.set_yscale("log")
    left.set(
        xlabel="step",
        ylabel=f"{task.curve_name} (trailing mean)",
        title=f"{task.name}: {task.curve_name}, mean and range over seeds",
    )
    right.set(xlabel="step", ylabel=task.score_name, title=f"{task.name}: {task.score_name}")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def sweep_table(task: Task, result: SweepResult) -> str:
    """The ranked table of a sweep."""
    paths = list(result.trials[0])
    header = ["rank", *paths, f"{task.score_name} (mean over seeds)"]
    order = result.ranking(task.higher_is_better)
    rows = [
        [rank + 1, *(result.trials[i][p] for p in paths), float(result.scores[i])]
        for rank, i in enumerate(order)
    ]
    return format_table(header, rows)


def plot_sweep(path: pathlib.Path, task: Task, result: SweepResult, grid: bool) -> None:
    """A heatmap for a two-axis grid, else the score against each swept value."""
    plt = _pyplot()
    paths = list(result.trials[0])
    if grid and len(paths) == 2:
        xs = sorted({t[paths[0]] for t in result.trials})
        ys = sorted({t[paths[1]] for t in result.trials})
        image = np.full((len(ys), len(xs)), np.nan)
        for trial, score in zip(result.trials, result.scores):
            image[ys.index(trial[paths[1]]), xs.index(trial[paths[0]])] = score
        figure, axes = plt.subplots(figsize=(6, 4.5))
        shown = axes.imshow(image, origin="lower", cmap="viridis", aspect="auto")
        axes.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        axes.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
        axes.set(xlabel=paths[0], ylabel=paths[1], title=f"{task.name}: {task.score_name}")
        figure.colorbar(shown, ax=axes)
    else:
        figure, axes_list = plt.subplots(1, len(paths), figsize=(5 * len(paths), 4), squeeze=False)
        for axes, name in zip(axes_list[0], paths):
            values = np.array([t[name] for t in result.trials])
            axes.scatter(values, result.scores)
            if np.all(values > 0) and values.max() / values.min() > 20:
                axes.set_xscale("log")
            axes.set(xlabel=name, ylabel=task.score_name, title=f"{task.name}: score vs {name}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_tuning(path: pathlib.Path, history: list[float], losses: list[float], name: str) -> None:
    """The tuned value and the meta-loss over meta-steps."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(range(len(history)), history, marker="o", markersize=3)
    left.set(xlabel="meta-step", ylabel=name, yscale="log", title=f"learned {name}")
    right.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3)
    right.set(
        xlabel="meta-step", ylabel="validation loss after unrolled training", title="meta-objective"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
