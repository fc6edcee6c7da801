"""Reading images and stacks from disk (no napari, no torch).

TIFF stacks, their axes and channels: :mod:`napari_sansa.dataset.tiffstack`; OME-Zarr
and vendor formats (CZI, ND2, LIF through bioio): :mod:`napari_sansa.dataset.readers`;
writing outputs: :mod:`napari_sansa.dataset.outputs`."""

from __future__ import annotations

import contextlib
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset.readers import VENDOR_SUFFIXES, format_of, open_stack
from napari_sansa.dataset.tiffstack import TiffStack, unreadable_reason

__all__ = [
    "IMAGE_SUFFIXES",
    "TiffStack",
    "TiffWindows",
    "lazy_tiff",
    "not_a_regular_file",
    "open_stack",
    "open_target",
    "read_frame_image",
    "read_image",
    "read_label_image",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
TIFF_SUFFIXES = {".tif", ".tiff"}
#: the file suffixes of targets: images, and vendor files read through bioio; an OME-Zarr
#: image is a folder (``*.zarr``, or one holding Zarr metadata), see :func:`format_of`
READ_SUFFIXES = IMAGE_SUFFIXES | VENDOR_SUFFIXES
#: the suffix of temporaries of napari-sansa 0.1 (now those of :mod:`napari_sansa.core.atomic`)
LEGACY_PARTIAL = ".napari-sansa-part"


def not_a_regular_file(path) -> str | None:
    """Why ``path`` cannot be read as an image file when it is a pipe (FIFO), a socket or
    a device (reading one can wait forever), else None (a regular file, or nothing there)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    for test, kind in kinds:
        if test(mode):
            return (
                f"{path} is {kind}, not a regular file: napari-sansa reads images from files "
                "only; copy the image into a file and give that, or remove it from the input"
            )
    return None


#: the formats (as PIL names them) whose files can be animations; others with several
#: pictures (an MPO: a camera's JPEG with its previews) are read as their first picture
ANIMATED_FORMATS = {"GIF", "PNG", "WEBP"}


def _frame_count(path: Path) -> int:
    """The frames of an animated GIF, PNG (APNG) or WebP as PIL counts them: 1 for a
    still image, an image of another format (an MPO: its first picture is read) or a
    file PIL does not know (its reader then names any problem)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format not in ANIMATED_FORMATS or not getattr(im, "is_animated", False):
                return 1
            return int(getattr(im, "n_frames", 1))
    except Exception:  # noqa: BLE001 - PIL raises many types for files it cannot open
        return 1


def _animated(path: Path, frames: int, one_frame: str | None) -> str:
    """What to do with an animated GIF/PNG/WebP: frames are read from TIFFs only."""
    if one_frame is not None:
        return (
            f"{path} is an animated image of {frames} frames, but {one_frame} is one frame: "
            "save the frame you annotated as an image of its own (PNG or TIFF) and give that"
        )
    return (
        f"{path} is an animated image of {frames} frames; frames are read from TIFF files "
        "only: save them as one multi-page TIFF (e.g. in Fiji: File > Save As > Tiff...) "
        "and give that file, which is labelled as a stack, or save each frame as an image "
        "(PNG) in a folder and give the folder"
    )


def read_image(path, one_frame: str | None = None) -> np.ndarray:
    """One image file as an array; a clear error for unreadable or truncated files.

    A TIFF of several frames gives them stacked on a first axis (frames first, then
    rows, columns and color samples). An animated GIF, PNG or WebP is refused with what
    to do instead (``one_frame``: what the image is for, when it must be one frame).
    """
    path = Path(path)
    kind = format_of(path)
    if kind != "zarr" and not path.is_file():
        raise InvalidInputError(f"{path} does not exist or is not a file")
    if kind != "image":
        with open_stack(path) as stack:
            data = stack[0] if len(stack) == 1 else np.stack(list(stack))
    else:
        frames = _frame_count(path)
        if frames > 1:
            raise InvalidInputError(_animated(path, frames, one_frame))
        try:
            import imageio.v3 as iio

            data = iio.imread(path)
        except Exception as exc:  # noqa: BLE001 - image readers raise many types for bad files
            raise InvalidInputError(unreadable_reason(path, exc)) from None
    data = np.asarray(data)
    if data.ndim in (3, 4) and data.shape[0] == 1:  # (a still GIF has a frame axis of one)
        data = data[0]
    return data


def read_frame_image(
    path, axes=None, channels=None, what: str = "a reference image", lazy: bool = False
):
    """An image file that must hold one frame (a reference's image), as an array: a
    TIFF with channels gives the frame ``channels`` make (see :class:`TiffStack`);
    a TIFF of several frames is refused (say its channel axis with ``axes``).

    ``lazy`` (runs by tiles): a one-frame TIFF without ``axes`` or ``channels`` is
    opened as an array read window by window (:func:`lazy_tiff`), as targets are."""
    path = Path(path)
    kind = format_of(path)
    if kind == "image" or (kind != "zarr" and not path.is_file()):
        return read_image(path, one_frame=what)
    with open_stack(path, axes, channels, axes_tail=True) as stack:
        if len(stack) > 1:
            sizes = ", ".join(
                f"{a} {n}" for a, n in zip(stack.frame_axes, stack.frame_sizes, strict=True)
            )
            hint = ""
            if stack.n_channels is None:
                example = stack.axes.replace(stack.frame_axes[-1], "C", 1)
                hint = (
                    ", or, if those are its channels, name their axis C with --axes (axes= in "
                    f"Python), e.g. --axes {example}"
                )
            raise InvalidInputError(
                f"{path} holds {len(stack)} frames ({sizes}; axes {stack.axes}), but {what} "
                f"is one frame: save that frame alone{hint}"
            )
        if kind != "tiff":  # read window by window, channels and all
            return stack.window(0) if lazy else stack[0]
        if not lazy or axes is not None or channels is not None:
            return stack[0]
    return _lazy_or_whole(path)


def read_label_image(path) -> np.ndarray:
    """A label image file as an array of class ids.

    Palette images (PNG/GIF of mode "P", as VOC-style annotation tools save them)
    give their palette indices, not the colors they stand for; everything else is
    read as :func:`read_image` reads it (8- and 16-bit PNGs and TIFFs as they are).
    """
    path = Path(path)
    if path.is_file() and format_of(path) == "image":
        from PIL import Image, UnidentifiedImageError

        frames = _frame_count(path)
        if frames > 1:
            raise InvalidInputError(
                f"{path} is an animated image of {frames} frames, but a label image is one "
                "frame: save the labels of the frame you annotated alone, as an image of its "
                "own (PNG or TIFF), and give that"
            )

        try:
            im = Image.open(path)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
            im = None  # not an image PIL knows, or too large: read_image names the problem
        if im is not None:
            with im:
                if im.mode in ("P", "PA"):
                    try:  # a palette image that cannot be decoded is reported as it is
                        return np.array(im if im.mode == "P" else im.getchannel(0))
                    except Exception as exc:  # noqa: BLE001 - PIL raises many types
                        raise InvalidInputError(unreadable_reason(path, exc)) from None
    return read_image(path)


def read_target(path, axes=None, channels=None, lazy: bool = False) -> tuple[str, object]:
    """A target file opened once: ``("image", array)`` for an image (a one-frame TIFF,
    OME-Zarr or vendor file included), ``("stack", n_frames)`` for a multi-frame one
    (read later, by frame). ``axes``, ``channels``: as :class:`TiffStack` takes them.

    ``lazy`` (runs by tiles): a one-frame TIFF (without ``axes`` or ``channels``) is not
    read but opened as an array read window by window (:func:`lazy_tiff`), and so is a
    one-frame OME-Zarr or vendor file (its channels made window by window); other files
    are read whole."""
    path = Path(path)
    kind = format_of(path)
    if kind in ("zarr", "vendor"):
        stack = open_stack(path, axes, channels)
        try:
            if len(stack) > 1:
                return "stack", len(stack)
            return "image", stack.window(0) if lazy else stack[0]
        finally:
            if len(stack) > 1 or not lazy:
                stack.close()
    if kind == "tiff" and path.is_file():
        with TiffStack(path, axes, channels) as stack:
            if len(stack) > 1:
                return "stack", len(stack)
            if not lazy or axes is not None or channels is not None:
                return "image", stack[0]
        return "image", _lazy_or_whole(path)
    return "image", read_image(path)


def _lazy_or_whole(path: Path):
    """A one-frame TIFF read window by window (:func:`lazy_tiff`), else read whole."""
    found = lazy_tiff(path)
    if found is not None:
        return found
    with TiffStack(path) as stack:
        return stack[0]


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
def open_target(path, axes=None, channels=None) -> Iterator[tuple[str, object]]:
    """A target file, open for the ``with`` block: ``("stack", stack)`` for a
    multi-frame TIFF, OME-Zarr or vendor file (closed at the end of the block), else
    ``("image", path)``."""
    path = Path(path)
    if format_of(path) != "image":
        with open_stack(path, axes, channels) as stack:
            if len(stack) > 1:
                yield "stack", stack
                return
    yield "image", path
