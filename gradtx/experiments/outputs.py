"""The output folder of a ``gradtx`` command: checked first, written last.

A run must not fail after minutes of training because its folder cannot be
written, and a failed or interrupted run must not leave half a folder behind:
the folder is created (or checked) and proven writable before training, the
results are written to a hidden staging folder inside it and moved into place
at the end, and what the run created is removed if it does not get there.
"""

import datetime
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence

from gradtx.checks import capped


def atomic_write_text(path: pathlib.Path, text: str, errors: str = "strict") -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename: never half written.

    Args:
      path: the file to write.
      text: its content, encoded as UTF-8.
      errors: how unencodable characters are handled (as in ``open``).
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", errors=errors) as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


class OutputFolderError(ValueError):
    """The output folder cannot be used: a file is in the way, or it is not writable."""


class OutputFolder:
    """Where a command writes: checked before training, filled only at the end.

    ``prepare`` creates the folder (or checks an existing one) and proves it
    writable before any training. Results go to a hidden staging folder inside
    it (``staging``) and ``commit`` moves them into place, so a folder the user
    gave is written only once everything is computed. ``discard`` (after a
    failure or an interrupt) removes the staging folder and the folders this
    run created, never a folder that was already there.
    """

    def __init__(self, requested: str | None, command: str) -> None:
        self.requested = requested
        self.command = command
        self.path: pathlib.Path | None = None
        self.names: tuple[str, ...] = ()
        self._created: list[pathlib.Path] = []  # outermost first; the last is the run folder
        self._staging: pathlib.Path | None = None
        self._committed = False

    def prepare(self, names: Sequence[str]) -> pathlib.Path:
        """Creates the folder (or checks the existing one) and checks it is writable.

        Args:
          names: the files the command will write there.

        Returns:
          The folder.

        Raises:
          OutputFolderError: if it is a file, cannot be created or is not writable, or
            one of ``names`` is a folder there.
        """
        path = pathlib.Path(self.requested) if self.requested else self._default_path()
        where = f"--out {capped(str(path))}" if self.requested else f"output folder {path}"
        try:
            if path.exists() and not path.is_dir():
                raise OutputFolderError(f"{where}: exists and is not a folder")
            self._make(path)
        except OSError as error:
            raise OutputFolderError(
                f"{where}: cannot create it: {error.strerror or error}"
            ) from None
        try:
            handle, probe = tempfile.mkstemp(dir=path, prefix=".gradtx-write-test-")
            os.close(handle)
            os.unlink(probe)
        except OSError as error:
            raise OutputFolderError(
                f"{where}: cannot write there: {error.strerror or error}"
            ) from None
        for name in names:
            if (path / name).is_dir():
                raise OutputFolderError(
                    f"{where}: {name} is a folder there, so it cannot be written"
                )
        self.path, self.names = path, tuple(names)
        return path

    def _default_path(self) -> pathlib.Path:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = pathlib.Path("runs") / f"{stamp}-{self.command}"
        number = 2
        while path.exists():  # another run started in the same second
            path = pathlib.Path("runs") / f"{stamp}-{self.command}-{number}"
            number += 1
        return path

    def _make(self, path: pathlib.Path) -> None:
        missing = []
        while not path.exists() and path.parent != path:
            missing.append(path)
            path = path.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                if folder.is_dir():  # made meanwhile by someone else: not ours to remove
                    continue
                raise
            self._created.append(folder)

    def staging(self) -> pathlib.Path:
        """A new hidden folder inside the output folder to write the results to."""
        if self.path is None:
            raise RuntimeError("OutputFolder.prepare must be called first")
        self._staging = pathlib.Path(tempfile.mkdtemp(dir=self.path, prefix=".gradtx-partial-"))
        return self._staging

    def commit(self) -> list[pathlib.Path]:
        """Moves the staged files into the output folder; returns their paths."""
        if self.path is None or self._staging is None:
            raise RuntimeError("OutputFolder.staging must be called first")
        written = []
        for name in self.names:
            os.replace(self._staging / name, self.path / name)
            written.append(self.path / name)
        self._staging.rmdir()
        self._staging, self._committed = None, True
        return written

    def discard(self) -> None:
        """Removes what this run wrote and the folders it created (unless committed)."""
        if self._committed:
            return
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._created:
            shutil.rmtree(self._created[-1], ignore_errors=True)
            for folder in reversed(self._created[:-1]):
                try:
                    folder.rmdir()
                except OSError:  # not empty: other runs live there
                    break
            self._created = []
