"""Where a run's outputs go: one small writer interface per file format.

:class:`OutputWriter` (open, write the frames, describe, finish) is what the dataset
writer (:mod:`~napari_sansa.dataset.writing`, :mod:`~napari_sansa.dataset.stacks`) uses;
:class:`TiffWriter` is its implementation for TIFF, the format of every output today.
:data:`WRITER` writes new outputs; :data:`WRITERS` are the formats whose outputs a run
recognises in a folder (by suffix: :func:`output_files`, :func:`read_record`).
"""

from __future__ import annotations

from pathlib import Path

from napari_sansa.dataset.outputs.base import (
    DiskFullError,
    Layout,
    OutputWriter,
    write_failed,
)
from napari_sansa.dataset.outputs.tiff import TiffWriter

__all__ = [
    "WRITER",
    "WRITERS",
    "DiskFullError",
    "Layout",
    "OutputWriter",
    "TiffWriter",
    "output_files",
    "write_output",
    "read_record",
    "write_failed",
]

#: the format of new outputs
WRITER: type[OutputWriter] = TiffWriter
#: the formats whose outputs are recognised, by suffix
WRITERS: dict[str, type[OutputWriter]] = {w.suffix: w for w in (TiffWriter,)}


def read_record(path) -> dict | None:
    """What napari-sansa stored in an output file it wrote; None for any other file."""
    writer = WRITERS.get(Path(path).suffix, WRITER)
    return writer.read_record(path)


def output_files(out: Path, sort: bool = True):
    """Every file under ``out`` of a recognised output format, as a sorted list (or, with
    ``sort=False``, found one at a time); hidden ones too: callers skip napari-sansa's own
    folder."""
    found = (p for suffix in WRITERS for p in Path(out).rglob(f"*{suffix}"))
    return sorted(found) if sort else found


def write_output(path, layout: Layout, frames, record: dict | None = None, describe=None) -> Path:
    """Write one output with :data:`WRITER`: ``frames`` (see :meth:`OutputWriter.write`),
    with its ``record``, or with ``describe()``'s once the frames are written."""
    with WRITER(path).open(layout, record) as writer:
        writer.write(frames)
        if describe is not None:
            writer.describe(describe())
    return writer.path
