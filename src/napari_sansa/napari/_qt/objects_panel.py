"""Advanced run settings for large images and objects, and the per-frame object counts.

:class:`TilesObjectsPanel`: tile size and halo (issue 13's tiles), the "objects"
checkbox with the splitting's minimum object size and seed distance, "per plane"
(z-stacks: objects of each plane on their own instead of 3D objects across the planes
of an image whose axis is named "z"), and "refine with SAM2" (each object redrawn by a
SAM2 box prompt, per plane); ``settings()``
gives the matching :class:`~napari_sansa.napari.worker.RunSettings` fields.
:class:`ObjectCounts`: one row per finished frame, one column per class, the number of
objects (shown only for runs with objects); a click on a row jumps to the frame.
"""

from __future__ import annotations

from magicgui.widgets import CheckBox, SpinBox
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

__all__ = ["ObjectCounts", "TilesObjectsPanel"]

#: the track columns of the counts: (key, header, tooltip)
TRACK_COLUMNS = (
    ("tracks", "tracks", "tracks in the frame (the '[sansa tracks]' layer)"),
    ("new", "new", "tracks that begin in the frame without a parent"),
    ("divisions", "div", "tracks that begin in the frame by a division"),
)


TRACKS_TIP = (
    "link the objects of a time-lapse into tracks when the run ends (objects too): "
    "'[sansa track labels]' (one id per track) and a '[sansa tracks]' Tracks layer; "
    "merge and split tracks on the Tracks page (shown after such a run), or paint, erase "
    "and fill on the track labels: the table and the Tracks layer follow"
)


class TilesObjectsPanel:
    """The controls (public attributes; ``widgets`` in order, laid out by the widget)."""

    def __init__(self):
        from napari_sansa.core.objects import ObjectOptions  # numpy only

        defaults = ObjectOptions()
        self.tile_size = SpinBox(
            label="tile size (0: off)", min=0, max=65536, step=128, value=0,
            tooltip="cut frames larger than this (pixels) into tiles, each seen by SAM2 at "
            "full detail; references and targets alike (independent mode only); 0 = off, else "
            "at least 64",
        )  # fmt: skip
        self.halo = SpinBox(
            label="halo (-1: auto)", min=-1, max=8192, step=16, value=-1,
            tooltip="context pixels kept around each tile's own part; -1 (auto) = tile size / 8",
        )  # fmt: skip
        self.instances = CheckBox(
            text="objects (one label per object)", value=False,
            tooltip="also split each class into objects: an '<image> [sansa objects]' layer "
            "whose features give each object's class, area, centroid, box and mean probability",
        )  # fmt: skip
        self.min_size = SpinBox(
            label="min object size",
            min=0,
            max=10**7,
            value=defaults.min_size,
            tooltip="objects smaller than this (pixels) are dropped",
        )
        self.seed_distance = SpinBox(
            label="seed distance", min=1, max=10_000, value=defaults.seed_distance,
            tooltip="the closest two touching objects' centres may be (pixels): larger, "
            "fewer splits",
        )  # fmt: skip
        self.refine = CheckBox(
            text="refine with SAM2", value=defaults.refine,
            tooltip="redraw each object's borders by a SAM2 decoder pass with its box as the "
            "prompt, on the features the run already computed (no second encoding)",
        )  # fmt: skip
        self.per_plane = CheckBox(
            text="objects per plane", value=False,
            tooltip="z-stacks (an axis named 'z'): split each plane on its own, as before; "
            "off: one 3D object per nucleus across the planes, with the voxel size of the "
            "image layer's scale (z, y, x)",
        )  # fmt: skip
        self.tracks = CheckBox(
            text="tracks (link objects over time)", value=False, tooltip=TRACKS_TIP,
        )  # fmt: skip
        self.max_move = SpinBox(
            label="max move (0: auto)", min=0, max=100_000, value=0,
            tooltip="the farthest (pixels) an object's centre moves from one frame to the "
            "next and stays the same track; 0: 1.5 times the objects' median diameter",
        )  # fmt: skip
        self.follow = CheckBox(
            text="follow with SAM2", value=False,
            tooltip="link on where SAM2 carries each object into the next frame (its memory "
            "attention, on the features the run left in the cache) instead of where it "
            "overlaps: for cells that move more than their size or pass each other; slower "
            "(decoder passes per object and frame); not with tiles",
        )  # fmt: skip
        self.widgets = [self.tile_size, self.halo, self.instances, self.min_size,
                        self.seed_distance, self.per_plane, self.refine, self.tracks,
                        self.max_move, self.follow]  # fmt: skip
        self.instances.changed.connect(self._on_instances)
        self.tracks.changed.connect(self._on_tracks)
        self._no_time: str | None = None
        self._on_instances()

    def _on_instances(self, value=None) -> None:
        on = bool(self.instances.value)
        self.min_size.enabled = self.seed_distance.enabled = self.refine.enabled = on
        self.per_plane.enabled = on
        if not on and self.tracks.value:
            self.tracks.value = False  # tracks link objects

    def _on_tracks(self, value=None) -> None:
        on = bool(self.tracks.value)
        if on and not self.instances.value:
            self.instances.value = True  # tracks imply objects
        self.max_move.enabled = self.follow.enabled = on

    def set_image(self, image) -> None:
        """Enable 'tracks' for images with a T axis; otherwise say why in its tooltip."""
        from napari_sansa.napari.tracks_output import time_axis

        problem = "choose an image first"
        if image is not None:
            try:
                _, problem = time_axis(image)
            except ValueError as exc:
                problem = str(exc)
        self._no_time = problem
        self.tracks.enabled = problem is None
        # why not first (the box is greyed), then what tracks do (it said only why not)
        why = "" if problem is None else f"not for this image: {problem}\n\n"
        self.tracks.tooltip = why + TRACKS_TIP
        if problem is not None and self.tracks.value:
            self.tracks.value = False
        self.max_move.enabled = self.follow.enabled = bool(self.tracks.value)

    def settings(self) -> dict:
        """``tile_size``, ``halo`` and ``instances`` for RunSettings."""
        from napari_sansa.core.objects import ObjectOptions

        tile = int(self.tile_size.value) or None
        halo = int(self.halo.value)
        instances = None
        if self.instances.value:
            instances = ObjectOptions(min_size=int(self.min_size.value),
                                      seed_distance=int(self.seed_distance.value),
                                      refine=bool(self.refine.value),
                                      dims="2d" if self.per_plane.value else None)  # fmt: skip
        tracks = None
        if self.tracks.value and self.tracks.enabled:  # enabled: the image has a T axis
            from napari_sansa.napari.tracks_output import TrackSettings

            tracks = TrackSettings(
                max_distance=float(self.max_move.value) or None, follow=bool(self.follow.value)
            )
        return {
            "tile_size": tile,
            "halo": None if halo < 0 or tile is None else halo,
            "instances": instances,
            "tracks": tracks,
        }


class ObjectCounts(QTableWidget):
    """Objects per class and frame of the last run with objects."""

    frame_clicked = Signal(object)

    def __init__(self, parent=None):
        super().__init__(0, 1, parent)
        self.setHorizontalHeaderLabels(["frame"])
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setMinimumHeight(100)
        self.setToolTip("objects per class in each frame (the '[sansa objects]' layer)")
        self.cellClicked.connect(self._on_cell_clicked)
        self._counts: dict = {}
        self._tracks: dict = {}
        self.setVisible(False)

    def clear_rows(self) -> None:
        self._counts = {}
        self._tracks = {}
        self.setRowCount(0)
        self.setColumnCount(1)
        self.setVisible(False)

    def set_frame(self, key, counts: dict) -> None:
        """The object counts (class -> n) of the frame ``key``."""
        self._counts[key] = {int(c): int(n) for c, n in counts.items()}
        self._render()
        self.setVisible(True)

    def set_tracks(self, counts: dict) -> None:
        """Per frame: ``{"tracks": n, "new": n, "divisions": n}`` (the last run's tracks)."""
        self._tracks = {int(t): dict(v) for t, v in counts.items()}
        self._render()

    def _render(self) -> None:
        classes = sorted({c for v in self._counts.values() for c in v})
        keys = sorted(self._counts, key=lambda k: (k,) if isinstance(k, int) else k)
        track_columns = TRACK_COLUMNS if self._tracks else ()
        self.setColumnCount(1 + len(classes) + len(track_columns))
        self.setHorizontalHeaderLabels(
            ["frame", *(f"class {c}" for c in classes), *(t for _, t, _ in track_columns)]
        )
        for j, (_, _, tip) in enumerate(track_columns):
            self.horizontalHeaderItem(1 + len(classes) + j).setToolTip(tip)
        self.setRowCount(len(keys))
        for r, k in enumerate(keys):
            item = QTableWidgetItem(str(k if isinstance(k, int) else f"{k[0]}: {k[1]}"))
            item.setData(Qt.ItemDataRole.UserRole, k)
            self.setItem(r, 0, item)
            for j, c in enumerate(classes):
                self.setItem(r, 1 + j, QTableWidgetItem(str(self._counts[k].get(c, 0))))
            for j, (name, _, _) in enumerate(track_columns):
                n = self._tracks.get(k, {}).get(name, 0) if isinstance(k, int) else 0
                self.setItem(r, 1 + len(classes) + j, QTableWidgetItem(str(n)))

    def tracks(self) -> dict:
        """Frame -> {"tracks", "new", "divisions"}, as shown (after a run with tracks)."""
        return {k: dict(v) for k, v in self._tracks.items()}

    def counts(self) -> dict:
        """Frame -> {class: number of objects}, as shown."""
        return {k: dict(v) for k, v in self._counts.items()}

    def _on_cell_clicked(self, row: int, _column: int) -> None:
        item = self.item(row, 0)
        if item is not None:
            self.frame_clicked.emit(item.data(Qt.ItemDataRole.UserRole))
