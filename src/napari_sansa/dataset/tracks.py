"""``--tracks``: the objects of each time-lapse linked into tracks, and their outputs.

For every target stack with a T axis, after its object stack is written, the objects of
each time point (a ``(Y, X)`` frame, or a ``(Z, Y, X)`` block on a T x Z stack: there
the objects of the planes, ids unique in the stack, are tracked as they are) are linked
by :func:`~napari_sansa.core.tracks.track_objects`, frame by frame from the scratch file
of the objects (never the whole stack in memory). Outputs, beside the labels:

- ``<name>_tracks.tif``: the track ids, in the label stack's layout (its frame axes);
  its record holds the track table. Written last: a target counts as finished only when
  it is there (see ``records.done_record``).
- ``<name>_ctc/``: the Cell Tracking Challenge result format of the tracks:
  ``res_track.txt`` (``L B E P`` lines) and ``mask000.tif``, ... (``uint16``, one per
  time point, 3D on a T x Z stack). The folder holds a mark of napari-sansa
  (:data:`CTC_MARK`, the files it wrote for which input): a folder of that name without
  it is never touched (the target fails), and only the files the mark lists are removed
  when the tracks are written again or are stale.
- ``tracks.csv``: one row per track and time point of every target (as ``objects.csv``,
  rebuilt at the end of the run from the records of the track stacks in the folder).

A run with ``--tracks`` refuses, before anything is loaded, a target without a T axis.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from napari_sansa.core.errors import InvalidInputError, OptionError, option_flag
from napari_sansa.dataset.ctc import CTC_MARK, check_ctc_folder, remove_ctc_folder
from napari_sansa.dataset.discovery import natural_key
from napari_sansa.dataset.manifest import (
    owned_text,
    prune_owned_csv,
    run_tables,
    write_owned_csv,
)
from napari_sansa.dataset.outputs import Layout, write_output

log = logging.getLogger(__name__)

TRACKS_CSV = "tracks.csv"
TRACKS_DIGESTS = Path(".napari-sansa") / "tracks.json"


# -- before the run ---------------------------------------------------------------------------


def check_tracks_csv(out: Path) -> None:
    """Refuse a run whose ``tracks.csv`` would replace a file napari-sansa did not write."""
    owned_text(out, TRACKS_CSV, TRACKS_DIGESTS)


def check_time_axes(targets, run) -> None:
    """Refuse (before anything is loaded) targets that have no T axis to track along:
    images, and stacks (TIFF, OME-Zarr, vendor files) whose axes have no T. A stack that
    cannot be opened is left to fail as it would without ``--tracks``."""
    from napari_sansa.dataset.readers import open_stack

    for t in targets:
        if t.kind == "image":
            axes = "YX"
        else:
            try:
                with open_stack(t.source, run.axes, run.channels) as stack:
                    axes = stack.axes
                    if "T" in stack.frame_axes:
                        continue
            except InvalidInputError:
                continue
        raise OptionError(
            "tracks",
            t.source,
            template="{tracks} links objects through time, but {value} has no T axis (its "
            f"axes are {axes}): give time-lapses (TYX, TZYX, TCYX... TIFF stacks[; {{axes}} "
            "names the axes of a TIFF that records none, e.g. {axes} TYX]), or leave "
            "{tracks} out",
            default=option_flag,
            also=("axes",),
        )


# -- one stack ----------------------------------------------------------------------------------


class TimeFrames:
    """The object stack of a target as ``(T, [Z,] Y, X)`` time points, read one time point
    at a time from the per-frame scratch maps (``arrays[i]``, shifted by ``offsets[i]``:
    the ids of the written object stack)."""

    def __init__(self, arrays, offsets, dtype, frame_axes: str, frame_sizes):
        self.arrays, self.offsets, self.dtype = arrays, offsets, np.dtype(dtype)
        self.frame_axes, self.frame_sizes = frame_axes, tuple(frame_sizes)
        sizes = dict(zip(frame_axes, frame_sizes, strict=True))
        hw = tuple(arrays.shape[1:])
        self.shape = (sizes["T"], *((sizes["Z"],) if "Z" in sizes else ()), *hw)

    def flat(self, t: int, z: int | None = None) -> int:
        """The stack's frame index of time point ``t`` (plane ``z``)."""
        at = {"T": t, "Z": z}
        return int(np.ravel_multi_index([at[a] for a in self.frame_axes], self.frame_sizes))

    def __getitem__(self, t):
        from napari_sansa.core.measures import renumbered

        t = int(t)
        if len(self.shape) == 3:
            i = self.flat(t)
            return renumbered(self.arrays[i], self.offsets[i], self.dtype)
        return np.stack(
            [
                renumbered(self.arrays[i], self.offsets[i], self.dtype)
                for i in (self.flat(t, z) for z in range(self.shape[1]))
            ]
        )


def carry_objects(
    t, scratch, frames: TimeFrames, model, stack, input_size, intensity_range, reach=None
):
    """``--follow``: where SAM2 carries each object of ``frames`` into the next frame
    (a scratch map of their shape), on the features the run kept in the scratch folder;
    ``reach``: how far (pixels) a carried mask may reach (None: three diameters)."""
    from napari_sansa.core.propagation import FramesByTime, ObjectPropagation

    moved = scratch.array("moved.npy", frames.dtype, frames.shape)
    planes = frames.shape[1] if len(frames.shape) == 4 else None
    images = FramesByTime(lambda t, z: stack[frames.flat(t, z)], frames.shape[0], planes)
    carry = ObjectPropagation(
        model, images, input_size=input_size, intensity_range=intensity_range, reach=reach
    )
    moved[0] = 0
    for i, carried in carry.frames(frames):
        moved[i] = carried
    log.info(
        "%s: objects carried by SAM2 through %d frames (%d image(s) encoded again)",
        t.source,
        frames.shape[0],
        carry.encoded,
    )
    return moved


def write_stack_tracks(
    t,
    out: Path,
    scratch,
    frames: TimeFrames,
    classes: dict,
    record,
    n_objects: int,
    spacing=None,
    moved=None,
    max_move=None,
) -> None:
    """Track ``frames`` (:class:`TimeFrames`; ``n_objects``: its number of objects, at
    least its number of tracks; ``classes``: ``{object id: class}``; ``spacing``: the
    voxel size of 3D time points, or None; ``moved``: where SAM2 carried the objects,
    ``--follow``; ``max_move``: the farthest a cell moves between frames, None: the
    linker's own) and write ``t``'s CTC folder, then its track stack (with the table in
    its record: ``record(role)``)."""
    from napari_sansa.core.atomic import write_text_atomic
    from napari_sansa.core.measures import object_dtype
    from napari_sansa.core.tracks import ctc_file_names, track_objects, write_ctc

    tracks = scratch.array("tracks.npy", object_dtype(n_objects), frames.shape)
    tracks, table = track_objects(
        frames,
        classes=classes or None,
        out=tracks,
        spacing=spacing,
        moved=moved,
        max_distance=max_move,
    )
    n_tracks = int(table["track"].max()) if len(table) else 0
    folder = out / t.ctc_output
    check_ctc_folder(folder, t.source)
    remove_ctc_folder(folder, t.source)
    # the mark first: a folder left by an interrupted run is known as ours
    folder.mkdir(parents=True, exist_ok=True)
    mark = {"source": t.source, "files": ctc_file_names(frames.shape[0])}
    write_text_atomic(folder / CTC_MARK, json.dumps(mark))
    try:
        written = write_ctc(folder, tracks, table)
        ctc = {"folder": Path(t.ctc_output).name, "tracks": int(_ctc_count(folder))}
    except InvalidInputError as exc:  # more CTC tracks than 16-bit masks hold
        log.warning("%s: no Cell Tracking Challenge output: %s", t.source, exc)
        remove_ctc_folder(folder, t.source)
        written, ctc = [], {"skipped": str(exc)}
    dtype = object_dtype(n_tracks)
    layout_shape = (*frames.frame_sizes, *frames.shape[-2:])
    layout = Layout(layout_shape, dtype, frames.frame_axes + "YX")

    def pages():
        for i in range(int(np.prod(frames.frame_sizes))):
            at = dict(zip(frames.frame_axes, np.unravel_index(i, frames.frame_sizes), strict=True))
            page = tracks[int(at["T"])]
            if "Z" in at:
                page = page[int(at["Z"])]
            yield np.asarray(page).astype(dtype)

    info = record("tracks")
    info["tracks"] = {
        "columns": list(table.columns),
        "rows": [list(r.values()) for r in table.rows()],
    }
    info["ctc"] = ctc
    write_output(out / t.tracks_output, layout, pages(), info)
    log.info(
        "%s: %d track(s)%s", t.source, n_tracks, f", CTC result in {folder}" if written else ""
    )


def _ctc_count(folder: Path) -> int:
    text = (folder / "res_track.txt").read_text(encoding="utf-8")
    return sum(1 for line in text.splitlines() if line.strip())


def stack_classes(table) -> dict:
    """``{object id: class}`` of a stack's object table (ids unique in the stack)."""
    return dict(zip(table["object"].tolist(), table["class"].tolist(), strict=True))


# -- tracks.csv -------------------------------------------------------------------------------


def track_rows(out: Path, signature: str, rows, skip=frozenset()) -> list[dict]:
    """The rows of ``tracks.csv`` after a run: the rows of the track table of every track
    stack in ``out`` written with this run's settings, except those of targets that
    failed in this run."""
    return [
        {"target": source, **dict(zip(columns, values, strict=False))}
        for source, _, columns, values in run_tables(out, signature, rows, "tracks", skip)
    ]


def write_tracks_csv(out: Path, rows) -> Path:
    """Write ``rows`` (:func:`track_rows`) as ``tracks.csv``, atomically."""
    keys = ["target", "track", "t"]
    for r in rows:
        keys += [k for k in r if k not in keys]

    def order(r):
        return natural_key(Path(r["target"])), int(r["track"]), int(r["t"])

    return write_owned_csv(out, TRACKS_CSV, TRACKS_DIGESTS, keys, rows, order)


def prune_tracks_csv(out: Path) -> Path | None:
    """After a run without tracks: drop from napari-sansa's ``tracks.csv`` the rows of
    targets that have no track stack of napari-sansa's any more (no row left: no file).
    Any other ``tracks.csv`` is left alone."""
    return prune_owned_csv(out, TRACKS_CSV, TRACKS_DIGESTS, "tracks", write_tracks_csv)


__all__ = [
    "TRACKS_CSV",
    "TimeFrames",
    "check_ctc_folder",
    "check_time_axes",
    "check_tracks_csv",
    "prune_tracks_csv",
    "stack_classes",
    "track_rows",
    "write_stack_tracks",
    "write_tracks_csv",
]
