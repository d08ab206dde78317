"""mypy (pyproject.toml [tool.mypy]) finds no errors in the package."""

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent


def test_mypy_passes():
    mypy = shutil.which("mypy") or str(pathlib.Path(sys.executable).parent / "mypy")
    completed = subprocess.run(
        [mypy, "gradtx"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
