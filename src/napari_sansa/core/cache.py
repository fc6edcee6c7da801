"""Image-feature cache: encode each image once, reuse it across classes, prompts and runs.

Entries are keyed by a signature of everything the features depend on: the
image's content (a hash of its pixels, shape and dtype), the intensity rule, the
pre-processing settings, the model's identity (config, image size, checkpoint
fingerprints, precision) and the package version. Any difference is a miss; a
hit is only ever the features of the very same image under the very same model.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["FeatureCache", "array_digest"]


def array_digest(arr: np.ndarray) -> str:
    """Content hash of an array (pixels, shape and dtype)."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.blake2b(digest_size=16)
    h.update(str((arr.shape, arr.dtype.str)).encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


class FeatureCache:
    """A bounded least-recently-used cache of image features in memory."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, object] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(self._sizes.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: str, features, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return
            self._items[key] = features
            self._sizes[key] = nbytes
            total = sum(self._sizes.values())
            while total > self.max_bytes and self._items:
                old, _ = self._items.popitem(last=False)
                total -= self._sizes.pop(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._sizes.clear()
