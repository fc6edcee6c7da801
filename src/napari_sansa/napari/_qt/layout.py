"""The dock widget's layout: sections in a scroll area, a folded 'advanced' part, a
footer that never moves, and controls that shrink to the dock's width."""

from __future__ import annotations

from magicgui.widgets import Container, Label, Select

__all__ = ["DOCK_WIDTH", "fixed_message", "heading", "row", "scrolling", "section"]


def row(*widgets) -> Container:
    row = Container(layout="horizontal", labels=False, widgets=widgets)
    row.margins = (0, 0, 0, 0)
    return row


def heading(text: str) -> Label:
    return Label(value=f"<b>{text}</b>")


def section(*widgets) -> Container:
    """Controls with their labels in one column; a message (a wrapped Label) takes the
    section's whole width."""
    parts, run = [], []
    for w in widgets:
        full = isinstance(w, Label) and w.native.wordWrap()
        if full or isinstance(w, Select):
            if run:
                parts.append(_labelled(run))
                run = []
            if isinstance(w, Select):  # a list of layer names: the dock's whole width
                parts.append(_list_heading(w))
            parts.append(w)
        else:
            run.append(w)
    if run:
        parts.append(_labelled(run))
    box = Container(widgets=parts, labels=False)
    box.margins = (0, 0, 0, 0)
    return box


def _list_heading(select) -> Label:
    """The label of a list shown above it; hidden with the list."""
    heading = Label(value=select.label, tooltip=select.tooltip)
    heading.visible = select.visible
    select.native.installEventFilter(_FollowVisibility(heading.native, select.native))
    return heading


class _FollowVisibility:
    """Qt event filter factory: ``target`` is shown and hidden with ``source``."""

    def __new__(cls, target, source):
        from qtpy.QtCore import QEvent, QObject

        class Filter(QObject):
            def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
                if event.type() in (QEvent.Type.Show, QEvent.Type.Hide):
                    target.setVisible(not obj.isHidden())
                return False

        return Filter(source)


def _labelled(widgets) -> Container:
    box = Container(widgets=widgets, labels=True)
    box.margins = (0, 0, 0, 0)
    return box


def fixed_message(label: Label, lines: int = 3) -> None:
    """A message label of a fixed height (``lines`` lines, wrapped): the widgets below
    it never move when a message changes; the whole text is in its tooltip."""
    native = label.native
    native.setWordWrap(True)
    native.setAlignment(native.alignment().AlignTop | native.alignment().AlignLeft)
    native.setFixedHeight(native.fontMetrics().lineSpacing() * lines + 4)
    native.setMinimumWidth(40)
    label.changed.connect(lambda value: native.setToolTip(str(value)))


#: the dock's width: the canvas keeps most of napari's window
DOCK_WIDTH = 250


def compact(body) -> None:
    """Let every control shrink to the dock's width: combo boxes and file choosers do not
    ask for the width of their longest text."""
    from qtpy.QtWidgets import QComboBox, QLabel, QPushButton, QSizePolicy

    for combo in body.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(6)
    for label in body.findChildren(QLabel):
        if label.wordWrap():  # a wrapped message takes the width it is given
            label.setMinimumWidth(60)
            policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
            policy.setHeightForWidth(True)
            label.setSizePolicy(policy)
    for button in body.findChildren(QPushButton):
        if button.text() in ("Choose directory", "Choose file", "Select file"):
            button.setToolTip(button.text())
            button.setText("...")


def scrolling(widget: Container, sections: dict, advanced: Container, footer) -> None:
    """Lay out the sections (headings, then their controls) and the folded 'advanced'
    part in a vertical scroll area filling ``widget``, with ``footer`` fixed below."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget
    from superqt import QCollapsible

    body = QWidget()
    layout = QVBoxLayout(body)
    layout.setContentsMargins(4, 4, 4, 4)
    layout.setSpacing(2)
    for title, section in sections.items():
        layout.addWidget(heading(title).native)
        layout.addWidget(section.native)
        if title == "Model":
            fold = QCollapsible("Advanced settings")
            fold.setContentsMargins(0, 0, 0, 0)
            fold.layout().setContentsMargins(0, 0, 0, 0)
            fold.content().layout().setContentsMargins(0, 0, 0, 0)
            fold.setDuration(0)
            fold.addWidget(advanced.native)
            fold.setToolTip("threshold, resizing, probability maps, device, model input size")
            layout.addWidget(fold)
            widget.advanced_fold = fold
    layout.addStretch(1)
    compact(body)

    class Scroll(QScrollArea):
        def sizeHint(self):  # noqa: N802 - Qt's name: napari docks at this width
            hint = super().sizeHint()
            hint.setWidth(DOCK_WIDTH)
            return hint

    scroll = Scroll()
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(body)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    native = widget.native
    native.layout().setContentsMargins(0, 0, 0, 0)
    native.layout().addWidget(scroll)
    footer.margins = (4, 2, 4, 4)
    native.layout().addWidget(footer.native)
    compact(footer.native)
    body.setMinimumWidth(0)
    native.setMinimumWidth(DOCK_WIDTH)
    widget.scroll_area = scroll
