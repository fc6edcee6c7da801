"""Results at a glance: a confidence plot along the frames and a table, one column per class.

Both show SAM2's predicted IoU of each finished frame; a click on a row or on the plot
jumps to that frame (``frame_clicked`` carries its key: the frame number, or
``(part, frame)`` in an image set).
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

__all__ = ["ConfidencePlot", "ScoreTable"]

#: the fixed columns; one "class N" column per class follows
COLUMNS = ("frame", "min", "kind")
#: what each fixed column holds (its header's tooltip)
COLUMN_TIPS = (
    "the frame (click a row to show it)",
    "the frame's lowest score over its classes (least confident first)",
    "ref: a reference, pred: predicted, kept: edited by hand and left as it was",
)
#: the plot's tooltip once it shows counts
COUNT_TIP = (
    "bars: lowest score per frame, in frame order (green: references); white line: "
    "objects per frame (tracks once linked), up to the largest count; click a bar"
)
#: the confidence plot's height (px)
PLOT_HEIGHT = 28  # low enough that the main page still fits when it appears
KIND_COLORS = {"reference": "#4caf50", "predicted": "#42a5f5", "kept": "#ffb300"}
#: the kind as the narrow table shows it (the whole word in its tooltip)
KIND_TEXT = {"reference": "ref", "predicted": "pred", "kept": "kept"}


class _Item(QTableWidgetItem):
    """A cell that sorts by its sort value (a frame shown as 't=1, z=2' sorts by frame)."""

    def __lt__(self, other):
        mine, theirs = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if mine is not None and theirs is not None:
            return mine < theirs
        return super().__lt__(other)


#: the item data role of a cell's sort value
SORT_ROLE = Qt.ItemDataRole.UserRole + 1


def frame_text(key, label: str) -> str:
    """What the frame column shows: the frame number, or for a stack with several frame
    axes the position on them ('frame 5 (t=1, z=2)' -> 't=1, z=2'), or an image set's
    label."""
    if isinstance(key, int):
        if label.startswith(f"frame {key} (") and label.endswith(")"):
            return label[len(f"frame {key} (") : -1]
        return str(key)
    return label


def _item(value, text: str | None = None, key=None) -> QTableWidgetItem:
    item = _Item()
    item.setData(SORT_ROLE, value)
    # numbers as data (not text) so that sorting is numeric
    item.setData(Qt.ItemDataRole.DisplayRole, value if text is None else text)
    item.setData(Qt.ItemDataRole.UserRole, value if key is None else key)
    item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    return item


def sort_value(key):
    """Keys sort in frame order; an image set's (part, frame) as one number."""
    return key if isinstance(key, int) else key[0] * 1_000_000 + key[1]


class ScoreTable(QTableWidget):
    """One row per finished frame: its lowest score, its kind and each class's score.

    Sorted by the lowest score (least confident first); click a header to sort by
    another column, a row to show its frame.
    """

    frame_clicked = Signal(object)

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        for k, tip in enumerate(COLUMN_TIPS):
            self.horizontalHeaderItem(k).setToolTip(tip)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        header = self.horizontalHeader()
        # columns as wide as their texts (Qt's own fit adds room for a sort arrow to
        # every column): frame, min and kind fit the narrow dock, the classes scroll
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setMinimumSectionSize(24)
        header.setDefaultSectionSize(24)
        header.setStretchLastSection(True)
        self.setSortingEnabled(True)
        self.sortByColumn(1, Qt.SortOrder.AscendingOrder)
        self.setMinimumHeight(120)
        self.setToolTip(
            "SAM2's predicted IoU per frame and class (1.0: a painted reference); kind: "
            "ref(erence), pred(icted) or kept (edited by hand); "
            "least confident first; click a row to show the frame"
        )
        self.cellClicked.connect(self._on_cell_clicked)
        self._items: dict = {}
        self._classes: list[int] = []
        self._fit_columns()

    def sizeHint(self):  # noqa: N802 - Qt's name: a few rows; the page gives it the rest
        hint = super().sizeHint()
        hint.setHeight(self.minimumHeight())
        return hint

    def clear_rows(self) -> None:
        self.setRowCount(0)
        self._items.clear()
        self._classes = []
        self.setColumnCount(len(COLUMNS))
        for col in range(len(COLUMNS)):
            self.setColumnWidth(col, 0)
        self._fit_columns()

    def _class_column(self, c: int) -> int:
        if c not in self._classes:
            self._classes.append(c)
            self.setColumnCount(len(COLUMNS) + len(self._classes))
            header = QTableWidgetItem(f"class {c}")
            header.setToolTip(f"SAM2's predicted IoU of class {c}")
            self.setHorizontalHeaderItem(self.columnCount() - 1, header)
        return len(COLUMNS) + self._classes.index(c)

    def set_frame(self, key, scores: dict, kind: str, label: str) -> None:
        """Add (or replace) the row of ``key``; ``kind``: 'reference', 'predicted' or
        'kept' (edited by hand, left as it was); ``label`` says which frame it is."""
        sorting = self.isSortingEnabled()
        self.setSortingEnabled(False)  # rows must not move while one is filled in
        old = self._items.get(key)
        if old is None:
            row = self.rowCount()
            self.insertRow(row)
        else:
            row = old.row()
        low = round(min(scores.values()), 3) if scores else float("nan")
        text = frame_text(key, label)
        first = _item(sort_value(key), None if text == str(key) else text, key=key)
        first.setToolTip(label)
        self.setItem(row, 0, first)
        self._items[key] = first
        self.setItem(row, 1, _item(float(low), f"{low:.3f}"))
        kind_item = _item(kind, KIND_TEXT.get(kind, kind))
        kind_item.setToolTip(kind)
        kind_item.setForeground(QColor(KIND_COLORS.get(kind, "#ffffff")))
        self.setItem(row, 2, kind_item)
        for c, s in scores.items():
            self.setItem(row, self._class_column(int(c)), _item(float(s), f"{s:.3f}"))
        self.setSortingEnabled(sorting)
        self._fit_columns(self._items[key].row())

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self._fit_columns()  # the headers in the font napari's style gives them

    def _fit_columns(self, row: int | None = None) -> None:
        """Widen the columns to the header texts and to ``row``'s texts (never narrower:
        one row at a time, however long the stack)."""
        cells, heads = self.fontMetrics(), self.horizontalHeader().fontMetrics()
        for col in range(self.columnCount()):
            head = self.horizontalHeaderItem(col)
            item = None if row is None else self.item(row, col)
            width = max(  # a header: room for napari's larger header font and the arrow
                heads.horizontalAdvance(head.text() if head is not None else "")
                + (26 if col == self.horizontalHeader().sortIndicatorSection() else 16),
                cells.horizontalAdvance(item.text()) + 12 if item is not None else 0,
            )
            if width > self.columnWidth(col):
                self.setColumnWidth(col, width)

    def _key(self, row: int):
        item = self.item(row, 0)
        return item.data(Qt.ItemDataRole.UserRole)

    def frames(self) -> list:
        """Frame keys in the order the rows are shown."""
        return [self._key(r) for r in range(self.rowCount())]

    def select_frame(self, key) -> None:
        """Select (and scroll to) the row of ``key``."""
        for r in range(self.rowCount()):
            if self._key(r) == key:
                self.selectRow(r)
                self.scrollToItem(self.item(r, 0))
                return

    def kinds(self) -> dict:
        """Frame key -> 'reference', 'predicted' or 'kept', as shown."""
        return {
            self._key(r): self.item(r, 2).data(Qt.ItemDataRole.UserRole)
            for r in range(self.rowCount())
        }

    def min_scores(self) -> dict:
        return {
            self._key(r): self.item(r, 1).data(Qt.ItemDataRole.UserRole)
            for r in range(self.rowCount())
        }

    def class_scores(self) -> dict:
        """Frame key -> {class: score}, as shown (one column per class)."""
        out = {}
        for r in range(self.rowCount()):
            row = {}
            for i, c in enumerate(self._classes):
                item = self.item(r, len(COLUMNS) + i)
                if item is not None:
                    row[c] = item.data(Qt.ItemDataRole.UserRole)
            out[self._key(r)] = row
        return out

    def _on_cell_clicked(self, row: int, _column: int) -> None:
        if self.item(row, 0) is not None:
            self.frame_clicked.emit(self._key(row))


class ConfidencePlot(QWidget):
    """The lowest score of each finished frame, in frame order, as a small bar plot;
    a click on a bar jumps to its frame (``frame_clicked``)."""

    frame_clicked = Signal(object)
    MARGIN = 4

    def __init__(self, parent=None):
        super().__init__(parent)
        self._values: dict = {}  # key -> (lowest score, kind)
        self._counts: dict = {}  # key -> objects (or tracks) in the frame
        self.setMinimumHeight(PLOT_HEIGHT)
        self.setMaximumHeight(PLOT_HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("lowest score per frame, in frame order (green: references); click a bar")
        self.setVisible(False)  # shown once a run has scores: before, it takes no room

    def clear(self) -> None:
        self._values.clear()
        self._counts.clear()
        self.setVisible(False)
        self.update()

    def set_count(self, key, n: int) -> None:
        """The number of objects (or tracks) in the frame ``key``: a white line over
        the bars, scaled to the largest count."""
        self._counts[key] = int(n)
        self.setToolTip(COUNT_TIP)
        self.update()

    def counts(self) -> dict:
        return dict(self._counts)

    def set_frame(self, key, scores: dict, kind: str, label: str = "") -> None:
        low = min(scores.values()) if scores else float("nan")
        self._values[key] = (float(low), kind)
        self.setVisible(True)
        self.update()

    def keys(self) -> list:
        """The frames shown, left to right."""
        return sorted(self._values, key=sort_value)

    def bar_rect(self, key) -> QRectF:
        """Where the bar of ``key`` is drawn (the whole column it can be clicked in)."""
        keys = self.keys()
        m = self.MARGIN
        width = (self.width() - 2 * m) / max(len(keys), 1)
        i = keys.index(key)
        return QRectF(m + i * width, m, width, self.height() - 2 * m)

    def key_at(self, x: float):
        keys = self.keys()
        if not keys:
            return None
        m = self.MARGIN
        width = (self.width() - 2 * m) / len(keys)
        i = int((x - m) // width)
        return keys[i] if 0 <= i < len(keys) else None

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#262930"))
        m = self.MARGIN
        h = self.height() - 2 * m
        painter.setPen(QPen(QColor("#5a5f6a"), 1, Qt.PenStyle.DashLine))
        half = m + h * 0.5
        painter.drawLine(QPointF(m, half), QPointF(self.width() - m, half))
        for key in self.keys():
            low, kind = self._values[key]
            rect = self.bar_rect(key)
            value = 0.0 if math.isnan(low) else max(0.0, min(1.0, low))
            bar = QRectF(rect.x() + 0.5, m + h * (1 - value), max(rect.width() - 1, 1), h * value)
            painter.fillRect(bar, QColor(KIND_COLORS.get(kind, "#42a5f5")))
        self._paint_counts(painter, m, h)
        painter.end()

    def _paint_counts(self, painter, m: float, h: float) -> None:
        keys = [k for k in self.keys() if k in self._counts]
        top = max((self._counts[k] for k in keys), default=0)
        if not keys or top <= 0:
            return
        points = []
        for key in keys:
            rect = self.bar_rect(key)
            y = m + h * (1 - self._counts[key] / top)
            points.append(QPointF(rect.center().x(), y))
        painter.setPen(QPen(QColor("#ffffff"), 1.5))
        if len(points) == 1:
            painter.drawEllipse(points[0], 2, 2)
        for a, b in zip(points, points[1:], strict=False):
            painter.drawLine(a, b)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        key = self.key_at(event.position().x() if hasattr(event, "position") else event.x())
        if key is not None:
            self.frame_clicked.emit(key)
