"""What the plugin wrote into an output layer, so that no run overwrites a hand edit.

Each time the session writes a frame into "<image> [sansa]" it keeps a compressed
copy of that frame in the layer's metadata (under :data:`WRITTEN_KEY`, so the
record goes with the layer, also to a new widget). A frame the person changed
since then is *edited*: a run leaves it as it is, and the classes that differ can
be taken as references. A frame the plugin never wrote counts as edited as soon as
it holds any label (someone else put it there).
"""

from __future__ import annotations

import zlib

import numpy as np

from napari_sansa.napari.geometry import labels_array

__all__ = [
    "WRITTEN_KEY",
    "accept",
    "current",
    "edited_classes",
    "edited_frames",
    "is_edited",
    "record",
]

#: key in ``layer.metadata``: {frame number: (dtype, zlib bytes) of what the plugin wrote}
WRITTEN_KEY = "napari-sansa-written"


def _records(layer) -> dict:
    meta = layer.metadata
    records = meta.get(WRITTEN_KEY)
    if not isinstance(records, dict):
        records = {}
        meta[WRITTEN_KEY] = records
    return records


def current(layer, geometry, frame: int) -> np.ndarray:
    """``frame`` of ``layer`` as it is now, rows x cols (with a channel axis: the
    channel the person changed since the plugin wrote it, else the first)."""
    return geometry.plane(labels_array(layer), frame, _written(layer, geometry, frame))


def record(layer, frame: int, plane: np.ndarray) -> None:
    """Note that the plugin wrote ``plane`` as ``frame`` of ``layer``."""
    plane = np.ascontiguousarray(plane)
    _records(layer)[int(frame)] = (plane.dtype.str, zlib.compress(plane.tobytes(), 1))


def _written(layer, geometry, frame: int) -> np.ndarray | None:
    entry = _records(layer).get(int(frame))
    if entry is None:
        return None
    dtype, blob = entry
    return np.frombuffer(zlib.decompress(blob), dtype=np.dtype(dtype)).reshape(geometry.hw)


def is_edited(layer, geometry, frame: int) -> bool:
    """Whether ``frame`` of ``layer`` differs from what the plugin last wrote there."""
    now = current(layer, geometry, frame)
    written = _written(layer, geometry, frame)
    if written is None:
        return bool(now.any())
    return not np.array_equal(now, written)  # values, whatever the dtypes


def edited_classes(layer, geometry, frame: int) -> tuple[int, ...]:
    """The classes of ``frame`` that the person changed (added, moved, grew, shrank),
    among those on the frame now; all of them on a frame the plugin never wrote."""
    now = current(layer, geometry, frame)
    written = _written(layer, geometry, frame)
    if written is None:
        changed = now
    else:
        diff = now != written
        changed = np.concatenate([now[diff], written[diff]])
    present = np.unique(now)
    return tuple(int(c) for c in np.intersect1d(np.unique(changed), present) if c != 0)


def edited_frames(layer, geometry) -> list[int]:
    """Every edited frame of ``layer``, in order."""
    return [f for f in range(geometry.n_frames) if is_edited(layer, geometry, f)]


def accept(layer, geometry, frame: int) -> None:
    """Take ``frame`` as it is now as what the plugin wrote (it became a reference)."""
    record(layer, frame, current(layer, geometry, frame))
