"""Test-wide settings: strict JAX checks so hidden broadcasting bugs fail loudly."""

import os

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

# The gradtx command run in-process must not turn on JAX's persistent cache for the
# rest of a test worker (test_compile_cache.py runs it in processes of its own).
os.environ["GRADTX_COMPILE_CACHE"] = "off"

# tests/multidevice needs 8 simulated CPU devices, which must be set before JAX
# starts its backend: test_multidevice.py runs it in a process of its own.
collect_ignore = [] if os.environ.get("GRADTX_MULTIDEVICE") == "1" else ["multidevice"]
