"""One run at a time per output folder: a lock held for the length of a run.

The lock is ``<out>/.napari-sansa/lock``, held with an operating-system file lock
(``fcntl.flock``; ``msvcrt.locking`` on Windows) and holding the process id, the host
and the start time of the run that holds it, for the message a second run gets. The
operating system releases the lock of a process that dies (a kill, a crash), so a
stale lock file left behind is taken over by the next run. Creating it is also the
first write into ``--out``: a folder that cannot be written is reported before any
model is loaded.

Nothing is written, read or removed through a link in ``.napari-sansa/``: a run refuses
(:func:`check_own_folder`) a ``.napari-sansa`` that is a link or not a folder, and a
lock, ``run.json``, ``scores.json``, ``objects.json`` or stack scratch folder there that
is a link or not a regular file (folder); the lock is also opened with ``O_NOFOLLOW``.
The files written in place there, the lock and a stack's scratch arrays, are also refused
when they are hard links (a file with other names, perhaps a user's); ``run.json``,
``scores.json`` and ``objects.json`` are replaced by a rename, which takes the name away
from a hard-linked file without writing into it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import socket
import stat
import time
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError, OptionError, option_flag, output_error

LOCK_FILE = Path(".napari-sansa") / "lock"


class OutputLockedError(OptionError):
    """Another run is writing into the same output folder."""

    @classmethod
    def about(cls, template: str, out) -> OutputLockedError:
        return cls("out", out, template=template, default=option_flag)


OWN_FOLDER = LOCK_FILE.parent
#: what napari-sansa keeps in ``.napari-sansa/`` besides its lock: the run's settings
#: (manifest.RUN_FILE), the SHA-256 of the CSVs it wrote (manifest.CSV_DIGESTS,
#: objects.OBJECTS_DIGESTS)
OWN_FILES = ("run.json", "scores.json", "objects.json")
#: a stack's scratch folder in ``.napari-sansa/`` (stacks._Scratch)
_SCRATCH = re.compile(r"[0-9a-f]{40}")


def _not_ours(path: Path, what: str, kind: str = "file") -> InvalidInputError:
    return output_error(
        f"{path} is a link or not a {kind}: napari-sansa keeps {what} there, and never writes, "
        "reads or removes anything through a link or in place of something else. Remove it "
        "(what a link points to is not touched), or choose another {out}",
        path,
    )


def _a_folder(path: Path, what: str) -> InvalidInputError:
    return output_error(
        f"{path} is a folder, and a folder should not be there: napari-sansa keeps {what} "
        "there, as a file. Move out of it what you want to keep and remove it, or choose "
        "another {out}",
        path,
    )


def _hard_linked(path: Path, what: str, links: int) -> InvalidInputError:
    return output_error(
        f"{path} is a hard link: the file has {links} names, so it is also somewhere else "
        f"(perhaps a file of yours). napari-sansa keeps {what} there and writes into it, "
        "so it never uses a file with other names. Remove it (`rm` removes this name only: "
        "the file stays under its other names), or choose another {out}",
        path,
    )


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(path.lstat().st_mode)
    except OSError:
        return False


def _check_regular(path: Path, what: str, in_place: bool = False) -> None:
    """Refuse ``path`` unless it is absent or a regular file (never a link); with
    ``in_place`` (a file written in place, not replaced by a rename) also a hard link."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise _a_folder(path, what)
    if not stat.S_ISREG(st.st_mode):
        raise _not_ours(path, what)
    if in_place and st.st_nlink > 1:
        raise _hard_linked(path, what, st.st_nlink)


def check_own_folder(out: Path, contents: bool = True) -> None:
    """Refuse an ``out`` whose ``.napari-sansa`` is a link or not a folder, or (with
    ``contents``) holds a link, or something else than a file, where napari-sansa writes
    its lock, records or stack scratch. Nothing is read, written or removed."""
    folder = Path(out) / OWN_FOLDER
    try:
        mode = folder.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise _not_ours(folder, "its own records of the runs in " + str(out), "folder")
    if not contents:
        return
    _check_regular(folder / LOCK_FILE.name, "the lock of the run writing into the folder", True)
    # written to a temporary and renamed over the old name: a hard link to one of them
    # (a copy of the user's) keeps its bytes, the rename only takes the name away
    for name in OWN_FILES:
        _check_regular(folder / name, f"its {name}")
    for entry in folder.iterdir():
        if not _SCRATCH.fullmatch(entry.name):
            continue
        if _is_link(entry) or not entry.is_dir():
            raise _not_ours(entry, "the scratch files of a stack", "folder")
        for f in entry.iterdir():  # memory-mapped, written in place
            if f.name == "features" and not _is_link(f) and f.is_dir():
                continue  # --follow's feature cache on disk (see stacks.py), its own checks
            _check_regular(f, "a scratch file of a stack", True)


def _open_lock(path: Path) -> int:
    """Open (create) the lock file, never through a link: a link there is refused, and so
    is a hard link (a file with other names, perhaps a user's: the lock is written in
    place), before anything is written into it."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    what = "the lock of the run writing into the folder"
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or _is_link(path):
            raise _not_ours(path, what) from None
        if path.is_dir():
            raise _a_folder(path, what) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _a_folder(path, what) if stat.S_ISDIR(st.st_mode) else _not_ours(path, what)
    if st.st_nlink > 1:
        os.close(fd)
        raise _hard_linked(path, what, st.st_nlink)
    return fd


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


def _holder(fd: int) -> str | None:
    """Who holds the lock, from the record in its file (read from ``fd``, the lock file
    opened without following links): "process PID on HOST, started TIME"; "another
    process" while the holder has not written its record yet (it has just started);
    None when the record cannot be read or is not plausible."""
    try:
        raw = os.pread(fd, 4096, 0)
    except (OSError, AttributeError):  # no pread on Windows
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            raw = os.read(fd, 4096)
        except OSError:
            return None
    if not raw.strip():
        return "another process"
    try:
        info = json.loads(raw.decode("utf-8"))
        pid, host, started = info["pid"], info["host"], info["started"]
        plausible = (
            type(pid) is int
            and 0 < pid < 2**31
            and isinstance(host, str)
            and 0 < len(host) <= 255
            and host.isprintable()
            and type(started) in (int, float)
            and math.isfinite(started)
            and 0 <= started <= time.time() + 86400
        )
        if not plausible:
            return None
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
    except (ValueError, KeyError, TypeError, OverflowError, OSError, RecursionError):
        return None
    return f"process {pid} on {host}, started {when}"


def cannot_write(out: Path, exc: OSError) -> InvalidInputError:
    reason = exc.strerror or type(exc).__name__
    return output_error(
        f"cannot write into the output folder {out} ({reason}): choose an {{out}} you can "
        "write to (a folder on a disk with free space, with write permission)",
        out,
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

    def _locked_error(self, fd: int) -> OutputLockedError:
        holder = _holder(fd)
        if holder is None:
            return OutputLockedError.about(
                f"{self.out} is locked by a run that cannot be identified: its lock "
                f"{self.path} is held, but what it records of the run (process, host, start "
                "time) is unreadable. Wait until that run has finished, or choose another "
                "{out}. The lock is held by a process that has that file open (`fuser "
                f"{self.path}` names it); once it ends, the next run takes the lock over",
                self.out,
            )
        return OutputLockedError.about(
            f"another napari-sansa run is writing into {self.out} ({holder}): its lock "
            f"{self.path} is held. Wait until it has finished, or choose another {{out}}. "
            "The lock is released when that process ends (also when it is killed or "
            "crashes), and the next run then takes it over: if that run should not be going "
            f"on, find the process that has the lock open (`fuser {self.path}` on its host) "
            "and end it",
            self.out,
        )

    def acquire(self) -> OutputLock:
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        try:
            check_own_folder(self.out, contents=False)  # never made or written through a link
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._made = missing  # deepest first
            while True:
                fd = _open_lock(self.path)
                if not _try_lock(fd):
                    error = self._locked_error(fd)
                    os.close(fd)
                    raise error
                if _same_file(fd, self.path):
                    break
                os.close(fd)  # locked a lock file its last holder removed: take the new one
        except OSError as exc:
            self._remove_empty()
            raise cannot_write(self.out, exc) from None
        except InvalidInputError:
            self._remove_empty()
            raise
        self._fd = fd
        try:
            check_own_folder(self.out)  # under the lock: no other run changes it now
        except OSError as exc:
            self.release()
            raise cannot_write(self.out, exc) from None
        except InvalidInputError:
            self.release()
            raise
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
