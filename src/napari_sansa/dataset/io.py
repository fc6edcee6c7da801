"""Reading images and stacks from disk, writing outputs atomically (no napari, no torch)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from napari_sansa.core.atomic import atomic_write
from napari_sansa.core.errors import InvalidInputError

__all__ = [
    "IMAGE_SUFFIXES",
    "TiffStack",
    "TiffWindows",
    "lazy_tiff",
    "open_target",
    "read_image",
    "read_label_image",
    "read_tiff_description",
    "write_tiff_atomic",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
TIFF_SUFFIXES = {".tif", ".tiff"}
#: the suffix of temporaries of napari-sansa 0.1 (now those of :mod:`napari_sansa.core.atomic`)
LEGACY_PARTIAL = ".napari-sansa-part"


class TiffStack:
    """A multi-page TIFF read lazily, one 2D (or RGB) frame at a time.

    Every axis of a series other than rows, columns and color samples counts as a
    frame axis (T, Z, C, ... flattened in file order), and color samples come last
    in every frame (planar RGB is reordered). A file of several series (tifffile
    makes one per page when a writer wrote the pages one at a time) is the stack of
    all their frames, in file order; frames of different sizes are refused, never
    dropped. Reduced-resolution copies (thumbnails) are not frames.
    """

    def __init__(self, path):
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for bad files
            raise InvalidInputError(_unreadable(self.path, exc)) from None
        try:
            parts = _frame_series(self._tif, self.path)
        except Exception as exc:  # noqa: BLE001
            self._tif.close()
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(_unreadable(self.path, exc)) from None
        if not parts:
            self._tif.close()
            raise InvalidInputError(f"{self.path} is not a readable image (it holds no image)")
        shapes = list(dict.fromkeys(p.frame_shape for p in parts))
        if len(shapes) > 1:
            self._tif.close()
            sizes = ", ".join("x".join(str(n) for n in s) for s in shapes)
            raise InvalidInputError(
                f"{self.path} holds pages of different sizes ({sizes}): a multi-page TIFF is "
                "read as one stack of equally sized frames; save its pages as separate files "
                "(one image per file) and give those instead"
            )
        self._parts = parts
        self.frame_shape = shapes[0]
        self.dtype = parts[0].dtype
        self.n_frames = sum(p.n for p in parts)
        self.shape = (self.n_frames, *self.frame_shape)

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_frames:
            raise IndexError(i)
        j = i
        for part in self._parts:
            if j < part.n:
                break
            j -= part.n
        try:
            return part.frame(j)
        except Exception as exc:  # noqa: BLE001
            if self.n_frames == 1:
                raise InvalidInputError(_unreadable(self.path, exc)) from None
            raise InvalidInputError(
                f"frame {i} of {self.path} cannot be read ({type(exc).__name__}: {exc}); the "
                "file may be damaged or incomplete"
            ) from None

    def __iter__(self):
        for i in range(self.n_frames):
            yield self[i]

    def close(self) -> None:
        self._tif.close()
        for part in self._parts:
            part.close()

    def __enter__(self) -> TiffStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _SeriesFrames:
    """The frames of one tifffile series: frame axes first, then rows, columns, samples.

    A frame is read on its own: from its page when every frame is a page, else from a
    read-only memory map of the file when the series is stored contiguous and
    uncompressed (ImageJ hyperstacks, volumes in one page). Only a compressed series
    whose pages each hold several frames is decoded whole, once (its pages are not
    divisible into frames).
    """

    def __init__(self, series, path: Path, index: int):
        axes, shape = series.axes, tuple(int(n) for n in series.shape)
        if "Y" not in axes or "X" not in axes:
            raise ValueError(f"a series of axes {axes!r} has no rows and columns")
        self.series = series
        self.path, self.index = path, index
        self.dtype = series.dtype
        self.frame_axes = [k for k, a in enumerate(axes) if a not in "YXS"]
        image_axes = [axes.index(a) for a in "YXS" if a in axes]
        self.order = self.frame_axes + image_axes
        # the image axes as they remain after indexing the frame axes, put in YXS order
        remaining = sorted(image_axes)
        self.image_order = [remaining.index(k) for k in image_axes]
        self.shape = shape
        self.frame_shape = tuple(shape[k] for k in image_axes)
        self.n = int(math.prod(shape[k] for k in self.frame_axes))
        self.by_page = len(series.pages) == self.n
        self._map = None
        self._whole = None

    def frame(self, j: int) -> np.ndarray:
        if self.by_page:
            page = self.series.pages[j]
            arr = page.asarray()
            pax = getattr(page, "axes", "")
            planar = "S" in pax and "Y" in pax and pax.index("S") < pax.index("Y")
            if planar and arr.ndim == len(pax):
                arr = np.moveaxis(arr, pax.index("S"), -1)  # planar RGB: samples last
            return arr.reshape(self.frame_shape)
        if self._map is None and self._whole is None:
            if self.series.dataoffset is not None:  # contiguous, uncompressed
                import tifffile

                self._map = tifffile.memmap(self.path, series=self.index, mode="r")
            else:
                data = np.transpose(self.series.asarray(), self.order)
                self._whole = data.reshape(self.n, *self.frame_shape)
        if self._whole is not None:
            return self._whole[j]
        where = np.unravel_index(j, [self.shape[k] for k in self.frame_axes])
        index = [slice(None)] * len(self.shape)
        for k, i in zip(self.frame_axes, where, strict=True):
            index[k] = int(i)
        return np.array(self._map[tuple(index)].transpose(self.image_order))

    def close(self) -> None:
        self._map = self._whole = None  # a memory map closes with its last reference


def _frame_series(tif, path: Path) -> list[_SeriesFrames]:
    series = list(enumerate(tif.series))
    full = [(i, s) for i, s in series if not getattr(s.keyframe, "is_reduced", False)]
    return [_SeriesFrames(s, path, i) for i, s in (full or series)]


def _unreadable(path: Path, exc: BaseException) -> str:
    """Why ``path`` is not a readable image, in words, from a reader's exception."""
    text = str(exc).strip()
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    if empty:
        reason = "the file is empty, 0 bytes"
    elif "Could not find a backend" in text or "cannot identify image file" in text:
        reason = f"its contents are not {path.suffix.lstrip('.').upper()} image data"
    elif "not a tiff file" in text.lower():
        reason = "its contents are not TIFF image data"
    else:
        first = text.splitlines()[0] if text else ""
        reason = f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
    return (
        f"{path} is not a readable image ({reason}); it may be damaged, incomplete or not an "
        "image: check the file, replace it or remove it from the input"
    )


def read_image(path) -> np.ndarray:
    """One image file as an array; a clear error for unreadable or truncated files.

    A TIFF of several frames gives them stacked on a first axis (frames first, then
    rows, columns and color samples).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist or is not a file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        with TiffStack(path) as stack:
            data = stack[0] if len(stack) == 1 else np.stack(list(stack))
    else:
        try:
            import imageio.v3 as iio

            data = iio.imread(path)
        except Exception as exc:  # noqa: BLE001 - image readers raise many types for bad files
            raise InvalidInputError(_unreadable(path, exc)) from None
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    return data


def read_label_image(path) -> np.ndarray:
    """A label image file as an array of class ids.

    Palette images (PNG/GIF of mode "P", as VOC-style annotation tools save them)
    give their palette indices, not the colors they stand for; everything else is
    read as :func:`read_image` reads it (8- and 16-bit PNGs and TIFFs as they are).
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() not in TIFF_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            im = Image.open(path)
        except (OSError, UnidentifiedImageError):
            im = None  # not an image PIL knows: read_image names the problem below
        if im is not None:
            with im:
                if im.mode in ("P", "PA"):
                    try:  # a palette image that cannot be decoded is reported as it is
                        return np.array(im if im.mode == "P" else im.getchannel(0))
                    except Exception as exc:  # noqa: BLE001 - PIL raises many types
                        raise InvalidInputError(_unreadable(path, exc)) from None
    return read_image(path)


def read_target(path, lazy: bool = False) -> tuple[str, object]:
    """A target file opened once: ``("image", array)`` for an image (a one-frame TIFF
    included), ``("stack", n_frames)`` for a multi-frame TIFF (read later, by frame).

    ``lazy`` (runs by tiles): a one-frame TIFF is not read but opened as an array read
    window by window (:func:`lazy_tiff`); other files are read whole."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        with TiffStack(path) as stack:
            if len(stack) > 1:
                return "stack", len(stack)
            if not lazy:
                return "image", stack[0]
        found = lazy_tiff(path)
        if found is not None:
            return "image", found
        with TiffStack(path) as stack:
            return "image", stack[0]
    return "image", read_image(path)


class TiffWindows:
    """An uncompressed, contiguous one-page TIFF read window by window.

    ``image[rows, cols]`` reads just the rows asked for (``os.pread``: nothing of the
    file is mapped, so the pixels read do not stay in the process's memory) and gives
    the columns asked for, as a new array. ``shape`` and ``dtype`` are the image's.
    """

    def __init__(self, path, offset: int, shape, dtype):
        self.path = Path(path)
        self.offset = int(offset)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self._row = math.prod(self.shape[1:]) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if key and key[-1] is Ellipsis:
            key = key[:-1]
        if len(key) > self.ndim or not all(isinstance(k, slice) for k in key):
            return np.asarray(self)[key]
        rows = range(self.shape[0])[key[0]] if key else range(self.shape[0])
        if rows.step != 1:
            return np.asarray(self)[key]
        n = len(rows)
        data = os.pread(self._fd, n * self._row, self.offset + rows.start * self._row)
        if len(data) != n * self._row:
            raise InvalidInputError(
                f"{self.path} is truncated (rows {rows.start}-{rows.stop} are missing): "
                "check the file, replace it or remove it from the input"
            )
        arr = np.frombuffer(data, self.dtype).reshape(n, *self.shape[1:])
        arr = arr[(slice(None), *key[1:])]
        return arr.astype(self.dtype.newbyteorder("="), copy=True)

    def __array__(self, dtype=None, copy=None):
        arr = self[:]
        return arr if dtype is None else arr.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"TiffWindows({self.path.name}, shape={self.shape}, dtype={self.dtype})"


def lazy_tiff(path):
    """A one-page TIFF as an array read window by window, or None if it cannot be.

    Uncompressed contiguous pixels: a :class:`TiffWindows`. Compressed or tiled
    pixels: a zarr array on tifffile's ``aszarr`` store (each window decodes only the
    strips or tiles it covers), when the ``zarr`` package is installed
    (``pip install napari-sansa[large]``); without it, None (the file is read whole).
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        page = tif.pages[0]
        shape, dtype = tuple(series.shape), np.dtype(series.dtype)
        offset = series.dataoffset
        planar = page.planarconfig
        byteorder = tif.byteorder
    ok = len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 2, 3, 4))
    if not ok:
        return None
    if offset is not None and (len(shape) == 2 or planar == 1):
        return TiffWindows(path, offset, shape, dtype.newbyteorder(byteorder))
    try:
        import zarr
    except ImportError:
        return None
    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    arr = zarr.open(store, mode="r")
    return arr if tuple(arr.shape) == shape else None


@contextlib.contextmanager
def open_target(path) -> Iterator[tuple[str, object]]:
    """A target file, open for the ``with`` block: ``("stack", TiffStack)`` for a
    multi-frame TIFF (closed at the end of the block), else ``("image", path)``."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        with TiffStack(path) as stack:
            if len(stack) > 1:
                yield "stack", stack
                return
    yield "image", path


def write_tiff_atomic(final, pages, shape, dtype, description=None, tile=None) -> Path:
    """Write a (zlib-compressed) TIFF of ``shape`` at ``final`` from 2D ``pages``.

    ``pages``: an array of ``shape``, or an iterable of 2D arrays in C order (frames
    can be written as they are computed). The data goes to a temporary file in the
    same folder that replaces ``final`` only when complete, so ``final`` is either
    absent, the old file, or the whole new file: a failure (a full disk, a crash,
    a kill) never leaves a half-written ``final`` behind. ``description``: a dict
    stored as JSON in the first page, or a callable returning one once all pages
    are written (for facts known only at the end, such as per-frame scores).
    ``tile``: ``(rows, cols)`` of a tiled TIFF, ``pages`` then an iterable of its tiles
    in order (edge tiles padded), so that no page is ever held whole.
    """
    import tifffile

    final = Path(final)
    shape = tuple(int(n) for n in shape)
    if isinstance(pages, np.ndarray):
        arr = pages.reshape(-1, *shape[-2:])
        pages = (arr[i] for i in range(arr.shape[0]))
    with atomic_write(final) as tmp:
        with tifffile.TiffWriter(tmp) as tw:
            tw.write(
                (np.ascontiguousarray(p, dtype=dtype) for p in pages),
                shape=shape,
                dtype=dtype,
                photometric="minisblack",
                compression="zlib",
                tile=tile,
                # a callable's JSON replaces this placeholder once the pages are written
                description=json.dumps(description if isinstance(description, dict) else {})
                if description is not None
                else None,
                metadata=None,
            )
        if callable(description):
            tifffile.tiffcomment(tmp, json.dumps(description()))
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
