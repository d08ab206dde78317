"""The tests in tests/multidevice, in a process with 8 simulated CPU devices.

XLA reads ``--xla_force_host_platform_device_count`` when JAX starts its CPU
backend, which this process has done long before: the sharded tests run in a
pytest process of their own (one process, so they share its compilations), and
this test shows its report when one of them fails.
"""

import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).parent


def test_sharded_tests_pass_on_eight_simulated_devices() -> None:
    env = dict(os.environ)
    env["GRADTX_MULTIDEVICE"] = "1"
    env["XLA_FLAGS"] = " ".join(
        [env.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
    ).strip()
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(HERE / "multidevice"),
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-q",
            "-rfE",
        ],
        cwd=HERE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    report = (result.stdout + result.stderr)[-20000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout and " failed" not in result.stdout, report
