"""The confidence table: one row per finished frame, sortable, a click jumps to the frame."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

__all__ = ["ScoreTable"]

COLUMNS = ("frame", "min score", "kind", "scores by class")


def _item(value, text: str | None = None) -> QTableWidgetItem:
    item = QTableWidgetItem()
    # numbers as data (not text) so that sorting is numeric
    item.setData(Qt.ItemDataRole.DisplayRole, value if text is None else text)
    item.setData(Qt.ItemDataRole.UserRole, value)
    item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    return item


class ScoreTable(QTableWidget):
    """Frames and SAM2's predicted IoU (the lowest over the frame's classes).

    Click a column header to sort (e.g. "min score" ascending: least confident
    first); click a row to show that frame (``frame_clicked`` carries its number).
    """

    frame_clicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.setMinimumHeight(140)
        self.cellClicked.connect(self._on_cell_clicked)
        self._frame_items: dict[int, QTableWidgetItem] = {}

    def clear_rows(self) -> None:
        self.setRowCount(0)
        self._frame_items.clear()

    def set_frame(self, frame: int, scores: dict, kind: str, label: str) -> None:
        """Add (or replace) the row of ``frame``; ``kind``: 'reference', 'predicted' or
        'kept' (edited by hand, left as it was)."""
        sorting = self.isSortingEnabled()
        self.setSortingEnabled(False)  # rows must not move while one is filled in
        old = self._frame_items.get(frame)
        if old is None:
            row = self.rowCount()
            self.insertRow(row)
        else:
            row = old.row()
        low = round(min(scores.values()), 3) if scores else float("nan")
        text = ", ".join(f"{c}: {s:.3f}" for c, s in sorted(scores.items()))
        frame_item = _item(int(frame))
        frame_item.setToolTip(label)
        self.setItem(row, 0, frame_item)
        self._frame_items[frame] = frame_item
        self.setItem(row, 1, _item(float(low)))
        self.setItem(row, 2, _item(kind))
        self.setItem(row, 3, _item(text))
        self.setSortingEnabled(sorting)

    def frames(self) -> list[int]:
        """Frame numbers in the order the rows are shown."""
        return [self.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in range(self.rowCount())]

    def kinds(self) -> dict[int, str]:
        """Frame number -> 'reference', 'predicted' or 'kept', as shown."""
        return {
            self.item(r, 0).data(Qt.ItemDataRole.UserRole): self.item(r, 2).text()
            for r in range(self.rowCount())
        }

    def min_scores(self) -> dict[int, float]:
        return {
            self.item(r, 0).data(Qt.ItemDataRole.UserRole): self.item(r, 1).data(
                Qt.ItemDataRole.UserRole
            )
            for r in range(self.rowCount())
        }

    def _on_cell_clicked(self, row: int, _column: int) -> None:
        item = self.item(row, 0)
        if item is not None:
            self.frame_clicked.emit(int(item.data(Qt.ItemDataRole.UserRole)))
