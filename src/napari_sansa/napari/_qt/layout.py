"""The dock widget's layout: pages (the main loop, the model, options, a folder,
fine-tuning, saving) turned by a grid of buttons, a footer that never moves (Run,
Stop, progress, status), and controls that shrink to the dock's width."""

from __future__ import annotations

from magicgui.widgets import Container, Label, Select

__all__ = [
    "DOCK_WIDTH", "beside", "fixed_message", "heading", "page", "paged", "row", "section",
    "elided", "show_page", "tight",
]  # fmt: skip


def row(*widgets) -> Container:
    """Buttons side by side, sharing the dock's width (narrow padding)."""
    row = Container(layout="horizontal", labels=False, widgets=widgets)
    row.margins = (0, 0, 0, 0)
    row.native.layout().setSpacing(2)
    for w in widgets:
        w.native.setStyleSheet("padding-left: 2px; padding-right: 2px;")
        w.native.setMinimumWidth(1)  # 1, not 0 (0 is "unset": Qt keeps the text's width)
    return row


def fit_rows(select: Select, most: int = 3) -> None:
    """A list as tall as its rows, up to ``most`` (then it scrolls), at least one: a
    list of one layer leaves the page the other rows' height (the main page fits
    napari's default window with a (T, C) time-lapse)."""
    native = select.native

    def fit(*_):
        try:
            count = native.count()
        except RuntimeError:  # the list was deleted (the viewer closing)
            return
        rows = min(max(count, 1), most)
        row_height = native.sizeHintForRow(0) if count else 18
        native.setFixedHeight(rows * max(row_height, 16) + 2 * native.frameWidth() + 2)

    model = native.model()
    for signal in (model.rowsInserted, model.rowsRemoved, model.modelReset):
        signal.connect(fit)
    fit()


def elided(label: Label) -> None:
    """A one-line label that shows its text cut with '…' on the right where the dock is
    too narrow for it (set it with ``label.native.setProperty("full", text)`` and
    ``refresh``); the whole text is its tooltip."""
    from qtpy.QtCore import QEvent, QObject, Qt
    from qtpy.QtWidgets import QSizePolicy

    native = label.native
    native.setWordWrap(False)
    native.setMinimumWidth(20)
    # the dock's width, not the width of the text last shown (a short text would keep it short)
    native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def refresh():
        text = native.property("full") or ""
        room = max(native.contentsRect().width(), 20)
        native.setText(native.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, room))
        native.setToolTip(text)

    class OnResize(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.Resize:
                refresh()
            return False

    native.installEventFilter(OnResize(native))
    native.refresh_elided = refresh


def tight(buttons: Container) -> Container:
    """A row of buttons whose words fill them (no padding): four short ones fit the
    dock's width (the Tracks page's)."""
    from napari.settings import get_settings

    size = get_settings().appearance.font_size - 1  # napari's own 'decrease(font_size, 1)'
    for w in buttons:
        w.native.setStyleSheet(f"padding: 0px; font-size: {size}pt;")
    return buttons


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
#: a control with this attribute set sits beside its (short) label whatever its choices
BESIDE_ALWAYS = "_sansa_beside"


def beside(*widgets) -> None:
    """Put these controls beside their short labels (a choice of long words elided)."""
    for w in widgets:
        setattr(w, BESIDE_ALWAYS, True)


def _beside(widget) -> bool:
    """Whether ``widget`` sits beside its label: a short label, and a number or a
    choice among fixed short words."""
    from magicgui.widgets import ComboBox
    from magicgui.widgets.bases import RangedWidget

    if len(widget.label) > SHORT_LABEL:
        return False
    if getattr(widget, BESIDE_ALWAYS, False):
        return True
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
                shown = (QEvent.Type.Show, QEvent.Type.ShowToParent)
                if event.type() in (*shown, QEvent.Type.Hide, QEvent.Type.HideToParent):
                    target.setVisible(not obj.isHidden())
                return False

        return Filter(source)


def fixed_message(label: Label, lines: int = 3) -> None:
    """A message label of a fixed height (``lines`` lines, wrapped): the widgets below
    it never move when a message changes; the whole text is in its tooltip."""
    native = label.native
    native.setWordWrap(True)
    native.setAlignment(native.alignment().AlignTop | native.alignment().AlignLeft)
    native.setFixedHeight(native.fontMetrics().lineSpacing() * lines + 8)
    native.setMinimumWidth(40)
    label.changed.connect(lambda value: native.setToolTip(str(value)))
    native.installEventFilter(_EndWithEllipsis(native))


def fitting_words(text: str, fits) -> str:
    """The longest start of ``text`` (whole words) that, with '…' after it, ``fits``."""
    words = text.split(" ")
    low, high = 0, len(words)
    while low < high:  # the most words that fit
        mid = (low + high + 1) // 2
        if fits(" ".join(words[:mid]).rstrip(" ,;:") + "…"):
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low]).rstrip(" ,;:") + "…"


def _EndWithEllipsis(native):  # noqa: N802 - a Qt object's factory
    """Paints a wrapped message too long for its label's lines cut after its last whole
    word that fits, with '…' (Qt cut it in the middle of a line); the whole text is the
    label's text and tooltip."""
    from qtpy.QtCore import QEvent, QObject, QRect, Qt
    from qtpy.QtGui import QPainter

    flags = (
        Qt.AlignmentFlag.AlignTop.value
        | Qt.AlignmentFlag.AlignLeft.value
        | Qt.TextFlag.TextWordWrap.value
    )

    class Filter(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
            if event.type() != QEvent.Type.Paint:
                return False
            rect = obj.contentsRect()
            metrics = obj.fontMetrics()

            def fits(text):
                box = QRect(0, 0, rect.width(), 100_000)
                height = metrics.boundingRect(box, flags, text).height()
                return height <= rect.height() + metrics.leading()

            text = obj.text()
            if not text or fits(text):
                return False
            painter = QPainter(obj)
            painter.setPen(obj.palette().color(obj.foregroundRole()))
            painter.drawText(rect, flags, fitting_words(text, fits))
            painter.end()
            return True

    return Filter(native)


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


def _scroll(body):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QScrollArea

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
    return scroll


def page(*parts, stretch: bool = True):
    """A page's body: ``parts`` (headings as strings, sections, Qt widgets) in a column;
    the space left goes below them (``stretch``) or to the parts that grow."""
    from qtpy.QtWidgets import QVBoxLayout, QWidget

    body = QWidget()
    layout = QVBoxLayout(body)
    layout.setContentsMargins(4, 4, 4, 4)
    layout.setSpacing(2)
    for part in parts:
        if isinstance(part, str):
            layout.addWidget(heading(part).native)
        else:
            layout.addWidget(getattr(part, "native", part))
    if stretch:
        layout.addStretch(1)
    return body


#: page buttons per row above the pages
PAGE_COLUMNS = 3


def paged(widget: Container, pages: dict, footer) -> None:
    """Lay out ``pages`` (title -> page body) one at a time under a grid of page
    buttons, each page in its own vertical scroll area, with ``footer`` (Run, Stop,
    progress, status) fixed below every page. Sets ``widget.pages`` (title -> scroll
    area), ``widget.page_buttons`` (title -> button) and ``widget.scroll_area`` (the
    first page's); ``widget.show_page(title)`` turns pages."""
    from qtpy.QtWidgets import (
        QButtonGroup,
        QGridLayout,
        QSizePolicy,
        QStackedWidget,
        QToolButton,
        QWidget,
    )

    bar = QWidget()
    grid = QGridLayout(bar)
    grid.setContentsMargins(4, 4, 4, 0)
    grid.setSpacing(2)
    group = QButtonGroup(bar)
    group.setExclusive(True)
    stack = QStackedWidget()
    widget.pages, widget.page_buttons = {}, {}
    for k, (title, body) in enumerate(pages.items()):
        compact(body)
        scroll = _scroll(body)
        stack.addWidget(scroll)
        button = QToolButton()
        button.setText(title)
        button.setCheckable(True)
        button.setAutoRaise(False)
        button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        button.setMinimumWidth(1)
        button.clicked.connect(lambda _=False, i=k: stack.setCurrentIndex(i))
        group.addButton(button, k)
        grid.addWidget(button, k // PAGE_COLUMNS, k % PAGE_COLUMNS)
        widget.pages[title], widget.page_buttons[title] = scroll, button
    bar.setStyleSheet(
        "QToolButton { padding: 2px 1px; }"
        " QToolButton:checked { font-weight: bold; border-bottom: 2px solid palette(highlight); }"
    )
    group.button(0).setChecked(True)
    for part in (bar, footer.native):  # their widths do not widen the dock
        part.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    native = widget.native
    # the pages take the dock's height: napari adds no stretch below a widget with a
    # vertically expanding part (its stretch, of a factor that grows with each dock
    # added in the process, took half the height from the pages of a second viewer)
    stack.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    native.layout().setContentsMargins(0, 0, 0, 0)
    native.layout().setSpacing(0)
    native.layout().addWidget(bar)
    native.layout().addWidget(stack, 1)
    footer.margins = (4, 2, 4, 2)
    footer.native.layout().setSpacing(2)
    native.layout().addWidget(footer.native)
    compact(footer.native)
    native.setMinimumWidth(DOCK_WIDTH)
    widget.page_stack = stack
    widget.scroll_area = next(iter(widget.pages.values()))


def show_page(widget, title: str) -> None:
    """Turn ``widget``'s pages to ``title``."""
    widget.page_buttons[title].setChecked(True)
    widget.page_stack.setCurrentWidget(widget.pages[title])
