"""examples/config_swap.py runs in its short mode, and every config in it trains."""

import pathlib
import re
import runpy
import subprocess
import sys

import jax
import pytest

import gradtx

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
SCRIPT = EXAMPLES / "config_swap.py"
CONFIG_NAMES = sorted(path.stem for path in (EXAMPLES / "configs").glob("*.yaml"))


def run(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


def test_the_configs_are_the_ones_the_issue_asks_for():
    loaded = {
        name: gradtx.load_config(EXAMPLES / "configs" / f"{name}.yaml") for name in CONFIG_NAMES
    }
    assert loaded == {
        "adam": gradtx.adam(3e-3),
        "adamw_schedule": gradtx.adamw(
            gradtx.exponential_decay(init_value=5e-3, transition_steps=100, decay_rate=0.5),
            b2=0.99,
            weight_decay=1e-2,
            mask=gradtx.path_mask(exclude=["bias$", "scale$"]),
        ),
        "sgd_momentum": gradtx.sgd(0.05, momentum=0.9),
        "sgd_momentum_weight_decay": gradtx.sgd(0.05, momentum=0.9, weight_decay=5e-4),
    }


def test_every_config_trains_in_short_mode():
    result = run("--config", "all", "--steps", "20")
    assert result.returncode == 0, result.stderr
    for name in CONFIG_NAMES:
        match = re.search(rf"^{name}: loss ([\d.]+) -> ([\d.]+) in 20 steps$", result.stdout, re.M)
        assert match, f"no result for {name} in:\n{result.stdout}"
        first, last = map(float, match.groups())
        assert last < 0.8 * first, f"{name}: the loss went from {first} to {last}"


def run_here(monkeypatch, capsys, *args):
    """Runs the script in this process (no second JAX start-up); returns its output."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    # The example broadcasts biases as user code does; conftest.py forbids that.
    with jax.numpy_rank_promotion("allow"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
    return capsys.readouterr().out


def test_command_line_overrides_reach_the_optimizer(monkeypatch, capsys):
    out = run_here(
        monkeypatch,
        capsys,
        "--config",
        "adamw_schedule",
        "--steps",
        "3",
        "learning_rate.init_value=0.01",
        "b2=0.95",
    )
    assert "adamw(learning_rate=exponential_decay(init_value=0.01," in out
    assert "b2=0.95" in out
    assert re.search(r"^adamw_schedule: loss [\d.]+ -> [\d.]+ in 3 steps$", out, re.M)


def test_a_bad_override_fails_with_the_config_error(monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        run_here(monkeypatch, capsys, "--config", "adam", "b3=0.9")
    assert info.value.code == 2
    assert (
        "adam.yaml: config: override 'b3=0.9': unknown field 'b3' for adam; valid fields: "
        "learning_rate, b1, b2" in capsys.readouterr().err
    )
