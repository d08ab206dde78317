"""Builds the native CPU kernels at first use and registers them with XLA.

Each kernel is C++ generated from an optimizer step (``codegen.py``) around
the shared ``runtime.h``. It is compiled with the machine's C++ compiler and
``-march=native``, so a library must be built on the machine that runs it: it
is built lazily, once per kind of step, into a per-user cache directory, under
a name derived from everything that could change the binary (the generated
source, the runtime, the flags, the compiler, jaxlib and the CPU's features).

Loading a library runs its code (its constructors run inside ``dlopen``), so
gradtx loads only a library it built itself, from a directory only this user
can write:

- The cache directory is created with mode 0700 (one made by an older gradtx
  may be 0755: readable by others, not writable). A cache directory that is not
  owned by this user, or that group or others may write, is never loaded from:
  gradtx builds into a fresh private temporary directory instead, with one
  warning (that build is redone in every process until the cache is private).
  A library or digest file in the cache that fails the same test is rebuilt.
  Only the directory itself is checked, not its parents.
- Next to each library, ``<library>.sha256`` records the SHA-256 of the bytes
  gradtx built, in ``sha256sum`` format. Before ``dlopen`` the library is hashed
  and compared: a library that does not match (truncated by a crash, overwritten,
  or without its digest file) is rebuilt once, with one warning naming it and why.
- The digest detects corruption, not an attacker: whoever can write the
  directory can write both files. The private directory is the guarantee, which
  is why its owner and mode are checked (on POSIX systems only). A library this
  user planted with a matching digest is loaded: this user can run code anyway.
- The library and its digest are written to temporary files, fsynced, renamed
  into place and the directory fsynced, so neither a concurrent build nor a
  power cut leaves a half-written library under the final name.
- Checking, building and ``dlopen`` happen under an exclusive lock on
  ``<library>.lock``, so gradtx processes never replace a library another is
  loading. The library is loaded by path after it is hashed; someone who could
  swap it in between could write the private directory, that is, is this user.

If there is no compiler, the build fails or ``GRADTX_DISABLE_NATIVE`` is set,
:func:`load` and :func:`register` return False (with one logged warning for
a failure) and :func:`gradtx.fused_apply` takes the plain XLA path.
"""

import atexit
import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import jax
import jaxlib

from gradtx.checkpoint_files import fsync_directory
from gradtx.checks import capped
from gradtx.fused import codegen
from gradtx.fused.lift import Form, Instruction

logger = logging.getLogger("gradtx")

DISABLE_ENV = "GRADTX_DISABLE_NATIVE"
CACHE_ENV = "GRADTX_CACHE_DIR"
RUNTIME = Path(__file__).with_name("runtime.h")
_DIGEST_SUFFIX = ".sha256"

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

# The kernel that load() builds to find out whether kernels can be built here:
# params + grads, in place.
PROBE = Form(
    inputs=2,
    scalars=0,
    scalar_dtypes=(),
    programs=(((Instruction(0, "add", (("in", "0"), ("in", "1")), "float32"),), ("t", "0")),),
    aliases=(0,),
)

# Part of the cache key: libraries of older formats get a new name (and are
# left alone) instead of a warning.
_CACHE_FORMAT = b"3"
# A digest file is one line: 64 hex digits, two spaces, the library's name.
_DIGEST_FILE_LIMIT = 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

_lock = threading.Lock()
_loaded: bool | None = None
_registered: dict[str, bool] = {}


class _UntrustedError(Exception):
    """A file that gradtx must not read as its own; the message says why."""


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


def library_path(cxx: str, form: Form = PROBE) -> Path:
    """The cache path of ``form``'s library built by ``cxx`` for this machine and jaxlib."""
    version = subprocess.run(
        [cxx, "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    key = hashlib.sha256()
    for part in (
        _CACHE_FORMAT,
        codegen.source(form).encode(),
        RUNTIME.read_bytes(),
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


def digest_path(library: Path) -> Path:
    """The file that records the SHA-256 of ``library`` as gradtx built it."""
    return library.with_name(library.name + _DIGEST_SUFFIX)


# ---------------------------------------------------------------------------
# Trust: who may have written a file or directory.


def unsafe_reason(info: os.stat_result) -> str | None:
    """Why a file or directory with status ``info`` must not be trusted, or None.

    Trusted means owned by this (effective) user and writable by nobody else.
    Where there are no POSIX users (Windows) nothing is checked.

    Args:
      info: what ``os.stat`` (or ``os.fstat``) returned for it.

    Returns:
      None if it is private to this user, else the reason, as a phrase.
    """
    if not hasattr(os, "geteuid"):
        return None
    if info.st_uid != os.geteuid():
        return f"it is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"group or others may write it (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _private_directory() -> Path:
    """The cache directory if it is private, else a fresh private temporary one.

    Raises:
      RuntimeError: if the cache directory is unusable and no temporary
        directory can be made either.
    """
    directory = cache_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        reason = unsafe_reason(directory.stat())
    except OSError as error:
        reason = f"it cannot be created ({error.strerror or error})"
    if reason is None:
        return directory
    try:
        fallback = Path(tempfile.mkdtemp(prefix="gradtx-kernel-"))
    except OSError as error:
        raise RuntimeError(
            f"the kernel cache {_shown(directory)} is not used because {reason}, and no private "
            f"temporary directory could be made: {error}"
        ) from error
    atexit.register(shutil.rmtree, fallback, ignore_errors=True)
    logger.warning(
        "gradtx: not using the native kernel cache %s because %s; building the kernel in "
        "%s for this process instead (make the cache private with chmod 700 to keep it, "
        "or set %s to another directory)",
        _shown(directory),
        reason,
        _shown(fallback),
        CACHE_ENV,
    )
    return fallback


def _read_private(path: Path, limit: int = -1) -> bytes:
    """The bytes of ``path``, a regular file (not a link) private to this user.

    Raises:
      FileNotFoundError: if there is no such file.
      _UntrustedError: if it is a link, not a regular file, or not private, or
        longer than ``limit`` bytes.
      OSError: if it cannot be read.
    """
    try:
        # O_NONBLOCK: opening a FIFO planted under the name must not hang.
        descriptor = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link
            raise _UntrustedError("it is a symbolic link") from error
        raise
    try:
        # fstat, not stat: the file checked is the file read.
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise _UntrustedError("it is not a regular file")
        reason = unsafe_reason(info)
        if reason is not None:
            raise _UntrustedError(reason)
        with os.fdopen(descriptor, "rb", closefd=False) as file:
            content = file.read() if limit < 0 else file.read(limit + 1)
    finally:
        os.close(descriptor)
    if 0 <= limit < len(content):
        raise _UntrustedError(f"it is longer than {limit} bytes")
    return content


def _recorded_digest(library: Path) -> str:
    """The SHA-256 recorded for ``library`` when gradtx built it.

    Raises:
      FileNotFoundError, _UntrustedError, OSError: as :func:`_read_private`.
      ValueError: if the digest file is not one ``sha256sum`` line for ``library``.
    """
    content = _read_private(digest_path(library), _DIGEST_FILE_LIMIT)
    digest, separator, name = content.decode("ascii", "replace").partition("  ")
    hex_digits = set("0123456789abcdef")
    if not (
        separator
        and name == library.name + "\n"
        and len(digest) == 64
        and set(digest) <= hex_digits
    ):
        raise ValueError(f"{digest_path(library).name} is not a SHA-256 line for {library.name}")
    return digest


def _verification_problem(library: Path) -> str | None:
    """Why ``library`` must not be loaded, or None if it is the one gradtx built.

    Args:
      library: the path of a cached library.

    Returns:
      None if ``library`` and its digest file are private to this user and the
      library's SHA-256 is the recorded one; else the reason, as a phrase.
    """
    try:
        content = _read_private(library)
    except _UntrustedError as error:
        return f"it cannot be trusted: {error}"
    except OSError as error:
        return f"it cannot be read: {_describe(error)}"
    try:
        expected = _recorded_digest(library)
    except FileNotFoundError:
        return f"its digest file {digest_path(library).name} is missing"
    except (_UntrustedError, OSError, ValueError) as error:
        return f"its digest file cannot be trusted: {_describe(error)}"
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        return (
            f"its SHA-256 does not match the one recorded when it was built (it is "
            f"{len(content)} bytes long: truncated or overwritten)"
        )
    return None


def _shown(path: Path | str) -> str:
    # Paths come from $GRADTX_CACHE_DIR or $TMPDIR: cap them in messages.
    return capped(str(path))


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


# ---------------------------------------------------------------------------
# Building and loading.


def _fsync_path(path: str | Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    # Makes the renames durable. Some filesystems cannot fsync a directory; the
    # files themselves are synced, and a rename lost by a power cut leaves the
    # previous library, which is verified and rebuilt if needed.
    try:
        fsync_directory(directory)
    except OSError:
        pass


def _build(cxx: str, target: Path, form: Form = PROBE) -> None:
    """Compiles ``form``'s kernel into ``target`` and records its digest next to it.

    Both files are written to temporary files in ``target``'s directory,
    fsynced, then renamed into place; the directory is fsynced last.

    Raises:
      RuntimeError: if the compiler fails.
      OSError: if a file cannot be written.
    """
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporaries = []
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
        os.close(descriptor)
        temporaries.append(temporary)
        descriptor, source_file = tempfile.mkstemp(dir=target.parent, suffix=".cc")
        temporaries.append(source_file)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(codegen.source(form))
        command = [
            cxx,
            *FLAGS,
            f"-I{jax.ffi.include_dir()}",
            f"-I{RUNTIME.parent}",
            source_file,
            "-o",
            temporary,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed with exit code {result.returncode}:\n"
                f"{result.stderr[-2000:]}"
            )
        # The linker may recreate the output with the umask's mode (group-writable
        # under umask 002), which the loader would then refuse.
        os.chmod(temporary, 0o700)
        digest = hashlib.sha256(Path(temporary).read_bytes()).hexdigest()
        _fsync_path(temporary)
        descriptor, digest_temporary = tempfile.mkstemp(dir=target.parent, suffix=".sha256.tmp")
        temporaries.append(digest_temporary)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(f"{digest}  {target.name}\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
        os.replace(digest_temporary, digest_path(target))
        _fsync_directory(target.parent)
    finally:
        for path in temporaries:
            if os.path.exists(path):
                os.unlink(path)


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``lock_file`` (where the platform has ``flock``)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent builds still rename atomically
        yield
        return
    descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _verified_library(cxx: str, library: Path, form: Form = PROBE) -> ctypes.CDLL:
    """Loads ``library``, building it first if it is missing or does not verify.

    Raises:
      RuntimeError: if the build fails or even a fresh build does not verify.
      OSError: if a file cannot be written or the library cannot be loaded.
    """
    with _exclusive(library.with_name(library.name + ".lock")):
        if os.path.lexists(library):
            problem = _verification_problem(library)
            if problem is not None:
                logger.warning(
                    "gradtx: rebuilding the native kernel %s: %s", _shown(library), problem
                )
                _build(cxx, library, form)
        else:
            _build(cxx, library, form)
        problem = _verification_problem(library)
        if problem is not None:
            raise RuntimeError(f"the freshly built {_shown(library)} does not verify: {problem}")
        return ctypes.CDLL(str(library))


def _build_and_register(form: Form) -> None:
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    library = _verified_library(cxx, _private_directory() / library_path(cxx, form).name, form)
    name = codegen.symbol(form)
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")


def load() -> bool:
    """Whether kernels can be built and registered here (builds a probe kernel once).

    The outcome is decided once per process; later calls return it at once.
    A failed build is logged once as a warning, never raised. A cached library
    is loaded only after it is verified (see the module's docstring).

    Returns:
      True if the probe kernel's FFI target is registered for the CPU
      platform; False if kernels are disabled or could not be built.
    """
    global _loaded
    if disabled():
        return False
    with _lock:
        if _loaded is None:
            _loaded = _register_locked(PROBE)
        return _loaded


def register(form: Form) -> bool:
    """Builds (if needed) and registers ``form``'s kernel as FFI target ``codegen.symbol(form)``.

    Returns:
      Whether the target is registered; False (after one warning per form) if
      kernels are disabled or the build failed.
    """
    if not load():
        return False
    with _lock:
        return _register_locked(form)


def _register_locked(form: Form) -> bool:
    name = codegen.symbol(form)
    if name not in _registered:
        try:
            _build_and_register(form)
            _registered[name] = True
        except Exception as error:  # noqa: BLE001 - any failure means "fall back"
            logger.warning(
                "gradtx: the native CPU optimizer kernel is unavailable, using the "
                "plain XLA path (set %s=1 to silence this): %s",
                DISABLE_ENV,
                error,
            )
            _registered[name] = False
    return _registered[name]
