"""Readers of the formats a run takes, by path (no napari, no torch).

- TIFF: :class:`~napari_sansa.dataset.tiffstack.TiffStack` (tifffile);
- OME-Zarr (a ``*.zarr`` folder, NGFF 0.4 and 0.5):
  :func:`~napari_sansa.dataset.readers.omezarr.open_omezarr` (zarr);
- vendor formats (CZI, ND2, LIF, DV):
  :func:`~napari_sansa.dataset.readers.vendor.open_vendor` (bioio and its plugins);
- PNG, JPEG, BMP, GIF, WebP: read whole (:func:`~napari_sansa.dataset.io.read_image`).

:func:`open_stack` opens any of the first three as a stack of frames with the same
interface (axes, frame axes, channels, frames read one at a time or, for OME-Zarr and
vendor files, window by window); :func:`image_info` says what a file holds: its axes,
shape, channel names and pixel sizes (``{axis letter: micrometres}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from napari_sansa.dataset.readers.omezarr import is_zarr_store
from napari_sansa.dataset.readers.vendor import VENDOR_PLUGINS

__all__ = [
    "VENDOR_SUFFIXES",
    "ImageInfo",
    "check_stores",
    "format_of",
    "image_info",
    "is_zarr_store",
    "open_stack",
]

TIFF_SUFFIXES = {".tif", ".tiff"}
VENDOR_SUFFIXES = set(VENDOR_PLUGINS)


def format_of(path) -> str:
    """ "zarr" (a Zarr store), "vendor" (read through bioio), "tiff", or "image" (any
    other file: read whole by imageio)."""
    path = Path(path)
    if is_zarr_store(path):
        return "zarr"
    suffix = path.suffix.lower()
    if suffix in VENDOR_SUFFIXES:
        return "vendor"
    return "tiff" if suffix in TIFF_SUFFIXES else "image"


def open_stack(path, axes=None, channels=None, *, axes_tail=False):
    """A TIFF, OME-Zarr or vendor file as a stack of frames (close it, or use it in a
    ``with`` block); ``axes``, ``channels``, ``axes_tail`` as for ``TiffStack``."""
    kind = format_of(path)
    if kind == "zarr":
        from napari_sansa.dataset.readers.omezarr import open_omezarr

        return open_omezarr(path, axes, channels, axes_tail=axes_tail)
    if kind == "vendor":
        from napari_sansa.dataset.readers.vendor import open_vendor

        return open_vendor(path, axes, channels, axes_tail=axes_tail)
    from napari_sansa.dataset.tiffstack import TiffStack

    return TiffStack(path, axes, channels, axes_tail=axes_tail)


@dataclass(frozen=True)
class ImageInfo:
    """What an image file holds, from its metadata (no pixel read).

    ``axes``: one letter per axis (T, Z, C, Y, X, S; Q unknown); ``shape``; ``format``;
    ``channel_names`` (of the C axis, or None); ``pixel_sizes``: ``{axis letter: size in
    micrometres}`` of the axes whose size the file records (e.g. ``{"Z": 2.0, "Y": 0.5,
    "X": 0.5}``; {} when it records none)."""

    path: str
    format: str
    axes: str
    shape: tuple
    channel_names: list | None = None
    pixel_sizes: dict = field(default_factory=dict)


def image_info(path, axes=None) -> ImageInfo:
    """:class:`ImageInfo` of an OME-Zarr or vendor file (TIFFs: axes and shape only)."""
    with open_stack(path, axes) as stack:
        shape = (*(stack._raw_sizes or ()), *stack._parts[0].frame_shape)
        return ImageInfo(
            path=str(path),
            format=getattr(stack, "format", "TIFF"),
            axes=stack.axes,
            shape=tuple(int(n) for n in shape),
            channel_names=getattr(stack, "channel_names", None),
            pixel_sizes=dict(getattr(stack, "pixel_sizes", {}) or {}),
        )


def check_stores(targets, axes=None, channels=None) -> None:
    """Open the OME-Zarr targets' metadata (no pixel is read) with the run's ``axes`` and
    ``channels``, before anything is written: a store without NGFF metadata, with
    levels that disagree in shape, or that ``axes`` or ``channels`` do not fit is an
    :class:`~napari_sansa.core.errors.InvalidInputError` naming it (exit 2 on the CLI)."""
    from napari_sansa.core.errors import InvalidInputError

    for t in targets:
        source = getattr(t, "source", t)
        if format_of(source) != "zarr":
            continue
        try:
            open_stack(source, axes, channels).close()
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"{exc} (nothing was labelled: fix that image or remove it from the input)"
            ) from None
