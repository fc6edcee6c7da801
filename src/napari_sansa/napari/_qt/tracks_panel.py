"""Tracks in the dock: the table of the last run's tracks and its corrections.

:class:`TracksPanel`: one row per track (id, first and last frame, frames, parent,
class); select one to show it (its first frame, its id in the status), two to merge
them; "Merge", "Split here" (the selected track at the frame shown), "Undo" (the
last correction or stroke painted on the track labels) and "Redo" go to the session
(:mod:`napari_sansa.napari.track_session`), which changes the layers and the table;
strokes on the track labels refresh the table too (``tracks_changed``). The widget's
Tracks page, shown by a run with tracks.
"""

from __future__ import annotations

from magicgui.widgets import Label, PushButton
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from napari_sansa.napari._qt.layout import row, tight

__all__ = ["TracksPanel"]

#: the table's columns: (summary key, header, header tooltip)
COLUMNS = (
    ("track", "id", "the track's id (its label in '[sansa track labels]')"),
    ("start", "from", "its first frame"),
    ("end", "to", "its last frame (frames missed between: see the layer's features)"),
    ("parent", "par.", "its parent: the track it divided from (-: none)"),
    ("class", "cls", "its class (most of its frames)"),
)


#: what the Tracks page says above the table
NOTE = (
    "Click a track on the '[sansa track labels]' layer (pan/zoom mode) or a row; "
    "Ctrl+click a second one to merge the two. 'Split here': the selected track at the "
    "frame shown. Paint, erase or fill on that layer: the table follows."
)


class TrackTableWidget(QTableWidget):
    """The tracks, one row each (sorted by id)."""

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels([title for _, title, _ in COLUMNS])
        for k, (_, _, tip) in enumerate(COLUMNS):
            self.horizontalHeaderItem(k).setToolTip(tip)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        header = self.horizontalHeader()
        # 'from' and 'par.' as wide as their titles, the others share the rest (narrow
        # padding): the five fit the dock's width at napari's default size, also when many
        # tracks bring a vertical scroll bar (every column as wide as its texts then needed
        # sideways scrolling: 'cls' was cut)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        for k, (key, _, _) in enumerate(COLUMNS):
            if key in ("start", "parent"):
                header.setSectionResizeMode(k, QHeaderView.ResizeMode.ResizeToContents)
        header.setMinimumSectionSize(20)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # no cell padding, 1 px beside the titles: an id of two digits (track 10) fits
        # the id column at the dock's width (the cells' 2 px cut it to '…')
        self.setStyleSheet("QHeaderView::section { padding: 1px 1px; } QTableWidget::item "
                           "{ padding: 0px; }")  # fmt: skip
        self.setMinimumHeight(110)
        self.setToolTip(
            "the tracks of the last run ('[sansa tracks]'): click one to show it, "
            "Ctrl+click a second one to merge the two"
        )

    def sizeHint(self):  # noqa: N802 (Qt's name)
        """As tall as its minimum: the page's scroll area sizes the page by its parts'
        preferred heights (its note wraps), so a table asking for ~190 px made the page
        scroll (and cut the table's last column) once the note grew; the table gets the
        height left over anyway (its stretch)."""
        hint = super().sizeHint()
        hint.setHeight(self.minimumHeight())
        return hint

    def set_rows(self, summary: dict) -> None:
        ids = summary.get("track", [])
        self.setRowCount(len(ids))
        for r in range(len(ids)):
            for c, (key, _, _) in enumerate(COLUMNS):
                value = int(summary[key][r])
                item = QTableWidgetItem()
                item.setData(Qt.ItemDataRole.DisplayRole, value if key != "parent" or value
                             else "-")  # fmt: skip
                item.setData(Qt.ItemDataRole.UserRole, int(ids[r]))
                self.setItem(r, c, item)

    def tracks(self) -> list[int]:
        return [int(self.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in range(self.rowCount())]

    def selected_tracks(self) -> list[int]:
        rows = sorted({i.row() for i in self.selectedIndexes()})
        return [int(self.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in rows]

    def select_track(self, track: int, add: bool = False) -> None:
        for r in range(self.rowCount()):
            if int(self.item(r, 0).data(Qt.ItemDataRole.UserRole)) == int(track):
                if not add:
                    self.clearSelection()
                mode = self.selectionMode()
                self.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
                self.selectRow(r)
                self.setSelectionMode(mode)
                self.scrollToItem(self.item(r, 0))
                return


class TracksPanel:
    """The table and the buttons (public: ``table``, ``merge_button``, ``split_button``,
    ``undo_button``, ``redo_button``; ``widgets`` for the layout)."""

    def __init__(self, widget):
        self.widget = widget
        self.session = widget.session
        self.table = TrackTableWidget()
        self.merge_button = PushButton(
            text="Merge",
            tooltip="merge the two tracks selected (Ctrl+click in the table, or click one on "
            "the track labels and Ctrl+click another): the later one takes the earlier one's id",
        )
        self.split_button = PushButton(
            text="Split here",
            tooltip="split the selected track at the frame shown: a new track from this "
            "frame on (its divisions follow the new part)",
        )
        self.undo_button = PushButton(
            text="Undo",
            tooltip="undo the last merge, split or stroke painted on the track labels, the "
            "table with it (also Ctrl+Z on that layer)",
        )
        self.redo_button = PushButton(
            text="Redo",
            tooltip="redo what Undo undid last, the table with it (also Ctrl+Shift+Z on the "
            "track labels layer); a new stroke or correction ends what can be redone",
        )
        # one row at the dock's width (as the Label page's buttons)
        self.buttons = tight(
            row(self.merge_button, self.split_button, self.undo_button, self.redo_button)
        )
        self.note = Label(value=NOTE)
        self.note.native.setWordWrap(True)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.merge_button.changed.connect(self.merge)
        self.split_button.changed.connect(self.split)
        self.undo_button.changed.connect(self.undo)
        self.redo_button.changed.connect(self.redo)
        self.session.tracks_changed.connect(self.refresh)
        # a new run replaces the tracks, a removed layer ends their history: the buttons
        self.session.running.connect(self._update_buttons)
        widget.viewer.layers.events.removed.connect(self._update_buttons)
        self.session.track_selected.connect(self._on_track_selected)
        self._quiet = False

    def page(self):
        """The Tracks page: the note, the table (it takes the height), the buttons."""
        from napari_sansa.napari._qt.layout import page

        body = page(self.note, self.table, self.buttons, stretch=False)
        body.layout().setStretchFactor(self.table, 1)
        return body

    def refresh(self) -> None:
        """Show the session's tracks (after a run, a correction, an undo or a redo)."""
        out = self.session.tracks
        if out is None or out.table is None or not self.session.alive:
            return
        selected = self.table.selected_tracks()
        self._quiet = True
        try:
            self.table.set_rows(out.summary())
            for track in selected:
                self.table.select_track(track, add=True)
        finally:
            self._quiet = False
        self._update_buttons()
        button = self.widget.page_buttons["Tracks"]
        if button.isHidden():  # the first tracks: their page shown
            button.setVisible(True)
            self.widget.show_page("Tracks")
        if out.labels is not None and out.labels.ndim == 3:  # (T, Y, X): a frame is a t
            per_frame = out.counts()
            self.widget.object_counts.set_tracks(per_frame)
            for t, n in per_frame.items():  # the plot's line: tracks per frame
                self.widget.plot.set_count(t, n["tracks"])

    def _update_buttons(self, *_) -> None:
        """Undo and Redo enabled only while there is something to undo or redo."""
        if not self.session.alive:  # the dock went away (layers removed as napari closes)
            return
        out = self.session.tracks
        ok = out is not None and out.table is not None
        self.undo_button.enabled = ok and out.can_undo
        self.redo_button.enabled = ok and out.can_redo

    def _on_selection(self) -> None:
        if self._quiet:
            return
        tracks = self.table.selected_tracks()
        if len(tracks) == 1:
            self._quiet = True
            try:
                self.session.select_track(tracks[0])
            finally:
                self._quiet = False
            if self.widget.image.value is self.session.tracks.image:
                self._go_to_start(tracks[0])

    def _go_to_start(self, track: int) -> None:
        """Show the track's first frame unless the frame shown is one of its frames."""
        from napari_sansa.core.track_edits import track_frames

        frames = track_frames(self.session.tracks.table, track)
        if frames.size and self.session.shown_time() not in set(frames.tolist()):
            self.widget.go_to_frame(int(frames[0]))

    def _on_track_selected(self, track: int) -> None:
        """A track selected on a layer (a click): Ctrl held adds it to the selection."""
        if self._quiet:
            return
        from qtpy.QtWidgets import QApplication

        add = bool(QApplication.keyboardModifiers() & Qt.KeyboardModifier.ControlModifier)
        self._quiet = True
        try:
            self.table.select_track(track, add=add)
        finally:
            self._quiet = False

    def merge(self, value=None) -> bool:
        tracks = self.table.selected_tracks()
        if len(tracks) != 2:
            self.session.fail(
                f"select two tracks to merge ({len(tracks)} selected): click one in the "
                "table, Ctrl+click the other"
            )
            return False
        return self.session.merge_tracks(*tracks)

    def split(self, value=None) -> bool:
        tracks = self.table.selected_tracks()
        if len(tracks) != 1:
            self.session.fail(
                f"select one track to split ({len(tracks)} selected), and show the frame "
                "where its new part begins"
            )
            return False
        return self.session.split_track(tracks[0])

    def undo(self, value=None) -> bool:
        done = self.session.undo_tracks()
        self._update_buttons()
        return done

    def redo(self, value=None) -> bool:
        done = self.session.redo_tracks()
        self._update_buttons()
        return done
