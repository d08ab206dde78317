"""The checkpoint file format: framing, bounded decoding and atomic writes.

A checkpoint file is a short binary header followed by a MessagePack payload::

    magic b"GRADTXCK" | format version (uint32) | payload length (uint64)
    | SHA-256 of the payload (32 bytes) | payload

:mod:`gradtx.checkpoint` decides what the payload holds; this module frames it,
reads it back and writes it safely:

- The SHA-256 checksum catches a truncated or corrupted file before anything
  is decoded from it.
- The payload is MessagePack, never pickle, so loading a file runs no code.
- A crafted file cannot make reading allocate much more than its own size: the
  header's length is compared with the file's, and the payload's structure is
  walked (at most four levels deep, every declared item present) before
  MessagePack builds anything from it.
- A save writes a temporary file next to the target,
  ``.<name>.gradtx-<space>-<pid>-<random>.tmp``, fsyncs it and renames it over
  the target, so a failed or killed save leaves the previous file intact
  (``<pid>``: the writing process; ``<space>``: a hash of the host name and, on
  Linux, the pid namespace, so the processes that can check each other's pids
  share it).
- Each save first deletes what saves killed midway left in its directory: the
  temporary files of that form from this pid space whose process no longer
  runs, and those of any origin not modified for an hour (a save writes at
  least every 64 MiB, so a live one is never that old; a save suspended for an
  hour loses its file and fails, keeping the previous checkpoint). No other
  file is touched.
"""

import hashlib
import os
import pathlib
import re
import secrets
import socket
import struct
import time
from typing import BinaryIO

_MAGIC = b"GRADTXCK"
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ32s")  # magic, format version, payload length, SHA-256
# Payload map > list of arrays > one array's entry > its shape: the format's depth.
_MAX_DEPTH = 4
_TEMPORARY = re.compile(
    r"\..+\.gradtx-(?P<space>[0-9a-f]{8})-(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{16}\.tmp", re.DOTALL
)
# A save writes at most this much per call, so the file of a live save is never
# older than _STALE_AFTER seconds; one that is was left by a dead save.
_WRITE_SIZE = 64 * 2**20
_STALE_AFTER = 3600.0


class CheckpointError(ValueError):
    """A checkpoint (or state dict) cannot be restored into the given run.

    Raised for a file that is not a gradtx checkpoint, is truncated or corrupted,
    was saved with a different optimizer config, or holds a different tree of
    arrays than the run expects. The message names the file (or the state
    dict) and the first difference.
    """


def header(payload: bytes) -> bytes:
    """The header that frames ``payload``: magic, version, length and checksum."""
    return _HEADER.pack(_MAGIC, _FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())


def read_framed(file: BinaryIO, path: pathlib.Path) -> bytes:
    """The payload after the header, read only once its length matches the file's.

    Raises:
      CheckpointError: if the header is not a gradtx one, names another format
        version, or the file is truncated, longer than announced or fails its
        checksum.
    """
    data = file.read(_HEADER.size)
    if len(data) < _HEADER.size:
        if data and not _MAGIC.startswith(data[: len(_MAGIC)]):
            raise CheckpointError(f"{path} is not a gradtx checkpoint (unknown header)")
        raise CheckpointError(
            f"{path} is truncated: {len(data)} bytes, shorter than the {_HEADER.size}-byte header"
        )
    magic, version, length, digest = _HEADER.unpack(data)
    if magic != _MAGIC:
        raise CheckpointError(f"{path} is not a gradtx checkpoint (unknown header)")
    if version != _FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this gradtx reads "
            f"version {_FORMAT_VERSION}"
        )
    # The file's size, not the header, bounds what is read.
    held = os.fstat(file.fileno()).st_size - _HEADER.size
    if held > length:
        raise CheckpointError(
            f"{path} is corrupted: {held - length} unexpected bytes after the payload"
        )
    payload = file.read(length) if held == length else b""
    if len(payload) < length:
        raise CheckpointError(
            f"{path} is truncated: the header announces {length} payload bytes, "
            f"the file holds {len(payload) if held == length else max(held, 0)}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(
            f"{path} is corrupted: the SHA-256 checksum of its payload does not match its header"
        )
    return payload


# MessagePack's type bytes (github.com/msgpack/msgpack/blob/master/spec.md), for
# the walk: the width of a str/bin length, the width of an array/map count with
# the values per counted item, and the size of fixed-width numbers.
_LENGTH_WIDTH = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
_COUNT_WIDTH = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}
_NUMBER_SIZE = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_NUMBER_SIZE |= {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}


def check_structure(payload: bytes) -> None:
    """Walks the MessagePack value in ``payload`` without building it.

    MessagePack reserves a list for the count its header declares before
    reading the items, up to 1024 levels deep; walking first bounds that by
    the payload's size: every declared item must be present, and containers
    nest at most ``_MAX_DEPTH`` deep.

    Raises:
      ValueError: naming the first problem.
    """
    position, end = 0, len(payload)
    pending = [1]  # the values still to read in each open container
    while pending:
        if not pending[-1]:
            pending.pop()
            continue
        pending[-1] -= 1
        if position >= end:
            raise ValueError("it ends inside a value")
        kind = payload[position]
        position += 1
        items = 0
        if 0x80 <= kind <= 0x9F:  # fixmap, fixarray
            items = (kind & 0x0F) * (2 if kind < 0x90 else 1)
        elif 0xA0 <= kind <= 0xBF:  # fixstr
            position += kind & 0x1F
        elif kind in _NUMBER_SIZE:
            position += _NUMBER_SIZE[kind]
        elif kind in _LENGTH_WIDTH:
            width = _LENGTH_WIDTH[kind]
            position += width + int.from_bytes(payload[position : position + width], "big")
        elif kind in _COUNT_WIDTH:
            width, per_item = _COUNT_WIDTH[kind]
            items = per_item * int.from_bytes(payload[position : position + width], "big")
            position += width
        elif not (kind <= 0x7F or kind >= 0xE0 or kind in (0xC0, 0xC2, 0xC3)):
            raise ValueError(f"it holds type byte 0x{kind:02x} (an extension), never written")
        if position > end:
            raise ValueError("it ends inside a value")
        if items:
            if len(pending) > _MAX_DEPTH:
                raise ValueError(f"it nests deeper than the format's {_MAX_DEPTH} levels")
            if items > end - position:
                raise ValueError(f"a list or map declares {items} values, more than its bytes")
            pending.append(items)
    if position != end:
        raise ValueError(f"{end - position} bytes follow its value")


def write_atomically(path: pathlib.Path, *chunks: bytes) -> None:
    """Writes ``chunks`` to ``path`` through a temporary file renamed over it.

    First deletes the temporary files that killed saves left in the directory
    (see the module docstring for which). If writing fails, the temporary file
    is removed and ``path`` keeps its previous content.
    """
    directory = path.parent
    _remove_dead_temporaries(directory)
    # 64 random bits: no other save picks the same name.
    name = f".{path.name[:64]}.gradtx-{_pid_space()}-{os.getpid()}-{secrets.token_hex(8)}.tmp"
    temporary = directory / name
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            for chunk in chunks:
                view = memoryview(chunk)
                for start in range(0, max(len(view), 1), _WRITE_SIZE):
                    file.write(view[start : start + _WRITE_SIZE])
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(directory)


def _remove_dead_temporaries(directory: pathlib.Path) -> None:
    """Deletes the temporary files that killed saves left in ``directory``.

    Only files named like :func:`write_atomically`'s whose writer is gone: it
    was in this pid space and no longer runs, or the file is older than
    ``_STALE_AFTER``. Best effort: a file that cannot be listed or removed
    stays, and the save goes on.
    """
    space, now = _pid_space(), time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            dead = match["space"] == space and not _is_running(int(match["pid"]))
            if dead or now - entry.stat(follow_symlinks=False).st_mtime > _STALE_AFTER:
                os.unlink(entry.path)
        except OSError:
            pass


def _is_running(pid: int) -> bool:
    """Whether process ``pid`` of this pid space runs; True where that is unknown."""
    if pid == os.getpid() or os.name != "posix":
        return True  # on Windows os.kill(pid, 0) would end the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # it runs under another user, or is no pid this system has
    return True


def _pid_space() -> str:
    """A tag of the processes whose pids this one can check: host name and pid namespace."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # Linux; containers have their own
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:8]


def fsync_directory(directory: pathlib.Path) -> None:
    """Makes the rename durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
