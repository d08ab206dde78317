"""The README's quick start runs and learns."""

import pathlib
import runpy

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "quickstart.py"


def test_quickstart_runs_and_learns(capsys):
    module = runpy.run_path(str(EXAMPLE))
    assert module["plain_jax"]() < 1e-3
    # y has variance ~2.4 (sin(x0) + x1**2); an MLP that learned explains most of it.
    assert module["flax_train_state"]() < 0.5
    assert "adamw(learning_rate=exponential_decay(" in capsys.readouterr().out
