"""Where a run's outputs go: one small writer interface per file format.

:class:`OutputWriter` (open, write the frames, describe, finish) is what the dataset
writer (:mod:`~napari_sansa.dataset.writing`, :mod:`~napari_sansa.dataset.stacks`) uses;
:class:`TiffWriter` is its implementation for TIFF, the format of every output today.
:data:`FORMATS` are those a run can write (:data:`WRITER`, TIFF, by default;
:class:`OmeZarrWriter` with ``format="ome-zarr"``); :data:`WRITERS` are the formats whose
outputs a run recognises in a folder (by suffix: :func:`output_files`, :func:`read_record`).
"""

from __future__ import annotations

from pathlib import Path

from napari_sansa.dataset.outputs.base import (
    Blocks,
    DiskFullError,
    Layout,
    OutputWriter,
    write_failed,
)
from napari_sansa.dataset.outputs.omezarr import OmeZarrWriter
from napari_sansa.dataset.outputs.tiff import TiffWriter

__all__ = [
    "WRITER",
    "WRITERS",
    "Blocks",
    "DiskFullError",
    "FORMATS",
    "Layout",
    "OmeZarrWriter",
    "OutputWriter",
    "TiffWriter",
    "output_exists",
    "output_files",
    "write_output",
    "read_record",
    "write_failed",
    "writer_for",
]

#: the format of new outputs by default
WRITER: type[OutputWriter] = TiffWriter
#: the formats whose outputs are recognised, by suffix
WRITERS: dict[str, type[OutputWriter]] = {w.suffix: w for w in (TiffWriter, OmeZarrWriter)}
#: the formats a run can write (``DatasetOptions.format``, ``--format``)
FORMATS: dict[str, type[OutputWriter]] = {"tiff": TiffWriter, "ome-zarr": OmeZarrWriter}


def writer_for(path) -> type[OutputWriter]:
    """The format of the output at ``path``, by its suffix (``.tif``, ``.ome.zarr``)."""
    name = Path(path).name
    for suffix, writer in WRITERS.items():
        if name.endswith(suffix):
            return writer
    return WRITER


def output_exists(path) -> bool:
    """Whether an output of its format is at ``path``: a file (TIFF), or a folder that is
    no link (an OME-Zarr store)."""
    path = Path(path)
    if writer_for(path) is OmeZarrWriter:
        return path.is_dir() and not path.is_symlink()
    return path.is_file()


def read_record(path) -> dict | None:
    """What napari-sansa stored in an output it wrote; None for anything else."""
    return writer_for(path).read_record(path)


def output_files(out: Path, sort: bool = True):
    """Every file (or store) under ``out`` of a recognised output format, as a sorted list
    (or, with ``sort=False``, found one at a time); hidden ones too: callers skip
    napari-sansa's own folder. The insides of OME-Zarr stores are not searched."""
    found = (p for p in _walk_outputs(Path(out)))
    return sorted(found) if sort else found


def _walk_outputs(out: Path):
    import os

    suffixes = tuple(WRITERS)
    for folder, dirs, files in os.walk(out):
        here = Path(folder)
        keep = []
        for d in dirs:  # a store's insides are not searched
            if d.endswith(OmeZarrWriter.suffix):
                if not (here / d).is_symlink():
                    yield here / d
            elif not d.endswith(".zarr"):
                keep.append(d)
        dirs[:] = keep
        for f in files:
            if f.endswith(suffixes) and not f.endswith(OmeZarrWriter.suffix):
                yield here / f


def write_output(path, layout: Layout, frames, record: dict | None = None, describe=None) -> Path:
    """Write one output in the format of its path's suffix (:func:`writer_for`):
    ``frames`` (see :meth:`OutputWriter.write`), with its ``record``, or with
    ``describe()``'s once the frames are written."""
    with writer_for(path)(path).open(layout, record) as writer:
        writer.write(frames)
        if describe is not None:
            writer.describe(describe())
    return writer.path
