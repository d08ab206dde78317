"""A child process that saves a checkpoint and stops halfway through writing it.

Shared by tests/test_checkpoint.py (the process dies: the previous checkpoint
must survive) and tests/test_checkpoint_hardening.py (the process stalls and is
killed with SIGKILL: the next save must delete its temporary file).
"""


def halfway_save(then: str, size: int) -> str:
    """Source of a script that saves ``{"w": f32[size]}`` to ``sys.argv[1]`` and,
    halfway through the payload, runs the statement ``then`` (``os._exit(17)``,
    ``time.sleep(120)``)."""
    return f"""
import os, sys, time
import jax.numpy as jnp
import gradtx

real_fdopen = os.fdopen


class Halfway:
    def __init__(self, file):
        self.file, self.writes = file, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def write(self, data):
        self.writes += 1
        if self.writes == 2:  # halfway through the payload
            self.file.write(data[: len(data) // 2])
            self.file.flush()
            {then}
        return self.file.write(data)


os.fdopen = lambda fd, mode: Halfway(real_fdopen(fd, mode))
tx = gradtx.sgd(0.1)
params = {{"w": jnp.full({size}, 2.0)}}
gradtx.save_checkpoint(sys.argv[1], params, tx.init(params), tx, step=2)
"""


class WrappedFile:
    """A real file, wrapped so a test can make one of its writes misbehave (override
    :meth:`write`); used in place of ``os.fdopen``'s result."""

    def __init__(self, file):
        self.file = file

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()
        return False

    def write(self, data):
        return self.file.write(data)

    def flush(self):
        self.file.flush()

    def fileno(self):
        return self.file.fileno()
