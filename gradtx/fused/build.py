"""Builds the native CPU kernel at first use and registers it with XLA.

``kernel.cc`` is compiled with the machine's C++ compiler and ``-march=native``,
so the library must be built on the machine that runs it: it is built lazily,
once, into a per-user cache directory, under a name derived from everything
that could change the binary (the source, the flags, the compiler, jaxlib and
the CPU's features). Concurrent builds write to temporary files and rename them
into place, which is atomic, so processes never see a half-written library.

If there is no compiler, the build fails or ``GRADTX_DISABLE_NATIVE`` is set,
:func:`load` returns False (with one logged warning for a failure) and
:func:`gradtx.fused_apply` takes the plain XLA path.
"""

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jaxlib

logger = logging.getLogger("gradtx")

DISABLE_ENV = "GRADTX_DISABLE_NATIVE"
CACHE_ENV = "GRADTX_CACHE_DIR"
SOURCE = Path(__file__).with_name("kernel.cc")

# -fno-math-errno lets std::sqrt vectorize; -ffp-contract=off leaves every
# fused multiply-add to the source, which places them where XLA does. Never
# -ffast-math: it reassociates and approximates division and sqrt.
FLAGS = (
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-ffp-contract=off",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-w",
)

# Names under which XLA finds the handlers, and the symbols that define them.
TARGETS = {"gradtx_adam": "GradtxAdam", "gradtx_sgd": "GradtxSgd"}

_lock = threading.Lock()
_loaded: bool | None = None


def disabled() -> bool:
    """Whether the user turned the native kernel off with ``GRADTX_DISABLE_NATIVE``."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def cache_dir() -> Path:
    """Where built libraries are kept: ``$GRADTX_CACHE_DIR`` or ``~/.cache/gradtx``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gradtx"


def compiler() -> str | None:
    """The C++ compiler to use: ``$CXX``, else ``g++``, ``c++`` or ``clang++`` on PATH."""
    if os.environ.get("CXX"):
        return os.environ["CXX"]
    for name in ("g++", "c++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _cpu_features() -> str:
    # -march=native code may use any feature of this CPU; a cache shared by
    # machines (a network home directory) must not hand it to another CPU.
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def library_path(cxx: str) -> Path:
    """The cache path of the library built by ``cxx`` for this machine and jaxlib."""
    version = subprocess.run(
        [cxx, "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(FLAGS).encode(),
        cxx.encode(),
        version.encode(),
        jaxlib.__version__.encode(),
        platform.machine().encode(),
        _cpu_features().encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"gradtx_kernel_{key.hexdigest()[:24]}.so"


def _build(cxx: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(descriptor)
    try:
        command = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", temporary]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed with exit code {result.returncode}:\n"
                f"{result.stderr[-2000:]}"
            )
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _build_and_register() -> None:
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    path = library_path(cxx)
    if not path.exists():
        _build(cxx, path)
    library = ctypes.CDLL(str(path))
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(
            target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu"
        )


def load() -> bool:
    """Builds (if needed) and registers the native kernel; returns whether it is usable.

    The outcome is decided once per process; later calls return it at once.
    A failed build is logged once as a warning, never raised.

    Returns:
      True if the ``gradtx_adam`` and ``gradtx_sgd`` FFI targets are registered
      for the CPU platform; False if the kernel is disabled or could not be built.
    """
    global _loaded
    if disabled():
        return False
    with _lock:
        if _loaded is None:
            try:
                _build_and_register()
                _loaded = True
            except Exception as error:  # noqa: BLE001 - any failure means "fall back"
                logger.warning(
                    "gradtx: the native CPU optimizer kernel is unavailable, using the "
                    "plain XLA path (set %s=1 to silence this): %s",
                    DISABLE_ENV,
                    error,
                )
                _loaded = False
        return _loaded
