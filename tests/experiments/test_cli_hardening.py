"""The gradtx command under hostile input: one line, the right exit code, nothing left behind."""

import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gradtx import checks, cli, config, tasks
from gradtx.experiments import compare, meta, report, sweep
from gradtx.experiments.training import Curves


def run(argv, capsys):
    """``(exit code, stderr)`` of the command, checking stderr is one clean line."""
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert len(captured.err) <= cli.MAX_LINE + 1
    return code, captured.err.strip()


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if any training starts (every check must come before it)."""

    def refuse(*args, **kwargs):
        pytest.fail("training started before the input was checked")

    monkeypatch.setattr(compare, "run_comparison", refuse)
    monkeypatch.setattr(sweep, "run_sweep", refuse)
    monkeypatch.setattr(meta, "tune_hyperparameter", refuse)


@pytest.fixture(autouse=True)
def regression(monkeypatch, regression_task):
    """``--task regression``: the conftest task (building digits takes seconds)."""
    monkeypatch.setitem(tasks.TASKS, "regression", lambda: regression_task)


TASK = ["--task", "regression"]
TINY = [*TASK, "--steps", "2", "--quiet"]  # trains for two steps
COMMANDS = {
    "compare": ["compare", *TASK, "--optimizer", "sgd", "--seeds", "1"],
    "sweep": ["sweep", *TASK, "--grid", "learning_rate=0.01,0.02", "--seeds", "1"],
    "tune-lr": ["tune-lr", *TASK, "--unroll", "2", "--meta-steps", "1"],
}


def with_task(argv):
    return [argv[0], *TASK, *argv[1:]]


@pytest.mark.parametrize(
    "argv, field",
    [
        (["--optimizer", "adamw", "--set", "learning_rate.init_value=nan"], "init_value"),
        (["--optimizer", "sgd", "--set", "learning_rate=nan"], "learning_rate"),
    ],
)
def test_nan_override_is_one_line(argv, field, tmp_path, capsys, no_training):
    out = tmp_path / "out"
    code, error = run(["compare", *TASK, *argv, "--out", str(out)], capsys)
    assert code == 2
    assert error.startswith("gradtx compare: error: --optimizer ")
    assert field in error and "nan" in error
    assert not out.exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_schedule_config_is_not_an_optimizer(command, tmp_path, capsys, no_training):
    path = tmp_path / "decay.yaml"
    path.write_text(
        "name: exponential_decay\ninit_value: 0.001\ntransition_steps: 10\ndecay_rate: 0.9\n"
    )
    out = tmp_path / "out"
    argv = [command, *TASK, "--optimizer", str(path), "--out", str(out)]
    if command == "sweep":
        argv += ["--grid", "init_value=0.1,0.2"]
    code, error = run(argv, capsys)
    assert code == 2
    assert f"--optimizer {path}: holds the schedule exponential_decay" in error
    assert "not a gradient transformation" in error
    assert not out.exists()


@pytest.mark.parametrize(
    "text",
    [
        "name: sgd\nlearning_rate: {array: 1000, dtype: int8}\n",
        "name: sgd\nlearning_rate: " + "[" * 10_000 + "]" * 10_000 + "\n",
    ],
    ids=["int8-overflow", "10000-deep"],
)
def test_hostile_config_files_are_one_line(text, tmp_path, capsys, no_training):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, error = run(
        ["compare", *TASK, "--optimizer", str(path), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert error.startswith(f"gradtx compare: error: --optimizer {path}: ")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "exception",
    [
        ValueError("bad value"),
        TypeError("bad type"),
        OverflowError("bad size"),
        RecursionError("maximum recursion depth exceeded"),
    ],
)
def test_any_error_from_building_is_a_usage_error(exception, monkeypatch, capsys, no_training):
    def build(*args, **kwargs):
        raise exception

    monkeypatch.setattr(config, "from_config", build)
    code, error = run(["compare", *TASK, "--optimizer", "adam"], capsys)
    assert code == 2
    assert error.startswith("gradtx compare: error: --optimizer adam: ")
    expected = "nested too deeply" if isinstance(exception, RecursionError) else str(exception)
    assert expected in error


@pytest.mark.parametrize(
    "command, patch",
    [
        ("compare", (compare, "run_comparison")),
        ("sweep", (sweep, "run_sweep")),
        ("tune-lr", (meta, "tune_hyperparameter")),
    ],
)
def test_ctrl_c_removes_the_folders_it_created(command, patch, tmp_path, monkeypatch, capsys):
    out = tmp_path / "made" / "by" / "run"

    def interrupted(*args, **kwargs):
        assert out.is_dir(), "the output folder is made before training"
        raise KeyboardInterrupt

    monkeypatch.setattr(*patch, interrupted)
    code, error = run([*COMMANDS[command], *TINY, "--out", str(out)], capsys)
    assert (code, error) == (130, f"gradtx {command}: interrupted")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_with_the_default_folder_leaves_no_runs_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def interrupted(*args, **kwargs):
        assert len(list((tmp_path / "runs").iterdir())) == 1
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "run_comparison", interrupted)
    code, error = run([*COMMANDS["compare"], *TINY], capsys)
    assert (code, error) == (130, "gradtx compare: interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_given_folder_is_written_only_at_the_end(tmp_path, monkeypatch, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    argv = [*COMMANDS["compare"], *TINY, "--out", str(out)]

    # Recorded curves stand in for training (a compile takes seconds, and
    # test_cli.py trains for real); a stub plot keeps matplotlib out.
    monkeypatch.setattr(compare, "run_comparison", recorded_comparison)

    def half_plotted(path, task, entries):
        path.write_bytes(b"half a plot")
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_compare", half_plotted)
    code, error = run(argv, capsys)
    assert (code, error) == (130, "gradtx compare: interrupted")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    monkeypatch.setattr(report, "plot_compare", lambda path, *_: path.write_bytes(b"a plot"))
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*cli.COMPARE_FILES, "notes.txt"])
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "compare.png").read_bytes() == b"a plot"
    assert f"wrote {out / 'results.json'}" in capsys.readouterr().out


def recorded_comparison(task, optimizers, *, seeds, steps, eval_every, on_done=None):
    """What ``run_comparison`` returns, made up: losses falling from 1 over ``steps``."""
    curve = np.tile(np.linspace(1.0, 0.5, steps), (seeds, 1))
    evals = np.tile(np.linspace(1.0, 0.5, steps // eval_every), (seeds, 1))
    curves = Curves(
        curve=curve,
        eval_steps=np.arange(1, steps // eval_every + 1) * eval_every,
        metrics={"test_loss": evals, "train_loss": evals * 0.9},
        compile_seconds=0.0,
        run_seconds=0.1,
    )
    return [compare.Entry(label, tx, curves) for label, tx in optimizers]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_bad_out_is_refused_before_training(command, where, tmp_path, capsys, no_training):
    # A read-only folder (which root may write anyway) is simulated below.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    if where == "a file":
        out = blocker
        expected = "exists and is not a folder"
    else:
        out = blocker / "run"
        expected = "cannot create it: Not a directory"
    code, error = run([*COMMANDS[command], "--out", str(out)], capsys)
    assert code == 2
    assert error == f"gradtx {command}: error: --out {out}: {expected}"
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


def test_an_unwritable_existing_out_is_refused_and_kept(tmp_path, monkeypatch, capsys, no_training):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "data.txt").write_text("keep")

    def read_only(*args, **kwargs):  # what a read-only folder does, even to root
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    code, error = run([*COMMANDS["compare"], "--out", str(out)], capsys)
    assert code == 2
    assert error == f"gradtx compare: error: --out {out}: cannot write there: Permission denied"
    assert [p.name for p in out.iterdir()] == ["data.txt"]


GRID_OF_10 = "eps=" + ",".join(str(v) for v in range(1, 11))
GRID_OF_41 = "learning_rate=" + ",".join(str(v) for v in range(1, 42))


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["sweep", "--random", "b1=uniform(0.8,0.9)", "--trials", "100000"],
            "--trials must be <= 4096, got 100000",
        ),
        (
            ["sweep", "--grid", GRID_OF_10, "--grid", f"b1={GRID_OF_10[4:]}", "--grid", GRID_OF_41],
            "--grid must have <= 4096 points (the product of the axis sizes), "
            "got 10 x 10 x 41 = 4100",
        ),
        (["compare", "--steps", "100001"], "--steps must be <= 100000, got 100001"),
        (["compare", "--seeds", "257"], "--seeds must be <= 256, got 257"),
        (["tune-lr", "--unroll", "1001"], "--unroll must be <= 1000, got 1001"),
        (["tune-lr", "--meta-steps", "10001"], "--meta-steps must be <= 10000, got 10001"),
        (
            [
                "sweep",
                "--random",
                "b1=uniform(0.8,0.9)",
                "--trials",
                "4096",
                "--seeds",
                "256",
                "--steps",
                "10",
            ],
            "trials x --seeds x --steps must be <= 10000000",
        ),
        (["tune-lr", "--meta-learning-rate", "inf"], "--meta-learning-rate must be a finite"),
        (["sweep", "--random", "b1=uniform(0.8,0.9)", "--seed", "-1"], "--seed must be >= 0"),
    ],
)
def test_sizes_are_limited(argv, message, tmp_path, capsys, no_training):
    code, error = run([*with_task(argv), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert message in error
    assert not (tmp_path / "out").exists()


def test_an_internal_error_is_one_line_and_a_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def broken(*args, **kwargs):
        raise RuntimeError("boom " * 100 + "\nsecond line")

    monkeypatch.setattr(compare, "run_comparison", broken)
    out = tmp_path / "out"
    code, error = run([*COMMANDS["compare"], *TINY, "--out", str(out)], capsys)
    assert code == 1
    assert error.startswith("gradtx compare: internal error: RuntimeError: boom boom")
    logs = list((tmp_path / "tmp").iterdir())
    assert len(logs) == 1 and logs[0].name.startswith("gradtx-crash-")
    assert error.endswith(f"(full traceback in {logs[0]})")
    summary = error.split("RuntimeError: ", 1)[1].split(" (full traceback", 1)[0]
    # Cut in the middle (checks.capped), so the message's end shows; the whole is in the log.
    assert len(summary) <= checks.QUOTE_LIMIT and "boo...m boom" in summary
    log = logs[0].read_text()
    assert "Traceback" in log and "in broken" in log and "second line" in log
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, start, repeated",
    [
        (["compare", "--optimizer", "x" * 5000], "compare: error: unknown optimizer 'xxx", "x"),
        (["compare", "--optimizer", "x" * 5000 + ".yaml"], "compare: error: --optimizer xx", "x"),
        (["compare", "--task", "y" * 5000], "compare: error: unknown task 'yyy", "y"),
        (["sweep", "--grid", "b1=" + "1," * 5000 + "z"], "sweep: error: 'b1=1,1,", "1,"),
        (["compare", "--steps", "9" * 4000], "compare: error: --steps must be <= 100000", "9"),
        (["compare", "--out", "o" * 5000], "compare: error: --out ooo", "o"),
        (["compare", "--steps", "z" * 5000], "compare: error: argument --steps: invalid", "z"),
    ],
)
def test_user_text_in_messages_is_capped(
    argv, start, repeated, capsys, tmp_path, monkeypatch, no_training
):
    monkeypatch.chdir(tmp_path)
    try:
        code, error = run(with_task(argv), capsys)
    except SystemExit as exit_info:  # argparse's own errors
        code, error = exit_info.code, capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1
    assert code == 2
    assert error.startswith(f"gradtx {start}")
    assert error.count(repeated) <= 2 * checks.QUOTE_LIMIT // len(repeated)
    assert list(tmp_path.iterdir()) == []


def test_real_ctrl_c_is_one_line_exit_130_and_no_run_folder(tmp_path):
    out = tmp_path / "made" / "run"
    child = subprocess.Popen(
        [sys.executable, "-m", "gradtx", "compare", "--task", "cartpole", "--optimizer", "sgd"]
        + ["--steps", "50000", "--seeds", "1", "--quiet", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    try:
        # The first line is printed once every check passed and the folder exists.
        deadline = time.monotonic() + 120
        ready, _, _ = select.select([child.stdout], [], [], deadline - time.monotonic())
        assert ready, "no output from gradtx compare within 120 s"
        first = child.stdout.readline()
        assert first.startswith("task cartpole"), (first, child.stderr.read())
        assert out.is_dir()
        child.send_signal(signal.SIGINT)
        _, error = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130
    assert error == "gradtx compare: interrupted\n"
    assert list(tmp_path.iterdir()) == []
