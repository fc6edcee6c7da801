"""Tracks in napari: the objects of a time-lapse linked into tracks, corrected, saved (no Qt).

With ``RunSettings.make(tracks=TrackSettings())`` (the widget's "tracks" box; tracks
imply objects) a run on an image with a T axis ends by linking the objects of its
"<image> [sansa objects]" layer from frame to frame with the core's
:func:`napari_sansa.track_objects` (in a worker, :func:`link_tracks`). The result goes
into two layers beside the objects layer:

- "<image> [sansa track labels]" (Labels): one id per track in every frame; its
  ``features`` one row per track (``index`` = the id, for napari's hover: first and
  last frame, frames, parent, class);
- "<image> [sansa tracks]" (napari's Tracks layer): ``track_id, t, (z,) y, x`` per
  object, ``graph`` {daughter: [parent]} for divisions, ``features`` area and class.

:class:`TracksOutput` keeps the track table (one row per track and frame: ``track``,
``t``, (``z``,) ``y``, ``x``, ``area``, ``parent``, ``class``) and makes the corrections
(:mod:`napari_sansa.core.track_edits`): merge two tracks, split one at a frame, each
undone by :meth:`TracksOutput.undo` (also Ctrl+Z on the track labels layer); the layers
and the table follow. :meth:`TracksOutput.save` writes the track labels (one TIFF
stack), ``tracks.csv`` and the Cell Tracking Challenge files.

A T axis: a frame axis the image's axis labels call 't' or 'time'; an image whose
axes are not named and that has one frame axis is taken as a time-lapse. A (T, Z, Y, X)
stack (axes named 't' and 'z') links its 3D objects (one per nucleus and time point),
with the voxel size the objects were split with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sansa.core.errors import InvalidInputError, OptionError
from napari_sansa.core.track_edits import (
    TrackEditError,
    plan_merge,
    plan_split,
    track_frames,
)
from napari_sansa.napari.geometry import META_KEY, image_geometry, layer_role
from napari_sansa.napari.outputs import transform_kwargs

__all__ = [
    "TIME_NAMES",
    "TrackSettings",
    "TracksOutput",
    "link_tracks",
    "time_axis",
    "track_labels_name",
    "tracks_name",
]

#: axis labels taken as the time axis (case-insensitive)
TIME_NAMES = ("t", "time")


def track_labels_name(image_name: str) -> str:
    return f"{image_name} [sansa track labels]"


def tracks_name(image_name: str) -> str:
    return f"{image_name} [sansa tracks]"


@dataclass(frozen=True)
class TrackSettings:
    """How objects are linked into tracks (the core's ``track_objects`` keywords):
    ``max_distance`` (pixels a cell may move between frames; None: the linker's own),
    ``gap`` (frames an object may be missed and its track go on), ``divisions``;
    ``follow``: link on where SAM2 carries each object into the next frame
    (:func:`~napari_sansa.propagate_objects`, on the features the run left in the
    model's feature cache) rather than on where it was; its carried mask is kept within
    ``max_distance`` of the object (None: three times its diameter)."""

    max_distance: float | None = None
    gap: int = 1
    divisions: bool = True
    follow: bool = False

    def __post_init__(self):
        d = self.max_distance
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, float)) or d <= 0):
            raise OptionError("max_distance", d, "a distance in pixels above 0, or None")
        if isinstance(self.gap, bool) or not isinstance(self.gap, int) or self.gap < 0:
            raise OptionError("gap", self.gap, "a number of frames, 0 or more")

    def kwargs(self) -> dict:
        return {"max_distance": self.max_distance, "gap": self.gap, "divisions": self.divisions}


def time_axis(image) -> tuple[int | None, str | None]:
    """``(position of the T axis among the image's leading axes, None)``, or ``(None,
    why the image has no T axis for tracks)``."""
    g = image_geometry(image)
    name = image.name
    axes = g.frame_axes
    if not axes:
        return None, (
            f"'{name}' is a single image, not a time-lapse: tracks need frames over time (a T axis)"
        )
    if g.axis_names:
        times = [k for k in axes if g.axis_name(k).lower() in TIME_NAMES]
        if not times:
            named = ", ".join(g.axis_name(k) for k in axes)
            return None, (
                f"'{name}' has no T axis (its frame axes: {named}): tracks need frames over "
                "time; if one of them is time, call it 't' in the layer's axis labels"
            )
        t = times[0]
    elif len(axes) == 1:
        t = axes[0]
    else:
        return None, (
            f"'{name}' has {len(axes)} frame axes and does not name them: call the time axis "
            "'t' in the layer's axis labels (e.g. ('t', 'z', 'y', 'x')) to track over it"
        )
    others = [k for k in axes if k != t]
    zs = [k for k in others if g.axis_name(k).lower() == "z"]
    if g.channel_axis is not None or len(others) > 1 or others != zs:
        extra = [g.axis_name(k) for k in others if k not in zs]
        extra += ["channels"] if g.channel_axis is not None else []
        return None, (
            f"'{name}' has other axes besides T and Z ({', '.join(extra)}): tracks in the "
            "widget follow (T, Y, X) time-lapses and (T, Z, Y, X) stacks; use "
            "ns.track_objects for other stacks"
        )
    if t != 0:
        return None, (
            f"'{name}' has its T axis after its Z axis: tracks need T first, (T, Z, Y, X) "
            "(napari: Layers > Transpose, or open it with its axes in that order)"
        )
    return t, None


def link_tracks(objects, classes, settings: TrackSettings, spacing=None, moved=None):
    """In a worker: ``(track ids, table columns)`` of a (T, Y, X) or (T, Z, Y, X) object
    stack, each row with the ``class`` of its object: ``classes`` is a class map of the
    stack's shape or ``{object id: class}`` (objects of different classes are never
    linked); ``spacing``: the voxel size ``(z, y, x)`` of 3D objects; ``moved``: where
    SAM2 carried the objects (:func:`~napari_sansa.propagate_objects`)."""
    from napari_sansa.core.tracks import track_objects

    tracks, table = track_objects(
        objects, classes=classes, spacing=spacing, moved=moved, **settings.kwargs()
    )  # fmt: skip
    return np.asarray(tracks), {k: np.asarray(v) for k, v in table.as_dict().items()}


def time_lapse_frames(stack, n_times: int, n_planes: int | None):
    """The frames of a run's image by time point, as the run read them: ``frames[t]``
    (a (T, Y, X) time-lapse) or ``frames[t][z]`` (a (T, Z, Y, X) stack), from the run's
    :class:`~napari_sansa.napari.geometry.FrameStack` (T its first frame axis), read
    lazily."""
    from napari_sansa.core.propagation import FramesByTime

    def read(t, z):
        return stack[t if z is None else t * n_planes + z]

    return FramesByTime(read, n_times, n_planes)


def _columns_of(data: dict) -> tuple[str, ...]:
    return ("z", "y", "x") if "z" in data else ("y", "x")


class TracksOutput:
    """The track layers of one image and their table (see the module)."""

    def __init__(self, viewer, image, settings: TrackSettings):
        self.viewer = viewer
        self.image = image
        self.settings = settings
        self.table: dict | None = None
        self.labels = None  # the track labels layer
        self.lines = None  # the Tracks layer
        self._history: list = []  # (table before, [(t, flat indices, old id, new id)])
        self.selected: int | None = None
        self.stale = False  # True: a later run on the image made no tracks

    # -- layers ------------------------------------------------------------------------
    def _find(self, name, kind, role):
        for layer in self.viewer.layers:
            if layer.name == name and isinstance(layer, kind) and layer_role(layer) == role:
                return layer
        return None

    def show(self, tracks: np.ndarray, table: dict) -> None:
        """Write a linking's result into the layers (made, or updated in place)."""
        from napari.layers import Labels

        self.table = {k: np.asarray(v) for k, v in table.items()}
        self.stale = False
        if "class" not in self.table:
            self.table["class"] = np.zeros(len(self.table["track"]), np.int64)
        self._history.clear()
        self.selected = None
        selection = self.viewer.layers.selection
        active = selection.active
        name = track_labels_name(self.image.name)
        layer = self._find(name, Labels, "tracks")
        if layer is not None and tuple(layer.data.shape) == tracks.shape:
            layer.data = tracks
        else:
            layer = self.viewer.add_labels(
                tracks, name=name, metadata={META_KEY: "tracks"}, opacity=0.6,
                **transform_kwargs(self.image),
            )  # fmt: skip
        # Ctrl+Z there: these tracks' corrections first (bound again by each linking)
        layer.bind_key("Control-Z", lambda _layer: self.undo_or_layer(), overwrite=True)
        self.labels = layer
        self._update_features()
        self._show_lines()
        if active is not None and active in self.viewer.layers:
            selection.active = active  # a run never takes the layer being worked on

    def _update_features(self) -> None:
        import pandas as pd

        if self.labels is None or self.labels not in self.viewer.layers:
            return
        self.labels.features = pd.DataFrame(self.summary())

    def summary(self) -> dict[str, np.ndarray]:
        """One row per track: ``index`` (= ``track``), ``start``, ``end``, ``frames``,
        ``parent``, ``class`` (the most frequent over its frames)."""
        data = self.table or {}
        ids = np.unique(data.get("track", np.zeros(0, np.int64)))
        out = {k: np.zeros(len(ids), np.int64) for k in ("start", "end", "frames", "parent")}
        out["class"] = np.zeros(len(ids), np.int64)
        for i, track in enumerate(ids):
            rows = data["track"] == track
            t = data["t"][rows]
            out["start"][i], out["end"][i], out["frames"][i] = t.min(), t.max(), rows.sum()
            out["parent"][i] = data["parent"][rows][0]
            out["class"][i] = np.bincount(data["class"][rows].astype(np.int64)).argmax()
        return {"index": ids.astype(np.int64), "track": ids.astype(np.int64), **out}

    def lines_data(self):
        """``(data, graph, features)`` of the Tracks layer."""
        import pandas as pd

        data = self.table
        order = np.lexsort((data["t"], data["track"]))
        coords = [data[c][order].astype(float) for c in _columns_of(data)]
        points = np.column_stack([data["track"][order], data["t"][order], *coords])
        graph = {}
        for track in np.unique(data["track"]):
            parent = int(data["parent"][data["track"] == track][0])
            if parent and np.any(data["track"] == parent):
                graph[int(track)] = [parent]
        features = pd.DataFrame(
            {"area": data["area"][order], "class": data["class"][order]}
        )  # fmt: skip
        return points, graph, features

    def _show_lines(self) -> None:
        from napari.layers import Tracks

        name = tracks_name(self.image.name)
        old = self._find(name, Tracks, "tracks")
        if not len(self.table["track"]):
            if old is not None:
                self.viewer.layers.remove(old)
            self.lines = None
            return
        points, graph, features = self.lines_data()
        if old is not None and old.ndim == points.shape[1] - 1:
            old.data = points  # napari checks the graph against the data: data first
            old.graph = graph
            old.features = features
            self.lines = old
            return
        if old is not None:
            self.viewer.layers.remove(old)
        self.lines = self.viewer.add_tracks(
            points, graph=graph, features=features, name=name, metadata={META_KEY: "tracks"},
            tail_length=10, tail_width=2, blending="translucent",
            **transform_kwargs(self.image),
        )  # fmt: skip

    def _require_layers(self) -> str | None:
        if self.table is None:
            return "there are no tracks yet: tick 'tracks' and run"
        if self.labels is None or self.labels not in self.viewer.layers:
            return (
                f"the layer '{track_labels_name(self.image.name)}' was removed: run again "
                "to make the tracks"
            )
        return None

    # -- corrections -------------------------------------------------------------------
    def merge(self, a: int, b: int) -> str:
        """Merge tracks ``a`` and ``b`` (the later one takes the earlier one's id);
        returns what was done. :class:`TrackEditError` (nothing changed) when it cannot."""
        problem = self._require_layers()
        if problem:
            raise TrackEditError(problem)
        return self._apply(plan_merge(self.table, a, b))

    def split(self, track: int, frame: int) -> str:
        """Split ``track`` at ``frame`` (a new id from that frame on)."""
        problem = self._require_layers()
        if problem:
            raise TrackEditError(problem)
        return self._apply(plan_split(self.table, track, frame))

    def _apply(self, edit) -> str:
        layer = self.labels
        if edit.new > np.iinfo(layer.data.dtype).max:
            layer.data = np.asarray(layer.data).astype(np.promote_types(
                layer.data.dtype, np.min_scalar_type(edit.new)))  # fmt: skip
        changes = []
        for t, old, new in edit.relabel:
            plane = np.asarray(layer.data[t])
            hit = np.flatnonzero(plane == old)
            if hit.size:
                plane = plane.copy()
                plane.flat[hit] = new
                layer.data[t] = plane
            changes.append((t, hit, old, new))
        self._history.append((self.table, changes))
        self.table = edit.table
        self._refresh()
        self.selected = edit.track
        return edit.message

    def undo(self) -> str | None:
        """Undo the last merge or split (None: there is none)."""
        if not self._history:
            return None
        table, changes = self._history.pop()
        layer = self.labels
        if layer is not None and layer in self.viewer.layers:
            for t, hit, old, _new in reversed(changes):
                plane = np.asarray(layer.data[t]).copy()
                plane.flat[hit] = old
                layer.data[t] = plane
        self.table = table
        self._refresh()
        return "the last track correction was undone"

    def undo_or_layer(self) -> None:
        """Ctrl+Z on the track labels layer: the last track correction, else napari's
        undo of the layer (a brush stroke)."""
        if self.undo() is None and self.labels is not None:
            self.labels.undo()

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def _refresh(self) -> None:
        if self.labels is not None and self.labels in self.viewer.layers:
            self.labels.refresh()
            self._update_features()
        if self.lines is not None and self.lines in self.viewer.layers:
            self._show_lines()

    # -- reading -----------------------------------------------------------------------
    def tracks(self) -> list[int]:
        return [] if self.table is None else np.unique(self.table["track"]).tolist()

    def describe(self, track: int) -> str:
        """'track 3: frames 0-5 (6), parent 1, daughters 4, 5, class 1'."""
        data = self.table
        if data is None or not np.any(data["track"] == track):
            return f"there is no track {track}"
        frames = track_frames(data, track)
        rows = data["track"] == track
        parent = int(data["parent"][rows][0])
        daughters = np.unique(data["track"][data["parent"] == track]).tolist()
        text = f"track {track}: frames {frames[0]}-{frames[-1]}"
        if len(frames) != frames[-1] - frames[0] + 1:
            text += f" ({len(frames)}, with gaps)"
        text += f", parent {parent}" if parent else ", no parent"
        if daughters:
            text += f", daughters {', '.join(map(str, daughters))}"
        cls = np.bincount(data["class"][rows].astype(np.int64)).argmax()
        return f"{text}, class {cls}"

    def select(self, track: int) -> str:
        """Make ``track`` the selected one (the labels layer's selected label too)."""
        self.selected = int(track)
        if self.labels is not None and self.labels in self.viewer.layers:
            self.labels.selected_label = int(track)
        return self.describe(int(track))

    def track_at(self, layer, position) -> int | None:
        """The track under a world ``position`` on the track labels or Tracks layer."""
        data = np.asarray(layer.world_to_data(position), dtype=float)
        if layer is self.labels:
            idx = tuple(int(np.rint(v)) for v in data)
            shape = layer.data.shape
            inside = len(idx) == len(shape) and all(
                0 <= i < s for i, s in zip(idx, shape, strict=True)
            )
            if not inside:
                return None
            value = int(layer.data[idx])
            return value or None
        if layer is self.lines and self.table is not None:
            t = int(np.rint(data[0]))
            rows = np.flatnonzero(self.table["t"] == t)
            if not rows.size:
                return None
            coords = np.column_stack([self.table[c][rows] for c in _columns_of(self.table)])
            d = np.linalg.norm(coords - data[1:], axis=1)
            best = int(np.argmin(d))
            return int(self.table["track"][rows[best]]) if d[best] <= 10 else None
        return None

    def counts(self) -> dict[int, dict[str, int]]:
        """Per frame: ``tracks`` (tracks in it), ``new`` (beginning there), ``divisions``
        (tracks dividing from a parent that begin there)."""
        data = self.table
        if data is None:
            return {}
        out = {}
        starts = {}
        for track in np.unique(data["track"]):
            rows = data["track"] == track
            starts[int(track)] = (int(data["t"][rows].min()), int(data["parent"][rows][0]))
        for t in np.unique(data["t"]).tolist():
            begun = [p for s, p in starts.values() if s == t]
            out[int(t)] = {
                "tracks": int(np.sum(data["t"] == t)),
                "new": sum(1 for p in begun if not p),
                "divisions": sum(1 for p in begun if p),
            }
        return out

    # -- saving ------------------------------------------------------------------------
    def save(self, folder) -> list[str]:
        """Write the track labels (``<image> tracks.tif``), ``tracks.csv`` and the Cell
        Tracking Challenge result (``ctc/res_track.txt`` and ``ctc/mask###.tif``) into
        ``folder``; returns the paths."""
        problem = self._require_layers()
        if problem:
            raise InvalidInputError(problem)
        from napari_sansa.napari.writer import write_labels_tiff

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tracks = np.asarray(self.labels.data)
        paths = write_labels_tiff(str(folder / f"{self.image.name} tracks.tif"), tracks, {})
        csv_path = folder / "tracks.csv"
        self._write_csv(csv_path)
        paths.append(str(csv_path))
        paths.extend(write_ctc(folder / "ctc", tracks, self.table))
        return paths

    def _write_csv(self, path: Path) -> None:
        from napari_sansa.core.tracks import TrackTable

        TrackTable(self.table).to_csv(path)


def write_ctc(folder, tracks: np.ndarray, table: dict) -> list[str]:
    """The Cell Tracking Challenge result (the core's :func:`~napari_sansa.core.tracks.
    write_ctc`): ``res_track.txt`` and a 16-bit ``mask###.tif`` per frame."""
    from napari_sansa.core.tracks import TrackTable
    from napari_sansa.core.tracks import write_ctc as core_write

    return [str(p) for p in core_write(folder, tracks, TrackTable(table))]
