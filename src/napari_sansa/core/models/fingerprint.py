"""``file_fingerprint``: a weights file by its content (what a model's identity and the
downloads' checks use; no torch)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_fingerprint"]

_FINGERPRINTS: dict[tuple, str] = {}


def file_fingerprint(path) -> str:
    """SHA-256 of a file's content (memoised per path, size and modification time)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _FINGERPRINTS[key] = h.hexdigest()
    return _FINGERPRINTS[key]
