"""TIFF outputs: zlib-compressed TIFFs whose description holds napari-sansa's record.

The description is JSON: ``{"shape": [...], "axes": "TZYX", "napari_sansa": record}``.
tifffile reads a JSON description with a "shape" (and "axes") as its own shaped-series
metadata, so a stack's output is read back with the axes it was written with.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from napari_sansa.core.atomic import atomic_write
from napari_sansa.dataset.outputs.base import Layout, OutputWriter


class _Aborted(Exception):
    """Thrown into the temporary's context to drop it."""


class TiffWriter(OutputWriter):
    """An output as a TIFF (see the module). Frames are written as tifffile consumes
    them; a record given after the frames (:meth:`describe`) replaces the placeholder
    description in the finished pages."""

    suffix = ".tif"
    block = 256  # rows and columns of the tiles of a label image written by blocks

    def open(self, layout: Layout, record: dict | None = None) -> TiffWriter:
        self.layout = layout
        self._record = record
        self._files = contextlib.ExitStack()
        self._tmp = self._files.enter_context(atomic_write(self.path))
        return self

    def write(self, frames) -> None:
        lay = self.layout
        # a record given later replaces this placeholder once the pages are written
        text = json.dumps(self.description(lay, self._record) if self._record is not None else {})
        _write_pages(self._tmp, frames, lay.shape, lay.dtype, text, lay.tile)

    def describe(self, record: dict) -> None:
        import tifffile

        tifffile.tiffcomment(self._tmp, json.dumps(self.description(self.layout, record)))

    def finish(self) -> Path:
        self._files.close()
        return self.path

    def abort(self) -> None:
        self._files.__exit__(_Aborted, _Aborted(), None)

    @staticmethod
    def description(layout: Layout, record: dict) -> dict:
        """The TIFF description of an output of ``layout`` with napari-sansa's ``record``."""
        desc = {"shape": list(layout.shape)}
        if layout.axes:
            desc["axes"] = layout.axes
        desc["napari_sansa"] = record
        return desc

    @classmethod
    def read_record(cls, path) -> dict | None:
        desc = read_tiff_description(path)
        info = desc.get("napari_sansa") if isinstance(desc, dict) else None
        return info if isinstance(info, dict) else None


def _write_pages(tmp, pages, shape, dtype, description: str | None, tile=None) -> None:
    """Write ``pages`` (an array of ``shape``, or 2D arrays (tiles) in C order) as a
    zlib-compressed TIFF at ``tmp`` with the text ``description``."""
    import tifffile

    shape = tuple(int(n) for n in shape)
    if isinstance(pages, np.ndarray):
        arr = pages.reshape(-1, *shape[-2:])
        pages = (arr[i] for i in range(arr.shape[0]))
    with tifffile.TiffWriter(tmp) as tw:
        tw.write(
            (np.ascontiguousarray(p, dtype=dtype) for p in pages),
            shape=shape,
            dtype=dtype,
            photometric="minisblack",
            compression="zlib",
            tile=tile,
            description=description,
            metadata=None,
        )


def read_tiff_description(path) -> dict | None:
    """The JSON description napari-sansa stored in one of its output TIFFs."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            text = tif.pages[0].description
        return json.loads(text)
    except Exception:  # noqa: BLE001 - a foreign or damaged file simply has none
        return None
