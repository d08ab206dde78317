"""The native kernel cache: only a library gradtx built itself is ever loaded.

A truncated library used to kill every process that took the native path with
SIGBUS, and a library planted under the cache's name had its constructor run.
Whatever loads a library runs in a subprocess here, so a crash is a failing
return code and not a dead pytest.

The real kernel is compiled once per test run (xdist workers share it). Every
other "build" is done by a stand-in compiler that copies that library to its
``-o`` argument (and logs the call), so rebuilds are instant and countable, and
what gets loaded is the genuine kernel.
"""

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from gradtx.checks import capped
from gradtx.fused import build

fcntl = pytest.importorskip("fcntl", reason="the cache's checks and lock are POSIX ones")

TIMEOUT = 120

# Writes a marker file when loaded: proof that a planted library's code ran.
PLANTED_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
  const char *marker = getenv("GRADTX_TEST_MARKER");
  FILE *file = marker ? fopen(marker, "w") : NULL;
  if (file) { fputs("the planted constructor ran\n", file); fclose(file); }
}
int GradtxAdam = 0, GradtxSgd = 0;
"""

# The stand-in compiler: answers --version, logs each build, optionally waits
# for a gate file (capped at 60 s), then copies the genuine kernel.
FAKE_CXX = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "gradtx-test-cxx 1"; exit 0; fi
while [ "$#" -gt 0 ]; do
  if [ "$1" = "-o" ]; then out="$2"; fi
  shift
done
echo "$out" >> "${{GRADTX_TEST_BUILD_LOG:-/dev/null}}"
if [ -n "$GRADTX_TEST_BUILD_GATE" ]; then
  i=0
  while [ ! -e "$GRADTX_TEST_BUILD_GATE" ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i+1)); done
fi
exec cp "{genuine}" "$out"
"""

LOADER = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.WARNING, format="WARNING %(message)s")
    import jax, jax.numpy as jnp, numpy as np
    import gradtx
    from gradtx.fused import build
    print("ready", flush=True)
    loaded = [build.load() for _ in range(3)]
    print("loaded", *loaded, flush=True)
    if loaded[0] and "--step" in sys.argv:
        # params + grads: the probe kernel's own step, which the stand-in
        # compiler's library holds (any other step would need its own build).
        tx = gradtx.identity()
        params = {"w": jnp.linspace(-1.0, 1.0, 4096)}
        grads = {"w": jnp.cos(3.0 * params["w"])}
        state = tx.init(params)

        def plain(tx, params, state, grads):
            updates, state = tx.update(grads, state, params)
            return gradtx.apply_updates(params, updates), state

        step = jax.jit(gradtx.fused_apply)
        assert "GradtxStep_" in step.lower(tx, params, state, grads).as_text()
        fused, expected = step(tx, params, state, grads), jax.jit(plain)(tx, params, state, grads)
        for actual, wanted in zip(jax.tree.leaves(fused), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(np.asarray(actual), np.asarray(wanted))
        print("fused step matches the plain step", flush=True)
    """
)


class Kernel(NamedTuple):
    cxx: str  # the stand-in compiler
    name: str  # the cache file name for it
    genuine: Path  # the real kernel, built once
    planted: Path  # a library whose constructor writes $GRADTX_TEST_MARKER


def shared_build(tmp_path_factory, cxx):
    """The kernel compiled by ``cxx``, once per test run even across xdist workers."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's directory, which all workers share
    genuine = base / f"genuine-{build.library_path(cxx).name}"
    with open(base / "genuine.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not genuine.exists():
            build._build(cxx, genuine)
    return genuine


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    real_cxx = build.compiler()
    if real_cxx is None or shutil.which(real_cxx) is None:
        pytest.skip("no C++ compiler to build the kernel with (CI has g++)")
    base = tmp_path_factory.mktemp("kernel")
    genuine = shared_build(tmp_path_factory, real_cxx)
    source = base / "planted.c"
    source.write_text(PLANTED_SOURCE)
    planted = base / "planted.so"
    subprocess.run(
        [real_cxx, "-x", "c", "-shared", "-fPIC", str(source), "-o", str(planted)],
        check=True,
        timeout=TIMEOUT,
    )
    # The marker must really appear when the planted library is loaded, or its
    # absence below would prove nothing.
    marker = base / "marker"
    subprocess.run(
        [sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", str(planted)],
        env=dict(os.environ, GRADTX_TEST_MARKER=str(marker)),
        check=True,
        timeout=TIMEOUT,
    )
    assert marker.read_text() == "the planted constructor ran\n"
    cxx = base / "fake-cxx"
    cxx.write_text(FAKE_CXX.format(genuine=genuine))
    cxx.chmod(0o700)
    return Kernel(str(cxx), build.library_path(str(cxx)).name, genuine, planted)


def cached(kernel, directory):
    """A private cache directory holding a verified kernel; returns the library's path."""
    directory.mkdir(mode=0o700, parents=True)
    library = directory / kernel.name
    build._build(kernel.cxx, library)
    assert build._verification_problem(library) is None
    return library


def plant(kernel, library, forge_digest):
    shutil.copyfile(kernel.planted, library)
    digest = build.digest_path(library)
    if forge_digest:
        forged = hashlib.sha256(library.read_bytes()).hexdigest()
        digest.write_text(f"{forged}  {library.name}\n")
    else:
        digest.unlink()


def start_loader(kernel, cache, tmp_path, *args, **env_overrides):
    """Starts ``LOADER`` in a subprocess with the cache at ``cache``."""
    (tmp_path / "tmp").mkdir(mode=0o700, exist_ok=True)
    env = dict(
        os.environ,
        CXX=kernel.cxx,
        GRADTX_CACHE_DIR=str(cache),
        GRADTX_TEST_BUILD_LOG=str(tmp_path / "builds.log"),
        GRADTX_TEST_MARKER=str(tmp_path / "marker"),
        TMPDIR=str(tmp_path / "tmp"),
        JAX_PLATFORMS="cpu",
        **env_overrides,
    )
    env.pop(build.DISABLE_ENV, None)
    return subprocess.Popen(
        [sys.executable, "-c", LOADER, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process):
    """Waits for ``process``; returns (returncode, stdout, stderr)."""
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, stdout, stderr


def warnings_in(stderr):
    return [line for line in stderr.splitlines() if line.startswith("WARNING")]


def builds(tmp_path):
    log = tmp_path / "builds.log"
    return log.read_text().splitlines() if log.exists() else []


# ---------------------------------------------------------------------------
# End to end, in subprocesses.


def test_a_truncated_library_is_rebuilt_once_with_one_warning(kernel, tmp_path):
    library = cached(kernel, tmp_path / "cache")
    os.truncate(library, 20_000)  # what a power cut before the rename left
    returncode, stdout, stderr = finished(start_loader(kernel, library.parent, tmp_path, "--step"))
    assert returncode == 0, stderr  # before: -7 (SIGBUS) on every run
    assert "loaded True True True" in stdout
    assert "fused step matches the plain step" in stdout
    # One warning for three load() calls and two traces.
    assert warnings_in(stderr) == [
        f"WARNING gradtx: rebuilding the native kernel {library}: its SHA-256 does not match "
        "the one recorded when it was built (it is 20000 bytes long: truncated or overwritten)"
    ]
    assert len(builds(tmp_path)) == 1
    assert library.read_bytes() == kernel.genuine.read_bytes()
    assert build._verification_problem(library) is None


@pytest.mark.parametrize(
    ("forge_digest", "reason"),
    [
        (False, "its digest file {name}.sha256 is missing"),
        (True, "it cannot be trusted: group or others may write it (mode 666)"),
    ],
    ids=["without_digest", "forged_digest_writable_library"],
)
def test_a_planted_library_never_runs(kernel, tmp_path, forge_digest, reason):
    library = cached(kernel, tmp_path / "cache")
    plant(kernel, library, forge_digest)
    if forge_digest:
        # A digest that matches: only the mode tells this file from gradtx's own.
        library.chmod(0o666)
    returncode, stdout, stderr = finished(start_loader(kernel, library.parent, tmp_path))
    assert returncode == 0, stderr
    assert not (tmp_path / "marker").exists()  # before: the constructor ran
    assert warnings_in(stderr) == [
        f"WARNING gradtx: rebuilding the native kernel {library}: "
        + reason.format(name=library.name)
    ]
    assert "loaded True True True" in stdout
    assert library.read_bytes() == kernel.genuine.read_bytes()


def test_a_writable_cache_directory_is_not_loaded_from(kernel, tmp_path):
    library = cached(kernel, tmp_path / "cache")
    plant(kernel, library, forge_digest=True)  # digest, owner and file mode all pass
    library.parent.chmod(0o777)
    returncode, stdout, stderr = finished(start_loader(kernel, library.parent, tmp_path))
    assert returncode == 0, stderr
    assert not (tmp_path / "marker").exists()
    (warning,) = warnings_in(stderr)
    assert warning.startswith(
        f"WARNING gradtx: not using the native kernel cache {library.parent} because group "
        f"or others may write it (mode 777); building the kernel in {tmp_path / 'tmp'}"
    )
    assert "loaded True True True" in stdout  # built in a private temporary directory
    assert builds(tmp_path)[0].startswith(str(tmp_path / "tmp" / "gradtx-kernel-"))
    # The untrusted directory is left alone and the temporary one removed at exit.
    assert library.read_bytes() == kernel.planted.read_bytes()
    assert os.listdir(tmp_path / "tmp") == []


def test_concurrent_first_uses_build_once_into_a_private_directory(kernel, tmp_path):
    cache = tmp_path / "new" / "cache"
    gate = tmp_path / "gate"
    processes = [
        start_loader(kernel, cache, tmp_path, GRADTX_TEST_BUILD_GATE=str(gate)) for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout.readline() == "ready\n"
        deadline = time.monotonic() + TIMEOUT
        while not builds(tmp_path):  # one of them is building, holding the lock
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # the other now waits for the lock (unlocked, it would build too)
    finally:
        gate.touch()
    for returncode, stdout, stderr in map(finished, processes):
        assert returncode == 0, stderr
        assert "loaded True True True" in stdout
        assert warnings_in(stderr) == []
    assert len(builds(tmp_path)) == 1
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert build._verification_problem(cache / kernel.name) is None


# ---------------------------------------------------------------------------
# In process: what is refused and why (nothing here loads a library).


def _truncate(library):
    os.truncate(library, 20_000)


def _symlink(library):
    copy = library.with_name("elsewhere.so")
    library.rename(copy)
    library.symlink_to(copy)


def _directory(library):
    library.unlink()
    library.mkdir()


def _fifo(library):
    library.unlink()
    os.mkfifo(library, 0o600)


CORRUPTIONS = {
    "truncated": (_truncate, "its SHA-256 does not match the one recorded when it was built"),
    "missing_digest": (
        lambda library: build.digest_path(library).unlink(),
        "its digest file gradtx_kernel_",
    ),
    "malformed_digest": (
        lambda library: build.digest_path(library).write_text("0" * 64 + "\n"),
        "its digest file cannot be trusted: gradtx_kernel_",
    ),
    "digest_of_another_name": (
        lambda library: build.digest_path(library).write_text(
            build.digest_path(library).read_text().replace("gradtx_kernel_", "other_")
        ),
        "is not a SHA-256 line for gradtx_kernel_",
    ),
    "oversized_digest": (
        lambda library: build.digest_path(library).write_text("0" * 5000),
        "its digest file cannot be trusted: it is longer than 1024 bytes",
    ),
    "group_writable_library": (
        lambda library: library.chmod(0o620),
        "it cannot be trusted: group or others may write it (mode 620)",
    ),
    "world_writable_digest": (
        lambda library: build.digest_path(library).chmod(0o602),
        "its digest file cannot be trusted: group or others may write it (mode 602)",
    ),
    "symbolic_link": (_symlink, "it cannot be trusted: it is a symbolic link"),
    "a_directory": (_directory, "it cannot be trusted: it is not a regular file"),
    "a_fifo": (_fifo, "it cannot be trusted: it is not a regular file"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_verification_names_what_is_wrong(kernel, tmp_path, name):
    library = cached(kernel, tmp_path / "cache")
    corrupt, reason = CORRUPTIONS[name]
    corrupt(library)
    assert reason in build._verification_problem(library)


def test_a_library_of_another_user_is_refused(kernel, tmp_path, monkeypatch):
    library = cached(kernel, tmp_path / "cache")
    monkeypatch.setattr(os, "geteuid", lambda: library.stat().st_uid + 1)
    assert build._verification_problem(library) == (
        f"it cannot be trusted: it is owned by uid {library.stat().st_uid}, not by this user "
        f"(uid {library.stat().st_uid + 1})"
    )


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Points tempfile at an empty directory and records atexit cleanups."""
    directory = tmp_path / "tmp"
    directory.mkdir(mode=0o700)
    monkeypatch.setattr(build.tempfile, "tempdir", str(directory))
    cleanups = []
    monkeypatch.setattr(build.atexit, "register", lambda *args, **kw: cleanups.append(args))
    return directory, cleanups


def test_the_cache_directory_is_created_private(tmp_path, monkeypatch, caplog, private_tmp):
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path / "a" / "b"))
    assert build._private_directory() == tmp_path / "a" / "b"
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert caplog.records == []
    assert private_tmp[1] == []


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("world_writable", "group or others may write it (mode 777)"),
        ("group_writable", "group or others may write it (mode 770)"),
        ("another_owner", "it is owned by uid {uid}, not by this user (uid {other})"),
        ("a_file", "it cannot be created (File exists)"),
    ],
)
def test_an_unsafe_cache_directory_gives_a_private_temporary_one(
    tmp_path, monkeypatch, caplog, private_tmp, kind, reason
):
    cache = tmp_path / "cache"
    if kind == "a_file":
        cache.write_text("")
    else:
        cache.mkdir()
        cache.chmod({"world_writable": 0o777, "group_writable": 0o770}.get(kind, 0o700))
    uid = os.geteuid()
    if kind == "another_owner":
        monkeypatch.setattr(os, "geteuid", lambda: uid + 1)
    monkeypatch.setenv(build.CACHE_ENV, str(cache))
    directory = build._private_directory()
    temporary, cleanups = private_tmp
    assert directory.parent == temporary and directory.name.startswith("gradtx-kernel-")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert cleanups == [(shutil.rmtree, directory)]
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(
        f"gradtx: not using the native kernel cache {cache} because "
        + reason.format(uid=uid, other=uid + 1)
    )


def test_no_temporary_directory_either_is_an_error_naming_both(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv(build.CACHE_ENV, str(cache))

    def no_space(**kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build.tempfile, "mkdtemp", no_space)
    with pytest.raises(RuntimeError) as raised:
        build._private_directory()
    assert str(raised.value) == (
        f"the kernel cache {cache} is not used because group or others may write it "
        "(mode 777), and no private temporary directory could be made: "
        "[Errno 28] No space left on device"
    )


def test_long_paths_are_capped_in_messages(tmp_path, monkeypatch, caplog, private_tmp):
    cache = tmp_path / ("d" * 250)
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv(build.CACHE_ENV, str(cache))
    build._private_directory()
    (record,) = caplog.records
    assert capped(str(cache)) + " because" in record.getMessage()
    assert str(cache) not in record.getMessage()


def test_build_fsyncs_each_file_before_its_rename_and_the_directory_after(
    kernel, tmp_path, monkeypatch
):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.fstat(descriptor).st_ino))
        real_fsync(descriptor)

    def replace(source, destination):
        events.append(("replace", Path(destination).name))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    library = cached(kernel, tmp_path / "cache")
    digest = build.digest_path(library)
    # A rename keeps the inode, so the inodes now in place are the ones synced.
    assert events == [
        ("fsync", library.stat().st_ino),
        ("fsync", digest.stat().st_ino),
        ("replace", library.name),
        ("replace", digest.name),
        ("fsync", library.parent.stat().st_ino),
    ]
    assert stat.S_IMODE(library.stat().st_mode) == 0o700
    assert sorted(os.listdir(library.parent)) == [library.name, digest.name]
    assert digest.read_text() == (
        f"{hashlib.sha256(library.read_bytes()).hexdigest()}  {library.name}\n"
    )
