"""The gradtx command keeps compiled programs in a private on-disk cache."""

import os
import stat
import subprocess
import sys

import pytest

from gradtx.experiments import compile_cache

RUN = [
    sys.executable,
    "-m",
    "gradtx",
    "compare",
    "--task",
    "digits",
    "--optimizer",
    "sgd",
    "--steps",
    "20",
    "--seeds",
    "1",
    "--quiet",
]


def command_env(cache_root, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GRADTX_COMPILE_CACHE", "XLA_FLAGS")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return {**env, "GRADTX_CACHE_DIR": str(cache_root), **extra}


def cache_entries(directory):
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def test_a_second_run_compiles_nothing_new(tmp_path):
    env = command_env(tmp_path / "cache")
    cache = tmp_path / "cache" / "jax"
    first = subprocess.run(
        [*RUN, "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert f"compiled programs cached in {cache} for the next run" in first.stdout
    entries = cache_entries(cache)
    assert entries, "the first run cached no program"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    second = subprocess.run(
        [*RUN, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr
    # Every program came from the cache: nothing was added.
    assert cache_entries(cache) == entries


def test_the_environment_turns_it_off(monkeypatch):
    monkeypatch.setenv("GRADTX_COMPILE_CACHE", "off")
    assert compile_cache.turned_off()
    assert compile_cache.enable() is None


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_a_directory_others_may_write_is_not_used(tmp_path, monkeypatch, capsys, mode):
    monkeypatch.delenv("GRADTX_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("GRADTX_CACHE_DIR", str(tmp_path))
    shared = tmp_path / "jax"
    shared.mkdir()
    shared.chmod(mode)
    assert compile_cache.directory() == shared
    assert compile_cache.enable() is None
    message = capsys.readouterr().err
    assert f"not caching compiled programs in {shared}: group or others may write it" in message
