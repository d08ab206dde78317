"""The ``gradtx`` command: compare optimizers, sweep hyperparameters, tune the LR.

Every input is checked before anything is trained, the output folder included:
bad input gives one line on stderr naming the flag and the value, and exit
code 2. Results are written only at the end; a run that fails or is interrupted
(exit code 130) removes the folders it created. Any other error gives one line
and a log file with the traceback (exit code 1).
"""

import argparse
import datetime
import json
import math
import os
import pathlib
import shlex
import sys
import tempfile
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from gradtx.aliases import adam, adamw, nadam, nadamw, sgd
from gradtx.base import Schedule, Transformation
from gradtx.checks import QUOTE_LIMIT, capped, capped_repr
from gradtx.experiments.outputs import OutputFolder, OutputFolderError, atomic_write_text
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

# Bounds on one command's memory and time, far above what the bundled tasks
# need (300 steps, 3 seeds, 16 trials, 30 unrolled steps, 15 meta-steps).
MAX_STEPS = 100_000
MAX_SEEDS = 256
MAX_TRIALS = 4096
MAX_UNROLL = 1000
MAX_META_STEPS = 10_000
# One training-curve value per step of every run is kept in memory and written
# to disk, so runs x steps is bounded too.
MAX_CURVE_VALUES = 10_000_000
MAX_LINE = 1000  # characters of the one line an error prints

COMPARE_FILES = ("curves.csv", "results.json", "compare.png")
SWEEP_FILES = ("best.yaml", "sweep.json", "sweep.png")
TUNE_FILES = ("tune.json", "tune.png")
# What building an optimizer from a config raises for bad input.
BUILD_ERRORS = (ValueError, TypeError, OverflowError)


class UsageError(Exception):
    """Bad command-line input: reported in one line with exit code 2."""


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def resolve_optimizer(spec: str, overrides: Sequence[str]) -> tuple[str, Transformation]:
    """A preset name or a config file, with ``--set`` overrides applied.

    Args:
      spec: a preset name (see ``PRESETS``) or a path to a config file.
      overrides: ``path=value`` strings.

    Returns:
      ``(label, optimizer)``.

    Raises:
      UsageError: for an unknown name, a missing file, a bad override, or a
        config that holds something other than a gradient transformation
        (such as a schedule).
    """
    from gradtx.config import from_config, to_config
    from gradtx.config_files import read_config

    shown = capped(spec)
    try:
        if spec in PRESETS:
            config, label = to_config(PRESETS[spec]), spec
        elif pathlib.Path(spec).suffix in CONFIG_SUFFIXES:
            if not pathlib.Path(spec).is_file():
                raise UsageError(f"--optimizer {shown}: no such config file")
            config, label = read_config(spec), pathlib.Path(spec).stem
        else:
            raise UsageError(
                f"unknown optimizer {capped_repr(spec)}; use one of {', '.join(PRESETS)} or a "
                f"config file ending in {', '.join(CONFIG_SUFFIXES)}"
            )
        tx = from_config(config, overrides)
    except RecursionError:
        raise UsageError(
            f"--optimizer {shown}: the config (or a --set value) is nested too deeply"
        ) from None
    except OSError as error:
        # Not str(error): it repeats the file name in full.
        raise UsageError(
            f"--optimizer {shown}: cannot read it: {error.strerror or error}"
        ) from None
    except BUILD_ERRORS as error:
        raise UsageError(f"--optimizer {shown}: {error}") from None
    if not isinstance(tx, Transformation):
        kind = "the schedule" if isinstance(tx, Schedule) else "a"
        raise UsageError(
            f"--optimizer {shown}: holds {kind} {type(tx).__name__}, not a gradient "
            "transformation; give an optimizer such as adam, or a chain (a schedule "
            "goes in an optimizer's learning_rate)"
        )
    return label, tx


def _task(name: str) -> Any:
    from gradtx.tasks import TASKS, get_task

    if name not in TASKS:
        raise UsageError(f"unknown task {capped_repr(name)}; choose from: {', '.join(TASKS)}")
    return get_task(name)


def _count(flag: str, value: int, maximum: int) -> int:
    """``value`` if it is in ``[1, maximum]``."""
    if value < 1:
        raise UsageError(f"{flag} must be >= 1, got {capped(str(value))}")
    if value > maximum:
        raise UsageError(f"{flag} must be <= {maximum}, got {capped(str(value))}")
    return value


def _schedule(task: Any, steps: int | None) -> tuple[int, int]:
    """Steps and evaluation interval: the largest divisor of steps <= the task's."""
    steps = _count("--steps", task.steps if steps is None else steps, MAX_STEPS)
    eval_every = next(d for d in range(min(task.eval_every, steps), 0, -1) if steps % d == 0)
    return steps, eval_every


def _check_curve_values(*factors: tuple[str, int]) -> None:
    """Bounds the training-curve values one command keeps (runs x steps)."""
    total = math.prod(value for _, value in factors)
    if total > MAX_CURVE_VALUES:
        names = " x ".join(name for name, _ in factors)
        values = " x ".join(str(value) for _, value in factors)
        raise UsageError(
            f"{names} must be <= {MAX_CURVE_VALUES} (one training-curve value is kept per "
            f"step of every run), got {values} = {total}"
        )


def _progress(total: int, description: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, file=sys.stderr, leave=False)


def _prepare(outputs: OutputFolder, names: Sequence[str]) -> None:
    try:
        outputs.prepare(names)
    except OutputFolderError as error:
        raise UsageError(str(error)) from None


def command_compare(args: argparse.Namespace, outputs: OutputFolder) -> int:
    """Trains the task with every optimizer and prints the comparison."""
    from gradtx.experiments import report
    from gradtx.experiments.compare import run_comparison

    task = _task(args.task)
    seeds = _count("--seeds", args.seeds, MAX_SEEDS)
    steps, eval_every = _schedule(task, args.steps)
    specs = args.optimizer or list(DEFAULT_COMPARE)
    optimizers = [resolve_optimizer(spec, args.set) for spec in specs]
    labels = [label for label, _ in optimizers]
    if len(set(labels)) != len(labels):
        raise UsageError(f"optimizer labels must be unique, got {capped_repr(labels)}")
    _check_curve_values(("optimizers", len(optimizers)), ("--seeds", seeds), ("--steps", steps))
    _prepare(outputs, COMPARE_FILES)

    print(f"task {task.name}: {task.description}; {steps} steps x {seeds} seeds", flush=True)
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
    _print_time_split(
        sum(entry.curves.compile_seconds for entry in entries),
        sum(entry.curves.run_seconds for entry in entries),
        args.compile_cache,
    )
    staging = outputs.staging()
    report.write_compare_data(staging, task, entries, rows)
    report.plot_compare(staging / "compare.png", task, entries)
    _print_written(outputs.commit())
    return 0


def _print_time_split(compile_seconds: float, train_seconds: float, cache: Any) -> None:
    where = (
        f"compiled programs cached in {cache} for the next run"
        if cache is not None
        else "compile cache off"
    )
    print(f"time: compile {compile_seconds:.1f} s, train {train_seconds:.1f} s ({where})")


def _print_written(paths: list[pathlib.Path]) -> None:
    print("\n" + "\n".join(f"wrote {path}" for path in paths))


def _sweep_trials(args: argparse.Namespace) -> list[dict[str, float]]:
    """The trials of ``--grid`` or ``--random``, checked against the limits."""
    from gradtx.experiments import search

    if bool(args.grid) == bool(args.random):
        raise UsageError("give either --grid or --random (repeatable), not both or neither")
    try:
        if args.grid:
            axes = [search.parse_grid(text) for text in args.grid]
            sizes = [len(axis.values) for axis in axes]
            points = math.prod(sizes)
            if points > MAX_TRIALS:
                shown = capped(" x ".join(map(str, sizes)))
                raise UsageError(
                    f"--grid must have <= {MAX_TRIALS} points (the product of the axis "
                    f"sizes), got {shown} = {capped(str(points))}"
                )
            return search.grid_trials(axes)
        random_axes = [search.parse_random(text) for text in args.random]
        trials = _count("--trials", args.trials, MAX_TRIALS)
        if args.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {capped(str(args.seed))}")
        return search.random_trials(random_axes, trials, args.seed)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _trial_optimizers(
    label: str, base: Transformation, trials: list[dict[str, float]]
) -> list[Transformation]:
    """``base`` with each trial's values, all checked to stack into one program."""
    from gradtx.config import from_config, to_config
    from gradtx.experiments.training import check_one_structure

    base_config = to_config(base)
    optimizers = []
    for trial in trials:
        overrides = [f"{path}={value!r}" for path, value in trial.items()]
        try:
            optimizers.append(from_config(base_config, overrides))
        except BUILD_ERRORS as error:
            raise UsageError(f"{label}: {error}") from None
    try:
        check_one_structure(optimizers)
    except ValueError as error:
        raise UsageError(f"cannot sweep these values: {error}") from None
    return optimizers


def command_sweep(args: argparse.Namespace, outputs: OutputFolder) -> int:
    """Runs a grid or random search as one vmapped program."""
    from gradtx.config_files import save_config
    from gradtx.experiments import report
    from gradtx.experiments.sweep import run_sweep

    task = _task(args.task)
    seeds = _count("--seeds", args.seeds, MAX_SEEDS)
    steps, eval_every = _schedule(task, args.steps)
    trials = _sweep_trials(args)
    _check_curve_values(("trials", len(trials)), ("--seeds", seeds), ("--steps", steps))
    label, base = resolve_optimizer(args.optimizer, args.set)
    optimizers = _trial_optimizers(label, base, trials)
    _prepare(outputs, SWEEP_FILES)

    print(
        f"task {task.name}: {len(trials)} trials x {seeds} seeds of {label}, "
        f"{steps} steps, as one vmapped program",
        flush=True,
    )
    result = run_sweep(task, trials, optimizers, seeds=seeds, steps=steps, eval_every=eval_every)
    print(report.sweep_table(task, result))
    print()
    _print_time_split(result.curves.compile_seconds, result.curves.run_seconds, args.compile_cache)
    best = result.ranking(task.higher_is_better)[0]
    staging = outputs.staging()
    save_config(optimizers[best], staging / "best.yaml")
    atomic_write_text(
        staging / "sweep.json",
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
    report.plot_sweep(staging / "sweep.png", task, result, grid=bool(args.grid))
    print(f"best: {trials[best]} -> {task.score_name} {result.scores[best]:.4g}")
    _print_written(outputs.commit())
    return 0


def command_tune_lr(args: argparse.Namespace, outputs: OutputFolder) -> int:
    """Learns a hyperparameter by differentiating through unrolled training."""
    from gradtx.experiments import report
    from gradtx.experiments.leaves import leaf_paths
    from gradtx.experiments.meta import tunable_value, tune_hyperparameter

    task = _task(args.task)
    label, tx = resolve_optimizer(args.optimizer, args.set)
    if args.param not in leaf_paths(tx):
        raise UsageError(
            f"{label} has no numeric hyperparameter {capped_repr(args.param)}; choose from: "
            f"{', '.join(leaf_paths(tx))}"
        )
    try:
        tunable_value(tx, args.param)
    except ValueError as error:
        raise UsageError(f"--param {args.param}: {error}") from None
    unroll = _count("--unroll", args.unroll, MAX_UNROLL)
    meta_steps = _count("--meta-steps", args.meta_steps, MAX_META_STEPS)
    if not 0 < args.meta_learning_rate < math.inf:
        raise UsageError(
            f"--meta-learning-rate must be a finite number > 0, got {args.meta_learning_rate}"
        )
    _prepare(outputs, TUNE_FILES)

    print(
        f"task {task.name}: learning {args.param} of {tx} through {unroll} unrolled steps",
        flush=True,
    )
    with _progress(meta_steps, "meta-steps", not args.quiet) as bar:

        def show(step: int, value: float, loss: float) -> None:
            bar.set_postfix({args.param: f"{value:.3g}", "val loss": f"{loss:.3g}"})
            bar.update()

        result = tune_hyperparameter(
            task,
            tx,
            path=args.param,
            unroll=unroll,
            meta_steps=meta_steps,
            meta_learning_rate=args.meta_learning_rate,
            progress=show,
        )
    print(
        report.format_table(
            ["", args.param, f"validation loss after {unroll} steps"],
            [
                ["start", result.initial_value, result.initial_validation_loss],
                ["learned", result.learned_value, result.learned_validation_loss],
            ],
        )
    )
    staging = outputs.staging()
    atomic_write_text(
        staging / "tune.json",
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
    report.plot_tuning(staging / "tune.png", result.history, result.meta_losses, args.param)
    _print_written(outputs.commit())
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line too (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes the bad value in full.
        line = capped(_one_line(f"{self.prog}: error: {message}"), 2 * QUOTE_LIMIT)
        self.exit(2, f"{line} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gradtx`` command."""
    from gradtx.tasks import TASKS

    parser = _Parser(
        prog="gradtx",
        description="Compare, sweep and tune optimizers on small tasks.",
        epilog=f"Runs x steps is limited to {MAX_CURVE_VALUES} (one training-curve value is "
        "kept per step of every run).",
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
        sub.add_argument(
            "--steps",
            type=int,
            default=None,
            help=f"training steps per run, 1 to {MAX_STEPS} (default: the task's); runs x "
            f"steps at most {MAX_CURVE_VALUES}",
        )
        sub.add_argument(
            "--out",
            default=None,
            help="output folder, created or checked before training and written at the end "
            "(default runs/<time>-<cmd>)",
        )
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        sub.add_argument(
            "--no-compile-cache",
            action="store_true",
            help="do not keep compiled programs on disk for the next run (default: kept in "
            "~/.cache/gradtx/jax or $GRADTX_CACHE_DIR/jax; GRADTX_COMPILE_CACHE=off also "
            "turns it off)",
        )

    compare = commands.add_parser("compare", help="train with several optimizers and seeds")
    common(compare)
    compare.add_argument(
        "--optimizer",
        action="append",
        metavar="NAME_OR_CONFIG",
        help=f"a preset ({', '.join(PRESETS)}) or a config file; repeatable "
        f"(default: {', '.join(DEFAULT_COMPARE)})",
    )
    compare.add_argument(
        "--seeds", type=int, default=3, help=f"seeds per optimizer, 1 to {MAX_SEEDS}"
    )
    compare.set_defaults(run=command_compare)

    sweep = commands.add_parser("sweep", help="grid or random search as one vmapped program")
    common(sweep)
    sweep.add_argument("--optimizer", default="adam", metavar="NAME_OR_CONFIG")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="PATH=V1,V2,...",
        help=f"a grid axis (repeatable); at most {MAX_TRIALS} points in all",
    )
    sweep.add_argument("--random", action="append", default=[], metavar="PATH=loguniform(LOW,HIGH)")
    sweep.add_argument(
        "--trials", type=int, default=16, help=f"random-search trials, 1 to {MAX_TRIALS}"
    )
    sweep.add_argument("--seeds", type=int, default=2, help=f"seeds per trial, 1 to {MAX_SEEDS}")
    sweep.add_argument("--seed", type=int, default=0, help="seed of the random search (>= 0)")
    sweep.set_defaults(run=command_sweep)

    tune = commands.add_parser("tune-lr", help="learn the learning rate by hypergradients")
    common(tune)
    tune.add_argument("--optimizer", default="sgd-momentum", metavar="NAME_OR_CONFIG")
    tune.add_argument("--param", default="learning_rate", help="dotted hyperparameter path")
    tune.add_argument(
        "--unroll", type=int, default=30, help=f"training steps differentiated, 1 to {MAX_UNROLL}"
    )
    tune.add_argument(
        "--meta-steps", type=int, default=15, help=f"hypergradient steps, 1 to {MAX_META_STEPS}"
    )
    tune.add_argument("--meta-learning-rate", type=float, default=0.1, help="finite, > 0")
    tune.set_defaults(run=command_tune_lr)
    return parser


def _write_crash_log(argv: Sequence[str]) -> str:
    """Writes the exception being handled to a new log file; says where (or why not)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = pathlib.Path(tempfile.gettempdir())
    path = folder / f"gradtx-crash-{stamp}-{os.getpid()}.log"
    text = f"gradtx {shlex.join(argv)}\npython {sys.version}\n\n{traceback.format_exc()}"
    try:
        atomic_write_text(path, text, errors="backslashreplace")
    except OSError as error:
        return f"could not write the traceback: {error}"
    return f"full traceback in {path}"


def _discard(outputs: OutputFolder | None) -> None:
    # A second Ctrl-C during the clean-up must not leave half a run behind.
    for _ in range(3):
        try:
            if outputs is not None:
                outputs.discard()
            return
        except KeyboardInterrupt:
            continue


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``gradtx`` command.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      The exit code: 0 on success, 1 for an internal error (its traceback is
      written to a log file), 2 for bad input, 130 when interrupted (Ctrl-C).
      Every failure prints one line on stderr and removes the output folders
      the run created.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "gradtx"
    outputs = None
    try:
        args = build_parser().parse_args(argv)
        command = f"gradtx {args.command}"
        outputs = OutputFolder(args.out, args.command)
        from gradtx.experiments import compile_cache

        args.compile_cache = None if args.no_compile_cache else compile_cache.enable()
        return int(args.run(args, outputs))
    except UsageError as error:
        message, code = f"error: {error}", 2
    except KeyboardInterrupt:
        message, code = "interrupted", 130
    except Exception as error:
        where = _write_crash_log(argv)
        summary = capped(_one_line(str(error)))
        message, code = f"internal error: {type(error).__name__}: {summary} ({where})", 1
    _discard(outputs)
    print(capped(_one_line(f"{command}: {message}"), MAX_LINE), file=sys.stderr)
    return code
