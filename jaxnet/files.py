"""Files that appear whole or not at all: every output of jaxnet is written here."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, IO


def _default_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the process umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[IO[bytes]], object], durable: bool = False,
                 previous: Path | None = None) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it.

    The file gets the permissions a plainly created file would get (mkstemp's
    temporary files are private, 0o600); on any failure the temporary file is
    removed and nothing appears under ``path``. ``durable``: the file is synced
    before the rename, and the folder after it, so a power cut leaves the old or
    the new file. ``previous``: the file already at ``path`` is first renamed
    there, so that one complete file exists at every moment. An ``OSError`` (a full
    disk, a read-only folder) is raised with ``path`` as its file name, whichever
    temporary file it happened on.
    """
    path = Path(path)
    try:
        _write_and_rename(path, write, durable, previous)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
    if durable:
        with contextlib.suppress(OSError):  # where the OS allows syncing a folder
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _write_and_rename(path: Path, write: Callable, durable: bool, previous: Path | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
