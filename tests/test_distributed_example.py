"""examples/distributed.py runs on 8 simulated devices and prints what README shows."""

import os
import pathlib
import re
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parent.parent / "examples" / "distributed.py"


def test_distributed_example_shards_saves_restores_and_continues(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoints", str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    out = result.stdout
    assert out.startswith("8 devices, mesh {'data': 2, 'model': 4}"), out
    # Born sharded: the first kernel's moments split like the kernel, the count replicated.
    assert re.search(
        r"state\[0\]\.mu\['Dense_0'\]\['kernel'\] +\(64, 128\) +P\('data', 'model'\)", out
    )
    assert re.search(r"state\[0\]\.count +\(\) +P\(\)", out)
    losses = [float(loss) for loss in re.findall(r"step \d: loss (\d+\.\d+)", out)]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.1, out
    assert "restored step 3 onto mesh {'data': 2, 'model': 2}" in out
    assert re.search(r"state\[0\]\.nu\['Dense_0'\]\['kernel'\] +P\('data', 'model'\) on 4", out)
    gap = float(re.search(r"largest param gap (\S+)", out).group(1))
    assert gap < 1e-5, out
    zero = out.split("ZeRO")[1]
    assert re.search(r"mu\['Dense_1'\]\['kernel'\] +P\('data', None\)", zero), out
    # The checkpoint is Orbax's directory layout: one directory per saved step.
    assert (tmp_path / "ckpt" / "3").is_dir()
