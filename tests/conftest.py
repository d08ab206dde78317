"""Test-wide settings: strict JAX checks so hidden broadcasting bugs fail loudly."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
