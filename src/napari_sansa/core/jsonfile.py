"""Reading JSON files that came from disk: of bounded size, and their errors as ValueError.

napari-sansa's own records (``run.json``, digests, locks, download records) and the
prompt files a person writes are read through :func:`read_json`, so that a huge file
is refused before it is read into memory, and invalid UTF-8, invalid JSON and nesting
too deep for the parser all raise ``ValueError`` (a ``JSONTooLargeError`` for the size).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["RECORD_BYTES", "JSONTooDeepError", "JSONTooLargeError", "read_json"]

#: the most bytes napari-sansa's own small JSON records may have
RECORD_BYTES = 16 << 20


class JSONTooLargeError(ValueError):
    """A JSON file is larger than its reader allows."""

    def __init__(self, path, size: int, max_bytes: int):
        self.size, self.max_bytes = size, max_bytes
        super().__init__(f"{path} is {size} bytes, more than the {max_bytes} allowed")


class JSONTooDeepError(ValueError):
    """A JSON file's lists or objects are nested too deeply for the parser."""


def read_json(path, max_bytes: int = RECORD_BYTES):
    """The parsed JSON of ``path`` (UTF-8, at most ``max_bytes``).

    ``OSError`` when it cannot be read; ``ValueError`` otherwise: ``JSONTooLargeError``,
    ``UnicodeDecodeError``, ``json.JSONDecodeError``, ``JSONTooDeepError``.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)  # never more, even if the file grows meanwhile
    if len(data) > max_bytes:
        raise JSONTooLargeError(path, max(len(data), _size(path)), max_bytes)
    try:
        return json.loads(data.decode("utf-8-sig"))  # a BOM is allowed
    except RecursionError:
        raise JSONTooDeepError(f"{path} is nested too deeply to be read") from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
