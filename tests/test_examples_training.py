"""The training examples run in short mode (2 epochs) and learn.

The four scripts start together, each in its own process, to share the time
spent importing JAX and compiling.
"""

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
SCRIPTS = ["flax_linen_digits.py", "flax_nnx_digits.py", "jax_loop.py", "torch_style.py"]
# Ten classes: chance is 0.1. Two epochs reach about 0.93 with every script.
MIN_SHORT_ACCURACY = 0.8


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("examples")
    processes = {
        name: subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), "--epochs", "2"],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in SCRIPTS
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = (process.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_learns_and_shows_progress(runs, name):
    returncode, stdout, stderr = runs[name]
    assert returncode == 0, stderr
    match = re.search(r"test accuracy: (\d\.\d+)", stdout)
    assert match, stdout
    assert float(match.group(1)) >= MIN_SHORT_ACCURACY, stdout
    assert "epochs: 100%" in stderr  # the tqdm progress bar ran to the end


@pytest.mark.parametrize("name", ["flax_linen_digits.py", "flax_nnx_digits.py"])
def test_flax_examples_use_adamw_with_decay_and_a_mask(runs, name):
    stdout = runs[name][1]
    assert stdout.startswith("adamw(learning_rate=exponential_decay(")
    assert "mask=path_mask(exclude=('bias$', 'scale$'))" in stdout


def test_jax_loop_changes_the_learning_rate_without_recompiling(runs):
    stdout = runs["jax_loop.py"][1]
    assert "epoch 1: learning rate lowered to 0.0003" in stdout
    assert "train_step compiled 1 time(s) for 2 learning rates" in stdout


def test_torch_style_accumulates_and_resumes_from_a_checkpoint(runs):
    stdout = runs["torch_style.py"][1]
    # 1347 training images, batches of 4 x 8: 42 optimizer steps per epoch.
    assert "resumed from digits.ckpt at step 42" in stdout
    assert "Optimizer.step compiled 1 time(s) in 84 steps" in stdout
