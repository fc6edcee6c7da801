"""Atomic file writes: a file is either absent, the old one, or the whole new one.

Every writer in the package (label images, scores, run records, cached features, model
checkpoints, downloads) goes through :func:`atomic_write`: the data goes to a temporary
file in the same folder, is flushed to disk, and replaces the final path with one rename
only when complete. A failure (a full disk, a crash, a kill) never leaves a half-written
file under the final name, and the temporary file is removed.

A temporary is named ``.napari-sansa-tmp.<final name>.<32 hex digits>.partial``: the
package's mark at the start, so that the clean-up of temporaries left by a kill
(:func:`is_temporary`) never takes a user's file for one.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

#: Every temporary file starts with this mark of the package (a user's file does not
#: carry it by accident) and ends with :data:`PARTIAL`; its name also carries a unique
#: token, so a run can tell its own temporaries (see :func:`temporary_path`) from another's.
TEMP_PREFIX = ".napari-sansa-tmp."
PARTIAL = ".partial"
#: the name of a temporary of :func:`temporary_path` (group ``final``: the final name)
TEMPORARY_NAME = re.compile(
    rf"{re.escape(TEMP_PREFIX)}(?P<final>.+)\.[0-9a-f]{{32}}{re.escape(PARTIAL)}\Z", re.DOTALL
)


def temporary_path(final, token: str | None = None) -> Path:
    """A fresh hidden name next to ``final`` (same folder, so the rename is atomic).

    ``token``: 32 lowercase hex digits (``uuid.uuid4().hex``, the default)."""
    final = Path(final)
    token = token or uuid.uuid4().hex
    if not re.fullmatch(r"[0-9a-f]{32}", token):
        raise ValueError(f"a temporary's token is 32 lowercase hex digits, got {token!r}")
    return final.with_name(f"{TEMP_PREFIX}{final.name}.{token}{PARTIAL}")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is the name of a temporary of :func:`temporary_path`."""
    return TEMPORARY_NAME.match(name) is not None


@contextlib.contextmanager
def atomic_write(final, *, token: str | None = None, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``final`` atomically.

    The folder of ``final`` is created if needed. On any exception (``KeyboardInterrupt``
    included) the temporary file is removed and the exception propagates; ``final`` is
    then untouched. ``token`` names the temporary (default: a random one).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final, token)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes_atomic(final, data: bytes) -> Path:
    """Write ``data`` to ``final`` atomically."""
    with atomic_write(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text_atomic(final, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
    return write_bytes_atomic(final, text.encode("utf-8"))
