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
(:mod:`napari_sansa.core.track_edits`): merge two tracks, split one at a frame; and
it follows what a person paints, erases or fills by hand on the track labels layer
(napari's tools, ``layer.paint``/``fill``/``data_setitem``): the frames a stroke
touched (napari's ``paint`` event names them) are measured again, never the whole stack
(:func:`~napari_sansa.core.track_edits.plan_repaint`). Corrections and strokes are one
history, napari's own: :meth:`TracksOutput.undo` (the Tracks page's Undo), Ctrl+Z and
``layer.undo()`` undo the last of them, Ctrl+Shift+Z redoes it, and the table goes back
with the pixels. The layers and the table follow every change; ``changed`` says what a
stroke, an undo or a redo did. :meth:`TracksOutput.save` writes the track labels (one
TIFF stack), ``tracks.csv`` and the Cell Tracking Challenge files.

A T axis: a frame axis the image's axis labels call 't' or 'time'; an image whose
axes are not named and that has one frame axis is taken as a time-lapse. A (T, Z, Y, X)
stack (axes named 't' and 'z') links its 3D objects (one per nucleus and time point),
with the voxel size the objects were split with.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psygnal import Signal

from napari_sansa.core.errors import InvalidInputError, OptionError
from napari_sansa.core.track_edits import (
    TableChange,
    TrackEditError,
    apply_change,
    plan_merge,
    plan_repaint,
    plan_split,
    table_change,
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


def painted_frames(atoms) -> list[int]:
    """The frames (indices along the first axis) that a napari Labels ``paint`` event's
    history atoms changed: ``(indices, old, new)`` tuples (``data_setitem``) or masked
    atoms with a ``slice_key`` and a ``mask`` (napari >= 0.6's brush and fill)."""
    frames: set[int] = set()
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is None:  # (indices, old values, new values)
            frames.update(np.unique(np.asarray(atom[0][0])).tolist())
            continue
        first = key[0]
        if isinstance(first, slice):
            start = first.start or 0
            mask = getattr(atom, "mask", None)
            if mask is not None and np.ndim(mask):
                hit = np.flatnonzero(np.asarray(mask).reshape(mask.shape[0], -1).any(axis=1))
                frames.update((start + hit).tolist())
            else:
                frames.update(range(start, first.stop))
        else:
            frames.add(int(first))
    return sorted(int(t) for t in frames)


def painted_planes(data, atoms, frames) -> dict[int, np.ndarray]:
    """The planes ``frames`` of a Labels layer's ``data`` as a ``paint`` event's history
    atoms leave them: napari emits the event of a single ``paint``/``fill``/
    ``data_setitem`` before it writes the pixels (a stroke's after), so the atoms' new
    values are written into copies of the planes (the same values again, if written)."""
    planes = {t: np.array(data[t], copy=True) for t in frames}
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is None:  # (indices, old values, new values)
            index, _, new = atom
            at = np.asarray(index[0])
            new = np.broadcast_to(np.asarray(new), at.shape)
            for t, plane in planes.items():
                hit = at == t
                if hit.any():
                    plane[tuple(np.asarray(i)[hit] for i in index[1:])] = new[hit]
            continue
        first, mask = key[0], atom.mask
        if isinstance(first, slice):
            span = range(first.start or 0, first.stop)
        else:
            span, mask = [int(first)], None if mask is None else np.asarray(mask)[None]
        for k, t in enumerate(span):
            if t not in planes:
                continue
            region = planes[t][key[1:]]  # a view
            if mask is None:
                region[...] = atom.new_value
            else:
                region[np.asarray(mask)[k]] = atom.new_value
    return planes


#: the TracksOutput of each track labels layer (a second linking reuses the layer)
_OWNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _real(layer):
    """The layer itself, not napari's proxy of it (a plugin's viewer hands out a new
    proxy at each access: the layer is the key, and what is weakly referenced)."""
    return getattr(layer, "__wrapped__", layer)


def _owner(layer):
    return _OWNERS.get(layer) if layer is not None else None


#: napari's undo history keeps this many items (``Labels._history_limit`` in 0.9)
HISTORY_LIMIT = 100


def _hook(layer) -> None:
    """Once per layer: its ``paint`` events and its undo and redo go to the layer's
    TracksOutput. napari 0.9's undo and redo emit no event, so the layer's own methods
    are wrapped (napari's Ctrl+Z, Ctrl+Shift+Z and ``layer.undo()`` all call them)."""
    layer = _real(layer)
    if layer in _HOOKED:
        return
    _HOOKED.add(layer)
    ref = weakref.ref(layer)
    undo, redo = layer.undo, layer.redo

    def on_paint(event):
        out = _owner(ref())
        if out is not None:
            out._on_paint(event.value)

    def stepped(step, history: str, redo_: bool):
        before = _history_length(ref(), history)
        step()
        out = _owner(ref())
        if out is None:
            return None
        if before is not None and before == _history_length(ref(), history):
            # napari had nothing to undo (redo): its history was reset (the layer made
            # read-only clears it), so the table's steps no longer match any pixels
            out._undo.clear()
            out._redo.clear()
            return None
        return out._stepped(redo=redo_)

    def undo_step():
        return stepped(undo, "_undo_history", False)

    def redo_step():
        return stepped(redo, "_redo_history", True)

    layer.events.paint.connect(on_paint)
    layer.undo, layer.redo = undo_step, redo_step


_HOOKED: weakref.WeakSet = weakref.WeakSet()


def _history_length(layer, name: str) -> int | None:
    """How many items napari's undo (redo) history of ``layer`` holds; None where this
    napari keeps it otherwise (then every undo counts as done, as before)."""
    history = getattr(layer, name, None)
    try:
        return len(history) if history is not None else None
    except TypeError:
        return None


@dataclass(frozen=True)
class _Step:
    """One entry of the history, beside napari's own (a stroke or a correction)."""

    change: TableChange
    message: str


class TracksOutput:
    """The track layers of one image and their table (see the module)."""

    #: a stroke on the track labels, an undo or a redo changed the tracks: what it did
    changed = Signal(str)

    def __init__(self, viewer, image, settings: TrackSettings):
        self.viewer = viewer
        self.image = image
        self.settings = settings
        self.table: dict | None = None
        self.labels = None  # the track labels layer
        self.lines = None  # the Tracks layer
        # one _Step per item of the layer's undo and redo history (napari's), in step
        self._undo: list[_Step] = []
        self._redo: list[_Step] = []
        self._correcting: _Step | None = None  # a merge or split writing its pixels
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
        self._undo.clear()
        self._redo.clear()
        self.selected = None
        selection = self.viewer.layers.selection
        active = selection.active
        name = track_labels_name(self.image.name)
        layer = self._find(name, Labels, "tracks")
        if layer is not None and tuple(layer.data.shape) == tracks.shape:
            layer.data = tracks
            # the history of strokes and corrections starts with these tracks: napari
            # keeps a layer's undo history when its data is set (its undo would write
            # the old tracks' strokes); making the layer read-only for a moment clears
            # it (napari's public way; the layer returns to pan/zoom)
            layer.editable = False
            layer.editable = True
        else:
            layer = self.viewer.add_labels(
                tracks, name=name, metadata={META_KEY: "tracks"}, opacity=0.6,
                **transform_kwargs(self.image),
            )  # fmt: skip
        _hook(layer)
        _OWNERS[_real(layer)] = self
        # Ctrl+Z, Ctrl+Shift+Z there: napari's own keys, said here to be seen in the keymap
        layer.bind_key("Control-Z", lambda lay: lay.undo(), overwrite=True)
        layer.bind_key("Control-Shift-Z", lambda lay: lay.redo(), overwrite=True)
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

    def _ensure_layers(self) -> None:
        """:class:`TrackEditError` (nothing changed) when there are no tracks or their
        labels layer was removed."""
        problem = self._require_layers()
        if problem:
            raise TrackEditError(problem)

    # -- corrections -------------------------------------------------------------------
    def merge(self, a: int, b: int) -> str:
        """Merge tracks ``a`` and ``b`` (the later one takes the earlier one's id);
        returns what was done. :class:`TrackEditError` (nothing changed) when it cannot."""
        self._ensure_layers()
        return self._apply(plan_merge(self.table, a, b))

    def split(self, track: int, frame: int) -> str:
        """Split ``track`` at ``frame`` (a new id from that frame on)."""
        self._ensure_layers()
        return self._apply(plan_split(self.table, track, frame))

    def _apply(self, edit) -> str:
        """Write a correction into the layer through napari's history (one undo step)."""
        layer = self.labels
        if edit.new > np.iinfo(layer.data.dtype).max:
            layer.data = np.asarray(layer.data).astype(np.promote_types(
                layer.data.dtype, np.min_scalar_type(edit.new)))  # fmt: skip
        frames = [t for t, _, _ in edit.relabel]
        step = _Step(table_change(self.table, edit.table, frames), edit.message)
        self._correcting = step
        try:
            with layer.block_history():
                for t, old, new in edit.relabel:
                    hit = np.nonzero(np.asarray(layer.data[t]) == old)
                    if hit[0].size:
                        index = (np.full(hit[0].size, t), *hit)
                        layer.data_setitem(index, new, refresh=False)
        finally:
            self._correcting = None
        self.table = edit.table
        self._refresh()
        self.selected = edit.track
        return edit.message

    def _on_paint(self, atoms) -> None:
        """napari's ``paint`` event: a stroke (or a correction's pixels) is in the
        layer's history; the frames it touched are measured again."""
        if self._correcting is not None:  # the table is the correction's
            self._push(self._correcting)
            return
        if self.table is None:
            return
        layer = self.labels
        frames = [t for t in painted_frames(atoms) if 0 <= t < layer.data.shape[0]]
        planes = painted_planes(layer.data, atoms, frames)
        try:
            edit = plan_repaint(self.table, planes, self._class_planes(planes))
        except InvalidInputError as exc:  # kept in step with napari's history
            self._push(_Step(table_change(self.table, self.table, ()), str(exc)))
            self.changed.emit(f"the tracks could not follow the painting: {exc}")
            return
        self._push(_Step(table_change(self.table, edit.table, edit.frames), edit.message))
        self.table = edit.table
        self._refresh(pixels=False)
        self.changed.emit(edit.message)

    def _class_planes(self, planes: dict) -> dict | None:
        """The run's class map ("<image> [sansa]") at the painted frames, when it has the
        track labels' shape (a new track painted by hand takes the class under it)."""
        from napari.layers import Labels

        from napari_sansa.napari.outputs import level_output_name

        output = self._find(level_output_name(self.image), Labels, "output")
        if output is None or output.multiscale or output.data.shape != self.labels.data.shape:
            return None
        return {t: np.asarray(output.data[t]) for t in planes}

    def _push(self, step: _Step) -> None:
        limit = getattr(type(_real(self.labels)), "_history_limit", HISTORY_LIMIT)
        self._undo = [*self._undo, step][-limit:]  # napari drops its older items too
        self._redo.clear()  # as napari's: a new item ends what could be redone

    def _stepped(self, *, redo: bool) -> str | None:
        """After napari undid (or redid) the layer's last history item: the table too."""
        source, target = (self._redo, self._undo) if redo else (self._undo, self._redo)
        if not source:
            return None
        step = source.pop()
        target.append(step)
        self.table = apply_change(self.table, step.change, undo=not redo)
        self._refresh(pixels=False)
        message = f"{'redone' if redo else 'undone'}: {step.message}"
        self.changed.emit(message)
        return message

    def undo(self) -> str | None:
        """Undo the last merge, split or stroke on the track labels (None: there is
        none); napari's own undo of the layer, which the table follows.
        :class:`TrackEditError` (nothing changed) when the layer was removed."""
        return self._replay(self._undo, "undo")

    def redo(self) -> str | None:
        """Redo what :meth:`undo` undid last (None: nothing)."""
        return self._replay(self._redo, "redo")

    def _replay(self, steps: list, action: str) -> str | None:
        """napari's ``undo`` or ``redo`` of the track labels (the hooked methods, which
        the table follows) when ``steps`` holds something to replay."""
        if not steps or self.labels is None:
            return None
        self._ensure_layers()
        return getattr(self.labels, action)()

    def undo_or_layer(self) -> None:
        """Ctrl+Z on the track labels layer (kept for callers of the older name)."""
        if self.labels is not None:
            self.labels.undo()

    @property
    def can_undo(self) -> bool:
        """Something to undo, on a track labels layer still in the viewer."""
        return bool(self._undo) and self._require_layers() is None

    @property
    def can_redo(self) -> bool:
        return bool(self._redo) and self._require_layers() is None

    def _refresh(self, pixels: bool = True) -> None:
        """The layers after the table changed (``pixels``: the labels' too; napari
        refreshed them itself after a stroke, an undo or a redo)."""
        if self.labels is not None and self.labels in self.viewer.layers:
            if pixels:
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
        frames = set(np.unique(data["t"]).tolist())
        if self.labels is not None:  # frames without tracks: 0 (e.g. all erased)
            frames |= set(range(self.labels.data.shape[0]))
        for t in sorted(frames):
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
