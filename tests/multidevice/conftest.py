"""Runs only under test_multidevice.py, in a process with 8 simulated CPU devices."""

import jax
import pytest

DEVICES = 8


@pytest.fixture(autouse=True, scope="session")
def eight_devices() -> None:
    if jax.device_count() != DEVICES:
        pytest.fail(
            f"tests/multidevice needs {DEVICES} devices, found {jax.device_count()}: run it "
            "through tests/test_multidevice.py, which sets "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES} before JAX starts"
        )
