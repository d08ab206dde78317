"""ruff's checks (pyproject.toml [tool.ruff]) pass on the whole repository."""

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent


def test_ruff_check_passes():
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).parent / "ruff")
    completed = subprocess.run(
        [ruff, "check", "gradtx", "tests", "examples", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_ruff_format_is_applied():
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).parent / "ruff")
    completed = subprocess.run(
        [ruff, "format", "--check", "gradtx", "tests", "examples", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
