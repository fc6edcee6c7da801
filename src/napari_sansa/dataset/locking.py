"""One run at a time per output folder: a lock held for the length of a run.

The lock is ``<out>/.napari-sansa/lock``, held with an operating-system file lock
(``fcntl.flock``; ``msvcrt.locking`` on Windows) and holding the process id, the host
and the start time of the run that holds it, for the message a second run gets. The
operating system releases the lock of a process that dies (a kill, a crash), so a
stale lock file left behind is taken over by the next run. Creating it is also the
first write into ``--out``: a folder that cannot be written is reported before any
model is loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.jsonfile import read_json

LOCK_FILE = Path(".napari-sansa") / "lock"


class OutputLockedError(InvalidInputError):
    """Another run is writing into the same output folder."""


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _holder(path: Path) -> str:
    try:
        info = read_json(path) if path.stat().st_size else {}
        return (
            f"process {int(info['pid'])} on {str(info['host'])[:200]}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info['started']))}"
        )
    except (OSError, ValueError, KeyError, TypeError, OverflowError):  # a lock of another
        # program, or damaged: the message still says that the folder is in use
        return "another process"


def cannot_write(out: Path, exc: OSError) -> InvalidInputError:
    reason = exc.strerror or type(exc).__name__
    return InvalidInputError(
        f"cannot write into the output folder {out} ({reason}): choose an --out you can "
        "write to (a folder on a disk with free space, with write permission)"
    )


class OutputLock:
    """Hold the lock of ``out`` (a context manager); :class:`OutputLockedError` if another
    run holds it. ``created``: the folders made for it, removed again on release when
    the run left nothing in them."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self._fd: int | None = None
        self._made: list[Path] = []

    def acquire(self) -> OutputLock:
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._made = missing  # deepest first
            while True:
                fd = _open_lock(self.path)
                if not _try_lock(fd):
                    os.close(fd)
                    raise OutputLockedError(
                        f"another napari-sansa run is writing into {self.out} "
                        f"({_holder(self.path)}): wait until it has finished, or choose another "
                        f"--out. If no such run is going on, the lock {self.path} is not held "
                        "and the next run takes it over"
                    )
                if _same_file(fd, self.path):
                    break
                os.close(fd)  # locked a lock file its last holder removed: take the new one
        except OSError as exc:
            self._remove_empty()
            raise cannot_write(self.out, exc) from None
        except OutputLockedError:
            self._remove_empty()
            raise
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
        except OSError as exc:
            self.release()
            raise cannot_write(self.out, exc) from None
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still held: a waiting run then makes a new one
        os.close(self._fd)  # releases the lock
        self._fd = None
        self._remove_empty()

    def _remove_empty(self) -> None:
        for p in self._made:
            with contextlib.suppress(OSError):
                p.rmdir()  # only if empty: nothing the run wrote is removed
        self._made = []

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
