"""The gradtx command: bad input fails fast and cleanly; short runs work end to end."""

import json
import subprocess
import sys

import pytest
import yaml

import gradtx
from gradtx import cli


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--task", "nope"], "unknown task 'nope'; choose from: digits, text, cartpole"),
        (["compare", "--optimizer", "nope"], "unknown optimizer 'nope'; use one of sgd,"),
        (["compare", "--optimizer", "missing.yaml"], "no such config file"),
        (["compare", "--set", "b9=1"], "unknown field 'b9' for sgd; valid fields:"),
        (["compare", "--steps", "0"], "--steps must be >= 1, got 0"),
        (["compare", "--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["compare", "--optimizer", "adam", "--optimizer", "adam"], "labels must be unique"),
        (["sweep", "--grid", "learning_rate=1e-3,abc"], "'abc' is not a number"),
        (["sweep", "--random", "learning_rate=gauss(1,2)"], "expected one of loguniform"),
        (["sweep", "--grid", "bogus=1,2"], "unknown field 'bogus' for adam; valid fields:"),
        (["sweep", "--grid", "b2=0.9,1.5"], "b2: must be in [0, 1), got 1.5"),
        (["sweep"], "give either --grid or --random"),
        (["sweep", "--grid", "b1=0.8", "--random", "b2=uniform(0.9,0.99)"], "not both"),
        (["sweep", "--random", "b1=uniform(0.8,0.9)", "--trials", "0"], "--trials must be >= 1"),
        (["tune-lr", "--param", "b7"], "has no numeric hyperparameter 'b7'; choose from:"),
        (["tune-lr", "--unroll", "0"], "--unroll must be >= 1, got 0"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main([*argv, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert message in error
    assert not out.exists(), "nothing may be written for bad input"


def test_argparse_rejects_unknown_commands():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["explode"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("task", ["digits", "text", "cartpole"])
def test_compare_short_run(task, tmp_path, capsys, monkeypatch):
    # With the environment's switch unset, --no-compile-cache alone keeps the cache off
    # (test_compile_cache.py runs the command with the cache on).
    monkeypatch.delenv("GRADTX_COMPILE_CACHE")
    monkeypatch.setenv("GRADTX_CACHE_DIR", str(tmp_path / "cache"))
    config = tmp_path / "mine.yaml"
    gradtx.save_config(gradtx.sgd(0.05, momentum=0.9), config)
    out = tmp_path / "run"
    code = cli.main(
        [
            "compare",
            "--task",
            task,
            "--steps",
            "10",
            "--seeds",
            "2",
            "--quiet",
            "--optimizer",
            "adam",
            "--optimizer",
            str(config),
            "--out",
            str(out),
            "--no-compile-cache",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "adam" in printed and "mine" in printed
    assert "time: compile " in printed and "(compile cache off)" in printed
    assert not (tmp_path / "cache").exists()
    results = json.loads((out / "results.json").read_text())
    assert [row["optimizer"] for row in results["summary"]] == ["adam", "mine"]
    assert (out / "compare.png").stat().st_size > 10_000
    lines = (out / "curves.csv").read_text().splitlines()
    assert lines[0] == "optimizer,seed,step,metric,value"
    # 2 optimizers x 2 seeds x 10 steps of training curve, plus the evaluations.
    assert len(lines) > 1 + 2 * 2 * 10


@pytest.mark.parametrize("task", ["digits", "cartpole"])
def test_sweep_short_run_saves_the_best_config(task, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = cli.main(
        [
            "sweep",
            "--task",
            task,
            "--steps",
            "6",
            "--seeds",
            "1",
            "--quiet",
            "--grid",
            "learning_rate=1e-3,1e-2",
            "--grid",
            "b1=0.8,0.9",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "sweep.json").read_text())
    assert len(summary["trials"]) == 4
    best = summary["trials"][summary["best"]]
    saved = gradtx.load_config(out / "best.yaml")
    assert saved == gradtx.adam(best["learning_rate"], b1=best["b1"])
    assert (out / "sweep.png").exists()
    assert "rank" in capsys.readouterr().out


def test_random_sweep_on_text(tmp_path):
    out = tmp_path / "sweep"
    code = cli.main(
        [
            "sweep",
            "--task",
            "text",
            "--steps",
            "4",
            "--seeds",
            "1",
            "--quiet",
            "--random",
            "learning_rate=loguniform(1e-4,1e-1)",
            "--trials",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    trials = json.loads((out / "sweep.json").read_text())["trials"]
    assert len(trials) == 3 and all(1e-4 <= t["learning_rate"] <= 1e-1 for t in trials)
    assert yaml.safe_load((out / "best.yaml").read_text())["name"] == "adam"


@pytest.mark.parametrize("task", ["digits", "text", "cartpole"])
def test_tune_lr_short_run(task, tmp_path):
    out = tmp_path / "tune"
    code = cli.main(
        [
            "tune-lr",
            "--task",
            task,
            "--unroll",
            "3",
            "--meta-steps",
            "2",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "tune.json").read_text())
    assert len(result["history"]) == 3
    assert (out / "tune.png").exists()


def test_python_dash_m_runs_the_same_command(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "gradtx", "compare", "--task", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "unknown task 'nope'" in completed.stderr
