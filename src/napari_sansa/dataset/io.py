"""Reading images and stacks from disk, writing outputs atomically (no napari, no torch).

TIFF stacks, their axes and channels: :mod:`napari_sansa.dataset.tiffstack`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from napari_sansa.core.atomic import atomic_write
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset.tiffstack import TiffStack, _unreadable

__all__ = [
    "IMAGE_SUFFIXES",
    "TiffStack",
    "open_target",
    "read_frame_image",
    "read_image",
    "read_label_image",
    "read_tiff_description",
    "write_tiff_atomic",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
TIFF_SUFFIXES = {".tif", ".tiff"}
#: the suffix of temporaries of napari-sansa 0.1 (now those of :mod:`napari_sansa.core.atomic`)
LEGACY_PARTIAL = ".napari-sansa-part"


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


def read_frame_image(path, axes=None, channels=None, what: str = "a reference image"):
    """An image file that must hold one frame (a reference's image), as an array: a
    TIFF with channels gives the frame ``channels`` make (see :class:`TiffStack`);
    a TIFF of several frames is refused (say its channel axis with ``axes``)."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return read_image(path)
    with TiffStack(path, axes, channels, axes_tail=True) as stack:
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
        return stack[0]


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


def read_target(path, axes=None, channels=None) -> tuple[str, object]:
    """A target file opened once: ``("image", array)`` for an image (a one-frame TIFF
    included), ``("stack", n_frames)`` for a multi-frame TIFF (read later, by frame).
    ``axes``, ``channels``: a TIFF's, as :class:`TiffStack` takes them."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        with TiffStack(path, axes, channels) as stack:
            if len(stack) > 1:
                return "stack", len(stack)
            return "image", stack[0]
    return "image", read_image(path)


@contextlib.contextmanager
def open_target(path, axes=None, channels=None) -> Iterator[tuple[str, object]]:
    """A target file, open for the ``with`` block: ``("stack", TiffStack)`` for a
    multi-frame TIFF (closed at the end of the block), else ``("image", path)``."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        with TiffStack(path, axes, channels) as stack:
            if len(stack) > 1:
                yield "stack", stack
                return
    yield "image", path


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
