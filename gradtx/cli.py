"""The ``gradtx`` command: compare optimizers, sweep hyperparameters, tune the LR.

Every input is checked before anything is trained or written; bad input gives
one line on stderr with the accepted values, and exit code 2.
"""

import argparse
import datetime
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from gradtx.aliases import adam, adamw, nadam, nadamw, sgd
from gradtx.base import Transformation
from gradtx.schedules import exponential_decay

PRESETS: dict[str, Transformation] = {
    "sgd": sgd(learning_rate=0.1),
    "sgd-momentum": sgd(learning_rate=0.05, momentum=0.9),
    "sgd-momentum-wd": sgd(learning_rate=0.05, momentum=0.9, weight_decay=5e-4),
    "adam": adam(learning_rate=3e-3),
    "adamw": adamw(
        learning_rate=exponential_decay(init_value=3e-3, transition_steps=100, decay_rate=0.7),
        weight_decay=1e-4,
    ),
    "nadam": nadam(learning_rate=3e-3),
    "nadamw": nadamw(learning_rate=3e-3, weight_decay=1e-4),
}
DEFAULT_COMPARE = ("sgd", "sgd-momentum", "sgd-momentum-wd", "adam", "adamw")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class UsageError(Exception):
    """Bad command-line input: reported in one line with exit code 2."""


def resolve_optimizer(spec: str, overrides: Sequence[str]) -> tuple[str, Transformation]:
    """A preset name or a config file, with ``--set`` overrides applied.

    Args:
      spec: a preset name (see ``PRESETS``) or a path to a config file.
      overrides: ``path=value`` strings.

    Returns:
      ``(label, optimizer)``.

    Raises:
      UsageError: for an unknown name, a missing file or a bad override.
    """
    from gradtx.config import from_config, to_config
    from gradtx.config_files import read_config

    try:
        if spec in PRESETS:
            config, label = to_config(PRESETS[spec]), spec
        elif pathlib.Path(spec).suffix in CONFIG_SUFFIXES:
            if not pathlib.Path(spec).is_file():
                raise UsageError(f"--optimizer {spec}: no such config file")
            config, label = read_config(spec), pathlib.Path(spec).stem
        else:
            raise UsageError(
                f"unknown optimizer {spec!r}; use one of {', '.join(PRESETS)} or a "
                f"config file ending in {', '.join(CONFIG_SUFFIXES)}"
            )
        return label, from_config(config, overrides)
    except (ValueError, TypeError, OSError) as error:
        raise UsageError(f"--optimizer {spec}: {error}") from None


def _task(name: str) -> Any:
    from gradtx.tasks import TASKS, get_task

    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; choose from: {', '.join(TASKS)}")
    return get_task(name)


def _schedule(task: Any, steps: int | None) -> tuple[int, int]:
    """Steps and evaluation interval: the largest divisor of steps <= the task's."""
    steps = task.steps if steps is None else steps
    if steps < 1:
        raise UsageError(f"--steps must be >= 1, got {steps}")
    eval_every = next(d for d in range(min(task.eval_every, steps), 0, -1) if steps % d == 0)
    return steps, eval_every


def _out_dir(requested: str | None, command: str) -> pathlib.Path:
    if requested:
        path = pathlib.Path(requested)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = pathlib.Path("runs") / f"{stamp}-{command}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _progress(total: int, description: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, file=sys.stderr, leave=False)


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise UsageError(f"{name} must be >= 1, got {value}")
    return value


def command_compare(args: argparse.Namespace) -> int:
    """Trains the task with every optimizer and prints the comparison."""
    from gradtx.experiments import report
    from gradtx.experiments.compare import run_comparison

    task = _task(args.task)
    specs = args.optimizer or list(DEFAULT_COMPARE)
    optimizers = [resolve_optimizer(spec, args.set) for spec in specs]
    labels = [label for label, _ in optimizers]
    if len(set(labels)) != len(labels):
        raise UsageError(f"optimizer labels must be unique, got {labels}")
    seeds = _positive("--seeds", args.seeds)
    steps, eval_every = _schedule(task, args.steps)

    print(f"task {task.name}: {task.description}; {steps} steps x {seeds} seeds")
    with _progress(len(optimizers), "optimizers", not args.quiet) as bar:
        entries = run_comparison(
            task,
            optimizers,
            seeds=seeds,
            steps=steps,
            eval_every=eval_every,
            on_done=lambda _: bar.update(),
        )
    table, rows = report.compare_table(task, entries)
    print(table)
    print(
        f"\nseconds: wall time per run to reach the target (steps x time per step); "
        f"gap: how much worse {task.score_name} is on test than on train"
    )
    out = _out_dir(args.out, "compare")
    csv_path, json_path = report.write_compare_data(out, task, entries, rows)
    plot_path = out / "compare.png"
    report.plot_compare(plot_path, task, entries)
    print(f"\nwrote {csv_path}\nwrote {json_path}\nwrote {plot_path}")
    return 0


def command_sweep(args: argparse.Namespace) -> int:
    """Runs a grid or random search as one vmapped program."""
    from gradtx.config import from_config, to_config
    from gradtx.config_files import save_config
    from gradtx.experiments import report, search
    from gradtx.experiments.sweep import run_sweep

    task = _task(args.task)
    if bool(args.grid) == bool(args.random):
        raise UsageError("give either --grid or --random (repeatable), not both or neither")
    try:
        if args.grid:
            trials = search.grid_trials([search.parse_grid(text) for text in args.grid])
        else:
            axes = [search.parse_random(text) for text in args.random]
            trials = search.random_trials(axes, _positive("--trials", args.trials), args.seed)
    except ValueError as error:
        raise UsageError(str(error)) from None
    label, base = resolve_optimizer(args.optimizer, args.set)
    base_config = to_config(base)
    optimizers = []
    for trial in trials:
        overrides = [f"{path}={value!r}" for path, value in trial.items()]
        try:
            optimizers.append(from_config(base_config, overrides))
        except (ValueError, TypeError) as error:
            raise UsageError(f"{label}: {error}") from None
    seeds = _positive("--seeds", args.seeds)
    steps, eval_every = _schedule(task, args.steps)

    print(
        f"task {task.name}: {len(trials)} trials x {seeds} seeds of {label}, "
        f"{steps} steps, as one vmapped program"
    )
    try:
        result = run_sweep(
            task, trials, optimizers, seeds=seeds, steps=steps, eval_every=eval_every
        )
    except ValueError as error:
        raise UsageError(f"cannot sweep these values: {error}") from None
    print(report.sweep_table(task, result))
    print(f"\ncompile {result.curves.compile_seconds:.1f} s, run {result.curves.run_seconds:.1f} s")
    out = _out_dir(args.out, "sweep")
    best = result.ranking(task.higher_is_better)[0]
    best_path = out / "best.yaml"
    save_config(optimizers[best], best_path)
    results_path = out / "sweep.json"
    report.atomic_write_text(
        results_path,
        json.dumps(
            {
                "task": task.name,
                "score": task.score_name,
                "optimizer": repr(base),
                "trials": trials,
                "scores": [float(s) for s in result.scores],
                "best": best,
            },
            indent=2,
        ),
    )
    plot_path = out / "sweep.png"
    report.plot_sweep(plot_path, task, result, grid=bool(args.grid))
    print(f"best: {trials[best]} -> {task.score_name} {result.scores[best]:.4g}")
    print(f"\nwrote {best_path}\nwrote {results_path}\nwrote {plot_path}")
    return 0


def command_tune_lr(args: argparse.Namespace) -> int:
    """Learns a hyperparameter by differentiating through unrolled training."""
    from gradtx.experiments import report
    from gradtx.experiments.leaves import leaf_paths
    from gradtx.experiments.meta import tune_hyperparameter

    task = _task(args.task)
    label, tx = resolve_optimizer(args.optimizer, args.set)
    if args.param not in leaf_paths(tx):
        raise UsageError(
            f"{label} has no numeric hyperparameter {args.param!r}; choose from: "
            f"{', '.join(leaf_paths(tx))}"
        )
    unroll = _positive("--unroll", args.unroll)
    meta_steps = _positive("--meta-steps", args.meta_steps)
    print(f"task {task.name}: learning {args.param} of {tx} through {unroll} unrolled steps")
    with _progress(meta_steps, "meta-steps", not args.quiet) as bar:

        def show(step: int, value: float, loss: float) -> None:
            bar.set_postfix({args.param: f"{value:.3g}", "val loss": f"{loss:.3g}"})
            bar.update()

        try:
            result = tune_hyperparameter(
                task,
                tx,
                path=args.param,
                unroll=unroll,
                meta_steps=meta_steps,
                meta_learning_rate=args.meta_learning_rate,
                progress=show,
            )
        except ValueError as error:
            raise UsageError(str(error)) from None
    print(
        report.format_table(
            ["", args.param, f"validation loss after {unroll} steps"],
            [
                ["start", result.initial_value, result.initial_validation_loss],
                ["learned", result.learned_value, result.learned_validation_loss],
            ],
        )
    )
    out = _out_dir(args.out, "tune-lr")
    plot_path = out / "tune.png"
    report.plot_tuning(plot_path, result.history, result.meta_losses, args.param)
    results_path = out / "tune.json"
    report.atomic_write_text(
        results_path,
        json.dumps(
            {
                "task": task.name,
                "optimizer": repr(tx),
                "param": args.param,
                "history": result.history,
                "meta_losses": result.meta_losses,
                "initial_validation_loss": result.initial_validation_loss,
                "learned_validation_loss": result.learned_validation_loss,
            },
            indent=2,
        ),
    )
    print(f"\nwrote {results_path}\nwrote {plot_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gradtx`` command."""
    from gradtx.tasks import TASKS

    parser = argparse.ArgumentParser(
        prog="gradtx", description="Compare, sweep and tune optimizers on small tasks."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--task", default="digits", help=f"one of {', '.join(TASKS)}")
        sub.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="PATH=VALUE",
            help="override a hyperparameter of every optimizer (repeatable)",
        )
        sub.add_argument("--steps", type=int, default=None, help="training steps per run")
        sub.add_argument("--out", default=None, help="output folder (default runs/<time>-<cmd>)")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")

    compare = commands.add_parser("compare", help="train with several optimizers and seeds")
    common(compare)
    compare.add_argument(
        "--optimizer",
        action="append",
        metavar="NAME_OR_CONFIG",
        help=f"a preset ({', '.join(PRESETS)}) or a config file; repeatable "
        f"(default: {', '.join(DEFAULT_COMPARE)})",
    )
    compare.add_argument("--seeds", type=int, default=3)
    compare.set_defaults(run=command_compare)

    sweep = commands.add_parser("sweep", help="grid or random search as one vmapped program")
    common(sweep)
    sweep.add_argument("--optimizer", default="adam", metavar="NAME_OR_CONFIG")
    sweep.add_argument("--grid", action="append", default=[], metavar="PATH=V1,V2,...")
    sweep.add_argument("--random", action="append", default=[], metavar="PATH=loguniform(LOW,HIGH)")
    sweep.add_argument("--trials", type=int, default=16)
    sweep.add_argument("--seeds", type=int, default=2)
    sweep.add_argument("--seed", type=int, default=0, help="seed of the random search")
    sweep.set_defaults(run=command_sweep)

    tune = commands.add_parser("tune-lr", help="learn the learning rate by hypergradients")
    common(tune)
    tune.add_argument("--optimizer", default="sgd-momentum", metavar="NAME_OR_CONFIG")
    tune.add_argument("--param", default="learning_rate", help="dotted hyperparameter path")
    tune.add_argument("--unroll", type=int, default=30)
    tune.add_argument("--meta-steps", type=int, default=15)
    tune.add_argument("--meta-learning-rate", type=float, default=0.1)
    tune.set_defaults(run=command_tune_lr)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``gradtx`` command.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      The exit code: 0 on success, 2 for bad input.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        print(f"gradtx {args.command}: error: {error}", file=sys.stderr)
        return 2
