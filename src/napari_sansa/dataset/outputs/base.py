"""The interface every output format implements: open, write the frames, describe, finish.

An output is one file (or folder) of a target: its labels, probabilities or objects. A
writer writes it to a temporary next to its final path and moves it there only when it
is complete (:meth:`OutputWriter.finish`), so an output is either absent, the old one,
or the whole new one. What napari-sansa records of the output (its record: the run, the
input, the classes, scores and areas; see :mod:`napari_sansa.dataset.records`) goes with
it, in the format's own metadata, and :meth:`OutputWriter.read_record` reads it back:
that is how the outputs napari-sansa wrote (finished, or stale) are recognised.

TIFF (:class:`~napari_sansa.dataset.outputs.tiff.TiffWriter`) is the first format; another
(OME-Zarr) is one more subclass registered in :data:`napari_sansa.dataset.outputs.WRITERS`.
"""

from __future__ import annotations

import errno
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np


class DiskFullError(OSError):
    """The output disk filled up; everything written so far is complete and valid."""


def write_failed(err: OSError, path: Path):
    """Raise ``err``, a failed write of ``path``: a full disk as :class:`DiskFullError`."""
    if err.errno == errno.ENOSPC:
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on the device while writing {path}; every output written so far is "
            "complete. Free some space and run the same command again to continue",
        ) from None
    raise err


@dataclass(frozen=True)
class Layout:
    """The array an output holds: its ``shape`` and ``dtype``, the ``axes`` of a stack's
    output (e.g. "TZYX", recorded in the file; None for an image's) and, for an image
    written block by block, the ``tile`` ``(rows, cols)`` its frames are (in order, edge
    tiles padded) instead of whole planes."""

    shape: tuple
    dtype: object
    axes: str | None = None
    tile: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))


class Blocks:
    """The frames of an output given as regions of an image, for a writer that
    ``takes_blocks``: ``(rows, cols, array)`` with ``array`` of shape ``(*lead, h, w)``
    (every leading plane of that region, e.g. each class's probabilities), in any order,
    covering the image once (the tiles' kept parts of a tiled run)."""

    def __init__(self, blocks):
        self._blocks = blocks

    def __iter__(self):
        return iter(self._blocks)


class OutputWriter(ABC):
    """One output being written. Use it as a context manager::

        with TiffWriter(path).open(layout, record) as w:
            w.write(frames)        # 2D planes (or tiles) in C order, as they come
            w.describe(record)     # only if the record is known once the frames are written

    Leaving the block commits the output (:meth:`finish`); an exception drops it
    (:meth:`abort`) and the old file at ``path``, if any, stays.
    """

    #: the suffix of the files (or folders) of this format, e.g. ".tif"
    suffix: ClassVar[str] = ""
    #: the side of the square blocks (a TIFF's tiles) of an image written block by block
    block: ClassVar[int] = 256
    #: whether :meth:`write` takes :class:`Blocks` (regions in any order)
    takes_blocks: ClassVar[bool] = False

    def __init__(self, path):
        self.path = Path(path)

    @abstractmethod
    def open(self, layout: Layout, record: dict | None = None) -> OutputWriter:
        """Start the output (a temporary next to :attr:`path`) and return ``self``.
        ``record``: napari-sansa's record of the output when it is known before the frames;
        otherwise give it to :meth:`describe` once they are written."""

    @abstractmethod
    def write(self, frames: Iterable[np.ndarray] | np.ndarray) -> None:
        """Write the output's frames: an array of the layout's shape, or an iterable of its
        2D planes (or tiles) in C order, consumed one at a time (computed as they are
        written: nothing of the output's size needs to be held)."""

    @abstractmethod
    def describe(self, record: dict) -> None:
        """Store ``record``, known once the frames are written (per-frame scores)."""

    @abstractmethod
    def finish(self) -> Path:
        """Move the complete output to :attr:`path` (atomically) and return it."""

    @abstractmethod
    def abort(self) -> None:
        """Drop what was written; the file at :attr:`path`, if any, is untouched."""

    @classmethod
    @abstractmethod
    def read_record(cls, path) -> dict | None:
        """napari-sansa's record of an output of this format it wrote; None for any other
        file (or one that cannot be read)."""

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()
