"""Image-feature cache: encode each image once, reuse it across classes, prompts and runs.

Entries are keyed by a signature of everything the features depend on: the
image's content (a hash of its pixels, shape and dtype), the intensity rule, the
pre-processing settings, the model's identity (config, image size, checkpoint
fingerprints, precision) and the package version. Any difference is a miss; a
hit is only ever the features of the very same image under the very same model.

Two levels: a bounded least-recently-used store in memory, and an optional folder
on disk. On disk the cache keeps to its own subfolder, ``<cache_dir>/napari-sansa-features/``,
and within it to its own entries: ``<2 hex>/<40 hex>.npz`` whose name is the hash of the
key stored inside. Only such entries are counted against ``cache_dir_bytes`` and removed
(oldest first), so any other file in ``cache_dir`` -- a user's own ``.npz`` files
included -- is never read, counted or deleted. Each entry stores its full key and a
checksum of its arrays and is checked on reading (key, checksum, SAM2's layout of
shapes and dtypes, finite values): a damaged, tampered or foreign entry is a miss, is
removed and recomputed. A folder that cannot be written (read-only, full) is reported
once and the run goes on without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from napari_sansa.core.atomic import PARTIAL, TEMP_PREFIX, atomic_write

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


#: The subfolder of ``cache_dir`` that holds the disk cache's entries (and nothing else).
SUBFOLDER = "napari-sansa-features"
_ENTRY = re.compile(r"^[0-9a-f]{40}\.npz$")
_BUCKET = re.compile(r"^[0-9a-f]{2}$")
# a temporary file of an entry (see core.atomic), left behind when a process was killed;
# without the package's mark: one of the versions before it
_PARTIAL = re.compile(
    rf"^(?:{re.escape(TEMP_PREFIX)}|\.)[0-9a-f]{{40}}\.npz\.[0-9a-f]{{32}}{re.escape(PARTIAL)}\Z"
)
# torch dtype names a features entry may carry -> numpy dtype of the stored array
# (bf16 is stored bit for bit as int16)
_STORED = {"torch.float32": "float32", "torch.float16": "float16", "torch.bfloat16": "int16"}


def _entry_sum(key: str, dtype_name: str, arrays) -> str:
    """Checksum of an entry: its key, dtype names and arrays (values, shapes, dtypes)."""
    parts = [key, dtype_name, *(array_digest(a) for a in arrays)]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


def _all_finite(arr: np.ndarray) -> bool:
    if arr.dtype == np.int16:  # bf16 bits: all exponent bits set is inf or NaN
        return not ((arr.view(np.uint16) & 0x7F80) == 0x7F80).any()
    return bool(np.isfinite(arr).all())


def check_entry(arrays, dtype_name: str) -> None:
    """Raise ``ValueError`` unless ``arrays`` are one image's SAM2 features, as encoded.

    SAM2's layout: ``top`` is ``(1, C, h, w)``, the high-resolution levels are
    ``(1, C/8, 4h, 4w)`` and ``(1, C/4, 2h, 2w)``; every value is finite.
    """
    names = dtype_name.split(",")
    if len(names) != 3 or any(n not in _STORED for n in names):
        raise ValueError(f"dtype names {dtype_name!r} are not three of {sorted(_STORED)}")
    for a, n in zip(arrays, names, strict=True):
        if a.dtype != np.dtype(_STORED[n]):
            raise ValueError(f"an array of dtype {a.dtype} is labelled {n}")
    h0, h1, top = arrays
    if any(a.ndim != 4 for a in arrays) or top.shape[0] != 1:
        raise ValueError(f"shapes {[a.shape for a in arrays]} are not 1-image 4-D features")
    _, c, h, w = top.shape
    want = ((1, c // 8, 4 * h, 4 * w), (1, c // 4, 2 * h, 2 * w))
    if c % 8 or (h0.shape, h1.shape) != want:
        raise ValueError(f"shapes {[a.shape for a in arrays]} do not fit SAM2's feature levels")
    if not all(_all_finite(a) for a in arrays):
        raise ValueError("it holds NaN or infinite values")


class DiskFeatureCache:
    """Features as ``.npz`` files in ``directory/napari-sansa-features``, at most
    ``max_bytes`` of entries in total."""

    def __init__(self, directory, max_bytes: int = 10 << 30):
        self.directory = Path(directory).expanduser()
        self.root = self.directory / SUBFOLDER
        self.max_bytes = int(max_bytes)
        self.writable = True
        self._lock = threading.Lock()
        self._known: dict[Path, int] | None = None  # entries counted, with their sizes

    @staticmethod
    def _name(key: str) -> str:
        return hashlib.blake2b(key.encode(), digest_size=20).hexdigest()

    def _path(self, key: str) -> Path:
        name = self._name(key)
        return self.root / name[:2] / f"{name}.npz"

    def get(self, key: str):
        """``(high0, high1, top, dtype_name)`` numpy arrays, or None.

        None for a missing entry and for a bad one (unreadable, truncated, another key,
        arrays that do not match their checksum or SAM2's layout, NaN or infinite
        values); a bad entry is removed, so that the recomputed features replace it.
        """
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            # the file is opened here, not by np.load: np.load leaves its own file open
            # when the zip directory cannot be read (a truncated entry)
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    raise ValueError("it belongs to another image or model")
                arrays = (z["h0"], z["h1"], z["top"])
                dtype_name = str(z["dtype"])
                stored_sum = str(z["sum"])
            if stored_sum != _entry_sum(key, dtype_name, arrays):
                raise ValueError("its arrays do not match their checksum")
            check_entry(arrays, dtype_name)
        except Exception as exc:  # noqa: BLE001 - any bad entry is simply recomputed
            log.warning("feature cache: dropping %s (%s); recomputing", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            with self._lock:
                if self._known is not None:
                    self._known.pop(path, None)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: removed last
        return (*arrays, dtype_name)

    def put(self, key: str, arrays, dtype_name: str) -> None:
        if not self.writable:
            return
        if sum(int(a.nbytes) for a in arrays) > self.max_bytes:
            return  # could never be kept: not written (a disk near full stays so)
        path = self._path(key)
        try:
            with atomic_write(path, fsync=False) as tmp, open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    key=np.array(key),
                    dtype=np.array(dtype_name),
                    sum=np.array(_entry_sum(key, dtype_name, arrays)),
                    h0=arrays[0],
                    h1=arrays[1],
                    top=arrays[2],
                )
        except OSError as exc:
            self.writable = False
            warnings.warn(
                f"the feature cache folder {self.root} cannot be written "
                f"({exc.strerror or exc}); "
                "going on without the disk cache",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self._account(path)

    def _owns(self, path: Path) -> bool:
        """Whether ``path`` is an entry this cache wrote: its name is its stored key's hash."""
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                return self._name(str(z["key"])) == path.stem
        except Exception:  # noqa: BLE001 - not readable as an entry: not ours to touch
            return False

    def _entries(self) -> list[Path]:
        """This cache's entries (files named like one and proven by their stored key)."""
        if not self.root.is_dir():
            return []
        found = []
        for bucket in self.root.iterdir():
            if not (_BUCKET.match(bucket.name) and bucket.is_dir()):
                continue
            for p in bucket.iterdir():
                if _ENTRY.match(p.name) and p.name.startswith(bucket.name) and self._owns(p):
                    found.append(p)
                elif _PARTIAL.match(p.name) and time.time() - _mtime(p) > 86400:
                    with contextlib.suppress(OSError):
                        p.unlink()
        return found

    def _account(self, path: Path) -> None:
        """Count a new entry; remove the least recently used entries beyond ``max_bytes``.

        The folder is scanned once (this cache's entries only); after that the entries
        this object knows of are the ones it counts and removes.
        """
        with self._lock:
            if self._known is None:
                self._known = {p: _size(p) for p in self._entries()}
            self._known[path] = _size(path)
            total = sum(self._known.values())
            if total <= self.max_bytes:
                return
            for p in sorted(self._known, key=_mtime):  # least recently used first
                if total <= self.max_bytes:
                    break
                with contextlib.suppress(OSError):
                    p.unlink()
                total -= self._known.pop(p)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


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
        if self.disk is not None and self.disk.writable:  # read-only: no copy to the CPU
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
