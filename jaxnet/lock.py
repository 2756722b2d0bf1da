"""One writer per run folder: an exclusive ``flock`` held for the writer's whole life.

A command that writes a folder (a new run, ``--overwrite``, ``--resume``) first
takes the lock on ``FOLDER/.lock``. The kernel releases a ``flock`` when its
process ends, however it ends, so a killed writer never leaves a stale lock:
the file may stay behind, but nobody holds it. A second writer is refused with
the holder's pid, which the holder writes into the file.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

LOCK_NAME = ".lock"


class FolderBusy(ValueError):
    """Another process holds the folder's lock."""


class FolderLock:
    """The exclusive lock of one folder, taken by ``acquire`` and given up by ``release``.

    The folder (and its missing parents) is made when the lock is taken; those
    made here are removed again on release when they are still empty, so a
    command that fails before writing anything leaves no new folder behind.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._made: list[Path] = []

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise ``FolderBusy`` naming the holder's pid (OSError when the
        folder cannot be made or written)."""
        self._made = [p for p in reversed([self.folder, *self.folder.parents]) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                self._remove_made()
                who = f"process {holder}" if holder else "another process"
                raise FolderBusy(f"{self.folder} is being written by {who} (it holds "
                                 f"{self.path}); wait for it to end, or give another folder"
                                 ) from None
            # The holder before us may have removed the file between our open and our
            # lock: then we hold a lock on a file nobody else can see, and try again.
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file, then let go of the lock (in that order, so the next
        writer never locks a file that is about to disappear)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
        self._remove_made()

    def _remove_made(self) -> None:
        for path in reversed(self._made):
            with contextlib.suppress(OSError):  # not empty: something was written there
                path.rmdir()
        self._made = []

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote into the lock file, or None while it has not yet."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
