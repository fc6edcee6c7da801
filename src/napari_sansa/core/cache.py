"""Image-feature cache: encode each image once, reuse it across classes, prompts and runs.

Entries are keyed by a signature of everything the features depend on: the
image's content (a hash of its pixels, shape and dtype), the intensity rule, the
pre-processing settings, the model's identity (config, image size, checkpoint
fingerprints, precision) and the package version. Any difference is a miss; a
hit is only ever the features of the very same image under the very same model.

Two levels: a bounded least-recently-used store in memory, and an optional folder
on disk (one ``.npz`` file per image, written atomically, bounded by size with the
oldest files removed first). Each disk entry stores its full key and is checked
on reading: a corrupt or foreign file is a miss and is recomputed. A folder that
cannot be written (read-only, full) is reported once and the run goes on
without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import uuid
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

__all__ = ["DiskFeatureCache", "FeatureCache", "array_digest", "tensor_digest"]

log = logging.getLogger("napari_sansa")


def array_digest(arr: np.ndarray) -> str:
    """Content hash of an array (pixels, shape and dtype)."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.blake2b(digest_size=16)
    h.update(str((arr.shape, arr.dtype.str)).encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def tensor_digest(tensor) -> str:
    """Content hash of a torch tensor (values bit for bit, shape and dtype), any device."""
    import torch

    t = tensor.detach().to("cpu").contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


class DiskFeatureCache:
    """Features as ``.npz`` files in ``directory``, at most ``max_bytes`` in total."""

    def __init__(self, directory, max_bytes: int = 10 << 30):
        self.directory = Path(directory).expanduser()
        self.max_bytes = int(max_bytes)
        self.writable = True
        self._lock = threading.Lock()
        self._total: int | None = None

    def _path(self, key: str) -> Path:
        name = hashlib.blake2b(key.encode(), digest_size=20).hexdigest()
        return self.directory / name[:2] / f"{name}.npz"

    def get(self, key: str):
        """``(high0, high1, top, dtype_name)`` numpy arrays, or None (miss, corrupt, foreign)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    log.warning(
                        "feature cache: %s belongs to another image or model; recomputing", path
                    )
                    return None
                out = (z["h0"], z["h1"], z["top"], str(z["dtype"]))
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: removed last
            return out
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is simply recomputed
            log.warning("feature cache: %s is damaged (%s); recomputing", path, exc)
            return None

    def put(self, key: str, arrays, dtype_name: str) -> None:
        if not self.writable:
            return
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    key=np.array(key),
                    dtype=np.array(dtype_name),
                    h0=arrays[0],
                    h1=arrays[1],
                    top=arrays[2],
                )
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.writable = False
            warnings.warn(
                f"the feature cache folder {self.directory} cannot be written "
                f"({exc.strerror or exc}); "
                "going on without the disk cache",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self._account(path.stat().st_size)

    def _account(self, added: int) -> None:
        with self._lock:
            if self._total is None:
                self._total = sum(p.stat().st_size for p in self.directory.rglob("*.npz"))
            else:
                self._total += added
            if self._total <= self.max_bytes:
                return
            files = sorted(self.directory.rglob("*.npz"), key=lambda p: p.stat().st_mtime)
            for p in files:
                if self._total <= self.max_bytes:
                    break
                with contextlib.suppress(OSError):
                    size = p.stat().st_size
                    p.unlink()
                    self._total -= size


class FeatureCache:
    """A bounded least-recently-used cache of image features in memory, optionally
    backed by a :class:`DiskFeatureCache`."""

    def __init__(self, max_bytes: int = 1 << 30, disk: DiskFeatureCache | None = None):
        self.max_bytes = int(max_bytes)
        self.disk = disk
        self._items: OrderedDict[str, object] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 or self.disk is not None

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
            if item is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return item
        if self.disk is not None:
            from napari_sansa.core.engine import Features

            found = self.disk.get(key)
            if found is not None:
                feats = Features.from_numpy(*found)
                self._put_memory(key, feats, feats.nbytes)
                with self._lock:
                    self.hits += 1
                return feats
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, features, nbytes: int) -> None:
        self._put_memory(key, features, nbytes)
        if self.disk is not None:
            self.disk.put(key, *features.to_numpy())

    def _put_memory(self, key: str, features, nbytes: int) -> None:
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
