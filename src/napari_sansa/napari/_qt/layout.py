"""The dock widget's layout: sections in a scroll area, a folded 'advanced' part, a
footer that never moves, and controls that shrink to the dock's width."""

from __future__ import annotations

from magicgui.widgets import Container, Label, Select

__all__ = ["DOCK_WIDTH", "fixed_message", "heading", "row", "scrolling", "section"]


def row(*widgets) -> Container:
    """Buttons side by side, sharing the dock's width (narrow padding)."""
    row = Container(layout="horizontal", labels=False, widgets=widgets)
    row.margins = (0, 0, 0, 0)
    row.native.layout().setSpacing(2)
    for w in widgets:
        w.native.setStyleSheet("padding-left: 2px; padding-right: 2px;")
        w.native.setMinimumWidth(0)
    return row


def heading(text: str) -> Label:
    label = Label(value=f"<b>{text}</b>")
    label.native.setWordWrap(True)
    return label


def section(*widgets) -> Container:
    """Controls in one column at the dock's width: a number (or a choice among short
    words) beside its short label, anything else under its label; buttons, check boxes,
    rows and messages as they are."""
    from magicgui.widgets._concrete import _LabeledWidget
    from magicgui.widgets.bases import ButtonWidget

    parts = []
    for w in widgets:
        if isinstance(w, Select):  # a list of layer names: the dock's whole width
            parts += [_list_heading(w), w]
        elif isinstance(w, (ButtonWidget, Container, Label)) or not w.label:
            if isinstance(w, Label):  # a message or note: wrapped at the dock's width
                w.native.setWordWrap(True)
            parts.append(w)
        else:
            beside = _beside(w)
            labelled = _LabeledWidget(w, position="left" if beside else "top")
            label = labelled._label_widget.native
            label.setProperty(BESIDE, beside)  # compact() lines these labels up
            label.setWordWrap(not beside)
            labelled.margins = (0, 0, 0, 0)
            parts.append(labelled)
    box = Container(widgets=parts, labels=False)
    box.margins = (0, 0, 0, 0)
    return box


#: the longest label that sits beside its control, in characters
SHORT_LABEL = 9
#: a choice box beside its label: every choice at most this many characters
SHORT_CHOICE = 8
#: Qt property of the labels beside their controls
BESIDE = "sansa_beside"


def _beside(widget) -> bool:
    """Whether ``widget`` sits beside its label: a short label, and a number or a
    choice among fixed short words."""
    from magicgui.widgets import ComboBox
    from magicgui.widgets.bases import RangedWidget

    if len(widget.label) > SHORT_LABEL:
        return False
    if isinstance(widget, RangedWidget):
        return True
    if isinstance(widget, ComboBox) and not callable(widget._default_choices):
        combo = widget.native
        return all(len(combo.itemText(i)) <= SHORT_CHOICE for i in range(combo.count()))
    return False


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
DOCK_WIDTH = 170


def compact(body) -> None:
    """Let every control shrink to the dock's width: combo boxes, spin boxes and file
    choosers do not ask for the width of their longest text or value, wrapped messages
    take the width they are given, the labels beside their controls line up, and a
    check box too long for the dock keeps the words before its parenthesis (the whole
    text is in its tooltip)."""
    from qtpy.QtWidgets import (
        QAbstractSpinBox,
        QCheckBox,
        QComboBox,
        QLabel,
        QLineEdit,
        QPushButton,
        QSizePolicy,
    )

    # napari's style gives spin boxes 70 px of text and 10 px padding on each side
    body.setStyleSheet(
        body.styleSheet()
        + "QAbstractSpinBox { min-width: 24px; padding: 1px 4px; }"
        + "QComboBox { padding: 3px 2px 3px 4px; } QComboBox::drop-down { width: 18px; }"
    )
    for spin in body.findChildren(QAbstractSpinBox):  # not as wide as their largest value
        spin.setMinimumWidth(40)
    for combo in body.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(6)
        combo.setMinimumWidth(60)
        combo.installEventFilter(_eliding(combo))
    for edit in body.findChildren(QLineEdit):
        edit.setMinimumWidth(40)
    beside = [label for label in body.findChildren(QLabel) if label.property(BESIDE)]
    column = max((label.sizeHint().width() for label in beside), default=0)
    for label in beside:
        label.setMinimumWidth(column)
    for label in body.findChildren(QLabel):
        if label.wordWrap():  # a wrapped message takes the width it is given
            label.setMinimumWidth(40)
            policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
            policy.setHeightForWidth(True)
            label.setSizePolicy(policy)
    room = DOCK_WIDTH - 24  # the scroll bar and the margins
    for box in body.findChildren(QCheckBox):
        text = box.text()
        if box.sizeHint().width() > room and " (" in text:
            box.setToolTip(f"{text}: {box.toolTip()}" if box.toolTip() else text)
            box.setText(text.split(" (", 1)[0])
    for button in body.findChildren(QPushButton):
        if button.text() in ("Choose directory", "Choose file", "Select file"):
            button.setToolTip(button.text())
            button.setText("...")


def _eliding(combo):
    """An event filter that paints the combo box's text cut with '...' where it does not
    fit (Qt cuts it off at the edge); the whole text is in the list and the tooltip."""
    from qtpy.QtCore import QEvent, QObject, Qt
    from qtpy.QtWidgets import QStyle, QStyleOptionComboBox, QStylePainter

    class Elide(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
            if event.type() != QEvent.Type.Paint or obj.isEditable():
                return False
            opt = QStyleOptionComboBox()
            obj.initStyleOption(opt)
            field = obj.style().subControlRect(
                QStyle.ComplexControl.CC_ComboBox, opt, QStyle.SubControl.SC_ComboBoxEditField, obj
            )
            text = opt.currentText
            opt.currentText = obj.fontMetrics().elidedText(
                text, Qt.TextElideMode.ElideRight, max(field.width() - 4, 10)
            )
            painter = QStylePainter(obj)
            painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, opt)
            painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, opt)
            painter.end()
            return True

    return Elide(combo)


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
