"""JAX's persistent compilation cache for the ``gradtx`` command.

Most of a short ``gradtx compare`` is XLA compiling one program per optimizer.
With the cache on, a second run with the same task, optimizers and sizes loads
those programs from disk instead. The cache holds compiled machine code that
JAX runs, so it is used only from a directory private to this user (owned by
them, writable by nobody else), as the native kernel cache is.
"""

import os
import pathlib
import sys

import jax

from gradtx.fused import build

# Turns the cache off for every command (tests, shared machines), like --no-compile-cache.
OFF_ENV = "GRADTX_COMPILE_CACHE"


def turned_off() -> bool:
    """Whether ``$GRADTX_COMPILE_CACHE`` is ``off`` (or ``0``, ``false``, ``no``)."""
    return os.environ.get(OFF_ENV, "").strip().lower() in ("off", "0", "false", "no")


def directory() -> pathlib.Path:
    """``jax/`` under gradtx's cache directory (``$GRADTX_CACHE_DIR`` or ``~/.cache/gradtx``)."""
    return build.cache_dir() / "jax"


def enable() -> pathlib.Path | None:
    """Turns JAX's persistent compilation cache on, unless the user chose otherwise.

    A cache directory the user set for JAX (``JAX_COMPILATION_CACHE_DIR``) is
    kept as it is. Otherwise the cache goes to :func:`directory`, created with
    mode 0700; if it is not private to this user, the command runs without a
    cache and says why on stderr.

    Returns:
      The cache directory in use, or None when the cache stays off.
    """
    configured = getattr(jax.config, "jax_compilation_cache_dir")  # noqa: B009 (set at run time)
    if configured:
        return pathlib.Path(configured)
    if turned_off():
        return None
    path = directory()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        reason = build.unsafe_reason(path.stat())
    except OSError as error:
        reason = f"it cannot be created ({error.strerror or error})"
    if reason is not None:
        print(
            f"gradtx: not caching compiled programs in {path}: {reason}; "
            "make it private (chmod 700) or set GRADTX_CACHE_DIR",
            file=sys.stderr,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Every program the command runs, not only those that took a second to build.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
