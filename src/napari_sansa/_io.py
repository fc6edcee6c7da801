"""Reading images and stacks from disk, writing outputs atomically (no napari, no torch)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from pathlib import Path

import numpy as np

from .core.errors import InvalidInputError

__all__ = [
    "IMAGE_SUFFIXES",
    "TiffStack",
    "atomic_path",
    "open_target",
    "read_image",
    "read_tiff_description",
    "write_tiff_atomic",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
TIFF_SUFFIXES = {".tif", ".tiff"}
PARTIAL = ".napari-sansa-part"


class TiffStack:
    """A multi-page TIFF read lazily, one 2D (or RGB) frame at a time.

    Every axis of the file's first series other than rows, columns and color
    samples counts as a frame axis (T, Z, C, ... flattened in file order).
    """

    def __init__(self, path):
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for bad files
            raise InvalidInputError(f"cannot read {self.path}: {exc}") from None
        self.axes = series.axes
        self.shape = tuple(series.shape)
        self.dtype = series.dtype
        dims = list(zip(self.shape, self.axes, strict=True))
        self.n_frames = int(math.prod(n for n, a in dims if a not in "YXS"))
        self.frame_shape = tuple(n for n, a in dims if a in "YXS")
        self._series = series
        self._by_page = len(series.pages) == self.n_frames
        self._whole = None

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_frames:
            raise IndexError(i)
        try:
            if self._by_page:
                return self._series.pages[i].asarray()
            if self._whole is None:  # frames are not whole pages: read the series once
                self._whole = self._series.asarray().reshape(self.n_frames, *self.frame_shape)
            return self._whole[i]
        except Exception as exc:  # noqa: BLE001
            raise InvalidInputError(f"cannot read frame {i} of {self.path}: {exc}") from None

    def __iter__(self):
        for i in range(self.n_frames):
            yield self[i]

    def close(self) -> None:
        self._tif.close()


def read_image(path) -> np.ndarray:
    """One image file as an array; a clear error for unreadable or truncated files."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist or is not a file")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                data = series.asarray()
                axes = series.axes
            if "S" in axes and axes.index("S") < axes.index("Y"):  # planar RGB: channels last
                data = np.moveaxis(data, axes.index("S"), -1)
        else:
            import imageio.v3 as iio

            data = iio.imread(path)
    except Exception as exc:  # noqa: BLE001 - image readers raise many types for bad files
        raise InvalidInputError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    return data


def open_target(path):
    """A target file: ``("stack", TiffStack)`` for a multi-frame TIFF, else ``("image", path)``."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        stack = TiffStack(path)
        if len(stack) > 1:
            return "stack", stack
        stack.close()
    return "image", path


def atomic_path(final: Path) -> Path:
    """A fresh temporary name next to ``final`` (same folder, so a rename is atomic)."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex}{PARTIAL}")


def write_tiff_atomic(final, pages, shape, dtype, description=None) -> Path:
    """Write a (zlib-compressed) TIFF of ``shape`` at ``final`` from 2D ``pages``.

    ``pages``: an array of ``shape``, or an iterable of 2D arrays in C order (frames
    can be written as they are computed). The data goes to a temporary file in the
    same folder that replaces ``final`` only when complete, so ``final`` is either
    absent, the old file, or the whole new file: a failure (a full disk, a crash,
    a kill) never leaves a half-written ``final`` behind. ``description``: a dict
    stored as JSON in the first page, or a callable returning one once all pages
    are written (for facts known only at the end, such as per-frame scores).
    """
    import tifffile

    final = Path(final)
    shape = tuple(int(n) for n in shape)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(final)
    if isinstance(pages, np.ndarray):
        arr = pages.reshape(-1, *shape[-2:])
        pages = (arr[i] for i in range(arr.shape[0]))
    try:
        with tifffile.TiffWriter(tmp) as tw:
            tw.write(
                (np.ascontiguousarray(p, dtype=dtype) for p in pages),
                shape=shape,
                dtype=dtype,
                photometric="minisblack",
                compression="zlib",
                # a callable's JSON replaces this placeholder once the pages are written
                description=json.dumps(description if isinstance(description, dict) else {})
                if description is not None
                else None,
                metadata=None,
            )
        if callable(description):
            tifffile.tiffcomment(tmp, json.dumps(description()))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return final


def read_tiff_description(path) -> dict | None:
    """The JSON description napari-sansa stored in one of its output TIFFs."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            text = tif.pages[0].description
        return json.loads(text)
    except Exception:  # noqa: BLE001 - a foreign or damaged file simply has none
        return None
